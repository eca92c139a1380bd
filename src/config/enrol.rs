//! `[enrol]` in hub.toml: the door `ferry ep join` uses, the CA key that
//! signs new eps' certificates, and where invites and enrolled eps are kept.

use serde::Deserialize;
use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolConfig {
    /// Plain TCP then TLS; open to every address (an unknown invite id is
    /// refused before any cryptography).
    pub bind: SocketAddr,
    /// Default: `ca.key` beside `tls.ca`.
    pub ca_key: Option<figment::value::magic::RelativePathBuf>,
    /// Folder for `invites.json` and `enrolled.json`; default: the folder
    /// of `tls.ca` (the certificates' folder, which the hub may write).
    pub state: Option<figment::value::magic::RelativePathBuf>,
}

#[derive(Debug, Clone)]
pub struct EnrolSettings {
    pub bind: SocketAddr,
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub state: PathBuf,
}

impl EnrolConfig {
    /// The key's file is checked when the settings are loaded (by the
    /// enrol door, which reads it at each enrolment), not here.
    pub fn check(self, ca: &std::path::Path) -> EnrolSettings {
        let dir = ca.parent().map(PathBuf::from).unwrap_or_default();
        let ca_key = self
            .ca_key
            .map(|p| p.relative())
            .unwrap_or_else(|| dir.join("ca.key"));
        EnrolSettings {
            bind: self.bind,
            ca: ca.to_path_buf(),
            ca_key,
            state: self.state.map(|p| p.relative()).unwrap_or(dir),
        }
    }
}
