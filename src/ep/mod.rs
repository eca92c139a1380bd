//! The ep: keeps a control session to the hub alive and opens channels on
//! request. Channels carrying players are independent of the control
//! session: they live on while it reconnects.

mod backoff;
mod channel;
mod login;

pub use login::{LoginError, Tunnel, Welcome, login};

/// A bare TLS connection to a hub port with the ep's identity, for tests
/// that speak the protocol by hand (panics if it cannot connect).
#[doc(hidden)]
pub async fn connect_for_tests(settings: &EpSettings, addr: &str) -> Tunnel {
    login::connect_tls(settings, addr)
        .await
        .expect("TLS connection to the hub")
}

use crate::{
    config::ep::EpSettings,
    proto::{self, EpMsg, HubMsg},
};
use anyhow::Result;
use backoff::Backoff;
use std::sync::Arc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// Channels the ep keeps opening or waiting at once (see `Ep::waiting`).
const MAX_WAITING_CHANNELS: usize = 1024;

pub(crate) struct Ep {
    settings: EpSettings,
    /// Channels opening or waiting for a player. The hub asks for a few
    /// per service; this bound keeps a misbehaving hub from making the ep
    /// open connections without end.
    waiting: Arc<tokio::sync::Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
}

/// Runs the ep until `shutdown`: logs in, serves, reconnects with backoff.
pub async fn run(settings: EpSettings, shutdown: CancellationToken) -> Result<()> {
    let ep = Arc::new(Ep {
        settings,
        waiting: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING_CHANNELS)),
        tracker: TaskTracker::new(),
        shutdown: shutdown.clone(),
        hard_stop: CancellationToken::new(),
    });
    let t = ep.settings.timing;
    let mut backoff = Backoff::new(t.backoff_min, t.backoff_max);
    while !shutdown.is_cancelled() {
        tracing::info!(hub = %ep.settings.hub, "connecting to hub");
        let attempt = tokio::select! {
            r = login(&ep.settings) => r,
            _ = shutdown.cancelled() => break,
        };
        let delay = match attempt {
            Ok((tls, welcome)) => {
                backoff.reset();
                let services: Vec<&String> = ep.settings.services.keys().collect();
                tracing::info!(hub = %ep.settings.hub, ep = %ep.settings.identity, ?services, "connected to hub");
                let reason = session(&ep, tls, welcome).await;
                if shutdown.is_cancelled() {
                    break;
                }
                let delay = backoff.next(false);
                tracing::warn!("control connection lost: {reason}; reconnecting in {delay:.1?}");
                delay
            }
            Err(e) => {
                let delay = backoff.next(e.is_permanent());
                let hint = if e.is_permanent() {
                    " (this will not fix itself)"
                } else {
                    ""
                };
                tracing::error!("login failed: {e}{hint}; retrying in {delay:.1?}");
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    crate::shutdown::drain(&ep.tracker, &ep.hard_stop, t.drain_timeout).await;
    tracing::info!("ep stopped");
    Ok(())
}

/// Serves one control session; returns why it ended.
async fn session(ep: &Arc<Ep>, tls: login::Tunnel, w: Welcome) -> String {
    let channel: Arc<str> = w.channel.as_str().into();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let reader = async {
        loop {
            match tokio::time::timeout(w.heartbeat_timeout, proto::read_msg::<_, HubMsg>(&mut rd))
                .await
            {
                Err(_) => {
                    return format!("no heartbeat from the hub for {:?}", w.heartbeat_timeout);
                }
                Ok(Err(e)) => return e.to_string(),
                Ok(Ok(HubMsg::Heartbeat)) => {}
                Ok(Ok(HubMsg::Open { service, ticket })) => {
                    let span = tracing::info_span!("channel", service = %service);
                    ep.tracker.spawn(
                        channel::run(ep.clone(), service, ticket, channel.clone(), w.idle_timeout)
                            .instrument(span),
                    );
                }
                Ok(Ok(HubMsg::Closing { reason })) => {
                    return format!("the hub closed the session: {reason}");
                }
                Ok(Ok(other)) => return format!("unexpected message from the hub: {other:?}"),
            }
        }
    };
    let writer = async {
        let mut tick = tokio::time::interval(w.heartbeat);
        loop {
            tick.tick().await;
            if let Err(e) = proto::write_msg(&mut wr, &EpMsg::Heartbeat).await {
                return e.to_string();
            }
        }
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
        _ = ep.shutdown.cancelled() => "ep shutting down".into(),
    }
}
