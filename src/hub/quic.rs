//! The QUIC door (`quic = "…"`, a UDP port): one QUIC connection per ep
//! carries its control stream, a stream per player and its UDP flows as
//! QUIC datagrams.
//!
//! It promises what the TLS doors promise, in the same order: a source
//! outside `ep_allowlist` is ignored before any cryptography (no handshake,
//! no answer), the gate's caps and penalties apply, and under load a
//! source must first prove its address with a stateless retry, so forged
//! sources cannot make the hub hold state. Then TLS 1.3 with a client
//! certificate from ferry's CA and the CRL (session resumption off, so
//! every connection's certificate is verified in full), the Argon2 token
//! once per connection, per-ep credentials, as on the control port.
//! Players are streams the hub opens (`Service::take`); the ep opens only
//! its control stream, so there is no ticket to check on this door.

use super::{
    Shared,
    control::{Peer, Refusal, authenticate, finish_login, session},
    refusals::Reason,
    service::Tunnel,
};
use crate::{config::hub::HubSettings, quic::QuicStream};
use anyhow::{Context, Result};
use std::{net::SocketAddr, sync::Arc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The QUIC server configuration for `tls` (the control port's rustls
/// configuration: client verifier, CRL, ALPN) without resumption.
pub(super) fn server_config(
    tls: &Arc<rustls::ServerConfig>,
    settings: &HubSettings,
) -> Result<quinn::ServerConfig> {
    let mut tls = (**tls).clone();
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .context("the TLS configuration cannot serve QUIC")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(crate::quic::transport(settings.timing.heartbeat_timeout));
    // A home router re-mapping its NAT port must not drop players.
    config.migration(true);
    Ok(config)
}

pub(super) fn bind(settings: &HubSettings, addr: SocketAddr) -> Result<quinn::Endpoint> {
    let config = server_config(&settings.tls, settings)?;
    quinn::Endpoint::server(config, addr)
        .with_context(|| format!("cannot listen on udp {addr} (quic)"))
}

/// Accepts connections until `stop`.
pub(super) async fn serve(shared: Arc<Shared>, endpoint: quinn::Endpoint, stop: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = stop.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        on_incoming(&shared, incoming);
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"hub shutting down");
}

fn on_incoming(shared: &Arc<Shared>, incoming: quinn::Incoming) {
    let addr = incoming.remote_address();
    let ip = addr.ip();
    if !shared.settings().allowlist.contains(ip) {
        incoming.ignore();
        let why = "ignored before the QUIC handshake";
        shared.refusals.record(Reason::NotAllowlisted, ip, why);
        return;
    }
    let live = shared.sessions.has_ip(ip);
    let permit = match shared.gate.enter(ip, live) {
        Ok(p) => p,
        Err(turned) => {
            // An allowlisted address (an ep's network) hears why, as on
            // TCP: a refusal packet, no handshake, no state kept.
            incoming.refuse();
            let reason = super::control::turned_reason(turned);
            shared
                .refusals
                .record(reason, ip, "refused before the QUIC handshake");
            return;
        }
    };
    // Busy: a source must echo a retry token first, so a forged address
    // costs the hub no connection state.
    let busy = shared.gate.pending() > shared.settings().limits.max_pending_auth / 2;
    if busy && !incoming.remote_address_validated() && incoming.may_retry() {
        let _ = incoming.retry();
        return;
    }
    let sh = shared.clone();
    let span = tracing::info_span!("quic", peer = %addr);
    shared.tracker.spawn(
        async move {
            let (ctrl_tx, ctrl_rx) = mpsc::channel(super::control::CTRL_QUEUE);
            let login = async {
                let connecting = incoming
                    .accept()
                    .map_err(|e| Refusal::Tls(std::io::Error::other(e)))?;
                let conn = connecting
                    .await
                    .map_err(|e| Refusal::Tls(std::io::Error::other(e)))?;
                let certs = conn.peer_identity().and_then(|a| {
                    a.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                        .ok()
                });
                let peer = Peer::of(certs.as_deref().map(Vec::as_slice));
                let (send, recv) = conn
                    .accept_bi()
                    .await
                    .map_err(|e| Refusal::Tls(std::io::Error::other(e)))?;
                let link = crate::quic::Link::new(conn);
                let control = Tunnel::Quic(QuicStream {
                    send,
                    recv,
                    link: None,
                });
                authenticate(&sh, control, Some(link), peer, Ok(()), addr, ctrl_tx).await
            };
            let logged_in = finish_login(&sh, addr, login, ctrl_rx).await;
            drop(permit);
            // The connection lives on in the session's services (through
            // the link) and in each player's stream.
            if let Some(s) = logged_in {
                session(sh, s).await;
            }
        }
        .instrument(span),
    );
}
