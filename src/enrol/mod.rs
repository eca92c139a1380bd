//! One-line enrolment of an ep: what the line says and what crosses the
//! wire. `ferry hub invite` writes an invite (`invites`) and prints the
//! line; `ferry ep join LINE` (`ep::join`) enrols through the hub's enrol
//! door (`hub::enrol`).
//!
//! The line: `ferry1:HOST:PORT/CA/ID.SECRET`: the enrol door's address, the
//! first 16 bytes of the SHA-256 of the hub's CA certificate (hex), the
//! invite's id and its 128-bit secret (hex). On the wire:
//!
//! 1. ep → hub, plain: `ferry-enrol/1 ID\n`. The hub looks the id up (no
//!    cryptography): unknown, used, expired, revoked or from the wrong
//!    address gets `no REASON\n` and the connection closes.
//! 2. hub → ep: `ca HEX\n`, its CA certificate. The ep checks it against the
//!    line's fingerprint and stops if it differs, before sending anything.
//! 3. TLS 1.3, the hub's certificate verified against that CA only.
//! 4. ep → hub: `Request` (the secret, a certificate request for a key
//!    made at home); hub → ep: `Reply` (the certificate, the CA, the ep's
//!    own token, the ports and services) or the reason it refused.

pub mod invites;
pub mod lines;
pub mod seen;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

pub use crate::proto::ENROL_ALPN as ALPN;
/// The first line's prefix.
pub const HELLO: &str = "ferry-enrol/1";
const SCHEME: &str = "ferry1:";

/// `s` with the eps enrolled through `ferry ep join` merged in: each one's
/// token hash, its enrolling address (which joins `ep_allowlist`) and its
/// invite's grants. A token in the config's `[eps.NAME]` wins over the
/// enrolment's, a `services` list there over its invite's; a record
/// `ferry hub revoke` marked brings nothing.
pub fn merge_enrolled(
    mut s: crate::config::hub::HubSettings,
) -> Result<crate::config::hub::HubSettings> {
    let Some(e) = &s.enrol else { return Ok(s) };
    let store = invites::Store::new(&e.state);
    for (name, ep) in store.enrolled()?.eps {
        if ep.revoked {
            // `ferry hub revoke`: no address, no token of its own. A token
            // hub.toml gives the name still logs it in (revoke warns):
            // then no service but what hub.toml lists, never the reach of
            // an ep without a list. Still an enrolled name: invited again,
            // its new enrolment's grants apply, never taken for one
            // hub.toml names.
            if s.credentials.per_ep.contains_key(&name) {
                grant_enrolled(&mut s, &name, Some(Vec::new()));
            }
            s.revoked.push(name.clone());
            s.enrolled.push(name);
            continue;
        }
        s.allowlist.add(ep.address);
        if s.credentials.per_ep.contains_key(&name) {
            tracing::warn!(ep = %name, "[eps.{name}] in the config wins over its enrolment's token");
            // Its token only: the invite's grants hold unless hub.toml
            // lists its services, or it would have no list at all and
            // reach every service no list names.
            grant_enrolled(&mut s, &name, ep.services);
            continue;
        }
        // The file may have been edited: its hashes are held to what a
        // hash in hub.toml is (each of the ep's logins is checked with it).
        crate::config::check_hash(&ep.token_hash).map_err(|e| {
            anyhow::anyhow!(
                "{}: eps.{name}.token_hash: {e}",
                store.enrolled_path().display()
            )
        })?;
        s.credentials.per_ep.insert(name.clone(), ep.token_hash);
        grant_enrolled(&mut s, &name, ep.services);
        s.enrolled.push(name);
    }
    Ok(s)
}

