//! The ep: keeps a control session to the hub alive and opens channels on
//! request. Channels carrying players are independent of the control
//! session: they live on while it reconnects.

mod backoff;
mod channel;
pub mod join;
mod login;
mod reload;
mod slots;
mod status;
mod udp;
mod wake;

pub use login::{Leg, LoginError, Tunnel, Welcome, login};

/// A bare TLS connection to a hub port with the ep's identity, for tests
/// that speak the protocol by hand (panics if it cannot connect).
#[doc(hidden)]
pub async fn connect_for_tests(settings: &EpSettings, addr: &str) -> Tunnel {
    let tls = login::load_tls(settings).expect("the ep's TLS files");
    login::connect_tls(settings, &tls.client, addr, Leg::Control)
        .await
        .expect("TLS connection to the hub")
}

/// A channel connection as the ep dials it, leaving from `from`, for tests
/// of where channels come from.
#[doc(hidden)]
pub async fn connect_channel_for_tests(
    settings: &EpSettings,
    addr: &str,
    from: Option<std::net::IpAddr>,
) -> Result<Tunnel, LoginError> {
    let tls = login::load_tls(settings)?;
    login::connect_tls(settings, &tls.client, addr, Leg::Channel { from }).await
}

use crate::{
    config::ep::{EpSettings, Transport},
    proto::{self, CloseKind, EpMsg, FrameReader, HubMsg, feature},
};
use anyhow::Result;
use backoff::Backoff;
use std::{sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// Channels the ep keeps opening or waiting at once (see `Ep::waiting`).
const MAX_WAITING_CHANNELS: usize = 1024;

/// A session that lasted this long was a real one: the next reconnect
/// starts from the shortest delay again. A session that dies sooner (two
/// eps with one certificate replacing each other, a hub that closes it at
/// once) keeps the backoff growing, so such a loop costs the hub one
/// Argon2 run per backoff step rather than several a second.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// In `transport = "auto"`, how long a QUIC attempt may take before the ep
/// serves over TLS instead, and how long before it tries QUIC again.
const QUIC_TRY: Duration = Duration::from_secs(3);
const QUIC_RETRY: Duration = Duration::from_secs(300);

/// What the ep knows of the hub's QUIC door.
#[derive(Default)]
struct QuicState {
    /// One UDP socket for the ep's life; rebinding it is a migration.
    endpoint: Option<quinn::Endpoint>,
    /// The port the hub's welcome named.
    port: Option<u16>,
    failed: Option<tokio::time::Instant>,
}

pub(crate) struct Ep {
    /// Swapped whole on reload; read with `settings()`.
    settings: crate::swap::Swap<EpSettings>,
    /// The TLS files `settings` names, as loaded (swapped with them).
    tls: crate::swap::Swap<crate::tls::EpTls>,
    /// Bumped when a reload changes the services offered, so the live
    /// session re-announces them.
    offered: tokio::sync::watch::Sender<u64>,
    /// A reload changed the ep's identity: the session logs in again.
    relogin: tokio::sync::Notify,
    /// A reload changed the token or the TLS files: a backoff ends now.
    retry_now: tokio::sync::Notify,
    /// Reloads applied since start.
    reloaded: tokio::sync::watch::Sender<u64>,
    quic: std::sync::Mutex<QuicState>,
    /// Channels opening or waiting for a player. The hub asks for a few
    /// per service; this bound keeps a misbehaving hub from making the ep
    /// open connections without end.
    waiting: Arc<tokio::sync::Semaphore>,
    /// Players at once per service (`max_players`).
    players: Arc<slots::Slots>,
    /// How each service at home was last found; wakes and sleeps.
    homes: Arc<wake::Homes>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    pub metrics: crate::metrics::ep::EpMetrics,
    /// What the status page says of the hub connection and the services.
    pub state: status::State,
}

/// How a session ended.
struct End {
    reason: String,
    kind: Option<CloseKind>,
    /// Ended to log in again over QUIC at once (not a failure).
    switch: bool,
}

/// Runs the ep until `shutdown`: logs in, serves, reconnects with backoff.
pub async fn run(settings: EpSettings, shutdown: CancellationToken) -> Result<()> {
    run_until(settings, shutdown, CancellationToken::new()).await
}

/// `run`, where `immediate` (a second Ctrl-C) cuts the drain short.
pub async fn run_until(
    settings: EpSettings,
    shutdown: CancellationToken,
    immediate: CancellationToken,
) -> Result<()> {
    bind(settings, shutdown, immediate).await?.run().await
}

/// An ep with its admin port (if any) bound, ready to `run`.
pub struct Bound {
    ep: Arc<Ep>,
    admin: Option<tokio::net::TcpListener>,
    immediate: CancellationToken,
}

/// Loads the TLS files `settings` names and binds its admin port; a bad
/// certificate or a port in use fails here.
pub async fn bind(
    settings: EpSettings,
    shutdown: CancellationToken,
    immediate: CancellationToken,
) -> Result<Bound> {
    let tls = crate::tls::EpTls::load(&settings)?;
    // Two files per player (its socket at home, its channel): what
    // `max_players` allows should not fail for want of descriptors.
    crate::fdlimit::raise();
    let admin = match &settings.admin {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a.bind)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {} (admin): {e}", a.bind))?,
        ),
        None => None,
    };
    let metrics = crate::metrics::ep::EpMetrics::new(settings.services.keys().map(String::as_str));
    let state = status::State::new(&settings.hub);
    let ep = Arc::new(Ep {
        settings: crate::swap::Swap::new(settings),
        tls: crate::swap::Swap::new(tls),
        offered: tokio::sync::watch::Sender::new(0),
        relogin: tokio::sync::Notify::new(),
        retry_now: tokio::sync::Notify::new(),
        reloaded: tokio::sync::watch::Sender::new(0),
        quic: std::sync::Mutex::default(),
        waiting: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING_CHANNELS)),
        players: Arc::default(),
        homes: Arc::default(),
        tracker: TaskTracker::new(),
        shutdown,
        hard_stop: CancellationToken::new(),
        metrics,
        state,
    });
    Ok(Bound {
        ep,
        admin,
        immediate,
    })
}

