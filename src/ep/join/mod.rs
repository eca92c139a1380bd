//! `ferry ep join LINE`: enrols this home machine with the hub the invite
//! line names. The key is made here and never leaves; the hub is trusted
//! only once its CA matches the line's fingerprint, and the secret is sent
//! only inside TLS to that hub. Writes a working `ep.toml` and `certs/`.
//!
//! An invite works once, and the hub keeps only a hash of the token it
//! gives, so the order matters: the folder is checked and the key written
//! (into a staging folder inside it) before the hub is contacted; the
//! hub's answer is checked before anything else is written; the files
//! appear by renames; and if that still fails, the staging folder is kept
//! and the token printed rather than lost.

mod answer;
mod door;
mod earlier;
mod ep_toml;
mod staging;

use crate::enrol::{Line, Reply};
use anyhow::Result;
use staging::Staging;
use std::path::{Path, PathBuf};

/// What `join` wrote.
pub struct Joined {
    pub ep: String,
    pub config: PathBuf,
    /// Each service written and where at home it sends players.
    pub services: Vec<String>,
}

/// Enrols with the hub in `line`, writing `dir/ep.toml` and `dir/certs/`.
/// Existing files are kept unless `force`.
pub async fn join(line: &str, dir: &Path, force: bool) -> Result<Joined> {
    let line = Line::parse(line)?;
    let (host, _) = crate::config::split_host_port(&line.door).map_err(anyhow::Error::msg)?;
    // Until the install, an error drops `staging`, which removes what it
    // made, unless the hub may still take its key again.
    let (mut staging, key) = Staging::prepare(dir, force, &line)?;
    if let Some(earlier) = staging.resumed() {
        let what = match staging.sent() {
            Some(_) => "sent its request without an answer",
            None => "stopped before sending its request",
        };
        eprintln!(
            "an earlier join of this line {what}: asking with the key it left in {}",
            earlier.display()
        );
    }
    let sent = staging.sent();
    let asked = door::enrol(&line, &host, &key, sent, &mut || staging.sending()).await;
    let (ca_der, reply) = match asked {
        Ok(done) => done,
        Err(e) => return Err(staging.failed(e)),
    };
    let refused = matches!(reply, Reply::Refused { .. });
    let enrolled = match answer::check(reply, &key, &ca_der) {
        Ok(e) => e,
        // A hub failing halfway (its disk full) after it used the invite
        // refuses: the key may ask again. A grant that fails the checks is
        // a hub not to ask again.
        Err(e) if refused => return Err(staging.failed(e)),
        Err(e) => return Err(e),
    };
    let config = staging.config();
    let hubs: Vec<String> = std::iter::once(host)
        .chain(line.more.iter().cloned())
        .collect();
    let toml = ep_toml::render(&enrolled, &config, &hubs);
    staging.install(&enrolled, &toml)?;
    Ok(Joined {
        services: ep_toml::summary(&enrolled),
        ep: enrolled.ep,
        config,
    })
}
