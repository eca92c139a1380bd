//! Ready channels of one service, oldest first, and the players waiting
//! for one.
//!
//! First in, first out: the oldest ready channel is the next one handed
//! out, so channels are used before they reach `idle_timeout` instead of
//! ageing at the bottom of a stack and being replaced (a TLS handshake on
//! both ends for nothing).

use super::Channel;
use std::collections::VecDeque;
use tokio::sync::oneshot;

/// A parked channel: its task hands the channel over on a claim.
pub(crate) struct Idle {
    pub session: u64,
    pub claim: oneshot::Sender<oneshot::Sender<Channel>>,
}

#[derive(Default)]
pub(crate) struct Pool {
    idle: VecDeque<Idle>,
    waiters: VecDeque<oneshot::Sender<Channel>>,
}

impl Pool {
    pub fn push(&mut self, idle: Idle) {
        self.idle.push_back(idle);
    }

    /// The oldest ready channel still parked.
    pub fn pop(&mut self) -> Option<Idle> {
        while let Some(idle) = self.idle.pop_front() {
            if !idle.claim.is_closed() {
                return Some(idle);
            }
        }
        None
    }

    pub fn wait(&mut self) -> oneshot::Receiver<Channel> {
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back(tx);
        rx
    }

    /// Hands `ch` to the longest-waiting player still there; gives it back
    /// when nobody waits.
    pub fn serve_waiter(&mut self, mut ch: Channel) -> Option<Channel> {
        while let Some(w) = self.waiters.pop_front() {
            match w.send(ch) {
                Ok(()) => return None,
                Err(back) => ch = back,
            }
        }
        Some(ch)
    }

    /// Drops parked channels that ended and players who left.
    pub fn prune(&mut self) {
        self.idle.retain(|i| !i.claim.is_closed());
        self.waiters.retain(|w| !w.is_closed());
    }

    /// Keeps the parked channels of the sessions `keep` accepts; the
    /// others close (their tasks see the claim sender dropped).
    pub fn retain_sessions(&mut self, keep: impl Fn(u64) -> bool) {
        self.idle.retain(|i| keep(i.session));
    }

    /// Players waiting are let go: their receivers see the sender gone.
    pub fn clear_waiters(&mut self) {
        self.waiters.clear();
    }

    pub fn ready(&self) -> usize {
        self.idle.len()
    }

    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_ready_channel_goes_first() {
        let mut pool = Pool::default();
        let mut parked = Vec::new();
        for session in 1..=3 {
            let (claim, claimed) = oneshot::channel();
            pool.push(Idle { session, claim });
            parked.push(claimed);
        }
        let order: Vec<u64> = std::iter::from_fn(|| pool.pop().map(|i| i.session)).collect();
        assert_eq!(order, [1, 2, 3]);
    }
}
