//! The channel door: TLS connections from logged-in eps, each presenting a
//! one-time ticket, that become ready channels in a service's pool.

use super::Shared;
use crate::{
    net,
    proto::{self, EpMsg},
};
use std::{net::SocketAddr, sync::Arc};
use tokio::net::TcpStream;
use tracing::Instrument;

pub(super) fn on_accept(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr) {
    let ip = addr.ip();
    // Channels come only from where a logged-in ep is: everyone else is
    // dropped before a TLS byte, which also spares the handshake CPU.
    if !shared.settings.allowlist.contains(ip) || !shared.sessions.has_ip(ip) {
        shared
            .refusals
            .record("channel from a stranger", ip, "closed before TLS", true);
        return;
    }
    let Ok(permit) = shared.channel_gate.enter(ip) else {
        shared
            .refusals
            .record("too many channels pending", ip, "closed before TLS", false);
        return;
    };
    net::tune_tunnel(&tcp);
    let span = tracing::debug_span!("channel", peer = %addr);
    shared.tracker.clone().spawn(
        async move {
            handle(shared, tcp, addr).await;
            drop(permit);
        }
        .instrument(span),
    );
}

async fn handle(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr) {
    let deadline = shared.settings.timing.handshake_timeout;
    let opened = async {
        let mut tls = shared
            .accept_tls(tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        match proto::read_msg(&mut tls).await.map_err(|e| e.to_string())? {
            EpMsg::Channel { service, ticket } => Ok((tls, service, ticket)),
            _ => Err("first message was not a channel ticket".to_string()),
        }
    };
    let result = tokio::select! {
        r = tokio::time::timeout(deadline, opened) => r,
        _ = shared.shutdown.cancelled() => return,
    };
    let outcome = match result {
        Err(_) => Err(format!("not completed within {deadline:?}")),
        Ok(Err(e)) => Err(e),
        Ok(Ok((tls, service, ticket))) => {
            tracing::debug!(handshake = ?tls.get_ref().1.handshake_kind(), "channel TLS established");
            let ep = super::control::peer_name(&tls);
            match shared.services.get(&service) {
                Some(svc) => svc
                    .offer(&ticket, &ep, addr.ip(), tls)
                    .map_err(str::to_string),
                None => Err(format!("unknown service {service:?}")),
            }
        }
    };
    if let Err(why) = outcome {
        shared
            .refusals
            .record("channel refused", addr.ip(), &why, false);
    }
}
