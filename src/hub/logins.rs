//! What the control, channel and QUIC doors share while eps log in: the
//! gates (caps and penalties per address), the penalties charged to an ep
//! identity once its certificate was verified, and the bounded Argon2 work.

use super::{gate, stats::InFlight};
use crate::{
    config::hub::HubLimits,
    penalties::{Penalties, PenaltyRange},
};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Semaphore;

pub(crate) struct Logins {
    /// Strangers on the control port and the QUIC door.
    pub gate: Arc<gate::Gate>,
    /// Channel connections from logged-in eps' addresses.
    pub channel_gate: Arc<gate::Gate>,
    /// Failed logins charged to the ep certificate that failed, not to its
    /// address (see `gate`).
    identities: Mutex<Penalties<String>>,
    pub argon2: Arc<Semaphore>,
    pub argon2_stats: Arc<InFlight>,
}

impl Logins {
    pub fn new(l: &HubLimits) -> Logins {
        let penalties = PenaltyRange {
            base: l.penalty_base,
            max: l.penalty_max,
        };
        let caps = |max_pending, per_source| gate::PendingCaps {
            max_pending,
            per_source,
        };
        Logins {
            gate: Arc::new(gate::Gate::new(
                caps(l.max_pending_auth, l.max_pending_per_source),
                penalties,
            )),
            // A logged-in ep opens many channels at once; its address gets
            // a roomier gate of its own, so strangers cannot crowd it out.
            channel_gate: Arc::new(gate::Gate::new(
                caps(4 * l.max_pending_auth, 4 * l.max_pending_auth),
                penalties,
            )),
            identities: Mutex::new(Penalties::new(penalties)),
            argon2: Arc::new(Semaphore::new(l.argon2_concurrency)),
            argon2_stats: Arc::default(),
        }
    }

    pub fn identities(&self) -> MutexGuard<'_, Penalties<String>> {
        self.identities.lock().unwrap_or_else(|p| p.into_inner())
    }
}
