//! Caps on connections still authenticating: at most `max_pending` at once
//! from strangers, at most `per_source` from any one address.

use crate::hub::stats::{InFlight, Running};
use std::{collections::HashMap, net::IpAddr, sync::Arc};

#[derive(Debug, Clone, Copy)]
pub struct PendingCaps {
    pub max_pending: usize,
    pub per_source: usize,
}

/// Why the caps turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Everyone,
    Source,
}

pub(crate) struct Limits {
    caps: PendingCaps,
    /// Strangers authenticating (proven addresses are not counted).
    pub strangers: Arc<InFlight>,
    per_ip: HashMap<IpAddr, usize>,
}

/// One place taken; give it back with `Limits::leave`.
pub(crate) struct Place {
    _counted: Option<Running>,
}

impl Limits {
    pub fn new(caps: PendingCaps) -> Self {
        Limits {
            caps,
            strangers: Arc::default(),
            per_ip: HashMap::new(),
        }
    }

    /// Takes a place for `ip`. A proven address skips the global cap, so a
    /// crowd of strangers cannot lock a known ep out; it still obeys its
    /// per-source cap.
    pub fn enter(&mut self, ip: IpAddr, proven: bool) -> Result<Place, Full> {
        if !proven && self.strangers.now() >= self.caps.max_pending {
            return Err(Full::Everyone);
        }
        let from_ip = self.per_ip.entry(ip).or_default();
        if *from_ip >= self.caps.per_source {
            return Err(Full::Source);
        }
        *from_ip += 1;
        Ok(Place {
            _counted: (!proven).then(|| self.strangers.enter()),
        })
    }

    pub fn leave(&mut self, ip: IpAddr, place: Place) {
        drop(place);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}
