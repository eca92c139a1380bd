//! Reaching the hub: TCP, TLS, hello, and a reason in words when it fails.

use crate::{
    config::{
        ep::{EpSettings, HubTarget},
        ports::ServiceKind,
    },
    net,
    proto::{self, EpMsg, FrameError, HubMsg, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RefusalKind},
};
use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::{TlsConnector, client::TlsStream};

pub type Tunnel = TlsStream<TcpStream>;
/// A control connection or a channel: its own TLS connection, or a stream
/// of the ep's QUIC connection.
pub type Path = crate::quic::Tunnel<Tunnel>;

/// Why a login failed, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("cannot reach the hub at {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("the hub at {addr} did not complete the login within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error(
        "the hub closed the connection before the TLS handshake finished: this ep's address is not in the hub's ep_allowlist, or the hub refuses it for a while after failed logins (see the hub's log)"
    )]
    ClosedEarly,
    #[error(
        "the hub's certificate is not trusted: {0} (is tls.ca the CA that issued the hub's certificate, and does server_name match it?)"
    )]
    HubCertificate(String),
    #[error(
        "the hub rejected this ep's certificate ({0}): was it issued by the hub's CA, for an ep, and is it still valid?"
    )]
    OwnCertificate(String),
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("the hub refused the login: {0}")]
    Refused(String),
    #[error(
        "the hub closed a channel connection (sent from {0}) before the TLS handshake finished: the hub accepts channels only from the address of this ep's control connection; see the hub's log"
    )]
    ChannelClosedEarly(String),
    #[error("the hub is busy: {0}")]
    Busy(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("QUIC to the hub at {addr} failed: {why}")]
    Quic { addr: String, why: String },
    #[error("this ep's TLS files cannot be used: {0}")]
    Files(String),
}

impl LoginError {
    /// Failures that retrying will not fix until someone changes something.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            LoginError::HubCertificate(_)
                | LoginError::OwnCertificate(_)
                | LoginError::Refused(_)
                | LoginError::Files(_)
        )
    }
}

/// The TLS files `s` names, loaded for one use (tests and one-off logins;
/// the running ep keeps them loaded).
pub(crate) fn load_tls(s: &EpSettings) -> Result<crate::tls::EpTls, LoginError> {
    crate::tls::EpTls::load(s).map_err(|e| LoginError::Files(format!("{e:#}")))
}

/// The token in `path` (`token_file`): its first line, not empty. Read as
/// a secret (`secret_file`): a file others may read is refused.
pub(crate) fn read_token_file(path: &std::path::Path) -> Result<crate::secret::Secret, String> {
    let bytes = crate::secret_file::read(path, "token_file").map_err(|e| format!("{e:#}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("token_file {} is not text", path.display()))?;
    let token = crate::secret::Secret::new(text.lines().next().unwrap_or("").trim());
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    crate::token::too_long(&token).map_err(|e| format!("token_file {}: {e}", path.display()))?;
    Ok(token)
}

/// Classifies a TLS-level I/O error from a hub connection.
fn tls_error(e: io::Error) -> LoginError {
    // Over QUIC, the hub's verdict on our certificate arrives as the
    // connection closing under the first stream.
    let lost = e.get_ref().and_then(|i| {
        match (
            i.downcast_ref::<quinn::ReadError>(),
            i.downcast_ref::<quinn::WriteError>(),
        ) {
            (Some(quinn::ReadError::ConnectionLost(c)), _)
            | (_, Some(quinn::WriteError::ConnectionLost(c))) => Some(c.clone()),
            _ => None,
        }
    });
    if let Some(c) = lost {
        let addr = "the hub"
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        return quic_error(addr, c);
    }
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::InvalidCertificate(c) => LoginError::HubCertificate(format!("{c:?}")),
            rustls::Error::AlertReceived(alert) => {
                use rustls::AlertDescription as A;
                match alert {
                    A::BadCertificate
                    | A::UnknownCA
                    | A::CertificateRequired
                    | A::CertificateExpired
                    | A::CertificateRevoked
                    | A::UnsupportedCertificate
                    | A::CertificateUnknown
                    | A::AccessDenied
                    // A same-named CA whose signature does not verify.
                    | A::DecryptError => LoginError::OwnCertificate(format!("TLS alert {alert:?}")),
                    other => LoginError::Tls(format!("the hub sent TLS alert {other:?}")),
                }
            }
            other => LoginError::Tls(other.to_string()),
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe => LoginError::ClosedEarly,
        _ => LoginError::Tls(e.to_string()),
    }
}

fn frame_error(e: FrameError) -> LoginError {
    match e {
        FrameError::Io(io) => tls_error(io),
        FrameError::Closed => {
            LoginError::Protocol("the hub closed the connection before answering".into())
        }
        other => LoginError::Protocol(other.to_string()),
    }
}

/// Which hub port a connection is for; they differ in socket options and
/// in where they leave from.
#[derive(Debug, Clone, Copy)]
pub enum Leg {
    Control,
    /// A channel, sent from the control connection's local address when
    /// known: the hub accepts channels only from a logged-in ep's address,
    /// and a host with several (a rotating IPv6 temporary address, a
    /// multi-WAN router) could otherwise pick another.
    Channel {
        from: Option<IpAddr>,
    },
}

async fn dial(addr: &str, from: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect(addr).await;
    };
    let targets: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
    let mut last = None;
    // Only targets of the control address's family can leave from it.
    for target in targets.iter().filter(|t| t.is_ipv4() == from.is_ipv4()) {
        let sock = if from.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Err(e) = sock.bind(SocketAddr::new(from, 0)) {
            last = Some(e);
            continue;
        }
        match sock.connect(*target).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e),
        // No target of that family: the best the host can do.
        None => TcpStream::connect(addr).await,
    }
}

