//! Players at once per service at home. The ep bounds the channels that
//! open or wait, but once a player starts, the hub alone would decide how
//! many sockets the ep opens (over QUIC a hub may open thousands of
//! streams); this is the ep's own limit (`max_players`), whatever the hub
//! asks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

#[derive(Default)]
pub(crate) struct Slots(
    Mutex<HashMap<String, usize>>,
    /// Players refused so far, so a hub that keeps asking cannot flood the
    /// log with one line each.
    std::sync::atomic::AtomicU64,
);

/// One player's place; given back when dropped.
pub(crate) struct Slot(Arc<Slots>, String);

impl Slots {
    /// A place on `service` if it has fewer than `max` players.
    pub fn take(self: &Arc<Self>, service: &str, max: usize) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(service.to_string()).or_default();
        if *n >= max {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), service.to_string()))
    }
}

impl Slots {
    /// Refusals so far; a refusal is worth a log line when this is a power
    /// of two (the 1st, 2nd, 4th, … 1024th).
    pub fn refused(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_holds_at_most_its_max_and_places_come_back() {
        let s = Arc::new(Slots::default());
        let a = s.take("game", 2).unwrap();
        let _b = s.take("game", 2).unwrap();
        assert!(s.take("game", 2).is_none());
        assert!(s.take("web", 2).is_some(), "per service");
        drop(a);
        assert!(s.take("game", 2).is_some());
    }
}