/// The services an enrolled ep's invite granted, unless hub.toml lists
/// the ep's own (which wins).
pub fn grant_enrolled(
    s: &mut crate::config::hub::HubSettings,
    name: &str,
    services: Option<Vec<String>>,
) {
    if s.grants.listed(name) {
        return;
    }
    // An enrolment (or an invite) from before grants existed grants
    // nothing: an invitee never gets the reach of the host's own ep.
    let list = services.unwrap_or_else(|| {
        tracing::warn!(
            ep = %name,
            "enrolled with an invite that granted no services: it may serve none until \
             [eps.{name}] services = [..] in {} grants some",
            s.file.display()
        );
        Vec::new()
    });
    for svc in list.iter().filter(|svc| s.service(svc).is_none()) {
        tracing::warn!(ep = %name, "its invite granted service {svc:?}, which this hub no longer serves");
    }
    s.grants.set(name, list);
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits only: `u8::from_str_radix` alone also takes a sign, so
/// `+f` read as 0x0f (found by the `enrol_lines` fuzz target).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The CA fingerprint a line carries: 16 bytes of SHA-256, in hex.
pub fn fingerprint(ca_der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, ca_der);
    hex(&d.as_ref()[..16])
}

/// A parsed invite line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The enrol door, `host:port`.
    pub door: String,
    /// Further hubs the ep serves (host names or addresses), replicas of
    /// the door's hub that share its CA, credentials and ports:
    /// `ferry1:HOST:PORT,HOST2,HOST3/CA/ID.SECRET`.
    pub more: Vec<String>,
    pub ca: String,
    pub id: String,
    pub secret: String,
}

/// Most hubs one line names (an ep serves at most 16).
pub const MAX_LINE_HUBS: usize = 16;

/// A host a line may name, as `join_host_port` takes it: a DNS name, an
/// IPv4 or an IPv6 address (bracketed or not), nothing that could add a
/// port, a path or a TOML escape. None if it is none of those.
pub fn line_host(h: &str) -> Option<String> {
    let bare = h
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(h);
    if let Ok(v6) = bare.parse::<std::net::Ipv6Addr>() {
        return Some(v6.to_string());
    }
    // Names as the hub's certificate is checked against them (the ep's
    // `server_name` defaults to the host), lowercase so one hub is one
    // string; an underscore as that check allows it (`home_hub.lan`).
    let name = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && rustls::pki_types::ServerName::try_from(h).is_ok();
    name.then(|| h.to_ascii_lowercase())
}

/// The first host named twice in `hosts` (as `line_host` gives them).
fn twice(hosts: &[String]) -> Option<&String> {
    hosts
        .iter()
        .enumerate()
        .find(|(i, h)| hosts[..*i].contains(h))
        .map(|(_, h)| h)
}

impl Line {
    pub fn parse(text: &str) -> Result<Line> {
        let bad = |why: &str| {
            anyhow::anyhow!(
                "not an invite line ({why}); it looks like ferry1:HOST:PORT/CA/ID.SECRET"
            )
        };
        let rest = text
            .trim()
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("no ferry1: prefix"))?;
        let mut parts = rest.rsplitn(3, '/');
        let (Some(code), Some(ca), Some(door)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("missing parts"));
        };
        let (id, secret) = code.split_once('.').ok_or_else(|| bad("no ID.SECRET"))?;
        let hexlen = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
        if !hexlen(ca, 32) || !hexlen(id, 16) || !hexlen(secret, 32) {
            bail!(
                "the invite line is damaged (a part has the wrong length or a non-hex character); copy it again whole"
            );
        }
        let mut hubs = door.split(',');
        let door = hubs.next().unwrap_or_default();
        crate::config::split_host_port(door).map_err(|e| bad(&e))?;
        let more = hubs
            .map(|h| {
                line_host(h).ok_or_else(|| {
                    bad(&format!(
                        "{h:?} is not a host name or address (further hubs are HOST, comma-separated)"
                    ))
                })
            })
            .collect::<Result<Vec<String>>>()?;
        if more.len() + 1 > MAX_LINE_HUBS {
            return Err(bad(&format!("more than {MAX_LINE_HUBS} hubs")));
        }
        let (door_host, _) = crate::config::split_host_port(door).map_err(|e| bad(&e))?;
        // As a further hub's: a control character or a terminal escape in
        // it would be printed as it is in join's messages.
        let Some(door_host) = line_host(&door_host) else {
            return Err(bad(&format!("{door_host:?} is not a host name or address")));
        };
        let all: Vec<String> = std::iter::once(door_host)
            .chain(more.iter().cloned())
            .collect();
        if let Some(h) = twice(&all) {
            return Err(bad(&format!("the hub {h:?} is named twice")));
        }
        Ok(Line {
            door: door.to_string(),
            more,
            ca: ca.to_ascii_lowercase(),
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}", self.door)?;
        for h in &self.more {
            if h.contains(':') {
                write!(f, ",[{h}]")?;
            } else {
                write!(f, ",{h}")?;
            }
        }
        write!(f, "/{}/{}.{}", self.ca, self.id, self.secret)
    }
}

