//! One UDP flow's life on the hub: wait for a channel with its first
//! datagrams queued, tell the ep where the player is, then carry
//! datagrams both ways until the flow idles out or either side ends it.

use super::{Flow, UdpDoor};
use crate::{
    datagram,
    hub::{Shared, service::Service},
    proto::{self, HubMsg},
};
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use tokio::{io::AsyncWriteExt, net::UdpSocket};

pub(super) struct Run {
    pub shared: Arc<Shared>,
    pub svc: Arc<Service>,
    pub door: Arc<UdpDoor>,
    pub socket: Arc<UdpSocket>,
    pub offset: u16,
    pub at: super::Endpoints,
    pub flow: Arc<Flow>,
    pub cut: tokio_util::sync::CancellationToken,
    /// Its port is no longer served (see `UdpPort::spawn`).
    pub closed: tokio_util::sync::CancellationToken,
}

/// Datagrams and bytes sent to the player (counted from two loops of one
/// task: the stream's and the QUIC datagrams').
#[derive(Default)]
struct Down {
    datagrams: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl Down {
    /// Whether a datagram of `len` bytes for the player is within the
    /// flow's budget (over it, it is lost here, as on a full link);
    /// counted if so.
    fn passes(&self, door: &UdpDoor, flow: &Flow, len: usize) -> bool {
        if !door.within_rate(flow, crate::rate::Dir::Down, len) {
            return false;
        }
        door.count_down(flow, len as u64);
        self.datagrams.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        true
    }
}

/// A flow's first line, per service. Each new source starts a flow, and
/// a source costs a stranger nothing to forge: a line per flow would let
/// a flood of them fill the disk (or have journald throttle the real
/// warnings). Said at most once a second per service, with how many went
/// unsaid.
static STARTED: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
/// The last line of flows in which the player sent one datagram, as a
/// forged source's usually is: as rare as `STARTED`.
static ONE_SHOTS_ENDED: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
/// The last line of the other flows: a few a second per service, more
/// than players come and go, and still bounded, since a forger can send
/// twice without ever hearing an answer.
static ENDED: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
/// Of those, said each second per service at most.
const ENDS_SAID: u64 = 5;

impl Run {
    pub async fn run(self) {
        let key = (self.offset, self.at.player);
        let began = std::time::Instant::now();
        if let Some(unsaid) = STARTED.now(&self.door.service) {
            tracing::info!(unsaid, "udp flow started");
        }
        let down = Arc::new(Down::default());
        let arrival = crate::hub::players::Arrival {
            svc: &self.svc,
            addr: self.at.player,
            udp: true,
            fd: None,
            arrived: std::time::Instant::now(),
            cut: &self.cut,
        };
        let seat = self.shared.players.add(arrival, self.flow.meter.clone());
        crate::hub::bans::seated(&self.shared, &seat.player);
        let why = self.carry(&down, &seat.player).await;
        drop(seat);
        self.door.ended(key, &self.flow);
        let f = &self.flow;
        let up_datagrams = f.up_datagrams.load(Ordering::Relaxed);
        let service = &self.door.service;
        let said = match up_datagrams {
            0 | 1 => ONE_SHOTS_ENDED.now(service),
            _ => ENDED.now_within(service, ENDS_SAID),
        };
        let Some(unsaid) = said else { return };
        tracing::info!(
            secs = began.elapsed().as_secs(),
            up_datagrams,
            up_bytes = f.meter.up.get(),
            down_datagrams = down.datagrams.load(Ordering::Relaxed),
            down_bytes = down.bytes.load(Ordering::Relaxed),
            unsaid,
            "udp flow ended: {why}"
        );
    }

