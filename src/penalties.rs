//! Growing penalties for whoever failed: an address that sent junk, an
//! ep identity (a valid certificate) whose login was refused, or (on the
//! admin door) the source of a wrong admin token.
//!
//! The penalty doubles per strike up to a cap, strikes decay after a quiet
//! spell, and memory is bounded: beyond `MAX_ENTRIES` new offenders are not
//! recorded (the pending caps still bound them).

use std::{collections::HashMap, hash::Hash, time::Duration};
use tokio::time::Instant;

const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
pub struct PenaltyRange {
    pub base: Duration,
    pub max: Duration,
}

struct Entry {
    strikes: u32,
    until: Instant,
    /// Failures counted while penalised, since the penalty began.
    tries: u32,
}

pub(crate) struct Penalties<K> {
    range: PenaltyRange,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Penalties<K> {
    pub fn new(range: PenaltyRange) -> Self {
        Penalties {
            range,
            entries: HashMap::new(),
        }
    }

    /// Time left on `key`'s penalty, if it is penalised now.
    pub fn remaining(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        self.entries
            .get(key)
            .filter(|e| e.until > now)
            .map(|e| e.until - now)
    }

    /// Records a failure of `key`: the penalty doubles with each strike.
    pub fn strike(&mut self, key: &K) {
        let now = Instant::now();
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(key) {
            let quiet = self.range.max;
            self.entries.retain(|_, e| e.until + quiet > now);
            if self.entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        let e = self.entries.entry(key.clone()).or_insert(Entry {
            strikes: 0,
            until: now,
            tries: 0,
        });
        // Strikes decay: quiet for the maximum penalty, start over.
        if e.until + self.range.max < now {
            e.strikes = 0;
        }
        // A new penalty, not a longer one: its tries start over.
        if e.until <= now {
            e.tries = 0;
        }
        e.strikes = e.strikes.saturating_add(1);
        let factor = 1u32 << (e.strikes - 1).min(16);
        e.until = now + (self.range.base * factor).min(self.range.max);
    }

    /// Whether `key` failed `budget` times during its penalty now.
    pub fn spent(&self, key: &K, budget: u32) -> bool {
        let now = Instant::now();
        self.entries
            .get(key)
            .is_some_and(|e| e.until > now && e.tries >= budget)
    }

    /// A failure of `key` during its penalty: counted, not a strike (a
    /// person retrying early must not lengthen their own wait).
    pub fn missed(&mut self, key: &K) {
        let now = Instant::now();
        if let Some(e) = self.entries.get_mut(key).filter(|e| e.until > now) {
            e.tries = e.tries.saturating_add(1);
        }
    }

    pub fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doubles_to_the_cap_and_clears() {
        let mut p = Penalties::new(PenaltyRange {
            base: Duration::from_secs(2),
            max: Duration::from_secs(5),
        });
        assert!(p.remaining(&"a").is_none());
        p.strike(&"a");
        assert!(p.remaining(&"a").unwrap() <= Duration::from_secs(2));
        p.strike(&"a");
        p.strike(&"a");
        assert!(p.remaining(&"a").unwrap() > Duration::from_secs(4));
        p.clear(&"a");
        assert!(p.remaining(&"a").is_none());
    }
}