impl Ep {
    pub(crate) fn settings(&self) -> Arc<EpSettings> {
        self.settings.get()
    }
}

/// A running ep, for tests: a NAT re-mapping simulated by moving its QUIC
/// connection to a new UDP port.
#[doc(hidden)]
#[derive(Clone)]
pub struct Handle(Arc<Ep>);

impl Handle {
    /// Reloads applied since start, updated as they land.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.reloaded.subscribe()
    }

    pub fn rebind_quic(&self) -> std::io::Result<()> {
        self.0.rebind_quic(None)
    }

    /// The same, onto a socket bound to `addr` (another address).
    pub fn rebind_quic_to(&self, addr: std::net::SocketAddr) -> std::io::Result<()> {
        self.0.rebind_quic(Some(addr))
    }
}

/// One QUIC login attempt to `hub`, for tests of the QUIC door's refusals.
#[doc(hidden)]
pub async fn login_quic_once(
    settings: &EpSettings,
    hub: std::net::SocketAddr,
) -> Result<(), LoginError> {
    let endpoint = login::quic_endpoint(&login::load_tls(settings)?.client, hub)?;
    let deadline = settings.timing.connect_timeout;
    match tokio::time::timeout(deadline, login::login_quic(settings, &endpoint, hub)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(LoginError::Timeout {
            addr: hub.to_string(),
            after: deadline,
        }),
    }
}

impl Bound {
    pub fn handle(&self) -> Handle {
        Handle(self.ep.clone())
    }

