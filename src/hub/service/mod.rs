//! One service on the hub: the ep session serving it (`Attached`), its
//! one-time tickets (`tickets`) and its pool of ready channels (`pool`).
//!
//! A ready channel is a TLS connection from the ep waiting for a player. Each
//! waits in its own small task that notices the ep closing it, closes it
//! after `idle_timeout`, or hands it over when a player claims it. The pool
//! keeps `pool_size` channels ready or requested, plus one per waiting player;
//! one that comes for a player who left while the pool is full is closed.
//! A handover is cancel-safe: a channel claimed by a player who left in the
//! same instant goes back to the pool rather than being lost.

mod pool;
mod tickets;

use crate::proto::HubMsg;
use pool::{Idle, Pool};
use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tickets::Tickets;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tokio_rustls::server::TlsStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// A channel: a TLS connection, or a stream of the ep's QUIC connection.
pub(crate) type Tunnel = crate::quic::Tunnel<TlsStream<TcpStream>>;

/// A TLS tunnel's TCP socket (for `TCP_INFO`); none over QUIC.
pub(crate) fn tcp_fd(t: &Tunnel) -> Option<std::os::fd::RawFd> {
    match t {
        Tunnel::Tls(t) => Some(std::os::fd::AsRawFd::as_raw_fd(t.get_ref().0)),
        Tunnel::Quic(_) => None,
    }
}

/// A ready path to home and the session that opened it.
pub(crate) struct Channel {
    pub session: u64,
    /// That session's ep negotiates (it accepts newer message fields).
    pub modern: bool,
    pub tunnel: Tunnel,
}

impl Channel {
    /// A stream the hub opened (over QUIC), not a channel the ep opened
    /// for a ticket: its `Start` must name the service.
    pub fn opened_by_hub(&self) -> bool {
        matches!(self.tunnel, Tunnel::Quic(_))
    }

    /// The address a TLS channel comes from (none over QUIC: a stream
    /// comes from its session's connection).
    pub fn peer_ip(&self) -> Option<IpAddr> {
        match &self.tunnel {
            Tunnel::Tls(t) => t
                .get_ref()
                .0
                .peer_addr()
                .ok()
                .map(|a| a.ip().to_canonical()),
            Tunnel::Quic(_) => None,
        }
    }
}

/// Whether home is there for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// No ep serves it.
    Away,
    /// An ep serves it and has not said how the service is.
    Unknown,
    Reported(crate::proto::HomeState),
}

impl Home {
    /// For the status page and `/api/status`.
    pub fn as_str(self) -> &'static str {
        use crate::proto::HomeState as H;
        match self {
            Home::Away => "away",
            Home::Unknown | Home::Reported(H::Up | H::Unknown) => "up",
            Home::Reported(H::Down) => "down",
            Home::Reported(H::Asleep) => "sleeping",
            Home::Reported(H::Waking) => "waking",
        }
    }
}

/// Channel requests in flight beyond the pool size, so a burst of players
/// cannot make the hub ask one ep for thousands of handshakes at once.
const MAX_EXTRA_PENDING: usize = 64;

/// A replacement channel costs a TLS handshake on both ends. Started at the
/// very moment a player takes a channel, it competes for the CPU with that
/// player's first bytes; a short delay keeps it off the player's path.
const REFILL_DELAY: Duration = Duration::from_millis(5);

/// After the ep reports a channel it could not open, wait this long before
/// asking again, so an ep that cannot open any is not asked in a tight loop.
const RETRY_DELAY: Duration = Duration::from_millis(250);

/// The ep session currently serving a service.
pub(crate) struct Attached {
    pub session: u64,
    pub ep: String,
    pub ip: IpAddr,
    pub ctrl: mpsc::Sender<HubMsg>,
    pub modern: bool,
    /// The session's QUIC connection: players get a stream the hub opens
    /// itself, no pool, no ticket.
    pub link: Option<crate::quic::Link>,
}

