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
    /// Mask players' addresses in the players table (the last octet of
    /// IPv4, the last 80 bits of IPv6).
    #[serde(default)]
    pub hide_addresses: bool,
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
    pub hide_addresses: bool,
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
            hide_addresses: self.hide_addresses,
        })
    }
}

/// A reload's `[admin]` on a running door: where it listens, and whether
/// it asks for a token, stay as running (a restart applies them); what
/// it shows, and which token it takes, follow the new settings.
pub fn keep_running(
    old: Option<&AdminSettings>,
    new: Option<AdminSettings>,
) -> Option<AdminSettings> {
    let mut kept = old?.clone();
    if let Some(new) = new {
        kept.hide_addresses = new.hide_addresses;
        if kept.token_hash.is_some() && new.token_hash.is_some() {
            kept.token_hash = new.token_hash;
            kept.token_hash_file = new.token_hash_file;
        }
    }
    Some(kept)
}

/// Where a door listens and whether it asks for a token: what a reload
/// cannot change on a running door.
pub fn listening(a: Option<&AdminSettings>) -> String {
    a.map(|a| {
        AdminSettings {
            hide_addresses: false,
            ..a.clone()
        }
        .to_string()
    })
    .unwrap_or_default()
}

impl std::fmt::Display for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = if self.token_hash.is_some() || self.token_hash_file.is_some() {
            "token required"
        } else {
            "loopback, no token"
        };
        let hidden = if self.hide_addresses {
            ", players' addresses masked"
        } else {
            ""
        };
        write!(f, "http://{}/ ({auth}{hidden})", self.bind)
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

/// `addr` as the players table shows it: whole, or with `hide` the last
/// IPv4 octet / last 80 bits of IPv6 zeroed and marked, and no port.
pub fn shown_address(addr: std::net::SocketAddr, hide: bool) -> String {
    use std::net::IpAddr;
    if !hide {
        return addr.to_string();
    }
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.x")
        }
        IpAddr::V6(v6) => {
            let len = shown_v6_prefix(v6);
            let net = ipnet::Ipv6Net::new(v6, len).map(|n| n.trunc());
            net.map_or_else(|_| "?".into(), |n| n.to_string())
        }
    }
}

/// The longest IPv6 prefix a page with addresses hidden shows: a /48,
/// but a /40 of 6to4's `2002::/16`, whose next 32 bits are the player's
/// IPv4 address (a /40 shows its first three octets, as an IPv4 player's
/// are shown).
pub fn shown_v6_prefix(v6: std::net::Ipv6Addr) -> u8 {
    match v6.segments()[0] {
        0x2002 => 40,
        _ => 48,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masked_addresses_keep_only_the_network() {
        let v4: std::net::SocketAddr = "203.0.113.77:51000".parse().unwrap();
        assert_eq!(super::shown_address(v4, false), "203.0.113.77:51000");
        assert_eq!(super::shown_address(v4, true), "203.0.113.x");
        let v6: std::net::SocketAddr = "[2001:db8:1:2:3:4:5:6]:1".parse().unwrap();
        assert_eq!(super::shown_address(v6, true), "2001:db8:1::/48");
        let mapped: std::net::SocketAddr = "[::ffff:198.51.100.9]:2".parse().unwrap();
        assert_eq!(super::shown_address(mapped, true), "198.51.100.x");
        // 6to4: 2002:cb00:7107::/48 would read as 203.0.113.7.
        let six_to_four: std::net::SocketAddr = "[2002:cb00:7107::1]:3".parse().unwrap();
        assert_eq!(
            super::shown_address(six_to_four, true),
            "2002:cb00:7100::/40"
        );
    }
}
