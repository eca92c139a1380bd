//! One UDP flow at home: a connected UDP socket of its own, so the game
//! sees one peer per player exactly as without the tunnel, joined to the
//! channel the hub started the flow on.

use super::Ep;
use crate::{config::ep::LocalService, config::ep::UdpHeaders, datagram, net, proxy_header};
use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
};
use tokio::{
    io::{AsyncWriteExt, ReadHalf, WriteHalf},
    net::UdpSocket,
};

pub(super) struct Flow {
    pub service: String,
    pub player: SocketAddr,
    /// The hub's address the player sent to, for the PROXY header.
    pub public: SocketAddr,
    pub offset: u16,
    /// Over QUIC: the id its datagrams carry.
    pub id: Option<u32>,
}

#[derive(Default)]
struct Counts {
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

impl Counts {
    fn add(&self, len: usize) {
        self.datagrams.fetch_add(1, Relaxed);
        self.bytes.fetch_add(len as u64, Relaxed);
    }
}

/// A flow's first line, per service: each flow is a new source at the
/// hub, which a stranger can forge at will, so at most once a second
/// with how many went unsaid (as the hub says its own).
static STARTED: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
/// The last line of flows that carried one datagram from the player, and
/// of the others (a few a second: see the hub's `udp::flow`).
static ONE_SHOTS_ENDED: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
static ENDED: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
const ENDS_SAID: u64 = 5;

impl Flow {
    pub async fn run(self, ep: &Arc<Ep>, local: &LocalService, tls: &mut super::login::Path) {
        // Its datagrams that come before it registers are kept through a
        // retirement of the connection meanwhile; dropped before it
        // registers (its socket not opened), the guard lets go of them.
        let link = quic_link(tls, self.id);
        let expected = link.as_ref().map(|(l, id)| l.expect(*id));
        let target = local.addr.at(self.offset);
        let (service, player) = (&self.service, self.player);
        let socket = match connect(&target).await {
            Ok(s) => s,
            Err(e) => {
                ep.state.dialled(service, Err(e.to_string()));
                static SAID: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
                if let Some(unsaid) = SAID.now(service) {
                    tracing::warn!(service, %player, local = target, unsaid, "cannot open a UDP socket to the local service: {e}; flow closed");
                }
                return;
            }
        };
        ep.state.dialled(service, Ok(()));
        let label = crate::metrics::ServiceLabel {
            service: service.clone(),
        };
        let players = ep.metrics.traffic.players.get_or_create(&label).clone();
        ep.metrics.traffic.players_total.get_or_create(&label).inc();
        players.inc();
        let meter = ep.metrics.traffic.meter(service);
        if let Some(unsaid) = STARTED.now(service) {
            tracing::info!(service, %player, local = target, unsaid, "udp flow started");
        }
        let header = local.proxy_protocol.map(|_| {
            (
                proxy_header::udp_header(player, self.public),
                local.proxy_protocol_udp,
            )
        });
        let down = Counts::default();
        let to_svc = Arc::new(ToService {
            max_payload: max_payload(&socket),
            socket,
            first: header.clone(),
            header: std::sync::Mutex::new(header),
            meter: meter.up.clone(),
            n: Counts::default(),
            found: Found::new(ep, service, &target),
        });
        // Over QUIC the datagrams from the hub are sent home from the task
        // that reads them (see `quic::Sink`).
        let _registered = link.as_ref().map(|(l, id)| {
            let to = to_svc.clone();
            l.register(*id, Arc::new(move |d: &[u8]| to.send_now(d)))
        });
        // Registered: what was kept is taken. Let go now, not at the end,
        // where it could take what a later flow of the same id keeps.
        drop(expected);
        let link_closed = async {
            match &link {
                Some((l, _)) => l.conn.closed().await,
                None => std::future::pending().await,
            }
        };
        let (rd, wr) = tokio::io::split(tls);
        let why = tokio::select! {
            r = to_svc.relay_stream(rd) => match r {
                Ok(()) => "the hub ended it".to_string(),
                Err(e) => format!("channel broken: {e}"),
            },
            _ = link_closed => "the QUIC connection ended".into(),
            // Over QUIC a write can meet the hub's end before it is read.
            e = to_hub(wr, link.as_ref(), &to_svc, (&meter.down, &down)) => {
                crate::quic::ended_or_broken(e, "the hub ended it")
            }
            _ = ep.hard_stop.cancelled() => "ep shutting down".into(),
        };
        players.dec();
        self.ended(&to_svc.n, &down, &why);
    }

