//! Follows the revocation list: when the file changes, new handshakes use
//! it and sessions of revoked eps are closed, without a restart.

use super::Shared;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio_rustls::TlsAcceptor;

/// How often the file's modification time is looked at.
pub const POLL: Duration = Duration::from_secs(1);

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

pub(super) async fn watch(shared: Arc<Shared>, path: PathBuf) {
    let mut seen = stamp(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        if let Err(e) = reload(&shared, &path) {
            tracing::warn!("keeping the previous revocation list: {e:#}");
        }
    }
}

fn reload(shared: &Shared, path: &Path) -> anyhow::Result<()> {
    let (ca, cert, key) = &shared.settings.tls_files;
    let config = crate::tls::server_config(ca, cert, key, Some(path))?;
    let serials = crate::tls::crl_serials(path)?;
    shared.set_acceptor(TlsAcceptor::from(config));
    let closed = shared.sessions.revoke(&serials);
    tracing::info!(
        revoked = serials.len(),
        sessions_closed = closed,
        "revocation list reloaded"
    );
    Ok(())
}