/// The longest a hub may have the ep keep an idle channel: the most
/// `idle_timeout` a hub accepts (a day).
const MAX_IDLE_MS: u64 = 86_400 * 1000;

/// Dials `addr` and completes the TLS handshake with the hub.
pub async fn connect_tls(
    server_name: &rustls::pki_types::ServerName<'static>,
    client: &Arc<rustls::ClientConfig>,
    addr: &str,
    leg: Leg,
) -> Result<Tunnel, LoginError> {
    let from = match leg {
        Leg::Control => None,
        Leg::Channel { from } => from,
    };
    let tcp = dial(addr, from)
        .await
        .map_err(|source| LoginError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    match leg {
        Leg::Control => net::tune_control(&tcp),
        Leg::Channel { .. } => net::tune_channel(&tcp),
    }
    let local = tcp
        .local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let tls = TlsConnector::from(client.clone())
        .connect(server_name.clone(), tcp)
        .await
        .map_err(tls_error);
    match (leg, tls) {
        (Leg::Channel { .. }, Err(LoginError::ClosedEarly)) => {
            Err(LoginError::ChannelClosedEarly(local))
        }
        (_, r) => r,
    }
}

/// What a session needs from its login: the hub's timings, and where
/// channels go.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub heartbeat: Duration,
    pub heartbeat_timeout: Duration,
    pub idle_timeout: Duration,
    /// The channel address to dial for this session. When the channel port
    /// is on the hub's own host, it is dialled at the very address control
    /// reached: the hub accepts channels only from a logged-in ep's address,
    /// and a name resolving to IPv4 and IPv6 could otherwise send control
    /// and channels out through different source addresses.
    pub channel: String,
    /// The control connection's local address, where channels leave from.
    pub local_ip: Option<IpAddr>,
    /// The hub's address as the control connection reached it.
    pub hub_ip: IpAddr,
    /// Features the hub named (none from hubs older than negotiation).
    pub features: Vec<String>,
    /// The hub's QUIC port, if it has one.
    pub quic_port: Option<u16>,
    /// This session's QUIC connection, when it rides QUIC.
    pub link: Option<crate::quic::Link>,
}

