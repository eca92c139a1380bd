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
    /// Once used: when, and the SHA-256 of the key it certified, so the
    /// same machine may ask again while `ASK_AGAIN` lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<Use>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Use {
    /// Unix seconds.
    pub at: u64,
    pub key_sha256: String,
    /// Times its machine asked again.
    #[serde(default)]
    pub again: u32,
    /// No more asking again: the operator acted on the name (a new
    /// invite for it, `ferry hub revoke`, `--revoke` of this one) or a
    /// newer invite for it was used.
    #[serde(default)]
    pub ended: bool,
}

/// How long after an invite's use the machine that used it may ask again
/// with the same key and secret: the hub's answer (the only copy of the
/// token) can be lost on the way, and the invite is spent by then. Only
/// the holder of that key can ask, so no one else can take the name with
/// the line meanwhile. `ferry ep join` asks again until 30 s before this
/// ends (`ep::join::door::ASKING`), and a join run again after one stopped
/// asks with the key it left (`ep::join::earlier`).
pub const ASK_AGAIN: u64 = 180;
/// Times it may ask again past the secret: each costs the hub a signature
/// and an Argon2 hash (a join's asks the door turns away before, a hub
/// down or busy, cost nothing and are not counted).
const MAX_AGAIN: u32 = 5;

impl Use {
    /// Whether its machine may still ask again at `now`. A clock stepped
    /// back before the use ends it rather than stretching it.
    fn open(&self, now: u64) -> bool {
        !self.ended
            && self.again < MAX_AGAIN
            && self.at <= now
            && now < self.at.saturating_add(ASK_AGAIN)
    }
}

/// The SHA-256 an invite's use records of the key it certified (its
/// SubjectPublicKeyInfo, DER).
pub fn key_sha256(spki_der: &[u8]) -> String {
    super::hex(ring::digest::digest(&ring::digest::SHA256, spki_der).as_ref())
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
    /// The invite it enrolled with (absent in records made before the
    /// hub kept it): a machine asking again takes back only its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
    /// Its certificate revoked by `ferry hub revoke`: its token, address
    /// and grants count no more (`merge_enrolled`). The record stays, so
    /// the name is still an enrolled ep's: invited again, not taken for
    /// one hub.toml names.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EnrolledFile {
    pub eps: BTreeMap<String, Enrolled>,
}

