//! The pre-authentication gate of the control and channel doors.
//!
//! Strangers can cost the hub only a bounded amount: caps on connections
//! still authenticating (`limits`), and a growing penalty for an address
//! whose connection failed before presenting a valid certificate
//! (`penalties`, in the spirit of OpenSSH's PerSourcePenalties).
//!
//! A failure costs whoever failed, not everyone behind an address. An
//! address is "proven" while an ep is logged in from it and for a day after
//! its last session: junk from a proven address (a neighbour behind the same
//! carrier-grade NAT, a scanner on the home LAN) still earns penalties, but
//! a penalised proven address keeps a probation slot: one handshake at a
//! time, at most one a second. A valid certificate there clears the penalty,
//! so the real ep gets back in within seconds while the junk costs at most
//! one handshake a second. Failures after a valid certificate (a wrong
//! token) are charged to that ep's identity, not to its address.
//!
//! An "address" here is an IPv4 address or an IPv6 /64 (`source_key`): a
//! host in an allowlisted IPv6 prefix could otherwise take a fresh address
//! for every try and never meet its penalty or its per-source cap.

mod limits;
pub(crate) use crate::penalties;

use crate::sources::source_key;
pub use limits::PendingCaps;
use limits::{Full, Limits, Place};
use penalties::Penalties;
pub use penalties::PenaltyRange;
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};
use tokio::time::Instant;

/// Proven addresses remembered, and for how long after their last session.
const MAX_PROVEN: usize = 4_096;
const PROVEN_FOR: Duration = Duration::from_secs(24 * 3600);

/// How often a penalised proven address may try one handshake.
pub const PROBATION_EVERY: Duration = Duration::from_secs(1);

struct Probation {
    last: Instant,
    busy: bool,
}

struct State {
    limits: Limits,
    penalties: Penalties<IpAddr>,
    probation: HashMap<IpAddr, Probation>,
    /// Address → end of its last session (or its last login).
    proven: HashMap<IpAddr, Instant>,
}

pub(crate) struct Gate {
    state: Mutex<State>,
    strangers: Arc<crate::hub::stats::InFlight>,
}

/// Why the gate turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turned {
    Penalised,
    TooManyPending,
    TooManyFromSource,
}

/// A place among the authenticating connections; freed on drop.
pub(crate) struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
    place: Option<Place>,
    probation: bool,
}

