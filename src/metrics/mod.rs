//! What the tunnel is doing, as numbers: one `HubMetrics` owned by the hub
//! (and one `EpMetrics` by the ep), with counters labelled by bounded
//! values (service and ep names, reasons; never a player address),
//! updated where the event happens. The admin door only reads them.

pub mod ep;
pub mod udp;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// Player → home.
    Up,
    /// Home → player.
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabel {
    pub service: String,
    /// "up" (player → home) or "down".
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EpLabel {
    pub ep: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EpNameLabel {
    pub ep: String,
}

/// A gauge of seconds.
pub type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub door: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlayerRefusalLabel {
    pub service: String,
    pub reason: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Wrong,
    Busy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// "ok", "wrong" or "busy".
    pub outcome: &'static str,
}

impl Outcome {
    pub fn label(self) -> OutcomeLabel {
        OutcomeLabel {
            outcome: match self {
                Outcome::Ok => "ok",
                Outcome::Wrong => "wrong",
                Outcome::Busy => "busy",
            },
        }
    }
}

/// Seconds from 100 µs to ~210 s, doubling: a dial or a first byte that
/// waited for a game server to wake (20–90 s) lands in a bucket of its
/// own, not in `+Inf`.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 22)
}

fn new_latency() -> Histogram {
    Histogram::new(latency_buckets())
}

type LatencyFamily = Family<ServiceLabel, Histogram, fn() -> Histogram>;

/// Players and bytes per service: what hub and ep both count.
#[derive(Default)]
pub struct Traffic {
    pub players: Family<ServiceLabel, Gauge>,
    pub players_total: Family<ServiceLabel, Counter>,
    pub bytes: Family<BytesLabel, Counter>,
}

impl Traffic {
    fn register(&self, registry: &mut Registry, total_help: &str) {
        registry.register("players", "Players connected now", self.players.clone());
        registry.register("players", total_help, self.players_total.clone());
        registry.register("bytes", "Bytes relayed", self.bytes.clone());
    }

    /// Makes `service`'s series exist, at zero.
    fn init(&self, service: &str) {
        let l = ServiceLabel {
            service: service.to_string(),
        };
        let _ = self.players.get_or_create(&l);
        let _ = self.players_total.get_or_create(&l);
        for d in [Direction::Up, Direction::Down] {
            let _ = self.bytes.get_or_create(&bytes_label(service, d));
        }
    }

    /// Bytes of `service` one way so far.
    pub fn bytes(&self, service: &str, d: Direction) -> u64 {
        self.bytes.get_or_create(&bytes_label(service, d)).get()
    }

    /// The two byte counters of `service`, for a relay to add to.
    pub fn meter(&self, service: &str) -> Meter {
        let counter = |d| self.bytes.get_or_create(&bytes_label(service, d)).clone();
        Meter {
            up: counter(Direction::Up),
            down: counter(Direction::Down),
        }
    }
}

fn bytes_label(service: &str, d: Direction) -> BytesLabel {
    BytesLabel {
        service: service.to_string(),
        direction: d.as_str(),
    }
}

/// The Prometheus text format of `registry`.
fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    as_text_format(&out)
}