/// What a revoked record keeps for its token hash.
const REVOKED_HASH: &str = "revoked by ferry hub revoke";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sha256_hex(s: &str) -> String {
    super::hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

/// Bytes an enrolment file may have: invites and enrolments are made by
/// the operator, a few hundred bytes each.
const MAX_BYTES: u64 = 16 << 20;

/// The file at `path`; none there is the empty state. The enrol door
/// reads the invites for each stranger's first line, so a FIFO or a
/// device in the file's place is refused, not waited on.
fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match crate::files::read_regular(path, MAX_BYTES) {
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

    pub(super) fn invites_path(&self) -> PathBuf {
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
        // A new invite for the name means a new machine: the one that used
        // an earlier invite may no longer ask again and take it back.
        end_asking(&mut invites, ep);
        invites.push(Invite {
            id: id.clone(),
            ep: ep.to_string(),
            secret_sha256: sha256_hex(&secret),
            expires: now + ttl.as_secs(),
            from,
            services: Some(services),
            state: State::Open,
            used: None,
        });
        self.save_invites(invites)?;
        Ok((id, secret))
    }

    /// Revokes the open invite `id`. A used one stays used (marked
    /// revoked, the list would hide that a machine enrolled), but its
    /// machine may no longer ask again with it: true then.
    pub fn revoke(&self, id: &str) -> Result<(Invite, bool)> {
        let _lock = self.lock()?;
        let mut invites = self.invites()?;
        let Some(i) = invites.iter_mut().find(|i| i.id == id) else {
            bail!("no invite {id} (see `ferry hub invite --list`)");
        };
        let now = now();
        let ended = match (i.state, i.used.as_mut()) {
            (State::Used, Some(u)) if u.open(now) => {
                u.ended = true;
                true
            }
            (State::Used, _) => bail!(
                "invite {id} was already used: ep {} enrolled with it; to cut that machine off, \
                 `ferry hub revoke --dir STATE --ep {}` (the running hub follows crl.pem)",
                i.ep,
                i.ep
            ),
            _ => {
                i.state = State::Revoked;
                false
            }
        };
        let out = i.clone();
        self.save_invites(invites)?;
        Ok((out, ended))
    }

    /// `ep`'s enrolled serial, for `ferry hub revoke --ep`, and the end
    /// of asking again with the invites for it: both under the lock, so
    /// an ask again recording meanwhile is either refused or has its
    /// serial read here.
    pub fn revoking(&self, ep: &str) -> Result<Option<String>> {
        let file = self.ending_asking(|_| Some(ep.to_string()))?;
        Ok(file.eps.get(ep).map(|e| e.serial.clone()))
    }

    /// The same for `ferry hub revoke --serial`: the enrolled ep whose
    /// certificate it is, if any, may no longer ask again either.
    pub fn revoking_serial(&self, serial: &str) -> Result<Option<String>> {
        let Ok(want) = crate::certgen::normal_serial(serial) else {
            return Ok(None);
        };
        let of = |f: &EnrolledFile| {
            f.eps
                .iter()
                .find(|(_, e)| {
                    crate::certgen::normal_serial(&e.serial).ok().as_ref() == Some(&want)
                })
                .map(|(name, _)| name.clone())
        };
        let file = self.ending_asking(of)?;
        Ok(of(&file))
    }

    /// Ends asking again with every used invite for the ep `of` picks
    /// from the enrolled file, under the lock; that file.
    fn ending_asking(
        &self,
        of: impl FnOnce(&EnrolledFile) -> Option<String>,
    ) -> Result<EnrolledFile> {
        if !self.enrolled_path().exists() && !self.invites_path().exists() {
            // A hub that never enrolled: no lock file left behind.
            return Ok(EnrolledFile::default());
        }
        let _lock = self.lock()?;
        let file = self.enrolled()?;
        let Some(ep) = of(&file) else {
            return Ok(file);
        };
        let mut invites = self.invites()?;
        if end_asking(&mut invites, &ep) {
            self.save_invites(invites)?;
        }
        Ok(file)
    }

    /// The invite `id` if `from` may use it now, from the file as it is
    /// (the door looks through `enrol::seen`).
    #[cfg(test)]
    pub fn usable(&self, id: &str, from: IpAddr) -> Result<Invite, Unusable> {
        let invites = self.invites().map_err(|e| {
            tracing::warn!("{e:#}");
            Unusable::Unknown
        })?;
        usable_in(&invites, id, from)
    }

    /// Checks `secret` against the invite and marks it used by the key
    /// `key` names (its `key_sha256`, read only once the secret matched),
    /// once: under the lock, so of two simultaneous uses the second finds
    /// it used, and no other writer puts it back open. The same key asking
    /// again while `Use::open` gets it again (true: asked again).
    pub fn redeem(
        &self,
        id: &str,
        secret: &str,
        from: IpAddr,
        key: impl FnOnce() -> Result<String, String>,
    ) -> Result<(Invite, bool), String> {
        let _lock = self.lock().map_err(hidden)?;
        let mut invites = self.invites().map_err(hidden)?;
        let invite = usable_in(&invites, id, from).map_err(|e| e.to_string())?;
        // Digests compared: timing can at most tell a guesser how much of
        // the SHA-256 of its guess matched, which says nothing of the secret.
        if sha256_hex(secret) != invite.secret_sha256 {
            return Err("the invite's secret does not match (the line was changed?)".into());
        }
        let key = key()?;
        if let Some(used) = &invite.used {
            // `usable_in` let it through only while `Use::open`. Counted,
            // and nothing else changed: whether it may take the name back
            // is decided when it is recorded (`AskedAgain::check`).
            if used.key_sha256 != key {
                return Err(Unusable::Used.to_string());
            }
            for i in invites.iter_mut().filter(|i| i.id == id) {
                i.used.iter_mut().for_each(|u| u.again += 1);
            }
            self.save_invites(invites).map_err(hidden)?;
            return Ok((invite, true));
        }
        // The name is this machine's now: one that used an earlier invite
        // may no longer ask again.
        end_asking(&mut invites, &invite.ep);
        let mut retired = Vec::new();
        for i in invites.iter_mut() {
            if i.id == id {
                i.state = State::Used;
                i.used = Some(Use {
                    at: now(),
                    key_sha256: key.clone(),
                    again: 0,
                    ended: false,
                });
            } else if i.ep == invite.ep && i.state == State::Open {
                // One name, one machine: an older invite for it, lost and
                // sent again, must not later take the name from the
                // machine this one enrols.
                i.state = State::Revoked;
                retired.push(i.id.clone());
            }
        }
        self.save_invites(invites).map_err(hidden)?;
        if !retired.is_empty() {
            tracing::info!(
                ep = invite.ep,
                used = id,
                ?retired,
                "the other open invites for this ep are revoked"
            );
        }
        Ok((invite, false))
    }

    pub fn enrolled(&self) -> Result<EnrolledFile> {
        read_json(&self.enrolled_path())
    }

    /// Marks `ep`'s record revoked once its certificate `serial` is: its
    /// token, address and grants count no more, so a hub that follows no
    /// revocation list (or a list that fails to load) still shuts it out,
    /// as it reloads on the change. Not a newer enrolment's record of the
    /// name (asked between the revocation and this): whether it was
    /// marked now.
    pub fn mark_revoked(&self, ep: &str, serial: &str) -> Result<bool> {
        let want = crate::certgen::normal_serial(serial)?;
        let _lock = self.lock()?;
        let mut file = self.enrolled()?;
        let Some(e) = file.eps.get_mut(ep) else {
            return Ok(false);
        };
        if e.revoked || crate::certgen::normal_serial(&e.serial).ok() != Some(want) {
            return Ok(false);
        }
        e.revoked = true;
        // Not a hash: an older ferry, which knows no `revoked`, refuses
        // the file rather than let the token log in again.
        e.token_hash = REVOKED_HASH.to_string();
        write_json(&self.enrolled_path(), &file)?;
        Ok(true)
    }

    /// Records `ep`'s credential; the serial it replaces, if any. An
    /// enrolment asked again is checked here, under the lock, against
    /// what happened since its invite's use (`AskedAgain::check`).
    pub fn record(
        &self,
        ep: &str,
        e: Enrolled,
        again: Option<AskedAgain<'_>>,
    ) -> Result<Option<String>> {
        let _lock = self.lock()?;
        let mut file = self.enrolled()?;
        if let Some(a) = again {
            a.check(&self.invites()?, file.eps.get(ep))?;
        }
        let old = file.eps.insert(ep.to_string(), e).map(|o| o.serial);
        write_json(&self.enrolled_path(), &file)?;
        Ok(old)
    }
}

/// An ask again refused at recording.
#[derive(Debug, thiserror::Error)]
#[error(
    "this invite was already used, and what it enrolled has since been revoked or replaced; \
     ask for a new one"
)]
pub struct NotItsOwn;

