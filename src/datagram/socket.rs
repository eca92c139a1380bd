//! A player door's UDP socket that says, for each datagram, which of the
//! hub's addresses it reached, and answers from that address. A socket
//! bound to `0.0.0.0` or `[::]` learns it only from the kernel's packet
//! info; a PROXY header must name the address the player reached, not the
//! wildcard; and an answer sent without it leaves from whichever address
//! the route picks, which a player's connected socket or NAT drops when
//! the player wrote to another one (a failover IP, a second IPv6 address).

use nix::sys::socket::{
    self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, sockopt,
};
use std::{
    io::{self, IoSlice, IoSliceMut},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
};
use tokio::{io::Interest, net::UdpSocket};

/// Asks the kernel to report each datagram's destination. An IPv6
/// socket reports IPv4 datagrams (dual-stack) as v4-mapped.
pub fn report_destinations(socket: &UdpSocket) -> io::Result<()> {
    if socket.local_addr()?.is_ipv4() {
        return socket::setsockopt(socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from);
    }
    socket::setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?;
    // An address routed here but on no interface (a whole /64 taken with
    // `ip -6 route add local … dev lo`) is delivered, but IPv6 refuses it
    // as an answer's source unless the socket may use addresses it does
    // not hold; IPv4 takes such a local route's addresses as they are.
    // Set after the bind, it changes nothing else: the only source asked
    // for is the address a player's datagram just reached.
    // Not fatal where refused (a sandbox's kernel): only those answers
    // fall back to the route's address.
    if let Err(e) = socket::setsockopt(socket, sockopt::IpFreebind, &true) {
        tracing::debug!(
            "IP_FREEBIND refused ({e}): answers to a routed, unassigned IPv6 address leave from the route's"
        );
    }
    Ok(())
}

/// The address answers to a datagram sent to `to` leave from (`send_from`):
/// `to` itself when it is one of this host's unicast addresses as far as
/// can be told here, none for a multicast, broadcast or unspecified one
/// (those are never a source; the route picks one).
pub fn answer_from(to: Option<IpAddr>) -> Option<IpAddr> {
    to.filter(|ip| match ip.to_canonical() {
        IpAddr::V4(v4) => !(v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    })
}

/// One received datagram's facts.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    /// The sender, as the socket saw it (v4-mapped on a dual-stack socket).
    pub from: SocketAddr,
    /// The local address it was sent to, when the kernel said.
    pub to: Option<IpAddr>,
}

/// Reads datagrams with their destinations; holds the control-message
/// space so a receive allocates nothing.
pub struct Receiver {
    control: Vec<u8>,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver {
            control: nix::cmsg_space!(nix::libc::in6_pktinfo, nix::libc::in_pktinfo),
        }
    }
}

impl Receiver {
    /// The next datagram into `buf`.
    pub async fn recv(&mut self, socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
        let control = &mut self.control;
        socket
            .async_io(Interest::READABLE, || recv_once(socket, buf, control))
            .await
    }
}

fn recv_once(socket: &UdpSocket, buf: &mut [u8], control: &mut [u8]) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let from = msg
        .address
        .as_ref()
        .and_then(std_addr)
        .ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
    let mut to = None;
    // Truncated control data (it never is: the space fits both kinds)
    // only loses the destination.
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(i) => {
                    to = Some(IpAddr::V4(Ipv4Addr::from(i.ipi_addr.s_addr.to_ne_bytes())))
                }
                ControlMessageOwned::Ipv6PacketInfo(i) => {
                    to = Some(IpAddr::V6(Ipv6Addr::from(i.ipi6_addr.s6_addr)))
                }
                _ => {}
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        from,
        to,
    })
}

/// Sends `buf` to `to` from the hub's address `from` (as the socket saw
/// it, `Received::to`), or from the socket's own address when `from` is
/// None (a socket bound to one address). Waits for room.
pub async fn send_from(
    socket: &UdpSocket,
    buf: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    match from {
        None => socket.send_to(buf, to).await,
        Some(from) => {
            socket
                .async_io(Interest::WRITABLE, || send_once(socket, buf, to, from))
                .await
        }
    }
}

