//! One-time channel tickets: issued with an `Open` on a session's control
//! connection, redeemed once by the channel that presents them.

use std::{collections::HashMap, time::Duration};
use tokio::time::Instant;

type TicketKey = [u8; 32];

/// Keyed by the ticket's SHA-256, so the map's comparisons never touch the
/// secret itself: whatever a lookup's timing reveals is about a hash, not a
/// usable ticket.
fn ticket_key(ticket: &str) -> TicketKey {
    let d = ring::digest::digest(&ring::digest::SHA256, ticket.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(d.as_ref());
    key
}

pub(crate) struct Tickets {
    ttl: Duration,
    /// Ticket digest → (session, expiry).
    pending: HashMap<TicketKey, (u64, Instant)>,
}

impl Tickets {
    pub fn new(ttl: Duration) -> Self {
        Tickets {
            ttl,
            pending: HashMap::new(),
        }
    }

    /// How long tickets issued from now on live.
    pub fn set_ttl(&mut self, ttl: Duration) {
        self.ttl = ttl;
    }

    /// A fresh ticket for `session`.
    pub fn issue(&mut self, session: u64) -> String {
        let ticket = crate::token::random_hex(32);
        self.pending
            .insert(ticket_key(&ticket), (session, Instant::now() + self.ttl));
        ticket
    }

    /// Forgets a ticket that was never sent.
    pub fn withdraw(&mut self, ticket: &str) {
        self.pending.remove(&ticket_key(ticket));
    }

    /// Uses up `ticket`; the session it was issued on.
    pub fn redeem(&mut self, ticket: &str) -> Result<u64, &'static str> {
        let (session, expiry) = self
            .pending
            .remove(&ticket_key(ticket))
            .ok_or("unknown or already used ticket")?;
        if expiry <= Instant::now() {
            return Err("expired ticket");
        }
        Ok(session)
    }

    /// The ep says `ticket`'s channel will not come. Only the session it
    /// was issued on may say so.
    pub fn cancel(&mut self, ticket: &str, session: u64) -> bool {
        let key = ticket_key(ticket);
        if self.pending.get(&key).is_some_and(|(s, _)| *s == session) {
            self.pending.remove(&key);
            true
        } else {
            false
        }
    }

    pub fn expire(&mut self) {
        let now = Instant::now();
        self.pending.retain(|_, (_, exp)| *exp > now);
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload's new lifetime applies to the tickets issued after it.
    #[test]
    fn a_new_lifetime_applies_to_tickets_issued_after_it() {
        let mut t = Tickets::new(Duration::from_millis(1));
        let short = t.issue(1);
        t.set_ttl(Duration::from_secs(60));
        let long = t.issue(1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.redeem(&short), Err("expired ticket"));
        assert_eq!(t.redeem(&long), Ok(1));
    }
}
