//! The ep's side of the numbers: its hub connection, its services' players
//! and traffic, and whether the services at home answer.

use super::{ServiceLabel, Traffic};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

pub struct EpMetrics {
    registry: Registry,
    pub hub_connected: Gauge,
    pub logins: Counter,
    pub traffic: Traffic,
    pub local_dial_failures: Family<ServiceLabel, Counter>,
}

impl EpMetrics {
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let m = EpMetrics {
            registry: Registry::default(),
            hub_connected: Gauge::default(),
            logins: Counter::default(),
            traffic: Traffic::default(),
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
        m.traffic.register(&mut registry, "Players served");
        registry.register(
            "local_dial_failures",
            "Players closed because the service at home did not answer",
            m.local_dial_failures.clone(),
        );
        for s in services {
            let l = ServiceLabel {
                service: s.to_string(),
            };
            m.traffic.init(s);
            let _ = m.local_dial_failures.get_or_create(&l);
        }
        EpMetrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        super::encode(&self.registry)
    }
}
