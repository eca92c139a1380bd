//! The player door's limits, checked in the accept path before a channel
//! is taken: a refused player costs the ep nothing (no channel, no dial at
//! home) and the hub one accept and a reset.
//!
//! Per service: allow/deny lists, players at once, players at once per
//! address, a rate of new connections per address, and a ban for an
//! address that keeps exceeding its rate. Hub-wide: players at once across
//! services, so a flood on one port cannot take the file descriptors the
//! control and channel doors need. IPv6 addresses count per /64, the block
//! one home or one cloud machine usually holds.

use super::refusals::Reason;
use crate::config::players::PlayerLimits;
use crate::metrics::ServiceMeters;
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};
use tokio::time::Instant;

/// Addresses tracked per service; beyond this, the oldest idle ones go.
const MAX_TRACKED: usize = 65_536;

/// Players at once across the hub.
pub(crate) struct HubCap {
    max: usize,
    now: AtomicUsize,
}

impl HubCap {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(HubCap {
            max,
            now: AtomicUsize::new(0),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub(super) fn enter(&self) -> bool {
        self.now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(super) fn leave(&self) {
        self.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address a player counts as: itself, or its /64 for IPv6 (the same
/// key the enrol and admin doors count strangers by).
pub(super) fn key(ip: IpAddr) -> IpAddr {
    crate::sources::source_key(ip)
}

struct Source {
    players: usize,
    /// Token bucket of new connections.
    tokens: f64,
    refilled: Instant,
    /// Rate refusals in the current window, the evidence for a ban.
    over: u32,
    window: Instant,
    banned_until: Option<Instant>,
}

impl Source {
    /// Whether this address may open a connection now: not banned, and a
    /// token of its rate left (none taken). Twice its allowance in one
    /// window bans it: a flood, not a reconnect.
    fn may_connect(&mut self, l: &PlayerLimits, key: IpAddr, now: Instant) -> Result<(), Reason> {
        if let Some(until) = self.banned_until {
            if until > now {
                return Err(Reason::PlayerBanned);
            }
            self.banned_until = None;
            self.over = 0;
        }
        let rate = l.rate;
        let per = rate.per.as_secs_f64();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.count as f64 / per).min(rate.count as f64);
        self.refilled = now;
        if self.tokens >= 1.0 {
            return Ok(());
        }
        if now.duration_since(self.window) >= rate.per {
            self.window = now;
            self.over = 0;
        }
        self.over += 1;
        if self.over >= rate.count && !l.ban_for.is_zero() {
            self.banned_until = Some(now + l.ban_for);
            tracing::warn!(
                address = %key,
                "banned for {:?}: kept opening connections faster than {:?}",
                l.ban_for,
                rate
            );
            return Err(Reason::PlayerBanned);
        }
        Err(Reason::PlayerRate)
    }
}

#[derive(Default)]
struct State {
    players: usize,
    sources: HashMap<IpAddr, Source>,
    /// Players per network (`sources::network_key`); no entry at zero.
    nets: HashMap<IpAddr, usize>,
}

pub(crate) struct Door {
    /// Replaced on reload; the addresses' counts and bans carry over.
    limits: crate::swap::Swap<PlayerLimits>,
    cap: Arc<HubCap>,
    state: Mutex<State>,
    /// This service's series in the hub's metrics.
    meters: ServiceMeters,
    /// Its byte-rate caps, changed in place on reload (players already
    /// capped follow the new values); its UDP door shares them.
    caps: Arc<crate::rate::Caps>,
}

/// An admitted player's place; given back on drop.
pub(crate) struct Admitted {
    door: Arc<Door>,
    key: IpAddr,
    net: IpAddr,
    /// The limits it was admitted under (read once per player).
    pub limits: Arc<PlayerLimits>,
}

impl Door {
    pub fn new(limits: PlayerLimits, cap: Arc<HubCap>, meters: ServiceMeters) -> Arc<Self> {
        Arc::new(Door {
            caps: crate::rate::Caps::new(limits.max_rate, limits.max_rate_per_player),
            limits: crate::swap::Swap::new(limits),
            cap,
            state: Mutex::default(),
            meters,
        })
    }

    pub fn limits(&self) -> Arc<PlayerLimits> {
        self.limits.get()
    }

    pub fn set_limits(&self, limits: PlayerLimits) {
        self.caps.set(limits.max_rate, limits.max_rate_per_player);
        self.limits.set(limits)
    }

    pub fn caps(&self) -> &Arc<crate::rate::Caps> {
        &self.caps
    }

    pub fn meters(&self) -> &ServiceMeters {
        &self.meters
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why `ip` would be turned away whatever it sent: denied, not
    /// allowed, or banned. Nothing is counted (a game port asks this
    /// before it reads which service a player wants).
    pub fn turned_away(&self, ip: IpAddr) -> Option<Reason> {
        let l = self.limits();
        let ip = ip.to_canonical();
        if l.deny.contains(ip) {
            return Some(Reason::PlayerDenied);
        }
        if !l.allow.is_empty() && !l.allow.contains(ip) {
            return Some(Reason::PlayerNotAllowed);
        }
        let st = self.lock();
        let banned = st
            .sources
            .get(&key(ip))
            .and_then(|s| s.banned_until)
            .is_some_and(|until| until > Instant::now());
        banned.then_some(Reason::PlayerBanned)
    }

    /// Admits a player from `ip`, or says why not. Cheap: no I/O.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Reason> {
        let limits = self.limits();
        let l = &*limits;
        let ip = ip.to_canonical();
        if l.deny.contains(ip) {
            return Err(Reason::PlayerDenied);
        }
        if !l.allow.is_empty() && !l.allow.contains(ip) {
            return Err(Reason::PlayerNotAllowed);
        }
        let key = key(ip);
        let now = Instant::now();
        let mut st = self.lock();
        if !st.sources.contains_key(&key) && st.sources.len() >= MAX_TRACKED {
            st.sources
                .retain(|_, s| s.players > 0 || s.banned_until.is_some_and(|b| b > now));
        }
        let rate = l.rate;
        let src = st.sources.entry(key).or_insert(Source {
            players: 0,
            tokens: rate.count as f64,
            refilled: now,
            over: 0,
            window: now,
            banned_until: None,
        });
        src.may_connect(l, key, now)?;
        if src.players >= l.max_players_per_ip {
            return Err(Reason::PlayerAddressFull);
        }
        let net = crate::sources::network_key(ip);
        if st.nets.get(&net).copied().unwrap_or(0) >= l.max_players_per_net {
            return Err(Reason::PlayerNetworkFull);
        }
        if l.max_players.is_some_and(|max| st.players >= max) {
            return Err(Reason::ServiceFull);
        }
        if !self.cap.enter() {
            return Err(Reason::HubFull);
        }
        let src = st.sources.get_mut(&key).expect("entry made above");
        src.tokens -= 1.0;
        src.players += 1;
        st.players += 1;
        *st.nets.entry(net).or_default() += 1;
        self.meters.players.inc();
        self.meters.admitted.inc();
        Ok(Admitted {
            door: self.clone(),
            key,
            net,
            limits,
        })
    }

    /// Players on this service now.
    pub fn players(&self) -> usize {
        self.lock().players
    }

    /// How long `ip` stays banned, if it is.
    #[cfg(test)]
    pub fn banned_for(&self, ip: IpAddr) -> Option<std::time::Duration> {
        let now = Instant::now();
        self.lock()
            .sources
            .get(&key(ip))
            .and_then(|s| s.banned_until)
            .filter(|u| *u > now)
            .map(|u| u - now)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.door.cap.leave();
        self.door.meters.players.dec();
        let mut st = self.door.lock();
        st.players -= 1;
        if let Some(s) = st.sources.get_mut(&self.key) {
            s.players -= 1;
        }
        if let Some(n) = st.nets.get_mut(&self.net) {
            *n -= 1;
            if *n == 0 {
                st.nets.remove(&self.net);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::players::Rate;
    use std::time::Duration;

    fn door(limits: impl FnOnce(&mut PlayerLimits), cap: usize) -> Arc<Door> {
        let mut l = PlayerLimits {
            allow: Default::default(),
            deny: Default::default(),
            max_players: None,
            max_players_per_ip: 2,
            max_players_per_net: 3,
            rate: Rate {
                count: 3,
                per: Duration::from_secs(60),
            },
            ban_for: Duration::from_secs(600),
            idle_timeout: None,
            udp: crate::config::players::UdpLimits {
                max_flows: 10,
                max_flows_per_ip: 10,
                max_flows_per_net: 40,
                idle_timeout: Duration::from_secs(60),
                oneshot_timeout: Duration::from_secs(5),
            },
            max_rate: 0,
            max_rate_per_player: 0,
        };
        limits(&mut l);
        Door::new(l, HubCap::new(cap), ServiceMeters::default())
    }

    #[tokio::test(start_paused = true)]
    async fn per_address_cap_rate_and_ban() {
        let d = door(|_| {}, 100);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let p1 = d.admit(a).unwrap();
        let _p2 = d.admit(a).unwrap();
        assert_eq!(d.admit(a).err(), Some(Reason::PlayerAddressFull));
        drop(p1);
        let _p3 = d.admit(a).unwrap(); // the third of 3 per minute
        // Out of tokens: refused by rate, then banned at twice the rate.
        assert_eq!(d.admit(a).err(), Some(Reason::PlayerRate));
        assert_eq!(d.admit(a).err(), Some(Reason::PlayerRate));
        assert_eq!(d.admit(a).err(), Some(Reason::PlayerBanned));
        assert!(d.banned_for(a).is_some());
        // Another address is unaffected.
        assert!(d.admit("203.0.113.2".parse().unwrap()).is_ok());
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(d.banned_for(a).is_none());
    }

    /// Many /64s of one /48 (one household's prefix) stop at the network's
    /// cap; another /48 is admitted, and a place given back is taken.
    #[tokio::test]
    async fn an_ipv6_48_is_capped_as_one_network() {
        let d = door(|_| {}, 100);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let held: Vec<_> = ["2001:db8:7:1::1", "2001:db8:7:2::1", "2001:db8:7:3::1"]
            .iter()
            .map(|a| d.admit(ip(a)).unwrap())
            .collect();
        assert_eq!(
            d.admit(ip("2001:db8:7:4::1")).err(),
            Some(Reason::PlayerNetworkFull)
        );
        assert!(d.admit(ip("2001:db8:8:1::1")).is_ok(), "another /48");
        drop(held);
        assert!(d.admit(ip("2001:db8:7:4::1")).is_ok());
        assert!(d.lock().nets.len() <= 2, "no entry kept at zero");
    }

    #[tokio::test]
    async fn an_ipv6_64_counts_as_one_address() {
        let d = door(|_| {}, 100);
        let _a = d.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _b = d.admit("2001:db8:1:2::ffff".parse().unwrap()).unwrap();
        assert_eq!(
            d.admit("2001:db8:1:2:abcd::1".parse().unwrap()).err(),
            Some(Reason::PlayerAddressFull)
        );
        assert!(d.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn lists_and_caps() {
        let d = door(
            |l| {
                l.deny = serde_json::from_str(r#"["198.51.100.0/24"]"#).unwrap();
                l.allow = serde_json::from_str(r#"["198.51.0.0/16"]"#).unwrap();
                l.max_players = Some(1);
            },
            100,
        );
        assert_eq!(
            d.admit("198.51.100.7".parse().unwrap()).err(),
            Some(Reason::PlayerDenied)
        );
        assert_eq!(
            d.admit("203.0.113.1".parse().unwrap()).err(),
            Some(Reason::PlayerNotAllowed)
        );
        let _one = d.admit("198.51.1.1".parse().unwrap()).unwrap();
        assert_eq!(
            d.admit("198.51.1.2".parse().unwrap()).err(),
            Some(Reason::ServiceFull)
        );
        let hub = door(|_| {}, 1);
        let _one = hub.admit("198.51.1.1".parse().unwrap()).unwrap();
        assert_eq!(
            hub.admit("198.51.1.2".parse().unwrap()).err(),
            Some(Reason::HubFull)
        );
    }
}
