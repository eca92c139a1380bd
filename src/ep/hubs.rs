//! Each hub the ep serves, as the rest of the ep sees it: whether its
//! session is up and over what, its round trip, the players carried for
//! it, and what is known of its QUIC door. One per `[[hubs]]` entry (or
//! the one top-level hub), made at start; sessions to different hubs share
//! nothing else, so one hub that refuses or vanishes never holds up another.

use crate::metrics::ep::{EpMetrics, HubLabel};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use std::{
    sync::{Mutex, MutexGuard, atomic::AtomicU64},
    time::Duration,
};
use tokio::{
    sync::{Notify, Semaphore},
    time::Instant,
};

/// Channels one hub may have the ep opening or waiting at once. The hub
/// asks for a few per service; this bound keeps a misbehaving hub from
/// making the ep open connections without end, and being per hub, one
/// hub that parks channels and never sends players cannot use up the
/// places another hub's players need.
const MAX_WAITING_CHANNELS: usize = 1024;

/// What the ep knows of one hub's QUIC door.
#[derive(Default)]
pub(super) struct QuicState {
    /// One UDP socket per hub for the ep's life; rebinding it is a migration.
    pub endpoint: Option<quinn::Endpoint>,
    /// The endpoint's socket and its connections' send rates, for sizing
    /// its send buffer.
    pub queue: Option<super::send_queue::Shared>,
    /// The port the hub's welcome named.
    pub port: Option<u16>,
    pub failed: Option<Instant>,
}

/// The session to one hub as the status page shows it.
struct Shown {
    /// "connecting", "connected" or why not.
    state: String,
    /// "tls" or "quic", while connected.
    transport: &'static str,
    since: Instant,
    rtt: Option<Duration>,
}

pub(crate) struct HubLink {
    /// Its place in `EpSettings::hubs` (a reload never reorders them).
    pub index: usize,
    /// Its control address as written: its name everywhere.
    pub name: String,
    quic: Mutex<QuicState>,
    /// A reload changed the ep's identity: this session logs in again.
    pub relogin: Notify,
    /// A reload changed the token or the TLS files: a backoff ends now.
    pub retry_now: Notify,
    /// Channels opening or waiting for a player (`MAX_WAITING_CHANNELS`).
    pub waiting: std::sync::Arc<Semaphore>,
    /// Channels asked for that the ep refused, for a log line that a hub
    /// asking without end cannot turn into a flood.
    odd_asks: std::sync::atomic::AtomicU64,
    /// Its lists of the services it takes from this ep, logged at most
    /// once a second (a hub looping them cannot flood the log, nor hide
    /// another hub's).
    pub services_said: crate::log_rate::Once,
    shown: Mutex<Shown>,
    connected: Gauge,
    logins: Counter,
    players: Gauge,
    rtt: Gauge<f64, AtomicU64>,
    /// Its services' caps, as it last told them (feature `pace`).
    pub pace: super::pace::Pace,
}

/// A player or flow carried for a hub; counted until dropped.
pub(super) struct Carrying(Gauge);

impl Drop for Carrying {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HubLink {
    pub fn new(index: usize, name: &str, m: &EpMetrics) -> Self {
        let l = HubLabel {
            hub: name.to_string(),
        };
        HubLink {
            index,
            name: name.to_string(),
            quic: Mutex::default(),
            relogin: Notify::new(),
            retry_now: Notify::new(),
            waiting: std::sync::Arc::new(Semaphore::new(MAX_WAITING_CHANNELS)),
            odd_asks: Default::default(),
            services_said: crate::log_rate::Once::new(),
            shown: Mutex::new(Shown {
                state: "connecting".into(),
                transport: "-",
                since: Instant::now(),
                rtt: None,
            }),
            connected: m.hub_connected.get_or_create(&l).clone(),
            logins: m.logins.get_or_create(&l).clone(),
            players: m.hub_players.get_or_create(&l).clone(),
            rtt: m.hub_rtt.get_or_create(&l).clone(),
            pace: Default::default(),
        }
    }

    pub fn quic_lock(&self) -> MutexGuard<'_, QuicState> {
        lock(&self.quic)
    }

    pub fn connected(&self, quic: bool) {
        let mut s = lock(&self.shown);
        s.state = "connected".into();
        s.transport = if quic { "quic" } else { "tls" };
        s.since = Instant::now();
        s.rtt = None;
        self.connected.set(1);
        self.logins.inc();
        self.rtt.set(0.0);
    }

    pub fn disconnected(&self, why: &str) {
        let mut s = lock(&self.shown);
        s.state = format!("reconnecting ({why})");
        s.transport = "-";
        s.since = Instant::now();
        s.rtt = None;
        self.connected.set(0);
        self.rtt.set(0.0);
    }

    pub fn set_rtt(&self, rtt: Duration) {
        lock(&self.shown).rtt = Some(rtt);
        self.rtt.set(rtt.as_secs_f64());
    }

    /// Counts a refused ask; the count when it is worth a log line (the
    /// 1st, 2nd, 4th, 8th, ...).
    pub fn odd_ask(&self) -> Option<u64> {
        let n = self
            .odd_asks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        n.is_power_of_two().then_some(n)
    }

    pub fn clear_rtt(&self) {
        lock(&self.shown).rtt = None;
        self.rtt.set(0.0);
    }

    /// Counts a player or flow for this hub while the guard lives.
    pub fn carrying(&self) -> Carrying {
        self.players.inc();
        Carrying(self.players.clone())
    }

    /// The status page's row for this hub.
    pub fn row(&self) -> serde_json::Value {
        let s = lock(&self.shown);
        let rtt = match s.rtt {
            Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
            None => "-".into(),
        };
        serde_json::json!({
            "hub": self.name,
            "state": s.state,
            "transport": s.transport,
            "rtt": rtt,
            "rtt_ms": s.rtt.map(|d| d.as_secs_f64() * 1e3),
            "players": self.players.get(),
            "since": format!("{}s ago", s.since.elapsed().as_secs()),
        })
    }
}
