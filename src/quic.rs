//! The QUIC transport's pieces both ends share: a bidirectional stream as
//! one byte stream (so channels, the relay and the control loop work on it
//! as on a TLS connection), the transport settings, and a channel-like
//! `Tunnel` that is either a TLS connection or a QUIC stream.

#[doc(hidden)]
pub mod flows;
pub mod heard;

use flows::Flows;
pub use flows::Sink;
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Application error code on a stream reset: the other side broke off.
pub const RESET: quinn::VarInt = quinn::VarInt::from_u32(1);

/// Connection close codes: the session ended and its players are gone;
/// the login failed; the hub is shutting down.
pub const SESSION_OVER: quinn::VarInt = quinn::VarInt::from_u32(2);
pub const LOGIN_FAILED: quinn::VarInt = quinn::VarInt::from_u32(3);
pub const SHUTTING_DOWN: quinn::VarInt = quinn::VarInt::from_u32(4);

/// One QUIC bidirectional stream, and the connection's datagram link for
/// a UDP flow riding it.
///
/// Dropped before its sending side was finished, it is reset, never
/// finished: quinn finishes a dropped stream, which would make a transfer
/// cut short by an error look complete at the far end (a TCP connection
/// dropped the same way ends in a reset too, see `net::abort_on_close`).
pub struct QuicStream {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub link: Option<Link>,
    /// `poll_shutdown` finished the sending side (a clean end), or the
    /// stream is the control stream, whose frames say where they end.
    finished: bool,
    /// Counts this stream among its connection's players.
    _hold: Option<Hold>,
}

impl QuicStream {
    /// The control stream: not a player's, and dropped it finishes, so a
    /// last `Closing` or `Refused` still reaches the ep.
    pub fn control(send: quinn::SendStream, recv: quinn::RecvStream) -> QuicStream {
        QuicStream {
            send,
            recv,
            link: None,
            finished: true,
            _hold: None,
        }
    }

    /// Ends both directions abruptly, the QUIC form of a TCP reset. It
    /// stops counting on its connection at once: nothing it sent is owed
    /// any more, and quinn says nothing when a reset is acknowledged (a
    /// wait for it, as `Drop` does for a clean end, lasted as long as the
    /// connection, with a task per aborted stream).
    pub fn abort(&mut self) {
        self.finished = true;
        self._hold = None;
        let _ = self.send.reset(RESET);
        let _ = self.recv.stop(RESET);
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.send.reset(RESET);
            let _ = self.recv.stop(RESET);
            return;
        }
        // Finished cleanly: the stream counts until its tail is
        // acknowledged, so closing the connection for being idle
        // (`close_when_idle`) cannot discard bytes still in flight: a
        // window's worth to a slow player can take longer than any fixed
        // wait. The drain bounds it (`close_when_idle`'s deadline, the hard
        // stop), and a peer gone ends it with the connection.
        if let (Some(hold), Ok(rt)) = (self._hold.take(), tokio::runtime::Handle::try_current()) {
            let acked = self.send.stopped();
            rt.spawn(async move {
                let _ = acked.await;
                drop(hold);
            });
        }
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.send)
            .poll_write(cx, buf)
            .map_err(io::Error::from)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(&mut self.send).poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = done {
            self.finished = true;
        }
        done
    }
}

/// A write failed because the peer put the stream down, as quinn does for
/// a reading side dropped before its end (stop code 0), not broke it off
/// (`RESET`, see `QuicStream::abort`).
pub fn put_down(e: &io::Error) -> bool {
    let stopped = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<quinn::WriteError>());
    matches!(stopped, Some(quinn::WriteError::Stopped(code)) if *code == quinn::VarInt::from_u32(0))
}

/// Why a stream's flow ended, from the error its write met: `ended` if the
/// peer put the stream down (its end, met before it is read), else broken.
pub fn ended_or_broken(e: io::Error, ended: &str) -> String {
    match put_down(&e) {
        true => ended.to_string(),
        false => format!("channel broken: {e}"),
    }
}

/// Keep-alives hold NAT mappings open (every third of `idle`, and at
/// least every 5 s, as the default heartbeat timeout's third); a silent
/// path ends the connection within `idle` (the hub's heartbeat timeout),
/// as heartbeats do on TLS.
fn transport(idle: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some((idle / 3).min(Duration::from_secs(5))));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(4 << 20);
    // Neither side uses unidirectional streams.
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t
}