impl Gate {
    pub fn new(caps: PendingCaps, range: PenaltyRange) -> Self {
        let limits = Limits::new(caps);
        Gate {
            strangers: limits.strangers.clone(),
            state: Mutex::new(State {
                limits,
                penalties: Penalties::new(range),
                probation: HashMap::new(),
                proven: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `ip` to authenticate, or says why not. Cheap: no I/O. `live`
    /// says an ep is logged in from `ip` right now.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, live: bool) -> Result<Permit, Turned> {
        let ip = source_key(ip);
        let mut st = self.lock();
        let proven = live || st.proven.get(&ip).is_some_and(|t| t.elapsed() < PROVEN_FOR);
        let mut probation = false;
        if st.penalties.remaining(&ip).is_some() {
            if !proven {
                return Err(Turned::Penalised);
            }
            let now = Instant::now();
            let p = st.probation.entry(ip).or_insert(Probation {
                last: now - PROBATION_EVERY,
                busy: false,
            });
            if p.busy || now.duration_since(p.last) < PROBATION_EVERY {
                return Err(Turned::Penalised);
            }
            p.busy = true;
            p.last = now;
            probation = true;
        }
        match st.limits.enter(ip, proven) {
            Ok(place) => Ok(Permit {
                gate: self.clone(),
                ip,
                place: Some(place),
                probation,
            }),
            Err(full) => {
                if probation && let Some(p) = st.probation.get_mut(&ip) {
                    p.busy = false;
                }
                Err(match full {
                    Full::Everyone => Turned::TooManyPending,
                    Full::Source => Turned::TooManyFromSource,
                })
            }
        }
    }

    /// Records a failure before a valid certificate was shown.
    pub fn strike(&self, ip: IpAddr) {
        self.lock().penalties.strike(&source_key(ip));
    }

    /// A valid certificate came from `ip`: whatever junk came from there
    /// before, a real ep is behind it.
    pub fn vouch(&self, ip: IpAddr) {
        let ip = source_key(ip);
        let mut st = self.lock();
        st.penalties.clear(&ip);
        st.probation.remove(&ip);
    }

    /// An ep logged in from `ip`: clear its strikes and remember it as
    /// proven for a day.
    pub fn proven(&self, ip: IpAddr) {
        self.vouch(ip);
        self.session_ended(ip);
    }

    /// An ep's session from `ip` just ended: proven for a day from now, so
    /// a session that lived for days does not leave its address a stranger.
    pub fn session_ended(&self, ip: IpAddr) {
        let ip = source_key(ip);
        let mut st = self.lock();
        if st.proven.len() >= MAX_PROVEN && !st.proven.contains_key(&ip) {
            st.proven.retain(|_, t| t.elapsed() < PROVEN_FOR);
            if st.proven.len() >= MAX_PROVEN {
                return;
            }
        }
        st.proven.insert(ip, Instant::now());
    }

    /// Strangers authenticating now.
    pub fn pending(&self) -> usize {
        self.strangers.now()
    }

    /// The most strangers ever authenticating at once.
    pub fn peak(&self) -> usize {
        self.strangers.peak()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.gate.lock();
        if let Some(place) = self.place.take() {
            st.limits.leave(self.ip, place);
        }
        if self.probation
            && let Some(p) = st.probation.get_mut(&self.ip)
        {
            p.busy = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Arc<Gate> {
        Arc::new(Gate::new(
            PendingCaps {
                max_pending: 3,
                per_source: 2,
            },
            PenaltyRange {
                base: Duration::from_secs(60),
                max: Duration::from_secs(600),
            },
        ))
    }

    #[tokio::test]
    async fn caps_and_penalties() {
        let g = gate();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = g.enter(a, false).unwrap();
        let _p2 = g.enter(a, false).unwrap();
        assert_eq!(g.enter(a, false).err(), Some(Turned::TooManyFromSource));
        let _p3 = g.enter(b, false).unwrap();
        assert_eq!(g.enter(b, false).err(), Some(Turned::TooManyPending));
        drop(p1);
        assert_eq!(g.pending(), 2);
        assert_eq!(g.peak(), 3);
        g.strike(b);
        assert_eq!(g.enter(b, false).err(), Some(Turned::Penalised));
        g.proven(b);
        // A stranger fills the global cap (a and b's first permit hold 2 of 3).
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let _p4 = g.enter(c, false).unwrap();
        assert_eq!(
            g.enter("10.0.0.4".parse().unwrap(), false).err(),
            Some(Turned::TooManyPending)
        );
        // Proven b still gets in, up to its own per-source cap (2).
        let _p5 = g.enter(b, false).unwrap();
        assert_eq!(g.enter(b, false).err(), Some(Turned::TooManyFromSource));
        assert_eq!(g.pending(), 3, "proven permits are not counted");
    }

    #[tokio::test]
    async fn an_ipv6_64_is_one_address() {
        let g = gate();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = g.enter(ip("2001:db8:1:2::1"), false).unwrap();
        let _b = g.enter(ip("2001:db8:1:2::2"), false).unwrap();
        assert_eq!(
            g.enter(ip("2001:db8:1:2:ffff::3"), false).err(),
            Some(Turned::TooManyFromSource),
            "a new address in the same /64 took another source's places"
        );
        g.strike(ip("2001:db8:1:3::1"));
        assert_eq!(
            g.enter(ip("2001:db8:1:3::2"), false).err(),
            Some(Turned::Penalised),
            "a new address in the same /64 escaped the penalty"
        );
        g.proven(ip("2001:db8:1:3::7"));
        let _c = g.enter(ip("2001:db8:1:3::2"), false).expect("vouched for");
        g.strike(ip("::ffff:10.0.0.5"));
        assert_eq!(
            g.enter(ip("10.0.0.5"), false).err(),
            Some(Turned::Penalised),
            "a mapped IPv4 address is the IPv4 one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_penalised_live_address_gets_one_probation_a_second() {
        let g = gate();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..20 {
            g.strike(ip);
        }
        assert_eq!(g.enter(ip, false).err(), Some(Turned::Penalised));
        let probe = g.enter(ip, true).expect("probation slot");
        assert_eq!(
            g.enter(ip, true).err(),
            Some(Turned::Penalised),
            "one at a time"
        );
        drop(probe);
        assert_eq!(
            g.enter(ip, true).err(),
            Some(Turned::Penalised),
            "once a second"
        );
        tokio::time::advance(PROBATION_EVERY).await;
        let probe = g.enter(ip, true).expect("next second's slot");
        g.vouch(ip);
        drop(probe);
        let _a = g.enter(ip, false).expect("cleared by a valid certificate");
        let _b = g.enter(ip, false).expect("cleared by a valid certificate");
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_stays_proven_while_its_session_lives_and_a_day_after() {
        let g = gate();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        g.proven(ip); // login
        tokio::time::advance(PROVEN_FOR + Duration::from_secs(3600)).await;
        g.strike(ip);
        // Days into a live session the address is still the ep's.
        assert!(g.enter(ip, true).is_ok(), "a live session's address lapsed");
        assert_eq!(g.enter(ip, false).err(), Some(Turned::Penalised));
        tokio::time::advance(PROBATION_EVERY).await;
        g.session_ended(ip);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(
            g.enter(ip, false).is_ok(),
            "proven for a day after the session"
        );
    }
}
