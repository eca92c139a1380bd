//! The service door: players on plain TCP, each relayed through a channel.

use super::{Shared, admission::Door, service::Service};
use crate::{
    net,
    proto::{self, HubMsg},
    relay,
};
use std::{net::SocketAddr, sync::Arc};
use tokio::net::TcpStream;
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
    let admitted = match door.admit(addr.ip()) {
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
    net::tune_plain(&tcp);
    let watch = relay::Watch {
        idle: admitted.limits.idle_timeout,
        meter: Some(door.meters().meter.clone()),
        first_down: Some((std::time::Instant::now(), door.meters().first_byte.clone())),
    };
    let span = tracing::info_span!("player", service = %svc.name, player = %addr);
    let (svc, cut) = (svc.clone(), cut.clone());
    shared.tracker.clone().spawn(
        async move {
            serve(shared, svc, tcp, addr, watch, offset, cut).await;
            drop(admitted);
        }
        .instrument(span),
    );
}

async fn serve(
    shared: Arc<Shared>,
    svc: Arc<Service>,
    mut tcp: TcpStream,
    addr: SocketAddr,
    watch: relay::Watch,
    offset: u16,
    cut: tokio_util::sync::CancellationToken,
) {
    tracing::info!("player connected");
    let wait = shared.settings().timing.player_wait;
    let taken = tokio::select! {
        r = svc.take(wait) => r,
        _ = gone(&tcp) => return tracing::info!("player left before a channel was ready"),
        _ = shared.shutdown.cancelled() => return,
    };
    let (named, modern, mut tunnel) = match taken {
        Ok(ch) => (ch.opened_by_hub(), ch.modern, ch.tunnel),
        Err(e) => {
            tracing::info!("player closed: {e}");
            return;
        }
    };
    let start = HubMsg::Start {
        player: addr,
        service: tcp.local_addr().ok().filter(|_| modern),
        udp: false,
        offset,
        flow: None,
        name: named.then(|| svc.name.clone()),
    };
    match tokio::time::timeout(
        shared.settings().timing.handshake_timeout,
        proto::write_msg(&mut tunnel, &start),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return tracing::info!("player closed: channel failed at start: {e}"),
        Err(_) => return tracing::info!("player closed: channel stalled at start"),
    }
    let relayed = tokio::select! {
        r = relay::relay_watched(&mut tcp, &mut tunnel, watch) => Some(r),
        // The hub's hard stop, or the service removed and drained.
        _ = cut.cancelled() => None,
    };
    match relayed {
        Some((s, None)) => tracing::info!(
            up = s.up,
            down = s.down,
            secs = s.elapsed.as_secs_f64(),
            "player disconnected"
        ),
        Some((s, Some(e))) => {
            // A break on either side is a break on both: a reset, never a
            // clean end, so a cut transfer cannot look complete.
            net::abort_on_close(&tcp);
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
            net::abort_on_close(&tcp);
            tunnel.abort();
            let why = if shared.hard_stop.is_cancelled() {
                "hub shutting down"
            } else {
                "service removed from the configuration"
            };
            tracing::info!("player cut off: {why}");
        }
    }
}

/// Resolves if the player hangs up while waiting for a channel, so the ep is
/// never told to dial the service for a player who already left (a phantom
/// player in a game). A player who sends data is real: stop watching.
async fn gone(tcp: &TcpStream) {
    let mut b = [0u8; 1];
    match tcp.peek(&mut b).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}
