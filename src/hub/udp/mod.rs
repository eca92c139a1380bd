//! The UDP door of a service: one socket per port, and a table of flows.
//!
//! A flow is one player address on one port. Its first datagram creates it
//! (queued, never lost), and it takes a channel from the service's pool
//! like a TCP player; the datagrams ride that channel framed (`datagram`).
//! The socket's receive loop never waits on a flow: it queues and moves on,
//! so one slow path cannot delay another.
//!
//! UDP sources can be forged, so the table is bounded and nothing here
//! bans: flows per service, per address, and flows still waiting for a
//! channel are capped. When full, the oldest flow that is not yet
//! established makes room. Established means a conversation: the service
//! answered and the player spoke again after the answer. A forged source
//! sends blind and one-shot floods never get there, so newcomers cannot
//! push out players who are playing.

mod flow;

use super::{
    Shared,
    admission::{HubCap, key},
    refusals::Reason,
    service::Service,
};
use crate::{
    config::players::PlayerLimits,
    datagram::Queue,
    metrics::{ServiceMeters, udp::UdpMeters},
};
use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};
use tokio::{net::UdpSocket, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Flows waiting for a channel at once, per service. Each holds queued
/// datagrams; this bounds what a flood of new sources can make the hub
/// hold while the ep is slow or away.
const MAX_WAITING: usize = 64;

/// Where a flow is: the port's offset in the service's range, the player.
type FlowKey = (u16, SocketAddr);

/// One flow's shared state: its queue and what the table needs to know.
pub(crate) struct Flow {
    id: u64,
    queue: Queue,
    /// Milliseconds since the door's epoch of the last datagram either way.
    last: AtomicU64,
    /// The service has sent something back.
    answered: AtomicBool,
    /// And the player spoke after it: kept when the table is full.
    established: AtomicBool,
    /// Has its channel (no longer counts as waiting).
    started: AtomicBool,
    /// Ended from outside (made room for another, the hub stopping).
    end: CancellationToken,
    up_datagrams: AtomicU64,
    up_bytes: AtomicU64,
}

#[derive(Default)]
struct Table {
    flows: HashMap<FlowKey, Arc<Flow>>,
    per_ip: HashMap<IpAddr, usize>,
    /// Flows not yet established, oldest first: the ones that make room.
    /// Entries of flows since established or gone are pruned lazily.
    young: VecDeque<(FlowKey, u64)>,
    waiting: usize,
    next_id: u64,
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
}

/// What happened to a datagram.
enum Delivered {
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
    ) -> Arc<Self> {
        Arc::new(UdpDoor {
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
        self.lock().flows.len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self, flow: &Flow) {
        flow.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long `flow` has seen no datagram either way.
    fn idle_for(&self, flow: &Flow) -> std::time::Duration {
        let last = flow.last.load(Ordering::Relaxed);
        std::time::Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// Hands a datagram from `src` on port `offset` to its flow, making the
    /// flow if the door admits it. Cheap and never waits.
    fn deliver(&self, offset: u16, src: SocketAddr, d: Vec<u8>) -> Delivered {
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        let k = (offset, src);
        let len = d.len() as u64;
        let mut t = self.lock();
        if let Some(flow) = t.flows.get(&k) {
            let flow = flow.clone();
            drop(t);
            if flow.answered.load(Ordering::Relaxed) {
                flow.established.store(true, Ordering::Relaxed);
            }
            self.count_up(&flow, len);
            let dropped = flow.queue.push(d);
            self.meters.queue_full.inc_by(dropped);
            return Delivered::Queued;
        }
        if let Err(reason) = self.admit(&mut t, k) {
            self.meters.refused.inc();
            return Delivered::Refused(reason);
        }
        t.next_id += 1;
        let flow = Arc::new(Flow {
            id: t.next_id,
            queue: Queue::default(),
            last: AtomicU64::new(self.now_ms()),
            answered: AtomicBool::new(false),
            established: AtomicBool::new(false),
            started: AtomicBool::new(false),
            end: CancellationToken::new(),
            up_datagrams: AtomicU64::new(0),
            up_bytes: AtomicU64::new(0),
        });
        *t.per_ip.entry(key(src.ip())).or_default() += 1;
        t.waiting += 1;
        t.young.push_back((k, flow.id));
        t.flows.insert(k, flow.clone());
        drop(t);
        self.meters.flows.inc();
        self.meters.started.inc();
        self.traffic.players.inc();
        self.traffic.admitted.inc();
        self.count_up(&flow, len);
        flow.queue.push(d);
        Delivered::New(flow)
    }

    fn count_up(&self, flow: &Flow, len: u64) {
        self.touch(flow);
        flow.up_datagrams.fetch_add(1, Ordering::Relaxed);
        flow.up_bytes.fetch_add(len, Ordering::Relaxed);
        self.traffic.meter.up.inc_by(len);
    }

    /// The door's rules for a new flow; makes room by ending the oldest
    /// unanswered flow where a cap is reached.
    fn admit(&self, t: &mut Table, k: FlowKey) -> Result<(), Reason> {
        let l = &*self.limits();
        let ip = k.1.ip();
        if l.deny.contains(ip) {
            return Err(Reason::PlayerDenied);
        }
        if !l.allow.is_empty() && !l.allow.contains(ip) {
            return Err(Reason::PlayerNotAllowed);
        }
        if t.per_ip.get(&key(ip)).copied().unwrap_or(0) >= l.udp.max_flows_per_ip {
            return Err(Reason::PlayerAddressFull);
        }
        if t.flows.len() >= l.udp.max_flows && !self.make_room(t, false) {
            return Err(Reason::ServiceFull);
        }
        if t.waiting >= MAX_WAITING && !self.make_room(t, true) {
            return Err(Reason::ServiceFull);
        }
        if !self.cap.enter() {
            return Err(Reason::HubFull);
        }
        Ok(())
    }

    /// Ends the oldest flow not established (one still waiting for a
    /// channel, if `waiting`); false if there is none.
    fn make_room(&self, t: &mut Table, waiting: bool) -> bool {
        let live = |t: &Table, (k, id): &(FlowKey, u64)| {
            t.flows
                .get(k)
                .filter(|f| f.id == *id && !f.established.load(Ordering::Relaxed))
                .cloned()
        };
        while let Some(front) = t.young.front() {
            if live(t, front).is_some() {
                break;
            }
            t.young.pop_front();
        }
        let found = t.young.iter().enumerate().find_map(|(i, e)| {
            let f = live(t, e)?;
            (!waiting || !f.started.load(Ordering::Relaxed)).then_some((i, e.0, f))
        });
        let Some((i, k, flow)) = found else {
            return false;
        };
        t.young.remove(i);
        flow.end.cancel();
        self.meters.evicted.inc_by(flow.queue.len() as u64);
        self.remove(t, k, &flow);
        if t.young.len() > 2 * t.flows.len() + 64 {
            let young = std::mem::take(&mut t.young);
            t.young = young.into_iter().filter(|e| live(t, e).is_some()).collect();
        }
        true
    }

    /// Takes `flow` out of the table if it is still there; idempotent.
    fn remove(&self, t: &mut Table, k: FlowKey, flow: &Flow) {
        if t.flows.get(&k).is_none_or(|f| f.id != flow.id) {
            return;
        }
        t.flows.remove(&k);
        let ip = key(k.1.ip());
        if let Some(n) = t.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                t.per_ip.remove(&ip);
            }
        }
        if !flow.started.load(Ordering::Relaxed) {
            t.waiting -= 1;
        }
        self.cap.leave();
        self.meters.flows.dec();
        self.traffic.players.dec();
    }

    /// `flow` has its channel.
    fn started(&self, flow: &Flow) {
        let mut t = self.lock();
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
        loop {
            let got = tokio::select! {
                r = self.socket.recv_from(&mut buf) => r,
                _ = stop.cancelled() => break,
            };
            let (n, src) = match got {
                Ok(x) => x,
                Err(e) => {
                    // An ICMP error for an earlier send, or a datagram
                    // larger than the buffer: nothing to do for the port.
                    tracing::debug!("udp receive: {e}");
                    continue;
                }
            };
            match self.door.deliver(self.offset, src, buf[..n].to_vec()) {
                Delivered::Queued => {}
                Delivered::New(flow) => self.spawn(&shared, flow, src),
                Delivered::Refused(reason) => {
                    let detail = format!("udp flow refused by service {}", self.door.service);
                    shared
                        .refusals
                        .record_player(&self.door.service, reason, src.ip(), &detail);
                }
            }
        }
    }

    fn spawn(&self, shared: &Arc<Shared>, flow: Arc<Flow>, player: SocketAddr) {
        let span = tracing::info_span!("udp", service = %self.door.service, player = %player);
        let run = flow::Run {
            shared: shared.clone(),
            svc: self.svc.clone(),
            door: self.door.clone(),
            socket: self.socket.clone(),
            offset: self.offset,
            player,
            flow,
            cut: self.cut.clone(),
        };
        shared.tracker.spawn(run.run().instrument(span));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::players::{PlayerLimits, PlayersConfig};

    fn door(max_flows: usize, per_ip: usize) -> Arc<UdpDoor> {
        let cfg = PlayersConfig {
            max_udp_flows: Some(max_flows),
            max_udp_flows_per_ip: Some(per_ip),
            ..Default::default()
        };
        let limits = PlayerLimits::merge(cfg, &PlayersConfig::default(), "").unwrap();
        UdpDoor::new(
            "game".into(),
            limits,
            HubCap::new(1000),
            UdpMeters::default(),
            ServiceMeters::default(),
        )
    }

    fn from(i: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 4000)
    }

    #[tokio::test]
    async fn answered_flows_stay_when_a_flood_fills_the_table() {
        let d = door(4, 2);
        let mut flows = Vec::new();
        for i in 0..4 {
            match d.deliver(0, from(i), vec![1]) {
                Delivered::New(f) => flows.push(f),
                _ => panic!("flow {i} refused"),
            }
        }
        // Two players got answers and spoke again; all four got answers
        // (a service answers forged sources too).
        for f in &flows {
            d.started(f);
            f.answered.store(true, Ordering::Relaxed);
        }
        for i in 0..2 {
            assert!(matches!(d.deliver(0, from(i), vec![1]), Delivered::Queued));
        }
        // A flood of new sources churns through the unanswered slots only.
        for i in 100..200 {
            assert!(matches!(d.deliver(0, from(i), vec![1]), Delivered::New(_)));
        }
        assert_eq!(d.flows(), 4);
        assert!(!flows[0].end.is_cancelled() && !flows[1].end.is_cancelled());
        assert!(flows[2].end.is_cancelled() && flows[3].end.is_cancelled());
        // The answered players' datagrams still reach their flows.
        assert!(matches!(d.deliver(0, from(0), vec![2]), Delivered::Queued));
        // Once every flow is established, newcomers are refused.
        let t = d.lock();
        for f in t.flows.values() {
            f.established.store(true, Ordering::Relaxed);
        }
        drop(t);
        assert!(matches!(
            d.deliver(0, from(500), vec![1]),
            Delivered::Refused(Reason::ServiceFull)
        ));
    }

    #[tokio::test]
    async fn one_address_gets_its_share_and_a_port_counts_separately() {
        let d = door(100, 2);
        let a = from(1);
        let b = SocketAddr::new(a.ip(), 4001);
        assert!(matches!(d.deliver(0, a, vec![]), Delivered::New(_)));
        assert!(matches!(d.deliver(1, a, vec![]), Delivered::New(_)));
        assert!(matches!(
            d.deliver(0, b, vec![]),
            Delivered::Refused(Reason::PlayerAddressFull)
        ));
        assert_eq!(d.flows(), 2);
    }
}
