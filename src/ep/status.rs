//! The ep as its admin door shows it: each hub's session, and per service
//! its players, traffic and whether the service at home answered the last
//! dial (the ep never dials just to check: a game would see a phantom).

use super::Ep;
use crate::config::ep::LocalService;
use crate::metrics::{Direction, ServiceLabel};
use crate::proto::HomeState;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};
use tokio::time::Instant;

struct Inner {
    started: Instant,
    /// Service → the last dial's outcome.
    dials: HashMap<String, Result<(), String>>,
}

pub(crate) struct State(Mutex<Inner>);

impl State {
    pub fn new() -> Self {
        State(Mutex::new(Inner {
            started: Instant::now(),
            dials: HashMap::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dialled(&self, service: &str, outcome: Result<(), String>) {
        self.lock().dials.insert(service.to_string(), outcome);
    }

    /// After a reload from `old` to `new`: the last dial of a service
    /// removed, moved or given another type is forgotten, so the page
    /// does not show the old address's failure beside the new address.
    pub fn configure(
        &self,
        old: &BTreeMap<String, LocalService>,
        new: &BTreeMap<String, LocalService>,
    ) {
        self.lock()
            .dials
            .retain(|name, _| match (old.get(name), new.get(name)) {
                (Some(was), Some(now)) => now.same_place(was),
                _ => false,
            });
    }
}

impl Ep {
    /// What each service counts now, for the history.
    pub(super) fn samples(&self) -> Vec<crate::history::Sample> {
        let m = &self.metrics;
        self.settings()
            .services
            .keys()
            .map(|name| crate::history::Sample {
                service: name.clone(),
                players: m
                    .traffic
                    .players
                    .get_or_create(&ServiceLabel {
                        service: name.clone(),
                    })
                    .get()
                    .max(0) as u64,
                up: m.traffic.bytes(name, Direction::Up),
                down: m.traffic.bytes(name, Direction::Down),
            })
            .collect()
    }
}

impl crate::admin::Source for Ep {
    fn history(&self) -> Option<Value> {
        Some(self.history.json())
    }

    fn admin_token_hash(&self) -> Option<String> {
        self.settings().admin.as_ref()?.token_hash.clone()
    }

    fn role(&self) -> &'static str {
        "ep"
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn status(&self) -> Value {
        let s = self.state.lock();
        let now = Instant::now();
        let m = &self.metrics;
        let services: Vec<Value> = self
            .settings()
            .services
            .iter()
            .map(|(name, local)| {
                let label = ServiceLabel {
                    service: name.clone(),
                };
                let bytes = |d: Direction| m.traffic.bytes(name, d);
                let reachable = match s.dials.get(name) {
                    None => "not dialled yet".to_string(),
                    Some(Ok(())) => "yes (last dial)".to_string(),
                    Some(Err(e)) => format!("no: {e}"),
                };
                json!({
                    "name": name,
                    "local": local.addr.to_string(),
                    "players": m.traffic.players.get_or_create(&label).get(),
                    "players_total": m.traffic.players_total.get_or_create(&label).get(),
                    "bytes_up": bytes(Direction::Up),
                    "bytes_down": bytes(Direction::Down),
                    "local_reachable": reachable,
                    // As told to the hub: up, down, asleep, waking, or
                    // "-" before any dial.
                    "home": self.homes.state_of(name).map_or("-", |h| match h {
                        HomeState::Up => "up",
                        HomeState::Down => "down",
                        HomeState::Asleep => "sleeping",
                        HomeState::Waking => "waking",
                        HomeState::Unknown => "-",
                    }),
                })
            })
            .collect();
        json!({
            "role": "ep",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": now.duration_since(s.started).as_secs(),
            "ep": self.tls.get().identity.clone(),
            "hub": self.hubs.iter().map(|h| h.row()).collect::<Vec<_>>(),
            "services": services,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: &str) -> LocalService {
        LocalService {
            addr: crate::config::ports::LocalRange::parse(addr).unwrap(),
            kind: None,
            proxy_protocol: None,
            proxy_protocol_udp: crate::config::ep::UdpHeaders::First,
            max_players: 1,
            wake: None,
        }
    }

    #[test]
    fn a_reload_forgets_the_last_dial_of_a_service_moved_or_removed() {
        let state = State::new();
        for name in ["kept", "moved", "removed"] {
            state.dialled(name, Err("Connection refused".into()));
        }
        let old = BTreeMap::from([
            ("kept".into(), at("127.0.0.1:1000")),
            ("moved".into(), at("127.0.0.1:2000")),
            ("removed".into(), at("127.0.0.1:3000")),
        ]);
        let mut kept = at("127.0.0.1:1000");
        kept.max_players = 7;
        let new = BTreeMap::from([
            ("kept".into(), kept),
            ("moved".into(), at("127.0.0.1:2001")),
        ]);
        state.configure(&old, &new);
        let mut left: Vec<_> = state.lock().dials.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["kept"]);
    }
}
