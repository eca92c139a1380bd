//! The hub's enrolment state, two files in its state folder (mode 0600):
//! `invites.json`, the open, used and revoked invites (secrets only as
//! SHA-256: they are 128 random bits, so a fast hash is enough and a
//! stranger's guess costs the hub one hash, never Argon2), and
//! `enrolled.json`, each enrolled ep's token hash, certificate serial and
//! the address it enrolled from. The hub reads `enrolled.json` with its
//! configuration; `ferry hub invite` and the running hub both write
//! `invites.json`, each by replacing the whole file.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Used,
    Revoked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invite {
    pub id: String,
    pub ep: String,
    pub secret_sha256: String,
    /// Unix seconds.
    pub expires: u64,
    /// Only from these networks, if set.
    #[serde(default)]
    pub from: Option<crate::config::Allowlist>,
    pub state: State,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct InviteFile {
    invites: Vec<Invite>,
}

/// An enrolled ep's credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    pub token_hash: String,
    pub serial: String,
    /// Where it enrolled from; admitted by the hub's allowlist.
    pub address: IpAddr,
    pub enrolled: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EnrolledFile {
    pub eps: BTreeMap<String, Enrolled>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sha256_hex(s: &str) -> String {
    super::hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged (not the JSON ferry wrote)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    crate::certgen::write_file(path, &bytes, 0o600, true)
}

/// The enrolment state in `dir`.
pub struct Store {
    dir: PathBuf,
}

/// Why an invite cannot be used now.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unusable {
    #[error("unknown invite (check the line, or ask for a new one)")]
    Unknown,
    #[error("this invite was already used; ask for a new one")]
    Used,
    #[error("this invite was revoked")]
    Revoked,
    #[error("this invite has expired; ask for a new one")]
    Expired,
    #[error("this invite is not valid from this address")]
    WrongAddress,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    fn invites_path(&self) -> PathBuf {
        self.dir.join("invites.json")
    }

    pub fn enrolled_path(&self) -> PathBuf {
        self.dir.join("enrolled.json")
    }

    pub fn invites(&self) -> Result<Vec<Invite>> {
        Ok(read_json::<InviteFile>(&self.invites_path())?.invites)
    }

    fn save_invites(&self, invites: Vec<Invite>) -> Result<()> {
        write_json(&self.invites_path(), &InviteFile { invites })
    }

    /// A new open invite for `ep`; its id and secret.
    pub fn create(
        &self,
        ep: &str,
        ttl: Duration,
        from: Option<crate::config::Allowlist>,
    ) -> Result<(String, String)> {
        let id = crate::token::random_hex(8);
        let secret = crate::token::random_hex(16);
        let mut invites = self.invites()?;
        let now = now();
        // Forget invites that ended more than a week ago.
        invites.retain(|i| i.state == State::Open || i.expires + 7 * 86_400 > now);
        invites.push(Invite {
            id: id.clone(),
            ep: ep.to_string(),
            secret_sha256: sha256_hex(&secret),
            expires: now + ttl.as_secs(),
            from,
            state: State::Open,
        });
        self.save_invites(invites)?;
        Ok((id, secret))
    }

    pub fn revoke(&self, id: &str) -> Result<Invite> {
        let mut invites = self.invites()?;
        let Some(i) = invites.iter_mut().find(|i| i.id == id) else {
            bail!("no invite {id} (see `ferry hub invite --list`)");
        };
        i.state = State::Revoked;
        let out = i.clone();
        self.save_invites(invites)?;
        Ok(out)
    }

    /// The invite `id` if `from` may use it now. No cryptography: this is
    /// all a stranger's connection costs.
    pub fn usable(&self, id: &str, from: IpAddr) -> Result<Invite, Unusable> {
        let invites = self.invites().map_err(|e| {
            tracing::warn!("{e:#}");
            Unusable::Unknown
        })?;
        let i = invites
            .into_iter()
            .find(|i| i.id == id)
            .ok_or(Unusable::Unknown)?;
        match i.state {
            State::Used => return Err(Unusable::Used),
            State::Revoked => return Err(Unusable::Revoked),
            State::Open => {}
        }
        if i.expires <= now() {
            return Err(Unusable::Expired);
        }
        if let Some(nets) = &i.from
            && !nets.contains(from.to_canonical())
        {
            return Err(Unusable::WrongAddress);
        }
        Ok(i)
    }

    /// Checks `secret` against the invite and marks it used, once: the
    /// second of two simultaneous uses finds it used.
    pub fn redeem(&self, id: &str, secret: &str, from: IpAddr) -> Result<Invite, String> {
        let invite = self.usable(id, from).map_err(|e| e.to_string())?;
        // Digests compared: timing can at most tell a guesser how much of
        // the SHA-256 of its guess matched, which says nothing of the secret.
        if sha256_hex(secret) != invite.secret_sha256 {
            return Err("the invite's secret does not match (the line was changed?)".into());
        }
        let mut invites = self.invites().map_err(|e| format!("{e:#}"))?;
        if let Some(i) = invites.iter_mut().find(|i| i.id == id) {
            i.state = State::Used;
        }
        self.save_invites(invites).map_err(|e| format!("{e:#}"))?;
        Ok(invite)
    }

    pub fn enrolled(&self) -> Result<EnrolledFile> {
        read_json(&self.enrolled_path())
    }

    /// Records `ep`'s credential; the serial it replaces, if any.
    pub fn record(&self, ep: &str, e: Enrolled) -> Result<Option<String>> {
        let mut file = self.enrolled()?;
        let old = file.eps.insert(ep.to_string(), e).map(|o| o.serial);
        write_json(&self.enrolled_path(), &file)?;
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_is_used_once_and_only_with_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let (id, secret) = s.create("home", Duration::from_secs(60), None).unwrap();
        assert!(s.usable(&id, ip).is_ok());
        assert!(
            s.redeem(&id, "00", ip)
                .unwrap_err()
                .contains("does not match")
        );
        assert_eq!(s.redeem(&id, &secret, ip).unwrap().ep, "home");
        assert_eq!(s.usable(&id, ip).unwrap_err(), Unusable::Used);
        assert_eq!(s.usable("nope", ip).unwrap_err(), Unusable::Unknown);
        let (id2, _) = s.create("home", Duration::ZERO, None).unwrap();
        assert_eq!(s.usable(&id2, ip).unwrap_err(), Unusable::Expired);
        let only: crate::config::Allowlist =
            serde_json::from_str(r#"["198.51.100.0/24"]"#).unwrap();
        let (id3, _) = s
            .create("home", Duration::from_secs(60), Some(only))
            .unwrap();
        assert_eq!(s.usable(&id3, ip).unwrap_err(), Unusable::WrongAddress);
        s.revoke(&id3).unwrap();
        assert_eq!(s.usable(&id3, ip).unwrap_err(), Unusable::Revoked);
    }
}
