//! A read-only view of a running hub: what tests, `--ready-file` users and
//! the status page ask it (addresses, counts, watches), never a way in.

use super::Shared;
use std::{net::SocketAddr, sync::Arc};
use tokio::sync::watch;

/// Read-only view of a running hub, for tests and status.
#[derive(Clone)]
pub struct HubHandle {
    pub(super) shared: Arc<Shared>,
}

impl HubHandle {
    /// Control-port connections authenticating right now.
    pub fn pending_logins(&self) -> usize {
        self.shared.logins.gate.pending()
    }

    /// The most control-port connections ever authenticating at once.
    pub fn peak_pending_logins(&self) -> usize {
        self.shared.logins.gate.peak()
    }

    /// The most Argon2 verifications ever running at once, and their total.
    pub fn argon2_runs(&self) -> (usize, u64) {
        (
            self.shared.logins.argon2_stats.peak(),
            self.shared.logins.argon2_stats.total(),
        )
    }

    /// Refusals since start, by kind.
    pub fn refusals(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.shared.refusals.totals()
    }

    /// Places taken under the hub's player cap: players, and connections
    /// still sending a game port their first packet.
    pub fn cap_taken(&self) -> usize {
        self.shared.cap.taken()
    }

    /// Ready channels of `service`, updated as they come and go.
    pub fn pool_ready(&self, service: &str) -> Option<watch::Receiver<usize>> {
        self.shared.service(service).map(|s| s.watch_ready())
    }

    /// The eps whose latest offer names `service` (serving it or not).
    pub fn offered_by(&self, service: &str) -> Vec<String> {
        self.shared.sessions.offering(service)
    }

    /// The ep serving `service` now, if any.
    pub fn served_by(&self, service: &str) -> Option<String> {
        self.shared.service(service)?.served_by()
    }

    /// Whether home is there for `service`: up, away, down, sleeping or
    /// waking (as the status page says).
    pub fn home(&self, service: &str) -> Option<&'static str> {
        Some(self.shared.service(service)?.home().as_str())
    }

    /// Whether `ep`'s session rides QUIC (None: not logged in).
    pub fn over_quic(&self, ep: &str) -> Option<bool> {
        self.shared.sessions.over_quic(ep)
    }

    /// Where the QUIC door listens, if it is on.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.shared
            .quic
            .endpoint
            .as_ref()
            .and_then(|e| e.local_addr().ok())
    }

    /// QUIC connections open now (logged in, logging in, or draining).
    pub fn quic_connections(&self) -> usize {
        self.shared
            .quic
            .endpoint
            .as_ref()
            .map_or(0, |e| e.open_connections())
    }

    /// Eps enrolled with an invite since start.
    pub fn enrolments(&self) -> u64 {
        self.shared.metrics.enrolments.get()
    }

    /// Where `ferry ep join` connects, if enrolment is on.
    pub fn enrol_addr(&self) -> Option<SocketAddr> {
        self.shared.addrs.get()?.enrol
    }

    /// UDP flows of `service` now.
    pub fn udp_flows(&self, service: &str) -> Option<usize> {
        self.shared.served(service)?.udp.as_ref().map(|d| d.flows())
    }

    /// Players on `service` now (admitted by its door).
    pub fn players(&self, service: &str) -> Option<usize> {
        self.shared.served(service).map(|s| s.door.players())
    }

    /// Where players of `service` connect now (it may have been added or
    /// moved by a reload).
    pub fn service_addr(&self, service: &str) -> Option<SocketAddr> {
        self.shared.service_addr(service)
    }

    /// Reloads finished since start (applied or refused), and the last
    /// outcome: the plan line, or why the new configuration was refused.
    pub fn reloads(&self) -> watch::Receiver<(u64, Result<String, String>)> {
        self.shared.reloads.subscribe()
    }

    /// Times the followed revocation list was read after it changed.
    pub fn crl_reads(&self) -> watch::Receiver<u64> {
        self.shared.trust.crl_reads.subscribe()
    }

    /// Times the followed `bans.json` was read after it changed (well or
    /// not).
    pub fn bans_reads(&self) -> watch::Receiver<u64> {
        self.shared.bans.reads.subscribe()
    }

    /// Number of logged-in eps, updated as they come and go.
    pub fn sessions(&self) -> watch::Receiver<usize> {
        self.shared.sessions.watch_count()
    }

    /// Successful ep logins since start.
    pub fn logins(&self) -> watch::Receiver<u64> {
        self.shared.sessions.watch_logins()
    }

    /// What `/metrics` would say now.
    pub fn metrics(&self) -> String {
        self.shared.metrics.encode()
    }
}
