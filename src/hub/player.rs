//! The service door: players on plain TCP, each relayed through a channel.

use super::{Shared, admission::Door, service::Service};
use crate::{
    net,
    proto::{self, HubMsg},
    relay,
};
use std::{net::SocketAddr, sync::Arc};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tracing::Instrument;

/// A player accepted on a port of `svc`, admitted by `door`, cut off when
/// `cut` fires (the service removed and drained, or the hard stop).
pub(super) fn on_accept(
    shared: Arc<Shared>,
    (svc, door, cut): (
        &Arc<Service>,
        &Arc<Door>,
        &tokio_util::sync::CancellationToken,
    ),
    tcp: TcpStream,
    addr: SocketAddr,
    offset: u16,
) {
    // The door's limits come before anything costs the ep: no channel, no
    // dial at home for a refused player, who gets a reset.
    let admitted = match super::bans::admit(&shared, &svc.name, door, addr.ip()) {
        Ok(a) => a,
        Err(reason) => {
            net::abort_on_close(&tcp);
            let detail = format!("player refused by service {} with a reset", svc.name);
            shared
                .refusals
                .record_player(&svc.name, reason, addr.ip(), &detail);
            return;
        }
    };
    let arrived = std::time::Instant::now();
    net::tune_plain(&tcp);
    let watch = watch(door, &admitted);
    let span = tracing::info_span!("player", service = %svc.name, player = %addr);
    let (svc, cut) = (svc.clone(), cut.clone());
    shared.tracker.clone().spawn(
        async move {
            let mut tcp = tcp;
            let to = Player {
                addr,
                arrived,
                offset,
                watch,
            };
            serve(shared, svc, &mut tcp, to, cut, None).await;
            drop(admitted);
        }
        .instrument(span),
    );
}

/// A player's relay settings, as admitted.
pub(super) fn watch(door: &Door, admitted: &super::admission::Admitted) -> relay::Watch {
    relay::Watch {
        idle: admitted.limits.idle_timeout,
        meter: Some(door.meters().meter.clone()),
        first_down: Some((std::time::Instant::now(), door.meters().first_byte.clone())),
        player: None,
        rate: door.caps().relay_limits(),
        // The hub's uploads go down home's downlink, rarely the thin side.
        guard: None,
    }
}

/// Who arrived, when, on which port of the range, and how they are
/// relayed.
pub(super) struct Player {
    pub addr: SocketAddr,
    pub arrived: std::time::Instant,
    pub offset: u16,
    pub watch: relay::Watch,
}

/// What a game door already read from the player: sent home first,
/// untouched, and home must answer within `hold`.
pub(super) struct Opening {
    pub sent: Vec<u8>,
    /// A server-list ping: a service asleep at home stays asleep.
    pub no_wake: bool,
    pub hold: std::time::Duration,
}

/// Why a player with an `Opening` heard nothing from home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unanswered {
    /// No channel, or home closed it before a byte (the service at home
    /// refused the ep, or is not there).
    Silent,
    /// Home said nothing within `hold` (a service still starting).
    Held,
}

/// Carries `tcp` home through a channel of `svc`. With an `opening`, its
/// bytes go first, and if home never answers the player is handed back
/// (`Some`) for the caller to answer in home's stead.
pub(super) async fn serve(
    shared: Arc<Shared>,
    svc: Arc<Service>,
    tcp: &mut TcpStream,
    to: Player,
    cut: tokio_util::sync::CancellationToken,
    opening: Option<Opening>,
) -> Option<Unanswered> {
    let Player {
        addr,
        arrived,
        offset,
        mut watch,
    } = to;
    let tcp = &mut *tcp;
    tracing::info!("player connected");
    // Dropped at the end of this call, before the caller closes `tcp`.
    let seat = seat(&shared, &svc, tcp, (addr, arrived), &cut);
    watch.player = Some(seat.player.meter.clone());
    super::bans::seated(&shared, &seat.player);
    // Matched as a temporary: a named result would stay in the task's
    // state beside the tunnel moved out of it.
    // A game door's `hold` counts from here, the wait for a channel
    // included: the client's own timeout (a Java login's 30 s) does not
    // wait for the hub's steps one after another.
    let began = std::time::Instant::now();
    // A server-list ping may shut its side once it asked; a join that does
    // has left.
    let hold = opening.as_ref().map(|o| (o.hold, o.no_wake));
    let (named, modern, mut tunnel) =
        match take_channel(&shared, &svc, tcp, &seat.player, hold).await {
            Ok(taken) => taken,
            Err(back) => return ended_unserved(tcp, &opening, back),
        };
    // After the tunnel, so it drops first (see `Player::on_channel`).
    let _channel = seat.player.on_channel(super::service::tcp_fd(&tunnel));
    let start = HubMsg::Start {
        player: addr,
        service: tcp.local_addr().ok().filter(|_| modern),
        udp: false,
        offset,
        flow: None,
        name: named.then(|| svc.name.clone()),
        // Eps from before negotiation refuse fields they do not know.
        no_wake: modern && opening.as_ref().is_some_and(|o| o.no_wake),
        pace: watch
            .rate
            .as_ref()
            .filter(|_| modern)
            .and_then(|r| r.rates()),
    };
    let sent = opening.as_ref().map(|o| &o.sent[..]).unwrap_or_default();
    if !send_start(&shared, &mut tunnel, &start, sent).await {
        let back = opening.as_ref().map(|_| Unanswered::Silent);
        return ended_unserved(tcp, &opening, back);
    }
    watch.count(sent.len() as u64, 0);
    if let Some(o) = &opening {
        let left = o.hold.saturating_sub(began.elapsed());
        let hold = (left, o.no_wake);
        match first_answer(tcp, &mut tunnel, hold, &seat.player, &mut watch).await {
            Ok(()) => {}
            Err(FirstAnswer::Home(why)) => {
                tunnel.abort();
                tracing::info!("home did not answer: {why:?}");
                return Some(why);
            }
            Err(FirstAnswer::PlayerGone) => {
                net::abort_on_close(tcp);
                tunnel.abort();
                tracing::info!("player left before home answered");
                return None;
            }
        }
    }
    relay_home(&shared, tcp, &mut tunnel, watch, &seat.player).await;
    None
}

