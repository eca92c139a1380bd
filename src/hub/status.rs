//! The hub as its admin door shows it: metrics, and the status as JSON.

use super::Shared;
use crate::metrics::Direction;
use serde_json::{Value, json};

impl crate::admin::Source for Shared {
    fn hides_addresses(&self) -> bool {
        self.settings()
            .admin
            .as_ref()
            .is_some_and(|a| a.hide_addresses)
    }

    fn admin_token_hash(&self) -> Option<String> {
        self.settings().admin.as_ref()?.token_hash.clone()
    }

    fn role(&self) -> &'static str {
        "hub"
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn healthy(&self, service: Option<&str>) -> bool {
        let Some(name) = service else {
            return !self.shutdown.is_cancelled();
        };
        // Up while an ep serves it and home last answered (or has not been
        // tried yet), or, where a join wakes it (a TCP service, or
        // Bedrock's join over UDP), sleeps there or wakes: a failover that
        // took the address from every hub while the server slept would
        // leave nobody to wake it. Down at home with nothing to wake it,
        // no ep, or an unknown name: down.
        let settings = self.settings();
        let wakes = settings.services.iter().any(|s| {
            s.name == name
                && (s.kind.tcp()
                    || s.game.as_ref().map(|g| g.game) == Some(crate::config::game::Game::Bedrock))
        });
        self.service(name).is_some_and(|svc| {
            use crate::proto::HomeState::{Asleep, Up, Waking};
            match svc.home() {
                super::service::Home::Unknown | super::service::Home::Reported(Up) => true,
                super::service::Home::Reported(Asleep | Waking) => wakes,
                _ => false,
            }
        })
    }

    fn players(&self, limit: usize) -> Option<(usize, Value)> {
        let s = self.settings();
        let hide = s.admin.as_ref().is_some_and(|a| a.hide_addresses);
        let (total, rows) = super::players_view::rows(self, hide, limit);
        Some((total, Value::Array(rows)))
    }

    fn history(&self) -> Option<Value> {
        Some(self.history.json())
    }

    fn config(&self) -> Option<Value> {
        let tls = self.trust.loaded.get();
        let summary = crate::config::plan::Summary::of(&self.settings(), &tls.digest);
        serde_json::to_value(summary).ok()
    }

    fn status(&self) -> Value {
        let now = tokio::time::Instant::now();
        // A page shared with addresses hidden hides the eps' (homes') too.
        let hide = self
            .settings()
            .admin
            .as_ref()
            .is_some_and(|a| a.hide_addresses);
        let shown = |ip: std::net::IpAddr| match hide {
            true => crate::config::admin::shown_address((ip, 0).into(), true),
            false => ip.to_string(),
        };
        let eps: Vec<Value> = self
            .sessions
            .list()
            .into_iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "address": shown(e.ip),
                    "version": e.version,
                    "connected_for": format!("{}s", now.duration_since(e.since).as_secs()),
                    "connected_for_s": now.duration_since(e.since).as_secs(),
                    "transport": if e.over_quic { "quic" } else { "tls" },
                    "rtt": e.rtt.map(|r| format!("{:.1} ms", r.as_secs_f64() * 1e3)),
                    "rtt_ms": e.rtt.map(|r| r.as_secs_f64() * 1e3),
                })
            })
            .collect();
        let m = &self.metrics;
        let player_reasons = super::refusals::Reason::PLAYER.map(|r| r.as_str());
        let settings = self.settings();
        let services: Vec<Value> = settings
            .services
            .iter()
            .map(|s| {
                let label = m.service(&s.name);
                let bytes = |d: Direction| m.traffic.bytes(&s.name, d);
                json!({
                    "name": s.name,
                    "bind": s.bind.to_string(),
                    "type": s.kind.as_str(),
                    "served_by": self.service(&s.name).and_then(|svc| svc.served_by()),
                    // up, away (no ep), down, sleeping or waking.
                    "home": self.service(&s.name).map_or("away", |svc| svc.home().as_str()),
                    "game": s.game.as_ref().map(|g| g.game.to_string()),
                    "hosts": s.game.as_ref().map(|g| g.hosts.clone()).unwrap_or_default(),
                    // A TCP-only service has no flows: a dash, not a zero.
                    "udp_flows": self
                        .served(&s.name)
                        .and_then(|x| x.udp.as_ref().map(|u| json!(u.flows())))
                        .unwrap_or(json!("-")),
                    "players": m.traffic.players.get_or_create(&label).get(),
                    "players_total": m.traffic.players_total.get_or_create(&label).get(),
                    "bytes_up": bytes(Direction::Up),
                    "bytes_down": bytes(Direction::Down),
                    "refusals": m.player_refusals_of(&s.name, &player_reasons),
                    "pool_ready": m.pool_ready.get_or_create(&label).get(),
                })
            })
            .collect();
        json!({
            "role": "hub",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": now.duration_since(self.started).as_secs(),
            "eps": eps,
            "services": services,
            "refusals": self.refusals.totals(),
            "bans": super::bans::status(self),
            // The ban list this hub follows, to compare with where
            // `ferry hub ban` says it wrote.
            "bans_file": self.bans.path.display().to_string(),
        })
    }
}
