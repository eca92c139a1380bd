//! What a configuration change does to a running hub: a summary of the
//! settings that matter to a reload, and the plan from one summary to the
//! next. The hub prints the plan when it reloads; `ferry hub check` prints
//! the same plan against the summary a running hub serves on its admin
//! door, without applying anything.

use super::hub::HubSettings;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt};

/// A service as a reload compares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub kind: String,
    pub bind: String,
    pub pool_size: usize,
    /// The player-door limits, as `check` prints them.
    pub limits: String,
    /// `game`, `hosts`, `default_host`, and a digest of what the hub says
    /// while home is away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game: Option<String>,
}

/// The settings a reload compares, in a form a running hub can serve.
/// Secrets appear only as short digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub services: BTreeMap<String, ServiceSummary>,
    pub ep_allowlist: String,
    /// Per ep name (`*` for the shared hash): a digest of its token hash.
    pub credentials: BTreeMap<String, String>,
    /// A digest of the CA, certificate and key files, and the CRL path.
    pub tls: String,
    /// Keys applied live to whatever starts after the change.
    pub live: BTreeMap<String, String>,
    /// Keys a running hub cannot change: their values.
    pub restart: BTreeMap<String, String>,
}

/// A short digest of the admin token's hash, so a reload's line can say
/// it changed ("" without one).
pub fn token_digest(a: Option<&super::admin::AdminSettings>) -> String {
    a.and_then(|a| a.token_hash.as_deref())
        .map(|h| digest(h.as_bytes()))
        .unwrap_or_default()
}

pub fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Summary {
    /// `s` with `tls_digest`, the digest of its TLS files as loaded
    /// (`tls::HubTls`), so a new certificate shows in the plan.
    pub fn of(s: &HubSettings, tls_digest: &str) -> Summary {
        let services = s
            .services
            .iter()
            .map(|svc| (svc.name.clone(), ServiceSummary::of(svc)))
            .collect();
        let mut credentials: BTreeMap<String, String> = s
            .credentials
            .per_ep
            .iter()
            .map(|(ep, h)| (ep.clone(), digest(h.as_bytes())))
            .collect();
        if let Some(h) = &s.credentials.default {
            credentials.insert("*".into(), digest(h.as_bytes()));
        }
        let t = &s.timing;
        let live = [
            ("heartbeat_interval", t.heartbeat_interval),
            ("heartbeat_timeout", t.heartbeat_timeout),
            ("handshake_timeout", t.handshake_timeout),
            ("player_wait", t.player_wait),
            ("drain_timeout", t.drain_timeout),
            ("idle_timeout", t.idle_timeout),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), format!("{v:?}")))
        .chain([("grants".to_string(), s.grants.lines().join("; "))])
        .chain([(
            "admin.token_hash".to_string(),
            token_digest(s.admin.as_ref()),
        )])
        .chain([(
            "admin.hide_addresses".to_string(),
            s.admin
                .as_ref()
                .is_some_and(|a| a.hide_addresses)
                .to_string(),
        )])
        .collect();
        let restart = restart_keys(s);
        Summary {
            services,
            ep_allowlist: format!("{:?}", s.allowlist.sorted()),
            credentials,
            tls: tls_digest.to_string(),
            live,
            restart,
        }
    }
}

impl ServiceSummary {
    fn of(svc: &super::hub::ServiceSettings) -> ServiceSummary {
        let limits = format!("{} / {:?}", svc.limits, svc.limits.udp);
        ServiceSummary {
            kind: svc.kind.to_string(),
            bind: svc.bind.to_string(),
            pool_size: svc.pool_size,
            limits,
            game: svc.game.as_ref().map(|g| {
                let words = format!(
                    "{:?}{:?}{:?}{:?}",
                    g.offline_motd, g.offline_message, g.starting_motd, g.icon
                );
                format!(
                    "{} hosts [{}]{} words {}",
                    g.game,
                    g.hosts.join(", "),
                    if g.default_host { " default" } else { "" },
                    digest(words.as_bytes())
                )
            }),
        }
    }
}