/// A player never carried home (no channel in time, the hub stopping, a
/// channel that failed at its start): reset, so a client that reads until
/// the end does not take an empty, clean close for the whole reply. A game
/// door's player (`opening`) goes back to the caller, which answers it.
fn ended_unserved(
    tcp: &TcpStream,
    opening: &Option<Opening>,
    back: Option<Unanswered>,
) -> Option<Unanswered> {
    if opening.is_none() {
        net::abort_on_close(tcp);
    }
    back
}

/// A channel of `svc` for the player: whether the hub opened it, whether
/// its ep negotiates, and its tunnel. Or what `serve` returns without one
/// (the player gone, cut off or the hub stopping while it waited; no
/// channel in time). A function of its own: rustc keeps a value partly
/// moved out of (the `Channel` the tunnel is taken from) in a task's
/// state until its scope ends, beside the tunnel: 1.2 KiB per idle player.
async fn take_channel(
    shared: &Shared,
    svc: &Arc<Service>,
    tcp: &mut TcpStream,
    seat: &super::players::Player,
    // A game door's `hold`, and whether the player asked for the server
    // list (whose end once it asked is no leaving).
    hold: Option<(std::time::Duration, bool)>,
) -> Result<(bool, bool, super::service::Tunnel), Option<Unanswered>> {
    let opening = hold.is_some();
    let wait = shared.settings().timing.player_wait;
    let wait = hold.map_or(wait, |(h, _)| wait.min(h));
    let asked = hold.is_some_and(|(_, ping)| ping);
    let taken = tokio::select! {
        // A player banned as they arrived takes no channel, even one ready
        // at once (a game door's first packet would go home on it).
        biased;
        _ = seat.ended() => {
            net::abort_on_close(tcp);
            tracing::info!("player closed before a channel was ready: {}", seat.ended_by().unwrap_or("cut off"));
            return Err(None);
        }
        _ = shared.shutdown.cancelled() => return Err(None),
        _ = gone(tcp, asked) => {
            tracing::info!("player left before a channel was ready");
            return Err(None);
        }
        r = svc.take(wait) => r,
    };
    match taken {
        Ok(ch) => {
            if !shared.carried(seat, &ch) {
                let mut tunnel = ch.tunnel;
                tunnel.abort();
                net::abort_on_close(tcp);
                tracing::info!("player closed: {}", super::REVOKED);
                return Err(None);
            }
            Ok((ch.opened_by_hub(), ch.modern, ch.tunnel))
        }
        Err(e) => {
            tracing::info!("player closed: {e}");
            Err(opening.then_some(Unanswered::Silent))
        }
    }
}

/// `tcp`'s place in the players table, ended by `cut` or a kick.
fn seat(
    shared: &Shared,
    svc: &Arc<Service>,
    tcp: &TcpStream,
    (addr, arrived): (SocketAddr, std::time::Instant),
    cut: &tokio_util::sync::CancellationToken,
) -> super::players::PlayerGuard {
    let arrival = super::players::Arrival {
        svc,
        addr,
        udp: false,
        fd: Some(std::os::fd::AsRawFd::as_raw_fd(tcp)),
        arrived,
        cut,
    };
    shared.players.add(arrival, relay::Meter::default())
}

/// `Start`, then the bytes a game door already read, within the handshake
/// timeout; false (said in the log) if the channel failed or stalled.
async fn send_start(
    shared: &Shared,
    tunnel: &mut super::service::Tunnel,
    start: &HubMsg,
    sent: &[u8],
) -> bool {
    let begin = async {
        proto::write_msg(&mut *tunnel, start)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tunnel.write_all(sent).await?;
        tunnel.flush().await
    };
    match tokio::time::timeout(shared.settings().timing.handshake_timeout, begin).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::info!("player closed: channel failed at start: {e}");
            false
        }
        Err(_) => {
            tracing::info!("player closed: channel stalled at start");
            false
        }
    }
}

