//! Who may hold one of a door's connections while it has not yet said who
//! it is: the admin door with a token, the health door (public by design:
//! a DNS server's checker asks it without a secret), the enrol door, and a
//! game port reading a player's first packet.
//!
//! A connection is *waiting* until its request has arrived and, on the
//! admin door, its token has been checked. A source (an IPv4 address, an
//! IPv6 /64) may have `PER_SOURCE` connections waiting (or the door's own
//! figure), a network (an IPv4 /24, an IPv6 /48) `PER_NETWORK`, the door
//! `max` connections in all. At
//! any of these caps a newcomer is not turned away: it takes the place of
//! the oldest connection waiting in that scope (its source's, its
//! network's, or the door's), which is closed. A checker's or a browser's
//! request arrives within a round trip of its connect, so to keep one out
//! a stranger must open connections faster than that, from the same
//! network or from many; holding places idle, which a few sources could
//! do at a few connections a second, shuts out no one.

use crate::sources::{network_key, source_key};
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex},
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Waiting connections from one source.
pub const PER_SOURCE: usize = 8;
/// Waiting connections from one network.
pub const PER_NETWORK: usize = 32;

pub struct Admission {
    max: usize,
    /// Waiting connections a source, and a network, may have.
    per_source: usize,
    per_network: usize,
    /// Whether waiting connections are capped by where they come from (not
    /// on a loopback door without a token: everyone there is 127.0.0.1).
    by_source: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Places taken (waiting or served); never above `max`.
    held: usize,
    next: u64,
    /// Waiting connections, oldest first.
    waiting: VecDeque<Waiting>,
    /// Waiting connections per source key (false) and per network key
    /// (true): apart, since an IPv4 `.0` address or the first /64 of a
    /// /48 has a source key equal to its network's.
    counts: HashMap<(bool, IpAddr), usize>,
}

struct Waiting {
    id: u64,
    /// Its source's and its network's keys (None: not counted).
    keys: Option<(IpAddr, IpAddr)>,
    evicted: Evicted,
}

/// Whose cap gave a waiting connection's place to a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Its own source's.
    Source,
    /// Its network's.
    Network,
    /// The door's, in all.
    Door,
    /// A cap outside the door, which the newcomer could only pass with
    /// what this one held there (`Admission::displace`).
    Elsewhere,
}

/// A waiting connection told that its place was given away, and by whom.
#[derive(Clone, Default)]
struct Evicted {
    token: CancellationToken,
    by: Arc<std::sync::OnceLock<Scope>>,
}

impl State {
    fn count(&self, key: (bool, IpAddr)) -> usize {
        self.counts.get(&key).copied().unwrap_or(0)
    }

    fn add(&mut self, keys: Option<(IpAddr, IpAddr)>, by: isize) {
        for key in keys.into_iter().flat_map(|(s, n)| [(false, s), (true, n)]) {
            let n = self.counts.entry(key).or_default();
            *n = n.saturating_add_signed(by);
            if *n == 0 {
                self.counts.remove(&key);
            }
        }
    }

    /// Takes the oldest waiting connection `which` picks out of the queue
    /// and its counts, and tells it it is closed.
    fn evict(&mut self, scope: Scope, which: impl Fn(&Waiting) -> bool) -> Option<()> {
        let at = self.waiting.iter().position(which)?;
        let gone = self.waiting.remove(at)?;
        self.add(gone.keys, -1);
        let _ = gone.evicted.by.set(scope);
        gone.evicted.token.cancel();
        Some(())
    }

    /// For a newcomer from `keys` that may only displace: its own source's
    /// oldest waiting, else its network's, else the oldest of the source
    /// with the most waiting. So one address cannot reset every other
    /// source's connections: while it has one waiting, it displaces that.
    fn displace(&mut self, keys: Option<(IpAddr, IpAddr)>) -> Option<()> {
        if let Some((s, n)) = keys {
            if self.count((false, s)) > 0 {
                return self.evict(Scope::Elsewhere, |w| w.keys.is_some_and(|k| k.0 == s));
            }
            if self.count((true, n)) > 0 {
                return self.evict(Scope::Elsewhere, |w| w.keys.is_some_and(|k| k.1 == n));
            }
        }
        let heaviest = self
            .counts
            .iter()
            .filter(|((net, _), _)| !net)
            .max_by_key(|(_, n)| **n)
            .map(|((_, key), _)| *key);
        match heaviest {
            Some(h) => self.evict(Scope::Elsewhere, |w| w.keys.is_some_and(|k| k.0 == h)),
            None => self.evict(Scope::Elsewhere, |_| true),
        }
    }

