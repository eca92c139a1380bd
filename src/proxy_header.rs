//! PROXY protocol headers (HAProxy's v1 text and v2 binary forms), so a
//! service at home sees each player's real address instead of the ep's.
//!
//! The ep writes one right after it dials the service, before any player
//! byte: the player's address as the source, the hub's public address of
//! the service as the destination.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// Which header a service expects (`proxy_protocol = "v1"` / `"v2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// v2's twelve-byte signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Whether `d` begins as a v2 header does: a player's datagram shaped so
/// would be taken for one by a service that forgot the real header.
pub fn looks_like_v2(d: &[u8]) -> bool {
    d.starts_with(&V2_SIGNATURE)
}

/// Both addresses in one family: a v4 address beside a v6 one is written
/// v4-mapped, as receivers expect one family per header.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    let (src, dst) = (canonical(src), canonical(dst));
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (v6(src), v6(dst))
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The header for a TCP connection from `src` (the player) to `dst` (the
/// service's public address on the hub).
pub fn tcp_header(version: Version, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    match version {
        Version::V1 => {
            let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {proto} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        Version::V2 => v2(0x1, src, dst),
    }
}

/// The header of a connection the ep makes on its own behalf (seeing
/// whether a sleeping service answers yet): v1's `UNKNOWN`, v2's `LOCAL`
/// command. A service that requires the header takes it and uses the
/// connection's own addresses.
pub fn local_header(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            // Version 2, command LOCAL; family and protocol unspecified;
            // no address block.
            out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            out
        }
    }
}

/// The v2 header for a UDP flow (v1 has no form for datagrams), put in
/// front of a datagram's payload.
pub fn udp_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    v2(0x2, src, dst)
}

/// A v2 header; `transport` is 1 for a stream, 2 for datagrams.
fn v2(transport: u8, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    let mut addrs = Vec::with_capacity(36);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x10 | transport);
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x20 | transport);
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            addrs.extend_from_slice(&v6(s));
            addrs.extend_from_slice(&v6(d));
        }
    }
    addrs.extend_from_slice(&src.port().to_be_bytes());
    addrs.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&addrs);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_headers_parse_as_local() {
        let v2 = local_header(Version::V2);
        let parsed = ppp_free_v2_check(&v2);
        assert!(parsed);
        assert_eq!(local_header(Version::V1), b"PROXY UNKNOWN\r\n");
    }

    /// The v2 layout by hand: signature, 0x20 (v2, LOCAL), no addresses.
    fn ppp_free_v2_check(h: &[u8]) -> bool {
        h.len() == 16 && h[..12] == V2_SIGNATURE && h[12] == 0x20 && h[14..16] == [0, 0]
    }

    #[test]
    fn v1_text_and_mixed_families() {
        let h = tcp_header(
            Version::V1,
            "203.0.113.9:51000".parse().unwrap(),
            "198.51.100.1:25565".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 203.0.113.9 198.51.100.1 51000 25565\r\n");
        let h = tcp_header(
            Version::V1,
            "[2001:db8::1]:51000".parse().unwrap(),
            "198.51.100.1:25565".parse().unwrap(),
        );
        assert_eq!(
            h,
            b"PROXY TCP6 2001:db8::1 ::ffff:198.51.100.1 51000 25565\r\n"
        );
    }

    #[test]
    fn v2_lengths() {
        let v4 = tcp_header(
            Version::V2,
            "203.0.113.9:1".parse().unwrap(),
            "198.51.100.1:2".parse().unwrap(),
        );
        assert_eq!(v4.len(), 16 + 12);
        assert_eq!(v4[13], 0x11);
        let v6 = tcp_header(
            Version::V2,
            "[2001:db8::1]:1".parse().unwrap(),
            "[2001:db8::2]:2".parse().unwrap(),
        );
        assert_eq!(v6.len(), 16 + 36);
        assert_eq!(v6[13], 0x21);
    }
}
