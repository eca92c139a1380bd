//! The hub's clock for what it shows: every second each player's rate,
//! every `history::EVERY` a history point per service and each TCP
//! player's RTT into `ferry_player_rtt_seconds`; and (`dark`) every
//! `DARK_EVERY` a look for players whose TLS channel's path stopped
//! answering.

use super::Shared;
use crate::{
    history::{self, Sample},
    metrics::Direction,
};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_secs(1);

/// How often TLS channels are looked at for a dead path: a player on one
/// is cut within about twice the heartbeat timeout and two of these
/// (`dark_path`; a system call per TLS player each time, ~1 µs).
const DARK_EVERY: Duration = Duration::from_secs(5);

pub(super) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_point = (history::EVERY.as_secs() / TICK.as_secs()).max(1);
    let mut last = tokio::time::Instant::now();
    // A first point at start, so a page opened early has a beginning.
    point(&shared);
    for n in 1u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        shared.players.tick(now.duration_since(last).as_secs_f64());
        last = now;
        if n % per_point == 0 {
            point(&shared);
            // A system call per TCP player: off the async workers.
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || rtts(&s)).await;
        }
    }
}

/// Looks for players on a dark channel every `DARK_EVERY` for as long as
/// the hub has players, its drain included (so not on the tracker, which
/// the drain waits for): until the hard stop, or the hub is gone.
pub(super) async fn dark(shared: std::sync::Weak<Shared>, hard_stop: CancellationToken) {
    let mut tick = tokio::time::interval(DARK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hard_stop.cancelled() => return,
        }
        let Some(s) = shared.upgrade() else { return };
        let (players, after) = (s.players.clone(), s.settings().timing.heartbeat_timeout);
        // Not the hub itself across the look: a hub stopping meanwhile
        // frees its sockets at once.
        drop(s);
        // Each cut player's own line says why.
        let _ = tokio::task::spawn_blocking(move || players.cut_dark(after)).await;
    }
}

/// A history point per configured service.
fn point(shared: &Shared) {
    let settings = shared.settings();
    let m = &shared.metrics;
    let samples = settings.services.iter().map(|s| Sample {
        service: s.name.clone(),
        players: m
            .traffic
            .players
            .get_or_create(&m.service(&s.name))
            .get()
            .max(0) as u64,
        up: m.traffic.bytes(&s.name, Direction::Up),
        down: m.traffic.bytes(&s.name, Direction::Down),
    });
    shared.history.record(history::unix_now(), samples);
}

/// Each TCP player's RTT, observed once per point (a player's figure is
/// weighted by how long it plays, not by how often the page is read).
fn rtts(shared: &Shared) {
    for p in shared.players.list() {
        if let Some(rtt) = p.rtt() {
            shared
                .metrics
                .player_rtt
                .get_or_create(&shared.metrics.service(p.service()))
                .observe(rtt.as_secs_f64());
        }
    }
}