/// The same, without waiting: `WouldBlock` when the socket's buffer is
/// full.
pub fn try_send_from(
    socket: &UdpSocket,
    buf: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    match from {
        None => socket.try_send_to(buf, to),
        Some(from) => socket.try_io(Interest::WRITABLE, || send_once(socket, buf, to, from)),
    }
}

/// One `sendmsg` with the source in the packet info (an IPv4 player on a
/// dual-stack socket: its v4-mapped form). If the kernel will not send
/// from that address (a broadcast or multicast one the player wrote to,
/// or an address since removed), it goes from the one the route picks, as
/// before.
fn send_once(socket: &UdpSocket, buf: &[u8], to: SocketAddr, from: IpAddr) -> io::Result<usize> {
    let iov = [IoSlice::new(buf)];
    let dest = SockaddrStorage::from(to);
    let fd = socket.as_raw_fd();
    let sent = match (to, from) {
        (SocketAddr::V4(_), IpAddr::V4(from)) => {
            let info = nix::libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: nix::libc::in_addr {
                    s_addr: u32::from_ne_bytes(from.octets()),
                },
                ipi_addr: nix::libc::in_addr { s_addr: 0 },
            };
            let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
            socket::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&dest))
        }
        (SocketAddr::V6(_), from) => {
            let from = match from {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let info = nix::libc::in6_pktinfo {
                ipi6_addr: nix::libc::in6_addr {
                    s6_addr: from.octets(),
                },
                ipi6_ifindex: 0,
            };
            let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
            socket::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&dest))
        }
        // An IPv6 source for an IPv4 socket's player: never reported.
        (SocketAddr::V4(_), IpAddr::V6(_)) => return socket.try_send_to(buf, to),
    };
    match sent {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
        // EINVAL: a multicast or limited-broadcast source, or an IPv6
        // address not assigned here; ENETUNREACH: an IPv4 source not local
        // (a subnet's broadcast, an address since removed).
        Err(
            nix::errno::Errno::EINVAL
            | nix::errno::Errno::EADDRNOTAVAIL
            | nix::errno::Errno::ENETUNREACH,
        ) => socket.try_send_to(buf, to),
        Err(e) => Err(e.into()),
    }
}

