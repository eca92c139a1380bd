//! A hub written by hand: ferry's TLS on a control and a channel port, and
//! frames the test writes itself, for eps facing a newer, older or
//! compromised hub.

use super::Certs;
use ferry::proto::{self, HubMsg};
use tokio::net::TcpListener;

pub struct FakeHub {
    pub control: TcpListener,
    pub channel: TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl FakeHub {
    pub async fn start(certs: &Certs) -> Self {
        let material = ferry::tls::ServerMaterial::load(&ferry::config::TlsPaths {
            ca: certs.path("ca.pem"),
            cert: certs.path("hub.pem"),
            key: certs.path("hub.key"),
        })
        .unwrap();
        FakeHub {
            control: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            channel: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: material.server_config(None).unwrap().into(),
        }
    }
}

/// The welcome this build's hub sends an ep of this build that serves no
/// UDP shapes.
pub fn welcome() -> HubMsg {
    HubMsg::Welcome {
        heartbeat_ms: 200,
        heartbeat_timeout_ms: 5000,
        idle_timeout_ms: 60_000,
        version: Some(proto::PROTOCOL_VERSION),
        features: proto::features(),
        services: Default::default(),
        quic: None,
    }
}

/// A hub written by hand on QUIC: the ep logs in on its connection's first
/// stream, and the test opens the streams a hub would (or should not).
pub struct FakeQuicHub {
    pub endpoint: quinn::Endpoint,
}

impl FakeQuicHub {
    pub fn start(certs: &Certs) -> Self {
        let material = ferry::tls::ServerMaterial::load(&ferry::config::TlsPaths {
            ca: certs.path("ca.pem"),
            cert: certs.path("hub.pem"),
            key: certs.path("hub.key"),
        })
        .unwrap();
        let mut tls = (*material.server_config(None).unwrap()).clone();
        tls.max_early_data_size = 0;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let mut config = quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto));
        config.transport_config(ferry::quic::hub_transport(std::time::Duration::from_secs(
            15,
        )));
        let at = "127.0.0.1:0".parse().unwrap();
        FakeQuicHub {
            endpoint: quinn::Endpoint::server(config, at).unwrap(),
        }
    }

    /// The ep's connection once it logged in, with its control stream.
    pub async fn login(&self) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
        let conn = self.endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let _hello: ferry::proto::EpMsg = proto::read_msg(&mut recv).await.unwrap();
        proto::write_msg(&mut send, &welcome()).await.unwrap();
        (conn, send, recv)
    }
}
