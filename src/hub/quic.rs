//! The QUIC door (`quic = "…"`, a UDP port): one QUIC connection per ep
//! carries its control stream, a stream per player and its UDP flows as
//! QUIC datagrams.
//!
//! It promises what the TLS doors promise, in the same order: a datagram
//! from outside `ep_allowlist` is dropped before quinn sees it
//! (`quic_socket`), on every path a connection ever takes. A source
//! address on UDP proves nothing until it has answered a stateless retry,
//! so every connection attempt is retried first, and only a validated
//! address meets the gate's caps and penalties: a forged source can hold
//! no slot and earn no penalty for the address it forges. Then TLS 1.3
//! with a client certificate from ferry's CA and the CRL (session
//! resumption off, so every connection's certificate is verified in
//! full), the Argon2 token once per connection, per-ep credentials, as on
//! the control port. Players are streams the hub opens (`Service::take`);
//! the ep may open its control stream and no other, and a connection
//! whose login fails is closed at once.

use super::{
    Shared,
    control::{Peer, Refusal, authenticate, finish_login, session},
    quic_socket::{Allowed, Filtered},
    service::Tunnel,
};
use crate::{
    config::hub::HubSettings,
    quic::{LOGIN_FAILED, SHUTTING_DOWN},
};
use anyhow::{Context, Result};
use std::{net::SocketAddr, sync::Arc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The key that seals retry tokens, made once per hub: a configuration
/// rebuilt for a new CRL or certificate keeps it, so a retry in flight
/// stays valid across a reload.
type TokenKey = Arc<dyn quinn::crypto::HandshakeTokenKey>;

fn token_key() -> Result<TokenKey> {
    use ring::rand::SecureRandom;
    let mut secret = [0u8; 64];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&secret);
    Ok(Arc::new(key))
}

/// The QUIC server configuration for `tls` (the control port's rustls
/// configuration: client verifier, CRL, ALPN) without resumption.
fn server_config(
    tls: &Arc<rustls::ServerConfig>,
    settings: &HubSettings,
    token_key: &TokenKey,
) -> Result<quinn::ServerConfig> {
    let mut tls = (**tls).clone();
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .context("the TLS configuration cannot serve QUIC")?;
    let mut config = quinn::ServerConfig::new(Arc::new(crypto), token_key.clone());
    config.transport_config(crate::quic::hub_transport(
        settings.timing.heartbeat_timeout,
    ));
    // A home router re-mapping its NAT port must not drop players; the
    // socket's filter keeps a move to an address not allowed from happening.
    config.migration(true);
    // Attempts not yet handled: quinn's defaults (65,536 of them, 10 MiB
    // buffered for each, 100 MiB in all) suit a busy server, not a small
    // VPS whose accept loop retries, refuses or takes each one at once;
    // forged Initials from allowlisted addresses could hold that much.
    config
        .max_incoming(4096)
        .incoming_buffer_size(64 << 10)
        .incoming_buffer_size_total(8 << 20);
    Ok(config)
}

/// The QUIC door's parts: its endpoint (when `quic` is set), the sources
/// its socket hears (`ep_allowlist`, followed on reload) and the key that
/// seals its retry tokens for the hub's whole life.
pub(super) struct QuicDoor {
    pub endpoint: Option<quinn::Endpoint>,
    pub allowed: Arc<Allowed>,
    token_key: TokenKey,
}

impl QuicDoor {
    pub fn bind(
        tls: &Arc<rustls::ServerConfig>,
        settings: &HubSettings,
        refusals: Arc<super::refusals::Refusals>,
    ) -> Result<QuicDoor> {
        let allowed = Allowed::new(settings.allowlist.clone(), refusals);
        let token_key = token_key()?;
        let endpoint = match settings.quic {
            Some(addr) => Some(bind(tls, settings, addr, allowed.clone(), &token_key)?),
            None => None,
        };
        Ok(QuicDoor {
            endpoint,
            allowed,
            token_key,
        })
    }

