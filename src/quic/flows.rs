//! One QUIC connection's UDP flows by id, and the datagrams that arrived
//! before their flow's `Start` (a stream) was read: QUIC does not order
//! datagrams with streams, and a flow's first datagram must not be lost.
//! What a peer sends here (an ep to its hub, a hub to its ep) is bounded:
//! a peer that opens no flows cannot fill the other's memory.
//!
//! Public (hidden) for the `quic_flows` fuzz target.

use std::{collections::HashMap, sync::Arc, time::Instant};

/// Where a flow's datagrams go. Called on the task that reads the
/// connection, so it sends at once or drops (a full socket loses the
/// datagram, as the network would) and never waits: a task hop per
/// datagram each way is what kept a round trip over QUIC above TLS.
/// It must not register or drop a flow of the same link.
pub type Sink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Early datagrams kept: per flow what the hub holds for a flow waiting
/// for its channel (it sends them all as the flow opens), for how long,
/// and in all, bytes and flows.
pub const EARLY_PER_FLOW: usize = crate::datagram::QUEUE_ITEMS;
pub const EARLY_BYTES_PER_FLOW: usize = crate::datagram::QUEUE_BYTES;
pub const EARLY_FOR: std::time::Duration = std::time::Duration::from_secs(5);
pub const EARLY_BYTES: usize = 4 << 20;
pub const EARLY_FLOWS: usize = 256;

#[derive(Default)]
pub struct Flows {
    open: HashMap<u32, Sink>,
    early: HashMap<u32, Early>,
    /// Bytes held in `early`, all flows.
    early_bytes: usize,
    /// The connection's session is over: no new flow will open, and only
    /// flows opening (`expect`) keep what comes early.
    retired: bool,
}

#[derive(Default)]
struct Early {
    since: Option<Instant>,
    datagrams: Vec<Vec<u8>>,
    bytes: usize,
    /// The flow is opening (`expect`).
    expected: bool,
}

/// A datagram's flow id, if it is long enough to carry one.
pub fn id(d: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(..4)?.try_into().ok()?))
}

/// What a datagram carries for its flow (empty if it carries no id).
pub fn payload(d: &[u8]) -> &[u8] {
    d.get(4..).unwrap_or_default()
}

impl Flows {
    /// A datagram read from the connection: the sink of its flow if the
    /// flow is open (called outside the lock with `payload(d)`), else kept
    /// early within the bounds, or dropped. The clock (`now`) is read only
    /// for an early one, off the path of a flow's every datagram.
    pub fn arrived(&mut self, d: &[u8], now: impl FnOnce() -> Instant) -> Option<Sink> {
        let id = id(d)?;
        let sink = self.open.get(&id).cloned();
        if sink.is_none() {
            self.early(id, payload(d), now());
        }
        sink
    }

    fn early(&mut self, id: u32, d: &[u8], now: Instant) {
        if self.retired && !self.early.get(&id).is_some_and(|e| e.expected) {
            return;
        }
        if !self.early.contains_key(&id) {
            let mut expired = 0;
            self.early.retain(|_, e| {
                let keep = e.since.is_some_and(|t| now.duration_since(t) < EARLY_FOR);
                expired += if keep { 0 } else { e.bytes };
                keep
            });
            self.early_bytes -= expired;
            // Flows opening (`expect`: their seat taken) do not count:
            // `max_players` bounds them.
            if self.early.values().filter(|e| !e.expected).count() >= EARLY_FLOWS {
                return;
            }
        }
        if self.early_bytes + d.len() > EARLY_BYTES {
            return;
        }
        let e = self.early.entry(id).or_default();
        e.since.get_or_insert(now);
        if e.datagrams.len() < EARLY_PER_FLOW && e.bytes + d.len() <= EARLY_BYTES_PER_FLOW {
            e.bytes += d.len();
            self.early_bytes += d.len();
            e.datagrams.push(d.to_vec());
        }
    }

    /// Flow `id` is opening (its seat taken: bounded by `max_players`;
    /// its local socket next). What came or comes early for it is kept
    /// through the connection's retirement, until it registers or its
    /// opening gives up (`take_early`).
    pub fn expect(&mut self, id: u32, now: Instant) {
        let e = self.early.entry(id).or_default();
        e.since.get_or_insert(now);
        e.expected = true;
    }

