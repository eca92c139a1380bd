//! The hub's TLS as it stands: the acceptor the control and channel doors
//! use (swapped when the revocation list or a certificate changes), the
//! files as loaded, and the revoked serials that resumed sessions are
//! checked against.

use crate::tls::HubTls;
use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;

pub(crate) struct Trust {
    acceptor: RwLock<TlsAcceptor>,
    /// The TLS files as loaded (swapped by a reload that changes them).
    pub loaded: crate::swap::Swap<HubTls>,
    /// Serials in the revocation list, for resumed sessions (which skip
    /// certificate verification).
    pub revoked: RwLock<HashSet<String>>,
    /// Times the followed revocation list was read after a change (taken
    /// or refused), for whoever waits on it.
    pub crl_reads: tokio::sync::watch::Sender<u64>,
    /// The revocation list's stamp as it was before the hub read it at
    /// start, for the follower to begin from.
    pub crl_first: Option<super::crl::Stamp>,
}

impl Trust {
    pub fn new(
        loaded: HubTls,
        revoked: HashSet<String>,
        crl_first: Option<super::crl::Stamp>,
    ) -> Trust {
        Trust {
            acceptor: RwLock::new(TlsAcceptor::from(loaded.server.clone())),
            loaded: crate::swap::Swap::new(loaded),
            revoked: RwLock::new(revoked),
            crl_reads: tokio::sync::watch::Sender::new(0),
            crl_first,
        }
    }

    /// New handshakes use `config`.
    pub fn set_acceptor(&self, config: Arc<rustls::ServerConfig>) {
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = TlsAcceptor::from(config);
    }

    /// The TLS handshake of the control and channel doors. A failure
    /// hands the connection back (`FailedTls`): the door counts the
    /// refusal, then closes it so that the peer reads the alert saying why.
    pub async fn accept_tls(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, FailedTls> {
        let acceptor = self
            .acceptor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        acceptor
            .accept(tcp)
            .into_fallible()
            .await
            .map_err(|(error, tcp)| FailedTls { error, tcp })
    }

    /// A resumed TLS session skips certificate verification (rustls
    /// restores the client certificate from the session), so check what
    /// verification would have: the validity window and the CRL.
    pub fn check_resumed<S>(&self, tls: &TlsStream<S>) -> Result<(), &'static str> {
        let conn = tls.get_ref().1;
        if conn.handshake_kind() != Some(rustls::HandshakeKind::Resumed) {
            return Ok(());
        }
        let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
            return Err("no client certificate");
        };
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        crate::tls::check_resumed(cert, &revoked)
    }
}

/// A TLS handshake that failed, its connection still open: a peer that
/// sees it close then also finds the refusal in the counts.
#[derive(Debug)]
pub(crate) struct FailedTls {
    pub error: std::io::Error,
    tcp: TcpStream,
}

impl FailedTls {
    /// Closes the connection the way that lets the peer read the alert,
    /// by the handshake's deadline (`until`: the door's place is held till
    /// then, as it was for the handshake) or the hub's shutdown.
    pub async fn close(self, until: tokio::time::Instant, shutdown: &CancellationToken) {
        tokio::select! {
            _ = tokio::time::timeout_at(until, crate::net::linger_close(self.tcp)) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}
