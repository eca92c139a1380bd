//! The session to one hub: log in, serve, reconnect with backoff. Each hub
//! the ep serves runs one of these loops, each with its own backoff and
//! transport choice, so a hub that refuses or vanishes delays no other.

use super::{
    Ep, Leg, LoginError, Welcome, backoff::Backoff, channel, hubs::HubLink, login, reload,
};
use crate::{
    config::ep::{EpSettings, HubTarget, Transport},
    proto::{self, CloseKind, EpMsg, FrameReader, HubMsg, feature},
};
use std::{sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tracing::Instrument;

mod auto;

/// A session that lasted this long was a real one: the next reconnect
/// starts from the shortest delay again. A session that dies sooner (two
/// eps with one certificate replacing each other, a hub that closes it at
/// once) keeps the backoff growing, so such a loop costs the hub one
/// Argon2 run per backoff step rather than several a second.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// The longest a control write may wait for the hub to read, whatever
/// heartbeat timeout the hub's welcome names.
const MAX_WRITE: Duration = Duration::from_secs(60);

/// In `transport = "auto"`, how long a QUIC attempt may take before the ep
/// serves over TLS instead (`quic_retry` says when it tries QUIC again).
const QUIC_TRY: Duration = Duration::from_secs(3);

/// How a session ended.
struct End {
    reason: String,
    kind: Option<CloseKind>,
    /// Ended to log in again over QUIC at once (not a failure).
    switch: bool,
    /// A write found the control stream put down by the hub (over QUIC):
    /// the hub ended the session, and what it said last may still come.
    put_down: bool,
    /// With `switch`: the QUIC login made beside the session, to go on with.
    next: Option<Box<auto::Ready>>,
}

/// One hub, as the loop and its session see it.
struct Up {
    ep: Arc<Ep>,
    link: Arc<HubLink>,
}

/// Serves the hub `link` names until the ep shuts down.
pub(super) async fn run(ep: Arc<Ep>, link: Arc<HubLink>) {
    let up = Up { ep, link };
    let span = tracing::info_span!("hub", hub = %up.link.name);
    up.main_loop().instrument(span).await
}

impl Up {
    /// This hub's entry in the settings as they are now (a reload may have
    /// changed its transport; its addresses stay until a restart).
    fn target(&self, s: &EpSettings) -> HubTarget {
        s.hubs[self.link.index].clone()
    }

    async fn main_loop(&self) {
        let (ep, link) = (&self.ep, &self.link);
        let shutdown = ep.shutdown.clone();
        let t = ep.settings().timing;
        let mut backoff = Backoff::new(t.backoff_min, t.backoff_max);
        // A QUIC login made beside a TLS session, to serve next.
        let mut ready: Option<Box<auto::Ready>> = None;
        while !shutdown.is_cancelled() {
            let t = ep.settings().timing;
            backoff.bound(t.backoff_min, t.backoff_max);
            let s = ep.settings();
            let h = self.target(&s);
            // A login made beside the last session, unless a reload gave
            // the ep another certificate since (it logged in as the old).
            let adopted = ready.take().filter(|r| r.identity == ep.tls.get().identity);
            let (attempt, offered, identity) = match adopted.map(|r| *r) {
                Some(r) => (Ok((r.tls, r.welcome)), r.offered, r.identity),
                None => {
                    // Each attempt with the settings as they are now (a
                    // reload may have changed the token, the certificate
                    // or the backoff). The services offered are read
                    // before them: a reload that lands during the login
                    // is then seen as one the session must announce.
                    let offered = *ep.offered.borrow();
                    // One look at the TLS material: the identity the
                    // session remembers is the one its login presented.
                    let material = ep.tls.get();
                    tracing::info!("connecting to hub");
                    let attempt = tokio::select! {
                        r = self.connect(&s, &h, &material.client) => r,
                        _ = shutdown.cancelled() => break,
                    };
                    (attempt, offered, material.identity.clone())
                }
            };
            let delay = match attempt {
                Ok((tls, welcome)) => {
                    self.connected(&s, &h, &welcome);
                    let quic = welcome.link.clone();
                    let began = tokio::time::Instant::now();
                    let end = self.session(&h, tls, welcome, (offered, identity)).await;
                    if let Some(quic) = quic {
                        self.close_when_idle(quic);
                    }
                    link.disconnected(&end.reason);
                    if shutdown.is_cancelled() {
                        break;
                    }
                    if end.switch {
                        tracing::info!("{}", end.reason);
                        if began.elapsed() >= STABLE_SESSION {
                            backoff.reset();
                        }
                        ready = end.next;
                        continue;
                    }
                    if began.elapsed() >= STABLE_SESSION {
                        backoff.reset();
                    }
                    retry_delay(&end, &mut backoff)
                }
                Err(e) => self.login_failed(&e, &mut backoff),
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = link.retry_now.notified() => {
                    tracing::info!("the token or certificate changed; logging in again now");
                    backoff.reset();
                }
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Records and logs a login that succeeded.
    fn connected(&self, s: &EpSettings, h: &HubTarget, welcome: &Welcome) {
        self.link.connected(welcome.link.is_some());
        let services: Vec<&String> = s.services.keys().collect();
        let (transport, addr) = match &welcome.link {
            Some(l) => ("quic", l.conn.remote_address().to_string()),
            None => ("tls", h.hub.clone()),
        };
        let ep_name = self.ep.tls.get().identity.clone();
        tracing::info!(at = %addr, transport, ep = %ep_name, ?services, "connected to hub");
    }

    /// Lets an ended session's QUIC connection go once its players are done.
    fn close_when_idle(&self, quic: crate::quic::Link) {
        quic.retire();
        // Its players keep the connection until they are done; then nothing
        // holds it open. No deadline of the ep's own: a hub that ended the
        // session bounds it with its `drain_timeout`, and this ep's shutdown
        // with its hard stop.
        let ep = self.ep.clone();
        self.ep.tracker.spawn(async move {
            quic.close_when_idle(None, &ep.hard_stop, "session over")
                .await;
        });
    }

    /// Records a failed login; returns how long to wait before the next.
    fn login_failed(&self, e: &LoginError, backoff: &mut Backoff) -> Duration {
        self.link.disconnected(&format!("login failed: {e}"));
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
    async fn session(
        &self,
        h: &HubTarget,
        tls: login::Path,
        w: Welcome,
        // The services offered and the identity as the login had them.
        (offered_at_hello, identity): (u64, String),
    ) -> End {
        let link = &self.link;
        if let Some(port) = w.quic_port {
            link.quic_lock().port = Some(port);
        }
        if let Some(switch) = self.quic_instead(h, &w) {
            return switch;
        }
        let mut upgrade = self.upgrade(h, &w);
        let end = self
            .serve(h, (tls, &w), (offered_at_hello, identity), &mut upgrade)
            .await;
        upgrade.settle(self, end).await
    }

    /// The session's loop: the hub's messages, heartbeats and the ep's
    /// news, until it ends (over TLS under `auto`, also when a QUIC login
    /// beside it succeeds).
    async fn serve<'a>(
        &'a self,
        h: &HubTarget,
        (tls, w): (login::Path, &Welcome),
        (offered_at_hello, identity): (u64, String),
        upgrade: &mut auto::Upgrade<'a>,
    ) -> End {
        let (ep, link) = (&self.ep, &self.link);
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = FrameReader::new(rd);
        let (target, mut failed_rx) = self.begin(h, w);
        let mut tick = tokio::time::interval(w.heartbeat);
        // After a stall, one heartbeat (or ping), not a burst of them.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut silence = Box::pin(tokio::time::sleep(w.heartbeat_timeout));
        let mut ping = Ping::default();
        let (mut homes, mut offered) = self.news(w, offered_at_hello);
        loop {
            let out = tokio::select! {
                msg = rd.read::<HubMsg>() => {
                    silence.as_mut().reset(tokio::time::Instant::now() + w.heartbeat_timeout);
                    if let Ok(HubMsg::Pong { n }) = &msg {
                        if let Some(rtt) = ping.answered(*n) {
                            link.set_rtt(rtt);
                        }
                        continue;
                    }
                    match self.on_hub_msg(msg, &target) {
                        Some(end) => return end,
                        None => continue,
                    }
                }
                _ = silence.as_mut() => {
                    return end(format!("no heartbeat from the hub for {:?}", w.heartbeat_timeout));
                }
                _ = tick.tick() => self.heartbeat(w, &mut ping),
                ready = upgrade.next(self) => match ready {
                    Some(ready) => return auto::switched(ready),
                    None => continue,
                },
                _ = link.relogin.notified() => {
                    // A reload's "log in again" is for a session of
                    // another identity (it may be stale, stored while this
                    // hub was away).
                    if ep.tls.get().identity == identity {
                        continue;
                    }
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
            let within = w.heartbeat_timeout.min(MAX_WRITE);
            if let Some(end) = send(&mut wr, &out, within, &ep.shutdown).await {
                return last_word(&mut rd, end, &ep.shutdown).await;
            }
        }
    }

    /// What a session sets going: where its channels go and where their
    /// failures are reported (when the hub wants to hear them), and over
    /// QUIC the hub's streams, one per player, served.
    fn begin(&self, h: &HubTarget, w: &Welcome) -> (channel::Target, mpsc::Receiver<EpMsg>) {
        let (failed_tx, failed_rx) = mpsc::channel::<EpMsg>(64);
        let dialed = w.hub_has(feature::DIALED).then(|| failed_tx.clone());
        let report = w.hub_has(feature::CHANNEL_FAILED).then_some(failed_tx);
        let target = self.channel_target(h, w, report, dialed.clone());
        if let Some(quic) = &w.link {
            let (ep, link) = (&self.ep, &self.link);
            let to = channel::Via {
                hub_ip: w.hub_ip,
                link: link.clone(),
                dialed,
                dead_after: w.heartbeat_timeout,
            };
            let streams = hub_streams(ep.clone(), quic.clone(), to);
            ep.tracker
                .spawn(streams.instrument(tracing::info_span!("quic")));
            let queue = link.quic_lock().queue.clone();
            if let Some(queue) = queue {
                let sizer = super::send_queue::follow(quic.conn.clone(), queue);
                // Not tracked: it ends with the connection, and must not hold
                // the ep's drain open once the players are done.
                tokio::spawn(sizer);
            }
        }
        (target, failed_rx)
    }

    /// What the session tells the hub of as it changes: how the services
    /// at home are (to a hub that answers for services away from home),
    /// and the services offered, marked changed if they changed since the
    /// hello was built (announced at once).
    fn news(
        &self,
        w: &Welcome,
        offered_at_hello: u64,
    ) -> (
        tokio::sync::watch::Receiver<std::collections::BTreeMap<String, proto::HomeState>>,
        tokio::sync::watch::Receiver<u64>,
    ) {
        let mut homes = self.ep.homes.watch();
        if w.hub_has(feature::HOME) {
            homes.mark_changed();
        } else {
            homes.mark_unchanged();
        }
        let mut offered = self.ep.offered.subscribe();
        if *offered.borrow() == offered_at_hello {
            offered.mark_unchanged();
        } else {
            offered.mark_changed();
        }
        (homes, offered)
    }

    /// The heartbeat tick's message: over QUIC the round trip is the
    /// connection's own; a hub that answers pings measures it over TLS.
    fn heartbeat(&self, w: &Welcome, ping: &mut Ping) -> EpMsg {
        match &w.link {
            Some(quic) => {
                self.link.set_rtt(quic.note_rtt());
                EpMsg::Heartbeat
            }
            None if w.hub_has(feature::PING) => {
                // Unanswered for a whole interval: the last figure is stale.
                if ping.in_flight() {
                    self.link.clear_rtt();
                }
                ping.send()
            }
            None => EpMsg::Heartbeat,
        }
    }

    /// Where this session's channels go, as its welcome says.
    fn channel_target(
        &self,
        h: &HubTarget,
        w: &Welcome,
        report: Option<mpsc::Sender<EpMsg>>,
        dialed: Option<mpsc::Sender<EpMsg>>,
    ) -> channel::Target {
        channel::Target {
            addr: w.channel.as_str().into(),
            server_name: h.server_name.clone(),
            // Over QUIC the hub asks for no channels: it opens a stream per
            // player itself (`hub_streams`).
            leg: Leg::Channel { from: w.local_ip },
            idle_timeout: w.idle_timeout,
            hub_ip: w.hub_ip,
            link: self.link.clone(),
            report,
            dialed,
            dead_after: w.heartbeat_timeout,
        }
    }

    /// Acts on one message from the hub; `Some` when it ends the session.
    fn on_hub_msg(
        &self,
        msg: Result<HubMsg, proto::FrameError>,
        target: &channel::Target,
    ) -> Option<End> {
        let ep = &self.ep;
        match msg {
            Ok(HubMsg::Heartbeat) => None,
            Ok(HubMsg::Open { service, ticket }) => {
                // Debug: the hub's words, quoted and escaped, until checked.
                let span = tracing::info_span!("channel", service = ?service);
                ep.tracker.spawn(
                    channel::run(ep.clone(), service, ticket, target.clone()).instrument(span),
                );
                None
            }
            Ok(HubMsg::Services { services, refused }) => {
                let now: Vec<&String> = services.keys().collect();
                match self.link.services_said.now() {
                    Some(unsaid) if refused.is_empty() => {
                        tracing::info!(services = ?now, unsaid, "the hub serves these services through this ep")
                    }
                    Some(unsaid) => {
                        tracing::warn!(services = ?now, ?refused, unsaid, "the hub serves these services through this ep, not the others")
                    }
                    None => {
                        tracing::debug!(services = ?now, ?refused, "the hub serves these services through this ep")
                    }
                }
                None
            }
            Ok(HubMsg::Pace { services }) => {
                let settings = ep.settings();
                let serves = |name: &str| settings.services.contains_key(name);
                self.link.pace.set(services, serves);
                None
            }
            Ok(HubMsg::Closing { reason, kind }) => Some(closing(&reason, kind)),
            Ok(other) => Some(end(format!(
                "unexpected message from the hub: {}",
                proto::shown(&format!("{other:?}"))
            ))),
            Err(e) => Some(end(e.to_string())),
        }
    }

    /// Where the hub's QUIC door is: `quic` if set, else the port its
    /// welcome named, else (`transport = "quic"` only) the control port + 2.
    async fn quic_target(&self, h: &HubTarget, guess: bool) -> Option<std::net::SocketAddr> {
        let text = match &h.quic {
            Some(q) => q.clone(),
            None => {
                let (host, port) = crate::config::split_host_port(&h.hub).ok()?;
                let port = match self.link.quic_lock().port {
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
        h: &HubTarget,
        client: &Arc<rustls::ClientConfig>,
        hub: std::net::SocketAddr,
    ) -> Result<(login::Path, Welcome), LoginError> {
        let endpoint = {
            let mut q = self.link.quic_lock();
            match &q.endpoint {
                Some(e) if e.local_addr().is_ok_and(|a| a.is_ipv4() == hub.is_ipv4()) => e.clone(),
                _ => {
                    let (e, queue) = login::quic_endpoint(hub)?;
                    q.endpoint = Some(e.clone());
                    q.queue = Some(queue);
                    e
                }
            }
        };
        login::login_quic(s, h, client, &endpoint, hub).await
    }

    /// Logs in over the transport `h` asks for (see `Transport`).
    async fn connect(
        &self,
        s: &EpSettings,
        h: &HubTarget,
        client: &Arc<rustls::ClientConfig>,
    ) -> Result<(login::Path, Welcome), LoginError> {
        match h.transport {
            Transport::Tls => login::login_with(s, h, client).await,
            Transport::Quic => {
                let hub = self
                    .quic_target(h, true)
                    .await
                    .ok_or_else(|| LoginError::Quic {
                        addr: h.quic.clone().unwrap_or_else(|| h.hub.clone()),
                        why: "cannot resolve the hub's QUIC address".into(),
                    })?;
                let deadline = s.timing.connect_timeout;
                tokio::time::timeout(deadline, self.login_quic(s, h, client, hub))
                    .await
                    .unwrap_or_else(|_| {
                        Err(LoginError::Timeout {
                            addr: hub.to_string(),
                            after: deadline,
                        })
                    })
            }
            Transport::Auto => self.connect_auto(s, h, client).await,
        }
    }
}

/// The round trip of the control session over TLS: one ping in flight,
/// sent in place of a heartbeat.
#[derive(Default)]
struct Ping {
    n: u64,
    sent: Option<tokio::time::Instant>,
    /// The last round trip, told to the hub with the next ping.
    last: Option<std::time::Duration>,
}

impl Ping {
    fn send(&mut self) -> EpMsg {
        self.n += 1;
        self.sent = Some(tokio::time::Instant::now());
        EpMsg::Ping {
            n: self.n,
            rtt_us: self
                .last
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        }
    }

    fn in_flight(&self) -> bool {
        self.sent.is_some()
    }

    /// The round trip, if `n` answers the ping in flight.
    fn answered(&mut self, n: u64) -> Option<std::time::Duration> {
        if n != self.n {
            return None;
        }
        self.last = self.sent.take().map(|t| t.elapsed());
        self.last
    }
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

/// Streams the hub opens on this session's QUIC connection: each starts
/// with a `Start` naming its service, then carries a player or a flow.
async fn hub_streams(ep: Arc<Ep>, quic: crate::quic::Link, to: channel::Via) {
    loop {
        let stream = tokio::select! {
            s = quic.conn.accept_bi() => s,
            // A hub opens a session's players on its own connection: one
            // that ended takes none (its players carry on).
            _ = quic.retired() => return refuse_streams(&quic).await,
            _ = ep.shutdown.cancelled() => return refuse_streams(&quic).await,
        };
        let Ok((send, recv)) = stream else { return };
        let mut path = login::Path::Quic(quic.stream(send, recv));
        // A stream that has not named its player yet holds a waiting place,
        // as a TLS channel does: a hub opening streams it never starts
        // cannot make the ep hold more than that many (each may buffer a
        // window of bytes).
        let Ok(waiting) = to.link.waiting.clone().try_acquire_owned() else {
            path.abort();
            if let Some(n) = to.link.odd_ask() {
                tracing::warn!(
                    asks = n,
                    "the hub opened more streams without a start than the ep keeps; reset"
                );
            }
            continue;
        };
        let (ep2, via) = (ep.clone(), to.clone());
        ep.tracker.spawn(serve_stream(ep2, via, path, waiting));
    }
}

/// A stream the hub opened: its `Start` read (within 10 s), then the
/// player or flow it names served. `waiting` holds a place until then.
async fn serve_stream(
    ep: Arc<Ep>,
    via: channel::Via,
    mut path: login::Path,
    waiting: tokio::sync::OwnedSemaphorePermit,
) {
    let deadline = Duration::from_secs(10);
    let msg = match tokio::time::timeout(deadline, proto::read_msg::<_, HubMsg>(&mut path)).await {
        Ok(Ok(msg @ HubMsg::Start { .. })) => msg,
        Ok(Ok(_)) => {
            if let Some(n) = via.link.odd_ask() {
                tracing::warn!(
                    asks = n,
                    "a hub stream began with something other than a start"
                );
            }
            return;
        }
        Ok(Err(e)) => return tracing::debug!("hub stream: {e}"),
        Err(_) => return tracing::debug!("hub stream: no start within {deadline:?}"),
    };
    let HubMsg::Start {
        name: Some(service),
        ..
    } = &msg
    else {
        if let Some(n) = via.link.odd_ask() {
            tracing::warn!(asks = n, "a hub stream's start names no service");
        }
        return;
    };
    drop(waiting);
    let service = service.clone();
    let Some(local) = ep.settings().services.get(&service).cloned() else {
        path.abort();
        // Counted, and logged at the 1st, 2nd, 4th...: a hub sending
        // such streams without end cannot flood the log.
        if let Some(n) = via.link.odd_ask() {
            tracing::warn!(
                service,
                asks = n,
                "the hub sent a player of a service this ep does not serve"
            );
        }
        return;
    };
    let span = tracing::info_span!("channel", service = %service);
    let started = channel::started(ep, service, local, path, msg, via);
    // The steps before the player on their own allocation (see
    // `channel::Job`).
    if let Some(job) = Box::pin(started.instrument(span.clone())).await {
        job.instrument(span).await;
    }
}

/// Streams the hub opens on a connection whose session is over, or on a
/// stopping ep: reset at once, until the connection closes. Unread, each
/// would wait for the connection's end, its player with it, and the ep
/// would hold what the hub sent on it.
async fn refuse_streams(quic: &crate::quic::Link) {
    while let Ok((send, recv)) = quic.conn.accept_bi().await {
        login::Path::Quic(quic.stream(send, recv)).abort();
    }
}

/// Writes `out` on the control session within `within`; why the session
/// ends if it cannot. A hub that stops reading must not hold the session
/// loop (and the ep's shutdown) for ever.
async fn send<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    out: &EpMsg,
    within: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<End> {
    let wrote = tokio::select! {
        r = tokio::time::timeout(within, proto::write_msg(wr, out)) => r,
        _ = shutdown.cancelled() => return Some(end("ep shutting down".into())),
    };
    match wrote {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(End {
            put_down: matches!(&e, proto::FrameError::Io(io) if crate::quic::put_down(io)),
            ..end(e.to_string())
        }),
        Err(_) => Some(end(format!("the hub read nothing for {within:?}"))),
    }
}

/// How long a session whose control stream the hub put down waits for the
/// hub's last word (its `Closing`, sent before it put the stream down).
const LAST_WORD: Duration = Duration::from_secs(1);

/// The session `end`ed on a write that found the control stream put down:
/// the hub ended it, and wrote why first (replaced, revoked), but over
/// QUIC the stop can be seen before those bytes are read. Without them,
/// the ep would log in again soon instead of waiting for a person.
async fn last_word<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut FrameReader<R>,
    end: End,
    shutdown: &tokio_util::sync::CancellationToken,
) -> End {
    if !end.put_down || shutdown.is_cancelled() {
        return end;
    }
    let said = async {
        loop {
            match rd.read::<HubMsg>().await {
                Ok(HubMsg::Closing { reason, kind }) => return Some(closing(&reason, kind)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    };
    tokio::select! {
        r = tokio::time::timeout(LAST_WORD, said) => match r {
            Ok(Some(said)) => said,
            _ => end,
        },
        _ = shutdown.cancelled() => end,
    }
}

fn closing(reason: &str, kind: Option<CloseKind>) -> End {
    End {
        kind,
        ..end(format!(
            "the hub closed the session: {}",
            proto::shown(reason)
        ))
    }
}

fn end(reason: String) -> End {
    End {
        reason,
        kind: None,
        switch: false,
        put_down: false,
        next: None,
    }
}
