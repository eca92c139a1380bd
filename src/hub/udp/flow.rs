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

impl Run {
    pub async fn run(self) {
        let key = (self.offset, self.at.player);
        tracing::info!("udp flow started");
        let down = Down::default();
        let arrival = crate::hub::players::Arrival {
            svc: &self.svc,
            addr: self.at.player,
            udp: true,
            fd: None,
            cut: &self.cut,
        };
        let seat = self.shared.players.add(arrival, self.flow.meter.clone());
        crate::hub::bans::seated(&self.shared, &seat.player);
        let why = self.carry(&down, &seat.player).await;
        drop(seat);
        self.door.ended(key, &self.flow);
        let f = &self.flow;
        tracing::info!(
            up_datagrams = f.up_datagrams.load(Ordering::Relaxed),
            up_bytes = f.meter.up.get(),
            down_datagrams = down.datagrams.load(Ordering::Relaxed),
            down_bytes = down.bytes.load(Ordering::Relaxed),
            "udp flow ended: {why}"
        );
    }

    /// Everything from taking a channel to the end; why it ended.
    async fn carry(&self, down: &Down, seat: &crate::hub::players::Player) -> String {
        let (tunnel, link, id) = match self.open(seat).await {
            Ok(opened) => opened,
            Err(why) => return why,
        };
        let mut from_link = None;
        let _registered = match (&link, id) {
            (Some(l), Some(id)) => {
                let (rx, reg) = l.register(id);
                from_link = Some(rx);
                Some(reg)
            }
            _ => None,
        };
        let (mut rd, mut wr) = tokio::io::split(tunnel);
        let up = async {
            let mut out = Vec::new();
            loop {
                datagram::written(&mut out);
                match (&link, id) {
                    (Some(link), Some(id)) => {
                        // What does not fit a QUIC datagram goes on the
                        // stream, whole.
                        for d in self.flow.queue.drain_all().await {
                            if !link.send(id, &d) {
                                datagram::encode(&mut out, &d);
                            }
                        }
                        if out.is_empty() {
                            continue;
                        }
                    }
                    _ => {
                        self.flow.queue.drain_into(&mut out).await;
                    }
                }
                if let Err(e) = write_flush(&mut wr, &out).await {
                    return e;
                }
            }
        };
        let to_player = async |d: Vec<u8>| self.to_player(down, d).await;
        let back = async {
            while let Some(d) = datagram::read(&mut rd).await? {
                to_player(d).await;
            }
            Ok::<_, std::io::Error>(())
        };
        let back_datagrams = async {
            match from_link.as_mut() {
                Some(rx) => {
                    while let Some(d) = rx.recv().await {
                        to_player(d).await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let why = tokio::select! {
            e = up => format!("channel broken: {e}"),
            _ = back_datagrams => "the QUIC connection ended".into(),
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
        let mut tunnel = rd.unsplit(wr);
        // close_notify tells the ep the flow is over, so it closes its socket.
        let _ = tokio::time::timeout(Duration::from_secs(1), tunnel.shutdown()).await;
        why
    }

    /// One datagram from home to the player.
    async fn to_player(&self, down: &Down, d: Vec<u8>) {
        // Over its budget the datagram is lost here, as on a full link.
        if !self
            .door
            .within_rate(&self.flow, crate::rate::Dir::Down, d.len())
        {
            return;
        }
        self.door.count_down(&self.flow, d.len() as u64);
        down.datagrams.fetch_add(1, Ordering::Relaxed);
        down.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
        // A full socket buffer or an unreachable player loses this
        // datagram only, as the network would.
        if let Err(e) = self.socket.send_to(&d, self.at.reply_to).await {
            tracing::debug!("udp send to player: {e}");
        }
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
                    let ep = self.shared.sessions.ep_of(ch.session);
                    seat.carried_by(ch.session, ep, ch.opened_by_hub());
                    (ch.opened_by_hub(), ch.tunnel)
                }
                Err(e) => return Err(e.to_string()),
            }
        };
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
