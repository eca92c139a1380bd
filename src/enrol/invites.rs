//! The hub's enrolment state, two files in its state folder (mode 0600):
//! `invites.json`, the open, used and revoked invites (secrets only as
//! SHA-256: they are 128 random bits, so a fast hash is enough and a
//! stranger's guess costs the hub one hash, never Argon2), and
//! `enrolled.json`, each enrolled ep's token hash, certificate serial and
//! the address it enrolled from. The hub reads `enrolled.json` with its
//! configuration; `ferry hub invite` and the running hub both write
//! `invites.json`, each by replacing the whole file.
//!
//! Every change is a read, a change and a write, made while holding the
//! lock `enrol.lock` in the same folder (a file lock, so it holds between
//! the hub and `ferry hub invite` and between the hub's own enrolments):
//! otherwise two writers each write back what they read and one's change
//! is lost (a used or revoked invite open again, a new one gone). Readers
//! take no lock: a file is replaced whole by a rename, never seen half
//! written.

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
    /// The services the ep may serve once enrolled (absent in invites
    /// made before grants existed).
    #[serde(default)]
    pub services: Option<Vec<String>>,
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
    /// The services its invite granted (absent: enrolled before grants
    /// existed; see `merge_enrolled`).
    #[serde(default)]
    pub services: Option<Vec<String>>,
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
    crate::files::write_file(path, &bytes, 0o600, true)
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

    /// The state's lock, held until the returned file is dropped.
    fn lock(&self) -> Result<std::fs::File> {
        crate::files::lock(&self.dir.join("enrol.lock"))
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
        services: Vec<String>,
    ) -> Result<(String, String)> {
        let id = crate::token::random_hex(8);
        let secret = crate::token::random_hex(16);
        let _lock = self.lock()?;
        let mut invites = self.invites()?;
        let now = now();
        // Forget invites that ended more than a week ago (used, revoked,
        // or expired unused: `--list` shows each for that week).
        invites.retain(|i| i.expires.saturating_add(7 * 86_400) > now);
        invites.push(Invite {
            id: id.clone(),
            ep: ep.to_string(),
            secret_sha256: sha256_hex(&secret),
            expires: now + ttl.as_secs(),
            from,
            services: Some(services),
            state: State::Open,
        });
        self.save_invites(invites)?;
        Ok((id, secret))
    }

    pub fn revoke(&self, id: &str) -> Result<Invite> {
        let _lock = self.lock()?;
        let mut invites = self.invites()?;
        let Some(i) = invites.iter_mut().find(|i| i.id == id) else {
            bail!("no invite {id} (see `ferry hub invite --list`)");
        };
        if i.state == State::Used {
            // Marked revoked, the list would hide that a machine enrolled.
            bail!(
                "invite {id} was already used: ep {} enrolled with it; to cut that machine off, \
                 `ferry hub revoke --dir STATE --ep {}` (the running hub follows crl.pem)",
                i.ep,
                i.ep
            );
        }
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
        usable_in(&invites, id, from)
    }

    /// Checks `secret` against the invite and marks it used, once: under
    /// the lock, so of two simultaneous uses the second finds it used, and
    /// no other writer puts it back open.
    pub fn redeem(&self, id: &str, secret: &str, from: IpAddr) -> Result<Invite, String> {
        let _lock = self.lock().map_err(|e| format!("{e:#}"))?;
        let mut invites = self.invites().map_err(|e| format!("{e:#}"))?;
        let invite = usable_in(&invites, id, from).map_err(|e| e.to_string())?;
        // Digests compared: timing can at most tell a guesser how much of
        // the SHA-256 of its guess matched, which says nothing of the secret.
        if sha256_hex(secret) != invite.secret_sha256 {
            return Err("the invite's secret does not match (the line was changed?)".into());
        }
        let mut retired = Vec::new();
        for i in invites.iter_mut() {
            if i.id == id {
                i.state = State::Used;
            } else if i.ep == invite.ep && i.state == State::Open {
                // One name, one machine: an older invite for it, lost and
                // sent again, must not later take the name from the
                // machine this one enrols.
                i.state = State::Revoked;
                retired.push(i.id.clone());
            }
        }
        self.save_invites(invites).map_err(|e| format!("{e:#}"))?;
        if !retired.is_empty() {
            tracing::info!(
                ep = invite.ep,
                used = id,
                ?retired,
                "the other open invites for this ep are revoked"
            );
        }
        Ok(invite)
    }

    pub fn enrolled(&self) -> Result<EnrolledFile> {
        read_json(&self.enrolled_path())
    }

    /// Records `ep`'s credential; the serial it replaces, if any.
    pub fn record(&self, ep: &str, e: Enrolled) -> Result<Option<String>> {
        let _lock = self.lock()?;
        let mut file = self.enrolled()?;
        let old = file.eps.insert(ep.to_string(), e).map(|o| o.serial);
        write_json(&self.enrolled_path(), &file)?;
        Ok(old)
    }
}

/// The invite `id` among `invites` if `from` may use it now.
fn usable_in(invites: &[Invite], id: &str, from: IpAddr) -> Result<Invite, Unusable> {
    let i = invites
        .iter()
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
    Ok(i.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_is_used_once_and_only_with_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let (id, secret) = s
            .create("home", Duration::from_secs(60), None, vec![])
            .unwrap();
        assert!(s.usable(&id, ip).is_ok());
        assert!(
            s.redeem(&id, "00", ip)
                .unwrap_err()
                .contains("does not match")
        );
        assert_eq!(s.redeem(&id, &secret, ip).unwrap().ep, "home");
        assert_eq!(s.usable(&id, ip).unwrap_err(), Unusable::Used);
        assert_eq!(s.usable("nope", ip).unwrap_err(), Unusable::Unknown);
        let (id2, _) = s.create("home", Duration::ZERO, None, vec![]).unwrap();
        assert_eq!(s.usable(&id2, ip).unwrap_err(), Unusable::Expired);
        let only: crate::config::Allowlist =
            serde_json::from_str(r#"["198.51.100.0/24"]"#).unwrap();
        let (id3, _) = s
            .create("home", Duration::from_secs(60), Some(only), vec![])
            .unwrap();
        assert_eq!(s.usable(&id3, ip).unwrap_err(), Unusable::WrongAddress);
        s.revoke(&id3).unwrap();
        assert_eq!(s.usable(&id3, ip).unwrap_err(), Unusable::Revoked);
    }

    /// Writers at once (threads here, processes in `tests/enrol.rs`) each
    /// change the file under the lock: nothing any of them wrote is lost,
    /// and none leaves a temp file behind.
    #[test]
    fn writers_at_once_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let base = Store::new(dir.path());
        let (used, secret) = base
            .create("used", Duration::from_secs(60), None, vec![])
            .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let s = Store::new(&dir);
                    (0..10)
                        .map(|k| {
                            let (id, _) = s
                                .create(&format!("t{t}k{k}"), Duration::from_secs(60), None, vec![])
                                .unwrap();
                            if k % 2 == 1 {
                                s.revoke(&id).unwrap();
                            }
                            (id, k % 2 == 1)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        base.redeem(&used, &secret, ip).unwrap();
        let made: Vec<(String, bool)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let listed = base.invites().unwrap();
        let state = |id: &str| listed.iter().find(|i| i.id == id).map(|i| i.state);
        assert_eq!(state(&used), Some(State::Used));
        for (id, revoked) in &made {
            let want = if *revoked {
                State::Revoked
            } else {
                State::Open
            };
            assert_eq!(state(id), Some(want), "{id}");
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