impl Welcome {
    pub fn hub_has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// `h.channel`, pinned to `hub_ip` when it names the hub's host.
fn channel_for(h: &HubTarget, hub_ip: Option<std::net::IpAddr>) -> String {
    use crate::config::split_host_port;
    let (Some(ip), Ok((hub_host, _)), Ok((host, port))) =
        (hub_ip, split_host_port(&h.hub), split_host_port(&h.channel))
    else {
        return h.channel.clone();
    };
    if host == hub_host {
        std::net::SocketAddr::new(ip, port).to_string()
    } else {
        h.channel.clone()
    }
}

/// Logs in on the control port of the first hub `s` names. Returns only
/// once the hub said welcome: with TLS 1.3 the hub judges our certificate
/// after our handshake "completes", so "connected" is never claimed before
/// the hub's answer.
pub async fn login(s: &EpSettings) -> Result<(Path, Welcome), LoginError> {
    login_with(s, &s.hubs[0], &load_tls(s)?.client).await
}

/// `login` to hub `h` with the ep's TLS configuration already loaded.
pub async fn login_with(
    s: &EpSettings,
    h: &HubTarget,
    client: &Arc<rustls::ClientConfig>,
) -> Result<(Path, Welcome), LoginError> {
    let deadline = s.timing.connect_timeout;
    let attempt = async {
        let tls = connect_tls(&h.server_name, client, &h.hub, Leg::Control).await?;
        let hub_ip = tls.get_ref().0.peer_addr().ok().map(|a| a.ip());
        let local_ip = tls.get_ref().0.local_addr().ok().map(|a| a.ip());
        let mut path = Path::Tls(tls);
        let welcome = greet(s, h, &mut path, hub_ip, local_ip).await?;
        Ok((path, welcome))
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(LoginError::Timeout {
                addr: h.hub.clone(),
                after: deadline,
            })
        })
}

/// The hello and the hub's answer, over a fresh control connection.
async fn greet(
    s: &EpSettings,
    h: &HubTarget,
    tls: &mut Path,
    hub_ip: Option<IpAddr>,
    local_ip: Option<IpAddr>,
) -> Result<Welcome, LoginError> {
    let hello = EpMsg::Hello {
        version: PROTOCOL_VERSION,
        token: s.token.clone(),
        services: s.services.keys().cloned().collect(),
        features: proto::features(),
        software: Some(env!("CARGO_PKG_VERSION").to_string()),
        shapes: s
            .services
            .iter()
            .map(|(name, l)| {
                let shape = proto::Shape {
                    kind: l.kind,
                    ports: l.addr.count,
                };
                (name.clone(), shape)
            })
            .collect(),
    };
    proto::write_msg(tls, &hello).await.map_err(frame_error)?;
    match proto::read_msg(tls).await.map_err(frame_error)? {
            HubMsg::Welcome {
                version: Some(v), ..
            } if v < MIN_PROTOCOL_VERSION => Err(LoginError::Protocol(format!(
                "the hub speaks protocol version {v}; this ep needs {MIN_PROTOCOL_VERSION} or later"
            ))),
            HubMsg::Welcome { features, .. }
                if !features.iter().any(|f| f == proto::feature::UDP)
                && s.services.values().any(|l| {
                    l.addr.count > 1 || l.kind.is_some_and(|k| k != ServiceKind::Tcp)
                }) =>
            {
                Err(LoginError::Refused(
                    "this hub's ferry predates UDP services and port ranges, which ep.toml uses; upgrade the hub".into(),
                ))
            }
            HubMsg::Welcome {
                heartbeat_ms,
                heartbeat_timeout_ms,
                idle_timeout_ms,
                features,
                quic,
                ..
            } => Ok(Welcome {
                    heartbeat: Duration::from_millis(heartbeat_ms.max(100)),
                    heartbeat_timeout: Duration::from_millis(heartbeat_timeout_ms.max(200)),
                    idle_timeout: Duration::from_millis(idle_timeout_ms.clamp(1000, MAX_IDLE_MS)),
                    channel: channel_for(h, hub_ip),
                    local_ip,
                    hub_ip: hub_ip.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
                    features,
                    quic_port: quic,
                    link: None,
                }),
            HubMsg::Refused {
                reason,
                retry: true,
                ..
            } => Err(LoginError::Busy(proto::shown(&reason))),
            HubMsg::Refused {
                reason,
                kind: Some(RefusalKind::Penalised),
                ..
            } => Err(LoginError::Busy(proto::shown(&reason))),
            HubMsg::Refused { reason, .. } => Err(LoginError::Refused(proto::shown(&reason))),
            _ => Err(LoginError::Protocol("expected welcome or refusal".into())),
        }
}

