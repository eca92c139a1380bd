//! The control door: ep logins and their sessions.

use super::Shared;
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
    if !shared.settings.allowlist.contains(addr.ip()) {
        tracing::debug!(%addr, "control: source not in ep_allowlist; closed before TLS");
        return;
    }
    net::tune_tunnel(&tcp);
    let span = tracing::info_span!("control", peer = %addr);
    shared
        .tracker
        .clone()
        .spawn(handle(shared, tcp, addr).instrument(span));
}

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
}

async fn handle(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr) {
    let deadline = shared.settings.timing.handshake_timeout;
    let (ctrl_tx, ctrl_rx) = mpsc::channel(CTRL_QUEUE);
    let login = tokio::select! {
        r = tokio::time::timeout(deadline, login(&shared, tcp, addr, ctrl_tx)) => r,
        _ = shared.shutdown.cancelled() => return,
    };
    match login {
        Err(_) => tracing::info!("login refused: not completed within {deadline:?}"),
        Ok(Err(e)) => tracing::warn!("login refused: {e}"),
        Ok(Ok((tls, guard))) => session(shared, tls, guard, ctrl_rx).await,
    }
}

async fn login(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    addr: SocketAddr,
    ctrl: mpsc::Sender<HubMsg>,
) -> Result<(TlsStream<TcpStream>, super::sessions::SessionGuard), Refusal> {
    let mut tls = shared.acceptor.accept(tcp).await.map_err(Refusal::Tls)?;
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
    let hash = shared.settings.token_hash.clone();
    let good = tokio::task::spawn_blocking(move || token::verify(&token, &hash))
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
    let guard = match shared.sessions.register(&ep, addr.ip(), wanted, ctrl) {
        Ok(g) => g,
        Err(reason) => return Err(refuse(&mut tls, &ep, reason).await),
    };
    // Written directly, so it precedes the `Open`s registering just queued.
    proto::write_msg(&mut tls, &welcome).await?;
    Ok((tls, guard))
}

/// Tells the ep why (its operator needs the reason) and closes.
async fn refuse(tls: &mut TlsStream<TcpStream>, ep: &str, reason: String) -> Refusal {
    let _ = proto::write_msg(
        tls,
        &HubMsg::Refused {
            reason: reason.clone(),
        },
    )
    .await;
    let _ = tls.shutdown().await;
    Refusal::Told(format!("ep {ep}: {reason}"))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// The ep's name: the common name of its client certificate.
pub(super) fn peer_name(tls: &TlsStream<TcpStream>) -> String {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(crate::tls::common_name)
        .unwrap_or_else(|| "?".into())
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
    let reason = tokio::select! {
        r = reader => r,
        r = writer => r,
        _ = guard.replaced.cancelled() => "replaced by a newer login of the same ep".to_string(),
        _ = shared.shutdown.cancelled() => "hub shutting down".to_string(),
    };
    tracing::info!(ep = %guard.ep, session = guard.id, "ep session ended: {reason}");
}

fn kind(m: &EpMsg) -> &'static str {
    match m {
        EpMsg::Hello { .. } => "hello",
        EpMsg::Heartbeat => "heartbeat",
        EpMsg::Channel { .. } => "channel",
    }
}