struct State {
    attached: Option<Attached>,
    /// How the attached session's ep last found the service at home.
    home: Option<crate::proto::HomeState>,
    tickets: Tickets,
    pool: Pool,
    /// Removed from the configuration (`retire`): no player waits for it.
    retired: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TakeError {
    #[error("no ep is serving this service (waited {0:?})")]
    NoEp(Duration),
    #[error("the ep sent no channel within {0:?}")]
    Timeout(Duration),
    #[error("the service was removed from the configuration")]
    Removed,
}

pub(crate) struct Service {
    pub name: String,
    /// Both change on reload, for the channels that come after.
    pool_size: AtomicUsize,
    idle_timeout_ms: AtomicU64,
    state: Mutex<State>,
    refill_scheduled: AtomicBool,
    /// Ready channels now, for tests and status.
    ready: watch::Sender<usize>,
    /// Bumped whenever a session attaches: a player waiting in the pool
    /// for a TLS channel is served by a QUIC session that attaches instead
    /// (an ep back over QUIC, or `auto` moving from TLS to QUIC).
    attached_gen: watch::Sender<u64>,
    /// This service's subtree: a child of the hub's shutdown token.
    token: CancellationToken,
    tracker: TaskTracker,
    /// Ready channels, in the hub's metrics.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Service {
    pub fn new(
        name: String,
        pool_size: usize,
        idle_timeout: Duration,
        ticket_ttl: Duration,
        token: CancellationToken,
        tracker: TaskTracker,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        Service {
            name,
            pool_size: AtomicUsize::new(pool_size),
            idle_timeout_ms: AtomicU64::new(idle_timeout.as_millis() as u64),
            state: Mutex::new(State {
                attached: None,
                home: None,
                tickets: Tickets::new(ticket_ttl),
                pool: Pool::default(),
                retired: false,
            }),
            refill_scheduled: AtomicBool::new(false),
            ready: watch::Sender::new(0),
            attached_gen: watch::Sender::new(0),
            token,
            tracker,
            gauge,
        }
    }

    /// A reload's new pool size, idle timeout and ticket lifetime; the
    /// pool follows at once, tickets issued from now on live the new time.
    pub fn retune(&self, pool_size: usize, idle_timeout: Duration, ticket_ttl: Duration) {
        self.pool_size.store(pool_size, Ordering::Relaxed);
        self.idle_timeout_ms
            .store(idle_timeout.as_millis() as u64, Ordering::Relaxed);
        let mut st = self.lock();
        st.tickets.set_ttl(ticket_ttl);
        // A smaller pool: the extra idle channels go (their park tasks
        // see the claim dropped and close them).
        while st.pool.ready() > pool_size && st.pool.pop().is_some() {}
        self.refill(&mut st);
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.load(Ordering::Relaxed))
    }

    /// The service is gone from the configuration: its pooled channels
    /// close and no more are asked for, and players waiting for one are
    /// told at once (none would come). Players relaying are not touched.
    pub fn retire(&self) {
        self.token.cancel();
        let mut st = self.lock();
        st.retired = true;
        st.attached = None;
        st.tickets.clear();
        st.pool.retain_sessions(|_| false);
        st.pool.clear_waiters();
        self.publish(&st);
    }

