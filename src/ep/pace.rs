//! The caps a hub told the ep (feature `pace`), by service. A player the
//! hub caps (`Start.pace`) is sent home → hub no faster than the hub
//! reads it, so what waits, waits at home, where it costs nothing, not in
//! the uplink's queue ahead of every other player's packets.

use crate::{
    proto::Rates,
    rate::{Caps, RelayLimits},
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

#[derive(Default)]
pub(super) struct Pace(Mutex<BTreeMap<String, Arc<Caps>>>);

impl Pace {
    /// The hub's word on its caps, applied in place, so players already
    /// paced follow it. Only services the ep `serves` are kept (a hub
    /// naming others grows nothing); one not named is uncapped, and kept
    /// while served, so its players follow when a cap comes back.
    pub fn set(&self, told: BTreeMap<String, Rates>, serves: impl Fn(&str) -> bool) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|name, caps| {
            if !told.contains_key(name) {
                caps.set(0, 0);
            }
            serves(name)
        });
        for (name, r) in told {
            if !serves(&name) {
                continue;
            }
            match known.get(&name) {
                Some(caps) => caps.set(r.max_rate, r.max_rate_per_player),
                None => {
                    known.insert(name, Caps::new(r.max_rate, r.max_rate_per_player));
                }
            }
        }
    }

    /// A paced player's limits, for a service the ep serves, by the caps
    /// the hub last told, or those its `Start` carried (`began`) while it
    /// has told none: a player's stream can overtake the session's first
    /// `Pace`. Which of a `Start` and a `Pace` is newer cannot be told
    /// (they come on different connections); the `Pace` is kept, and the
    /// next one after a change sets every player of the service right.
    pub fn limits(&self, service: &str, began: Rates) -> Box<RelayLimits> {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known
            .entry(service.to_string())
            .or_insert_with(|| Caps::new(began.max_rate, began.max_rate_per_player))
            .pacing_limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_player(n: u64) -> Rates {
        Rates {
            max_rate: 0,
            max_rate_per_player: n,
        }
    }

    fn told(services: &[(&str, u64)]) -> BTreeMap<String, Rates> {
        services
            .iter()
            .map(|(s, n)| (s.to_string(), per_player(*n)))
            .collect()
    }

    #[tokio::test]
    async fn players_paced_follow_the_hub_and_names_the_ep_lacks_grow_nothing() {
        let pace = Pace::default();
        let serves = |name: &str| name == "game";
        let player = pace.limits("game", per_player(100_000));
        pace.set(told(&[("game", 50_000), ("not-here", 1_000)]), serves);
        assert_eq!(player.rates(), Some(per_player(50_000)));
        assert_eq!(pace.0.lock().unwrap().len(), 1);
        pace.set(told(&[]), serves);
        assert_eq!(
            player.rates(),
            Some(per_player(0)),
            "a service no longer named is no longer capped"
        );
        pace.set(told(&[("game", 70_000)]), serves);
        assert_eq!(
            player.rates(),
            Some(per_player(70_000)),
            "and its players follow a cap that comes back"
        );
        pace.set(told(&[("game", 70_000)]), |_| false);
        assert!(
            pace.0.lock().unwrap().is_empty(),
            "a service no longer served"
        );
    }

    #[tokio::test]
    async fn a_start_does_not_undo_the_pace_before_it() {
        let pace = Pace::default();
        pace.set(told(&[("game", 50_000)]), |_| true);
        let player = pace.limits("game", per_player(100_000));
        assert_eq!(player.rates(), Some(per_player(50_000)));
    }
}
