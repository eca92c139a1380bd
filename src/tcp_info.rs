//! What the kernel knows of a TCP connection (`TCP_INFO`), for the
//! players table: its smoothed round-trip time (how far a player is from
//! the hub, and the hub from an ep, as the kernel measures it on the
//! connection itself), and whether its path has stopped answering.

use std::{os::fd::RawFd, time::Duration};

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

/// What the uplink guard reads of a TLS channel (`path`).
pub struct PathReading {
    /// The smoothed RTT, less the gap between two segments where ferry
    /// paces the socket (`SO_MAX_PACING_RATE`): a receiver may hold its
    /// acknowledgement until the next segment comes (delayed ACK), which
    /// the pacing spaces out (loopback's 64 KiB segments at 2 MB/s: 30 ms
    /// apart), and that is no queue.
    pub rtt: Duration,
    /// The least the kernel saw over its window (`tcpi_min_rtt`, five
    /// minutes by default).
    pub least: Duration,
    /// Bytes the peer has acknowledged so far (`tcpi_bytes_acked`): what
    /// the path carried, where what was written includes what waits in
    /// the socket's buffer.
    pub acked: u64,
    /// Bytes written and not yet sent (`tcpi_notsent_bytes`).
    pub unsent: u32,
}

/// The channel's path as the uplink guard reads it; None as for `rtt`,
/// or from a kernel before 4.10.
pub fn path(fd: RawFd) -> Option<PathReading> {
    let info = read(fd, std::mem::offset_of!(libc::tcp_info, tcpi_min_rtt) + 4)?;
    let us = |v: u32| Duration::from_micros(v.into());
    (info.tcpi_rtt > 0 && info.tcpi_min_rtt > 0 && info.tcpi_min_rtt != u32::MAX).then(|| {
        PathReading {
            rtt: us(info.tcpi_rtt).saturating_sub(paced_gap(&info)),
            least: us(info.tcpi_min_rtt),
            acked: info.tcpi_bytes_acked,
            unsent: info.tcpi_notsent_bytes,
        }
    })
}

/// How long a sender ferry paces (`tcpi_max_pacing_rate` set) waits
/// between two segments of `tcpi_snd_mss` at its pacing rate; zero when
/// ferry does not pace it (the kernel's own pacing rate is a multiple of
/// what the path carries, and its gaps are not measured here).
fn paced_gap(info: &libc::tcp_info) -> Duration {
    if info.tcpi_max_pacing_rate == u64::MAX || info.tcpi_max_pacing_rate == 0 {
        return Duration::ZERO;
    }
    match info.tcpi_pacing_rate.min(info.tcpi_max_pacing_rate) {
        0 => Duration::ZERO,
        rate => Duration::from_secs_f64(f64::from(info.tcpi_snd_mss) / rate as f64),
    }
}

/// While something sent goes unanswered past a retransmission timeout
/// (data in flight sent again at least once, or a probe, zero-window or
/// keepalive, waiting for its answer): see `Unanswered`. None while the
/// connection is quiet or answered. Descriptors as for `rtt`; see
/// `dark_path` for what it means.
pub fn unanswered(fd: RawFd) -> Option<Unanswered> {
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_last_ack_recv) + 4;
    let i = read(fd, needed)?;
    let resending = i.tcpi_unacked > 0 && i.tcpi_retransmits > 0;
    (resending || i.tcpi_probes > 0).then(|| Unanswered {
        // Data arriving is an answer too: a receive fast path takes it
        // without touching the acknowledgement's time.
        age: Duration::from_millis(i.tcpi_last_ack_recv.min(i.tcpi_last_data_recv).into()),
        tries: u16::from(i.tcpi_retransmits) + u16::from(i.tcpi_probes),
        probing: !resending,
    })
}

/// What `unanswered` found.
pub struct Unanswered {
    /// Since the peer last answered (an acknowledgement or data).
    pub age: Duration,
    /// The kernel's tries so far: retransmissions and probes.
    pub tries: u16,
    /// Only probes wait (no data in flight sent again).
    pub probing: bool,
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
        // Nothing in flight: nothing unanswered.
        assert!(super::unanswered(c.as_raw_fd()).is_none());
        assert!(super::unanswered(u.as_raw_fd()).is_none());
        let p = super::path(c.as_raw_fd()).expect("a connected socket has a path");
        assert!(
            p.acked <= 1 && p.unsent == 0,
            "nothing sent yet: {} {}",
            p.acked,
            p.unsent
        );
    }

    #[test]
    fn a_paced_senders_gap_between_segments_is_not_counted_as_round_trip() {
        // SAFETY: `tcp_info` is plain integers; all zeroes is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        info.tcpi_snd_mss = 65_483;
        info.tcpi_pacing_rate = 4_000_000;
        info.tcpi_max_pacing_rate = 2_250_000;
        let gap = super::paced_gap(&info).as_micros();
        assert!((29_000..29_200).contains(&gap), "{gap} µs");
        info.tcpi_max_pacing_rate = u64::MAX;
        assert_eq!(
            super::paced_gap(&info),
            std::time::Duration::ZERO,
            "not paced by ferry"
        );
    }
}