fn std_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a socket bound to `bind` learns of a datagram a player on
    /// `from` sends to `to` (an address of this host) at its port.
    async fn reached(bind: &str, from: &str, to: &str) -> Received {
        let s = UdpSocket::bind(bind).await.unwrap();
        report_destinations(&s).unwrap();
        let to: IpAddr = to.parse().unwrap();
        let p = std::net::UdpSocket::bind((from.parse::<IpAddr>().unwrap(), 0)).unwrap();
        p.send_to(b"hi", (to, s.local_addr().unwrap().port()))
            .unwrap();
        let mut buf = [0u8; 16];
        let r = Receiver::default().recv(&s, &mut buf).await.unwrap();
        assert_eq!(r.len, 2);
        assert_eq!(r.from.ip().to_canonical(), p.local_addr().unwrap().ip());
        assert_eq!(r.from.port(), p.local_addr().unwrap().port());
        r
    }

    #[tokio::test]
    async fn the_destination_of_a_wildcard_bind_is_the_address_reached() {
        let canon = |r: Received| r.to.map(|ip| ip.to_canonical());
        let r = reached("0.0.0.0:0", "127.0.0.1", "127.0.0.3").await;
        assert_eq!(r.to, Some("127.0.0.3".parse().unwrap()));
        // Dual-stack: an IPv4 player and the address it reached, v4-mapped.
        let r = reached("[::]:0", "127.0.0.1", "127.0.0.4").await;
        assert_eq!(canon(r), Some("127.0.0.4".parse().unwrap()));
        let r = reached("[::]:0", "::1", "::1").await;
        assert_eq!(r.to, Some("::1".parse().unwrap()));
    }

    /// A player whose socket is connected to the address it wrote to
    /// (127.0.0.3, not the 127.0.0.1 the route would answer from) hears
    /// the answer, on an IPv4 and a dual-stack wildcard bind.
    #[tokio::test]
    async fn an_answer_leaves_from_the_address_the_player_wrote_to() {
        for bind in ["0.0.0.0:0", "[::]:0"] {
            let s = UdpSocket::bind(bind).await.unwrap();
            report_destinations(&s).unwrap();
            let port = s.local_addr().unwrap().port();
            let p = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            p.connect(("127.0.0.3", port)).await.unwrap();
            p.send(b"hi").await.unwrap();
            let mut buf = [0u8; 16];
            let r = Receiver::default().recv(&s, &mut buf).await.unwrap();
            send_from(&s, b"back", r.from, r.to).await.unwrap();
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), p.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no answer on {bind}"))
                .unwrap();
            assert_eq!(&buf[..n], b"back");
            // Plain `send_to` leaves from 127.0.0.1: the player never hears it.
            assert!(try_send_from(&s, b"lost", r.from, None).is_ok());
            assert!(try_send_from(&s, b"kept", r.from, r.to).is_ok());
            let n = p.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"kept", "on {bind}");
        }
    }

    /// A whole IPv6 network routed to the host (`local` route, on no
    /// interface): a player writing to any of its addresses hears the
    /// answer from that address. In a network namespace of its own, which
    /// needs root; skipped (and said) otherwise.
    #[test]
    fn an_answer_leaves_from_an_address_routed_here_but_not_assigned() {
        let run = std::thread::spawn(|| {
            use nix::sched::{CloneFlags, unshare};
            if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
                eprintln!("skipped: a network namespace of its own needs root ({e})");
                return;
            }
            // Children of this thread start in its namespace.
            for args in [
                &["link", "set", "lo", "up"][..],
                &[
                    "-6",
                    "route",
                    "add",
                    "local",
                    "2001:db8:f::/64",
                    "dev",
                    "lo",
                ],
            ] {
                let ok = std::process::Command::new("ip").args(args).status();
                assert!(ok.is_ok_and(|s| s.success()), "ip {args:?}");
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let s = UdpSocket::bind("[::]:0").await.unwrap();
                    report_destinations(&s).unwrap();
                    let port = s.local_addr().unwrap().port();
                    let p = UdpSocket::bind("[::1]:0").await.unwrap();
                    p.connect(("2001:db8:f::77", port)).await.unwrap();
                    p.send(b"hi").await.unwrap();
                    let mut buf = [0u8; 16];
                    let r = Receiver::default().recv(&s, &mut buf).await.unwrap();
                    assert_eq!(r.to, Some("2001:db8:f::77".parse().unwrap()));
                    send_from(&s, b"back", r.from, r.to).await.unwrap();
                    let got =
                        tokio::time::timeout(std::time::Duration::from_secs(5), p.recv(&mut buf))
                            .await;
                    assert!(
                        matches!(got, Ok(Ok(4))),
                        "the player heard nothing from 2001:db8:f::77"
                    );
                });
        });
        run.join().unwrap();
    }

    /// A source the kernel will not send from (not this host's, as a
    /// subnet's broadcast or a removed address is) still gets the answer
    /// out, from the route's address; multicast and broadcast sources are
    /// never asked for.
    #[tokio::test]
    async fn a_source_the_kernel_refuses_falls_back_to_the_routes() {
        for bind in ["0.0.0.0:0", "[::]:0"] {
            let s = UdpSocket::bind(bind).await.unwrap();
            let p = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let to = SocketAddr::new(
                match bind {
                    "[::]:0" => IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
                    _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
                },
                p.local_addr().unwrap().port(),
            );
            let gone: IpAddr = "192.0.2.1".parse().unwrap();
            send_from(&s, b"out", to, Some(gone)).await.unwrap();
            let mut buf = [0u8; 8];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), p.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("nothing on {bind}"))
                .unwrap();
            assert_eq!(&buf[..n], b"out");
        }
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        for never in ["255.255.255.255", "224.0.0.1", "0.0.0.0", "ff02::1", "::"] {
            assert_eq!(answer_from(ip(never)), None, "{never}");
        }
        assert_eq!(answer_from(ip("127.0.0.3")), ip("127.0.0.3"));
    }
}
