//! Players at once per service at home. The ep bounds the channels that
//! open or wait, but once a player starts, the hub alone would decide how
//! many sockets the ep opens (over QUIC a hub may open thousands of
//! streams); this is the ep's own limit (`max_players`), whatever the hub
//! asks.

use crate::sources::{Counted, Counts};
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

#[derive(Default)]
pub(crate) struct Slots {
    by_service: Arc<Counts<String>>,
    /// Players refused so far, so a hub that keeps asking cannot flood the
    /// log with one line each.
    refused: AtomicU64,
}

impl Slots {
    /// A place on `service` if it has fewer than `max` players.
    pub fn take(&self, service: &str, max: usize) -> Option<Counted<String>> {
        let slot = self.by_service.enter(service.to_string(), max);
        if slot.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        slot
    }

    /// Refusals so far; a refusal is worth a log line when this is a power
    /// of two (the 1st, 2nd, 4th, … 1024th).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_holds_at_most_its_max_and_places_come_back() {
        let s = Slots::default();
        let a = s.take("game", 2).unwrap();
        let _b = s.take("game", 2).unwrap();
        assert!(s.take("game", 2).is_none());
        assert!(s.take("web", 2).is_some(), "per service");
        drop(a);
        assert!(s.take("game", 2).is_some());
        assert_eq!(s.refused(), 1);
    }
}
