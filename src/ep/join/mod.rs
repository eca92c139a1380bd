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
mod ep_toml;
mod staging;

use crate::enrol::Line;
use anyhow::{Context, Result};
use staging::Staging;
use std::path::{Path, PathBuf};

/// What `join` wrote.
pub struct Joined {
    pub ep: String,
    pub config: PathBuf,
}

/// Enrols with the hub in `line`, writing `dir/ep.toml` and `dir/certs/`.
/// Existing files are kept unless `force`.
pub async fn join(line: &str, dir: &Path, force: bool) -> Result<Joined> {
    let line = Line::parse(line)?;
    let (host, _) = crate::config::split_host_port(&line.door).map_err(anyhow::Error::msg)?;
    // The key is made, and written, before anything is sent: a folder that
    // cannot take it stops the join while the invite is still unused, and
    // a failure leaves no half-enrolled state on the hub.
    let key = rcgen::KeyPair::generate().context("cannot generate the ep's key")?;
    // Until the install, any error drops `staging`, which removes what it
    // made.
    let staging = Staging::prepare(dir, force, &key)?;
    let (ca_der, reply) = door::enrol(&line, &host, &key).await?;
    let enrolled = answer::check(reply, &key, &ca_der)?;
    let config = staging.config();
    let hubs: Vec<String> = std::iter::once(host)
        .chain(line.more.iter().cloned())
        .collect();
    let toml = ep_toml::render(&enrolled, &config, &hubs);
    staging.install(&enrolled, &toml)?;
    Ok(Joined {
        ep: enrolled.ep,
        config,
    })
}
