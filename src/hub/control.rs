//! The control door: ep logins and their sessions.
//!
//! Order of checks, cheapest first: source in `ep_allowlist` → the gate
//! (penalties, caps on pending logins) → TLS with a client certificate →
//! hello → Argon2 (bounded concurrency) → services. All but the first two
//! run in the connection's own task under one deadline.

use super::{Shared, gate::Turned};
use crate::{
    net,
    proto::{self, EpMsg, FrameError, HubMsg, PROTOCOL_VERSION},
    token,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::mpsc};
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

/// Control messages queued for one ep; `Open` requests beyond this wait for
/// the next heartbeat tick rather than piling up.
const CTRL_QUEUE: usize = 256;

pub(super) fn on_accept(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr) {
    let ip = addr.ip();
    if !shared.settings.allowlist.contains(ip) {
        shared
            .refusals
            .record("not in ep_allowlist", ip, "closed before TLS", true);
        return;
    }
    let permit = match shared.gate.enter(ip) {
        Ok(p) => p,
        Err(turned) => {
            let (kind, quiet) = match turned {
                Turned::Penalised => ("penalised address", true),
                Turned::TooManyPending => ("too many logins pending", false),
                Turned::TooManyFromSource => ("too many logins pending from one address", false),
            };
            shared.refusals.record(kind, ip, "closed before TLS", quiet);
            return;
        }
    };
    net::tune_tunnel(&tcp);
    let span = tracing::info_span!("control", peer = %addr);
    shared.tracker.clone().spawn(
        async move {
            let login = handle_login(&shared, tcp, addr).await;
            drop(permit);
            if let Some((tls, guard, ctrl_rx)) = login {
                session(shared, tls, guard, ctrl_rx).await;
            }
        }
        .instrument(span),
    );
}

/// Why a login failed; `strike` says whether it counts against the address.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("no hello: {0}")]
    Frame(#[from] FrameError),
    #[error("first message was not a hello")]
    NotHello,
    #[error("{0}")]
    Told(String),
    #[error("{0}")]
    Busy(String),
}

impl Refusal {
    fn kind(&self) -> &'static str {
        match self {
            Refusal::Tls(_) => "TLS handshake failed",
            Refusal::Frame(_) | Refusal::NotHello => "bad hello",
            Refusal::Told(_) => "login refused",
            Refusal::Busy(_) => "Argon2 busy",
        }
    }
}

type LoggedIn = (
    TlsStream<TcpStream>,
    super::sessions::SessionGuard,
    mpsc::Receiver<HubMsg>,
);

async fn handle_login(shared: &Arc<Shared>, tcp: TcpStream, addr: SocketAddr) -> Option<LoggedIn> {
    let deadline = shared.settings.timing.handshake_timeout;
    let (ctrl_tx, ctrl_rx) = mpsc::channel(CTRL_QUEUE);
    let login = tokio::select! {
        r = tokio::time::timeout(deadline, login(shared, tcp, addr, ctrl_tx)) => r,
        _ = shared.shutdown.cancelled() => return None,
    };
    let ip = addr.ip();
    match login {
        Ok(Ok((tls, guard))) => {
            shared.gate.proven(ip);
            Some((tls, guard, ctrl_rx))
        }
        Ok(Err(e)) => {
            if !matches!(e, Refusal::Busy(_)) {
                shared.gate.strike(ip);
            }
            shared.refusals.record(e.kind(), ip, &e.to_string(), false);
            None
        }
        Err(_) => {
            shared.gate.strike(ip);
            let why = format!("login not completed within {deadline:?}");
            shared.refusals.record("login timeout", ip, &why, false);
            None
        }
    }
}

