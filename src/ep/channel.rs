//! One channel: dialled on the hub's request, parked until a player comes,
//! then joined to a fresh connection to the local service.

use super::{
    Ep, Leg,
    hubs::HubLink,
    login::{Path, connect_tls},
};
use crate::{
    net,
    proto::{self, EpMsg, HubMsg},
    proxy_header, relay,
    uplink_guard::Signal,
};
use std::{os::fd::AsRawFd, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

/// What a waiting player may send before the woken service answers (a
/// game's first packets are a few hundred bytes).
const MAX_EARLY: usize = 16 * 1024;

/// Extra wait beyond the hub's idle timeout before the ep gives up on a
/// parked channel itself (the hub normally closes it first).
const IDLE_GRACE: Duration = Duration::from_secs(30);

/// Players' first lines said each second for each service (the rest
/// counted as `unsaid` in the next one said): players come from the hub,
/// which may send them at will.
const PLAYERS_SAID: u64 = 5;
static CONNECTED: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
static WAITS: crate::log_rate::PerKey = crate::log_rate::PerKey::new();

/// Where and how this session's channels are opened.
#[derive(Clone)]
pub(super) struct Target {
    pub addr: Arc<str>,
    /// The name the hub's certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
    pub leg: Leg,
    pub idle_timeout: Duration,
    /// The hub's address as this session reached it.
    pub hub_ip: std::net::IpAddr,
    /// The hub this session serves.
    pub link: Arc<HubLink>,
    /// Where to report a channel that cannot be opened, if the hub listens.
    pub report: Option<mpsc::Sender<EpMsg>>,
    /// Where to report how long a dial home took, if the hub listens.
    pub dialed: Option<mpsc::Sender<EpMsg>>,
    /// The hub's heartbeat timeout (see `Via::dead_after`).
    pub dead_after: Duration,
}

impl Target {
    fn failed(&self, service: &str, ticket: String, reason: String) {
        if let Some(tx) = &self.report {
            let _ = tx.try_send(EpMsg::ChannelFailed {
                service: service.to_string(),
                ticket,
                reason,
            });
        }
    }
}

/// A player's relay (or UDP flow) with what it holds, ready to run once
/// the player is set up. Its own allocation: a task holds its largest
/// state for its whole life, so the steps before the player (opening the
/// channel, waiting in the pool, dialling home) are dropped before the
/// relay runs and an idle player costs only this.
pub(super) type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A channel the hub asked for: opened, parked until a player comes, then
/// the player carried.
pub(super) async fn run(ep: Arc<Ep>, service: String, ticket: String, target: Target) {
    let job = Box::pin(open_and_wait(ep, service, ticket, target)).await;
    if let Some(job) = job {
        job.await
    }
}

/// The channel opened and parked; the player's job once one comes.
async fn open_and_wait(
    ep: Arc<Ep>,
    service: String,
    ticket: String,
    target: Target,
) -> Option<Job> {
    let waiting = admit(&ep, &service, &ticket, &target)?;
    let mut tls = open(&ep, &service, &ticket, &target).await?;
    let msg = wait_for_player(&ep, &service, &target, &mut tls).await?;
    drop(waiting); // carrying a player now, no longer waiting
    // The service as configured now, not when the channel opened: a reload
    // meanwhile may have re-pointed `local` or turned PROXY headers on.
    let Some(local) = ep.settings().services.get(&service).cloned() else {
        tls.abort();
        tracing::warn!(
            service,
            "a player arrived for a service this ep no longer serves"
        );
        return None;
    };
    let via = Via {
        hub_ip: target.hub_ip,
        link: target.link,
        dialed: target.dialed,
        dead_after: target.dead_after,
    };
    started(ep, service, local, tls, msg, via).await
}

/// A place among this hub's waiting channels, if the ep serves `service`
/// and the hub has one left; else the hub is told why not.
fn admit(
    ep: &Ep,
    service: &str,
    ticket: &str,
    target: &Target,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if !ep.settings().services.contains_key(service) {
        if let Some(n) = target.link.odd_ask() {
            tracing::warn!(
                service,
                asks = n,
                "hub asked for a channel of a service this ep does not serve"
            );
        }
        target.failed(service, ticket.to_string(), "not served by this ep".into());
        return None;
    }
    let Ok(waiting) = target.link.waiting.clone().try_acquire_owned() else {
        if let Some(n) = target.link.odd_ask() {
            tracing::warn!(
                service,
                asks = n,
                "hub asked for more waiting channels than the ep keeps; ignored"
            );
        }
        let why = "the ep's channel limit is reached".into();
        target.failed(service, ticket.to_string(), why);
        return None;
    };
    Some(waiting)
}

/// The channel connection, presented with its ticket (on its own
/// allocation, gone once open); the hub is told if it cannot be.
async fn open(ep: &Ep, service: &str, ticket: &str, target: &Target) -> Option<Path> {
    let open = async {
        let client = ep.tls.get().client.clone();
        let mut tls =
            Path::Tls(connect_tls(&target.server_name, &client, &target.addr, target.leg).await?);
        let hello = EpMsg::Channel {
            service: service.to_string(),
            ticket: ticket.to_string(),
        };
        proto::write_msg(&mut tls, &hello)
            .await
            .map_err(|e| super::LoginError::Protocol(e.to_string()))?;
        Ok::<_, super::LoginError>(tls)
    };
    let within = ep.settings().timing.connect_timeout;
    let why = match tokio::time::timeout(within, Box::pin(open)).await {
        Ok(Ok(tls)) => return Some(tls),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_string(),
    };
    // A hub asking for channels it then refuses, in a loop, cannot flood
    // home's log: said once a second, for each hub (one hub's loop does
    // not hide why another's channels fail).
    static SAID: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
    let hub = &target.addr;
    match SAID.now(&format!("{hub} {service}")) {
        Some(unsaid) => tracing::warn!(service, %hub, unsaid, "cannot open a channel: {why}"),
        None => tracing::debug!(service, %hub, "cannot open a channel: {why}"),
    }
    target.failed(service, ticket.to_string(), why);
    None
}

/// The hub's `Start` on a parked channel, or None when the channel ends
/// first (idle, the session replaced, the hub restarting: routine).
async fn wait_for_player(
    ep: &Ep,
    service: &str,
    target: &Target,
    tls: &mut Path,
) -> Option<HubMsg> {
    let waited = tokio::select! {
        r = tokio::time::timeout(target.idle_timeout + IDLE_GRACE, proto::read_msg::<_, HubMsg>(tls)) => r,
        _ = ep.shutdown.cancelled() => return None,
    };
    match waited {
        Ok(Ok(msg @ HubMsg::Start { .. })) => Some(msg),
        Ok(Ok(_)) => {
            static SAID: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
            if let Some(unsaid) = SAID.now(service) {
                tracing::warn!(service, unsaid, "channel: unexpected message before start");
            }
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(service, "idle channel ended: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(service, "idle channel expired");
            None
        }
    }
}

/// The hub a player came through.
#[derive(Clone)]
pub(super) struct Via {
    /// Its address as the session reached it.
    pub hub_ip: std::net::IpAddr,
    pub link: Arc<HubLink>,
    /// The session's control, for `EpMsg::Dialed` (a hub that wants it).
    pub dialed: Option<mpsc::Sender<EpMsg>>,
    /// The hub's heartbeat timeout: how long a UDP flow's channel may
    /// leave datagrams unacknowledged (`quic::Unacked`), and a TCP
    /// player's what it sent (`dark`).
    pub dead_after: Duration,
}

/// A player (or a UDP flow) arrived on `tls` with `msg` (a `Start`): the
/// job that carries it, once the service at home is dialled.
pub(super) async fn started(
    ep: Arc<Ep>,
    service: String,
    local: crate::config::ep::LocalService,
    mut tls: Path,
    msg: HubMsg,
    via: Via,
) -> Option<Job> {
    if let Some(why) = out_of_reach(&local, &msg) {
        tls.abort();
        if let Some(n) = via.link.odd_ask() {
            tracing::warn!(service, asks = n, "the hub asked for {why}; refused");
        }
        return None;
    }
    let held = (seat(&ep, &service, &local, &mut tls)?, via.link.carrying());
    let HubMsg::Start {
        player,
        service: public,
        udp,
        offset,
        flow,
        no_wake,
        pace,
        ..
    } = msg
    else {
        return None;
    };
    // A hub older than PROXY support does not say where the player
    // arrived; the hub's address with port 0 is the best there is.
    let public = public.unwrap_or_else(|| std::net::SocketAddr::new(via.hub_ip, 0));
    if udp {
        tls.give_up_after(via.dead_after);
        let flow = super::udp::Flow {
            service,
            player,
            public,
            offset,
            id: flow,
        };
        return Some(Box::pin(async move {
            flow.run(&ep, &local, &mut tls).await;
            // The channel closes before its slot is given back.
            drop(tls);
            drop(held);
        }));
    }
    let at = Dial {
        service: &service,
        local: &local,
        offset,
        player,
        public,
        join: !no_wake,
    };
    // A join keeps the service awake from its start, its dial too; a
    // list ping passing through not.
    let playing = at.join.then(|| ep.homes.player(&service));
    let began = tokio::time::Instant::now();
    let (mut svc, early) = Box::pin(at.dial(&ep, &mut tls)).await?;
    dialed(&ep, &via, &service, player, began.elapsed());
    if !early.is_empty() && svc.write_all(&early).await.is_err() {
        tls.abort();
        return None;
    }
    let rate = pace.map(|began| via.link.pace.limits(&service, began));
    // The streams stay where this block holds them, lent to the relay:
    // moved into an `async fn` they would be stored once per level of
    // the nested futures (rustc keeps an argument's slot and its moved
    // copy both), 2.2 KiB more per idle player.
    let mut tls = ep.dark.watch(tls, via.dead_after);
    Some(Box::pin(async move {
        relay_player(&ep, (&service, player), &mut tls.path, &mut svc, rate).await;
        // Home's socket, then the hub's channel (its watch first), then
        // the slot and the link's count.
        drop((svc, tls));
        drop((held, playing));
    }))
}

/// The player's place among the service's `max_players` at home, or the
/// player refused (its channel reset).
fn seat(
    ep: &Ep,
    service: &str,
    local: &crate::config::ep::LocalService,
    tls: &mut Path,
) -> Option<crate::sources::Counted<String>> {
    let slot = ep.players.take(service, local.max_players);
    if slot.is_none() {
        tls.abort();
        let refused = ep.players.refused();
        if refused.is_power_of_two() {
            tracing::warn!(
                service,
                max_players = local.max_players,
                refused,
                "a player beyond this service's max_players at home; refused"
            );
        }
    }
    slot
}

/// The dial home's time, into the ep's histogram and told to the hub
/// (its players table); a full control queue drops the report.
fn dialed(ep: &Ep, via: &Via, service: &str, player: std::net::SocketAddr, took: Duration) {
    let label = crate::metrics::ServiceLabel {
        service: service.to_string(),
    };
    ep.metrics
        .local_dial
        .get_or_create(&label)
        .observe(took.as_secs_f64());
    // Only while the queue is half empty: a channel's failure report
    // shares it, and matters more.
    if let Some(tx) = via
        .dialed
        .as_ref()
        .filter(|tx| tx.capacity() * 2 > tx.max_capacity())
    {
        let _ = tx.try_send(EpMsg::Dialed {
            service: service.to_string(),
            player,
            us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        });
    }
}

/// Why a `Start` asks for something this service does not let the hub
/// reach: a port (or a protocol) the ep was never told to serve is out of
/// the hub's reach, whatever it asks, so a compromised hub reaches nothing
/// else at home.
fn out_of_reach(local: &crate::config::ep::LocalService, msg: &HubMsg) -> Option<String> {
    let HubMsg::Start { offset, udp, .. } = msg else {
        return None;
    };
    if *offset >= local.addr.count {
        return Some(format!(
            "a port outside this service's local range (offset {offset}, {} port(s))",
            local.addr.count
        ));
    }
    let proto = if *udp { "UDP" } else { "TCP" };
    local
        .kind
        .filter(|k| if *udp { !k.udp() } else { !k.tcp() })
        .map(|k| format!("{proto} for a service ep.toml declares type = \"{k}\""))
}

/// Where one TCP player goes at home.
struct Dial<'a> {
    service: &'a str,
    local: &'a crate::config::ep::LocalService,
    offset: u16,
    player: std::net::SocketAddr,
    /// Where the player reached the hub, for the PROXY header.
    public: std::net::SocketAddr,
    /// A player joining (not a server-list ping): a sleeping service wakes.
    join: bool,
}

impl Dial<'_> {
    /// The local service, dialled (with its PROXY header written), or None
    /// after counting and logging why not. A service that wakes on a join
    /// is woken and waited for; what the player sends meanwhile is kept
    /// (returned, for the service first) and a player who leaves ends the
    /// wait, so a service that comes up is never dialled for nobody.
    async fn dial(&self, ep: &Arc<Ep>, tls: &mut Path) -> Option<(TcpStream, Vec<u8>)> {
        let dialled = tokio::time::Instant::now();
        // A server its sleep command is stopping may still accept, and
        // then drop the player with it: wait for the stop, then wake it.
        let first = if ep.homes.is_stopping(self.service) {
            Err(false)
        } else {
            self.dial_once(ep).await
        };
        let s = ep.settings();
        let local = super::wake::Local {
            service: self.service.to_string(),
            at: self.local.addr.at(self.offset),
            connect_timeout: s.timing.connect_timeout,
            stop: ep.shutdown.clone(),
            udp: false,
            proxy: self.local.proxy_protocol,
        };
        let plain_no = match first {
            Ok(tcp) => {
                ep.homes.answered(&local);
                return Some((tcp, Vec::new()));
            }
            Err(plain_no) => plain_no,
        };
        let mut woken = ep.homes.refused(&local, (self.join, dialled, plain_no))?;
        let said = WAITS.now_within(self.service, PLAYERS_SAID);
        if let Some(unsaid) = said {
            tracing::info!(service = self.service, player = %self.player, unsaid, "player waits while the service wakes");
        }
        let mut early = Vec::new();
        // On the heap: a task holds its largest state for its whole life, and
        // this one is only for the rare wait, not for every relaying player.
        let mut chunk = vec![0u8; 4096];
        // A player that sent its request and shut its side (`nc -N`, an
        // HTTP/1.0 client) waits for the answer: the relay passes its end
        // on once the service is up.
        let mut sent_all = false;
        let outcome = loop {
            tokio::select! {
                r = woken.wait_for(|w| *w != super::wake::Woken::Starting) => break r.map(|w| *w).ok(),
                r = tls.read(&mut chunk), if !sent_all => match r {
                    Ok(0) if !early.is_empty() => sent_all = true,
                    Ok(0) | Err(_) => {
                        if said.is_some() {
                            tracing::info!(service = self.service, player = %self.player, "player left while the service woke");
                        }
                        return None;
                    }
                    // A game's first packets are small: this much is not
                    // a player waiting to join.
                    Ok(n) if early.len() + n > MAX_EARLY => {
                        if said.is_some() {
                            tracing::warn!(service = self.service, player = %self.player, "player sent over {MAX_EARLY} bytes while the service woke; closed");
                        }
                        return None;
                    }
                    Ok(n) => early.extend_from_slice(&chunk[..n]),
                },
                _ = ep.shutdown.cancelled() => break None,
            }
        };
        if outcome != Some(super::wake::Woken::Up) {
            if said.is_some() && !ep.shutdown.is_cancelled() {
                tracing::warn!(service = self.service, player = %self.player, "the service did not wake; player closed");
            }
            return None;
        }
        let again = self.dial_once(ep).await.ok()?;
        ep.homes.answered(&local);
        Some((again, early))
    }

    /// One try at the local service; failed, whether its host said no at
    /// once (a reset: the host is up, only the port is not).
    async fn dial_once(&self, ep: &Ep) -> Result<TcpStream, bool> {
        let s = ep.settings();
        let (service, player) = (self.service, self.player);
        let at = self.local.addr.at(self.offset);
        let dial = async {
            let mut tcp = TcpStream::connect(&at).await?;
            // A reset from here until the relay ends cleanly (see
            // `relay_player`): the ep killed while it writes the header or
            // what a player sent during a wake must not end it cleanly.
            net::abort_on_close(&tcp);
            if let Some(version) = self.local.proxy_protocol {
                tcp.write_all(&proxy_header::tcp_header(version, player, self.public))
                    .await?;
            }
            Ok::<_, std::io::Error>(tcp)
        };
        let dialled = tokio::time::timeout(s.timing.connect_timeout, dial).await;
        let failed = |why: String| {
            let label = crate::metrics::ServiceLabel {
                service: service.to_string(),
            };
            ep.metrics.local_dial_failures.get_or_create(&label).inc();
            ep.state.dialled(service, Err(why));
        };
        match dialled {
            Ok(Ok(tcp)) => {
                ep.state.dialled(service, Ok(()));
                net::tune_plain(&tcp);
                Ok(tcp)
            }
            // A hub sending players to a service that is down, in a loop,
            // cannot flood home's log: said once a second.
            Ok(Err(e)) => {
                failed(e.to_string());
                static SAID: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
                if let Some(unsaid) = SAID.now(service) {
                    tracing::warn!(service, %player, local = at, unsaid, "cannot reach the local service: {e}; player closed");
                }
                Err(e.kind() == std::io::ErrorKind::ConnectionRefused)
            }
            Err(_) => {
                failed(format!("no answer within {:?}", s.timing.connect_timeout));
                static SAID: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
                if let Some(unsaid) = SAID.now(service) {
                    tracing::warn!(service, %player, local = at, unsaid, "local service did not accept within {:?}; player closed", s.timing.connect_timeout);
                }
                Err(false)
            }
        }
    }
}

