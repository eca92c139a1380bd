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

/// A hub written by hand on either transport, for attack tests that run
/// on every transport: its doors for the ep's file, then the ep's session.
pub enum AnyFakeHub {
    Tls(FakeHub),
    Quic(FakeQuicHub),
}

/// A logged-in ep's session on a hand-written hub, to which the test
/// sends players as a hub (compromised, or from another version) would.
pub enum FakeSession {
    Tls {
        control: Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
        channel: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        tickets: u64,
    },
    Quic {
        conn: quinn::Connection,
        _control: (quinn::SendStream, quinn::RecvStream),
    },
}

/// One player's channel to the ep, both ways.
pub trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Duplex for T {}

impl AnyFakeHub {
    pub async fn start(t: super::Transport, certs: &Certs) -> Self {
        match t {
            super::Transport::Tls => AnyFakeHub::Tls(FakeHub::start(certs).await),
            super::Transport::Quic => AnyFakeHub::Quic(FakeQuicHub::start(certs)),
        }
    }

    /// Where the ep's file points: its `hub` and `channel`, and the
    /// top-level keys the transport needs.
    pub fn doors(&self) -> (std::net::SocketAddr, std::net::SocketAddr, String) {
        match self {
            AnyFakeHub::Tls(f) => (
                f.control.local_addr().unwrap(),
                f.channel.local_addr().unwrap(),
                String::new(),
            ),
            AnyFakeHub::Quic(f) => {
                let at = f.endpoint.local_addr().unwrap();
                (at, at, format!("transport = \"quic\"\nquic = \"{at}\"\n"))
            }
        }
    }

    /// The ep's login, welcomed as this build's hub would.
    pub async fn login(self) -> FakeSession {
        match self {
            AnyFakeHub::Tls(f) => {
                let (tcp, _) = f.control.accept().await.unwrap();
                let mut control = f.acceptor.accept(tcp).await.unwrap();
                let _hello: ferry::proto::EpMsg = proto::read_msg(&mut control).await.unwrap();
                proto::write_msg(&mut control, &welcome()).await.unwrap();
                FakeSession::Tls {
                    control: Box::new(control),
                    channel: f.channel,
                    acceptor: f.acceptor,
                    tickets: 0,
                }
            }
            AnyFakeHub::Quic(f) => {
                let (conn, send, recv) = f.login().await;
                FakeSession::Quic {
                    conn,
                    _control: (send, recv),
                }
            }
        }
    }
}

impl FakeSession {
    /// Sends the ep a player of `service`, starting with `start` (its
    /// `name` set over QUIC, where the stream must say it): the channel.
    /// Over TLS the ep is asked for a channel with a ticket, as a hub does.
    pub async fn player(&mut self, service: &str, mut start: HubMsg) -> Box<dyn Duplex> {
        match self {
            FakeSession::Tls {
                control,
                channel,
                acceptor,
                tickets,
            } => {
                *tickets += 1;
                let open = HubMsg::Open {
                    service: service.into(),
                    ticket: format!("t-{tickets}"),
                };
                proto::write_msg(&mut **control, &open).await.unwrap();
                let (tcp, _) =
                    tokio::time::timeout(std::time::Duration::from_secs(10), channel.accept())
                        .await
                        .expect("the ep opened the channel")
                        .unwrap();
                let mut chan = acceptor.accept(tcp).await.unwrap();
                let _: ferry::proto::EpMsg = proto::read_msg(&mut chan).await.unwrap();
                proto::write_msg(&mut chan, &start).await.unwrap();
                Box::new(chan)
            }
            FakeSession::Quic { conn, .. } => {
                if let HubMsg::Start { name, .. } = &mut start {
                    *name = Some(service.into());
                }
                let (mut send, recv) = conn.open_bi().await.unwrap();
                proto::write_msg(&mut send, &start).await.unwrap();
                Box::new(tokio::io::join(recv, send))
            }
        }
    }
}