/// The hub's side: the ep opens one stream (control) and no more, and all
/// it may send on streams the hub did not open is bounded, so a client
/// with a valid certificate and no token cannot make the hub buffer
/// without end. Players' streams are opened by the hub: the ep's
/// configuration (`ep_transport`) allows those.
pub fn hub_transport(idle: Duration) -> std::sync::Arc<quinn::TransportConfig> {
    let mut t = transport(idle);
    // The ep's one stream holds at most a stream window (1.25 MB). No
    // window across the connection: unread bytes keep using it, so a few
    // players who stop reading would stall every other player of the ep
    // and its heartbeats (the player door's limits bound the streams).
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1));
    std::sync::Arc::new(t)
}

/// The ep's side: the hub opens a stream per player. Its idle timeout is
/// the longest a hub's `heartbeat_timeout` may be: the connection takes
/// the smaller of the two sides', so the hub's decides (it is not known
/// before the welcome).
pub fn ep_transport() -> std::sync::Arc<quinn::TransportConfig> {
    let mut t = transport(crate::config::hub::MAX_HEARTBEAT_TIMEOUT);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(65_536));
    std::sync::Arc::new(t)
}

/// The UDP socket under a QUIC endpoint, bound to `addr`. It receives
/// into the 4 MiB every UDP socket of ferry has (`net::tune_udp`): quinn
/// sets none, and the kernel's default 208 KiB holds well under a
/// millisecond of a bulk stream, so a moment's scheduling delay drops
/// packets, which the congestion controller takes for a congested path.
/// It sends from the kernel's default buffer: what it holds waits in the
/// host's queue ahead of every player's next packet when the host's own
/// link is the narrowest (4 MiB measured 96 ms of queue at 100 Mbit/s
/// beside a download, the default 19 ms: BENCHMARKS.md, "Levers tried").
pub fn udp_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    crate::net::tune_udp_receive(&socket);
    Ok(socket)
}

/// The ep's socket toward a hub at `addr`'s family, bound to any address
/// and port: for IPv6 also reaching IPv4-mapped addresses whatever the
/// host's `net.ipv6.bindv6only`, as quinn's own client endpoint binds.
pub fn client_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    if addr.is_ipv4() {
        return udp_socket(addr);
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
    socket.set_only_v6(false)?;
    socket.bind(&addr.into())?;
    let socket = std::net::UdpSocket::from(socket);
    crate::net::tune_udp_receive(&socket);
    Ok(socket)
}

/// Ends a connection abruptly (a TCP reset, a QUIC stream reset).
pub trait Abort {
    fn abort(&mut self);
}

impl Abort for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn abort(&mut self) {
        crate::net::abort_on_close(self.get_ref().0);
    }
}

impl Abort for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fn abort(&mut self) {
        crate::net::abort_on_close(self.get_ref().0);
    }
}

impl Abort for QuicStream {
    fn abort(&mut self) {
        QuicStream::abort(self);
    }
}

/// Bounds how long a path may leave what was sent unacknowledged before
/// it counts as broken. Only for a path no one can hold behind a zero
/// window: a UDP flow's channel (its datagrams are sent on or lost, never
/// held), never a TCP player's (see `net::tune_channel`). A QUIC stream's
/// connection is bounded already, by its idle timeout.
pub trait Unacked {
    fn give_up_after(&self, within: std::time::Duration);
}

impl Unacked for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn give_up_after(&self, within: std::time::Duration) {
        crate::net::give_up_unacked(self.get_ref().0, within);
    }
}

impl Unacked for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fn give_up_after(&self, within: std::time::Duration) {
        crate::net::give_up_unacked(self.get_ref().0, within);
    }
}

/// A path between hub and ep for one player or control: a TLS connection
/// of its own, or a stream of the ep's QUIC connection.
pub enum Tunnel<T> {
    Tls(T),
    Quic(QuicStream),
}

impl<T: Abort> Tunnel<T> {
    pub fn abort(&mut self) {
        match self {
            Tunnel::Tls(t) => t.abort(),
            Tunnel::Quic(q) => q.abort(),
        }
    }
}

impl<T: Unacked> Tunnel<T> {
    /// See `Unacked`; nothing over QUIC.
    pub fn give_up_after(&self, within: std::time::Duration) {
        if let Tunnel::Tls(t) = self {
            t.give_up_after(within);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tunnel<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tunnel::Tls(t) => Pin::new(t).poll_read(cx, buf),
            Tunnel::Quic(q) => Pin::new(q).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tunnel<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Tunnel::Tls(t) => Pin::new(t).poll_write(cx, buf),
            Tunnel::Quic(q) => Pin::new(q).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tunnel::Tls(t) => Pin::new(t).poll_flush(cx),
            Tunnel::Quic(q) => Pin::new(q).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Tunnel::Tls(t) => Pin::new(t).poll_shutdown(cx),
            Tunnel::Quic(q) => Pin::new(q).poll_shutdown(cx),
        }
    }
}