    /// No longer waiting (served, or closed): out of the queue and counts.
    fn leave(&mut self, id: u64) {
        if let Some(at) = self.waiting.iter().position(|w| w.id == id)
            && let Some(w) = self.waiting.remove(at)
        {
            self.add(w.keys, -1);
        }
    }
}

/// One connection's place, given back when dropped.
pub struct Ticket {
    door: Arc<Admission>,
    id: u64,
    evicted: Evicted,
}

impl Admission {
    /// A door of `max` places, with `PER_SOURCE` and `PER_NETWORK` waiting
    /// from one source and network if `by_source`.
    pub fn new(max: usize, by_source: bool) -> Arc<Admission> {
        Admission::build(max, (PER_SOURCE, PER_NETWORK), by_source)
    }

    /// A door of `max` places, with `per_source` and `per_network` waiting
    /// from one source and network.
    pub fn with_limits(max: usize, per_source: usize, per_network: usize) -> Arc<Admission> {
        Admission::build(max, (per_source, per_network), true)
    }

    fn build(
        max: usize,
        (per_source, per_network): (usize, usize),
        by_source: bool,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            max,
            per_source,
            per_network,
            by_source,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a connection from `ip`, taken from the oldest waiting
    /// connection of its source or network if either is at its cap, or of
    /// the door if the door is full; None only when every place is served
    /// (none waiting to give way).
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        self.enter_as(ip, false)
    }

    /// `enter` for a newcomer that may only take a waiting connection's
    /// place, at any count (what a place also stands for is full
    /// elsewhere, such as a file under the hub's cap): see
    /// `State::displace` for whose; told `Scope::Elsewhere`. None if none
    /// is waiting.
    pub fn displace(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        self.enter_as(ip, true)
    }

    fn enter_as(self: &Arc<Self>, ip: IpAddr, displace: bool) -> Option<Ticket> {
        let keys = self.by_source.then(|| (source_key(ip), network_key(ip)));
        let mut st = self.lock();
        // An evicted connection's place passes to the newcomer.
        let took = match keys {
            _ if displace => Some(st.displace(keys)?),
            Some((s, _)) if st.count((false, s)) >= self.per_source => {
                st.evict(Scope::Source, |w| w.keys.is_some_and(|k| k.0 == s))
            }
            Some((_, n)) if st.count((true, n)) >= self.per_network => {
                st.evict(Scope::Network, |w| w.keys.is_some_and(|k| k.1 == n))
            }
            _ if st.held >= self.max => Some(st.evict(Scope::Door, |_| true)?),
            _ => None,
        };
        if took.is_none() {
            st.held += 1;
        }
        st.add(keys, 1);
        st.next += 1;
        let (id, evicted) = (st.next, Evicted::default());
        st.waiting.push_back(Waiting {
            id,
            keys,
            evicted: evicted.clone(),
        });
        Some(Ticket {
            door: self.clone(),
            id,
            evicted,
        })
    }
}

