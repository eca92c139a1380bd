//! Follows the revocation list: when the file changes, new handshakes use
//! it and sessions of revoked eps are closed, without a restart. Only the
//! verifier is rebuilt: the hub's certificate and key stay as loaded.

use super::Shared;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

/// How often the file's modification time is looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// What tells one version of the file from the next.
pub(super) type Stamp = (SystemTime, u64);

pub(super) fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Follows `tls.crl` of the running settings (a reload may move it).
pub(super) async fn watch(shared: Arc<Shared>) {
    let mut path: Option<PathBuf> = shared.settings().crl.clone();
    // As it was before the hub read it at start, so a list replaced
    // between that read and now (a revocation landing while the hub
    // starts) is read at the first look.
    let mut seen = shared.trust.crl_first;
    let mut loaded = shared.trust.loaded.get();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        // One at a time with reloads (and enrolments): neither undoes the
        // other's list or verifier.
        let _update = shared.settings_update.lock().await;
        let now_loaded = shared.trust.loaded.get();
        if !Arc::ptr_eq(&loaded, &now_loaded) {
            // A reload applied the list as it read it; the file may have
            // changed since: read it again.
            seen = None;
            loaded = now_loaded;
        }
        let current = shared.settings().crl.clone();
        if current != path {
            // A reload named another file (or a first one). It was read
            // by the reload, but may have changed since: read it now.
            seen = None;
            path = current;
        }
        let Some(path) = &path else { continue };
        let now = stamp(path);
        if now == seen {
            continue;
        }
        seen = now;
        if let Err(e) = reload(&shared, path) {
            tracing::error!("keeping the previous revocation list: {e:#}");
        }
        shared.trust.crl_reads.send_modify(|n| *n += 1);
    }
}

/// The serials listed at start, for checking resumed sessions.
pub(super) fn initial(tls: &crate::tls::HubTls) -> std::collections::HashSet<String> {
    tls.crl
        .as_ref()
        .map(|c| c.serials.clone())
        .unwrap_or_default()
}

fn reload(shared: &Shared, path: &Path) -> anyhow::Result<()> {
    let material = shared.trust.loaded.get().material.clone();
    let crl = material.load_crl(path)?;
    let config = material.server_config(Some(&crl))?;
    shared.set_tls(config);
    apply_serials(shared, crl.serials);
    Ok(())
}

/// Takes `serials` as revoked, closing their sessions.
pub(super) fn apply_serials(shared: &Shared, serials: std::collections::HashSet<String>) {
    let count = serials.len();
    // The list first, then the sweep: a login registering in between
    // checks the new list (see `Sessions::register`), one registered
    // before is swept.
    *shared
        .trust
        .revoked
        .write()
        .unwrap_or_else(|p| p.into_inner()) = serials.clone();
    let closed = shared.sessions.revoke(&serials);
    // Every player a revoked certificate carries, on its current session
    // or an earlier one (over TLS a channel outlives its session; over
    // QUIC an earlier connection may still hold streams).
    let cut = shared.players.end_where(
        |p| p.serial().is_some_and(|s| serials.contains(s)),
        super::REVOKED,
    );
    if cut > 0 {
        tracing::warn!(players = cut, "players of revoked eps cut");
    }
    tracing::info!(
        revoked = count,
        sessions_closed = closed,
        "revocation list reloaded"
    );
}
