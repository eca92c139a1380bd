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

/// Addresses tracked per service before the idle ones (no player, no ban
/// in force) are let go.
const MAX_TRACKED: usize = 65_536;

/// Players at once across the hub.
pub(crate) struct HubCap {
    max: usize,
    now: AtomicUsize,
    /// Of those, UDP flows (`enter_udp`).
    udp: AtomicUsize,
    /// Some service takes TCP players: a quarter of the cap is theirs.
    tcp_served: std::sync::atomic::AtomicBool,
}

impl HubCap {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(HubCap {
            max,
            now: AtomicUsize::new(0),
            udp: AtomicUsize::new(0),
            tcp_served: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Whether a service takes TCP players (at start and on reload): on a
    /// hub with none, UDP flows may take the whole cap.
    pub fn serve_tcp(&self, on: bool) {
        self.tcp_served.store(on, Ordering::Relaxed);
    }

    /// The places UDP flows may hold: all but a quarter (one at least)
    /// while TCP players are served.
    fn udp_share(&self) -> usize {
        if !self.tcp_served.load(Ordering::Relaxed) {
            return self.max;
        }
        self.max - (self.max / 4).max(usize::from(self.max >= 2))
    }

    /// A place for a UDP flow: three quarters of the cap at most. A UDP
    /// source costs a forger nothing, so a flood on one UDP service must
    /// leave the hub's TCP players (real addresses, under the doors'
    /// rates and bans) a quarter of the hub.
    pub(super) fn enter_udp(&self) -> bool {
        let share = self.udp_share();
        let took = self
            .udp
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < share).then_some(n + 1)
            })
            .is_ok();
        if took && !self.enter() {
            self.udp.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        took
    }

