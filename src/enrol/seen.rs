//! The invites as the enrol door last read them. Every connection's first
//! line is looked up, and a stranger can open connections as fast as the
//! network carries them, so the file (up to a week of invites) is parsed
//! again only when it changed, not once per connection. Each write renames
//! a new file over it, so a change shows in its inode, size or time. What
//! this decides is only whether the door goes on to TLS: redeeming reads
//! the file again under its lock.

use super::invites::{Invite, Store, Unusable, usable_in};
use std::{
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

#[derive(Default)]
pub struct Seen {
    last: Mutex<Option<Read>>,
}

struct Read {
    path: PathBuf,
    stamp: Stamp,
    invites: Arc<Vec<Invite>>,
}

/// How old a file's time must be before its stamp is trusted: more than
/// the coarsest file-system clock (whole seconds) could hide.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// (device, inode, size, mtime seconds, mtime nanoseconds)
type Stamp = (u64, u64, u64, i64, i64);

impl Seen {
    /// The invite `id` if `from` may use it now (no cryptography: this is
    /// all a stranger's connection costs), from the file as last read
    /// while it has not changed.
    pub fn usable(&self, dir: &Path, id: &str, from: IpAddr) -> Result<Invite, Unusable> {
        let invites = self.invites(dir).map_err(|e| {
            tracing::warn!("{e:#}");
            Unusable::Unknown
        })?;
        usable_in(&invites, id, from)
    }

    fn invites(&self, dir: &Path) -> anyhow::Result<Arc<Vec<Invite>>> {
        let store = Store::new(dir);
        let path = store.invites_path();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            // None yet: nothing to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Arc::default()),
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let stamp = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        // Written within the file system's time granularity, a second
        // write could leave the same stamp (an inode reused, the same
        // size): such a file is read every time.
        // A time ahead of the clock (the clock stepped back) is settled too:
        // a new write is stamped with the clock's time, not that one.
        let settled = meta.modified().ok().is_some_and(|t| match t.elapsed() {
            Ok(age) => age > SETTLED,
            Err(ahead) => ahead.duration() > SETTLED,
        });
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = last
            .as_ref()
            .filter(|r| settled && r.path == path && r.stamp == stamp)
        {
            return Ok(r.invites.clone());
        }
        // Read after the stamp: a file replaced in between is read newer
        // than its stamp, and read again at the next look.
        // Kept only when read settled: a copy read fresh could match a
        // later rewrite's stamp once that has settled.
        let invites = Arc::new(store.invites()?);
        if settled {
            *last = Some(Read {
                path,
                stamp,
                invites: invites.clone(),
            });
        }
        Ok(invites)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A FIFO in the invites' place (a state folder someone else can
    /// write) is refused at once: each stranger's first line reads the
    /// file on one of the hub's few threads, and opening a FIFO waits
    /// for a writer.
    #[test]
    fn a_fifo_in_the_invites_place_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let (seen, store) = (Seen::default(), Store::new(dir.path()));
        let made = std::process::Command::new("mkfifo")
            .arg(store.invites_path())
            .status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            seen.usable(dir.path(), "x", ip).unwrap_err(),
            Unusable::Unknown
        );
        let e = format!("{:#}", seen.invites(dir.path()).unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
    }

    /// A new invite, a revocation and a use are all seen at the next look;
    /// an unchanged file is not read again.
    #[test]
    fn a_change_is_seen_and_an_unchanged_file_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (seen, store) = (Seen::default(), Store::new(dir.path()));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            seen.usable(dir.path(), "x", ip).unwrap_err(),
            Unusable::Unknown
        );
        let (id, secret) = store
            .create("a", Duration::from_secs(60), None, vec![])
            .unwrap();
        assert!(seen.usable(dir.path(), &id, ip).is_ok());
        // Fresh (here: a moment ahead of now, for the test's pace), it is
        // read each time; settled, only once; far ahead (the clock
        // stepped back since it was written), settled too.
        let f = std::fs::File::options()
            .write(true)
            .open(store.invites_path())
            .unwrap();
        let now = std::time::SystemTime::now();
        f.set_modified(now + Duration::from_millis(1500)).unwrap();
        let first = seen.invites(dir.path()).unwrap();
        assert!(!Arc::ptr_eq(&first, &seen.invites(dir.path()).unwrap()));
        for settled in [now - Duration::from_secs(10), now + Duration::from_secs(60)] {
            f.set_modified(settled).unwrap();
            let first = seen.invites(dir.path()).unwrap();
            assert!(Arc::ptr_eq(&first, &seen.invites(dir.path()).unwrap()));
        }
        store.redeem(&id, &secret, ip, || Ok("k".into())).unwrap();
        let (other, _) = store
            .create("b", Duration::from_secs(60), None, vec![])
            .unwrap();
        store.revoke(&other).unwrap();
        assert_eq!(
            seen.usable(dir.path(), &other, ip).unwrap_err(),
            Unusable::Revoked
        );
        std::fs::remove_file(store.invites_path()).unwrap();
        assert_eq!(
            seen.usable(dir.path(), &id, ip).unwrap_err(),
            Unusable::Unknown
        );
    }
}
