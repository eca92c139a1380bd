//! The last hour of a role's traffic, per service, in memory: a ring of
//! 10-second points (players, bytes/s each way), so a status page opened
//! now shows what happened before it was opened (`/api/history`).
//!
//! Bounded: `POINTS` points of 24 bytes per service, about 8.4 KiB per
//! service for the hour; a service no longer configured is forgotten.

use serde::Serialize;
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

/// One point per this long.
pub const EVERY: Duration = Duration::from_secs(10);
/// An hour of points.
pub const POINTS: usize = 360;

/// A service at one moment: players, and bytes/s each way over the
/// interval before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub t: u64,
    pub players: u32,
    pub up: u32,
    pub down: u32,
}

/// What the role counts now for one service: players, and byte totals
/// since start each way.
pub struct Sample {
    pub service: String,
    pub players: u64,
    pub up: u64,
    pub down: u64,
}

#[derive(Default)]
struct Series {
    points: VecDeque<Point>,
    /// The totals at the last point, and when by the monotonic clock: a
    /// rate divides by time that passed, whatever the wall clock did.
    last: Option<(std::time::Instant, u64, u64)>,
}

#[derive(Default)]
pub struct History {
    services: Mutex<BTreeMap<String, Series>>,
}

impl History {
    /// Adds a point per sampled service at `t` (Unix seconds); services
    /// not sampled are forgotten.
    pub fn record(&self, t: u64, samples: impl IntoIterator<Item = Sample>) {
        self.record_at(std::time::Instant::now(), t, samples);
    }

    /// `record` with the monotonic time of the sample given.
    fn record_at(&self, at: std::time::Instant, t: u64, samples: impl IntoIterator<Item = Sample>) {
        let mut all = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = BTreeMap::new();
        for s in samples {
            let mut series = all.remove(&s.service).unwrap_or_default();
            // The wall clock stepped back (points out of order would draw
            // nonsense): the points from then on are dropped, not the hour.
            series.points.retain(|p| p.t < t);
            let rate = |now: u64, then: u64, ms: u128| {
                let per_s = u128::from(now.saturating_sub(then)) * 1000 / ms.max(1);
                u32::try_from(per_s).unwrap_or(u32::MAX)
            };
            let (up, down) = match series.last {
                Some((at0, up0, down0)) => {
                    let ms = at.saturating_duration_since(at0).as_millis();
                    (rate(s.up, up0, ms), rate(s.down, down0, ms))
                }
                None => (0, 0),
            };
            series.last = Some((at, s.up, s.down));
            if series.points.capacity() == 0 {
                // Exactly the hour, not the next power of two.
                series.points.reserve_exact(POINTS);
            }
            if series.points.len() == POINTS {
                series.points.pop_front();
            }
            series.points.push_back(Point {
                t,
                players: u32::try_from(s.players).unwrap_or(u32::MAX),
                up,
                down,
            });
            kept.insert(s.service, series);
        }
        *all = kept;
    }

    /// `{"every_s": 10, "now": UNIX_S, "services": {"NAME": [{t, players, up, down}…]}}`.
    pub fn json(&self) -> serde_json::Value {
        let all = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let services: serde_json::Map<String, serde_json::Value> = all
            .iter()
            .map(|(name, s)| (name.clone(), serde_json::json!(s.points)))
            .collect();
        serde_json::json!({ "every_s": EVERY.as_secs(), "now": unix_now(), "services": services })
    }
}

/// Records a point now and every `EVERY` until `stop`, from `sample`.
pub async fn keep(
    history: &History,
    stop: &tokio_util::sync::CancellationToken,
    sample: impl Fn() -> Vec<Sample>,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        history.record(unix_now(), sample());
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(service: &str, players: u64, up: u64, down: u64) -> Sample {
        Sample {
            service: service.to_string(),
            players,
            up,
            down,
        }
    }

    /// `record_at` `secs` after `base` by the monotonic clock.
    fn at(base: std::time::Instant, secs: u64) -> std::time::Instant {
        base + std::time::Duration::from_secs(secs)
    }

    #[test]
    fn rates_come_from_totals_and_the_ring_keeps_an_hour() {
        let h = History::default();
        let base = std::time::Instant::now();
        h.record_at(at(base, 0), 100, [sample("a", 1, 0, 0)]);
        h.record_at(at(base, 10), 110, [sample("a", 2, 1000, 5000)]);
        let v = h.json();
        let a = &v["services"]["a"];
        assert_eq!(a[1]["up"], 100);
        assert_eq!(a[1]["down"], 500);
        assert_eq!(a[1]["players"], 2);
        for i in 0..(POINTS as u64 + 50) {
            h.record_at(
                at(base, 20 + i * 10),
                120 + i * 10,
                [sample("a", 0, 1000, 5000), sample("b", 0, 0, 0)],
            );
        }
        let v = h.json();
        assert_eq!(v["services"]["a"].as_array().unwrap().len(), POINTS);
        // A service gone from the configuration is forgotten.
        h.record(100_000, [sample("b", 0, 0, 0)]);
        assert!(h.json()["services"].get("a").is_none());
    }

    /// The wall clock stepping (NTP at boot, a person setting it) moves
    /// the points' times, not the rates: a step back drops only the points
    /// it would put out of order, a step forward spreads nothing thin.
    /// Before, a step back of a second wiped the service's hour, and a step
    /// forward showed the next point's bytes as a rate near zero.
    #[test]
    fn a_wall_clock_step_keeps_the_hour_and_the_rates() {
        let h = History::default();
        let base = std::time::Instant::now();
        for i in 0..10 {
            h.record_at(
                at(base, i * 10),
                1_000 + i * 10,
                [sample("a", 1, i * 10_000, 0)],
            );
        }
        // Back 35 s: the points at 1,060 and later would be out of order.
        h.record_at(at(base, 100), 1_055, [sample("a", 1, 100_000, 0)]);
        let v = h.json();
        let a = v["services"]["a"].as_array().unwrap();
        let times: Vec<u64> = a.iter().map(|p| p["t"].as_u64().unwrap()).collect();
        assert_eq!(times, [1_000, 1_010, 1_020, 1_030, 1_040, 1_050, 1_055]);
        assert_eq!(a.last().unwrap()["up"], 1_000, "10,000 bytes in 10 s");
        // Forward an hour: the rate is still of the 10 s that passed.
        h.record_at(at(base, 110), 4_655, [sample("a", 1, 110_000, 0)]);
        let v = h.json();
        let last = v["services"]["a"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(
            (last["t"].as_u64(), last["up"].as_u64()),
            (Some(4_655), Some(1_000))
        );
    }
}
