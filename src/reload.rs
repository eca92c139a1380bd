//! When to re-read the configuration: on SIGHUP, and (unless
//! `watch_config = false`) shortly after the file, or a file it names
//! (TLS files, token hash files, enrolled.json), changes, however it was
//! saved. The file is polled rather than watched with inotify:
//! a poll sees a write in place, a rename over the file and a symlink swap
//! alike (the path is followed each time), and works in containers where
//! inotify events on bind mounts never arrive.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the file is looked at.
const POLL: Duration = Duration::from_millis(500);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChanged,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChanged => "a configuration file changed",
        }
    }
}

/// What identifies a version of the file: the file the path leads to now
/// (device, inode: a rename or symlink swap changes them), its size and
/// modification time, and a hash of its bytes (a `touch` changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_ns: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_ns: m.mtime_nsec(),
    })
}

fn digest(path: &Path) -> Option<Vec<u8>> {
    let bytes = crate::files::read_regular(path, crate::files::MAX_NAMED).ok()?;
    Some(
        ring::digest::digest(&ring::digest::SHA256, &bytes)
            .as_ref()
            .to_vec(),
    )
}

/// The files to watch, asked each round (a reload may name others).
pub type Files = Box<dyn Fn() -> Vec<PathBuf> + Send + Sync>;

/// The files the last reload named but could not use (one not there yet:
/// a `tls.crl` named before `ferry hub revoke` writes it, a token file
/// deployed after the config). They are followed too, so the reload is
/// tried again once they change; nothing else would. Empty after a reload
/// that took.
#[derive(Default)]
pub struct RefusedFollows(std::sync::Mutex<Vec<PathBuf>>);

impl RefusedFollows {
    /// Remembers what the last reload named: kept only if it was refused.
    pub fn set<T, E>(&self, named: Vec<PathBuf>, outcome: &Result<T, E>) {
        let refused = if outcome.is_err() { named } else { Vec::new() };
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = refused;
    }

    /// Forgets them (the reload did not get as far as reading).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// `running` (the files of the settings in use) and the refused ones.
    pub fn with(&self, mut running: Vec<PathBuf>) -> Vec<PathBuf> {
        let refused = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for f in refused.iter() {
            if !running.contains(f) {
                running.push(f.clone());
            }
        }
        running
    }
}

/// Reload requests until `stop`: SIGHUP always, changes to `files` if
/// `watch`.
pub fn triggers(files: Files, watch: bool, stop: CancellationToken) -> mpsc::Receiver<Trigger> {
    let (tx, rx) = mpsc::channel(4);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let (tx, stop) = (tx.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(()) = hup.recv() => {
                            if tx.send(Trigger::Signal).await.is_err() {
                                return;
                            }
                        }
                        _ = stop.cancelled() => return,
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP ({e}); reload by saving the file"),
    }
    if watch {
        // The first look is taken now, not when the task first runs: a
        // save landing between the two would otherwise become the baseline
        // and never be loaded.
        let seen: Looks = files()
            .into_iter()
            .map(|p| {
                let look = (stamp(&p), digest(&p));
                (p, look)
            })
            .collect();
        tokio::spawn(poll(files, seen, tx, stop));
    }
    rx
}

/// Each file's last look: where it led, and its bytes' hash.
type Looks = std::collections::HashMap<PathBuf, (Option<Stamp>, Option<Vec<u8>>)>;

async fn poll(files: Files, mut seen: Looks, tx: mpsc::Sender<Trigger>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => return,
        }
        let now = files();
        // A file named since the last look counts as new if it is there:
        // one a refused reload named (not there yet: a `tls.crl` before
        // `ferry hub revoke` writes it) may have been written since, and
        // one a reload read may have changed since it read it. At worst a
        // reload that finds nothing changed.
        seen.retain(|p, _| now.contains(p));
        for p in &now {
            seen.entry(p.clone()).or_insert((None, None));
        }
        let mut changed = false;
        for p in &now {
            changed |= looked_again(p, seen.get_mut(p).expect("entry made above")).await;
        }
        if changed && tx.send(Trigger::FileChanged).await.is_err() {
            return;
        }
    }
}

/// Whether `path` holds new bytes since `last` (which is updated).
async fn looked_again(path: &Path, last: &mut (Option<Stamp>, Option<Vec<u8>>)) -> bool {
    let now = stamp(path);
    if now == last.0 {
        return false;
    }
    // Still being written? Wait until two looks agree.
    tokio::time::sleep(POLL / 5).await;
    if stamp(path) != now {
        return false;
    }
    last.0 = now;
    let bytes = digest(path);
    if bytes == last.1 || bytes.is_none() {
        // Touched, or gone for a moment (between an unlink and a
        // rename): nothing to read yet.
        return false;
    }
    last.1 = bytes;
    true
}
