//! The hub's clock for what it shows: every second each player's rate,
//! every `history::EVERY` a history point per service and each TCP
//! player's RTT into `ferry_player_rtt_seconds`.

use super::Shared;
use crate::{
    history::{self, Sample},
    metrics::Direction,
};
use std::{sync::Arc, time::Duration};

const TICK: Duration = Duration::from_secs(1);

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
