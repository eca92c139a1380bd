//! Counting refusals by reason and logging them without drowning the
//! operator: the first refusal of each reason in a window is logged with its
//! address; the rest of the window is summed up in one line when the next
//! one arrives.

use crate::metrics::{PlayerRefusalLabel, RefusalLabel};
use prometheus_client::metrics::{counter::Counter, family::Family};
use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Mutex, MutexGuard},
    time::Duration,
};
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(10);

/// Why a door turned a connection away. Bounded, so it can label counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    NotAllowlisted,
    Penalised,
    TooManyPending,
    TooManyFromSource,
    TlsFailed,
    BadHello,
    LoginTimeout,
    /// Too many failed logins with one ep certificate.
    IdentityPenalised,
    WrongToken,
    /// A login with a good token the hub cannot serve (unknown or taken
    /// service, version).
    LoginRefused,
    Argon2Busy,
    ChannelFromStranger,
    TooManyChannelsPending,
    ChannelRefused,
    PlayerDenied,
    PlayerNotAllowed,
    ServiceFull,
    PlayerAddressFull,
    /// UDP flows from one IPv4 /24 or IPv6 /48.
    PlayerNetworkFull,
    PlayerRate,
    PlayerBanned,
    /// An address banned with `ferry hub ban` (not the automatic ban of
    /// a flood, `PlayerBanned`).
    Banned,
    HubFull,
    /// A game port's first packet: none within 5 s, too long, or not the
    /// game's.
    GameHandshake,
    /// Too many connections from one address still sending their first
    /// packet to a game port.
    GameHandshakesFromSource,
    /// Too many connections across the hub (or from one network) still
    /// sending their first packet.
    GameHandshakesPending,
    /// A Minecraft name no service on the port has (and no default).
    UnknownHost,
    /// An enrolment with no valid invite (or a wrong secret).
    EnrolRefused,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAllowlisted => "not in ep_allowlist",
            Reason::Penalised => "penalised address",
            Reason::TooManyPending => "too many logins pending",
            Reason::TooManyFromSource => "too many logins pending from one address",
            Reason::TlsFailed => "TLS handshake failed",
            Reason::BadHello => "bad hello",
            Reason::LoginTimeout => "login timeout",
            Reason::IdentityPenalised => "penalised ep certificate",
            Reason::WrongToken => "wrong token",
            Reason::LoginRefused => "login refused",
            Reason::Argon2Busy => "Argon2 busy",
            Reason::ChannelFromStranger => "channel from a stranger",
            Reason::TooManyChannelsPending => "too many channels pending",
            Reason::ChannelRefused => "channel refused",
            Reason::PlayerDenied => "player address denied",
            Reason::PlayerNotAllowed => "player address not allowed",
            Reason::ServiceFull => "service full",
            Reason::PlayerAddressFull => "too many players from one address",
            Reason::PlayerNetworkFull => "too many players from one network",
            Reason::PlayerRate => "player connection rate exceeded",
            Reason::PlayerBanned => "banned player address",
            Reason::Banned => "banned",
            Reason::HubFull => "hub player cap reached",
            Reason::GameHandshake => "no game handshake",
            Reason::GameHandshakesFromSource => "too many game handshakes from one address",
            Reason::GameHandshakesPending => "too many game handshakes pending",
            Reason::UnknownHost => "unknown server name",
            Reason::EnrolRefused => "enrolment refused",
        }
    }

    /// Reasons the player door gives.
    pub const PLAYER: [Reason; 13] = [
        Reason::PlayerDenied,
        Reason::PlayerNotAllowed,
        Reason::ServiceFull,
        Reason::PlayerAddressFull,
        Reason::PlayerNetworkFull,
        Reason::PlayerRate,
        Reason::PlayerBanned,
        Reason::Banned,
        Reason::HubFull,
        Reason::GameHandshake,
        Reason::GameHandshakesFromSource,
        Reason::GameHandshakesPending,
        Reason::UnknownHost,
    ];

    /// The door that refused: a label for the refusal counters.
    pub fn door(self) -> &'static str {
        match self {
            Reason::NotAllowlisted
            | Reason::Penalised
            | Reason::TooManyPending
            | Reason::TooManyFromSource
            | Reason::TlsFailed
            | Reason::BadHello
            | Reason::LoginTimeout
            | Reason::IdentityPenalised
            | Reason::WrongToken
            | Reason::LoginRefused
            | Reason::Argon2Busy => "control",
            Reason::ChannelFromStranger
            | Reason::TooManyChannelsPending
            | Reason::ChannelRefused => "channel",
            Reason::PlayerDenied
            | Reason::PlayerNotAllowed
            | Reason::ServiceFull
            | Reason::PlayerAddressFull
            | Reason::PlayerNetworkFull
            | Reason::PlayerRate
            | Reason::PlayerBanned
            | Reason::Banned
            | Reason::HubFull
            | Reason::GameHandshake
            | Reason::GameHandshakesFromSource
            | Reason::GameHandshakesPending
            | Reason::UnknownHost => "player",
            Reason::EnrolRefused => "enrol",
        }
    }

    /// Before-TLS drops that scanners cause all day log at debug; the
    /// others at warn.
    fn quiet(self) -> bool {
        matches!(self, Reason::NotAllowlisted | Reason::Penalised)
    }
}

#[derive(Default)]
struct Count {
    total: u64,
    window_start: Option<Instant>,
    suppressed: u64,
}

pub(crate) struct Refusals {
    counts: Mutex<BTreeMap<Reason, Count>>,
    metrics: Family<RefusalLabel, Counter>,
    /// Player-door refusals by service and reason.
    players: Family<PlayerRefusalLabel, Counter>,
}

impl Refusals {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Reason, Count>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn new(
        metrics: Family<RefusalLabel, Counter>,
        players: Family<PlayerRefusalLabel, Counter>,
    ) -> Self {
        Refusals {
            counts: Mutex::default(),
            metrics,
            players,
        }
    }

    /// A player refused at `service`'s door.
    pub fn record_player(&self, service: &str, reason: Reason, ip: IpAddr, detail: &str) {
        self.players
            .get_or_create(&PlayerRefusalLabel {
                service: service.to_string(),
                reason: reason.as_str(),
            })
            .inc();
        self.record(reason, ip, detail);
    }

    /// Counts one refusal and logs it if the window allows.
    pub fn record(&self, reason: Reason, ip: IpAddr, detail: &str) {
        self.metrics
            .get_or_create(&RefusalLabel {
                door: reason.door(),
                reason: reason.as_str(),
            })
            .inc();
        let now = Instant::now();
        let mut counts = self.lock();
        let k = counts.entry(reason).or_default();
        k.total += 1;
        let fresh = k
            .window_start
            .is_none_or(|s| now.duration_since(s) >= WINDOW);
        if !fresh {
            k.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut k.suppressed);
        k.window_start = Some(now);
        drop(counts);
        let more = if suppressed > 0 {
            format!(" (and {suppressed} more of this kind in the previous window)")
        } else {
            String::new()
        };
        let kind = reason.as_str();
        // The detail may quote what a stranger sent (a junk hello): no
        // line breaks or escapes of theirs reach the log.
        let detail = crate::proto::shown(detail);
        if reason.quiet() {
            tracing::debug!(%ip, "refused: {kind}: {detail}{more}");
        } else {
            tracing::warn!(%ip, "refused: {kind}: {detail}{more}");
        }
    }

    /// Totals per reason since start.
    pub fn totals(&self) -> BTreeMap<&'static str, u64> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.as_str(), v.total))
            .collect()
    }
}
