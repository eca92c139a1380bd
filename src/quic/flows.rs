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
    /// The connection's session is over: no flow will open, none is kept.
    retired: bool,
}

#[derive(Default)]
struct Early {
    since: Option<Instant>,
    datagrams: Vec<Vec<u8>>,
    bytes: usize,
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
        if self.retired {
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
            if self.early.len() >= EARLY_FLOWS {
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

    /// The session is over: what waited for a flow goes, and nothing more
    /// is kept (on a connection its players hold open, early datagrams
    /// would otherwise expire only as datagrams of new flows arrive).
    pub fn retire(&mut self) {
        self.retired = true;
        self.early.clear();
        self.early_bytes = 0;
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

    pub fn close(&mut self, id: u32) {
        self.open.remove(&id);
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
}