    /// Where the admin door listens, if it is on.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub async fn run(self) -> Result<()> {
        let Bound {
            ep,
            admin,
            immediate,
        } = self;
        let s = ep.settings();
        for w in s.hash_warnings() {
            tracing::warn!("{w}");
        }
        if let (Some(listener), Some(a)) = (admin, &s.admin) {
            let source: Arc<dyn crate::admin::Source> = ep.clone();
            crate::admin::spawn(listener, source, a, &ep.shutdown, &ep.tracker);
        }
        let triggers = reload::triggers(&ep);
        ep.tracker.spawn(reload::watch(ep.clone(), triggers));
        crate::sdnotify::ready();
        main_loop(ep, immediate).await
    }
}

async fn main_loop(ep: Arc<Ep>, immediate: CancellationToken) -> Result<()> {
    let shutdown = ep.shutdown.clone();
    let t = ep.settings().timing;
    let mut backoff = Backoff::new(t.backoff_min, t.backoff_max);
    while !shutdown.is_cancelled() {
        // Each attempt with the settings as they are now (a reload may
        // have changed the token or the certificate). The services offered
        // are read before them: a reload that lands during the login is
        // then seen as one the session must announce.
        let offered = *ep.offered.borrow();
        let s = ep.settings();
        tracing::info!(hub = %s.hub, "connecting to hub");
        let attempt = tokio::select! {
            r = ep.connect(&s) => r,
            _ = shutdown.cancelled() => break,
        };
        let delay = match attempt {
            Ok((tls, welcome)) => {
                connected(&ep, &s, &welcome);
                let link = welcome.link.clone();
                let began = tokio::time::Instant::now();
                let end = session(&ep, tls, welcome, offered).await;
                if let Some(link) = link {
                    close_when_idle(&ep, link);
                }
                ep.metrics.hub_connected.set(0);
                ep.state.disconnected(&end.reason);
                if shutdown.is_cancelled() {
                    break;
                }
                if end.switch {
                    tracing::info!("{}", end.reason);
                    continue;
                }
                if began.elapsed() >= STABLE_SESSION {
                    backoff.reset();
                }
                retry_delay(&end, &mut backoff)
            }
            Err(e) => login_failed(&ep, &e, &mut backoff),
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ep.retry_now.notified() => {
                tracing::info!("the token or certificate changed; logging in again now");
                backoff.reset();
            }
            _ = shutdown.cancelled() => break,
        }
    }
    crate::sdnotify::stopping();
    let drain = ep.settings().timing.drain_timeout;
    crate::shutdown::drain(&ep.tracker, &ep.hard_stop, drain, &immediate).await;
    tracing::info!("ep stopped");
    Ok(())
}

/// Records and logs a login that succeeded.
fn connected(ep: &Ep, s: &EpSettings, welcome: &Welcome) {
    ep.state.connected(welcome.link.is_some());
    ep.metrics.hub_connected.set(1);
    ep.metrics.logins.inc();
    let services: Vec<&String> = s.services.keys().collect();
    let (transport, addr) = match &welcome.link {
        Some(l) => ("quic", l.conn.remote_address().to_string()),
        None => ("tls", s.hub.clone()),
    };
    let ep_name = ep.tls.get().identity.clone();
    tracing::info!(hub = %addr, transport, ep = %ep_name, ?services, "connected to hub");
}

/// Lets an ended session's QUIC connection go once its players are done.
fn close_when_idle(ep: &Arc<Ep>, link: crate::quic::Link) {
    // Its players keep the connection until they are done; then nothing
    // holds it open. No deadline of the ep's own: a hub that ended the
    // session bounds it with its `drain_timeout`, and this ep's shutdown
    // with its hard stop.
    let ep2 = ep.clone();
    ep.tracker.spawn(async move {
        link.close_when_idle(None, &ep2.hard_stop, "session over")
            .await;
    });
}