/// A QUIC connection as UDP flows use it: datagrams tagged with a flow id
/// (four bytes, big-endian) and handed to the sink of the flow that
/// registered it, on the task that reads the connection's datagrams.
#[derive(Clone)]
pub struct Link {
    pub conn: quinn::Connection,
    flows: std::sync::Arc<std::sync::Mutex<Flows>>,
    next: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Player streams (TCP players and UDP flows) open on the connection.
    streams: std::sync::Arc<tokio::sync::watch::Sender<usize>>,
    /// The connection's least round trip lately (`note_rtt`), for the
    /// uplink guard: quinn keeps no least it shows.
    least_rtt: std::sync::Arc<std::sync::Mutex<crate::uplink_guard::WindowedMin>>,
    heard: std::sync::Arc<heard::Heard>,
    /// The session on this connection is over (`retire`).
    over: tokio_util::sync::CancellationToken,
}

/// One player stream counted on its connection while it lives.
struct Hold(std::sync::Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link({})", self.conn.remote_address())
    }
}

/// A flow opening (`Link::expect`); what was kept early for it goes as
/// it drops (taken already if the flow registered).
pub struct Expected {
    link: Link,
    id: u32,
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.link.lock().take_early(self.id);
    }
}

/// Removes a flow from its link when dropped (its own: not a later flow
/// the peer gave the same id).
pub struct Registration {
    link: Link,
    id: u32,
    sink: Sink,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.link.lock().close_if(self.id, &self.sink);
    }
}

impl Link {
    /// The connection's round trip now, noted towards its least; the ep
    /// notes it at each heartbeat, so the least is known from before a
    /// transfer fills the path.
    pub fn note_rtt(&self) -> std::time::Duration {
        let rtt = self.conn.rtt();
        crate::uplink_guard::note(&self.least_rtt, rtt);
        rtt
    }

    /// Where the uplink guard reads this connection's path.
    pub fn guard_signal(&self) -> crate::uplink_guard::Signal {
        crate::uplink_guard::Signal::Quic(self.conn.clone(), self.least_rtt.clone())
    }