    /// The flow's last line, with what it carried each way (`up`: from
    /// the player), if its kind of line may be said now.
    fn ended(&self, up: &Counts, down: &Counts, why: &str) {
        let (service, player) = (&self.service, self.player);
        let up_datagrams = up.datagrams.load(Relaxed);
        let said = match up_datagrams {
            0 | 1 => ONE_SHOTS_ENDED.now(service),
            _ => ENDED.now_within(service, ENDS_SAID),
        };
        let Some(unsaid) = said else { return };
        tracing::info!(
            service,
            %player,
            up_datagrams,
            up_bytes = up.bytes.load(Relaxed),
            down_datagrams = down.datagrams.load(Relaxed),
            down_bytes = down.bytes.load(Relaxed),
            unsaid,
            "udp flow ended: {why}"
        );
    }
}

/// The flow's QUIC connection and the id its datagrams carry, if they
/// ride QUIC datagrams.
fn quic_link(tls: &super::login::Path, id: Option<u32>) -> Option<(crate::quic::Link, u32)> {
    match (tls, id) {
        (crate::quic::Tunnel::Quic(q), Some(id)) => q.link.clone().map(|l| (l, id)),
        _ => None,
    }
}

/// The largest UDP payload `socket`'s family can send.
fn max_payload(socket: &UdpSocket) -> usize {
    match socket.peer_addr() {
        Ok(a) if a.is_ipv6() => 65_535 - 8,
        _ => 65_535 - 20 - 8,
    }
}

/// A socket of the local service's family, connected to it: only its
/// answers come back, and each flow has its own source port.
async fn connect(target: &str) -> std::io::Result<UdpSocket> {
    // A host name's addresses are tried in turn by a TCP dial; here, the
    // one a server on this machine listens on (`udp_listener`).
    let addr = super::udp_listener::resolve(target).await?;
    let any: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(addr).await?;
    net::tune_udp(&socket);
    // Until the reactor has seen it writable once, `try_send` refuses
    // without trying, and the flow's first datagrams are sent that way.
    socket.writable().await?;
    Ok(socket)
}

/// Datagrams from the hub to the service, with the PROXY header on the
/// first (or every) one when asked for; from the channel's stream and, over
/// QUIC, from the connection's datagrams.
struct ToService {
    socket: UdpSocket,
    /// The largest datagram the socket can send (IPv4 65,507, IPv6 65,527).
    max_payload: usize,
    /// The header due in front of the next datagram (`first`: until one
    /// carried it to the service).
    header: std::sync::Mutex<Option<(Vec<u8>, UdpHeaders)>>,
    /// The flow's header as made, due again if the datagram that carried
    /// it never reached the service (see `rearm`).
    first: Option<(Vec<u8>, UdpHeaders)>,
    meter: prometheus_client::metrics::counter::Counter,
    n: Counts,
    found: Found,
}

/// What became of a datagram sent without waiting.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    Yes,
    /// The service refused an earlier one (nothing listening), and this
    /// one is lost with it.
    Refused,
    /// A full socket buffer, or another error: lost.
    Lost,
}