    /// The session is over: what waited for a flow goes, but for flows
    /// opening (`expect`), and nothing more is kept for others (on a
    /// connection its players hold open, early datagrams would otherwise
    /// expire only as datagrams of new flows arrive).
    pub fn retire(&mut self) {
        self.retired = true;
        self.early.retain(|_, e| e.expected);
        self.early_bytes = self.early.values().map(|e| e.bytes).sum();
    }

    /// The early datagrams of flow `id`, taken.
    pub fn take_early(&mut self, id: u32) -> Vec<Vec<u8>> {
        let e = self.early.remove(&id).unwrap_or_default();
        self.early_bytes -= e.bytes;
        e.datagrams
    }

    /// Datagrams of flow `id` go to `sink` from now on.
    pub fn open(&mut self, id: u32, sink: Sink) {
        self.open.insert(id, sink);
    }

    /// Closes flow `id` if `sink` is still its sink: a flow that ends does
    /// not take with it a later flow given the same id (a hub that sent a
    /// second `Start` for an id still open).
    pub fn close_if(&mut self, id: u32, sink: &Sink) {
        if self.open.get(&id).is_some_and(|s| Arc::ptr_eq(s, sink)) {
            self.open.remove(&id);
        }
    }

    pub fn is_open(&self, id: u32) -> bool {
        self.open.contains_key(&id)
    }

    /// Bytes held early, all flows, as counted.
    pub fn early_bytes(&self) -> usize {
        self.early_bytes
    }

    /// Each flow held early: its datagrams, their bytes as counted, and
    /// their bytes.
    pub fn early_held(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.early.values().map(|e| {
            (
                e.datagrams.len(),
                e.bytes,
                e.datagrams.iter().map(Vec::len).sum(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retired connection keeps nothing for flows not yet open: a peer
    /// holding it open with one player cannot fill it.
    #[test]
    fn a_retired_connection_keeps_no_early_datagrams() {
        let mut f = Flows::default();
        let now = Instant::now();
        let d = |id: u32| [&id.to_be_bytes()[..], &[0u8; 1000]].concat();
        assert!(f.arrived(&d(1), || now).is_none());
        assert_eq!(f.early_bytes(), 1000);
        f.retire();
        assert_eq!(f.early_bytes(), 0);
        for id in 2..100 {
            f.arrived(&d(id), || now);
        }
        assert_eq!(f.early_bytes(), 0);
        assert_eq!(f.early_held().count(), 0);
    }

    /// A flow that ends leaves a later flow of the same id open (a hub
    /// sent a second `Start` for it): before, the first's end closed the
    /// second's sink, and its datagrams went early and were lost.
    #[test]
    fn a_flow_ending_leaves_a_later_flow_of_its_id_open() {
        let mut f = Flows::default();
        let (first, second): (Sink, Sink) = (Arc::new(|_: &[u8]| {}), Arc::new(|_: &[u8]| {}));
        f.open(7, first.clone());
        f.open(7, second.clone());
        f.close_if(7, &first);
        assert!(f.is_open(7));
        f.close_if(7, &second);
        assert!(!f.is_open(7));
    }

    /// A flow whose `Start` was read just before its session ended (its
    /// local socket still opening) keeps what came early for it, and what
    /// comes after; others' go. Before, the retirement cleared them all,
    /// and that flow lost its first datagrams (a ping with no retry).
    #[test]
    fn a_flow_opening_as_its_connection_retires_keeps_its_early_datagrams() {
        let mut f = Flows::default();
        let now = Instant::now();
        let d = |id: u32, b: u8| [&id.to_be_bytes()[..], &[b; 10]].concat();
        f.arrived(&d(1, 1), || now);
        f.arrived(&d(2, 1), || now);
        f.expect(1, now);
        f.retire();
        f.arrived(&d(1, 2), || now);
        f.arrived(&d(2, 2), || now);
        assert_eq!(f.early_bytes(), 20);
        assert_eq!(f.take_early(1), vec![vec![1u8; 10], vec![2u8; 10]]);
        assert!(f.take_early(2).is_empty());
        assert_eq!(f.early_bytes(), 0);
    }
}