async fn login(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    addr: SocketAddr,
    ctrl: mpsc::Sender<HubMsg>,
) -> Result<(TlsStream<TcpStream>, super::sessions::SessionGuard), Refusal> {
    let mut tls = shared.accept_tls(tcp).await.map_err(Refusal::Tls)?;
    let ep = peer_name(&tls);
    let EpMsg::Hello {
        version,
        token,
        services,
    } = proto::read_msg(&mut tls).await?
    else {
        return Err(Refusal::NotHello);
    };
    if version != PROTOCOL_VERSION {
        let why =
            format!("protocol version {version} not supported (hub speaks {PROTOCOL_VERSION})");
        return Err(refuse(&mut tls, &ep, why).await);
    }
    if token.expose().len() > token::MAX_TOKEN_LEN {
        return Err(refuse(&mut tls, &ep, "wrong token".into()).await);
    }
    // A few verifications at a time; more are told to come back rather
    // than queued, so a burst of logins cannot pile up Argon2 work.
    let Ok(permit) = shared.argon2.clone().try_acquire_owned() else {
        let why = "busy verifying other logins; retry shortly".to_string();
        let _ = proto::write_msg(
            &mut tls,
            &HubMsg::Refused {
                reason: why.clone(),
                retry: true,
            },
        )
        .await;
        return Err(Refusal::Busy(format!("ep {ep}: {why}")));
    };
    let hash = shared.settings.token_hash.clone();
    let stats = shared.argon2_stats.clone();
    let good = tokio::task::spawn_blocking(move || {
        let _running = stats.enter();
        let ok = token::verify(&token, &hash);
        drop(permit);
        ok
    })
    .await
    .unwrap_or(false);
    if !good {
        return Err(refuse(&mut tls, &ep, "wrong token".into()).await);
    }
    let mut wanted = Vec::new();
    for name in &services {
        match shared.services.get(name) {
            Some(svc) if !wanted.iter().any(|w: &Arc<_>| Arc::ptr_eq(w, svc)) => {
                wanted.push(svc.clone())
            }
            Some(_) => {}
            None => {
                let why = format!("unknown service {name:?}: the hub has no [services.{name}]");
                return Err(refuse(&mut tls, &ep, why).await);
            }
        }
    }
    if wanted.is_empty() {
        return Err(refuse(&mut tls, &ep, "no services named".into()).await);
    }
    let welcome = HubMsg::Welcome {
        heartbeat_ms: millis(shared.settings.timing.heartbeat_interval),
        heartbeat_timeout_ms: millis(shared.settings.timing.heartbeat_timeout),
        idle_timeout_ms: millis(shared.settings.timing.idle_timeout),
    };
    let serial = peer_serial(&tls);
    if let Some(days) = peer_cert(&tls).and_then(crate::tls::days_left)
        && days < 30
    {
        tracing::warn!(ep = %ep, "this ep's certificate expires in {days} days; issue a new one with `ferry hub gen-cert --ep {ep} --force`");
    }
    let guard = match shared
        .sessions
        .register(&ep, &serial, addr.ip(), wanted, ctrl)
    {
        Ok(g) => g,
        Err(reason) => return Err(refuse(&mut tls, &ep, reason).await),
    };
    // Written directly, so it precedes the `Open`s registering just queued.
    proto::write_msg(&mut tls, &welcome).await?;
    Ok((tls, guard))
}

/// Tells the ep why (its operator needs the reason) and closes.
async fn refuse(tls: &mut TlsStream<TcpStream>, ep: &str, reason: String) -> Refusal {
    let msg = HubMsg::Refused {
        reason: reason.clone(),
        retry: false,
    };
    let _ = proto::write_msg(tls, &msg).await;
    let _ = tls.shutdown().await;
    Refusal::Told(format!("ep {ep}: {reason}"))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

fn peer_cert(tls: &TlsStream<TcpStream>) -> Option<&rustls::pki_types::CertificateDer<'static>> {
    tls.get_ref().1.peer_certificates().and_then(|c| c.first())
}

/// The ep's name: the common name of its client certificate.
pub(super) fn peer_name(tls: &TlsStream<TcpStream>) -> String {
    peer_cert(tls)
        .and_then(crate::tls::common_name)
        .unwrap_or_else(|| "?".into())
}

fn peer_serial(tls: &TlsStream<TcpStream>) -> String {
    peer_cert(tls)
        .and_then(crate::tls::serial_hex)
        .unwrap_or_default()
}

async fn session(
    shared: Arc<Shared>,
    tls: TlsStream<TcpStream>,
    guard: super::sessions::SessionGuard,
    mut ctrl_rx: mpsc::Receiver<HubMsg>,
) {
    let t = shared.settings.timing;
    let names: Vec<&str> = guard.services().iter().map(|s| s.name.as_str()).collect();
    tracing::info!(ep = %guard.ep, session = guard.id, services = ?names, "ep logged in");
    let (mut rd, mut wr) = tokio::io::split(tls);
    let reader = async {
        loop {
            match tokio::time::timeout(t.heartbeat_timeout, proto::read_msg::<_, EpMsg>(&mut rd))
                .await
            {
                Err(_) => return format!("no heartbeat for {:?}", t.heartbeat_timeout),
                Ok(Err(e)) => return format!("control connection: {e}"),
                Ok(Ok(EpMsg::Heartbeat)) => {}
                Ok(Ok(other)) => return format!("unexpected message {:?}", kind(&other)),
            }
        }
    };
    let services = guard.services();
    let writer = async {
        let mut tick = tokio::time::interval(t.heartbeat_interval);
        loop {
            let msg = tokio::select! {
                Some(m) = ctrl_rx.recv() => m,
                _ = tick.tick() => {
                    services.iter().for_each(|s| s.top_up());
                    HubMsg::Heartbeat
                }
            };
            if let Err(e) = proto::write_msg(&mut wr, &msg).await {
                return format!("control connection: {e}");
            }
        }
    };
    let (reason, tell) = tokio::select! {
        r = reader => (r, false),
        r = writer => (r, false),
        why = guard.ended() => (why, true),
        _ = shared.shutdown.cancelled() => ("hub shutting down".to_string(), true),
    };
    if tell {
        // Ended on purpose: say why, so the ep's operator can act on it.
        let bye = HubMsg::Closing {
            reason: reason.clone(),
        };
        let _ =
            tokio::time::timeout(Duration::from_millis(500), proto::write_msg(&mut wr, &bye)).await;
    }
    tracing::info!(ep = %guard.ep, session = guard.id, "ep session ended: {reason}");
}

fn kind(m: &EpMsg) -> &'static str {
    match m {
        EpMsg::Hello { .. } => "hello",
        EpMsg::Heartbeat => "heartbeat",
        EpMsg::Channel { .. } => "channel",
    }
}