/// An enrolment asked again with invite `id`, first used at `used_at`.
pub struct AskedAgain<'a> {
    pub id: &'a str,
    pub used_at: u64,
    /// Whether a serial is revoked now.
    pub revoked: &'a dyn Fn(&str) -> bool,
}

impl AskedAgain<'_> {
    /// It may take back only what its invite's first use made, or make
    /// what that use never recorded (the hub stopped or failed halfway):
    /// not once asking again ended (`Use::ended`), not over a revoked
    /// certificate, not over a newer enrolment of the name.
    fn check(&self, invites: &[Invite], record: Option<&Enrolled>) -> Result<(), NotItsOwn> {
        let ended = invites
            .iter()
            .find(|i| i.id == self.id)
            .and_then(|i| i.used.as_ref())
            .is_none_or(|u| u.ended);
        match record {
            _ if ended => Err(NotItsOwn),
            Some(r) if r.invite.as_deref() == Some(self.id) => {
                let serial = crate::certgen::normal_serial(&r.serial);
                let serial = serial.as_deref().unwrap_or(&r.serial);
                if (self.revoked)(serial) {
                    Err(NotItsOwn)
                } else {
                    Ok(())
                }
            }
            Some(r) if r.enrolled >= self.used_at => Err(NotItsOwn),
            _ => Ok(()),
        }
    }
}

/// Ends asking again with every used invite for `ep`; whether any was
/// still open to it.
fn end_asking(invites: &mut [Invite], ep: &str) -> bool {
    let mut ended = false;
    for u in invites
        .iter_mut()
        .filter(|i| i.ep == ep)
        .filter_map(|i| i.used.as_mut())
        .filter(|u| !u.ended)
    {
        u.ended = true;
        ended = true;
    }
    ended
}

/// A failure of the hub's own files, told to one not yet known to hold
/// the secret: the detail (paths) goes to the hub's log only.
pub fn hidden(e: anyhow::Error) -> String {
    tracing::warn!("enrolment state: {e:#}");
    "the hub could not read or write its enrolment state (its log says why)".into()
}