/// How long to wait before logging in again after the session `end`.
fn retry_delay(end: &End, backoff: &mut Backoff) -> Duration {
    // Both need a person: retrying soon only costs the hub Argon2.
    let person = match end.kind {
        Some(CloseKind::Replaced) => {
            Some("another ep runs with this ep's certificate and needs a person to stop it")
        }
        Some(CloseKind::Revoked) => Some(
            "this ep needs a new certificate (`ferry hub gen-cert --ep NAME --force` on the hub)",
        ),
        _ => None,
    };
    if let Some(why) = person {
        let delay = backoff.next(true);
        tracing::error!("{}; {why}: waiting the maximum, {delay:.1?}", end.reason);
        delay
    } else {
        let delay = backoff.next(false);
        tracing::warn!(
            "control connection lost: {}; reconnecting in {delay:.1?}",
            end.reason
        );
        delay
    }
}

/// Records a failed login; returns how long to wait before the next.
fn login_failed(ep: &Ep, e: &LoginError, backoff: &mut Backoff) -> Duration {
    ep.state.disconnected(&format!("login failed: {e}"));
    let delay = backoff.next(e.is_permanent());
    let hint = if e.is_permanent() {
        " (this will not fix itself)"
    } else {
        ""
    };
    tracing::error!("login failed: {e}{hint}; retrying in {delay:.1?}");
    delay
}

/// Serves one control session; returns why it ended.
async fn session(ep: &Arc<Ep>, tls: login::Path, w: Welcome, offered_at_hello: u64) -> End {
    if let Some(port) = w.quic_port {
        ep.quic_lock().port = Some(port);
    }
    let s = ep.settings();
    // Over TLS with a hub that offers QUIC: log in over QUIC now (players
    // already on TLS channels keep them).
    if s.transport == Transport::Auto
        && w.link.is_none()
        && w.quic_port.is_some()
        && ep.quic_allowed()
    {
        return End {
            reason: "the hub offers QUIC; logging in over it".into(),
            kind: None,
            switch: true,
        };
    }
    let (rd, mut wr) = tokio::io::split(tls);
    let mut rd = FrameReader::new(rd);
    // Channel tasks report failures here when the hub wants to hear them.
    let (failed_tx, mut failed_rx) = mpsc::channel::<EpMsg>(64);
    let report = w.hub_has(feature::CHANNEL_FAILED).then_some(failed_tx);
    let target = channel_target(&w, report);
    // Over QUIC the hub opens a stream per player itself.
    if let Some(link) = &w.link {
        let streams = hub_streams(ep.clone(), link.clone(), w.hub_ip);
        ep.tracker
            .spawn(streams.instrument(tracing::info_span!("quic")));
    }
    let mut tick = tokio::time::interval(w.heartbeat);
    let mut silence = Box::pin(tokio::time::sleep(w.heartbeat_timeout));
    // Over a hub that answers for services away from home: how they are.
    let mut homes = ep.homes.watch();
    if w.hub_has(feature::HOME) {
        homes.mark_changed();
    } else {
        homes.mark_unchanged();
    }
    let mut offered = ep.offered.subscribe();
    if *offered.borrow() == offered_at_hello {
        offered.mark_unchanged();
    } else {
        // Changed since the hello was built: announce at once.
        offered.mark_changed();
    }
    loop {
        let out = tokio::select! {
            msg = rd.read::<HubMsg>() => {
                silence.as_mut().reset(tokio::time::Instant::now() + w.heartbeat_timeout);
                match on_hub_msg(ep, msg, &target) {
                    Some(end) => return end,
                    None => continue,
                }
            }
            _ = silence.as_mut() => {
                return end(format!("no heartbeat from the hub for {:?}", w.heartbeat_timeout));
            }
            _ = tick.tick() => EpMsg::Heartbeat,
            _ = ep.relogin.notified() => {
                return end("the ep's certificate changed; logging in with it".into());
            }
            Ok(()) = offered.changed() => {
                if !w.hub_has(feature::LIVE_SERVICES) {
                    return end("the hub predates live service changes; logging in again to announce them".into());
                }
                reload::offer(&ep.settings())
            }
            Some(m) = failed_rx.recv() => m,
            Ok(()) = homes.changed(), if w.hub_has(feature::HOME) => {
                EpMsg::Home { services: homes.borrow_and_update().clone() }
            }
            _ = ep.shutdown.cancelled() => return end("ep shutting down".into()),
        };
        if let Err(e) = proto::write_msg(&mut wr, &out).await {
            return end(e.to_string());
        }
    }
}

