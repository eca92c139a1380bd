//! The pre-authentication gate of the control and channel doors.
//!
//! Strangers can cost the hub only a bounded amount: at most
//! `max_pending` connections are authenticating at once, at most
//! `per_source` of them from one address, and an address that fails earns
//! a growing penalty during which it is refused before TLS (in the spirit of
//! OpenSSH's PerSourcePenalties). An address that logged in successfully in
//! the last day is "proven": it is not counted against the global cap, so a
//! crowd of strangers holding connections open cannot lock a known ep out
//! while it reconnects (it still obeys the per-source cap).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// Addresses remembered for penalties; beyond this, new offenders are not
/// recorded (the global cap still bounds them), so memory stays bounded.
const MAX_PENALISED: usize = 65_536;

/// Proven addresses remembered, and for how long.
const MAX_PROVEN: usize = 4_096;
const PROVEN_FOR: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    pub max_pending: usize,
    pub per_source: usize,
    pub penalty_base: Duration,
    pub penalty_max: Duration,
}

struct Penalty {
    strikes: u32,
    until: Instant,
}

#[derive(Default)]
struct State {
    per_ip: HashMap<IpAddr, usize>,
    penalties: HashMap<IpAddr, Penalty>,
    /// Address → time of its last successful login.
    proven: HashMap<IpAddr, Instant>,
}

pub(crate) struct Gate {
    limits: GateLimits,
    pending: AtomicUsize,
    peak: AtomicUsize,
    state: Mutex<State>,
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
    /// Counted against the global cap (a stranger, not a proven address).
    counted: bool,
}

impl Gate {
    pub fn new(limits: GateLimits) -> Self {
        Gate {
            limits,
            pending: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `ip` to authenticate, or says why not. Cheap: no I/O.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Turned> {
        let ip = ip.to_canonical();
        let mut st = self.lock();
        if let Some(p) = st.penalties.get(&ip)
            && p.until > Instant::now()
        {
            return Err(Turned::Penalised);
        }
        let proven = st.proven.get(&ip).is_some_and(|t| t.elapsed() < PROVEN_FOR);
        if !proven && self.pending.load(Ordering::Relaxed) >= self.limits.max_pending {
            return Err(Turned::TooManyPending);
        }
        let from_ip = st.per_ip.entry(ip).or_default();
        if *from_ip >= self.limits.per_source {
            return Err(Turned::TooManyFromSource);
        }
        *from_ip += 1;
        if !proven {
            let now = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        Ok(Permit {
            gate: self.clone(),
            ip,
            counted: !proven,
        })
    }

    /// Records a failed attempt: the penalty doubles with each strike.
    pub fn strike(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let now = Instant::now();
        let mut st = self.lock();
        if st.penalties.len() >= MAX_PENALISED {
            st.penalties.retain(|_, p| p.until > now);
            if st.penalties.len() >= MAX_PENALISED {
                return;
            }
        }
        let p = st.penalties.entry(ip).or_insert(Penalty {
            strikes: 0,
            until: now,
        });
        // Strikes decay: an address quiet for the maximum penalty starts over.
        if p.until + self.limits.penalty_max < now {
            p.strikes = 0;
        }
        p.strikes = p.strikes.saturating_add(1);
        let factor = 1u32 << (p.strikes - 1).min(16);
        p.until = now + (self.limits.penalty_base * factor).min(self.limits.penalty_max);
    }

    /// An address authenticated: clear its strikes and remember it as proven.
    pub fn proven(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let mut st = self.lock();
        st.penalties.remove(&ip);
        if st.proven.len() >= MAX_PROVEN && !st.proven.contains_key(&ip) {
            st.proven.retain(|_, t| t.elapsed() < PROVEN_FOR);
            if st.proven.len() >= MAX_PROVEN {
                return;
            }
        }
        st.proven.insert(ip, Instant::now());
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The most connections ever authenticating at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.counted {
            self.gate.pending.fetch_sub(1, Ordering::Relaxed);
        }
        let mut st = self.gate.lock();
        if let Some(n) = st.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Arc<Gate> {
        Arc::new(Gate::new(GateLimits {
            max_pending: 3,
            per_source: 2,
            penalty_base: Duration::from_secs(60),
            penalty_max: Duration::from_secs(600),
        }))
    }

    #[tokio::test]
    async fn caps_and_penalties() {
        let g = gate();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = g.enter(a).unwrap();
        let _p2 = g.enter(a).unwrap();
        assert_eq!(g.enter(a).err(), Some(Turned::TooManyFromSource));
        let _p3 = g.enter(b).unwrap();
        assert_eq!(g.enter(b).err(), Some(Turned::TooManyPending));
        drop(p1);
        assert_eq!(g.pending(), 2);
        assert_eq!(g.peak(), 3);
        g.strike(b);
        assert_eq!(g.enter(b).err(), Some(Turned::Penalised));
        g.proven(b);
        // A stranger fills the global cap (a and b's first permit hold 2 of 3).
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let _p4 = g.enter(c).unwrap();
        assert_eq!(
            g.enter("10.0.0.4".parse().unwrap()).err(),
            Some(Turned::TooManyPending)
        );
        // Proven b still gets in, up to its own per-source cap (2).
        let _p5 = g.enter(b).unwrap();
        assert_eq!(g.enter(b).err(), Some(Turned::TooManyFromSource));
        assert_eq!(g.pending(), 3, "proven permits are not counted");
    }
}
