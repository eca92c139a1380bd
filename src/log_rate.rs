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
    /// When its current second began: ms since `base()`, plus one (0:
    /// never logged).
    last: AtomicU64,
    /// Lines said in the current second.
    said: AtomicU64,
    unsaid: AtomicU64,
}

impl Once {
    pub const fn new() -> Once {
        Once {
            last: AtomicU64::new(0),
            said: AtomicU64::new(0),
            unsaid: AtomicU64::new(0),
        }
    }

    /// Some(lines unsaid since the last one said) if this one is to be
    /// said; None (counted) if not.
    pub fn now(&self) -> Option<u64> {
        self.now_within(1)
    }

    /// `now`, with up to `n` lines a second said.
    pub fn now_within(&self, n: u64) -> Option<u64> {
        let now = base().elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.said.store(1, Ordering::Relaxed);
            return Some(self.unsaid.swap(0, Ordering::Relaxed));
        }
        if !due && self.said.fetch_add(1, Ordering::Relaxed) < n {
            return Some(self.unsaid.swap(0, Ordering::Relaxed));
        }
        self.unsaid.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A `Once` per key (a service's name), usable as a `static`: one
/// service's flood does not hide another's line. Keys past `KEYS` share
/// one place, so a peer naming ever new keys cannot grow it.
pub struct PerKey {
    places: std::sync::Mutex<std::collections::BTreeMap<String, std::sync::Arc<Once>>>,
    rest: Once,
}

/// The most keys with a place of their own.
const KEYS: usize = 256;

impl PerKey {
    pub const fn new() -> PerKey {
        PerKey {
            places: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            rest: Once::new(),
        }
    }

    /// `Once::now` for `key`'s place.
    pub fn now(&self, key: &str) -> Option<u64> {
        self.now_within(key, 1)
    }

    /// `Once::now_within` for `key`'s place.
    pub fn now_within(&self, key: &str, n: u64) -> Option<u64> {
        let place = {
            let mut places = self.places.lock().unwrap_or_else(|p| p.into_inner());
            match places.get(key) {
                Some(p) => Some(p.clone()),
                None if places.len() < KEYS => {
                    let p = std::sync::Arc::new(Once::new());
                    places.insert(key.to_string(), p.clone());
                    Some(p)
                }
                None => None,
            }
        };
        match place {
            Some(p) => p.now_within(n),
            None => self.rest.now_within(n),
        }
    }
}

impl Default for PerKey {
    fn default() -> Self {
        PerKey::new()
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

    /// One key's flood leaves another key's first line said; keys past
    /// the bound share a place.
    #[test]
    fn each_key_is_said_on_its_own() {
        let per = PerKey::new();
        assert_eq!(per.now("a"), Some(0));
        assert_eq!(per.now("a"), None);
        assert_eq!(per.now("b"), Some(0));
        for k in 0..KEYS {
            let _ = per.now(&k.to_string());
        }
        assert_eq!(per.now("new"), None, "past the bound: the shared place");
        assert_eq!(per.places.lock().unwrap().len(), KEYS);
    }

    /// A place may say a few lines a second, then counts the rest.
    #[test]
    fn a_few_a_second_then_counted() {
        let once = Once::new();
        for _ in 0..3 {
            assert_eq!(once.now_within(3), Some(0));
        }
        for _ in 0..10 {
            assert_eq!(once.now_within(3), None);
        }
        std::thread::sleep(EVERY);
        assert_eq!(once.now_within(3), Some(10));
        assert_eq!(once.now_within(3), Some(0));
    }
}
