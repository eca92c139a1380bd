//! A player door's UDP socket that says, for each datagram, which of the
//! hub's addresses it reached. A socket bound to `0.0.0.0` or `[::]`
//! learns that only from the kernel's packet info, and a PROXY header
//! must name the address the player reached, not the wildcard.

use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, SockaddrStorage, sockopt};
use std::{
    io::{self, IoSliceMut},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
};
use tokio::{io::Interest, net::UdpSocket};

/// Asks the kernel to report each datagram's destination. An IPv6
/// socket reports IPv4 datagrams (dual-stack) as v4-mapped.
pub fn report_destinations(socket: &UdpSocket) -> io::Result<()> {
    let set = if socket.local_addr()?.is_ipv4() {
        socket::setsockopt(socket, sockopt::Ipv4PacketInfo, &true)
    } else {
        socket::setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)
    };
    set.map_err(io::Error::from)
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
}
