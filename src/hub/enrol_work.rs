//! Enrolments at work on the enrol door: past a usable invite id, each
//! costs a TLS handshake, then a signature and an Argon2 hash. At most
//! `SLOTS` at once and `PER_SOURCE` from one source (an IPv4 address, an
//! IPv6 /64), and one per invite id.
//!
//! An invite's id is not secret (the line's holder has it, the hub logs
//! it, it crosses the network before TLS), so an id's place is not kept
//! by whoever took it first: until its request has arrived, a newer
//! connection for the same id takes it over and the older one is closed.
//! An ep sends its request within a few round trips of the CA line, so to
//! keep it out one must take its place over faster than that, again and
//! again, rather than hold it with one idle connection.

use crate::sources::{PerSource, SourceSlot};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub(super) const SLOTS: usize = 16;
const PER_SOURCE: usize = 2;

#[derive(Default)]
pub(crate) struct AtWork {
    state: Mutex<Work>,
    sources: PerSource<PER_SOURCE>,
}

#[derive(Default)]
struct Work {
    total: usize,
    next: u64,
    /// The one enrolment of each invite id.
    ids: HashMap<String, Holder>,
}

struct Holder {
    serial: u64,
    taken: CancellationToken,
    /// Its request arrived: its secret is being checked, it keeps the id.
    asked: bool,
}

/// One enrolment's share, given back when dropped.
pub(crate) struct Working {
    work: Arc<AtWork>,
    id: String,
    serial: u64,
    taken: CancellationToken,
    _source: SourceSlot,
}

impl AtWork {
    fn lock(&self) -> std::sync::MutexGuard<'_, Work> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A share for an enrolment of invite `id` from `ip`, taking the id
    /// over from an earlier one still waiting for its request; None past
    /// the caps.
    pub fn begin(self: &Arc<Self>, id: &str, ip: IpAddr) -> Option<Working> {
        let source = self.sources.enter(ip)?;
        let mut w = self.lock();
        match w.ids.get(id) {
            Some(h) if h.asked => return None,
            // The earlier one is closed; its share goes when it notices.
            Some(h) => h.taken.cancel(),
            None if w.total >= SLOTS => return None,
            None => {}
        }
        w.total += 1;
        w.next += 1;
        let (serial, taken) = (w.next, CancellationToken::new());
        let holder = Holder {
            serial,
            taken: taken.clone(),
            asked: false,
        };
        w.ids.insert(id.to_string(), holder);
        Some(Working {
            work: self.clone(),
            id: id.to_string(),
            serial,
            taken,
            _source: source,
        })
    }
}

impl Working {
    /// Fires when a newer connection for the same id took this one's place.
    pub fn taken(&self) -> WaitForCancellationFutureOwned {
        self.taken.clone().cancelled_owned()
    }

    /// Its request arrived: from now on it keeps the id. False if its
    /// place was taken first.
    pub fn asked(&self) -> bool {
        let mut w = self.work.lock();
        match w.ids.get_mut(&self.id) {
            Some(h) if h.serial == self.serial => {
                h.asked = true;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        let mut w = self.work.lock();
        w.total -= 1;
        if w.ids.get(&self.id).is_some_and(|h| h.serial == self.serial) {
            w.ids.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// One idle connection cannot keep an invite's place: a newer one for
    /// the same id takes it over until its request has arrived; after
    /// that the id is busy. Sources and the door have their caps.
    #[test]
    fn an_ids_place_is_taken_over_until_its_request_arrives() {
        let work = Arc::new(AtWork::default());
        let first = work.begin("aa", ip("192.0.2.1")).unwrap();
        let second = work.begin("aa", ip("192.0.2.2")).unwrap();
        assert!(first.taken.is_cancelled() && !first.asked());
        assert!(second.asked(), "the newer one keeps the id once asked");
        assert!(work.begin("aa", ip("192.0.2.3")).is_none(), "being checked");
        drop(first);
        assert_eq!(work.lock().ids["aa"].serial, second.serial);
        drop(second);
        assert!(work.lock().ids.is_empty());

        let _a = work.begin("b1", ip("2001:db8::1")).unwrap();
        let _b = work.begin("b2", ip("2001:db8::2")).unwrap();
        assert!(work.begin("b3", ip("2001:db8::3")).is_none(), "a /64's two");
        let held: Vec<_> = (0..SLOTS - 2)
            .map(|i| work.begin(&format!("c{i}"), ip(&format!("198.51.100.{i}"))))
            .collect();
        assert!(held.iter().all(Option::is_some));
        assert!(
            work.begin("d", ip("203.0.113.1")).is_none(),
            "the door's 16"
        );
        drop(held);
        assert_eq!(work.lock().total, 2);
    }
}
