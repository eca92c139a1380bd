//! A service's shape: which protocols it carries (`type`) and on which
//! ports (`"host:port"` or a range `"host:first-last"`).

use serde::{Deserialize, Deserializer, Serialize, de};
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

/// Ports in one range at most; a range is bound port by port, and a typo
/// like `1000-60000` should not open fifty thousand sockets.
pub const MAX_RANGE: u16 = 1024;

/// `type` of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ServiceKind {
    #[default]
    #[serde(rename = "tcp")]
    Tcp,
    #[serde(rename = "udp")]
    Udp,
    /// The same port numbers, both protocols.
    #[serde(rename = "tcp+udp")]
    TcpUdp,
}

impl ServiceKind {
    pub fn tcp(self) -> bool {
        matches!(self, ServiceKind::Tcp | ServiceKind::TcpUdp)
    }

    pub fn udp(self) -> bool {
        matches!(self, ServiceKind::Udp | ServiceKind::TcpUdp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Tcp => "tcp",
            ServiceKind::Udp => "udp",
            ServiceKind::TcpUdp => "tcp+udp",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits `"host:port"` or `"host:first-last"` into the host and the
/// range; IPv6 literals are bracketed.
pub fn split_range(s: &str) -> Result<(String, u16, u16), String> {
    let bad = || format!("{s:?} is not host:port or host:first-last (e.g. \"0.0.0.0:2456-2458\")");
    let (host, ports) = super::split_host(s).ok_or_else(bad)?;
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (ports, ports),
    };
    let first: u16 = first.parse().map_err(|_| bad())?;
    let last: u16 = last.parse().map_err(|_| bad())?;
    if last < first {
        return Err(format!("{s:?}: the range ends before it starts"));
    }
    if first == 0 && last != 0 {
        return Err(format!(
            "{s:?}: port 0 (any free port) cannot start a range"
        ));
    }
    if last - first >= MAX_RANGE {
        return Err(format!("{s:?}: a range holds at most {MAX_RANGE} ports"));
    }
    Ok((host.to_string(), first, last))
}

/// A hub's `bind`: an address and one port or a range of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindRange {
    pub ip: IpAddr,
    pub first: u16,
    /// Ports in the range (1 for a single port).
    pub count: u16,
}

impl BindRange {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, first, last) = split_range(s)?;
        let ip = host
            .parse()
            .map_err(|_| format!("{s:?}: {host:?} is not an IP address to listen on"))?;
        Ok(BindRange {
            ip,
            first,
            count: last - first + 1,
        })
    }

    /// The address of the port at `offset` in the range.
    pub fn at(&self, offset: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.first + offset)
    }

    pub fn ports(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        (0..self.count).map(|o| self.at(o))
    }

    pub fn overlaps(&self, other: &BindRange) -> bool {
        let (a0, a1) = (self.first as u32, self.first as u32 + self.count as u32);
        let (b0, b1) = (other.first as u32, other.first as u32 + other.count as u32);
        self.first != 0 && other.first != 0 && a0 < b1 && b0 < a1 && {
            let any = |ip: IpAddr| ip.is_unspecified();
            self.ip == other.ip || any(self.ip) || any(other.ip)
        }
    }
}

impl fmt::Display for BindRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.ip, self.first))?;
        if self.count > 1 {
            write!(f, "-{}", self.first + self.count - 1)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for BindRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BindRange::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// An ep's `local`: a host name or address and one port or a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRange {
    pub host: String,
    pub first: u16,
    pub count: u16,
}

impl LocalRange {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, first, last) = split_range(s)?;
        if first == 0 {
            return Err(format!("{s:?}: port 0 is not a service's port"));
        }
        Ok(LocalRange {
            host,
            first,
            count: last - first + 1,
        })
    }

    /// `host:port` of the port at `offset`, for dialling.
    pub fn at(&self, offset: u16) -> String {
        super::join_host_port(&self.host, self.first + offset)
    }
}

impl fmt::Display for LocalRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.at(0))?;
        if self.count > 1 {
            write!(f, "-{}", self.first + self.count - 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        let r = BindRange::parse("0.0.0.0:2456-2458").unwrap();
        assert_eq!((r.first, r.count), (2456, 3));
        assert_eq!(r.to_string(), "0.0.0.0:2456-2458");
        assert_eq!(BindRange::parse("[::1]:7000").unwrap().count, 1);
        assert!(BindRange::parse("0.0.0.0:10-5").is_err());
        assert!(BindRange::parse("0.0.0.0:0-5").is_err());
        assert!(BindRange::parse("0.0.0.0:1000-60000").is_err());
        assert!(BindRange::parse("example.com:80").is_err());
        let l = LocalRange::parse("localhost:2456-2458").unwrap();
        assert_eq!(l.at(2), "localhost:2458");
        assert_eq!(LocalRange::parse("[::1]:53").unwrap().at(0), "[::1]:53");
        assert!(LocalRange::parse("localhost:0").is_err());
    }

    #[test]
    fn overlapping_binds_are_found() {
        let a = BindRange::parse("0.0.0.0:2456-2458").unwrap();
        assert!(a.overlaps(&BindRange::parse("127.0.0.1:2458").unwrap()));
        assert!(!a.overlaps(&BindRange::parse("127.0.0.1:2459").unwrap()));
        assert!(!a.overlaps(&BindRange::parse("127.0.0.1:0").unwrap()));
    }
}