/// What a flow finds at home, told to the ep's `Homes` (and a join that
/// finds the service away wakes it).
struct Found {
    ep: Arc<Ep>,
    local: super::wake::Local,
    /// A player began to join (RakNet's Open Connection Request 1): it
    /// may wake the service; a list ping, a scanner's probe or a forged
    /// datagram never does.
    joined: AtomicBool,
    join_sent: tokio::sync::Notify,
    /// Sent something other than a server-list ping.
    played: AtomicBool,
    /// Counted as a player (`playing` is set).
    counted: AtomicBool,
    answered: AtomicBool,
    began: tokio::time::Instant,
    /// Held once the flow plays: the service does not sleep under it.
    playing: std::sync::Mutex<Option<crate::sources::Counted<String>>>,
}

impl Found {
    /// A flow to `service` at `target` at home, beginning now.
    fn new(ep: &Arc<Ep>, service: &str, target: &str) -> Found {
        Found {
            ep: ep.clone(),
            local: super::wake::Local {
                service: service.to_string(),
                at: target.to_string(),
                connect_timeout: ep.settings().timing.connect_timeout,
                stop: ep.shutdown.clone(),
                udp: true,
                // A UDP service's header rides its datagrams; the ep
                // never tries a UDP port on its own.
                proxy: None,
            },
            joined: AtomicBool::new(false),
            join_sent: tokio::sync::Notify::new(),
            played: AtomicBool::new(false),
            counted: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            began: tokio::time::Instant::now(),
            playing: std::sync::Mutex::new(None),
        }
    }

    fn sent(&self, d: &[u8]) {
        if crate::game::bedrock::is_join(d) && !self.joined.swap(true, Relaxed) {
            self.join_sent.notify_one();
        }
        if !self.counted.load(Relaxed) && !matches!(d.first(), Some(0x01 | 0x02)) {
            self.played.store(true, Relaxed);
            self.count();
        }
    }

    /// From the first datagram that is not a server-list ping (RakNet's
    /// unconnected pings, 0x01 and 0x02: a Bedrock list) and the
    /// service's first answer until the flow ends, a player on the
    /// service, which does not sleep under it: a Bedrock join, or any
    /// other UDP game's traffic. Not before the answer: a datagram the
    /// service ignores (junk, which a stranger can send from a forged
    /// source that no ban reaches) would keep it awake for ever.
    fn count(&self) {
        // Both marks are set before the lock: whichever comes second
        // finds the other.
        let mut p = self.playing.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none() && self.played.load(Relaxed) && self.answered.load(Relaxed) {
            *p = Some(self.ep.homes.player(&self.local.service));
            self.counted.store(true, Relaxed);
        }
    }

    /// Returns once a join went unanswered for `JOIN_SILENCE`; never if
    /// none did. A host switched off (the `wakeonlan` case) or a firewall
    /// that drops says nothing: no ICMP "port unreachable" comes back to
    /// tell the ep the service is not there.
    async fn unanswered_join(&self) {
        while !self.joined.load(Relaxed) {
            self.join_sent.notified().await;
        }
        tokio::time::sleep(JOIN_SILENCE).await;
        if self.answered.load(Relaxed) {
            std::future::pending::<()>().await;
        }
    }

    /// `d` came from the service: the flow's first such datagram says it
    /// is up, and whether it speaks RakNet (a Bedrock server).
    fn heard(&self, d: &[u8]) {
        if !self.answered.swap(true, Relaxed) {
            self.ep.homes.answered(&self.local);
            if crate::game::bedrock::is_raknet_answer(d) {
                self.ep.homes.spoke_raknet(&self.local.service);
            }
            self.count();
        }
    }

    /// Home did not answer: `plain_no`, its host said so (an ICMP "port
    /// unreachable"), or a join went unanswered.
    fn refused(&self, plain_no: bool) {
        if self.answered.load(Relaxed) {
            return;
        }
        let join = self.joined.load(Relaxed);
        let _ = self
            .ep
            .homes
            .refused(&self.local, (join, self.began, plain_no));
    }
}

