//! A flow's datagrams waiting for its path to home. It never blocks the
//! sender: past its bound the oldest datagrams go (games want the newest
//! state), and the drops are counted.
//!
//! Every queue of a hub also draws on one `Budget`: forged sources can
//! start flows up to each service's cap, and a flow's bound times that
//! cap (256 KiB × 1,024 per UDP service) is more than a small VPS has.
//! Past the budget a flow keeps only `SHARE` bytes, its own oldest going
//! first, so a flood shrinks its own queues and a player's few datagrams
//! still fit.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};
use tokio::sync::Notify;

/// About 100 ms of a busy game flow, or a few ms of a bulk transfer; a
/// path behind by more than that drops rather than adds latency.
pub const MAX_ITEMS: usize = 128;
pub const MAX_BYTES: usize = 256 * 1024;
/// Slots a drained queue keeps: a burst's deque is given back.
const KEEP_SLOTS: usize = 8;
/// What a hub's queues hold together before each keeps only `SHARE`.
pub const BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// A flow's bound while the budget is spent: most of a second of a game's
/// datagrams (a few hundred bytes, tens a second).
pub const SHARE: usize = 16 * 1024;

/// The bytes every queue of one hub holds.
pub struct Budget {
    used: AtomicUsize,
    max: usize,
    /// Set while spent, so its warning is said once per episode.
    spent: std::sync::atomic::AtomicBool,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            max,
            spent: Default::default(),
        })
    }

    /// A hub's: `BUDGET_BYTES`.
    pub fn for_hub() -> Arc<Budget> {
        Budget::new(BUDGET_BYTES)
    }

    /// Bytes queued now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Whether `n` more bytes would pass the budget. Said in the log as
    /// the budget is first spent, and once it is back under half (not at
    /// each crossing of the line, which a flood crosses all the time).
    fn tight(&self, n: usize) -> bool {
        let used = self.used();
        let tight = used + n > self.max;
        let spent = self.spent.load(Ordering::Relaxed);
        let turned = if spent { used <= self.max / 2 } else { tight };
        if turned
            && self
                .spent
                .compare_exchange(spent, !spent, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if spent {
                tracing::info!(queued = used, "UDP queues are back within the hub's budget");
            } else {
                tracing::warn!(
                    queued = used,
                    "UDP datagrams waiting for their path home fill the hub's budget \
                     ({} MiB): each flow now keeps at most {} KiB of them, its oldest dropped \
                     (a flood of forged sources, or home's link far slower than its players)",
                    self.max >> 20,
                    SHARE >> 10
                );
            }
        }
        tight
    }
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
}

pub struct Queue {
    inner: Mutex<Inner>,
    ready: Notify,
    budget: Arc<Budget>,
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.budget.give(self.lock().bytes);
    }
}

