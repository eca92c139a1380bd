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
