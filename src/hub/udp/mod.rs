//! The UDP door of a service: one socket per port, and a table of flows.
//!
//! A flow is one player address on one port. Its first datagram creates it
//! (queued, never lost), and it takes a channel from the service's pool
//! like a TCP player; the datagrams ride that channel framed (`datagram`).
//! The socket's receive loop never waits on a flow: it queues and moves on,
//! so one slow path cannot delay another.
//!
//! UDP sources can be forged, so the table is bounded and nothing here
//! bans: flows per service, per address, per network, and flows still
//! waiting for a channel are capped, and at a cap the newcomer takes the
//! place of a flow that has not proven itself (`table`). A flow that is not
//! a conversation (nobody spoke after an answer) lives for the short
//! one-shot timeout; a conversation for the idle timeout.

mod flow;
mod table;

use super::{Shared, admission::HubCap, refusals::Reason, service::Service};
use crate::{
    config::players::PlayerLimits,
    datagram::{Budget, Queue, socket::Receiver},
    metrics::{ServiceMeters, udp::UdpMeters},
};
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use table::{FlowKey, Scope, Table};
use tokio::{net::UdpSocket, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A conversation with two-way traffic this recent is never pushed out;
/// one quieter than this may give way to a newcomer at a cap, the least
/// recent first. Games exchange many datagrams a second; a forger who
/// wants to hold K places must send to each of them this often, and the
/// service must answer each (K datagrams per second each way).
const ACTIVE: Duration = Duration::from_secs(1);

/// Flows waiting for a channel at once, per service. Each holds queued
/// datagrams; this bounds what a flood of new sources can make the hub
/// hold while the ep is slow or away.
const MAX_WAITING: usize = 64;

/// One flow's shared state: its queue and what the table needs to know.
/// Times are milliseconds since the door's epoch, plus one (0: never).
pub(crate) struct Flow {
    id: u64,
    queue: Queue,
    /// The last datagram either way, or the channel's start.
    last: AtomicU64,
    /// The last datagram from the player.
    last_up: AtomicU64,
    /// The last datagram from the service (0: never answered).
    last_down: AtomicU64,
    /// The player spoke after an answer.
    conversation: AtomicBool,
    /// Has its channel (no longer counts as waiting).
    started: AtomicBool,
    /// Ended from outside (made room for another, the hub stopping).
    end: CancellationToken,
    up_datagrams: AtomicU64,
    /// Its bytes each way, for the players table.
    meter: crate::relay::Meter,
    /// Its byte-rate budgets; None when its service had no cap as it began.
    /// Boxed: an uncapped flow holds one pointer's worth for it.
    rate: Option<Box<crate::rate::Datagrams>>,
    /// Over QUIC once its channel started: the link and its id there, so
    /// the door sends the player's datagrams itself.
    direct: std::sync::OnceLock<(crate::quic::Link, u32)>,
    /// Its task is closing it: the door sends nothing more on `direct`.
    ending: AtomicBool,
}

impl Flow {
    /// When traffic last went both ways: the older of the two directions.
    fn two_way(&self) -> u64 {
        let (up, down) = (
            self.last_up.load(Ordering::Relaxed),
            self.last_down.load(Ordering::Relaxed),
        );
        up.min(down)
    }

    fn is_conversation(&self) -> bool {
        self.conversation.load(Ordering::Relaxed)
    }
}

pub(crate) struct UdpDoor {
    pub service: String,
    /// Replaced on reload; flows and their counts carry over.
    limits: crate::swap::Swap<PlayerLimits>,
    cap: Arc<HubCap>,
    meters: UdpMeters,
    /// The service's players and bytes, which flows count in too.
    traffic: ServiceMeters,
    table: Mutex<Table>,
    epoch: Instant,
    /// The service's byte-rate caps, shared with its TCP door.
    caps: Arc<crate::rate::Caps>,
    /// The bytes every flow of the hub may hold queued together.
    queued: Arc<Budget>,
}

/// What happened to a datagram.
enum Delivered {
    /// Queued for its flow's task, sent on over QUIC, or dropped and
    /// counted.
    Queued,
    /// It started a flow, which needs its task.
    New(Arc<Flow>),
    Refused(Reason),
}

impl UdpDoor {
    pub fn new(
        service: String,
        limits: PlayerLimits,
        cap: Arc<HubCap>,
        meters: UdpMeters,
        traffic: ServiceMeters,
        caps: Arc<crate::rate::Caps>,
        queued: Arc<Budget>,
    ) -> Arc<Self> {
        Arc::new(UdpDoor {
            caps,
            queued,
            service,
            limits: crate::swap::Swap::new(limits),
            cap,
            meters,
            traffic,
            table: Mutex::default(),
            epoch: Instant::now(),
        })
    }

    pub fn limits(&self) -> Arc<PlayerLimits> {
        self.limits.get()
    }

    pub fn set_limits(&self, limits: PlayerLimits) {
        self.limits.set(limits)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flows now.
    pub fn flows(&self) -> usize {
        self.lock().len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn touch(&self, flow: &Flow) {
        flow.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long `flow` may stay silent both ways: a flow waiting for its
    /// channel or in conversation the idle timeout, any other the one-shot
    /// timeout.
    fn allowed_silence(&self, flow: &Flow) -> Duration {
        let udp = self.limits().udp;
        if flow.is_conversation() || !flow.started.load(Ordering::Relaxed) {
            udp.idle_timeout
        } else {
            udp.oneshot_timeout
        }
    }

    /// How long `flow` has seen no datagram either way.
    fn idle_for(&self, flow: &Flow) -> Duration {
        let last = flow.last.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// Hands a datagram from `src` (canonical) on port `offset` to its
    /// flow, making the flow if the door admits it. Cheap and never waits.
    fn deliver(&self, offset: u16, src: SocketAddr, d: Vec<u8>) -> Delivered {
        let k = (offset, src);
        let len = d.len() as u64;
        let now = self.now_ms();
        let mut t = self.lock();
        if let Some(flow) = t.get(&k) {
            let flow = flow.clone();
            if !self.within_rate(&flow, crate::rate::Dir::Up, d.len()) {
                // Dropped and counted: nothing more for the receive loop.
                return Delivered::Queued;
            }
            self.count_up(&flow, len, now);
            // A server-list ping, however often answered, is a question,
            // not a player: a few real addresses pinging a Bedrock port
            // would otherwise hold every flow as a conversation, which
            // never gives way.
            if !flow.is_conversation()
                && flow.last_down.load(Ordering::Relaxed) > 0
                && crate::game::bedrock::ping_time(&d).is_none()
            {
                t.became_conversation(k, &flow);
            }
            drop(t);
            // What does not fit a QUIC datagram goes the flow's way: on
            // its stream, whole.
            let dropped = match flow.direct.get() {
                Some((link, id)) if !flow.ending.load(Ordering::Relaxed) => {
                    flow.queue.push_or(d, |d| link.send(*id, d))
                }
                _ => flow.queue.push(d),
            };
            self.meters.queue_full.inc_by(dropped);
            return Delivered::Queued;
        }
        self.open_flow(t, k, d, now)
    }

    /// A datagram from a source with no flow: a new flow for it, if the
    /// door admits it.
    fn open_flow(
        &self,
        mut t: MutexGuard<'_, Table>,
        k: FlowKey,
        d: Vec<u8>,
        now: u64,
    ) -> Delivered {
        let (src, len) = (k.1, d.len() as u64);
        // A source the lists refuse spends none of the shared budget.
        if let Err(reason) = self.listed(src.ip()) {
            self.meters.refused.inc();
            return Delivered::Refused(reason);
        }
        let rate = self.caps.datagram_limits().map(Box::new);
        let over = |pay: bool| {
            rate.as_ref().is_some_and(|r| match pay {
                true => !r.pass(crate::rate::Dir::Up, d.len()),
                false => !r.fits(crate::rate::Dir::Up, d.len()),
            })
        };
        if over(false) {
            // Over the service's shared budget: no flow for it either.
            self.meters.over_rate.inc();
            return Delivered::Queued;
        }
        if let Err(reason) = self.admit(&mut t, k) {
            // Refused: it spent none of the budget the players share.
            self.meters.refused.inc();
            return Delivered::Refused(reason);
        }
        // A TCP player of the service may have spent the budget in
        // between: this datagram is dropped, as for a flow over the rate,
        // but the flow stays (a flow may have made room for it).
        let paid = !over(true);
        if !paid {
            self.meters.over_rate.inc();
        }
        t.next_id += 1;
        let flow = Arc::new(Flow {
            id: t.next_id,
            queue: Queue::new(self.queued.clone()),
            last: AtomicU64::new(now),
            last_up: AtomicU64::new(now),
            last_down: AtomicU64::new(0),
            conversation: AtomicBool::new(false),
            started: AtomicBool::new(false),
            end: CancellationToken::new(),
            up_datagrams: AtomicU64::new(0),
            meter: crate::relay::Meter::default(),
            rate,
            direct: Default::default(),
            ending: AtomicBool::new(false),
        });
        t.insert(k, flow.clone());
        drop(t);
        self.meters.flows.inc();
        self.meters.started.inc();
        self.traffic.players.inc();
        self.traffic.admitted.inc();
        if paid {
            self.count_up(&flow, len, now);
            self.meters.queue_full.inc_by(flow.queue.push(d));
        }
        Delivered::New(flow)
    }

    /// Whether a datagram of `len` bytes fits `flow`'s budgets; one that
    /// does not is dropped, and counted.
    fn within_rate(&self, flow: &Flow, dir: crate::rate::Dir, len: usize) -> bool {
        let Some(r) = &flow.rate else { return true };
        let pass = r.pass(dir, len);
        if !pass {
            self.meters.over_rate.inc();
        }
        pass
    }

    /// A datagram from the player, at `now`.
    fn count_up(&self, flow: &Flow, len: u64, now: u64) {
        flow.last.store(now, Ordering::Relaxed);
        flow.last_up.store(now, Ordering::Relaxed);
        flow.up_datagrams.fetch_add(1, Ordering::Relaxed);
        flow.meter.up.inc_by(len);
        self.traffic.meter.up.inc_by(len);
    }

    /// A datagram from home on its way to the player.
    fn count_down(&self, flow: &Flow, len: u64) {
        let now = self.now_ms();
        flow.last.store(now, Ordering::Relaxed);
        flow.last_down.store(now, Ordering::Relaxed);
        flow.meter.down.inc_by(len);
        self.traffic.meter.down.inc_by(len);
    }

    /// The service's `deny` and `allow` lists for a source (canonical).
    fn listed(&self, ip: std::net::IpAddr) -> Result<(), Reason> {
        let l = &*self.limits();
        if l.deny.contains(ip) {
            return Err(Reason::PlayerDenied);
        }
        if !l.allow.is_empty() && !l.allow.contains(ip) {
            return Err(Reason::PlayerNotAllowed);
        }
        Ok(())
    }

    /// The door's rules for a new flow; where a cap is reached, a flow
    /// that has not proven itself gives way (see `table`).
    fn admit(&self, t: &mut Table, k: FlowKey) -> Result<(), Reason> {
        let l = &*self.limits();
        let ip = k.1.ip();
        self.listed(ip)?;
        let (from_ip, from_net) = t.counts(ip);
        let full = if from_ip >= l.udp.max_flows_per_ip {
            Some((Scope::Address, Reason::PlayerAddressFull))
        } else if from_net >= l.udp.max_flows_per_net {
            Some((Scope::Network, Reason::PlayerNetworkFull))
        } else if t.len() >= l.udp.max_flows {
            Some((Scope::Service, Reason::ServiceFull))
        } else {
            None
        };
        let stale = self.now_ms().saturating_sub(ACTIVE.as_millis() as u64);
        let mut victims = Vec::new();
        if let Some((scope, reason)) = full {
            victims.push(t.victim(scope, ip, stale).ok_or(reason)?);
        }
        let waiting_after = t.waiting
            - victims
                .iter()
                .filter(|(_, f)| !f.started.load(Ordering::Relaxed))
                .count();
        if waiting_after >= MAX_WAITING {
            let v = t
                .oldest_waiting()
                .filter(|(_, f)| victims.iter().all(|(_, g)| g.id != f.id))
                .ok_or(Reason::ServiceFull)?;
            victims.push(v);
        }
        // The places given up first: each hands its hub-wide slot back, so
        // a hub at its cap still lets a newcomer replace a flow.
        for (k, flow) in victims {
            self.evict(t, k, &flow);
        }
        if self.cap.enter_udp() {
            return Ok(());
        }
        // The hub is full: this service's own flow that has proven least
        // may still give way to the newcomer.
        match t.victim(Scope::Service, ip, stale) {
            Some((k, flow)) => {
                self.evict(t, k, &flow);
                self.cap.enter_udp().then_some(()).ok_or(Reason::HubFull)
            }
            None => Err(Reason::HubFull),
        }
    }

    fn evict(&self, t: &mut Table, k: FlowKey, flow: &Flow) {
        flow.end.cancel();
        self.meters.evicted.inc_by(flow.queue.len() as u64);
        self.remove(t, k, flow);
    }

    /// Takes `flow` out of the table if it is still there; idempotent.
    fn remove(&self, t: &mut Table, k: FlowKey, flow: &Flow) {
        if t.remove(k, flow) {
            self.cap.leave_udp();
            self.meters.flows.dec();
            self.traffic.players.dec();
        }
    }

    /// `flow` has its channel: its silence counts from now.
    fn started(&self, flow: &Flow) {
        let mut t = self.lock();
        self.touch(flow);
        if !flow.started.swap(true, Ordering::Relaxed) && !flow.end.is_cancelled() {
            t.waiting -= 1;
        }
    }

    fn ended(&self, k: FlowKey, flow: &Flow) {
        let mut t = self.lock();
        self.remove(&mut t, k, flow);
    }
}

/// One UDP port of a service, bound and ready to serve.
pub(crate) struct UdpPort {
    pub svc: Arc<Service>,
    pub door: Arc<UdpDoor>,
    pub socket: Arc<UdpSocket>,
    pub offset: u16,
    /// Ends the service's flows (hub hard stop, service removed).
    pub cut: CancellationToken,
}

impl UdpPort {
    /// The receive loop: until the hub stops, every datagram goes to its
    /// flow; new flows get their task here.
    pub async fn serve(self, shared: Arc<Shared>, stop: CancellationToken) {
        let mut buf = vec![0u8; crate::datagram::RECV_BUF];
        let mut rx = Receiver::default();
        let local = self.socket.local_addr().ok();
        let wildcard = local.is_some_and(|l| l.ip().is_unspecified());
        let mut pongs =
            super::game::bedrock::Answerer::new(&self.svc.name, local.map_or(0, |l| l.port()));
        if let Err(e) = crate::datagram::socket::report_destinations(&self.socket) {
            tracing::warn!(
                "the kernel will not say which address players reach ({e}); \
                 PROXY headers name the bound address"
            );
        }
        loop {
            let got = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = rx.recv(&self.socket, &mut buf) => r,
            };
            let r = match got {
                Ok(r) => r,
                Err(e) => {
                    // An ICMP error for an earlier send, or a datagram
                    // larger than the buffer: nothing to do for the port.
                    tracing::debug!("udp receive: {e}");
                    continue;
                }
            };
            // One name per player however the socket saw it: a dual-stack
            // socket sees an IPv4 player as ::ffff:a.b.c.d.
            let player = SocketAddr::new(r.from.ip().to_canonical(), r.from.port());
            // Every datagram, not only a new flow's: a banned flow's own
            // stop at once, before its sweep ends it (and no server-list
            // answer either).
            if let Err(reason) = shared.bans.check(&self.svc.name, player.ip()) {
                let detail = format!("udp datagram refused by service {}", self.door.service);
                shared
                    .refusals
                    .record_player(&self.door.service, reason, player.ip(), &detail);
                continue;
            }
            let port = local.map_or(0, |l| l.port());
            // Answers leave from the address the player wrote to (see
            // `datagram::socket`); a socket bound to one has no other.
            let reply_from = crate::datagram::socket::answer_from(r.to.filter(|_| wildcard));
            let from = (r.from, reply_from);
            if self.answered(&shared, &mut pongs, port, &buf[..r.len], from) {
                continue;
            }
            match self
                .door
                .deliver(self.offset, player, buf[..r.len].to_vec())
            {
                Delivered::Queued => {}
                Delivered::New(flow) => {
                    let reached = match (r.to, local) {
                        (Some(ip), Some(l)) => Some(SocketAddr::new(ip.to_canonical(), l.port())),
                        _ => local,
                    };
                    let at = Endpoints {
                        player,
                        reply_to: r.from,
                        reply_from,
                        reached,
                    };
                    self.spawn(&shared, flow, at, &stop)
                }
                Delivered::Refused(reason) => {
                    let detail = format!("udp flow refused by service {}", self.door.service);
                    shared
                        .refusals
                        .record_player(&self.door.service, reason, player.ip(), &detail);
                }
            }
        }
    }

    /// Whether `d` from `from` was a Bedrock server-list ping taken care of
    /// here while home is away (answered, or dropped over the budget).
    /// Never answered to a source the lists refuse (no reflection off this
    /// port, no offline MOTD for the denied), whose pings spend none of
    /// the answers' budget either; RakNet's unconnected pings are 0x01 and
    /// 0x02, so other datagrams skip the lists here.
    fn answered(
        &self,
        shared: &Shared,
        pongs: &mut super::game::bedrock::Answerer,
        port: u16,
        d: &[u8],
        (from, reply_from): (SocketAddr, Option<std::net::IpAddr>),
    ) -> bool {
        use super::game::bedrock::Ping;
        let ping = matches!(d.first(), Some(0x01 | 0x02));
        if ping && self.door.listed(from.ip().to_canonical()).is_err() {
            return false;
        }
        match pongs.answer(shared, &self.svc, port, d) {
            Ping::Pass => false,
            Ping::Pong(pong) => {
                let _ =
                    crate::datagram::socket::try_send_from(&self.socket, &pong, from, reply_from);
                true
            }
            Ping::Drop => true,
        }
    }

    /// A task for a new flow; it ends when `closed` (this port stops being
    /// served: removed, or handed to another service) since it would hear
    /// nothing from its player any more.
    fn spawn(
        &self,
        shared: &Arc<Shared>,
        flow: Arc<Flow>,
        at: Endpoints,
        closed: &CancellationToken,
    ) {
        let span = tracing::info_span!("udp", service = %self.door.service, player = %at.player);
        let run = flow::Run {
            shared: shared.clone(),
            svc: self.svc.clone(),
            door: self.door.clone(),
            socket: self.socket.clone(),
            offset: self.offset,
            at,
            flow,
            cut: self.cut.clone(),
            closed: closed.clone(),
        };
        shared.tracker.spawn(run.run().instrument(span));
    }
}

/// Who a flow is between.
pub(crate) struct Endpoints {
    /// Canonical: the flow's key, the PROXY header's source, the logs.
    pub player: SocketAddr,
    /// As the socket saw it, for answers.
    pub reply_to: SocketAddr,
    /// The address answers leave from, as the socket saw the one the player
    /// wrote to; None on a socket bound to one address.
    pub reply_from: Option<std::net::IpAddr>,
    /// The hub address the player sent to.
    pub reached: Option<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::players::{PlayerLimits, PlayersConfig};
    use std::net::IpAddr;

    fn door_with(cfg: PlayersConfig) -> Arc<UdpDoor> {
        let limits = PlayerLimits::merge(cfg, &PlayersConfig::default(), "").unwrap();
        UdpDoor::new(
            "game".into(),
            limits,
            HubCap::new(100_000),
            UdpMeters::default(),
            ServiceMeters::default(),
            crate::rate::Caps::new(0, 0),
            Budget::new(usize::MAX),
        )
    }

    fn door(max_flows: usize, per_ip: usize) -> Arc<UdpDoor> {
        door_with(PlayersConfig {
            max_udp_flows: Some(max_flows),
            max_udp_flows_per_ip: Some(per_ip),
            ..Default::default()
        })
    }

    fn from(i: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 4000)
    }

    fn new_flow(d: &UdpDoor, src: SocketAddr) -> Arc<Flow> {
        match d.deliver(0, src, vec![1]) {
            Delivered::New(f) => {
                d.started(&f);
                f
            }
            Delivered::Queued => panic!("{src}: an existing flow"),
            Delivered::Refused(r) => panic!("{src}: refused ({})", r.as_str()),
        }
    }

    /// The service answers and the player speaks again.
    fn converse(d: &UdpDoor, src: SocketAddr, f: &Flow) {
        d.count_down(f, 1);
        assert!(matches!(d.deliver(0, src, vec![2]), Delivered::Queued));
        assert!(f.is_conversation());
    }

    #[tokio::test(start_paused = true)]
    async fn conversations_stay_when_a_flood_fills_the_table() {
        let d = door(4, 2);
        let flows: Vec<_> = (0..4).map(|i| new_flow(&d, from(i))).collect();
        // Two players converse; all four got answers (a service answers
        // forged sources too).
        for f in &flows {
            d.count_down(f, 1);
        }
        for i in 0..2 {
            converse(&d, from(i), &flows[i as usize]);
        }
        // A flood of new sources churns through the other places only.
        for i in 100..200 {
            assert!(matches!(d.deliver(0, from(i), vec![1]), Delivered::New(_)));
        }
        assert_eq!(d.flows(), 4);
        assert!(!flows[0].end.is_cancelled() && !flows[1].end.is_cancelled());
        assert!(flows[2].end.is_cancelled() && flows[3].end.is_cancelled());
        assert!(matches!(d.deliver(0, from(0), vec![2]), Delivered::Queued));
        // Once every place holds an active conversation, newcomers wait.
        let rest: Vec<_> = {
            let t = d.lock();
            (100..200)
                .filter_map(|i| t.get(&(0, from(i))).map(|f| (i, f.clone())))
                .collect()
        };
        for (i, f) in &rest {
            converse(&d, from(*i), f);
        }
        assert!(matches!(
            d.deliver(0, from(500), vec![1]),
            Delivered::Refused(Reason::ServiceFull)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn one_shot_flows_of_an_address_make_room_for_its_next_ones() {
        let d = door(100, 4);
        let ip = from(1).ip();
        let at = |port| SocketAddr::new(ip, port);
        // A DNS client: each query from a new port, answered, never again.
        let mut flows = Vec::new();
        for port in 1..=50u16 {
            let f = new_flow(&d, at(port));
            d.count_down(&f, 1);
            flows.push(f);
        }
        assert_eq!(d.flows(), 4, "one address keeps its cap");
        assert!(flows[..46].iter().all(|f| f.end.is_cancelled()));
        assert!(flows[46..].iter().all(|f| !f.end.is_cancelled()));
        // Another address is untouched by them.
        let other = new_flow(&d, from(2));
        for port in 51..60u16 {
            new_flow(&d, at(port));
        }
        assert!(!other.end.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_conversation_gone_quiet_gives_way_and_a_lively_one_does_not() {
        let d = door(2, 64);
        let (quiet, lively) = (new_flow(&d, from(1)), new_flow(&d, from(2)));
        converse(&d, from(1), &quiet);
        converse(&d, from(2), &lively);
        tokio::time::advance(Duration::from_millis(500)).await;
        converse(&d, from(2), &lively);
        assert!(matches!(
            d.deliver(0, from(3), vec![1]),
            Delivered::Refused(Reason::ServiceFull)
        ));
        tokio::time::advance(Duration::from_millis(700)).await;
        // 1.2 s without an exchange for one, 0.7 s for the other.
        let newcomer = new_flow(&d, from(3));
        assert!(quiet.end.is_cancelled());
        assert!(!lively.end.is_cancelled() && !newcomer.end.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_hub_still_lets_a_newcomer_replace_a_one_shot_flow() {
        let limits =
            PlayerLimits::merge(PlayersConfig::default(), &PlayersConfig::default(), "").unwrap();
        let cap = HubCap::new(2);
        // No TCP service: the whole cap is UDP's.
        cap.serve_tcp(false);
        let d = UdpDoor::new(
            "game".into(),
            limits,
            cap.clone(),
            UdpMeters::default(),
            ServiceMeters::default(),
            crate::rate::Caps::new(0, 0),
            Budget::new(usize::MAX),
        );
        let (a, b) = (new_flow(&d, from(1)), new_flow(&d, from(2)));
        converse(&d, from(1), &a);
        // The hub is at its cap; b never conversed, so it gives way.
        new_flow(&d, from(3));
        assert!(b.end.is_cancelled() && !a.end.is_cancelled());
        assert_eq!(d.flows(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_network_holds_a_few_addresses_worth() {
        let d = door_with(PlayersConfig {
            max_udp_flows_per_ip: Some(2),
            max_udp_flows_per_net: Some(4),
            ..Default::default()
        });
        // Eight addresses of one /24, each flow in conversation.
        let mut held = 0;
        for i in 1..=8 {
            match d.deliver(0, from(i), vec![1]) {
                Delivered::New(f) => {
                    d.started(&f);
                    converse(&d, from(i), &f);
                    held += 1;
                }
                Delivered::Refused(r) => assert_eq!(r, Reason::PlayerNetworkFull),
                Delivered::Queued => unreachable!(),
            }
        }
        assert_eq!(held, 4);
        // The next /24 has its own share.
        assert!(matches!(
            d.deliver(0, from(300), vec![1]),
            Delivered::New(_)
        ));
    }

    /// IPv6: a forger who owns a /64 is one address, one who owns a /48
    /// one network, however many addresses it sends from.
    #[tokio::test(start_paused = true)]
    async fn ipv6_counts_by_the_64_and_the_48() {
        let d = door_with(PlayersConfig {
            max_udp_flows_per_ip: Some(2),
            max_udp_flows_per_net: Some(4),
            ..Default::default()
        });
        let v6 = |s: &str| SocketAddr::new(s.parse().unwrap(), 5000);
        let take = |at: SocketAddr| match d.deliver(0, at, vec![1]) {
            Delivered::New(f) => {
                d.started(&f);
                converse(&d, at, &f);
                Ok(f)
            }
            Delivered::Refused(r) => Err(r),
            Delivered::Queued => unreachable!(),
        };
        // Many addresses of one /64: two flows, then the address is full.
        let mut held = Vec::new();
        for i in 1..=5 {
            match take(v6(&format!("2001:db8:1:1::{i}"))) {
                Ok(f) => held.push(f),
                Err(r) => assert_eq!(r, Reason::PlayerAddressFull),
            }
        }
        assert_eq!(held.len(), 2);
        // Other /64s of the same /48: the network holds four in all.
        for net in 2..=5 {
            if let Ok(f) = take(v6(&format!("2001:db8:1:{net}::1"))) {
                held.push(f);
            }
        }
        assert_eq!(held.len(), 4);
        assert_eq!(
            take(v6("2001:db8:1:9::1")).err(),
            Some(Reason::PlayerNetworkFull)
        );
        // Another /48 has its own share.
        assert!(take(v6("2001:db8:2:1::1")).is_ok());
    }

    #[tokio::test]
    async fn one_address_gets_its_share_and_a_port_counts_separately() {
        let d = door(100, 2);
        let a = from(1);
        let b = SocketAddr::new(a.ip(), 4001);
        let first = new_flow(&d, a);
        d.count_down(&first, 1);
        converse(&d, a, &first);
        assert!(matches!(d.deliver(1, a, vec![]), Delivered::New(_)));
        // At the cap, the address's own flow that is not a conversation
        // gives way; its conversation stays.
        assert!(matches!(d.deliver(0, b, vec![]), Delivered::New(_)));
        assert_eq!(d.flows(), 2);
        assert!(!first.end.is_cancelled());
    }
}
