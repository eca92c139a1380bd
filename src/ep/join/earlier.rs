//! The key an earlier join of the same line left. A join stopped before
//! the hub's answer (killed, or cut off) leaves its staging folder, and
//! the hub takes the same key with the same secret again for a while
//! after it used the invite (`invites::ASK_AGAIN`): running the command
//! again asks with that key, where a new one would find the invite used.
//!
//! A staging folder says which line its key was made for in `LINE_FILE`
//! (a hash: the line holds the invite's secret), and when its request
//! first went out. Its join holds a lock on that file while it runs, so a
//! second join of the line at the same time never takes the first one's
//! folder; and only files this user alone can reach are read, through the
//! descriptors checked (a folder planted in a shared DIR would hand its
//! maker the ep's key).

use crate::enrol::Line;
use std::{
    fs,
    io::{Read, Seek, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// In a staging folder: the line's hash, then `sent UNIX-SECONDS` once a
/// request went out.
const LINE_FILE: &str = "line.sha256";

/// The most read of a line file or a key: both are far smaller.
const MOST: u64 = 16 * 1024;

/// A staging folder's record of its line, locked while its join runs.
pub(super) struct Mark {
    file: fs::File,
    path: PathBuf,
    /// When a request with the folder's key first went out, if one did.
    pub sent: Option<SystemTime>,
}

impl Mark {
    /// The record of `line` in the new staging folder `dir`, locked.
    pub fn make(dir: &Path, line: &Line) -> std::io::Result<Mark> {
        let path = dir.join(LINE_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.try_lock().map_err(std::io::Error::other)?;
        file.write_all(format!("{}\n", hash(line)).as_bytes())?;
        Ok(Mark {
            file,
            path,
            sent: None,
        })
    }

    /// Records that a request went out now (the first time only): a join
    /// run again counts the hub's window from it.
    pub fn sent_now(&mut self) {
        if self.sent.is_some() {
            return;
        }
        let now = SystemTime::now();
        self.sent = Some(now);
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let wrote = self
            .file
            .seek(std::io::SeekFrom::End(0))
            .and_then(|_| writeln!(self.file, "sent {}", secs.as_secs()))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = wrote {
            eprintln!(
                "cannot note in {} that the request went out ({e}); a join run again would not know",
                self.path.display()
            );
        }
    }

    /// The folder no longer offers its key (the hub's answer came): a join
    /// run again must not take it.
    pub fn retire(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// An earlier join's folder, its key and its record, now locked by this
/// join.
pub(super) struct Found {
    pub path: PathBuf,
    pub key: rcgen::KeyPair,
    pub mark: Mark,
}

/// The staging folder an earlier join of `line` left in `dir` without the
/// hub's answer, if any: one of this user's only, not in use by a join
/// still running, holding nothing of the hub's (a folder kept with a token
/// after a failed write is the user's to move by hand).
pub(super) fn find(dir: &Path, line: &Line) -> Option<Found> {
    let want = hash(line);
    let hubs = ["ep.toml", "certs/ep.pem", "certs/ca.pem", "certs/token"];
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(".ferry-join.")
        {
            return None;
        }
        let path = entry.path();
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && private(&m)) {
            return None;
        }
        let (file, text) = open_private(&path.join(LINE_FILE), true)?;
        let mut lines = text.lines();
        if lines.next() != Some(want.as_str()) {
            return None;
        }
        if hubs
            .iter()
            .any(|f| fs::symlink_metadata(path.join(f)).is_ok())
        {
            return None;
        }
        let sent = lines
            .find_map(|l| l.strip_prefix("sent ")?.parse().ok())
            .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)));
        let (_, key) = open_private(&path.join("certs/ep.key"), false)?;
        let key = rcgen::KeyPair::from_pem(&key).ok()?;
        let mark = Mark {
            file,
            path: path.join(LINE_FILE),
            sent,
        };
        Some(Found { path, key, mark })
    })
}

/// Owned by this user, and no one else may look.
fn private(m: &fs::Metadata) -> bool {
    m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o077 == 0
}

/// The file at `path` and its text, if it is a private regular file of
/// this user's (checked on the descriptor, never through a link, a FIFO
/// or a device) of at most `MOST` bytes; with `lock`, locked first (None
/// if a running join holds it).
fn open_private(path: &Path, lock: bool) -> Option<(fs::File, String)> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(lock)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || !private(&meta) || meta.len() > MOST {
        return None;
    }
    if lock {
        file.try_lock().ok()?;
    }
    let mut text = String::new();
    (&mut file).take(MOST).read_to_string(&mut text).ok()?;
    Some((file, text))
}

/// What a folder records of its line: the hash, not the line.
fn hash(line: &Line) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, line.to_string().as_bytes());
    crate::enrol::hex(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    fn line(secret_end: char) -> Line {
        let secret = format!("{}{secret_end}", "5".repeat(31));
        let text = format!(
            "ferry1:hub.example:7000/{}/{}.{secret}",
            "c".repeat(32),
            "1".repeat(16)
        );
        Line::parse(&text).unwrap()
    }

    /// A folder made as a join makes it, its lock released as a killed
    /// join's is.
    fn left_by_a_join(dir: &Path, line: &Line) -> (PathBuf, rcgen::KeyPair) {
        let path = dir.join(".ferry-join.1.ab");
        fs::DirBuilder::new().mode(0o700).create(&path).unwrap();
        fs::create_dir(path.join("certs")).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = key.serialize_pem();
        crate::files::write_file(&path.join("certs/ep.key"), pem.as_bytes(), 0o600, false).unwrap();
        let mut mark = Mark::make(&path, line).unwrap();
        mark.sent_now();
        (path, key)
    }

    /// Only a private folder and key of this user's, of the same line, not
    /// in use and without the hub's answer, is asked with.
    #[test]
    fn only_a_private_folder_without_the_hubs_answer_is_asked_with() {
        let home = tempfile::tempdir().unwrap();
        let (line, other) = (line('5'), line('6'));
        let (path, key) = left_by_a_join(home.path(), &line);
        let found = find(home.path(), &line).unwrap();
        assert_eq!(found.path, path);
        assert_eq!(found.key.serialize_der(), key.serialize_der());
        assert!(found.mark.sent.is_some(), "the earlier request is known");
        assert!(
            find(home.path(), &line).is_none(),
            "a running join holds it"
        );
        drop(found);
        assert!(find(home.path(), &other).is_none(), "another line");
        let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m));
        mode(&path, 0o755).unwrap();
        assert!(find(home.path(), &line).is_none(), "others may look in");
        mode(&path, 0o700).unwrap();
        mode(&path.join("certs/ep.key"), 0o644).unwrap();
        assert!(
            find(home.path(), &line).is_none(),
            "others may read the key"
        );
        mode(&path.join("certs/ep.key"), 0o600).unwrap();
        assert!(find(home.path(), &line).is_some());
        fs::write(path.join("certs/ep.pem"), "c").unwrap();
        assert!(
            find(home.path(), &line).is_none(),
            "the hub's answer is there"
        );
    }

    /// A line file that is a link (to a device, a FIFO) is never opened
    /// through it.
    #[test]
    fn a_linked_line_file_is_not_followed() {
        let home = tempfile::tempdir().unwrap();
        let line = line('5');
        let (path, _) = left_by_a_join(home.path(), &line);
        let real = home.path().join("real");
        fs::rename(path.join(LINE_FILE), &real).unwrap();
        std::os::unix::fs::symlink(&real, path.join(LINE_FILE)).unwrap();
        assert!(find(home.path(), &line).is_none());
    }
}