    /// New QUIC handshakes use `tls` (a new CRL or certificate).
    pub fn set_tls(&self, tls: &Arc<rustls::ServerConfig>, settings: &HubSettings) {
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        match server_config(tls, settings, &self.token_key) {
            Ok(q) => endpoint.set_server_config(Some(q)),
            Err(e) => tracing::warn!("QUIC keeps its TLS configuration: {e:#}"),
        }
    }
}

/// Binds the QUIC door on `addr`, hearing only `allowed` sources.
fn bind(
    tls: &Arc<rustls::ServerConfig>,
    settings: &HubSettings,
    addr: SocketAddr,
    allowed: Arc<Allowed>,
    token_key: &TokenKey,
) -> Result<quinn::Endpoint> {
    let config = server_config(tls, settings, token_key)?;
    let bind = || -> std::io::Result<quinn::Endpoint> {
        let socket = crate::quic::udp_socket(addr)?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let socket = Filtered::new(runtime.wrap_udp_socket(socket)?, allowed);
        quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(config),
            socket,
            runtime,
        )
    };
    bind().with_context(|| format!("cannot listen on udp {addr} (quic)"))
}

/// Accepts connections until `stop`, then refuses new ones. The endpoint
/// itself closes once every connection has (each closes when its players
/// are gone, see `Link::close_when_idle`), or at the hub's hard stop: a
/// shutdown drains QUIC players as it drains TLS ones.
pub(super) async fn serve(shared: Arc<Shared>, endpoint: quinn::Endpoint, stop: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = stop.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        on_incoming(&shared, incoming);
    }
    endpoint.set_server_config(None);
    let hard_stop = shared.hard_stop.clone();
    shared.tracker.spawn(async move {
        tokio::select! {
            _ = endpoint.wait_idle() => {}
            _ = hard_stop.cancelled() => {}
        }
        endpoint.close(SHUTTING_DOWN, b"hub shutting down");
        endpoint.wait_idle().await;
    });
}

fn on_incoming(shared: &Arc<Shared>, incoming: quinn::Incoming) {
    let addr = incoming.remote_address();
    let Some((incoming, permit)) = admit(shared, incoming) else {
        return;
    };
    let sh = shared.clone();
    let span = tracing::info_span!("quic", peer = %addr);
    shared.tracker.spawn(
        async move {
            let (ctrl_tx, ctrl_rx) = mpsc::channel(super::control::CTRL_QUEUE);
            let mut conn = None;
            let named = super::control::Named::default();
            let login = async {
                let connecting = incoming
                    .accept()
                    .map_err(|e| Refusal::Tls(std::io::Error::other(e)))?;
                let c = connecting
                    .await
                    .map_err(|e| Refusal::Tls(std::io::Error::other(e)))?;
                conn = Some(c.clone());
                // Its datagrams are read from the handshake on: held by
                // quinn, each would pin the whole packet it came in (a
                // 1,452-byte packet for a 32-byte charge), while the link
                // copies those of flows not yet open into a bounded buffer.
                let link = crate::quic::Link::new(c.clone());
                let certs = c.peer_identity().and_then(|a| {
                    a.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                        .ok()
                });
                let peer = Peer::of(certs.as_deref().map(Vec::as_slice));
                // The handshake verified the certificate: a connection
                // that never opens its control stream is charged to it.
                named.set();
                let unproven = super::control::Unproven::new(&sh, &peer.ep);
                let (send, recv) = c
                    .accept_bi()
                    .await
                    .map_err(|e| Refusal::Tls(std::io::Error::other(e)))?;
                // The ep opens this stream and no other: without this, the
                // stream freed by a failed login would give back its credit
                // and a stranger could open another before the close.
                c.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(0));
                unproven.heard();
                let control = Tunnel::Quic(link.control(send, recv));
                let from = (addr, &named);
                authenticate(&sh, control, Some(link), peer, Ok(()), from, ctrl_tx).await
            };
            let logged_in = finish_login(&sh, addr, &named, login, ctrl_rx).await;
            drop(permit);
            let Some(s) = logged_in else {
                // Nothing of a failed login may linger: no stream, no
                // buffer, no keep-alive.
                if let Some(c) = conn {
                    c.close(LOGIN_FAILED, b"login failed");
                }
                return;
            };
            served(sh, s).await;
        }
        .instrument(span),
    );
}