/// OpenMetrics text (what the encoder writes) as Prometheus' text format
/// 0.0.4 (what `/metrics` says it serves): a counter's HELP and TYPE name
/// its samples' name (`ferry_players_total`), not the family's
/// (`ferry_players`), which the gauge of the same service already has:
/// two TYPE lines for one name are an error to strict parsers (promtool,
/// Go's expfmt). No `# EOF`. The samples are the same.
fn as_text_format(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len() + 256);
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        let counter = line
            .strip_prefix("# TYPE ")
            .and_then(|t| t.strip_suffix(" counter"));
        match (counter, help.take()) {
            (Some(name), h) => {
                if let Some(h) = h {
                    let text = h.strip_prefix(&format!("# HELP {name} ")).unwrap_or("");
                    out.push_str(&format!("# HELP {name}_total {text}\n"));
                }
                out.push_str(&format!("# TYPE {name}_total counter\n"));
            }
            (None, h) => {
                if let Some(h) = h {
                    out.push_str(h);
                    out.push('\n');
                }
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if let Some(h) = help {
        out.push_str(h);
        out.push('\n');
    }
    out
}

pub struct HubMetrics {
    registry: Registry,
    pub ep_connected: Family<EpLabel, Gauge>,
    pub traffic: Traffic,
    pub refusals: Family<RefusalLabel, Counter>,
    pub player_refusals: Family<PlayerRefusalLabel, Counter>,
    pub pool_ready: Family<ServiceLabel, Gauge>,
    pub channel_handshake: Histogram,
    pub first_byte: LatencyFamily,
    /// The kernel's RTT of TCP players, sampled every `history::EVERY`.
    pub player_rtt: LatencyFamily,
    pub ep_rtt: Family<EpNameLabel, Seconds>,
    /// How long the ep's dial of the local service took, as it reports.
    pub local_dial: LatencyFamily,
    pub argon2: Family<OutcomeLabel, Counter>,
    pub udp: udp::UdpMetrics,
    pub enrolments: Counter,
}

impl HubMetrics {
    /// Metrics for a hub serving `services`; each service's series exist
    /// (at zero) before its first player.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let m = HubMetrics {
            ep_connected: Family::default(),
            traffic: Traffic::default(),
            refusals: Family::default(),
            player_refusals: Family::default(),
            pool_ready: Family::default(),
            channel_handshake: new_latency(),
            first_byte: Family::new_with_constructor(new_latency),
            player_rtt: Family::new_with_constructor(new_latency),
            ep_rtt: Family::default(),
            local_dial: Family::new_with_constructor(new_latency),
            argon2: Family::default(),
            udp: udp::UdpMetrics::default(),
            enrolments: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ep_connected",
            "Whether an ep is logged in (1) or not (0), with its version",
            m.ep_connected.clone(),
        );
        m.traffic.register(&mut registry, "Players admitted");
        registry.register(
            "refusals",
            "Connections refused, by door and reason",
            m.refusals.clone(),
        );
        registry.register(
            "player_refusals",
            "Players refused at a service's door, by reason",
            m.player_refusals.clone(),
        );
        registry.register(
            "pool_ready",
            "Ready channels in the pool",
            m.pool_ready.clone(),
        );
        registry.register(
            "channel_handshake_seconds",
            "From a channel's accept to its place in the pool",
            m.channel_handshake.clone(),
        );
        registry.register(
            "player_first_byte_seconds",
            "From a player's accept to the first byte from home",
            m.first_byte.clone(),
        );
        m.register_lag(&mut registry);
        registry.register(
            "argon2_checks",
            "Token checks, by outcome",
            m.argon2.clone(),
        );
        m.udp.register(&mut registry);
        registry.register(
            "enrolments",
            "Eps enrolled with an invite",
            m.enrolments.clone(),
        );
        for s in services {
            let service = ServiceLabel {
                service: s.to_string(),
            };
            m.traffic.init(s);
            let _ = m.udp.for_service(s);
            let _ = m.pool_ready.get_or_create(&service);
            let _ = m.first_byte.get_or_create(&service);
            let _ = m.player_rtt.get_or_create(&service);
            let _ = m.local_dial.get_or_create(&service);
        }
        for outcome in [Outcome::Ok, Outcome::Wrong, Outcome::Busy] {
            let _ = m.argon2.get_or_create(&outcome.label());
        }
        HubMetrics { registry, ..m }
    }

    /// Where players' lag comes from: the three latencies.
    fn register_lag(&self, registry: &mut Registry) {
        registry.register(
            "player_rtt_seconds",
            "The kernel's smoothed RTT of TCP players to the hub, sampled every 10 s",
            self.player_rtt.clone(),
        );
        registry.register(
            "ep_rtt_seconds",
            "Round trip between the hub and an ep (the ep's ping over TLS, else TCP's RTT; the path RTT over QUIC)",
            self.ep_rtt.clone(),
        );
        registry.register(
            "local_dial_seconds",
            "How long the ep took to dial the service at home for a player, as the ep reports",
            self.local_dial.clone(),
        );
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }

    pub fn service(&self, s: &str) -> ServiceLabel {
        ServiceLabel {
            service: s.to_string(),
        }
    }

    /// `service`'s per-player series, looked up once so that admitting
    /// and relaying a player costs no label lookups.
    pub fn for_service(&self, service: &str) -> ServiceMeters {
        let label = self.service(service);
        ServiceMeters {
            players: self.traffic.players.get_or_create(&label).clone(),
            admitted: self.traffic.players_total.get_or_create(&label).clone(),
            meter: self.traffic.meter(service),
            first_byte: self.first_byte.get_or_create(&label).clone(),
        }
    }

    /// Players refused at `service`'s door, all reasons.
    pub fn player_refusals_of(&self, service: &str, reasons: &[&'static str]) -> u64 {
        reasons
            .iter()
            .filter_map(|reason| {
                self.player_refusals
                    .get(&PlayerRefusalLabel {
                        service: service.to_string(),
                        reason,
                    })
                    .map(|c| c.get())
            })
            .sum()
    }
}

/// One service's per-player series.
#[derive(Clone)]
pub struct ServiceMeters {
    pub players: Gauge,
    pub admitted: Counter,
    pub meter: Meter,
    pub first_byte: Histogram,
}

impl Default for ServiceMeters {
    fn default() -> Self {
        ServiceMeters {
            players: Gauge::default(),
            admitted: Counter::default(),
            meter: Meter::default(),
            first_byte: new_latency(),
        }
    }
}

pub use crate::relay::Meter;

#[cfg(test)]
mod tests {
    /// A wait for a game server to wake (20–90 s) has a bucket below
    /// `+Inf`, so its p99 reads as a time.
    #[test]
    fn a_wake_s_wait_lands_in_a_bucket_of_its_own() {
        assert!(super::latency_buckets().any(|b| (90.0..300.0).contains(&b)));
    }

    /// Each name has one TYPE line, and each sample is of the family its
    /// name says (a counter's `_total`, a histogram's `_bucket`, `_sum`,
    /// `_count`): what strict parsers of the text format ask.
    #[test]
    fn the_text_has_one_type_per_name() {
        let m = super::HubMetrics::new(["mc"]);
        let label = m.service("mc");
        m.traffic.players.get_or_create(&label).inc();
        m.traffic.players_total.get_or_create(&label).inc();
        let text = m.encode();
        assert!(!text.contains("# EOF"), "{text}");
        let mut types = std::collections::HashMap::new();
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').unwrap();
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{name} twice:\n{text}"
            );
        }
        for sample in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = sample.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count", ""]
                .iter()
                .find_map(|s| types.get(name.strip_suffix(s)?));
            assert!(family.is_some(), "{name} has no TYPE:\n{text}");
        }
        assert_eq!(types["ferry_players"], "gauge");
        assert_eq!(types["ferry_players_total"], "counter");
    }
}
