//! When to re-read the configuration: on SIGHUP, and (unless
//! `watch_config = false`) shortly after the file changes, however the
//! editor saved it. The file is polled rather than watched with inotify:
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
            Trigger::FileChanged => "the config file changed",
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
    let bytes = std::fs::read(path).ok()?;
    Some(
        ring::digest::digest(&ring::digest::SHA256, &bytes)
            .as_ref()
            .to_vec(),
    )
}

/// Reload requests until `stop`: SIGHUP always, file changes if `watch`.
pub fn triggers(path: PathBuf, watch: bool, stop: CancellationToken) -> mpsc::Receiver<Trigger> {
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
        let (seen, content) = (stamp(&path), digest(&path));
        tokio::spawn(poll(path, seen, content, tx, stop));
    }
    rx
}

async fn poll(
    path: PathBuf,
    mut seen: Option<Stamp>,
    mut content: Option<Vec<u8>>,
    tx: mpsc::Sender<Trigger>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => return,
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        // Still being written? Wait until two looks agree.
        tokio::time::sleep(POLL / 5).await;
        if stamp(&path) != now {
            continue;
        }
        seen = now;
        let bytes = digest(&path);
        if bytes == content || bytes.is_none() {
            // Touched, or gone for a moment (between an unlink and a
            // rename): nothing to read yet.
            continue;
        }
        content = bytes;
        if tx.send(Trigger::FileChanged).await.is_err() {
            return;
        }
    }
}