impl Queue {
    pub fn new(budget: Arc<Budget>) -> Queue {
        Queue {
            inner: Mutex::default(),
            ready: Notify::new(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `d`, dropping the oldest beyond the bound; how many went.
    /// The newest datagram is always kept, whatever its size, unless the
    /// hub's budget is spent and it is larger than a flow's `SHARE`.
    pub fn push(&self, d: Vec<u8>) -> u64 {
        let mut q = self.lock();
        let bound = match self.budget.tight(d.len()) {
            true if d.len() > SHARE => return 1,
            true => SHARE,
            false => MAX_BYTES,
        };
        let mut dropped = 0;
        while !q.items.is_empty() && (q.items.len() >= MAX_ITEMS || q.bytes + d.len() > bound) {
            let old = q.items.pop_front().expect("not empty");
            q.bytes -= old.len();
            self.budget.give(old.len());
            dropped += 1;
        }
        q.bytes += d.len();
        self.budget.take(d.len());
        q.items.push_back(d);
        drop(q);
        self.ready.notify_one();
        dropped
    }

    /// Sends `d` at once with `send` when nothing is waiting before it
    /// (under the queue's lock, so it cannot pass one being drained by
    /// `drain_sending`), else queues it; how many were dropped.
    pub fn push_or(&self, d: Vec<u8>, send: impl FnOnce(&[u8]) -> bool) -> u64 {
        {
            let q = self.lock();
            if q.items.is_empty() && send(&d) {
                return 0;
            }
        }
        self.push(d)
    }

    /// Waits for datagrams, then offers each, in order and under the
    /// queue's lock, to `send`; returns those it did not take, still
    /// counted in the budget while `Held`.
    pub async fn drain_sending(&self, mut send: impl FnMut(&[u8]) -> bool) -> (Vec<Vec<u8>>, Held) {
        loop {
            let ready = self.ready.notified();
            {
                let mut q = self.lock();
                if !q.items.is_empty() {
                    self.budget.give(std::mem::take(&mut q.bytes));
                    let left: Vec<_> = q.items.drain(..).filter(|d| !send(d)).collect();
                    q.items.shrink_to(KEEP_SLOTS);
                    let bytes = left.iter().map(Vec::len).sum();
                    return (left, self.hold(bytes));
                }
            }
            ready.await;
        }
    }

    /// Waits for datagrams, then frames all of them into `out` (one write
    /// for a burst); how many, their bytes still counted in the budget
    /// while `Held` (the write may wait on home's link).
    pub async fn drain_into(&self, out: &mut Vec<u8>) -> (usize, Held) {
        loop {
            let ready = self.ready.notified();
            {
                let mut q = self.lock();
                if !q.items.is_empty() {
                    let n = q.items.len();
                    for d in q.items.drain(..) {
                        super::encode(out, &d);
                    }
                    let bytes = std::mem::take(&mut q.bytes);
                    q.items.shrink_to(KEEP_SLOTS);
                    return (n, Held::of(&self.budget, bytes));
                }
            }
            ready.await;
        }
    }

    /// `bytes` more held out of the queue (taken while under its lock).
    fn hold(&self, bytes: usize) -> Held {
        self.budget.take(bytes);
        Held::of(&self.budget, bytes)
    }
}

/// Datagrams taken out of a queue and held by its flow's task until they
/// are written home: still the hub's to hold, so still counted in the
/// budget until dropped. Without it a flow could drain its queue into a
/// write that waits on a stalled link and fill the queue again, twice
/// what the budget meant.
#[must_use]
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Held {
    /// `bytes` the budget already counts, given back on drop.
    fn of(budget: &Arc<Budget>, bytes: usize) -> Held {
        Held {
            budget: budget.clone(),
            bytes,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_go_and_the_newest_stays() {
        let q = Queue::new(Budget::new(usize::MAX));
        let mut dropped = 0;
        for i in 0..MAX_ITEMS + 10 {
            dropped += q.push(vec![(i % 256) as u8; 4]);
        }
        assert_eq!(dropped, 10);
        let mut out = Vec::new();
        assert_eq!(q.drain_into(&mut out).await.0, MAX_ITEMS);
        assert_eq!(out[2], 10, "the first ten went");
        // Large datagrams: the byte bound holds four of the largest.
        let big: u64 = (0..5).map(|_| q.push(vec![7; 65_507])).sum();
        assert_eq!(big, 1);
        // Drained, a queue holds no burst's worth of slots.
        assert_eq!(q.drain_sending(|_| false).await.0.len(), 4);
        assert!(q.inner.lock().unwrap().items.capacity() <= KEEP_SLOTS);
    }

    #[tokio::test]
    async fn a_flood_shrinks_its_own_queues_past_the_hubs_budget() {
        let budget = Budget::new(64 * 1024);
        // Forged sources: many flows, each pushed full.
        let flood: Vec<_> = (0..16).map(|_| Queue::new(budget.clone())).collect();
        let mut dropped = 0;
        for _ in 0..200 {
            for q in &flood {
                dropped += q.push(vec![0; 1024]);
            }
        }
        assert!(dropped > 0);
        let most = 64 * 1024 + 16 * SHARE;
        assert!(budget.used() <= most, "{} queued", budget.used());
        // A player's flow still queues its datagrams while the budget is
        // spent, not a large one.
        assert!(budget.used() + 200 > 64 * 1024, "spent");
        let player = Queue::new(budget.clone());
        assert_eq!(player.push(vec![1; 200]), 0);
        assert_eq!(player.push(vec![2; SHARE + 1]), 1);
        assert_eq!(player.len(), 1);
        // Drained datagrams stay counted until written; dropped queues
        // give theirs back.
        let mut out = Vec::new();
        let (n, held) = player.drain_into(&mut out).await;
        assert_eq!(n, 1);
        drop(flood);
        assert_eq!(budget.used(), 200, "held until written");
        drop(held);
        assert_eq!(budget.used(), 0);
        // Over QUIC: what a datagram carried is gone; what is left for the
        // stream stays counted until written.
        player.push(vec![3; 100]);
        player.push(vec![4; 300]);
        let (left, held) = player.drain_sending(|d| d.len() < 200).await;
        assert_eq!((left.len(), budget.used()), (1, 300));
        drop(held);
        assert_eq!(budget.used(), 0);
    }
}
