//! UDP flows and the datagrams they drop, per service.

use super::ServiceLabel;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    pub service: String,
    /// "queue_full" (a flow's path was behind; the oldest went), "refused"
    /// (from a source the door turned away), "evicted" (its unanswered
    /// flow made room for a newer one), "over_rate" (beyond the service's
    /// `max_rate` or the flow's `max_rate_per_player`, either way).
    pub reason: &'static str,
}

pub const DROP_REASONS: [&str; 4] = ["queue_full", "refused", "evicted", "over_rate"];

#[derive(Default)]
pub struct UdpMetrics {
    pub flows: Family<ServiceLabel, Gauge>,
    pub flows_total: Family<ServiceLabel, Counter>,
    pub dropped: Family<DropLabel, Counter>,
}

impl UdpMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("udp_flows", "UDP flows now", self.flows.clone());
        registry.register("udp_flows", "UDP flows started", self.flows_total.clone());
        registry.register(
            "udp_dropped_datagrams",
            "Datagrams dropped, by reason",
            self.dropped.clone(),
        );
    }

    /// `service`'s series, looked up once.
    pub fn for_service(&self, service: &str) -> UdpMeters {
        let label = ServiceLabel {
            service: service.to_string(),
        };
        let drop = |reason| {
            self.dropped
                .get_or_create(&DropLabel {
                    service: service.to_string(),
                    reason,
                })
                .clone()
        };
        UdpMeters {
            flows: self.flows.get_or_create(&label).clone(),
            started: self.flows_total.get_or_create(&label).clone(),
            queue_full: drop(DROP_REASONS[0]),
            refused: drop(DROP_REASONS[1]),
            evicted: drop(DROP_REASONS[2]),
            over_rate: drop(DROP_REASONS[3]),
        }
    }
}

/// One service's UDP series.
#[derive(Clone, Default)]
pub struct UdpMeters {
    pub flows: Gauge,
    pub started: Counter,
    pub queue_full: Counter,
    pub refused: Counter,
    pub evicted: Counter,
    pub over_rate: Counter,
}