/// The player and home relayed until either ends, or `cut`; how it ended
/// goes to the log.
async fn relay_home(
    shared: &Shared,
    tcp: &mut TcpStream,
    tunnel: &mut super::service::Tunnel,
    mut watch: relay::Watch,
    seat: &super::players::Player,
) {
    // A capped player's upload crosses home's downlink paced by the
    // kernel over TLS, not in bursts of the cap's steps (over QUIC the
    // usual steps: see `rate::Smooth::No`).
    if let (Some(r), Some(fd)) = (watch.rate.as_mut(), super::service::tcp_fd(tunnel)) {
        r.smooth(crate::rate::Dir::Up, Some(fd));
    }
    // Until the relay ends cleanly, any close of the player's socket is a
    // reset: the hub killed (SIGKILL, the OOM killer) or its task
    // panicking would otherwise close it with a FIN, and a download cut
    // short would look complete to the player.
    net::abort_on_close(tcp);
    let relayed = tokio::select! {
        r = relay::relay_watched(tcp, tunnel, watch) => Some(r),
        // The hub's hard stop, the service removed and drained, a kick or
        // a ban.
        _ = seat.ended() => None,
    };
    match relayed {
        Some((s, None)) => {
            net::close_cleanly(tcp);
            let how = match s.idle_after_end {
                true => "player closed: idle after home's end (player_idle_timeout)",
                false => "player disconnected",
            };
            tracing::info!(
                up = s.up,
                down = s.down,
                secs = s.elapsed.as_secs_f64(),
                "{how}"
            )
        }
        Some((s, Some(e))) => {
            // A break on either side is a break on both: a reset, never a
            // clean end, so a cut transfer cannot look complete.
            net::abort_on_close(tcp);
            tunnel.abort();
            tracing::info!(
                up = s.up,
                down = s.down,
                secs = s.elapsed.as_secs_f64(),
                "player connection broken: {e}"
            );
        }
        None => {
            // Cut off by the end of the drain: a reset, so a download cut
            // short never looks complete.
            net::abort_on_close(tcp);
            tunnel.abort();
            let why = if shared.hard_stop.is_cancelled() {
                "hub shutting down"
            } else {
                seat.ended_by()
                    .unwrap_or("service removed from the configuration")
            };
            tracing::info!("player cut off: {why}");
        }
    }
}

enum FirstAnswer {
    Home(Unanswered),
    PlayerGone,
}

/// Waits for home's first bytes and hands them to the player; what the
/// player sends meanwhile goes home.
async fn first_answer(
    tcp: &mut TcpStream,
    tunnel: &mut super::service::Tunnel,
    // How long home may take, and whether the player asked for the server
    // list (whose end once it asked is no leaving).
    (hold, asked): (std::time::Duration, bool),
    seat: &super::players::Player,
    // Counts what moves here, as the relay after it counts the rest.
    watch: &mut relay::Watch,
) -> Result<(), FirstAnswer> {
    let (mut down, mut up) = (vec![0u8; 8 * 1024], vec![0u8; 4 * 1024]);
    let deadline = tokio::time::sleep(hold);
    tokio::pin!(deadline);
    // A server-list ping that shut its side waits for the answer (the
    // relay passes its end on after it); a join that did has left.
    let mut sent_all = false;
    loop {
        tokio::select! {
            r = tunnel.read(&mut down) => match r {
                Ok(0) | Err(_) => return Err(FirstAnswer::Home(Unanswered::Silent)),
                Ok(n) => {
                    tcp.write_all(&down[..n]).await.map_err(|_| FirstAnswer::PlayerGone)?;
                    watch.count(0, n as u64);
                    return Ok(());
                }
            },
            r = tcp.read(&mut up), if !sent_all => match r {
                Ok(0) if asked => sent_all = true,
                Ok(0) | Err(_) => return Err(FirstAnswer::PlayerGone),
                Ok(n) => {
                    // Home may not read while it wakes: the deadline and
                    // the cut still hold while this write waits.
                    tokio::select! {
                        r = tunnel.write_all(&up[..n]) => match r {
                            Ok(()) => watch.count(n as u64, 0),
                            Err(_) => return Err(FirstAnswer::Home(Unanswered::Silent)),
                        },
                        _ = &mut deadline => return Err(FirstAnswer::Home(Unanswered::Held)),
                        _ = seat.ended() => return Err(FirstAnswer::PlayerGone),
                    }
                }
            },
            _ = &mut deadline => return Err(FirstAnswer::Home(Unanswered::Held)),
            _ = seat.ended() => return Err(FirstAnswer::PlayerGone),
        }
    }
}

/// Resolves if the player hangs up while waiting for a channel, so the ep is
/// never told to dial the service for a player who already left (a phantom
/// player in a game). A player who sends data is real: stop watching. A
/// server-list ping the game door read (`asked`) that then shut its side
/// waits for the answer (a script, `nc -N`); a join that did has left.
async fn gone(tcp: &TcpStream, asked: bool) {
    let mut b = [0u8; 1];
    match tcp.peek(&mut b).await {
        Ok(0) if asked => std::future::pending().await,
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}