    /// A connection whose handshake is done; its datagrams are read from
    /// now on (those of flows not yet open wait in `Flows`' bounded early
    /// buffer, which is all a client that never logs in can fill).
    pub fn new(conn: quinn::Connection) -> Link {
        let link = Link {
            conn,
            flows: Default::default(),
            next: Default::default(),
            streams: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
            least_rtt: Default::default(),
            heard: Default::default(),
            over: Default::default(),
        };
        let l = link.clone();
        tokio::spawn(async move {
            while let Ok(d) = l.conn.read_datagram().await {
                let now = || tokio::time::Instant::now().into_std();
                let live = l.lock().arrived(&d, now);
                if let Some(sink) = live {
                    sink(flows::payload(&d));
                }
            }
        });
        link
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Flows> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session on this connection is over: its players carry on, but
    /// no new one comes (`retired` fires) and no datagram is kept for a
    /// flow not yet open, but one already opening (`Link::expect`). A peer
    /// keeping one player on the connection cannot make it hold more.
    pub fn retire(&self) {
        self.lock().retire();
        self.over.cancel();
    }

    /// Fires once `retire` was called.
    pub fn retired(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.over.cancelled()
    }

    /// The hub's side of the control stream: counted on the connection
    /// as a player's is, so the connection closed for being over
    /// (`close_when_idle`) waits for its last frame (the hub's `Closing`,
    /// why the session ended) to be acknowledged (or the connection to
    /// end: a peer gone says nothing for the idle timeout). Closed
    /// at once, quinn would discard it unsent and the ep would not know
    /// it was replaced.
    pub fn control(&self, send: quinn::SendStream, recv: quinn::RecvStream) -> QuicStream {
        self.streams.send_modify(|n| *n += 1);
        let mut c = QuicStream::control(send, recv);
        c._hold = Some(Hold(self.streams.clone()));
        c
    }

    /// A player's stream on this connection, counted while it lives.
    pub fn stream(&self, send: quinn::SendStream, recv: quinn::RecvStream) -> QuicStream {
        self.streams.send_modify(|n| *n += 1);
        QuicStream {
            send,
            recv,
            link: Some(self.clone()),
            finished: false,
            _hold: Some(Hold(self.streams.clone())),
        }
    }

    /// Closes the connection once its session is over: when its last
    /// stream (a player's, or the hub's control stream with its last
    /// word) has ended and its tail was acknowledged, after
    /// `within` at the latest if given, or at once when `now` fires.
    /// Keep-alives would otherwise hold it open for ever.
    pub async fn close_when_idle(
        &self,
        within: Option<Duration>,
        now: &tokio_util::sync::CancellationToken,
        why: &str,
    ) {
        let mut streams = self.streams.subscribe();
        let deadline = async {
            match within {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = streams.wait_for(|n| *n == 0) => {}
            _ = deadline => {}
            _ = now.cancelled() => {}
            _ = self.conn.closed() => return,
        }
        self.conn.close(SESSION_OVER, why.as_bytes());
    }

    /// How long the peer has said nothing on the connection, as far as
    /// the looks at it tell (`heard`).
    pub fn silent_for(&self) -> Duration {
        let f = self.conn.stats().frame_rx;
        // Frames a living peer sends on its own or in answer to a probe.
        let received = f.acks + f.ping + f.stream + f.datagram + f.max_data + f.max_stream_data;
        self.heard.silent_for(received, std::time::Instant::now())
    }

    /// Whether the peer has been silent too long for a new stream
    /// (`heard::silent_after` its round trip).
    pub fn is_silent(&self) -> bool {
        self.silent_for() >= heard::silent_after(self.conn.rtt())
    }

    /// Probes a connection gone quiet (`heard`) until it closes or `stop`,
    /// telling `said` when it turns silent and when it is heard again.
    pub async fn watch_silence(
        &self,
        stop: tokio_util::sync::CancellationToken,
        said: impl Fn(Option<Duration>),
    ) {
        let mut silent = false;
        let mut tick = tokio::time::interval(heard::LOOK_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
                _ = self.conn.closed() => return,
            }
            let quiet = self.silent_for();
            if quiet >= heard::PROBE_AFTER {
                // An empty datagram: ack-eliciting, and no flow's (a flow
                // id takes four bytes), so the peer drops it unread.
                let _ = self.conn.send_datagram(Vec::new().into());
            }
            let now = quiet >= heard::silent_after(self.conn.rtt());
            if now != silent {
                silent = now;
                said(now.then_some(quiet));
            }
        }
    }

    /// A fresh flow id (the hub numbers the flows of its connections):
    /// never one a live flow holds, even after the count wraps.
    pub fn next_id(&self) -> u32 {
        loop {
            let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !self.lock().is_open(id) {
                return id;
            }
        }
    }

    /// Flow `id` is opening (its seat taken, its local socket next): what
    /// comes early for it is kept even if the connection retires
    /// meanwhile (`Flows::expect`), until it registers; dropped before,
    /// what was kept for it goes.
    pub fn expect(&self, id: u32) -> Expected {
        let now = tokio::time::Instant::now().into_std();
        self.lock().expect(id, now);
        Expected {
            link: self.clone(),
            id,
        }
    }

    /// Datagrams for flow `id` go to `sink` until the registration is
    /// dropped, those that came early first, in order.
    pub fn register(&self, id: u32, sink: Sink) -> Registration {
        // More may come early while these are sent (outside the lock):
        // they are taken on the next turn. A few turns at most, so a peer
        // flooding the id cannot hold this task here (the last turn's
        // datagrams may then pass the newest).
        for last in [false, false, false, true] {
            let mut flows = self.lock();
            let early = flows.take_early(id);
            let done = last || early.is_empty();
            if done {
                flows.open(id, sink.clone());
            }
            drop(flows);
            for d in early {
                sink(&d);
            }
            if done {
                break;
            }
        }
        Registration {
            link: self.clone(),
            id,
            sink,
        }
    }

    /// Sends `d` for flow `id` as one datagram; false if it does not fit
    /// the path's datagram size (the caller sends it on the flow's stream,
    /// so it arrives whole rather than truncated).
    pub fn send(&self, id: u32, d: &[u8]) -> bool {
        let fits = self
            .conn
            .max_datagram_size()
            .is_some_and(|max| d.len() + 4 <= max);
        if !fits {
            return false;
        }
        let mut frame = Vec::with_capacity(4 + d.len());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(d);
        // A full send buffer drops the datagram: late game state is no use.
        // One the path no longer takes (its datagram size shrank since the
        // check) goes on the stream instead.
        !matches!(
            self.conn.send_datagram(frame.into()),
            Err(quinn::SendDatagramError::TooLarge)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// quinn's error as a write returns it: a stop with code 0 is a stream
    /// put down; a break-off (`RESET`) or a closed stream is not.
    #[test]
    fn only_a_stop_with_code_zero_is_a_stream_put_down() {
        let stop = |code: u32| io::Error::from(quinn::WriteError::Stopped(code.into()));
        assert!(put_down(&stop(0)));
        assert!(!put_down(&stop(1)));
        assert!(!put_down(&io::Error::from(quinn::WriteError::ClosedStream)));
        assert!(!put_down(&io::Error::from(io::ErrorKind::ConnectionReset)));
    }
}
