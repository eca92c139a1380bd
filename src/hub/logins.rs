//! What the control, channel and QUIC doors share while eps log in: the
//! gates (caps and penalties per address), the penalties charged to an ep
//! identity once its certificate was verified, and the bounded Argon2 work.
//!
//! A token that verified for an ep is remembered by its SHA-256 with the
//! hash it matched, so that ep logging in again with it (a reconnect, or
//! an ep logging in over and over on purpose) costs no Argon2 run: one ep
//! cannot keep the few Argon2 slots busy and leave other eps' logins told
//! "busy". A rotated hash no longer matches what was remembered.

use super::{gate, stats::InFlight};
use crate::{
    config::hub::HubLimits,
    penalties::{Penalties, PenaltyRange},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};
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
    /// Per ep name: the hash a token verified against, and the token's
    /// SHA-256. One entry per name a valid certificate carries.
    verified: Mutex<HashMap<String, (String, [u8; 32])>>,
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
            verified: Mutex::default(),
        }
    }

    /// Whether `token` verified for `ep` against `hash` before (compared
    /// without an early exit).
    pub fn verified_before(&self, ep: &str, hash: &str, token: &crate::secret::Secret) -> bool {
        let known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let Some((h, d)) = known.get(ep) else {
            return false;
        };
        crate::token::same(d, &crate::token::digest(token.expose())) && h == hash
    }

    /// `token` verified for `ep` against `hash`.
    pub fn remember(&self, ep: &str, hash: &str, token: &crate::secret::Secret) {
        let mut known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(
            ep.to_string(),
            (hash.to_string(), crate::token::digest(token.expose())),
        );
    }

    pub fn identities(&self) -> MutexGuard<'_, Penalties<String>> {
        self.identities.lock().unwrap_or_else(|p| p.into_inner())
    }
}