/// An invite just made.
pub struct Issued {
    pub line: Line,
    pub ep: String,
    pub expires: u64,
}

/// Longest an invite may live.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Makes an invite for `ep` on the hub configured by `s`: stored (secret
/// hashed) in the enrol state folder, returned as the line to paste.
pub fn invite(
    s: &crate::config::hub::HubSettings,
    ep: &str,
    ttl: std::time::Duration,
    from: Option<crate::config::Allowlist>,
    hosts: &[String],
    services: &[String],
) -> Result<Issued> {
    let Some(e) = &s.enrol else {
        bail!(
            "enrolment is off: add [enrol] with bind = \"0.0.0.0:7003\" to {} (and open that TCP port)",
            s.file.display()
        );
    };
    crate::config::check_service_name(ep)
        .map_err(|_| anyhow::anyhow!("an ep name is 1-64 letters, digits, '-' or '_'"))?;
    if s.credentials.per_ep.contains_key(ep) && !s.enrolled.iter().any(|n| n == ep) {
        bail!(
            "[eps.{ep}] in {} already sets this ep's token; remove it or pick another name",
            s.file.display()
        );
    }
    // The CLI's settings are hub.toml's alone: enrolled.json says which
    // names were enrolled (a grant added for one later is its own).
    let enrolled = invites::Store::new(&e.state).enrolled()?;
    if s.grants.listed(ep) && !enrolled.eps.contains_key(ep) {
        bail!(
            "[eps.{ep}] in {} names an ep on the shared token; an invite would take its name \
             (and its services): pick another name",
            s.file.display()
        );
    }
    if ttl.is_zero() || ttl > MAX_TTL {
        bail!("--expires {ttl:?} is out of range: allowed 1s to 30 days");
    }
    let gen_cert_pem = s.tls_files.ca.with_file_name(format!("ep-{ep}.pem"));
    if gen_cert_pem.exists() {
        bail!(
            "{} exists: an ep named {ep:?} already has a certificate (it may log in with the \
             shared token); invite another name",
            gen_cert_pem.display()
        );
    }
    if let Some(svc) = services.iter().find(|svc| s.service(svc).is_none()) {
        bail!(
            "--service {svc:?}: {} has no [services.{svc}]",
            s.file.display()
        );
    }
    if e.bind.port() == 0 {
        bail!("enrol.bind has port 0 (chosen at start); give it a fixed port");
    }
    let hosts = line_hosts(hosts)?;
    let host = match hosts.first() {
        Some(h) => h.to_string(),
        None => crate::tls::load_certs(&s.tls_files.cert)?
            .first()
            .map(crate::tls::subject_names)
            .and_then(|n| n.first().cloned())
            .ok_or_else(|| anyhow::anyhow!("the hub certificate names no host; pass --hub HOST"))?,
    };
    let ca = crate::tls::load_certs(&e.ca)?;
    let ca = ca
        .first()
        .ok_or_else(|| anyhow::anyhow!("{} holds no certificate", e.ca.display()))?;
    let store = invites::Store::new(&e.state);
    let (id, secret) = store.create(ep, ttl, from, services.to_vec())?;
    let line = Line {
        door: crate::config::join_host_port(&host, e.bind.port()),
        more: hosts.iter().skip(1).cloned().collect(),
        ca: fingerprint(ca.as_ref()),
        id,
        secret,
    };
    Ok(Issued {
        line,
        ep: ep.to_string(),
        expires: invites::now() + ttl.as_secs(),
    })
}

