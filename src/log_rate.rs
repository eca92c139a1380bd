//! Log lines another party can cause at will (an ep's messages on the
//! hub, a hub's on the ep): said at most once a second per place, with
//! how many went unsaid, so a peer looping them cannot fill the disk or
//! have journald throttle the process's real warnings.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How often a place may log.
const EVERY: Duration = Duration::from_secs(1);

/// One place's rate, usable as a `static`.
#[derive(Default)]
pub struct Once {
    /// When it last logged: ms since `base()`, plus one (0: never).
    last: AtomicU64,
    unsaid: AtomicU64,
}

impl Once {
    pub const fn new() -> Once {
        Once {
            last: AtomicU64::new(0),
            unsaid: AtomicU64::new(0),
        }
    }

    /// Some(lines unsaid since the last one said) if this one is to be
    /// said; None (counted) if not.
    pub fn now(&self) -> Option<u64> {
        let now = base().elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.unsaid.swap(0, Ordering::Relaxed));
        }
        self.unsaid.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood is said once, then once a second with what went unsaid.
    #[test]
    fn a_flood_is_said_once_a_second() {
        let once = Once::new();
        assert_eq!(once.now(), Some(0));
        for _ in 0..1000 {
            assert_eq!(once.now(), None);
        }
        std::thread::sleep(EVERY);
        assert_eq!(once.now(), Some(1000));
    }
}
