//! The ep's side of the numbers: its hub connection, its services' players
//! and traffic, and whether the services at home answer.

use super::{BytesLabel, Direction, Meter, ServiceLabel};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

pub struct EpMetrics {
    registry: Registry,
    pub hub_connected: Gauge,
    pub logins: Counter,
    pub players: Family<ServiceLabel, Gauge>,
    pub players_total: Family<ServiceLabel, Counter>,
    pub bytes: Family<BytesLabel, Counter>,
    pub local_dial_failures: Family<ServiceLabel, Counter>,
}

impl EpMetrics {
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let m = EpMetrics {
            registry: Registry::default(),
            hub_connected: Gauge::default(),
            logins: Counter::default(),
            players: Family::default(),
            players_total: Family::default(),
            bytes: Family::default(),
            local_dial_failures: Family::default(),
        };
        registry.register(
            "hub_connected",
            "Whether the control session to the hub is up (1) or not (0)",
            m.hub_connected.clone(),
        );
        registry.register(
            "hub_logins",
            "Successful logins to the hub",
            m.logins.clone(),
        );
        registry.register("players", "Players connected now", m.players.clone());
        registry.register("players", "Players served", m.players_total.clone());
        registry.register("bytes", "Bytes relayed", m.bytes.clone());
        registry.register(
            "local_dial_failures",
            "Players closed because the service at home did not answer",
            m.local_dial_failures.clone(),
        );
        for s in services {
            let l = ServiceLabel {
                service: s.to_string(),
            };
            let _ = m.players.get_or_create(&l);
            let _ = m.players_total.get_or_create(&l);
            let _ = m.local_dial_failures.get_or_create(&l);
            for direction in [Direction::Up, Direction::Down] {
                let _ = m.bytes.get_or_create(&BytesLabel {
                    service: s.to_string(),
                    direction: direction.as_str(),
                });
            }
        }
        EpMetrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn meter(&self, service: &str) -> Meter {
        let bytes = |direction: Direction| {
            self.bytes
                .get_or_create(&BytesLabel {
                    service: service.to_string(),
                    direction: direction.as_str(),
                })
                .clone()
        };
        Meter {
            up: bytes(Direction::Up),
            down: bytes(Direction::Down),
        }
    }
}
