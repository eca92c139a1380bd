//! Configuration: defaults → TOML file → `FERRY_…` environment → flags.
//!
//! Each role has a raw, serde-shaped config (`hub::HubConfig`, `ep::EpConfig`)
//! and a checked form built from it (files read, addresses parsed) that the
//! runtime uses. `ferry … check` prints the checked form.

mod duration;
pub mod ep;
pub mod hub;
mod netlist;

pub use duration::Seconds;
pub use netlist::Allowlist;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};

/// Environment variables read for configuration start with this.
pub const ENV_PREFIX: &str = "FERRY_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} not found")]
    Missing(PathBuf),
    #[error("{}", tidy(.0))]
    Invalid(Box<figment::Error>),
    #[error("{file}: {msg}")]
    Check { file: String, msg: String },
}

/// Layers the sources for one role. `keys` are the role's top-level keys:
/// the hub and the ep share the `FERRY_` prefix on one machine, so each
/// reads only its own variables rather than failing on the other's.
pub(crate) fn load<T: DeserializeOwned>(
    path: &Path,
    keys: &'static [&'static str],
    flags: impl Serialize,
) -> Result<T, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::Missing(path.to_path_buf()));
    }
    Figment::new()
        .merge(Toml::file_exact(path))
        .merge(Env::prefixed(ENV_PREFIX).split("__").filter(move |k| {
            // Keys arrive here before figment lowercases them.
            let top = top_key(k.as_str());
            keys.iter().any(|known| known.eq_ignore_ascii_case(top))
        }))
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|e| ConfigError::Invalid(Box::new(e)))
}

/// figment names keys with their profile ("default.control"); ferry has
/// no profiles, so the prefix only confuses.
fn tidy(e: &figment::Error) -> String {
    e.to_string().replace("key \"default.", "key \"")
}

fn top_key(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

/// A check failure that names the config file it concerns.
pub(crate) fn check_err(file: &Path, msg: impl Into<String>) -> ConfigError {
    ConfigError::Check {
        file: file.display().to_string(),
        msg: msg.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_key_takes_first_segment() {
        assert_eq!(top_key("services.web.bind"), "services");
        assert_eq!(top_key("control"), "control");
    }
}

/// The three TLS files each role names under `[tls]`. Relative paths resolve
/// against the folder of the config file that set them.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: figment::value::magic::RelativePathBuf,
    pub cert: figment::value::magic::RelativePathBuf,
    pub key: figment::value::magic::RelativePathBuf,
    /// Hub only: revoked ep certificates (`ferry hub revoke` writes it).
    pub crl: Option<figment::value::magic::RelativePathBuf>,
}

/// Service names appear in logs, config keys and the protocol; keep them tame.
pub(crate) fn check_service_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "service name {name:?} must be 1-64 letters, digits, '-' or '_'"
        ))
    }
}

/// Splits `host:port` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} is not host:port (e.g. \"play.example.com:7000\")");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
        if h.contains(':') {
            return Err(bad());
        }
        (h, p)
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| bad())?;
    Ok((host.to_string(), port))
}

/// Joins a host and port back, bracketing IPv6 literals.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod addr_tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a.b:7000").unwrap(), ("a.b".into(), 7000));
        assert_eq!(split_host_port("[::1]:7").unwrap(), ("::1".into(), 7));
        assert!(split_host_port("::1:7").is_err());
        assert!(split_host_port("host").is_err());
        assert!(split_host_port(":80").is_err());
        assert_eq!(join_host_port("::1", 7), "[::1]:7");
    }
}
