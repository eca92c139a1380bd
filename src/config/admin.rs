//! `[admin]` in hub.toml and ep.toml: where the admin door listens and the
//! token it asks for, and `log_format`.

use super::GivenHash;
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    pub token_hash: Option<String>,
    pub token_hash_file: Option<figment::value::magic::RelativePathBuf>,
}

/// `[health]` in hub.toml: a door of its own answering only
/// `/health` and `/health/SERVICE`, for a DNS server's health checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    pub bind: SocketAddr,
}

/// A checked `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub bind: SocketAddr,
    /// Required unless `bind` is loopback. From `token_hash_file`, filled
    /// in when the settings are loaded (`admin::read_hash_file`).
    pub token_hash: Option<String>,
    /// `admin.token_hash_file`, if the hash is kept there.
    pub token_hash_file: Option<PathBuf>,
}

impl AdminConfig {
    pub fn check(self) -> Result<AdminSettings, String> {
        let given = super::token_hash(
            "admin.token_hash",
            self.token_hash,
            self.token_hash_file.as_ref(),
        )?;
        if given.is_none() && !crate::net::is_loopback(self.bind) {
            return Err(format!(
                "admin.bind = {} is not loopback: set admin.token_hash (from `ferry hub token`) so strangers cannot read the status",
                self.bind
            ));
        }
        let (token_hash, token_hash_file) = match given {
            Some(GivenHash::Inline(hash)) => (Some(hash), None),
            Some(GivenHash::File(path)) => (None, Some(path)),
            None => (None, None),
        };
        Ok(AdminSettings {
            bind: self.bind,
            token_hash,
            token_hash_file,
        })
    }
}

impl std::fmt::Display for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = if self.token_hash.is_some() || self.token_hash_file.is_some() {
            "token required"
        } else {
            "loopback, no token"
        };
        write!(f, "http://{}/ ({auth})", self.bind)
    }
}

/// `log_format`: how log lines look on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}