/// The hosts `--hub` names, as the line carries them: each a host (no
/// port), at most `MAX_LINE_HUBS`, none twice.
fn line_hosts(hosts: &[String]) -> Result<Vec<String>> {
    let hosts = hosts
        .iter()
        .map(|h| {
            line_host(h).ok_or_else(|| {
                anyhow::anyhow!(
                    "--hub {h:?}: give a host name or address (no port: every hub uses this hub's ports)"
                )
            })
        })
        .collect::<Result<Vec<String>>>()?;
    if hosts.len() > MAX_LINE_HUBS {
        bail!("{} --hub: at most {MAX_LINE_HUBS}", hosts.len());
    }
    if let Some(h) = twice(&hosts) {
        bail!("--hub {h:?} is given twice");
    }
    Ok(hosts)
}

/// What the ep sends inside TLS.
#[derive(Serialize, Deserialize)]
pub struct Request {
    pub secret: crate::secret::Secret,
    /// PEM certificate signing request for the key made at home.
    pub csr: String,
}

/// A service as the hub serves it, for the ep's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offered {
    pub name: String,
    pub kind: crate::config::ports::ServiceKind,
    pub first_port: u16,
    pub ports: u16,
}

/// What the hub answers.
#[derive(Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Enrolled {
        ep: String,
        cert: String,
        ca: String,
        token: crate::secret::Secret,
        control_port: u16,
        channel_port: u16,
        services: Vec<Offered>,
    },
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_damage_is_named() {
        let l = Line {
            door: "play.example.com:7003".into(),
            more: vec![],
            ca: "0123456789abcdef0123456789abcdef".into(),
            id: "0011223344556677".into(),
            secret: "ffeeddccbbaa99887766554433221100".into(),
        };
        let text = l.to_string();
        assert_eq!(Line::parse(&text).unwrap(), l);
        assert_eq!(Line::parse(&format!("  {text}\n")).unwrap(), l);
        let v6 = Line {
            door: "[2001:db8::1]:7003".into(),
            ..l.clone()
        };
        assert_eq!(Line::parse(&v6.to_string()).unwrap(), v6);
        // Further hubs: names and addresses, v6 bracketed in the text.
        let several = Line {
            more: vec!["b.example.net".into(), "2001:db8::2".into()],
            ..l.clone()
        };
        let text2 = several.to_string();
        assert!(text2.starts_with("ferry1:play.example.com:7003,b.example.net,[2001:db8::2]/"));
        assert_eq!(Line::parse(&text2).unwrap(), several);
        for bad in [
            "b.example.net:7000",
            "",
            "b\"x",
            "a/b",
            "a..b",
            "999.1.1.1",
            "PLAY.example.com",
            "[2001:db8::2],[2001:0db8::2]",
        ] {
            let t = text.replacen("7003/", &format!("7003,{bad}/"), 1);
            assert!(Line::parse(&t).is_err(), "{t}");
        }
        let cut = &text[..text.len() - 1];
        assert!(
            Line::parse(cut)
                .unwrap_err()
                .to_string()
                .contains("damaged")
        );
        assert!(Line::parse("https://example.com").is_err());
        // The door's host is a host name or address as a further hub's.
        for bad in ["play\u{1b}[31m.example.com", "a b", "x\"y", "a..b"] {
            let t = text.replacen("play.example.com", bad, 1);
            assert!(Line::parse(&t).is_err(), "{t:?}");
        }
        let t = text.replacen("play.example.com", "home_hub.lan", 1);
        assert_eq!(Line::parse(&t).unwrap().door, "home_hub.lan:7003");
        assert_eq!(unhex(&hex(b"\x00\xff")).unwrap(), b"\x00\xff");
    }

    /// The `enrol_lines` fuzz target's first finding: a sign in a pair.
    #[test]
    fn unhex_takes_hex_digits_only() {
        assert_eq!(unhex("+0000001+000000100"), None);
        assert_eq!(unhex("+f"), None);
        assert_eq!(unhex("-0"), None);
        assert_eq!(unhex(" f"), None);
        assert_eq!(unhex("0A0b").unwrap(), [0x0a, 0x0b]);
        assert_eq!(unhex("").unwrap(), b"");
    }
}