    /// Removed from the configuration by a reload.
    pub fn retired(&self) -> bool {
        self.lock().retired
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the service down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ep name serving this service, if any.
    pub fn served_by(&self) -> Option<String> {
        self.lock().attached.as_ref().map(|a| a.ep.clone())
    }

    /// Whether home is there for this service, as far as the hub knows.
    pub fn home(&self) -> Home {
        let st = self.lock();
        match (&st.attached, st.home) {
            (None, _) => Home::Away,
            (Some(_), None | Some(crate::proto::HomeState::Unknown)) => Home::Unknown,
            (Some(_), Some(h)) => Home::Reported(h),
        }
    }

    /// The ep of `session` says how the service is doing at home.
    pub fn set_home(&self, session: u64, home: Option<crate::proto::HomeState>) {
        let mut st = self.lock();
        if st.attached.as_ref().is_some_and(|a| a.session == session) {
            st.home = home;
        }
    }

    pub fn watch_ready(&self) -> watch::Receiver<usize> {
        self.ready.subscribe()
    }

    fn publish(&self, st: &State) {
        self.gauge.set(st.pool.ready() as i64);
        self.ready.send_if_modified(|n| {
            let now = st.pool.ready();
            std::mem::replace(n, now) != now
        });
    }

    /// Makes `att` the serving session; channels of any earlier session go.
    /// False, and nothing changed, for a service a reload removed.
    pub fn attach(&self, att: Attached) -> bool {
        let mut st = self.lock();
        if st.retired {
            return false;
        }
        let session = att.session;
        st.attached = Some(att);
        st.home = None;
        st.tickets.clear();
        st.pool.retain_sessions(|s| s == session);
        self.refill(&mut st);
        self.attached_gen.send_modify(|g| *g += 1);
        true
    }

    /// The serving session rides QUIC: players open streams, not wait in
    /// the pool.
    fn attached_over_quic(&self) -> bool {
        self.lock()
            .attached
            .as_ref()
            .is_some_and(|a| a.link.is_some())
    }

    /// Ends `session`'s hold on the service. Its idle channels close; players
    /// already relaying are untouched; waiting players keep waiting.
    pub fn detach(&self, session: u64) {
        let mut st = self.lock();
        if st.attached.as_ref().is_some_and(|a| a.session == session) {
            st.attached = None;
            st.tickets.clear();
        }
        st.pool.retain_sessions(|s| s != session);
        self.publish(&st);
    }

    /// Tops the pool up; called on every change and on each heartbeat tick
    /// (which also expires unanswered tickets).
    pub fn top_up(&self) {
        let mut st = self.lock();
        self.refill(&mut st);
    }

    /// `top_up` after `delay`; calls meanwhile coalesce into one.
    fn top_up_after(self: &Arc<Self>, delay: Duration) {
        if self.refill_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = me.token.cancelled() => {}
            }
            me.refill_scheduled.store(false, Ordering::Release);
            me.top_up();
        });
    }

    fn refill(&self, st: &mut State) {
        st.tickets.expire();
        st.pool.prune();
        self.publish(st);
        let Some(att) = &st.attached else { return };
        if self.token.is_cancelled() || att.link.is_some() {
            return;
        }
        let pool_size = self.pool_size.load(Ordering::Relaxed);
        let want = pool_size + st.pool.waiting().min(MAX_EXTRA_PENDING);
        while st.pool.ready() + st.tickets.len() < want {
            let ticket = st.tickets.issue(att.session);
            let open = HubMsg::Open {
                service: self.name.clone(),
                ticket: ticket.clone(),
            };
            if att.ctrl.try_send(open).is_err() {
                // Control queue full or closed; the next tick retries.
                st.tickets.withdraw(&ticket);
                break;
            }
        }
    }

    /// Accepts a channel presented with `ticket` by `ep` from `ip`. A
    /// refused channel comes back with the reason, so that the caller
    /// records the refusal before the peer sees the connection close.
    pub fn offer(
        self: &Arc<Self>,
        ticket: &str,
        ep: &str,
        ip: IpAddr,
        tunnel: Tunnel,
    ) -> Result<(), (&'static str, Box<Tunnel>)> {
        let mut st = self.lock();
        let session = match st.tickets.redeem(ticket) {
            Ok(session) => session,
            Err(why) => return Err((why, Box::new(tunnel))),
        };
        let why = match st.attached.as_ref().filter(|a| a.session == session) {
            None => "ticket of a session that has ended",
            Some(a) if a.ep != ep || a.ip != ip.to_canonical() => {
                "ticket presented by a different ep or address"
            }
            Some(a) => {
                let ch = Channel {
                    session,
                    modern: a.modern,
                    tunnel,
                };
                self.place(&mut st, ch);
                return Ok(());
            }
        };
        // The ticket is spent: a player waiting for its channel is asked
        // one anew now, not at the next heartbeat tick.
        self.refill(&mut st);
        Err((why, Box::new(tunnel)))
    }

    /// The ep of `session` could not open the channel for `ticket`.
    pub fn channel_failed(self: &Arc<Self>, ticket: &str, session: u64) -> bool {
        let cancelled = self.lock().tickets.cancel(ticket, session);
        if cancelled {
            self.top_up_after(RETRY_DELAY);
        }
        cancelled
    }

    /// A channel ready for a player: to the longest waiter, else parked,
    /// else (the pool already full) closed.
    fn place(self: &Arc<Self>, st: &mut State, ch: Channel) {
        let Some(ch) = st.pool.serve_waiter(ch) else {
            return self.refill(st);
        };
        // A channel asked for a player who left before it came: parked, it
        // would hold a socket and TLS state at both ends for `idle_timeout`
        // beyond `pool_size` (a burst of connections that leave at once,
        // a port scan, left up to `MAX_EXTRA_PENDING` such per service).
        st.pool.prune();
        if st.pool.ready() >= self.pool_size.load(Ordering::Relaxed) {
            return self.close(ch.tunnel);
        }
        let (claim, claimed) = oneshot::channel();
        st.pool.push(Idle {
            session: ch.session,
            claim,
        });
        self.publish(st);
        let me = self.clone();
        self.tracker.spawn(
            me.park(ch, claimed)
                .instrument(tracing::debug_span!("pooled", service = %self.name)),
        );
    }

    /// A channel that was handed out but not used (its player left in the
    /// same instant): back to the pool while its session still serves.
    fn give_back(self: &Arc<Self>, ch: Channel) {
        let mut st = self.lock();
        let current = st.attached.as_ref().map(|a| a.session) == Some(ch.session);
        if current && !self.token.is_cancelled() {
            self.place(&mut st, ch);
        } else {
            drop(st);
            self.close(ch.tunnel);
        }
    }

    fn close(self: &Arc<Self>, mut tunnel: Tunnel) {
        let me = self.clone();
        self.tracker.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), tunnel.shutdown()).await;
            me.top_up();
        });
    }

    async fn park(
        self: Arc<Self>,
        mut ch: Channel,
        claimed: oneshot::Receiver<oneshot::Sender<Channel>>,
    ) {
        let mut probe = [0u8; 1];
        let mut by_the_ep = false;
        let reply = tokio::select! {
            biased;
            r = claimed => r.ok(),
            r = ch.tunnel.read(&mut probe) => {
                tracing::debug!(?r, "pooled channel closed by the ep");
                by_the_ep = true;
                None
            }
            _ = tokio::time::sleep(self.idle_timeout()) => {
                tracing::debug!("pooled channel idle for {:?}; replacing it", self.idle_timeout());
                None
            }
            _ = self.token.cancelled() => None,
        };
        match reply {
            Some(reply) => {
                if let Err(ch) = reply.send(ch) {
                    self.give_back(ch);
                }
            }
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ch.tunnel.shutdown()).await;
                // Replaced after a pause when the ep closed it: an honest
                // ep does so only at its own idle timeout, and an ep that
                // closed each at once would otherwise have the hub make
                // TLS handshakes in a loop, a round trip apart.
                match by_the_ep {
                    true => self.top_up_after(RETRY_DELAY),
                    false => self.top_up(),
                }
            }
        }
    }

    /// A channel for an arriving player: a ready one at once, else the next
    /// to arrive, waiting at most `wait` (also while no ep is attached).
    /// Cancel-safe: dropped at any point, no channel is lost.
    pub async fn take(self: &Arc<Self>, wait: Duration) -> Result<Channel, TakeError> {
        let deadline = Instant::now() + wait;
        loop {
            // Before the look at the attached session below: an ep that
            // attaches over QUIC after that look (and before this player
            // waits in the pool, which nothing fills over QUIC) is seen as
            // a change, not missed until `player_wait` runs out.
            let mut attached = self.attached_gen.subscribe();
            // Over QUIC a stream is as cheap as a pooled channel: open one.
            match self.open_stream(deadline).await {
                // Opened while a reload removed the service (a stream
                // limit held it): not relayed, only to be cut at the drain.
                Some(Ok(_)) if self.retired() => return Err(TakeError::Removed),
                Some(Ok(ch)) => return Ok(ch),
                Some(Err(())) if self.retired() => return Err(TakeError::Removed),
                Some(Err(())) if Instant::now() >= deadline => {
                    return Err(TakeError::Timeout(wait));
                }
                Some(Err(())) => continue,
                None => {}
            }
            let next = {
                let mut st = self.lock();
                if st.retired {
                    return Err(TakeError::Removed);
                }
                let next = match st.pool.pop() {
                    Some(idle) => Err(idle),
                    None => {
                        let rx = st.pool.wait();
                        self.refill(&mut st);
                        Ok(rx)
                    }
                };
                self.publish(&st);
                next
            };
            match next {
                Err(idle) => {
                    let (tx, rx) = oneshot::channel();
                    if idle.claim.send(tx).is_ok()
                        && let Some(ch) = Handover::new(self, rx).recv().await
                    {
                        self.top_up_after(REFILL_DELAY);
                        return Ok(ch);
                    }
                }
                Ok(rx) => {
                    let mut handover = Handover::new(self, rx);
                    let got = loop {
                        tokio::select! {
                            r = tokio::time::timeout_at(deadline, handover.recv()) => break Some(r),
                            Ok(()) = attached.changed() => {
                                if self.attached_over_quic() {
                                    // Leaves the pool's queue (a channel
                                    // already handed over goes back).
                                    break None;
                                }
                            }
                        }
                    };
                    match got {
                        None => continue,
                        Some(Ok(Some(ch))) => return Ok(ch),
                        Some(_) if self.retired() => return Err(TakeError::Removed),
                        Some(_) if self.served_by().is_none() => {
                            return Err(TakeError::NoEp(wait));
                        }
                        Some(_) => return Err(TakeError::Timeout(wait)),
                    }
                }
            }
        }
    }
}