impl ToService {
    /// A datagram from the channel's stream: waits for room in the
    /// socket's buffer, but while a PROXY header is due is sent as
    /// `send_now` sends (the header first, whichever path is quicker).
    async fn send(&self, d: Vec<u8>) {
        if self.forged_header(&d) {
            return;
        }
        if self.lock_header().is_some() {
            return self.send_checked(&d);
        }
        self.count(&d);
        // Refused (nothing listening yet): this datagram is lost, as it
        // would be on the network; the flow goes on.
        if let Err(e) = self.socket.send(&d).await
            && self.send_failed(&e)
        {
            self.rearm();
        }
    }

    /// A datagram sent without waiting: a full socket buffer loses it.
    fn send_now(&self, d: &[u8]) {
        if !self.forged_header(d) {
            self.send_checked(d);
        }
    }

    /// `send_now` for a datagram `forged_header` has passed.
    fn send_checked(&self, d: &[u8]) {
        self.count(d);
        let mut header = self.lock_header();
        if header.is_none() {
            drop(header);
            if self.try_send(d) == Sent::Refused {
                self.rearm();
            }
            return;
        }
        // The QUIC link's reader and the stream's task both send: while a
        // header is due, its lock is held through the sends, so the
        // service sees the header before any datagram.
        let (h, d) = with_header(&mut header, d, self.max_payload);
        // The first sent carries the header (alone, or in front of `d`):
        // if it does not go, due again on the next datagram, and `d` not
        // sent without it.
        for out in h.as_deref().into_iter().chain(d.as_deref()) {
            if self.try_send(out) != Sent::Yes {
                if header.is_none() {
                    *header = self.first.clone();
                }
                break;
            }
        }
    }

