//! `ep_allowlist`: source networks allowed on the control and channel ports.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct Allowlist(Vec<IpNet>);

/// The same networks, in whatever order: an enrolment adds its address at
/// the end, a reload in the order of the names, and the two must not
/// look like a change (which would restart an allowlist cut's drain).
impl PartialEq for Allowlist {
    fn eq(&self, other: &Self) -> bool {
        self.sorted() == other.sorted()
    }
}

impl Eq for Allowlist {}

impl Allowlist {
    /// The networks in order, each once.
    pub fn sorted(&self) -> Vec<IpNet> {
        let set: std::collections::BTreeSet<IpNet> = self.0.iter().copied().collect();
        set.into_iter().collect()
    }

    /// IPv4 peers reach a dual-stack listener as `::ffff:a.b.c.d`; they are
    /// matched as the IPv4 address the operator wrote.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when some entry admits every address (0.0.0.0/0 or ::/0).
    pub fn is_wide_open(&self) -> bool {
        self.0.iter().any(|n| n.prefix_len() == 0)
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// Adds one host (an enrolled ep's address).
    pub fn add(&mut self, ip: IpAddr) {
        if !self.contains(ip) {
            self.0.push(IpNet::from(ip.to_canonical()));
        }
    }
}

/// Accepts CIDR notation or a bare address (meaning that one host). An
/// IPv4-mapped entry (`::ffff:203.0.113.7`, as a dual-stack socket's logs
/// show an IPv4 player) is kept as the IPv4 network it names, since
/// peers are matched in that form.
fn parse_entry(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(canonical)
        .map_err(|_| format!("{s:?} is not an address or CIDR network (e.g. \"203.0.113.0/24\")"))
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as the IPv4 network it names.
pub fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

impl<'de> Deserialize<'de> for Allowlist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Vec::<String>::deserialize(d)?;
        raw.iter()
            .map(|s| parse_entry(s))
            .collect::<Result<Vec<_>, _>>()
            .map(Allowlist)
            .map_err(de::Error::custom)
    }
}

impl Serialize for Allowlist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|n| n.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An enrolment appends its address; a reload adds the enrolled
    /// addresses in the order of the names: the same list either way.
    #[test]
    fn the_same_networks_in_another_order_are_the_same_list() {
        let (a, b): (IpAddr, IpAddr) = (
            "203.0.113.7".parse().unwrap(),
            "198.51.100.9".parse().unwrap(),
        );
        let (mut one, mut two) = (Allowlist::default(), Allowlist::default());
        one.add(a);
        one.add(b);
        two.add(b);
        two.add(a);
        assert_eq!(one, two);
        two.add("192.0.2.1".parse().unwrap());
        assert_ne!(one, two);
    }

    #[test]
    fn matches_cidrs_hosts_and_mapped_v4() {
        let list = Allowlist(vec![
            parse_entry("10.0.0.0/8").unwrap(),
            parse_entry("127.0.0.1").unwrap(),
        ]);
        assert!(list.contains("10.1.2.3".parse().unwrap()));
        assert!(list.contains("127.0.0.1".parse().unwrap()));
        assert!(list.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!list.contains("127.0.0.2".parse().unwrap()));
        assert!(!list.is_wide_open());
        assert!(parse_entry("nope").is_err());
    }

    /// An entry copied from a dual-stack socket's log, in the v4-mapped
    /// form, names the IPv4 player it shows.
    #[test]
    fn a_v4_mapped_entry_matches_its_ipv4_peer() {
        let list = Allowlist(vec![
            parse_entry("::ffff:203.0.113.7").unwrap(),
            parse_entry("::ffff:198.51.100.0/120").unwrap(),
        ]);
        assert!(list.contains("203.0.113.7".parse().unwrap()));
        assert!(list.contains("::ffff:203.0.113.7".parse().unwrap()));
        assert!(list.contains("198.51.100.9".parse().unwrap()));
        assert!(!list.contains("203.0.113.8".parse().unwrap()));
        assert_eq!(list.nets()[0].to_string(), "203.0.113.7/32");
    }
}