impl Ticket {
    /// Resolves when a newer connection took this one's place.
    pub fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.evicted.token.clone().cancelled_owned()
    }

    /// Whose cap gave this one's place away, once it was.
    pub fn evicted_by(&self) -> Option<Scope> {
        self.evicted.by.get().copied()
    }

    /// The request arrived and was let in: no longer waiting, so neither
    /// counted for its source nor given away. False if its place was given
    /// away first (the caller closes it).
    pub fn served(&mut self) -> bool {
        let mut st = self.door.lock();
        st.leave(self.id);
        !self.evicted.token.is_cancelled()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.door.lock();
        st.leave(self.id);
        // A place given away was taken over by the newcomer; only one still
        // held is given back.
        if !self.evicted.token.is_cancelled() {
            st.held -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_door_gives_the_oldest_waiting_place_to_a_newcomer() {
        let door = Admission::new(2, true);
        let a = door.enter(ip("192.0.2.1")).unwrap();
        let mut b = door.enter(ip("198.51.100.1")).unwrap();
        b.served();
        let c = door.enter(ip("203.0.113.1")).unwrap();
        assert!(
            a.evicted.token.is_cancelled(),
            "the oldest waiting gave way"
        );
        assert!(!b.evicted.token.is_cancelled(), "a served one never does");
        drop(a);
        assert_eq!(
            door.lock().held,
            2,
            "a place given away is not given back twice"
        );
        let d = door.enter(ip("203.0.113.2")).unwrap();
        assert!(c.evicted.token.is_cancelled());
        drop((b, c));
        assert_eq!(door.lock().held, 1);
        drop(d);
        let st = door.lock();
        assert_eq!(st.held, 0);
        assert!(st.waiting.is_empty() && st.counts.is_empty());
    }

    #[test]
    fn a_displacing_newcomer_takes_from_itself_else_the_heaviest_source() {
        let door = Admission::new(10, true);
        let mut served = door.enter(ip("192.0.2.1")).unwrap();
        served.served();
        assert!(door.displace(ip("192.0.2.9")).is_none(), "none waiting");
        let a1 = door.enter(ip("198.51.100.1")).unwrap();
        let b = door.enter(ip("203.0.113.1")).unwrap();
        let a2 = door.enter(ip("198.51.100.1")).unwrap();
        // From elsewhere: the oldest of the source with the most waiting.
        let c = door.displace(ip("192.0.2.9")).unwrap();
        assert_eq!(a1.evicted_by(), Some(Scope::Elsewhere));
        assert_eq!((b.evicted_by(), a2.evicted_by()), (None, None));
        assert_eq!(door.lock().held, 4, "the newcomer holds a1's place");
        // With one of its own waiting: that one.
        let d = door.displace(ip("192.0.2.9")).unwrap();
        assert_eq!(c.evicted_by(), Some(Scope::Elsewhere));
        assert_eq!((b.evicted_by(), a2.evicted_by()), (None, None));
        drop((served, a1, b, a2, c, d));
        assert_eq!(door.lock().held, 0);
    }

    #[test]
    fn every_place_served_turns_a_newcomer_away() {
        let door = Admission::new(1, false);
        let mut a = door.enter(ip("127.0.0.1")).unwrap();
        a.served();
        assert!(door.enter(ip("127.0.0.1")).is_none());
        drop(a);
        assert!(door.enter(ip("127.0.0.1")).is_some());
    }

    #[test]
    fn a_source_or_network_at_its_cap_gives_way_within_itself() {
        let door = Admission::new(1000, true);
        let mine: Vec<_> = (0..PER_SOURCE)
            .map(|_| door.enter(ip("2001:db8:1:2::7")).unwrap())
            .collect();
        let again = door.enter(ip("2001:db8:1:2::8")).unwrap();
        assert!(
            mine[0].evicted.token.is_cancelled() && !mine[1].evicted.token.is_cancelled(),
            "the same /64 is one source: its oldest gave way"
        );
        let mut net: Vec<_> = (0..PER_NETWORK - PER_SOURCE)
            .map(|i| {
                door.enter(ip(&format!("2001:db8:1:{}::1", 100 + i)))
                    .unwrap()
            })
            .collect();
        let other = door.enter(ip("2001:db8:2::1")).unwrap();
        assert!(
            !mine[1].evicted.token.is_cancelled(),
            "another network takes nothing from this one"
        );
        let _late = door.enter(ip("2001:db8:1:ffff::1")).unwrap();
        assert!(
            mine[1].evicted.token.is_cancelled(),
            "the same /48 is one network: its oldest waiting gave way"
        );
        net[0].served();
        let _more = door.enter(ip("2001:db8:1:fffe::1")).unwrap();
        assert!(
            !net[0].evicted.token.is_cancelled() && !mine[2].evicted.token.is_cancelled(),
            "a served connection no longer counts as waiting: room for one more"
        );
        drop((mine, again, net, other));
        assert_eq!(door.lock().held, 2);
    }

    /// A door's own caps; each given-away place says whose cap gave it.
    #[test]
    fn a_place_given_away_says_by_whom() {
        let door = Admission::with_limits(3, 2, 3);
        let a = door.enter(ip("192.0.2.1")).unwrap();
        let b = door.enter(ip("192.0.2.1")).unwrap();
        let c = door.enter(ip("192.0.2.1")).unwrap();
        assert_eq!(a.evicted_by(), Some(Scope::Source));
        assert_eq!(b.evicted_by(), None);
        let d = door.enter(ip("192.0.2.2")).unwrap();
        let e = door.enter(ip("192.0.2.3")).unwrap();
        assert_eq!(b.evicted_by(), Some(Scope::Network));
        assert_eq!(c.evicted_by(), None);
        let f = door.enter(ip("198.51.100.1")).unwrap();
        assert_eq!(c.evicted_by(), Some(Scope::Door));
        assert!([&d, &e, &f].iter().all(|t| t.evicted_by().is_none()));
    }

    /// An IPv4 `.0` address and the first /64 of a /48 have a source key
    /// equal to their network's: counted apart, such a source still gets
    /// its 8 waiting places (before, each counted twice and the 5th took
    /// the 1st's place).
    #[test]
    fn a_source_keyed_like_its_network_is_counted_once_for_each() {
        for addr in ["10.0.0.0", "2001:db8:1::1"] {
            let door = Admission::new(64, true);
            let tickets: Vec<_> = (0..PER_SOURCE)
                .map(|_| door.enter(ip(addr)).unwrap())
                .collect();
            assert!(
                tickets.iter().all(|t| !t.evicted.token.is_cancelled()),
                "{addr}: a place given away below the source's cap"
            );
        }
    }
}