/// The QUIC side of the ep's TLS configuration (its certificate, ALPN,
/// keep-alives), made afresh for each login so a reloaded certificate is
/// the one presented.
fn quic_client_config(
    client: &Arc<rustls::ClientConfig>,
    hub: SocketAddr,
) -> Result<quinn::ClientConfig, LoginError> {
    let mut tls = (**client).clone();
    tls.enable_early_data = false;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| LoginError::Quic {
            addr: hub.to_string(),
            why: e.to_string(),
        })?;
    let mut config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
    config.transport_config(crate::quic::ep_transport());
    Ok(config)
}

/// A QUIC client endpoint for this ep, on a fresh UDP port of `hub`'s
/// family (one per hub for the ep's life; rebinding it is a migration),
/// and its socket's send queue (`send_queue`).
pub fn quic_endpoint(
    hub: SocketAddr,
) -> Result<(quinn::Endpoint, super::send_queue::Shared), LoginError> {
    let bind: SocketAddr = if hub.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = || -> std::io::Result<_> {
        let socket = crate::quic::client_socket(bind)?;
        let queue = super::send_queue::new(&socket)?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let e = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?;
        Ok((e, queue))
    };
    endpoint().map_err(|e| LoginError::Quic {
        addr: hub.to_string(),
        why: e.to_string(),
    })
}

/// Logs in over QUIC with the TLS configuration `client`: the connection,
/// its first stream as control.
pub async fn login_quic(
    s: &EpSettings,
    h: &HubTarget,
    client: &Arc<rustls::ClientConfig>,
    endpoint: &quinn::Endpoint,
    hub: SocketAddr,
) -> Result<(Path, Welcome), LoginError> {
    let name = h.server_name.to_str();
    let config = quic_client_config(client, hub)?;
    let connecting = endpoint
        .connect_with(config, hub, &name)
        .map_err(|e| LoginError::Quic {
            addr: hub.to_string(),
            why: e.to_string(),
        })?;
    // A handshake that hears nothing is told as silence (what the QUIC
    // door gives an address it does not admit), a little before the
    // caller's deadline for the whole login: one that answered and then
    // took long (its Argon2 queue after a restart) is not.
    let within = s.timing.connect_timeout * 9 / 10;
    let conn = tokio::time::timeout(within, connecting)
        .await
        .map_err(|_| quic_unanswered(hub, Some(within)))?
        .map_err(|e| quic_error(hub, e))?;
    let (send, recv) = conn.open_bi().await.map_err(|e| quic_error(hub, e))?;
    let mut path = Path::Quic(crate::quic::QuicStream::control(send, recv));
    let mut welcome = greet(s, h, &mut path, Some(hub.ip()), None).await?;
    welcome.link = Some(crate::quic::Link::new(conn));
    Ok((path, welcome))
}

/// A QUIC connection error in words an operator can act on.
fn quic_error(hub: SocketAddr, e: quinn::ConnectionError) -> LoginError {
    use quinn::ConnectionError as C;
    let crypto = |code: quinn::TransportErrorCode| {
        let n = u64::from(code);
        (0x100..0x200)
            .contains(&n)
            .then(|| rustls::AlertDescription::from((n - 0x100) as u8))
    };
    match e {
        // The hub closed the handshake with a TLS alert about our certificate.
        C::ConnectionClosed(ref c) if crypto(c.error_code).is_some() => {
            LoginError::OwnCertificate(format!(
                "TLS alert {:?}",
                crypto(c.error_code).unwrap_or(rustls::AlertDescription::Unknown(0))
            ))
        }
        // Our side refused the hub's certificate.
        C::TransportError(ref t) if crypto(t.code).is_some() => {
            LoginError::HubCertificate(t.to_string())
        }
        C::ConnectionClosed(ref c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            LoginError::ClosedEarly
        }
        C::TimedOut => quic_unanswered(hub, None),
        other => LoginError::Quic {
            addr: hub.to_string(),
            why: other.to_string(),
        },
    }
}

/// A QUIC login that heard nothing: a hub's QUIC door says nothing to an
/// address it does not admit (as it says nothing to a stranger), so the
/// likely causes are named rather than a bare timeout.
fn quic_unanswered(hub: impl std::fmt::Display, within: Option<Duration>) -> LoginError {
    let within = within.map(|d| format!(" within {d:?}")).unwrap_or_default();
    LoginError::Quic {
        addr: hub.to_string(),
        why: format!(
            "no answer{within} (UDP blocked on the way, the hub's quic port closed, or this \
             address not in its ep_allowlist or refused for a while after failed logins)"
        ),
    }
}
