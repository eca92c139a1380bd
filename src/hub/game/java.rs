//! Minecraft Java players: the first packet read (bounded: 5 s, 8 KiB),
//! routed by name, and passed home untouched; or answered here while home
//! is away (status, Disconnect), or when home never answers.

use super::readers::{self, Reading};
use super::{super::Shared, Words};
use crate::places::Scope;
use crate::{
    config::game::{Game, GameSettings},
    game::java::{self, First, Junk},
    hub::{
        player::{self, Opening, Unanswered},
        refusals::Reason,
        service::Home,
    },
    net,
    proto::HomeState,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tracing::Instrument;

/// A handshake must arrive this soon, or the connection is closed.
const READ_WITHIN: Duration = Duration::from_secs(5);
/// A Java client gives up on a login after 30 s without a packet: a join
/// held while the server starts is told to come back before that.
const LOGIN_HOLD: Duration = Duration::from_secs(25);
/// A server-list ping home has this long to be answered.
const STATUS_HOLD: Duration = Duration::from_secs(5);
/// What the hub answers itself: one status request and one ping.
const MAX_STATUS_PACKET: usize = 64;
/// A Login Start: a name and a UUID, and from 1.19 to 1.19.2 a chat
/// signing key (a few hundred bytes) and its signature (up to 4 KiB).
const MAX_LOGIN_START: usize = 8 * 1024;

/// A connection on the TCP port `port` (the service that listens for
/// the name-routed group, or the only one).
pub(in crate::hub) fn on_accept(
    shared: Arc<Shared>,
    port: String,
    offset: u16,
    tcp: TcpStream,
    addr: SocketAddr,
) {
    let Some(mut early) = admit_early(&shared, &port, &tcp, addr) else {
        return;
    };
    let Some(slots) = reader_slots(&shared, &port, &tcp, addr, &mut early) else {
        return;
    };
    net::tune_plain(&tcp);
    let arrived = std::time::Instant::now();
    let span = tracing::info_span!("player", port = %port, player = %addr);
    let sh = shared.clone();
    shared.tracker.spawn(
        async move {
            let mut tcp = tcp;
            let evicted = slots.evicted();
            let read = tokio::select! {
                r = tokio::time::timeout(READ_WITHIN, read_first(&mut tcp)) => r,
                _ = sh.shutdown.cancelled() => return,
                _ = evicted => return gave_way(&sh, &tcp, &port, addr, &slots),
            };
            let why = match read {
                Ok(Ok((first, buf))) => {
                    let at = (port.as_str(), offset, arrived);
                    return routed(sh, at, tcp, addr, first, buf, slots, early).await;
                }
                Ok(Err(j)) => j.0,
                Err(_) => "no Minecraft handshake within 5 s",
            };
            refuse(
                &sh,
                &tcp,
                &port,
                Reason::GameHandshake,
                addr.ip(),
                &format!("player closed: {why}"),
            );
        }
        .instrument(span),
    );
}

/// The door a port of one service counts a connection at before a byte is
/// read, as any other port does (rates and bans count junk too), though
/// its place there waits for the first packet: silent connections from
/// two addresses would otherwise fill a service of ten players. A shared
/// port turns away, before reading, an address every service there
/// refuses. None: refused, with a reset.
fn admit_early(shared: &Shared, port: &str, tcp: &TcpStream, addr: SocketAddr) -> Option<Early> {
    let early = match sole_service(shared, port) {
        Some(door) => match crate::hub::bans::knock(shared, port, &door, addr.ip()) {
            Ok(a) => Some((port.to_string(), a)),
            Err(reason) => {
                refuse(
                    shared,
                    tcp,
                    port,
                    reason,
                    addr.ip(),
                    &format!("player refused by service {port} with a reset"),
                );
                return None;
            }
        },
        None => {
            if let Some(reason) = turned_away(shared, port, addr.ip()) {
                refuse(
                    shared,
                    tcp,
                    port,
                    reason,
                    addr.ip(),
                    &format!("player refused by port {port} with a reset"),
                );
                return None;
            }
            None
        }
    };
    Some(early)
}

/// A reader's places (`readers`), or None if the hub is full (refused,
/// with a reset; a knock at the door given its token back).
fn reader_slots(
    shared: &Shared,
    port: &str,
    tcp: &TcpStream,
    addr: SocketAddr,
    early: &mut Early,
) -> Option<Reading> {
    let why = match readers::enter(shared, addr.ip()) {
        Ok(reading) => return Some(reading),
        Err(why) => why,
    };
    if let Some((_, k)) = early.take() {
        k.refund();
    }
    let detail = match why {
        Reason::HubFull => "player refused with a reset: the hub's player cap is reached",
        _ => "player refused with a reset: too many connections still sending their first packet",
    };
    refuse(shared, tcp, port, why, addr.ip(), detail);
    None
}

/// A reader whose place a newer connection took: reset, and counted
/// against the cap that gave it away.
fn gave_way(shared: &Shared, tcp: &TcpStream, port: &str, addr: SocketAddr, t: &Reading) {
    let reason = match t.evicted_by() {
        Some(Scope::Source) => Reason::GameHandshakesFromSource,
        // The hub full: a newcomer took its place under the cap.
        Some(Scope::Elsewhere) => Reason::HubFull,
        _ => Reason::GameHandshakesPending,
    };
    let detail =
        "player closed with a reset: a newer connection took its place before its first packet";
    refuse(shared, tcp, port, reason, addr.ip(), detail);
}

/// The door of the one service on `port`, if it is not shared.
fn sole_service(shared: &Shared, port: &str) -> Option<Arc<crate::hub::admission::Door>> {
    let settings = shared.settings();
    let shared_with = settings
        .services
        .iter()
        .any(|s| s.shares_port_of.as_deref() == Some(port));
    if shared_with {
        return None;
    }
    shared.served(port).map(|s| s.door.clone())
}

/// A player turned away at `at` (a service or a port) with a reset, and
/// counted.
fn refuse(
    shared: &Shared,
    tcp: &TcpStream,
    at: &str,
    reason: Reason,
    ip: std::net::IpAddr,
    detail: &str,
) {
    net::abort_on_close(tcp);
    shared.refusals.record_player(at, reason, ip, detail);
}

/// Why every service sharing `port` turns `ip` away, if they all do.
fn turned_away(shared: &Shared, port: &str, ip: std::net::IpAddr) -> Option<Reason> {
    let settings = shared.settings();
    let mut why = None;
    for s in settings
        .services
        .iter()
        .filter(|s| s.name == port || s.shares_port_of.as_deref() == Some(port))
    {
        let banned = shared.bans.check(&s.name, ip).err();
        match banned.or_else(|| shared.served(&s.name)?.door.turned_away(ip)) {
            Some(r) => why = Some(r),
            None => return None,
        }
    }
    why
}

/// How long the start of an older client's legacy ping (`FE`, `FE 01`)
/// waits for bytes that would make it a modern packet instead: a client
/// writes its handshake whole, so they come with it, and a legacy client
/// waits for the answer, so none come.
const LEGACY_SILENCE: std::time::Duration = std::time::Duration::from_millis(250);

/// The first packet and every byte read so far.
async fn read_first(tcp: &mut TcpStream) -> Result<(First, Vec<u8>), Junk> {
    let mut buf = Vec::with_capacity(512);
    loop {
        if let Some((first, _)) = java::first(&buf)? {
            return Ok((first, buf));
        }
        if buf.len() >= java::MAX_FIRST {
            return Err(Junk("a first packet longer than 8 KiB"));
        }
        let mut chunk = [0u8; 512];
        let room = (java::MAX_FIRST - buf.len()).min(chunk.len());
        let read = tcp.read(&mut chunk[..room]);
        let read = if java::legacy_prefix(&buf) {
            match tokio::time::timeout(LEGACY_SILENCE, read).await {
                Ok(r) => r,
                Err(_) => return Ok((First::Legacy, buf)),
            }
        } else {
            read.await
        };
        match read {
            Ok(0) | Err(_) => return Err(Junk("closed before a whole handshake")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Which service of the group on `port` a player's name goes to; the
/// names there are if none.
fn route(
    settings: &crate::config::hub::HubSettings,
    port: &str,
    host: Option<&str>,
) -> Result<String, Vec<String>> {
    let group: Vec<_> = settings
        .services
        .iter()
        .filter(|s| s.name == port || s.shares_port_of.as_deref() == Some(port))
        .filter_map(|s| s.game.as_ref().map(|g| (s, g)))
        .collect();
    if let [(only, g)] = group[..]
        && g.hosts.is_empty()
    {
        return Ok(only.name.clone());
    }
    if let Some(h) = host
        && let Some((s, _)) = group.iter().find(|(_, g)| g.hosts.iter().any(|n| n == h))
    {
        return Ok(s.name.clone());
    }
    // Not a name with letters beyond ASCII: Java's case-insensitive
    // compare (a BungeeCord or Velocity at home choosing its backend by
    // name) takes the Kelvin sign for `k` and a long s for `s`, so such a
    // name could reach at home the server of a name whose `allow` the hub
    // never applied.
    let plain = host.is_none_or(|h| h.is_ascii());
    if let Some((s, _)) = group.iter().find(|(_, g)| g.default_host && plain) {
        return Ok(s.name.clone());
    }
    Err(group.iter().flat_map(|(_, g)| g.hosts.clone()).collect())
}

/// The names on `port` of the services that would let `ip` in: an
/// address a service's `allow` leaves out is not told its names.
fn names_for(
    shared: &Shared,
    settings: &crate::config::hub::HubSettings,
    port: &str,
    ip: std::net::IpAddr,
) -> Vec<String> {
    settings
        .services
        .iter()
        .filter(|s| s.name == port || s.shares_port_of.as_deref() == Some(port))
        .filter(|s| {
            // A service that would turn the player away keeps its names
            // private from it, a ban as well as allow/deny.
            shared.bans.check(&s.name, ip).is_ok()
                && shared
                    .served(&s.name)
                    .is_some_and(|x| x.door.turned_away(ip).is_none())
        })
        .filter_map(|s| s.game.as_ref())
        .flat_map(|g| g.hosts.clone())
        .collect()
}

/// A connection counted before the read, and at which service's door.
type Early = Option<(String, crate::hub::admission::Knocked)>;

/// A player who typed `host`, a name the port does not serve: told the
/// names it does, while it holds its reader's place (which a newer
/// connection may take: then reset and counted, as a silent reader is).
async fn unknown_name(
    shared: &Shared,
    (port, addr): (&str, SocketAddr),
    mut tcp: TcpStream,
    host: Option<&str>,
    (first, buf): (First, Vec<u8>),
    reading: Reading,
) {
    let settings = shared.settings();
    let names = names_for(shared, &settings, port, addr.ip());
    let shown = host.unwrap_or("(none: a client before 1.7)");
    shared.refusals.record_player(
        port,
        Reason::UnknownHost,
        addr.ip(),
        &format!("player told the names this port serves: they typed {shown}"),
    );
    let text = if names.is_empty() {
        format!("No server is called {shown} here.")
    } else {
        format!(
            "No server is called {shown} here. Try: {}",
            names.join(", ")
        )
    };
    tokio::select! {
        _ = answer(&mut tcp, first, buf, &text, None) => {}
        _ = reading.evicted() => gave_way(shared, &tcp, port, addr, &reading),
    }
}

#[allow(clippy::too_many_arguments)]
async fn routed(
    shared: Arc<Shared>,
    (port, offset, arrived): (&str, u16, std::time::Instant),
    mut tcp: TcpStream,
    addr: SocketAddr,
    first: First,
    buf: Vec<u8>,
    reading: Reading,
    early: Early,
) {
    let settings = shared.settings();
    let host = match &first {
        First::Handshake(h) => Some(h.host()),
        First::Legacy => None,
    };
    let name = match route(&settings, port, host.as_deref()) {
        Ok(n) => n,
        Err(_) => {
            let at = (port, addr);
            return unknown_name(&shared, at, tcp, host.as_deref(), (first, buf), reading).await;
        }
    };
    let (Some(served), Some(game)) = (
        shared.served(&name),
        settings.service(&name).and_then(|s| s.game.clone()),
    ) else {
        return;
    };
    if game.game != Game::Minecraft {
        return;
    }
    // Its place under the hub's cap becomes the player's.
    let slot = reading.into_slot();
    // (A reload since the accept may have moved the name elsewhere.)
    let admitted = match (early.filter(|(at, _)| *at == name), slot) {
        (Some((_, k)), slot) => crate::hub::bans::seat(&shared, &name, (addr.ip(), k), slot),
        (None, Some(slot)) => shared
            .bans
            .check(&name, addr.ip())
            .and_then(|()| served.door.admit_holding(addr.ip(), slot)),
        (None, None) => crate::hub::bans::admit(&shared, &name, &served.door, addr.ip()),
    };
    let admitted = match admitted {
        Ok(a) => a,
        Err(reason) => {
            refuse(
                &shared,
                &tcp,
                &name,
                reason,
                addr.ip(),
                &format!("player refused by service {name} with a reset"),
            );
            return;
        }
    };
    tracing::Span::current().record("port", name.as_str());
    let to = player::Player {
        addr,
        arrived,
        offset,
        watch: player::watch(&served.door, &admitted),
    };
    let home = (&served.svc, &served.cut);
    serve(&shared, home, &game, &mut tcp, to, first, buf).await;
    drop(admitted);
}

/// The service's way home and what cuts its players off.
type Way<'a> = (
    &'a Arc<crate::hub::service::Service>,
    &'a tokio_util::sync::CancellationToken,
);

async fn serve(
    shared: &Arc<Shared>,
    (svc, cut): Way<'_>,
    game: &GameSettings,
    tcp: &mut TcpStream,
    to: player::Player,
    first: First,
    mut buf: Vec<u8>,
) {
    let words = Words(game);
    let home = svc.home();
    let icon = game.icon.as_deref();
    let login = matches!(&first, First::Handshake(h) if h.is_login());
    // A join while no ep serves the service. (One while home was found
    // down goes home all the same: one failed dial is not proof, and if
    // it is still down, the answer below says so.)
    if login && home == Home::Away {
        let _ = answer(tcp, first, buf, &words.offline_message(), icon).await;
        return;
    }
    if login && let Err(Junk(why)) = with_login_start(tcp, &mut buf).await {
        let detail = format!("player closed: {why}");
        return refuse(
            shared,
            tcp,
            &svc.name,
            Reason::GameHandshake,
            to.addr.ip(),
            &detail,
        );
    }
    if !login {
        if let Some(motd) = words.motd_for(home) {
            let _ = answer(tcp, first, buf, &motd, icon).await;
            return;
        }
        // Passed home whole with its status request, so that the hub can
        // still answer it if home does not.
        if let First::Handshake(_) = &first
            && with_status_request(tcp, &mut buf).await.is_err()
        {
            return;
        }
    }
    let opening = Opening {
        sent: buf,
        no_wake: !login,
        hold: if login { LOGIN_HOLD } else { STATUS_HOLD },
    };
    let unanswered = player::serve(
        shared.clone(),
        svc.clone(),
        tcp,
        to,
        cut.clone(),
        Some(opening),
    )
    .await;
    let Some(why) = unanswered else { return };
    let home = settled_home(svc).await;
    let text = match (why, login) {
        (Unanswered::Held, true) => words.still_starting(),
        (_, true) => words.offline_message(),
        (Unanswered::Held, false) => words.starting_motd(),
        (Unanswered::Silent, false) => words
            .motd_for(home)
            .unwrap_or_else(|| words.offline_motd(home)),
    };
    // The first packet (and the status request) went home; answer what
    // follows them.
    let _ = answered_after(tcp, first, &text, icon).await;
}

/// Home as the ep reports it after a dial that failed: its report rides
/// the control connection, the failure the channel, so the report may
/// come a moment later (it says whether the service sleeps or is down).
async fn settled_home(svc: &crate::hub::service::Service) -> Home {
    for _ in 0..25 {
        let home = svc.home();
        if !matches!(home, Home::Unknown | Home::Reported(HomeState::Up)) {
            return home;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.home()
}

/// Reads the status request that follows a status handshake into `buf`.
async fn with_status_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Junk> {
    let what = [
        "closed before the status request",
        "no status request within 5 s",
    ];
    with_next_packet(tcp, buf, MAX_STATUS_PACKET, what).await?;
    Ok(())
}

/// Reads the Login Start that follows a login handshake into `buf`: a
/// join goes home (and wakes a sleeping server) only once a client has
/// sent what every client sends with its handshake, not on a handshake
/// alone, which any scanner sends.
async fn with_login_start(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Junk> {
    let what = ["closed before the Login Start", "no Login Start within 5 s"];
    match with_next_packet(tcp, buf, MAX_LOGIN_START, what).await? {
        0 => Ok(()),
        _ => Err(Junk("a login handshake followed by something else")),
    }
}

/// Reads into `buf` until the packet after the handshake is whole (at most
/// `max` bytes, within `READ_WITHIN`); its id. `what`: what is said when
/// the client closes first, and when the packet does not come in time.
async fn with_next_packet(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    [closed, late]: [&'static str; 2],
) -> Result<i32, Junk> {
    let (_, used) = java::first(buf)?.ok_or(Junk("no handshake"))?;
    let read = async {
        loop {
            if let Some((id, _, _)) = java::packet(&buf[used..], max)? {
                return Ok(id);
            }
            let mut chunk = [0u8; 512];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(Junk(closed)),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(READ_WITHIN, read)
        .await
        .map_err(|_| Junk(late))?
}

/// Answers a player whose first packet the hub read: `text` as the
/// server-list line, or as the Disconnect of a join.
async fn answer(
    tcp: &mut TcpStream,
    first: First,
    buf: Vec<u8>,
    text: &str,
    icon: Option<&str>,
) -> std::io::Result<()> {
    let used = match &first {
        First::Legacy => buf.len(),
        First::Handshake(_) => java::first(&buf)
            .ok()
            .flatten()
            .map_or(buf.len(), |(_, u)| u),
    };
    let mut rest = Conversation {
        buf: buf[used..].to_vec(),
    };
    reply(tcp, &first, &mut rest, text, icon).await
}

/// As `answer`, after the first packet went home (and the status
/// request with it).
async fn answered_after(
    tcp: &mut TcpStream,
    first: First,
    text: &str,
    icon: Option<&str>,
) -> std::io::Result<()> {
    let mut rest = Conversation { buf: Vec::new() };
    match &first {
        First::Handshake(h) if !h.is_login() => {
            status(tcp, h.protocol, &mut rest, text, icon, false).await
        }
        _ => reply(tcp, &first, &mut rest, text, icon).await,
    }
}

async fn reply(
    tcp: &mut TcpStream,
    first: &First,
    rest: &mut Conversation,
    text: &str,
    icon: Option<&str>,
) -> std::io::Result<()> {
    match first {
        First::Legacy => {
            let s = java::Status {
                motd: text,
                version: "ferry",
                protocol: 0,
                favicon: None,
            };
            write_within(tcp, &s.legacy()).await?;
            linger_close(tcp).await
        }
        First::Handshake(h) if h.is_login() => {
            write_within(tcp, &java::disconnect(text)).await?;
            linger_close(tcp).await
        }
        First::Handshake(h) => status(tcp, h.protocol, rest, text, icon, true).await,
    }
}

/// An answer to a client that may never read it (a long name list can
/// outgrow the socket's buffer): given up after `READ_WITHIN`, as the
/// status conversation is, so the door's places are not held.
async fn write_within(tcp: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(READ_WITHIN, tcp.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the client read nothing"))?
}

/// The status conversation: the request (unless it went home already),
/// the response, then the ping and its pong.
async fn status(
    tcp: &mut TcpStream,
    protocol: i32,
    rest: &mut Conversation,
    motd: &str,
    icon: Option<&str>,
    expect_request: bool,
) -> std::io::Result<()> {
    let talk = async {
        if expect_request {
            let (id, _) = rest.packet(tcp).await?;
            if id != 0 {
                return Err(bad("expected a status request"));
            }
        }
        let s = java::Status {
            motd,
            version: "ferry",
            protocol,
            favicon: icon,
        };
        tcp.write_all(&s.response()).await?;
        let (id, payload) = rest.packet(tcp).await?;
        if id != 1 {
            return Err(bad("expected a ping"));
        }
        let pong = java::pong(&payload).map_err(|j| bad(j.0))?;
        tcp.write_all(&pong).await?;
        tcp.shutdown().await
    };
    tokio::time::timeout(READ_WITHIN, talk)
        .await
        .unwrap_or_else(|_| Err(bad("the client went quiet")))
}

/// Ends a connection after the last answer without a reset: what the
/// client still sends (its Login Start) is read, not left unread.
async fn linger_close(tcp: &mut TcpStream) -> std::io::Result<()> {
    tcp.shutdown().await?;
    let drain = async {
        let mut sink = [0u8; 1024];
        let mut total = 0;
        while let Ok(n) = tcp.read(&mut sink).await {
            total += n;
            if n == 0 || total > 16 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}

fn bad(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

/// Bytes read beyond the first packet, then the socket.
struct Conversation {
    buf: Vec<u8>,
}

impl Conversation {
    async fn packet(&mut self, tcp: &mut TcpStream) -> std::io::Result<(i32, Vec<u8>)> {
        loop {
            if let Some((id, body, used)) =
                java::packet(&self.buf, MAX_STATUS_PACKET).map_err(|j| bad(j.0))?
            {
                let body = body.to_vec();
                self.buf.drain(..used);
                return Ok((id, body));
            }
            let mut chunk = [0u8; 64];
            match tcp.read(&mut chunk).await? {
                0 => return Err(bad("closed")),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