impl Service {
    /// A stream on the attached QUIC session's connection, if the session
    /// rides QUIC (None: it does not). `Err` after a connection that is
    /// gone (the ep will log in again; asked again after a short delay) or
    /// at the deadline.
    async fn open_stream(&self, deadline: Instant) -> Option<Result<Channel, ()>> {
        let (session, modern, link) = {
            let st = self.lock();
            st.attached
                .as_ref()
                .and_then(|a| Some((a.session, a.modern, a.link.clone()?)))
        }?;
        if link.is_silent() {
            // Gone without a word, perhaps (killed, its power cut): a
            // stream now would go nowhere. The player waits, as over TLS
            // for a session that ended, for it to be heard again or for
            // the ep's next login.
            tokio::time::sleep(RETRY_DELAY.min(deadline - Instant::now())).await;
            return Some(Err(()));
        }
        Some(
            match tokio::time::timeout_at(deadline, link.conn.open_bi()).await {
                Ok(Ok((send, recv))) => Ok(Channel {
                    session,
                    modern,
                    tunnel: Tunnel::Quic(link.stream(send, recv)),
                }),
                Ok(Err(_)) => {
                    tokio::time::sleep(RETRY_DELAY.min(deadline - Instant::now())).await;
                    Err(())
                }
                Err(_) => Err(()),
            },
        )
    }
}

/// The receiving end of a handover. Dropped before it received, it closes
/// the slot and returns a channel already sent into it to the pool.
struct Handover {
    svc: Arc<Service>,
    rx: Option<oneshot::Receiver<Channel>>,
}

impl Handover {
    fn new(svc: &Arc<Service>, rx: oneshot::Receiver<Channel>) -> Self {
        Handover {
            svc: svc.clone(),
            rx: Some(rx),
        }
    }

    async fn recv(&mut self) -> Option<Channel> {
        let rx = self.rx.as_mut()?;
        let got = rx.await.ok();
        self.rx = None;
        got
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(ch) = rx.try_recv() {
                self.svc.give_back(ch);
            }
        }
    }
}