/// Where this session's channels go, as its welcome says.
fn channel_target(w: &Welcome, report: Option<mpsc::Sender<EpMsg>>) -> channel::Target {
    channel::Target {
        addr: w.channel.as_str().into(),
        // Over QUIC the hub asks for no channels: it opens a stream per
        // player itself (`hub_streams`).
        leg: Leg::Channel { from: w.local_ip },
        idle_timeout: w.idle_timeout,
        hub_ip: w.hub_ip,
        report,
    }
}

/// Acts on one message from the hub; `Some` when it ends the session.
fn on_hub_msg(
    ep: &Arc<Ep>,
    msg: Result<HubMsg, proto::FrameError>,
    target: &channel::Target,
) -> Option<End> {
    match msg {
        Ok(HubMsg::Heartbeat) => None,
        Ok(HubMsg::Open { service, ticket }) => {
            let span = tracing::info_span!("channel", service = %service);
            ep.tracker
                .spawn(channel::run(ep.clone(), service, ticket, target.clone()).instrument(span));
            None
        }
        Ok(HubMsg::Services { services, refused }) => {
            let now: Vec<&String> = services.keys().collect();
            if refused.is_empty() {
                tracing::info!(services = ?now, "the hub serves these services through this ep");
            } else {
                tracing::warn!(services = ?now, ?refused, "the hub serves these services through this ep, not the others");
            }
            None
        }
        Ok(HubMsg::Closing { reason, kind }) => Some(End {
            reason: format!("the hub closed the session: {reason}"),
            kind,
            switch: false,
        }),
        Ok(other) => Some(end(format!("unexpected message from the hub: {other:?}"))),
        Err(e) => Some(end(e.to_string())),
    }
}

/// Streams the hub opens on this session's QUIC connection: each starts
/// with a `Start` naming its service, then carries a player or a flow.
async fn hub_streams(ep: Arc<Ep>, link: crate::quic::Link, hub_ip: std::net::IpAddr) {
    loop {
        let stream = tokio::select! {
            s = link.conn.accept_bi() => s,
            _ = ep.shutdown.cancelled() => return,
        };
        let Ok((send, recv)) = stream else { return };
        let (ep2, link2) = (ep.clone(), link.clone());
        ep.tracker.spawn(async move {
            let mut path = login::Path::Quic(link2.stream(send, recv));
            let deadline = Duration::from_secs(10);
            let msg = match tokio::time::timeout(deadline, proto::read_msg::<_, HubMsg>(&mut path))
                .await
            {
                Ok(Ok(msg @ HubMsg::Start { .. })) => msg,
                Ok(Ok(_)) => {
                    return tracing::warn!("a hub stream began with something other than a start");
                }
                Ok(Err(e)) => return tracing::debug!("hub stream: {e}"),
                Err(_) => return tracing::debug!("hub stream: no start within {deadline:?}"),
            };
            let HubMsg::Start {
                name: Some(service),
                ..
            } = &msg
            else {
                return tracing::warn!("a hub stream's start names no service");
            };
            let service = service.clone();
            let Some(local) = ep2.settings().services.get(&service).cloned() else {
                path.abort();
                return tracing::warn!(
                    service,
                    "the hub sent a player of a service this ep does not serve"
                );
            };
            let span = tracing::info_span!("channel", service = %service);
            channel::started(ep2, service, local, path, msg, hub_ip)
                .instrument(span)
                .await;
        });
    }
}

fn end(reason: String) -> End {
    End {
        reason,
        kind: None,
        switch: false,
    }
}

