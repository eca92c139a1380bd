//! `--ready-file` for the ep: the admin door's address once it listens,
//! and after each reload how it went, for `ferry ep reload` to wait on.

use super::Ep;
use crate::reload::Trigger;

/// What `--ready-file` says: the admin door's address, and the reloads (a
/// SIGHUP's counted apart: `ferry ep reload` sends one and waits for it).
pub(crate) struct Ready {
    path: std::path::PathBuf,
    admin: Option<std::net::SocketAddr>,
    signalled: u64,
    /// When the last reload a SIGHUP asked for began (monotonic µs).
    began_us: u64,
    done: u64,
    last: Result<String, String>,
}

impl Ready {
    /// Written now, and kept to be written again after each reload.
    pub fn start(
        ep: &Ep,
        path: std::path::PathBuf,
        admin: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<()> {
        let ready = Ready {
            path,
            admin,
            signalled: 0,
            began_us: 0,
            done: 0,
            last: Ok(String::new()),
        };
        ready.write()?;
        *ep.ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(ready);
        Ok(())
    }

    pub(super) fn reloaded(
        ep: &Ep,
        (why, began_us): (Trigger, u64),
        outcome: Result<String, String>,
    ) {
        let mut ready = ep.ready.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = ready.as_mut() else { return };
        r.done += 1;
        if why == Trigger::Signal {
            r.signalled += 1;
            r.began_us = began_us;
        }
        r.last = outcome;
        if let Err(e) = r.write() {
            tracing::warn!("{e:#}");
        }
    }

    fn write(&self) -> anyhow::Result<()> {
        let (ok, said) = match &self.last {
            Ok(line) => (true, line.as_str()),
            Err(e) => (false, e.as_str()),
        };
        let json = serde_json::json!({
            "admin": self.admin.map(|a| a.to_string()),
            "reloads": {
                "signalled": self.signalled, "began_us": self.began_us,
                "done": self.done, "ok": ok, "said": said,
            },
        });
        // The owner's only: a refused reload's reason may quote the file,
        // a token in it too.
        crate::files::write_file(&self.path, json.to_string().as_bytes(), 0o600, true)
            .map_err(|e| anyhow::anyhow!("--ready-file {}: {e}", self.path.display()))
    }
}
