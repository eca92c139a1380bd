//! Who a source is, for the doors a stranger may reach before proving
//! anything (enrol, admin): an IPv4 address, or an IPv6 /64. One IPv6
//! subscriber usually holds a whole /64, so counted per address a single
//! line could pose as 2^64 sources and take every slot of a door.

use std::{
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
};

/// The key a per-source cap or penalty counts under: the address itself
/// for IPv4 (an IPv4-mapped IPv6 address counts as the IPv4 one), the
/// /64 for IPv6.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The network a source belongs to, for caps one step wider than
/// `source_key`: an IPv4 /24, an IPv6 /48 (a site's usual allocation).
pub fn network_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::V4(std::net::Ipv4Addr::new(o[0], o[1], o[2], 0))
        }
    }
}

/// Holders at once per key, each entry with its own limit; a slot gives
/// its place back when dropped. The per-source caps below and the ep's
/// players per service both count this way.
pub struct Counts<K>(Mutex<HashMap<K, usize>>);

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts(Mutex::default())
    }
}

impl<K: Hash + Eq + Clone> Counts<K> {
    /// A place for `key` if it holds fewer than `max`.
    pub fn enter(self: &Arc<Self>, key: K, max: usize) -> Option<Counted<K>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key.clone()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Counted(self.clone(), key))
    }

    /// Places `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(key).copied().unwrap_or(0)
    }
}

/// One place in a `Counts`.
pub struct Counted<K: Hash + Eq + Clone>(Arc<Counts<K>>, K);

impl<K: Hash + Eq + Clone> Drop for Counted<K> {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Connections in progress per source, at most `MAX` each.
#[derive(Default)]
pub struct PerSource<const MAX: usize>(Arc<Counts<IpAddr>>);

/// A connection's place in a `PerSource`.
pub type SourceSlot = Counted<IpAddr>;

impl<const MAX: usize> PerSource<MAX> {
    /// A slot for a connection from `ip`, given back when dropped; None
    /// when its source already holds `MAX`.
    pub fn enter(&self, ip: IpAddr) -> Option<SourceSlot> {
        self.0.enter(source_key(ip), MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_the_64_and_ipv4_by_the_address() {
        let k = |s: &str| source_key(s.parse().unwrap()).to_string();
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
    }
}
