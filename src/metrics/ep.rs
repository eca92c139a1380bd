//! The ep's side of the numbers: each hub connection, its services'
//! players and traffic, and whether the services at home answer.

use super::{ServiceLabel, Traffic};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

/// A hub as ep.toml names it (its control address): a handful per ep.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HubLabel {
    pub hub: String,
}

pub struct EpMetrics {
    registry: Registry,
    pub hub_connected: Family<HubLabel, Gauge>,
    pub logins: Family<HubLabel, Counter>,
    /// Players and UDP flows carried for each hub now.
    pub hub_players: Family<HubLabel, Gauge>,
    pub hub_rtt: Family<HubLabel, Gauge<f64, AtomicU64>>,
    pub traffic: Traffic,
    pub local_dial_failures: Family<ServiceLabel, Counter>,
    pub local_dial: super::LatencyFamily,
}

impl EpMetrics {
    pub fn new<'a>(
        hubs: impl IntoIterator<Item = &'a str>,
        services: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let m = EpMetrics {
            registry: Registry::default(),
            hub_connected: Family::default(),
            logins: Family::default(),
            hub_players: Family::default(),
            hub_rtt: Family::default(),
            traffic: Traffic::default(),
            local_dial_failures: Family::default(),
            local_dial: Family::new_with_constructor(super::new_latency),
        };
        registry.register(
            "hub_connected",
            "Whether the control session to each hub is up (1) or not (0)",
            m.hub_connected.clone(),
        );
        registry.register(
            "hub_logins",
            "Successful logins to each hub",
            m.logins.clone(),
        );
        registry.register(
            "hub_players",
            "Players and UDP flows carried for each hub now",
            m.hub_players.clone(),
        );
        registry.register(
            "hub_rtt_seconds",
            "Round trip to each hub: the QUIC path's, or a ping on the TLS control session (0 while unknown)",
            m.hub_rtt.clone(),
        );
        for h in hubs {
            let l = HubLabel { hub: h.to_string() };
            let _ = m.hub_connected.get_or_create(&l);
            let _ = m.logins.get_or_create(&l);
            let _ = m.hub_players.get_or_create(&l);
            let _ = m.hub_rtt.get_or_create(&l);
        }
        m.traffic.register(&mut registry, "Players served");
        registry.register(
            "local_dial_failures",
            "Players closed because the service at home did not answer",
            m.local_dial_failures.clone(),
        );
        registry.register(
            "local_dial_seconds",
            "How long dialling the service at home took for a player (a wake included)",
            m.local_dial.clone(),
        );
        for s in services {
            let l = ServiceLabel {
                service: s.to_string(),
            };
            m.traffic.init(s);
            let _ = m.local_dial_failures.get_or_create(&l);
            let _ = m.local_dial.get_or_create(&l);
        }
        EpMetrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        super::encode(&self.registry)
    }
}
