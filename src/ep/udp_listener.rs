//! Which of the addresses a UDP service's host name resolves to has a
//! socket listening on this machine. A TCP dial tries each address in
//! turn; UDP has no handshake to fail, so `localhost:19132` sent to its
//! first address, `::1`, would reach nothing while a Bedrock server
//! listens on IPv4 only (its IPv6 port is 19133). The kernel's tables of
//! UDP sockets (`/proc/net/udp`, `udp6`, this network namespace's) say
//! where something is bound, without sending anything or binding a port
//! a server starting at that moment would then find taken.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

/// The first of `addrs` on this machine's loopback that a UDP socket here
/// listens on; else the first of them (another machine's: a wildcard
/// bound here says nothing of it; or nothing there yet). The answer is
/// kept a few seconds when a listener was found: every live flow is a
/// line of the kernel's table, so reading it for each new flow would
/// cost in proportion to them.
pub(crate) fn pick(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    let first = *addrs.first()?;
    if addrs.len() == 1 || !addrs.iter().any(|a| a.ip().is_loopback()) {
        return Some(first);
    }
    let now = Instant::now();
    let kept = |addrs: &[SocketAddr]| {
        let kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        kept.get(addrs)
            .filter(|(at, _)| now.duration_since(*at) < KEEP_FOR)
            .map(|(_, picked)| *picked)
    };
    if let Some(picked) = kept(addrs) {
        return Some(picked);
    }
    // Read with no lock held: other flows' picks do not wait on it.
    let bound: Vec<SocketAddr> = ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).filter_map(listening).collect::<Vec<_>>())
        .collect();
    let served = |a: &SocketAddr| a.ip().is_loopback() && bound.iter().any(|b| covers(*b, *a));
    let Some(picked) = addrs.iter().copied().find(served) else {
        // Nothing listening yet (a server asleep): not kept, so the first
        // flow after it starts finds it.
        return Some(first);
    };
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() >= 64 {
        kept.clear();
    }
    kept.insert(addrs.to_vec(), (now, picked));
    Some(picked)
}

/// `at` (`host:port`) resolved, and its address picked as above.
pub(crate) async fn resolve(at: &str) -> std::io::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(at).await?.collect();
    pick(&addrs).ok_or_else(|| std::io::Error::other(format!("{at} resolves to no address")))
}

/// How long a pick is kept: a server started since is found within it.
const KEEP_FOR: Duration = Duration::from_secs(5);

type Picks = HashMap<Vec<SocketAddr>, (Instant, SocketAddr)>;
static KEPT: LazyLock<Mutex<Picks>> = LazyLock::new(Mutex::default);

/// Whether a socket bound to `b` receives datagrams sent to `a`: the same
/// port, and the same address or a wildcard of its family (an IPv6
/// wildcard also takes IPv4, as Linux binds it by default).
fn covers(b: SocketAddr, a: SocketAddr) -> bool {
    let (to, from) = (a.ip().to_canonical(), b.ip().to_canonical());
    b.port() == a.port()
        && (from == to
            || from == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            || (from == IpAddr::V4(Ipv4Addr::UNSPECIFIED) && to.is_ipv4()))
}

/// A line of `/proc/net/udp` or `udp6`: its local address, if the socket
/// is not connected to a peer (state 07, no remote address): a server's.
fn listening(line: &str) -> Option<SocketAddr> {
    let mut fields = line.split_whitespace().skip(1);
    let (local, remote, state) = (fields.next()?, fields.next()?, fields.next()?);
    let unconnected = state == "07" && remote.split(':').next()?.bytes().all(|b| b == b'0');
    unconnected.then(|| address(local)).flatten()
}

/// `0100007F:4A9C` (IPv4) or 32 hex digits and a port (IPv6): the kernel
/// prints each 32-bit word of the address as it lies in memory.
fn address(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<[u8; 4]> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?
        .into_iter()
        .map(u32::to_ne_bytes)
        .collect();
    let ip = match words.as_slice() {
        [w] => IpAddr::V4(Ipv4Addr::from(*w)),
        [a, b, c, d] => {
            let bytes: [u8; 16] = [*a, *b, *c, *d].concat().try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_s_lines() {
        let v4 = "  12: 0100007F:4A9C 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0";
        assert_eq!(listening(v4), Some("127.0.0.1:19100".parse().unwrap()));
        let v6 = "  3: 00000000000000000000000001000000:4A9D 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0";
        assert_eq!(listening(v6), Some("[::1]:19101".parse().unwrap()));
        // A connected socket (a client's, such as a flow's own) is no server.
        let client = "  4: 0100007F:C000 0100007F:4A9C 01 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0";
        assert_eq!(listening(client), None);
        assert_eq!(listening("garbage"), None);
    }

    #[test]
    fn a_wildcard_covers_its_family_and_an_ipv6_one_both() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(covers(a("0.0.0.0:19132"), a("127.0.0.1:19132")));
        assert!(!covers(a("0.0.0.0:19132"), a("[::1]:19132")));
        assert!(covers(a("[::]:19132"), a("127.0.0.1:19132")));
        assert!(!covers(a("127.0.0.1:19132"), a("127.0.0.1:19133")));
    }

    /// `localhost` resolving to `::1` first, a server on IPv4 only: the
    /// flow goes to IPv4. With nothing listening, the first address.
    #[test]
    fn the_address_a_server_listens_on_is_picked() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let v6: SocketAddr = (Ipv6Addr::LOCALHOST, port).into();
        let v4: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
        assert_eq!(pick(&[v6, v4]), Some(v4));
        drop(server);
        // Nothing there: the first.
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let none: SocketAddr = (Ipv6Addr::LOCALHOST, other.local_addr().unwrap().port()).into();
        drop(other);
        let v4_none: SocketAddr = (Ipv4Addr::LOCALHOST, none.port()).into();
        assert_eq!(pick(&[none, v4_none]), Some(none));
        // Another machine's addresses: as given.
        let far: [SocketAddr; 2] = [
            "[2001:db8::5]:19132".parse().unwrap(),
            "192.0.2.5:19132".parse().unwrap(),
        ];
        assert_eq!(pick(&far), Some(far[0]));
        assert_eq!(pick(&[]), None);
    }
}