    pub(super) fn leave_udp(&self) {
        self.udp.fetch_sub(1, Ordering::AcqRel);
        self.leave();
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Places taken now.
    pub fn taken(&self) -> usize {
        self.now.load(Ordering::Acquire)
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

    /// A place under the cap, held until dropped or handed to a player.
    pub(super) fn slot(self: &Arc<Self>) -> Option<CapSlot> {
        self.enter().then(|| CapSlot(Some(self.clone())))
    }
}

/// One place under the hub's cap: a connection's file before it is a
/// player (a game port's reader), given back on drop.
pub(crate) struct CapSlot(Option<Arc<HubCap>>);

impl CapSlot {
    /// The place another holder gave up to this one without leaving it (a
    /// reader evicted by `places::Admission::displace`): not counted again.
    pub(super) fn handed(cap: &Arc<HubCap>) -> CapSlot {
        CapSlot(Some(cap.clone()))
    }

    /// Given to another holder, which leaves it in its turn.
    pub(super) fn hand_over(mut self) {
        self.0 = None;
    }
}

impl Drop for CapSlot {
    fn drop(&mut self) {
        if let Some(cap) = &self.0 {
            cap.leave();
        }
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

/// Whether `key` (of `ip`) has room for one more player: its address's,
/// its network's and the service's; its network's key if so.
fn room(st: &State, l: &PlayerLimits, key: IpAddr, ip: IpAddr) -> Result<IpAddr, Reason> {
    if st.sources.get(&key).map_or(0, |s| s.players) >= l.max_players_per_ip {
        return Err(Reason::PlayerAddressFull);
    }
    let net = crate::sources::network_key(ip);
    if st.nets.get(&net).copied().unwrap_or(0) >= l.max_players_per_net {
        return Err(Reason::PlayerNetworkFull);
    }
    if l.max_players.is_some_and(|max| st.players >= max) {
        return Err(Reason::ServiceFull);
    }
    Ok(net)
}

/// `Door::enter`'s part: all of `admit`, or its first or second half.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Admit,
    Knock,
    Seat,
}

/// Whether `l`'s allow and deny lists let `ip` in.
fn listed(l: &PlayerLimits, ip: IpAddr) -> Result<(), Reason> {
    if l.deny.contains(ip) {
        return Err(Reason::PlayerDenied);
    }
    if !l.allow.is_empty() && !l.allow.contains(ip) {
        return Err(Reason::PlayerNotAllowed);
    }
    Ok(())
}

#[derive(Default)]
struct State {
    players: usize,
    sources: HashMap<IpAddr, Source>,
    /// The size of `sources` at which the idle go next (`prune_at`).
    prune_at: usize,
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

impl State {
    /// `key`'s record, made if new (the idle ones go when too many are
    /// kept).
    fn source(&mut self, key: IpAddr, l: &PlayerLimits, now: Instant) -> &mut Source {
        if !self.sources.contains_key(&key) && self.sources.len() >= self.prune_at.max(MAX_TRACKED)
        {
            self.sources
                .retain(|_, s| s.players > 0 || s.banned_until.is_some_and(|b| b > now));
            self.prune_at = prune_at(self.sources.len());
        }
        self.sources.entry(key).or_insert(Source {
            players: 0,
            tokens: l.rate.count as f64,
            refilled: now,
            over: 0,
            window: now,
            banned_until: None,
        })
    }
}

/// When the table, `kept` records after letting the idle go, is looked
/// through next: once it has doubled. Records with players or a ban in
/// force cannot go, and thousands of banned /64s (one /48 holds 65,536)
/// would otherwise have every new address look through them all, in the
/// port's accept loop.
fn prune_at(kept: usize) -> usize {
    kept.saturating_mul(2).max(MAX_TRACKED)
}

/// A connection counted at a door, not yet given a place.
pub(crate) struct Knocked {
    door: Arc<Door>,
    ip: IpAddr,
}

impl Knocked {
    /// Its place, its rate already paid (given back if there is no
    /// room); with `slot`, its place under the hub's cap is that one.
    pub fn seat(self, slot: Option<CapSlot>) -> Result<Admitted, Reason> {
        let Knocked { door, ip } = self;
        door.enter(ip, Step::Seat, slot).map(|a| a.expect("seated"))
    }

    /// Turned away for want of room before it was read (the hub full):
    /// its rate's token back.
    pub fn refund(self) {
        let l = self.door.limits();
        let mut st = self.door.lock();
        if let Some(src) = st.sources.get_mut(&key(self.ip.to_canonical())) {
            src.tokens = (src.tokens + 1.0).min(l.rate.count as f64);
        }
    }
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
        if let Err(r) = listed(&l, ip) {
            return Some(r);
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
        self.enter(ip, Step::Admit, None)
            .map(|a| a.expect("admitted"))
    }

    /// `admit` for a connection that already holds its place under the
    /// hub's cap (a game port's reader): no gap between the two in which
    /// another connection takes it.
    pub fn admit_holding(self: &Arc<Self>, ip: IpAddr, slot: CapSlot) -> Result<Admitted, Reason> {
        self.enter(ip, Step::Admit, Some(slot))
            .map(|a| a.expect("admitted"))
    }

    /// Counts a connection from `ip` against its rate (and a flood's ban)
    /// before it takes a place: a game port's, whose first packet is read
    /// first. Silent connections then hold no player's place while they
    /// are read; `Knocked::seat` gives the place once the packet is in. An
    /// address whose places are already taken by players is refused here,
    /// as `admit` would (its rate not spent).
    pub fn knock(self: &Arc<Self>, ip: IpAddr) -> Result<Knocked, Reason> {
        self.enter(ip, Step::Knock, None)?;
        Ok(Knocked {
            door: self.clone(),
            ip,
        })
    }

    /// What `admit` does, or one of its halves (`Step`); with `slot`, the
    /// place under the hub's cap is that one.
    fn enter(
        self: &Arc<Self>,
        ip: IpAddr,
        step: Step,
        slot: Option<CapSlot>,
    ) -> Result<Option<Admitted>, Reason> {
        let limits = self.limits();
        let l = &*limits;
        let ip = ip.to_canonical();
        listed(l, ip)?;
        let key = key(ip);
        let now = Instant::now();
        let mut st = self.lock();
        let src = st.source(key, l, now);
        match step {
            Step::Admit | Step::Knock => src.may_connect(l, key, now)?,
            // Its rate paid at the knock; a flood's ban since still holds.
            Step::Seat if src.banned_until.is_some_and(|b| b > now) => {
                return Err(Reason::PlayerBanned);
            }
            Step::Seat => {}
        }
        let room = room(&st, l, key, ip).and_then(|net| {
            if step != Step::Knock {
                match slot.or_else(|| self.cap.slot()) {
                    Some(s) => s.hand_over(),
                    None => return Err(Reason::HubFull),
                }
            }
            Ok(net)
        });
        let src = st.sources.get_mut(&key).expect("entry made above");
        let net = match room {
            Ok(net) => net,
            Err(r) => {
                // Turned away for want of room, not for its rate: a knock's
                // token is given back, as `admit` takes none then.
                if step == Step::Seat {
                    src.tokens = (src.tokens + 1.0).min(l.rate.count as f64);
                }
                return Err(r);
            }
        };
        if step != Step::Seat {
            src.tokens -= 1.0;
        }
        if step == Step::Knock {
            return Ok(None);
        }
        src.players += 1;
        st.players += 1;
        *st.nets.entry(net).or_default() += 1;
        self.meters.players.inc();
        self.meters.admitted.inc();
        Ok(Some(Admitted {
            door: self.clone(),
            key,
            net,
            limits,
        }))
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

    #[test]
    fn udp_flows_leave_tcp_players_a_quarter_of_the_hub() {
        let cap = HubCap::new(8);
        assert_eq!((0..8).filter(|_| cap.enter_udp()).count(), 6);
        assert!(cap.enter() && cap.enter(), "TCP players get the rest");
        assert!(!cap.enter() && !cap.enter_udp());
        cap.leave_udp();
        assert!(cap.enter_udp());
        // A hub with no TCP service: the whole cap.
        let udp_only = HubCap::new(8);
        udp_only.serve_tcp(false);
        assert_eq!((0..9).filter(|_| udp_only.enter_udp()).count(), 8);
        // A tiny cap still keeps one place.
        let tiny = HubCap::new(2);
        assert_eq!((0..2).filter(|_| tiny.enter_udp()).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_table_full_of_bans_is_looked_through_once_per_doubling() {
        let l = door(|_| {}, 1_000_000).limits.get();
        let mut st = State::default();
        let now = Instant::now();
        let v6 = |i: u64| {
            IpAddr::from(std::net::Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | (u128::from(i) << 64),
            ))
        };
        // Every /64 of a prefix banned: none can go.
        for i in 0..MAX_TRACKED as u64 {
            st.source(v6(i), &l, now).banned_until = Some(now + Duration::from_secs(600));
        }
        // The next looks through them once, and keeps them all.
        st.source(v6(1 << 20), &l, now);
        assert_eq!(st.sources.len(), MAX_TRACKED + 1);
        assert_eq!(st.prune_at, 2 * MAX_TRACKED);
        // Those after it do not, until the table doubles.
        for i in 1..1000 {
            st.source(v6((1 << 20) + i), &l, now);
        }
        assert_eq!(st.prune_at, 2 * MAX_TRACKED);
        // Once the bans are over, the idle go at the next look.
        let later = now + Duration::from_secs(601);
        st.prune_at = 0;
        st.source(v6(1 << 30), &l, later);
        assert_eq!(st.sources.len(), 1);
        assert_eq!(st.prune_at, MAX_TRACKED);
    }

    #[tokio::test(start_paused = true)]
    async fn a_knock_pays_the_rate_and_holds_no_place_until_seated() {
        let d = door(|l| l.max_players = Some(1), 100);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        // Three knocks, the rate's three a minute: no place taken yet.
        let knocks: Vec<_> = (0..3).map(|_| d.knock(a).unwrap()).collect();
        assert_eq!(d.players(), 0);
        assert_eq!(d.knock(a).err(), Some(Reason::PlayerRate));
        let mut knocks = knocks.into_iter();
        // Seated; the service's one place then full, and the knock that
        // finds it so gets its token back.
        let seated = knocks.next().unwrap().seat(None).unwrap();
        assert_eq!(d.players(), 1);
        assert_eq!(
            knocks.next().unwrap().seat(None).err(),
            Some(Reason::ServiceFull)
        );
        drop(seated);
        // That token, and no other: the seat took none.
        let last = d.knock(a).unwrap();
        assert_eq!(d.knock(a).err(), Some(Reason::PlayerRate));
        // Banned for flooding since its knock (twice the rate's three
        // refused): not seated.
        assert_eq!(d.knock(a).err(), Some(Reason::PlayerBanned));
        assert_eq!(
            knocks.next().unwrap().seat(None).err(),
            Some(Reason::PlayerBanned)
        );
        drop(last);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_service_refuses_the_knock_without_spending_its_rate() {
        let d = door(|l| l.max_players_per_ip = 1, 100);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let _playing = d.admit(a).unwrap();
        for _ in 0..10 {
            assert_eq!(d.knock(a).err(), Some(Reason::PlayerAddressFull));
        }
        assert!(d.banned_for(a).is_none());
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
