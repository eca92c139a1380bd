//! Socket options and the accept loop shared by every listener.

use socket2::{SockRef, TcpKeepalive};
use std::{io, net::SocketAddr, time::Duration};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn keepalive(tcp: &TcpStream, idle: Duration, interval: Duration, probes: u32) {
    let ka = TcpKeepalive::new().with_time(idle).with_interval(interval);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let ka = ka.with_retries(probes);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = probes;
    let _ = SockRef::from(tcp).set_tcp_keepalive(&ka);
}

/// Player and service legs: latency matters more than packet count, and a
/// peer that vanished without a FIN (a player whose router died) must not
/// pin a channel and a home connection forever. Keepalive probes are
/// answered by any live peer, however slowly it reads, so a paused player
/// is never cut: a vanished one is found within about two minutes.
pub fn tune_plain(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    keepalive(tcp, Duration::from_secs(60), Duration::from_secs(10), 6);
}

/// UDP sockets: room for a burst (a 200 Mbit/s flow delivers a default
/// 208 KiB buffer's worth in 8 ms), so a moment of scheduling delay drops
/// nothing. The kernel caps the size at `net.core.rmem_max`.
pub fn tune_udp(udp: &impl std::os::fd::AsFd) {
    tune_udp_receive(udp);
    let _ = SockRef::from(udp).set_send_buffer_size(4 << 20);
}

/// The receiving half of `tune_udp` alone.
pub fn tune_udp_receive(udp: &impl std::os::fd::AsFd) {
    let _ = SockRef::from(udp).set_recv_buffer_size(4 << 20);
}

/// Control connections: heartbeats guarantee traffic both ways, so unacked
/// data for 30 s means a dead path, never a slow reader; detect a
/// black-holed peer in seconds rather than the kernel's default of hours
/// (keepalive) or ~15 minutes (unacked data).
pub fn tune_control(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    keepalive(tcp, Duration::from_secs(15), Duration::from_secs(5), 3);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = SockRef::from(tcp).set_tcp_user_timeout(Some(UNACKED_MAX));
}

/// Channels: keepalive only. TCP_USER_TIMEOUT would count time spent
/// behind a zero window, which is what a player who stops reading produces
/// through backpressure (a paused download, a suspended ssh client), and
/// reset them after 30 s. Zero-window probes and keepalives are answered
/// by a live peer however long it does not read; a dead one stops
/// answering. Where data is in flight on a dead path the kernel would
/// retry for ~15 minutes: hub and ep look for that in `TCP_INFO` instead
/// (`hub::players`, `ep::dark`).
pub fn tune_channel(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    keepalive(tcp, Duration::from_secs(15), Duration::from_secs(5), 3);
}

/// The longest ferry lets a hub–ep connection leave data unacknowledged.
#[cfg(any(target_os = "linux", target_os = "android"))]
const UNACKED_MAX: Duration = Duration::from_secs(30);

/// A connection whose sent data goes unacknowledged for `within` (at most
/// `UNACKED_MAX`, as control's) is broken, rather than after the kernel's
/// ~15 minutes of retries. The timeout also replaces keepalive's count of
/// probes, so it is never longer. Only where a zero window cannot last:
/// see `quic::Unacked`.
pub fn give_up_unacked(tcp: &TcpStream, within: Duration) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = SockRef::from(tcp).set_tcp_user_timeout(Some(within.min(UNACKED_MAX)));
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (tcp, within);
}

/// Makes the coming close of `tcp` a reset rather than a FIN: when the
/// other leg of a relay broke, the peer on this leg should see a break too,
/// not a clean end of data.
pub fn abort_on_close(tcp: &TcpStream) {
    let _ = SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}

/// Undoes `abort_on_close`: a relay that ended cleanly closes with a FIN,
/// after what it wrote is delivered.
pub fn close_cleanly(tcp: &TcpStream) {
    let _ = SockRef::from(tcp).set_linger(None);
}

/// Closes a connection whose TLS handshake failed so that the peer reads
/// the alert saying why: close our write side, then drain what the peer
/// already sent (briefly, boundedly). Closing with unread data would send
/// a reset, which can destroy the alert before the peer reads it.
pub async fn linger_close(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0;
        while total < 64 * 1024 {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Accepts until `shutdown`, handing each connection to `on_conn`. The
/// handler is synchronous on purpose: it checks and spawns, and can never
/// wait on a peer inside the loop. Errors such as EMFILE back off instead
/// of spinning: the loop sleeps, doubling up to a second, and recovers.
pub async fn accept_loop<L, F>(listener: L, shutdown: CancellationToken, mut on_conn: F)
where
    L: std::borrow::Borrow<TcpListener>,
    F: FnMut(TcpStream, SocketAddr),
{
    let listener = listener.borrow();
    let mut pause = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            // Stopped means stopped, even with a connection waiting: it
            // belongs to whoever serves the socket next.
            biased;
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, addr)) => {
                pause = Duration::from_millis(10);
                on_conn(tcp, addr);
            }
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; pausing {pause:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Errors that concern one aborted connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Whether `addr` is loopback, where the admin door may run without a token.
pub fn is_loopback(addr: std::net::SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}
