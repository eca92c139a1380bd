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

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Follows `tls.crl` of the running settings (a reload may move it).
pub(super) async fn watch(shared: Arc<Shared>) {
    let mut path: Option<PathBuf> = shared.settings().crl.clone();
    let mut seen = path.as_deref().and_then(stamp);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let current = shared.settings().crl.clone();
        if current != path {
            // A reload already built its acceptor with the new list.
            seen = current.as_deref().and_then(stamp);
            path = current;
            continue;
        }
        let Some(path) = &path else { continue };
        let now = stamp(path);
        if now == seen {
            continue;
        }
        seen = now;
        if let Err(e) = reload(&shared, path) {
            tracing::warn!("keeping the previous revocation list: {e:#}");
        }
    }
}

/// The serials listed at start, for checking resumed sessions.
pub(super) fn initial(path: Option<&Path>) -> std::collections::HashSet<String> {
    path.and_then(|p| crate::tls::crl_serials(p).ok())
        .unwrap_or_default()
}

fn reload(shared: &Shared, path: &Path) -> anyhow::Result<()> {
    let config = shared
        .trust
        .loaded
        .get()
        .material
        .server_config(Some(path))?;
    shared.set_tls(config);
    apply_serials(shared, path)
}

/// Takes the serials listed in `path` as revoked, closing their sessions.
pub(super) fn apply_serials(shared: &Shared, path: &Path) -> anyhow::Result<()> {
    let serials = crate::tls::crl_serials(path)?;
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
    tracing::info!(
        revoked = count,
        sessions_closed = closed,
        "revocation list reloaded"
    );
    Ok(())
}
