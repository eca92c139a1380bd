//! A counter of work in flight with its high-water mark and total: Argon2
//! runs, connections authenticating. The one counter type the hub uses.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

#[derive(Default)]
pub(crate) struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicU64,
}

/// One unit of work in flight; counted down on drop.
pub(crate) struct Running(Arc<InFlight>);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> Running {
        let n = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        Running(self.clone())
    }

    pub fn now(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}
