//! A flow's datagrams waiting for its path to home. It never blocks the
//! sender: past its bound the oldest datagrams go (games want the newest
//! state), and the drops are counted.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
};
use tokio::sync::Notify;

/// About 100 ms of a busy game flow, or a few ms of a bulk transfer; a
/// path behind by more than that drops rather than adds latency.
pub const MAX_ITEMS: usize = 128;
pub const MAX_BYTES: usize = 256 * 1024;
/// Slots a drained queue keeps: a burst's deque is given back.
const KEEP_SLOTS: usize = 8;

#[derive(Default)]
struct Inner {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
}

#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    ready: Notify,
}

impl Queue {
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
    /// The newest datagram is always kept, whatever its size.
    pub fn push(&self, d: Vec<u8>) -> u64 {
        let mut q = self.lock();
        let mut dropped = 0;
        while !q.items.is_empty() && (q.items.len() >= MAX_ITEMS || q.bytes + d.len() > MAX_BYTES) {
            let old = q.items.pop_front().expect("not empty");
            q.bytes -= old.len();
            dropped += 1;
        }
        q.bytes += d.len();
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
    /// queue's lock, to `send`; returns those it did not take.
    pub async fn drain_sending(&self, mut send: impl FnMut(&[u8]) -> bool) -> Vec<Vec<u8>> {
        loop {
            let ready = self.ready.notified();
            {
                let mut q = self.lock();
                if !q.items.is_empty() {
                    q.bytes = 0;
                    let left = q.items.drain(..).filter(|d| !send(d)).collect();
                    q.items.shrink_to(KEEP_SLOTS);
                    return left;
                }
            }
            ready.await;
        }
    }

    /// Waits for datagrams, then frames all of them into `out` (one write
    /// for a burst); how many.
    pub async fn drain_into(&self, out: &mut Vec<u8>) -> usize {
        loop {
            let ready = self.ready.notified();
            {
                let mut q = self.lock();
                if !q.items.is_empty() {
                    let n = q.items.len();
                    for d in q.items.drain(..) {
                        super::encode(out, &d);
                    }
                    q.bytes = 0;
                    q.items.shrink_to(KEEP_SLOTS);
                    return n;
                }
            }
            ready.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_go_and_the_newest_stays() {
        let q = Queue::default();
        let mut dropped = 0;
        for i in 0..MAX_ITEMS + 10 {
            dropped += q.push(vec![(i % 256) as u8; 4]);
        }
        assert_eq!(dropped, 10);
        let mut out = Vec::new();
        assert_eq!(q.drain_into(&mut out).await, MAX_ITEMS);
        assert_eq!(out[2], 10, "the first ten went");
        // Large datagrams: the byte bound holds four of the largest.
        let big: u64 = (0..5).map(|_| q.push(vec![7; 65_507])).sum();
        assert_eq!(big, 1);
        // Drained, a queue holds no burst's worth of slots.
        assert_eq!(q.drain_sending(|_| false).await.len(), 4);
        assert!(q.inner.lock().unwrap().items.capacity() <= KEEP_SLOTS);
    }
}
