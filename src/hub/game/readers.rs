//! Connections reading their first packet on a Minecraft Java port: their
//! places (`places`: per source, per network and in all, the oldest
//! giving way to a newcomer at each cap), and each one's place under the
//! hub's player cap (a reader holds a file as a player does). That place
//! passes to the player the reader becomes, and on a full hub to the
//! newcomer that takes an older reader's place, so silent connections
//! never keep out the players the cap leaves room for.

use crate::{
    hub::{
        Shared,
        admission::{CapSlot, HubCap},
        refusals::Reason,
    },
    places::{Admission, Scope, Ticket},
};
use std::{net::IpAddr, sync::Arc};

/// Connections reading at most, across the hub (and never more than a
/// quarter of the hub's player cap, nor fewer than `MIN_READERS` unless
/// that is over half of it: on a small hub, readers leave players room).
const MAX_READERS: usize = 1024;
const MIN_READERS: usize = 16;
/// Of those, from one source (an IPv4 address, an IPv6 /64).
const MAX_READERS_PER_SOURCE: usize = 8;
/// Of those, from one IPv4 /24 or IPv6 /48.
const MAX_READERS_PER_NET: usize = 64;

/// The readers' places for a hub whose player cap is `cap`. At a cap a
/// newcomer takes the place of the oldest reader there, which is reset:
/// a client writes its handshake within a round trip of its connect, so
/// strangers holding silent connections from many networks cannot keep
/// every Java player of the hub out, as they could while a newcomer was
/// the one turned away.
pub(in crate::hub) fn places(cap: &HubCap) -> Arc<Admission> {
    let most = MAX_READERS
        .min(cap.max() / 4)
        .max(MIN_READERS.min(cap.max() / 2))
        .max(1);
    Admission::with_limits(most, MAX_READERS_PER_SOURCE, MAX_READERS_PER_NET)
}

/// One reader's places.
pub(super) struct Reading {
    ticket: Ticket,
    slot: Option<CapSlot>,
}

/// A reader's places, or why there is none: the hub's cap is reached and
/// no reader waits to give way (`HubFull`), or (which cannot be: readers
/// wait while they hold a place) none of the readers' places is free.
pub(super) fn enter(shared: &Shared, ip: IpAddr) -> Result<Reading, Reason> {
    let cap = &shared.cap;
    let (ticket, slot) = match cap.slot() {
        Some(slot) => {
            let ticket = shared.game_readers.enter(ip);
            (ticket.ok_or(Reason::GameHandshakesPending)?, slot)
        }
        // The oldest reader's place, and its place under the cap, which
        // it hands over rather than gives back (`Reading`'s drop).
        None => {
            let ticket = shared.game_readers.displace(ip).ok_or(Reason::HubFull)?;
            (ticket, CapSlot::handed(cap))
        }
    };
    Ok(Reading {
        ticket,
        slot: Some(slot),
    })
}

impl Reading {
    /// Resolves when a newer connection took this one's place.
    pub fn evicted(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.ticket.evicted()
    }

    /// Whose cap gave this one's place away, once one did.
    pub fn evicted_by(&self) -> Option<Scope> {
        self.ticket.evicted_by()
    }

    /// Its place under the hub's cap, for the player it becomes; None if
    /// a newcomer on a full hub took it meanwhile (its reader's place
    /// taken by a cap of the readers' own, it keeps this one).
    pub fn into_slot(mut self) -> Option<CapSlot> {
        let kept = self.ticket.served();
        if !kept && self.ticket.evicted_by() == Some(Scope::Elsewhere) {
            return None;
        }
        self.slot.take()
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        // No longer waiting first, so no newcomer can take its place
        // between the look below and the slot's going.
        let kept = self.ticket.served();
        let Some(slot) = self.slot.take() else { return };
        // Displaced on a full hub: the newcomer holds this place under
        // the cap now, and gives it back in its turn.
        if !kept && self.ticket.evicted_by() == Some(Scope::Elsewhere) {
            slot.hand_over();
        }
    }
}