/// Carries one player between `tls` (the hub) and `svc` (home) until both
/// directions end; a break on either side is a break on both.
/// `rate`: what home sends is paced to the hub's caps (`Start.pace`);
/// and slowed while the path queues, if it turns out bulk (the uplink
/// guard).
async fn relay_player(
    ep: &Ep,
    (service, player): (&str, std::net::SocketAddr),
    tls: &mut Path,
    svc: &mut TcpStream,
    mut rate: Option<Box<crate::rate::RelayLimits>>,
) {
    // What home sends a capped player crosses the uplink spread out, not
    // in bursts of the cap's steps: paced by the kernel over TLS, in
    // shorter steps over QUIC (one socket for every player).
    let socket = match &*tls {
        Path::Tls(t) => Some(t.get_ref().0.as_raw_fd()),
        Path::Quic(_) => None,
    };
    if let Some(r) = rate.as_mut() {
        r.smooth(crate::rate::Dir::Down, socket);
    }
    let label = crate::metrics::ServiceLabel {
        service: service.to_string(),
    };
    let players = ep.metrics.traffic.players.get_or_create(&label).clone();
    ep.metrics.traffic.players_total.get_or_create(&label).inc();
    players.inc();
    // Given even while the guard is off: a reload may turn it on.
    let guard = match &*tls {
        Path::Tls(_) => socket.map(Signal::Tcp),
        Path::Quic(q) => q.link.as_ref().map(crate::quic::Link::guard_signal),
    };
    let guard = guard.map(|signal| (signal, ep.uplink_guard.clone()));
    let watch = relay::Watch {
        meter: Some(ep.metrics.traffic.meter(service)),
        rate,
        guard,
        ..Default::default()
    };
    // A hub can start players at will (a stream costs it next to nothing
    // over QUIC): a few a second are said for each service, with how many
    // went unsaid, and a player's last line only if its first was.
    let said = CONNECTED.now_within(service, PLAYERS_SAID);
    if let Some(unsaid) = said {
        tracing::info!(service, %player, unsaid, "player connected");
    }
    // Home's socket resets on any close from its dial (`dial_once`) until
    // the relay ends cleanly: the ep killed must not end an upload at home
    // as if it were complete.
    let relayed = tokio::select! {
        r = relay::relay_watched(tls, svc, watch) => Some(r),
        _ = ep.hard_stop.cancelled() => None,
    };
    players.dec();
    if let Some((_, None)) = relayed {
        net::close_cleanly(svc);
    }
    match relayed {
        Some((st, None)) if said.is_some() => {
            tracing::info!(service, %player, up = st.up, down = st.down, secs = st.elapsed.as_secs_f64(), "player disconnected")
        }
        Some((_, None)) => {}
        Some((st, Some(e))) => {
            // A break on either side is a break on both (see the hub's
            // player door).
            net::abort_on_close(svc);
            tls.abort();
            if said.is_some() {
                tracing::info!(service, %player, up = st.up, down = st.down, secs = st.elapsed.as_secs_f64(), "player connection broken: {e}");
            }
        }
        None => {
            net::abort_on_close(svc);
            tls.abort();
            if said.is_some() {
                tracing::info!(service, %player, "player cut off: ep shutting down")
            }
        }
    }
}
