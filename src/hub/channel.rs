//! The channel door: TLS connections from logged-in eps, each presenting a
//! one-time ticket, that become ready channels in a service's pool.

use super::{Shared, refusals::Reason};
use crate::{
    net,
    proto::{self, EpMsg},
};
use std::{net::SocketAddr, sync::Arc};
use tokio::net::TcpStream;
use tracing::Instrument;

pub(super) fn on_accept(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr) {
    let ip = addr.ip();
    if !shared.settings().allowlist.contains(ip) {
        shared
            .refusals
            .record(Reason::NotAllowlisted, ip, "channel closed before TLS");
        return;
    }
    // Channels come only from where a logged-in ep is: everyone else is
    // dropped before a TLS byte, which also spares the handshake CPU. An
    // ep whose channels leave from another address than its control
    // connection (a multi-homed host) lands here, so say so plainly.
    if !shared.sessions.has_ip(ip) {
        shared.refusals.record(
            Reason::ChannelFromStranger,
            ip,
            "channel closed before TLS: no ep is logged in from this address \
             (an ep's channels must come from the address of its control connection)",
        );
        return;
    }
    let permit = match shared.logins.channel_gate.enter(ip, true) {
        Ok(p) => p,
        Err(turned) => {
            let reason = match turned {
                super::gate::Turned::Penalised => Reason::Penalised,
                _ => Reason::TooManyChannelsPending,
            };
            shared
                .refusals
                .record(reason, ip, "channel closed before TLS");
            return;
        }
    };
    net::tune_channel(&tcp);
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
    let began = std::time::Instant::now();
    let deadline = shared.settings().timing.handshake_timeout;
    let until = tokio::time::Instant::now() + deadline;
    // A refused channel is held open (`held`, `failed`) until its refusal
    // is recorded: an ep, a test or an operator who sees it close then
    // also sees why in the counts.
    let (mut held, mut failed) = (None, None);
    let opened = async {
        let mut tls = match shared.trust.accept_tls(tcp).await {
            Ok(tls) => tls,
            Err(f) => {
                let why = format!("TLS handshake failed: {}", f.error);
                failed = Some(f);
                return Err(why);
            }
        };
        let first = match shared.trust.check_resumed(&tls) {
            Err(why) => Err(format!("resumed TLS session: {why}")),
            Ok(()) => proto::read_msg(&mut tls).await.map_err(|e| e.to_string()),
        };
        let why = match first {
            Ok(EpMsg::Channel { service, ticket }) => return Ok((tls, service, ticket)),
            Ok(_) => "first message was not a channel ticket".to_string(),
            Err(why) => why,
        };
        held = Some(crate::quic::Tunnel::Tls(tls));
        Err(why)
    };
    let result = {
        let mut opened = std::pin::pin!(opened);
        tokio::select! {
            biased;
            r = &mut opened => r,
            _ = tokio::time::sleep_until(until) => {
                // Counted while `opened` still holds the connection open.
                let why = format!("not completed within {deadline:?}");
                settle(&shared, addr.ip(), began, Err(why));
                return;
            }
            _ = shared.shutdown.cancelled() => return,
        }
    };
    let outcome = result.and_then(|(tls, service, ticket)| {
        tracing::debug!(handshake = ?tls.get_ref().1.handshake_kind(), "channel TLS established");
        let ep = super::control::Peer::of(tls.get_ref().1.peer_certificates()).ep;
        match shared.service(&service) {
            Some(svc) => svc
                .offer(&ticket, &ep, addr.ip(), crate::quic::Tunnel::Tls(tls))
                .map_err(|(why, tunnel)| {
                    held = Some(*tunnel);
                    why.to_string()
                }),
            None => {
                held = Some(crate::quic::Tunnel::Tls(tls));
                Err(format!("unknown service {service:?}"))
            }
        }
    });
    settle(&shared, addr.ip(), began, outcome);
    drop(held);
    if let Some(failed) = failed {
        failed.close(until, &shared.shutdown).await;
    }
}

/// Counts a channel taken into a pool, or records why it was refused.
fn settle(
    shared: &Shared,
    ip: std::net::IpAddr,
    began: std::time::Instant,
    outcome: Result<(), String>,
) {
    match outcome {
        Ok(()) => {
            // A channel taken into a pool: a real ep is behind the
            // address, whatever junk came from there before.
            shared.logins.channel_gate.vouch(ip);
            shared
                .metrics
                .channel_handshake
                .observe(began.elapsed().as_secs_f64());
        }
        Err(why) => {
            // Any channel refused costs its address a penalty, with the
            // probation slot a live ep's address keeps (one channel a
            // second, see `gate`), until one is taken: junk without a
            // certificate, and a certificate's holder opening handshakes
            // with tickets it was never given (each costs the hub a full
            // TLS handshake; before, a valid certificate cleared the
            // penalty at once and 1,024 could be in flight). An honest
            // ep's rare refused channel (its service removed by a reload)
            // slows its next channels for a second at most.
            shared.logins.channel_gate.strike(ip);
            shared.refusals.record(Reason::ChannelRefused, ip, &why);
        }
    }
}
