//! One service on the hub: its ep attachment and its pool of ready channels.
//!
//! A ready channel is a TLS connection from the ep waiting for a player. Each
//! waits in its own small task that notices the ep closing it, closes it
//! after `idle_timeout`, or hands it over when a player claims it. The pool
//! keeps `pool_size` channels ready or requested, plus one per waiting player.

use crate::{proto::HubMsg, token};
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_rustls::server::TlsStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub(crate) type Tunnel = TlsStream<TcpStream>;

type TicketKey = [u8; 32];

fn ticket_key(ticket: &str) -> TicketKey {
    let d = ring::digest::digest(&ring::digest::SHA256, ticket.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(d.as_ref());
    key
}

/// Channel requests in flight beyond the pool size, so a burst of players
/// cannot make the hub ask one ep for thousands of handshakes at once.
const MAX_EXTRA_PENDING: usize = 64;

/// The ep session currently serving a service.
pub(crate) struct Attached {
    pub session: u64,
    pub ep: String,
    pub ip: IpAddr,
    pub ctrl: mpsc::Sender<HubMsg>,
}

struct Idle {
    session: u64,
    claim: oneshot::Sender<oneshot::Sender<Tunnel>>,
}

#[derive(Default)]
struct PoolState {
    attached: Option<Attached>,
    idle: Vec<Idle>,
    waiters: VecDeque<oneshot::Sender<Tunnel>>,
    /// SHA-256 of a ticket → (session, expiry). Keyed by the digest so
    /// the map's comparisons never touch the secret itself: whatever a
    /// lookup's timing reveals is about a hash, not a usable ticket.
    pending: HashMap<TicketKey, (u64, Instant)>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TakeError {
    #[error("no ep is serving this service (waited {0:?})")]
    NoEp(Duration),
    #[error("the ep sent no channel within {0:?}")]
    Timeout(Duration),
}

pub(crate) struct Service {
    pub name: String,
    pool_size: usize,
    idle_timeout: Duration,
    ticket_ttl: Duration,
    state: Mutex<PoolState>,
    refill_scheduled: AtomicBool,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// A replacement channel costs a TLS handshake on both ends. Started at the
/// very moment a player takes a channel, it competes for the CPU with that
/// player's first bytes; a short delay keeps it off the player's path.
const REFILL_DELAY: Duration = Duration::from_millis(5);

impl Service {
    pub fn new(
        name: String,
        pool_size: usize,
        idle_timeout: Duration,
        ticket_ttl: Duration,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Service {
            name,
            pool_size,
            idle_timeout,
            ticket_ttl,
            state: Mutex::default(),
            refill_scheduled: AtomicBool::new(false),
            shutdown,
            tracker,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic elsewhere must not take the service down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ep name serving this service, if any.
    pub fn served_by(&self) -> Option<String> {
        self.lock().attached.as_ref().map(|a| a.ep.clone())
    }

    /// Makes `att` the serving session; channels of any earlier session go.
    pub fn attach(&self, att: Attached) {
        let mut st = self.lock();
        let session = att.session;
        st.attached = Some(att);
        st.pending.clear();
        st.idle.retain(|i| i.session == session);
        self.refill(&mut st);
    }

    /// Ends `session`'s hold on the service. Its idle channels close; players
    /// already relaying are untouched; waiting players keep waiting.
    pub fn detach(&self, session: u64) {
        let mut st = self.lock();
        if st.attached.as_ref().is_some_and(|a| a.session == session) {
            st.attached = None;
            st.pending.clear();
        }
        st.idle.retain(|i| i.session != session);
    }

    /// Tops the pool up; called on every change and on each heartbeat tick
    /// (which also expires unanswered tickets).
    pub fn top_up(&self) {
        let mut st = self.lock();
        self.refill(&mut st);
    }

    /// `top_up` after `REFILL_DELAY`; calls meanwhile coalesce into one.
    fn top_up_soon(self: &Arc<Self>) {
        if self.refill_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(REFILL_DELAY) => {}
                _ = me.shutdown.cancelled() => {}
            }
            me.refill_scheduled.store(false, Ordering::Release);
            me.top_up();
        });
    }

    fn refill(&self, st: &mut PoolState) {
        let now = Instant::now();
        st.pending.retain(|_, (_, exp)| *exp > now);
        st.idle.retain(|i| !i.claim.is_closed());
        st.waiters.retain(|w| !w.is_closed());
        let Some(att) = &st.attached else { return };
        if self.shutdown.is_cancelled() {
            return;
        }
        let want = self.pool_size + st.waiters.len().min(MAX_EXTRA_PENDING);
        while st.idle.len() + st.pending.len() < want {
            let ticket = token::random_hex(32);
            let open = HubMsg::Open {
                service: self.name.clone(),
                ticket: ticket.clone(),
            };
            if att.ctrl.try_send(open).is_err() {
                break; // control queue full or closed; the next tick retries
            }
            st.pending
                .insert(ticket_key(&ticket), (att.session, now + self.ticket_ttl));
        }
    }

    /// Accepts a channel presented with `ticket` by `ep` from `ip`.
    pub fn offer(
        self: &Arc<Self>,
        ticket: &str,
        ep: &str,
        ip: IpAddr,
        tunnel: Tunnel,
    ) -> Result<(), &'static str> {
        let mut st = self.lock();
        let (session, expiry) = st
            .pending
            .remove(&ticket_key(ticket))
            .ok_or("unknown or already used ticket")?;
        if expiry <= Instant::now() {
            return Err("expired ticket");
        }
        match &st.attached {
            Some(a) if a.session == session => {
                if a.ep != ep || a.ip != ip.to_canonical() {
                    return Err("ticket presented by a different ep or address");
                }
            }
            _ => return Err("ticket of a session that has ended"),
        }
        let mut tunnel = tunnel;
        while let Some(waiter) = st.waiters.pop_front() {
            match waiter.send(tunnel) {
                Ok(()) => {
                    self.refill(&mut st);
                    return Ok(());
                }
                Err(back) => tunnel = back,
            }
        }
        let (claim, claimed) = oneshot::channel();
        st.idle.push(Idle { session, claim });
        drop(st);
        let me = self.clone();
        self.tracker.spawn(
            me.park(tunnel, claimed)
                .instrument(tracing::debug_span!("pooled", service = %self.name)),
        );
        Ok(())
    }

    async fn park(
        self: Arc<Self>,
        mut tunnel: Tunnel,
        claimed: oneshot::Receiver<oneshot::Sender<Tunnel>>,
    ) {
        let mut probe = [0u8; 1];
        let reply = tokio::select! {
            biased;
            r = claimed => r.ok(),
            r = tunnel.read(&mut probe) => {
                tracing::debug!(?r, "pooled channel closed by the ep");
                None
            }
            _ = tokio::time::sleep(self.idle_timeout) => {
                tracing::debug!("pooled channel idle for {:?}; replacing it", self.idle_timeout);
                None
            }
            _ = self.shutdown.cancelled() => None,
        };
        match reply {
            Some(reply) => {
                if let Err(mut tunnel) = reply.send(tunnel) {
                    let _ = tunnel.shutdown().await;
                }
            }
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(1), tunnel.shutdown()).await;
                self.top_up();
            }
        }
    }

    /// A channel for an arriving player: a ready one at once, else the next
    /// to arrive, waiting at most `wait` (also while no ep is attached).
    pub async fn take(self: &Arc<Self>, wait: Duration) -> Result<Tunnel, TakeError> {
        let deadline = Instant::now() + wait;
        loop {
            let waiter = {
                let mut st = self.lock();
                match st.idle.pop() {
                    Some(idle) => Err(idle),
                    None => {
                        let (tx, rx) = oneshot::channel();
                        st.waiters.push_back(tx);
                        self.refill(&mut st);
                        Ok(rx)
                    }
                }
            };
            match waiter {
                Err(idle) => {
                    let (tx, rx) = oneshot::channel();
                    if idle.claim.send(tx).is_ok()
                        && let Ok(tunnel) = rx.await
                    {
                        self.top_up_soon();
                        return Ok(tunnel);
                    }
                }
                Ok(rx) => {
                    return match tokio::time::timeout_at(deadline, rx).await {
                        Ok(Ok(tunnel)) => Ok(tunnel),
                        _ if self.served_by().is_none() => Err(TakeError::NoEp(wait)),
                        _ => Err(TakeError::Timeout(wait)),
                    };
                }
            }
        }
    }
}