impl Ep {
    fn quic_lock(&self) -> std::sync::MutexGuard<'_, QuicState> {
        self.quic.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// QUIC has not failed lately.
    fn quic_allowed(&self) -> bool {
        self.quic_lock()
            .failed
            .is_none_or(|t| t.elapsed() >= QUIC_RETRY)
    }

    /// Where the hub's QUIC door is: `quic` if set, else the port its
    /// welcome named, else (`transport = "quic"` only) the control port + 2.
    async fn quic_target(&self, s: &EpSettings, guess: bool) -> Option<std::net::SocketAddr> {
        let text = match &s.quic {
            Some(q) => q.clone(),
            None => {
                let (host, port) = crate::config::split_host_port(&s.hub).ok()?;
                let port = match self.quic_lock().port {
                    Some(p) => p,
                    None if guess => port.checked_add(2)?,
                    None => return None,
                };
                crate::config::join_host_port(&host, port)
            }
        };
        tokio::net::lookup_host(text).await.ok()?.next()
    }

    async fn login_quic(
        &self,
        s: &EpSettings,
        hub: std::net::SocketAddr,
    ) -> Result<(login::Path, Welcome), LoginError> {
        let endpoint = {
            let mut q = self.quic_lock();
            match &q.endpoint {
                Some(e) if e.local_addr().is_ok_and(|a| a.is_ipv4() == hub.is_ipv4()) => e.clone(),
                _ => {
                    let e = login::quic_endpoint(&self.tls.get().client, hub)?;
                    q.endpoint = Some(e.clone());
                    e
                }
            }
        };
        login::login_quic(s, &endpoint, hub).await
    }

    /// Logs in over the transport `s` asks for (see `Transport`).
    async fn connect(&self, s: &EpSettings) -> Result<(login::Path, Welcome), LoginError> {
        match s.transport {
            Transport::Tls => login::login_with(s, &self.tls.get().client).await,
            Transport::Quic => {
                let hub = self
                    .quic_target(s, true)
                    .await
                    .ok_or_else(|| LoginError::Quic {
                        addr: s.quic.clone().unwrap_or_else(|| s.hub.clone()),
                        why: "cannot resolve the hub's QUIC address".into(),
                    })?;
                let deadline = s.timing.connect_timeout;
                tokio::time::timeout(deadline, self.login_quic(s, hub))
                    .await
                    .unwrap_or_else(|_| {
                        Err(LoginError::Timeout {
                            addr: hub.to_string(),
                            after: deadline,
                        })
                    })
            }
            Transport::Auto => {
                let hub = match self.quic_allowed() {
                    true => self.quic_target(s, false).await,
                    false => None,
                };
                let Some(hub) = hub else {
                    return login::login_with(s, &self.tls.get().client).await;
                };
                let why = match tokio::time::timeout(QUIC_TRY, self.login_quic(s, hub)).await {
                    Ok(Ok(x)) => return Ok(x),
                    // Refused for who we are, not for how we came: TLS
                    // would be refused alike.
                    Ok(Err(e)) if e.is_permanent() => return Err(e),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no QUIC login within {QUIC_TRY:?}"),
                };
                self.quic_lock().failed = Some(tokio::time::Instant::now());
                tracing::warn!(
                    "QUIC to {hub}: {why}; serving over TLS over TCP, trying QUIC again in {QUIC_RETRY:?}"
                );
                login::login_with(s, &self.tls.get().client).await
            }
        }
    }

    /// Moves the QUIC connection to a fresh UDP port, as a NAT re-mapping
    /// would (a test hook for migration).
    pub(crate) fn rebind_quic(&self, to: Option<std::net::SocketAddr>) -> std::io::Result<()> {
        let q = self.quic_lock();
        let Some(endpoint) = &q.endpoint else {
            return Err(std::io::Error::other("no QUIC endpoint"));
        };
        let family = endpoint.local_addr()?;
        let any: std::net::SocketAddr = if family.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        endpoint.rebind(std::net::UdpSocket::bind(to.unwrap_or(any))?)
    }
}