/// The keys a running hub cannot change, with their values.
fn restart_keys(s: &HubSettings) -> BTreeMap<String, String> {
    let l = &s.limits;
    [
        ("control", s.control.to_string()),
        ("channel", s.channel.to_string()),
        ("quic", format!("{:?}", s.quic)),
        (
            "admin",
            // Where and how it listens; what it shows, and which token it
            // takes, are live.
            super::admin::listening(s.admin.as_ref()),
        ),
        (
            "enrol",
            // Where it listens, the folder it records enrolments in, the
            // CA it hands out and the key it signs with: all held by the
            // running door.
            s.enrol
                .as_ref()
                .map(|e| format!("{} {:?} {:?} {:?}", e.bind, e.state, e.ca, e.ca_key))
                .unwrap_or_default(),
        ),
        ("health", format!("{:?}", s.health)),
        ("log_format", format!("{:?}", s.log_format)),
        ("watch_config", s.watch_config.to_string()),
        ("max_pending_auth", l.max_pending_auth.to_string()),
        (
            "max_pending_per_source",
            l.max_pending_per_source.to_string(),
        ),
        ("argon2_concurrency", l.argon2_concurrency.to_string()),
        ("penalty_base", format!("{:?}", l.penalty_base)),
        ("penalty_max", format!("{:?}", l.penalty_max)),
        ("max_players_total", format!("{:?}", l.max_players_total)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// What changes from one summary to the next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Service name and what changed in it.
    pub changed: Vec<(String, Vec<&'static str>)>,
    /// Eps whose credential changed or went: their sessions are closed.
    pub eps: Vec<String>,
    /// Other keys applied live.
    pub live: Vec<String>,
    /// Keys that need a restart; the rest is applied anyway.
    pub restart: Vec<String>,
}

impl Plan {
    pub fn between(old: &Summary, new: &Summary) -> Plan {
        let mut p = Plan::default();
        for (name, n) in &new.services {
            match old.services.get(name) {
                None => p.added.push(name.clone()),
                Some(o) if o != n => {
                    let mut what = Vec::new();
                    if o.kind != n.kind {
                        what.push("type");
                    }
                    if o.bind != n.bind {
                        what.push("bind");
                    }
                    if o.pool_size != n.pool_size {
                        what.push("pool_size");
                    }
                    if o.limits != n.limits {
                        what.push("limits");
                    }
                    if o.game != n.game {
                        what.push("game");
                    }
                    p.changed.push((name.clone(), what));
                }
                Some(_) => {}
            }
        }
        p.removed = old
            .services
            .keys()
            .filter(|k| !new.services.contains_key(*k))
            .cloned()
            .collect();
        // An ep whose own entry changed, or which used the shared hash
        // when that changed.
        let shared_changed = old.credentials.get("*") != new.credentials.get("*");
        for (ep, h) in &old.credentials {
            if ep != "*" && new.credentials.get(ep) != Some(h) {
                p.eps.push(ep.clone());
            }
        }
        if shared_changed {
            p.eps.push("*".into());
        }
        for (ep, _) in new.credentials.iter() {
            if ep != "*" && !old.credentials.contains_key(ep) && old.credentials.contains_key("*") {
                p.eps.push(ep.clone());
            }
        }
        p.eps.sort();
        p.eps.dedup();
        if old.ep_allowlist != new.ep_allowlist {
            p.live.push("ep_allowlist".into());
        }
        if old.tls != new.tls {
            p.live.push("tls".into());
        }
        for (k, v) in &new.live {
            if old.live.get(k) != Some(v) {
                p.live.push(k.clone());
            }
        }
        for (k, v) in &new.restart {
            if old.restart.get(k) != Some(v) {
                p.restart.push(k.clone());
            }
        }
        // A token added to (or taken from) a running door waits for the
        // restart with the rest of `[admin]`; one replaced applies at once,
        // whatever else in `[admin]` waits.
        let token = |s: &Summary| {
            s.live
                .get("admin.token_hash")
                .is_some_and(|d| !d.is_empty())
        };
        if !(token(old) && token(new)) {
            p.live.retain(|k| k != "admin.token_hash");
        }
        p
    }

    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing changes");
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".into()
            } else {
                v.join(", ")
            }
        };
        let changed: Vec<String> = self
            .changed
            .iter()
            .map(|(n, w)| format!("{n} ({})", w.join(", ")))
            .collect();
        write!(
            f,
            "services added: {}; removed: {}; changed: {}",
            list(&self.added),
            list(&self.removed),
            list(&changed)
        )?;
        if !self.eps.is_empty() {
            let eps: Vec<String> = self
                .eps
                .iter()
                .map(|e| {
                    if e == "*" {
                        "eps using the shared token_hash".into()
                    } else {
                        e.clone()
                    }
                })
                .collect();
            write!(
                f,
                "; credentials changed (sessions closed): {}",
                eps.join(", ")
            )?;
        }
        if !self.live.is_empty() {
            write!(f, "; also applied: {}", self.live.join(", "))?;
        }
        if !self.restart.is_empty() {
            write!(
                f,
                "; restart required for: {} (kept as running until then)",
                self.restart.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(bind: &str, pool: usize) -> ServiceSummary {
        ServiceSummary {
            kind: "tcp".into(),
            bind: bind.into(),
            pool_size: pool,
            limits: "x".into(),
            game: None,
        }
    }

    #[test]
    fn a_replaced_admin_token_applies_and_one_added_waits_for_the_restart() {
        let with = |listening: &str, token: &str| {
            let mut s = Summary::default();
            s.restart.insert("admin".into(), listening.into());
            s.live.insert("admin.token_hash".into(), token.into());
            s
        };
        let moved = Plan::between(
            &with("http://a/ (token required)", "d1"),
            &with("http://b/ (token required)", "d2"),
        );
        assert_eq!(
            (moved.live, moved.restart),
            (vec!["admin.token_hash".into()], vec!["admin".into()])
        );
        let added = Plan::between(
            &with("http://a/ (loopback, no token)", ""),
            &with("http://a/ (token required)", "d2"),
        );
        assert_eq!((added.live, added.restart), (vec![], vec!["admin".into()]));
    }

    #[test]
    fn a_plan_names_what_changes() {
        let mut old = Summary::default();
        old.services.insert("a".into(), svc("0.0.0.0:1", 4));
        old.services.insert("gone".into(), svc("0.0.0.0:2", 4));
        old.credentials.insert("home".into(), "h1".into());
        old.restart.insert("control".into(), "0.0.0.0:7000".into());
        let mut new = old.clone();
        new.services.remove("gone");
        new.services.insert("a".into(), svc("0.0.0.0:3", 8));
        new.services.insert("b".into(), svc("0.0.0.0:4", 4));
        new.credentials.insert("home".into(), "h2".into());
        new.restart.insert("control".into(), "0.0.0.0:7100".into());
        let p = Plan::between(&old, &new);
        assert_eq!(p.added, ["b"]);
        assert_eq!(p.removed, ["gone"]);
        assert_eq!(p.changed, [("a".to_string(), vec!["bind", "pool_size"])]);
        assert_eq!(p.eps, ["home"]);
        assert_eq!(p.restart, ["control"]);
        let line = p.to_string();
        assert!(line.contains("restart required for: control"), "{line}");
        assert!(Plan::between(&new, &new).is_empty());
    }
}