/// A logged-in session over QUIC, to its end, and its connection until
/// its players are done with it: then nothing holds it open. Ended by the
/// hub, or found failing, they have the hub's drain; ended by the ep (its
/// own drain on SIGTERM), the ep decides when, as its TLS channels would
/// outlive the control connection: it closes the connection at the end of
/// its drain (at most the longest drain there is), or the idle timeout
/// does if it is gone.
async fn served(sh: Arc<Shared>, s: super::control::LoggedIn) {
    let link = s.link();
    let over = CancellationToken::new();
    if let Some(l) = link.clone() {
        tokio::spawn(watch_silence(l, s.ep().to_string(), over.clone()).in_current_span());
    }
    // Also if the session's task panics.
    let watching = over.drop_guard();
    let ended = session(sh.clone(), s).await;
    drop(watching);
    if let Some(link) = link {
        let drain = match ended {
            super::control::Ended::Ep => MAX_EP_DRAIN,
            _ => sh.settings().timing.drain_timeout,
        };
        link.retire();
        link.close_when_idle(Some(drain), &sh.hard_stop, "session over")
            .await;
    }
}

/// Probes the session's connection when it goes quiet and says when it
/// turns silent (its players' new streams wait: `Service::open_stream`)
/// and when it is heard again, until the session is `over`.
async fn watch_silence(link: crate::quic::Link, ep: String, over: CancellationToken) {
    link.watch_silence(over, |silent| match silent {
        Some(d) => tracing::warn!(
            ep,
            "ep not heard on its QUIC connection for {d:?}: new players wait for it or its next login"
        ),
        None => tracing::info!(ep, "ep heard again on its QUIC connection"),
    })
    .await;
}

/// The longest `drain_timeout` an ep may have: how long the hub keeps the
/// connection of an ep that left (draining its players) at most.
const MAX_EP_DRAIN: std::time::Duration = std::time::Duration::from_secs(3600);

/// The door's checks before any cryptography: the allowlist, a retry
/// for an address not yet validated, then the gate. The connection to
/// go on with and its place among the authenticating, or None (ignored,
/// retried or refused, with no state kept).
fn admit(
    shared: &Arc<Shared>,
    incoming: quinn::Incoming,
) -> Option<(quinn::Incoming, super::gate::Permit)> {
    let ip = incoming.remote_address().ip();
    // The socket dropped strangers' datagrams; an allowlist changed by a
    // reload between the two is caught here.
    if !shared.quic.allowed.contains(ip) {
        incoming.ignore();
        return None;
    }
    // Nothing about a source counts until it has echoed a retry token:
    // anyone can put any address on a UDP datagram.
    if !incoming.remote_address_validated() {
        if incoming.may_retry() {
            let _ = incoming.retry();
        } else {
            incoming.ignore();
        }
        return None;
    }
    let live = shared.sessions.has_ip(ip);
    let permit = match shared.logins.gate.enter(ip, live) {
        Ok(p) => p,
        Err(turned) => {
            // An allowlisted address (an ep's network) hears why, as on
            // TCP: a refusal packet, no handshake, no state kept. Counted
            // first, so whoever hears it finds it in the counts.
            let reason = super::control::turned_reason(turned);
            shared
                .refusals
                .record(reason, ip, "refused before the QUIC handshake");
            incoming.refuse();
            return None;
        }
    };
    Some((incoming, permit))
}