    /// Everything from taking a channel to the end; why it ended.
    async fn carry(&self, down: &Arc<Down>, seat: &crate::hub::players::Player) -> String {
        let (tunnel, link, id) = match self.open(seat).await {
            Ok(opened) => opened,
            Err(why) => return why,
        };
        // Over QUIC, datagrams skip this task both ways (see `quic::Sink`):
        // the door sends the player's, the link's reader sends home's.
        let registered = match (&link, id) {
            (Some(l), Some(id)) => {
                let _ = self.flow.direct.set((l.clone(), id));
                Some(l.register(id, self.sink(down)))
            }
            _ => None,
        };
        let (mut rd, mut wr) = tokio::io::split(tunnel);
        let up = async {
            let mut out = Vec::new();
            loop {
                datagram::written(&mut out);
                // Counted in the hub's budget until written.
                let held = match (&link, id) {
                    (Some(link), Some(id)) => {
                        // What does not fit a QUIC datagram goes on the
                        // stream, whole.
                        let send = |d: &[u8]| link.send(id, d);
                        let (left, held) = self.flow.queue.drain_sending(send).await;
                        for d in left {
                            datagram::encode(&mut out, &d);
                        }
                        if out.is_empty() {
                            continue;
                        }
                        held
                    }
                    _ => self.flow.queue.drain_into(&mut out).await.1,
                };
                if let Err(e) = write_flush(&mut wr, &out).await {
                    return e;
                }
                drop(held);
            }
        };
        let to_player = async |d: Vec<u8>| self.to_player(down, d).await;
        let back = async {
            while let Some(d) = datagram::read(&mut rd).await? {
                to_player(d).await;
            }
            Ok::<_, std::io::Error>(())
        };
        let link_closed = async {
            match &link {
                Some(l) => l.conn.closed().await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            // Over QUIC a write can meet the ep's end before it is read.
            e = up => crate::quic::ended_or_broken(e, "the ep ended it"),
            _ = link_closed => "the QUIC connection ended".into(),
            r = back => match r {
                Ok(()) => "the ep ended it".into(),
                Err(e) => format!("channel broken: {e}"),
            },
            quiet = self.idle() => format!("idle for {quiet:?}"),
            _ = self.flow.end.cancelled() => "made room for a newcomer".into(),
            _ = self.shared.shutdown.cancelled() => "hub shutting down".into(),
            _ = seat.ended() => match seat.ended_by() {
                Some(why) => why.into(),
                None => "service removed from the configuration".into(),
            },
            _ = self.closed.cancelled() => "its port was closed or handed to another service".into(),
        };
        self.leave_table();
        drop(registered);
        let mut tunnel = rd.unsplit(wr);
        // close_notify tells the ep the flow is over, so it closes its socket.
        let _ = tokio::time::timeout(Duration::from_secs(1), tunnel.shutdown()).await;
        why
    }

    /// Nothing more either way while the tunnel closes; the player's next
    /// datagram makes a new flow at once, not after the close (up to a
    /// second on a channel that no longer moves), which it would have
    /// waited out in this flow's queue, lost.
    fn leave_table(&self) {
        self.flow.ending.store(true, Ordering::Relaxed);
        self.door.ended((self.offset, self.at.player), &self.flow);
    }

    /// One datagram from home to the player, from the channel's stream.
    async fn to_player(&self, down: &Down, d: Vec<u8>) {
        if !down.passes(&self.door, &self.flow, d.len()) {
            return;
        }
        // A full socket buffer or an unreachable player loses this
        // datagram only, as the network would.
        let (to, from) = (self.at.reply_to, self.at.reply_from);
        if let Err(e) = crate::datagram::socket::send_from(&self.socket, &d, to, from).await {
            tracing::debug!("udp send to player: {e}");
        }
    }

    /// Where the link's datagrams for this flow go: to the player at once,
    /// or lost if the socket's buffer is full.
    fn sink(&self, down: &Arc<Down>) -> crate::quic::Sink {
        let (door, flow, socket) = (self.door.clone(), self.flow.clone(), self.socket.clone());
        let (down, to, from) = (down.clone(), self.at.reply_to, self.at.reply_from);
        Arc::new(move |d: &[u8]| {
            if down.passes(&door, &flow, d.len())
                && let Err(e) = crate::datagram::socket::try_send_from(&socket, d, to, from)
            {
                tracing::debug!("udp send to player: {e}");
            }
        })
    }

    /// A channel for this flow, started: the tunnel, and over QUIC the
    /// connection's datagram link and this flow's id on it. Or why not.
    async fn open(
        &self,
        seat: &crate::hub::players::Player,
    ) -> Result<
        (
            crate::hub::service::Tunnel,
            Option<crate::quic::Link>,
            Option<u32>,
        ),
        String,
    > {
        // In a block of its own, as in `player::serve`: the `Channel` the
        // tunnel is taken from must not stay in the task's state.
        let (named, mut tunnel) = {
            // A player who stops sending while the ep is away needs no
            // channel when it comes back: idleness counts from the start.
            let taken = tokio::select! {
                r = self.svc.take(self.shared.settings().timing.player_wait) => r,
                quiet = self.idle() => return Err(format!("idle for {quiet:?} before a channel was ready")),
                _ = self.flow.end.cancelled() => return Err("made room for a newcomer before a channel was ready".into()),
                _ = self.closed.cancelled() => return Err("its port was closed or handed to another service".into()),
                _ = seat.ended() => return Err(seat.ended_by().unwrap_or("service removed from the configuration").into()),
                _ = self.shared.shutdown.cancelled() => return Err("hub shutting down".into()),
            };
            match taken {
                Ok(ch) => {
                    if !self.shared.carried(seat, &ch) {
                        let mut tunnel = ch.tunnel;
                        tunnel.abort();
                        return Err(crate::hub::REVOKED.into());
                    }
                    (ch.opened_by_hub(), ch.tunnel)
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        // A flow's channel is never held behind a zero window, so datagrams
        // left unacknowledged mean a dead path: the flow ends within the
        // heartbeat timeout (at most 30 s), as over QUIC, and the player's next datagram
        // starts another over the ep's new session, rather than feeding
        // the dead one for the kernel's ~15 minutes of retries.
        tunnel.give_up_after(self.shared.settings().timing.heartbeat_timeout);
        self.door.started(&self.flow);
        // Over QUIC the datagrams ride QUIC datagrams, tagged with an id.
        let link = match &tunnel {
            crate::quic::Tunnel::Quic(q) => q.link.clone(),
            crate::quic::Tunnel::Tls(_) => None,
        };
        let id = link.as_ref().map(|l| l.next_id());
        let start = HubMsg::Start {
            player: self.at.player,
            service: self.at.reached,
            udp: true,
            offset: self.offset,
            flow: id,
            name: named.then(|| self.svc.name.clone()),
            no_wake: false,
            // A datagram over the cap is dropped here, and counted: the ep
            // sends what home sends (a game paces itself).
            pace: None,
        };
        let timeout = self.shared.settings().timing.handshake_timeout;
        match tokio::time::timeout(timeout, proto::write_msg(&mut tunnel, &start)).await {
            Ok(Ok(())) => Ok((tunnel, link, id)),
            Ok(Err(e)) => Err(format!("channel failed at start: {e}")),
            Err(_) => Err("channel stalled at start".into()),
        }
    }

    /// Resolves once the flow has been silent both ways for as long as it
    /// may be (which grows when it becomes a conversation); how long.
    async fn idle(&self) -> Duration {
        loop {
            let (quiet, allowed) = (
                self.door.idle_for(&self.flow),
                self.door.allowed_silence(&self.flow),
            );
            if quiet >= allowed {
                return allowed;
            }
            // Looked at again at least every few seconds: a reload may
            // have shortened the timeouts.
            tokio::time::sleep((allowed - quiet).min(Duration::from_secs(2))).await;
        }
    }
}

async fn write_flush(w: &mut (impl AsyncWriteExt + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}