    /// The socket's pending error, taken: an ICMP answer refusing a
    /// datagram sent home (`said_no`) re-arms the header and tells the ep
    /// the service is not there.
    fn take_error(&self) {
        if let Ok(Some(e)) = self.socket.take_error()
            && said_no(&e)
        {
            self.rearm();
            self.found.refused(true);
        }
        // Taken: clear the readiness too, or it would wake the loop that
        // waits on it again at once.
        let _ = self.socket.try_io(tokio::io::Interest::ERROR, || {
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
    }

    /// Whether `d` went to the socket.
    fn try_send(&self, d: &[u8]) -> Sent {
        match self.socket.try_send(d) {
            Ok(_) => Sent::Yes,
            Err(e) if self.send_failed(&e) => Sent::Refused,
            Err(_) => Sent::Lost,
        }
    }

    /// A send failed; whether it was a refusal. A connected UDP socket
    /// keeps one pending error, an ICMP answer refusing an earlier datagram
    /// (`said_no`), and the next call takes it, a send as well as a receive:
    /// taken here, it says what it says in `to_hub` (the caller re-arms
    /// the header, not holding its lock).
    fn send_failed(&self, e: &std::io::Error) -> bool {
        tracing::debug!("cannot send to the local service: {e}");
        // Not EACCES here: on a send it is as often a lasting refusal of
        // this host's own (a security module, a broadcast address), which
        // would have every datagram say the service is not there.
        let refused = said_no(e) && !lasting(e);
        if refused {
            self.found.refused(true);
        }
        refused
    }

    /// The service refused a datagram (nothing listening: asleep, or
    /// restarting, even after it answered this flow): the one that carried
    /// the header may be the one lost, or the process that read it gone,
    /// and in `first` mode a service takes the first datagram it hears
    /// from a source for the header, so the next one carries it again.
    /// Else a player's own datagram, shaped as a header, would be that
    /// first one, and name any address it liked. (At worst a service that
    /// did read it gets the same header again.)
    fn rearm(&self) {
        let mut header = self.lock_header();
        if header.is_none() {
            *header = self.first.clone();
        }
    }

    /// A player's datagram shaped as a PROXY v2 header, for a service
    /// that reads one: dropped. A service that lost the flow's header
    /// without a word (restarted, or forgot the source) would take it for
    /// the header and believe whatever address it names. No game's
    /// datagram begins with the signature.
    fn forged_header(&self, d: &[u8]) -> bool {
        let forged = self.first.is_some() && crate::proxy_header::looks_like_v2(d);
        if forged {
            tracing::debug!("a player's datagram shaped as a PROXY header was not sent");
        }
        forged
    }

    fn count(&self, d: &[u8]) {
        self.found.sent(d);
        self.n.add(d.len());
        self.meter.inc_by(d.len() as u64);
    }

    fn lock_header(&self) -> std::sync::MutexGuard<'_, Option<(Vec<u8>, UdpHeaders)>> {
        self.header.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends when the hub closes the stream.
    async fn relay_stream(&self, mut rd: ReadHalf<&mut super::login::Path>) -> std::io::Result<()> {
        while let Some(d) = datagram::read(&mut rd).await? {
            self.send(d).await;
        }
        Ok(())
    }
}

/// What to send for `d` while `header` is due: a datagram of the header
/// alone first when it cannot ride in front of `d` (UDP's size limit) but
/// must reach the service once, then `d`, headed if it fits. In `every`
/// mode a datagram with no room for its header is not sent: without it
/// the service would read the payload as a header.
fn with_header<'d>(
    header: &mut Option<(Vec<u8>, UdpHeaders)>,
    d: &'d [u8],
    max_payload: usize,
) -> (Option<Vec<u8>>, Option<Cow<'d, [u8]>>) {
    let Some((h, every)) = header.as_ref() else {
        return (None, Some(Cow::Borrowed(d)));
    };
    let every = *every;
    if h.len() + d.len() <= max_payload {
        let mut with = Vec::with_capacity(h.len() + d.len());
        with.extend_from_slice(h);
        with.extend_from_slice(d);
        if every == UdpHeaders::First {
            *header = None;
        }
        return (None, Some(Cow::Owned(with)));
    }
    match every {
        UdpHeaders::First => (header.take().map(|(h, _)| h), Some(Cow::Borrowed(d))),
        UdpHeaders::Every => {
            tracing::debug!(
                len = d.len(),
                "a datagram too large to carry its PROXY header was not sent"
            );
            (None, None)
        }
    }
}

/// How long a join may go unanswered before the service counts as not
/// there (a Bedrock server answers a join at once; a RakNet client tries
/// for about ten seconds).
const JOIN_SILENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Datagrams from the service to the hub: QUIC datagrams when the flow has
/// a link and they fit, else framed on the stream. Returns the error that
/// ended it.
async fn to_hub(
    mut wr: WriteHalf<&mut super::login::Path>,
    link: Option<&(crate::quic::Link, u32)>,
    home: &ToService,
    (meter, n): (&prometheus_client::metrics::counter::Counter, &Counts),
) -> std::io::Error {
    let (socket, found) = (&home.socket, &home.found);
    let mut out = Vec::new();
    let silence = found.unanswered_join();
    tokio::pin!(silence);
    let mut silent = false;
    loop {
        // ERROR too: an ICMP "port unreachable" for a datagram sent home
        // sets only the socket's error (no readable data), and it is how
        // the ep learns the service is not there; or a join unanswered.
        let ready = tokio::select! {
            r = socket.ready(tokio::io::Interest::READABLE | tokio::io::Interest::ERROR) => r,
            () = &mut silence, if !silent => {
                silent = true;
                home.rearm();
                found.refused(false);
                continue;
            }
        };
        match ready {
            Ok(r) if r.is_error() => home.take_error(),
            Ok(_) => {}
            Err(e) => return e,
        }
        let take = |d: &[u8], out: &mut Vec<u8>| {
            n.add(d.len());
            meter.inc_by(d.len() as u64);
            if !link.is_some_and(|(l, id)| l.send(*id, d)) {
                datagram::encode(out, d);
            }
        };
        match read_arrived(home, &mut out, take) {
            Err(e) => return e,
            // More may wait: the wait for readiness would not give way
            // (tokio answers it at once, from what it knows), so this does.
            Ok(true) => tokio::task::yield_now().await,
            Ok(false) => {}
        }
        if out.is_empty() {
            continue;
        }
        if let Err(e) = wr.write_all(&out).await {
            return e;
        }
        if let Err(e) = wr.flush().await {
            return e;
        }
        // Given back before the flow waits again, idle maybe for long.
        datagram::written(&mut out);
    }
}

/// Everything that has arrived from home, read through this thread's
/// buffer (an idle flow holds none of its own) and given to `take`. At
/// most `PER_TURN` datagrams: over QUIC `out` stays empty, and a service
/// sending faster than they leave would keep this loop (and a runtime
/// thread) to itself. True: it stopped there, and more may wait.
fn read_arrived(
    home: &ToService,
    out: &mut Vec<u8>,
    take: impl Fn(&[u8], &mut Vec<u8>),
) -> std::io::Result<bool> {
    let (socket, found) = (&home.socket, &home.found);
    // An ICMP answer is read once, though another may follow at once (a
    // burst sent to a server not up yet). EACCES again at once, with no
    // datagram between, is the socket's own (a security module refusing
    // the read): it ends the flow rather than spin on it.
    let mut icmp_read = false;
    RECV.with_borrow_mut(|buf| {
        for _ in 0..PER_TURN {
            if out.len() >= 256 * 1024 {
                return Ok(false);
            }
            match socket.try_recv(buf) {
                Ok(len) => {
                    icmp_read = false;
                    found.heard(&buf[..len]);
                    take(&buf[..len], out)
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                // An ICMP "port unreachable" (or a firewall's "host
                // prohibited") for an earlier send: the service is not
                // there (yet); keep listening (a joining player's next
                // datagram reaches it once woken).
                Err(e) if said_no(&e) && !(icmp_read && lasting(&e)) => {
                    icmp_read = true;
                    home.rearm();
                    found.refused(true);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    })
}

/// An error that may be this host's own and lasting, not an ICMP answer.
fn lasting(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EACCES)
}

/// Datagrams read from home in one turn of `to_hub`.
const PER_TURN: usize = 64;

/// An error a connected UDP socket reports for an ICMP answer to an
/// earlier datagram: nothing listens there (port unreachable); or, IPv4,
/// a network or host unreachable, unknown or isolated (`ENETUNREACH`,
/// `EHOSTUNREACH`, `EHOSTDOWN`, `ENONET`), a protocol unreachable
/// (`ENOPROTOOPT`), or prohibited (firewalld's reject); or, IPv6,
/// prohibited (`EACCES`) or a parameter problem (`EPROTO`). Each is about
/// one datagram, and the flow goes on; any other error is the socket's own.
fn said_no(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::ENOPROTOOPT
                | libc::EACCES
                | libc::EPROTO
        )
    ) || e.kind() == std::io::ErrorKind::ConnectionRefused
}

thread_local! {
    /// One receive buffer per runtime thread, for a datagram of any size.
    static RECV: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; datagram::RECV_BUF]);
}

#[cfg(test)]
mod tests {
    use super::{lasting, said_no};

    #[test]
    fn an_icmp_answer_is_about_one_datagram_and_the_socket_s_own_errors_are_not() {
        let os = std::io::Error::from_raw_os_error;
        for no in [
            libc::ECONNREFUSED,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::EACCES,
        ] {
            assert!(said_no(&os(no)), "{no}");
        }
        assert!(said_no(&std::io::ErrorKind::ConnectionRefused.into()));
        for own in [libc::EBADF, libc::ENOMEM, libc::ENOTCONN] {
            assert!(!said_no(&os(own)), "{own}");
        }
        // Read twice in a row, only EACCES ends the flow: a security
        // module's refusal lasts, a "port unreachable" burst does not.
        assert!(lasting(&os(libc::EACCES)));
        assert!(!lasting(&os(libc::ECONNREFUSED)) && !lasting(&os(libc::EHOSTUNREACH)));
    }
}
