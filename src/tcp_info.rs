//! What the kernel knows of a TCP connection (`TCP_INFO`), for the
//! players table: its smoothed round-trip time (how far a player is from
//! the hub, and the hub from an ep, as the kernel measures it on the
//! connection itself), and whether its path has stopped answering.

use std::{
    os::fd::RawFd,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

/// The connection's smoothed RTT, or None (not a TCP socket, closed, or
/// no sample yet).
///
/// A raw descriptor, not a borrow: the players table reads the sockets of
/// relays it does not own. A stale descriptor is harmless here (EBADF, or
/// another socket's figure for one reading); the table removes a player
/// before its socket closes, so that does not happen in practice.
pub fn rtt(fd: RawFd) -> Option<Duration> {
    let info = read(fd, std::mem::offset_of!(libc::tcp_info, tcpi_rtt) + 4)?;
    (info.tcpi_rtt > 0).then(|| Duration::from_micros(info.tcpi_rtt.into()))
}

/// How long since anything at all was acknowledged, if something sent is
/// going unanswered past a retransmission timeout: data in flight sent
/// again at least once, or a probe (zero-window or keepalive) waiting
/// for its answer. None while the connection is quiet or answered.
fn unanswered(fd: RawFd) -> Option<Duration> {
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_last_ack_recv) + 4;
    let i = read(fd, needed)?;
    let waiting = (i.tcpi_unacked > 0 && i.tcpi_retransmits > 0) || i.tcpi_probes > 0;
    waiting.then(|| Duration::from_millis(i.tcpi_last_ack_recv.into()))
}

/// A connection's path, looked at now and then (the players table's and
/// the ep's sweeps): dark once two looks in a row find something sent
/// going unanswered, nothing at all acknowledged between them and for at
/// least `after`. A live peer answers within a round trip even when it
/// reads nothing (a zero window's probes are answered), so only a dead
/// path, or one losing everything for longer than a look's interval,
/// stays this way; one look alone could catch a single lost segment
/// after a long quiet spell (the age counts the quiet too).
#[derive(Default)]
pub struct Dark(AtomicU32);

impl Dark {
    /// Looks at `fd` (descriptors as for `rtt`).
    pub fn look(&self, fd: RawFd, after: Duration) -> bool {
        let age = unanswered(fd)
            .filter(|a| *a >= after)
            .map(|a| u32::try_from(a.as_millis()).unwrap_or(u32::MAX).max(1));
        let before = self.0.swap(age.unwrap_or(0), Ordering::Relaxed);
        // Older than at the last look: no acknowledgement in between.
        age.is_some_and(|a| before != 0 && a > before)
    }
}

/// `TCP_INFO`, if the kernel wrote at least `needed` bytes of it.
fn read(fd: RawFd, needed: usize) -> Option<libc::tcp_info> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable `tcp_info` of `len` bytes, and the kernel
    // writes at most `len` bytes. No crate in ferry's tree (socket2, nix,
    // rustix) wraps TCP_INFO, and a whole crate for one call is not worth
    // it. Measured: ~1.9 µs a call (`cargo bench --bench tunnel -- --memory-only`),
    // read once a second per player at most.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // Kernels older than a field fill fewer bytes: the fields read must
    // have been written (those used here are in every version since 2.6).
    if r != 0 || (len as usize) < needed {
        return None;
    }
    // SAFETY: zero-initialised, and the kernel wrote at least the fields read.
    Some(unsafe { info.assume_init() })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[tokio::test]
    async fn a_loopback_connection_has_a_small_rtt_and_a_udp_socket_none() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (_s, _) = l.accept().await.unwrap();
        let rtt = super::rtt(c.as_raw_fd()).expect("a connected socket has an RTT");
        assert!(rtt < std::time::Duration::from_secs(1), "{rtt:?}");
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(super::rtt(u.as_raw_fd()), None);
        // Nothing in flight: never dark, however short the wait.
        let dark = super::Dark::default();
        for _ in 0..2 {
            assert!(!dark.look(c.as_raw_fd(), std::time::Duration::ZERO));
            assert!(!dark.look(u.as_raw_fd(), std::time::Duration::ZERO));
        }
    }
}
