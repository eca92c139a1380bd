//! Configuration: defaults → TOML file → `FERRY_…` environment → flags.
//!
//! Each role has a raw, serde-shaped config (`hub::HubConfig`, `ep::EpConfig`)
//! and a checked form built from it (addresses parsed, values in range) that
//! the runtime uses. No file but the config itself is read here: the files
//! it names are kept as paths, and read by the role's loader (`hub::load`,
//! `ep::load`). `ferry … check` prints the checked form, as loaded.

pub mod admin;
pub mod bandwidth;
mod duration;
pub mod enrol;
pub mod ep;
pub mod game;
pub mod grants;
mod hashes;
pub mod hub;
pub mod netlist;
pub mod plan;
pub mod players;
pub mod ports;

pub use duration::{Seconds, check_range, parse as parse_duration};
pub(crate) use hashes::{GivenHash, token_hash};
pub use hashes::{check_hash, weakness as hash_weakness};
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
    #[error("cannot read config file {0}: {1}")]
    Unreadable(PathBuf, String),
    #[error("{}", tidy(.0))]
    Invalid(Box<figment::Error>),
    #[error("{file}: {msg}")]
    Check { file: String, msg: String },
}

/// Layers the sources for one role. The hub and the ep share the `FERRY_`
/// prefix on a host that runs both (the demo does), so each role reads only
/// the variables whose key path it knows (`known`, with `*` for a service
/// or ep name), rather than failing on the other's. `role_prefix`
/// (`FERRY_HUB_`, `FERRY_EP_`) names one role only and wins over `FERRY_`:
/// use it for keys both roles have (`channel`, `tls.*`, `drain_timeout`).
pub(crate) fn load<T: DeserializeOwned>(
    path: &Path,
    known: &'static [&'static str],
    role_prefix: &'static str,
    flags: impl Serialize,
) -> Result<T, ConfigError> {
    // Not "not found" for a file this user may not read (a folder of the
    // service's user, a sandbox hiding /home): say what stops it.
    // The type first: opening a FIFO put there would block for ever.
    let read = std::fs::metadata(path).and_then(|m| {
        if m.is_file() {
            std::fs::File::open(path).map(|_| m)
        } else {
            Ok(m)
        }
    });
    match read {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            let why = "not a regular file".to_string();
            return Err(ConfigError::Unreadable(path.to_path_buf(), why));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Missing(path.to_path_buf()));
        }
        Err(e) => {
            let why = format!("{e}{}", crate::secret_file::denied_hint(&e));
            return Err(ConfigError::Unreadable(path.to_path_buf(), why));
        }
    }
    let env = |prefix: &'static str| {
        Env::prefixed(prefix)
            .split("__")
            .filter(move |k| is_known(known, k.as_str()))
    };
    Figment::new()
        .merge(Toml::file_exact(path))
        .merge(env(ENV_PREFIX))
        .merge(env(role_prefix))
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|e| ConfigError::Invalid(Box::new(e)))
}

/// Whether `key` (dotted, any case: figment lowercases later) matches one
/// of the `known` paths segment for segment.
fn is_known(known: &[&str], key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    known.iter().any(|pattern| {
        let pat: Vec<&str> = pattern.split('.').collect();
        pat.len() == parts.len()
            && pat
                .iter()
                .zip(&parts)
                .all(|(p, k)| *p == "*" || p.eq_ignore_ascii_case(k))
    })
}

/// figment names keys with their profile ("default.control"); ferry has
/// no profiles, so the prefix only confuses.
fn tidy(e: &figment::Error) -> String {
    e.to_string().replace("key \"default.", "key \"")
}

/// A check failure that names the config file it concerns.
pub(crate) fn check_err(file: &Path, msg: impl Into<String>) -> ConfigError {
    ConfigError::Check {
        file: file.display().to_string(),
        msg: msg.into(),
    }
}

/// Longest token the hub will hash; a longer one is refused unhashed so a
/// stranger cannot make Argon2 chew on megabytes.
pub const MAX_TOKEN_LEN: usize = 256;

/// A token the hub would refuse unhashed, said where it is made or
/// configured rather than as "wrong token" at every login.
pub fn token_too_long(token: &crate::secret::Secret) -> Result<(), String> {
    let n = token.expose().len();
    match n > MAX_TOKEN_LEN {
        true => Err(format!(
            "the token is {n} bytes; a hub takes at most {MAX_TOKEN_LEN} (`ferry hub token` makes one)"
        )),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_key_paths_are_taken_from_the_environment() {
        let known = &["control", "services.*.bind", "tls.ca"];
        assert!(is_known(known, "CONTROL"));
        assert!(is_known(known, "SERVICES.WEB.BIND"));
        assert!(is_known(known, "tls.ca"));
        assert!(!is_known(known, "SERVICES.WEB.LOCAL"));
        assert!(!is_known(known, "SERVICES.WEB"));
        assert!(!is_known(known, "HUB_CONTROL"));
        assert!(!is_known(known, "tls"));
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

/// The TLS files named under `[tls]`, resolved against the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn paths(&self) -> TlsPaths {
        TlsPaths {
            ca: self.ca.relative(),
            cert: self.cert.relative(),
            key: self.key.relative(),
        }
    }
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
    let (host, port) = split_host(s).ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    Ok((host.to_string(), port))
}

/// `host` and the text after its colon; IPv6 literals are bracketed.
pub(crate) fn split_host(s: &str) -> Option<(&str, &str)> {
    let (host, rest) = match s.strip_prefix('[') {
        Some(rest) => rest.split_once("]:")?,
        None => {
            let (h, p) = s.rsplit_once(':')?;
            if h.contains(':') {
                return None;
            }
            (h, p)
        }
    };
    (!host.is_empty()).then_some((host, rest))
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