/// The invite `id` among `invites` if `from` may use it now.
pub(super) fn usable_in(invites: &[Invite], id: &str, from: IpAddr) -> Result<Invite, Unusable> {
    let i = invites
        .iter()
        .find(|i| i.id == id)
        .ok_or(Unusable::Unknown)?;
    let now = now();
    match i.state {
        // Its machine may ask again for a while, even past the invite's
        // expiry: it is the same enrolment (`redeem` checks the key).
        State::Used if i.used.as_ref().is_some_and(|u| u.open(now)) => {}
        State::Used => return Err(Unusable::Used),
        State::Revoked => return Err(Unusable::Revoked),
        State::Open if i.expires <= now => return Err(Unusable::Expired),
        State::Open => {}
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
        let k1 = || Ok("k1".to_string());
        assert!(s.usable(&id, ip).is_ok());
        assert!(
            s.redeem(&id, "00", ip, k1)
                .unwrap_err()
                .contains("does not match")
        );
        let (invite, again) = s.redeem(&id, &secret, ip, k1).unwrap();
        assert_eq!((invite.ep.as_str(), again), ("home", false));
        // Its machine may ask again with the same key; nobody else.
        assert!(s.usable(&id, ip).is_ok());
        assert!(s.redeem(&id, &secret, ip, k1).unwrap().1);
        let k2 = || Ok("k2".to_string());
        let used = s.redeem(&id, &secret, ip, k2).unwrap_err();
        assert!(used.contains("already used"), "{used}");
        let wrong = s.redeem(&id, "00", ip, k1).unwrap_err();
        assert!(wrong.contains("does not match"), "{wrong}");
        let mut file = read_json::<InviteFile>(&s.invites_path()).unwrap();
        file.invites[0].used.as_mut().unwrap().at -= ASK_AGAIN;
        write_json(&s.invites_path(), &file).unwrap();
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

    /// Asking again ends after `MAX_AGAIN` asks, at `--revoke`, and when a
    /// new invite for the name is made.
    #[test]
    fn asking_again_ends() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let k = |name: &'static str| move || Ok(name.to_string());
        let make = || {
            s.create("cabin", Duration::from_secs(60), None, vec![])
                .unwrap()
        };
        let (id, secret) = make();
        s.redeem(&id, &secret, ip, k("a")).unwrap();
        for _ in 0..MAX_AGAIN {
            assert!(s.redeem(&id, &secret, ip, k("a")).unwrap().1);
        }
        assert_eq!(s.usable(&id, ip).unwrap_err(), Unusable::Used);
        let (id, secret) = make();
        s.redeem(&id, &secret, ip, k("b")).unwrap();
        assert!(s.revoke(&id).unwrap().1, "asking again ended");
        assert_eq!(s.usable(&id, ip).unwrap_err(), Unusable::Used);
        let twice = s.revoke(&id).unwrap_err().to_string();
        assert!(twice.contains("already used"), "{twice}");
        let (older, older_secret) = make();
        s.redeem(&older, &older_secret, ip, k("c")).unwrap();
        assert!(s.usable(&older, ip).is_ok());
        let (newer, newer_secret) = make();
        assert_eq!(
            s.usable(&older, ip).unwrap_err(),
            Unusable::Used,
            "ended by a new invite"
        );
        s.redeem(&newer, &newer_secret, ip, k("d")).unwrap();
        assert_eq!(s.usable(&older, ip).unwrap_err(), Unusable::Used);
        assert!(s.usable(&newer, ip).is_ok());
    }

    /// What an ask again may take back: its own record (unless revoked),
    /// or the name as it was before its use when that use never got
    /// recorded; not a newer enrolment, not once ended.
    #[test]
    fn asking_again_takes_back_only_its_own() {
        let record = |invite: &str, enrolled: u64| Enrolled {
            token_hash: String::new(),
            serial: format!("s-{invite}"),
            address: "203.0.113.9".parse().unwrap(),
            enrolled,
            services: None,
            invite: Some(invite.into()),
            revoked: false,
        };
        let used = |ended: bool| Invite {
            id: "a".into(),
            ep: "cabin".into(),
            secret_sha256: String::new(),
            expires: 0,
            from: None,
            services: None,
            state: State::Used,
            used: Some(Use {
                at: 100,
                key_sha256: "k".into(),
                again: 1,
                ended,
            }),
        };
        fn none(_: &str) -> bool {
            false
        }
        fn all(_: &str) -> bool {
            true
        }
        fn asked(revoked: &dyn Fn(&str) -> bool) -> AskedAgain<'_> {
            AskedAgain {
                id: "a",
                used_at: 100,
                revoked,
            }
        }
        let open = [used(false)];
        assert!(asked(&none).check(&open, Some(&record("a", 101))).is_ok());
        assert!(asked(&all).check(&open, Some(&record("a", 101))).is_err());
        assert!(asked(&none).check(&open, None).is_ok(), "never recorded");
        assert!(asked(&none).check(&open, Some(&record("old", 50))).is_ok());
        assert!(asked(&none).check(&open, Some(&record("b", 120))).is_err());
        assert!(asked(&none).check(&[used(true)], None).is_err());
        assert!(asked(&none).check(&[], None).is_err(), "no such invite");
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
        base.redeem(&used, &secret, ip, || Ok("k".into())).unwrap();
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
