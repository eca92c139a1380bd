//! What the hub tells an ep of its services' byte-rate caps (feature
//! `pace`): at login and after a reload changes them, so the ep sends a
//! capped player's bytes home → hub no faster than the hub will read them,
//! and the home uplink sees the cap, not bursts as large as the buffers
//! between the two. The hub's own limiters stay the authority.

use super::{Shared, sessions::SessionGuard};
use crate::proto::{HubMsg, MAX_FRAME, Rates};
use std::collections::BTreeMap;

/// Room in a frame for the message around the services.
const ENVELOPE: usize = 64;

fn json_len<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |j| j.len())
}

/// The caps a session last told its ep; off for an ep without `pace`.
pub(super) struct Paced {
    on: bool,
    told: Option<BTreeMap<String, Rates>>,
}

impl Paced {
    pub fn new(on: bool) -> Self {
        Paced { on, told: None }
    }

    pub fn on(&self) -> bool {
        self.on
    }

    /// A `Pace` when the caps of what the session serves differ from what
    /// the ep was last told (the first call: always). Only capped
    /// services are named (one not named is uncapped), as many as one
    /// frame holds: past that (hundreds of capped services on one ep) the
    /// rest are held to their caps by the hub alone, and a warning says so.
    pub fn due(&mut self, shared: &Shared, guard: &SessionGuard) -> Option<HubMsg> {
        if !self.on {
            return None;
        }
        let (mut now, mut left_out) = (BTreeMap::new(), 0);
        let mut room = MAX_FRAME - ENVELOPE;
        for s in guard.services() {
            let Some(rates) = shared.served(&s.name).map(|d| d.door.caps().rates()) else {
                continue;
            };
            if rates == Rates::default() {
                continue;
            }
            // Name and rates as written, a colon and a comma.
            let cost = json_len(&s.name).saturating_add(json_len(&rates) + 2);
            if cost >= room {
                left_out += 1;
                continue;
            }
            room -= cost;
            now.insert(s.name.clone(), rates);
        }
        if self.told.as_ref() == Some(&now) {
            return None;
        }
        if left_out > 0 {
            tracing::warn!(ep = %guard.ep, left_out, "more capped services than one message names; the ep does not pace those left out (the hub still holds them to their caps)");
        }
        self.told = Some(now.clone());
        Some(HubMsg::Pace { services: now })
    }
}
