//! Writing a file whole, with its mode from the start: keys, tokens,
//! certificates, enrolment state and ready files are all written through
//! here, so none is ever briefly world-readable or seen half-written.

use anyhow::{Context, Result, bail};
use ring::rand::{SecureRandom, SystemRandom};
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// How long a writer waits for another to finish. Each holds a lock for
/// one read and one write, milliseconds; only a stuck process holds it
/// longer, and then saying so beats waiting for ever.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The file lock at `path` (made mode 0600 if missing), held until the
/// returned file is dropped: between processes (the hub, `ferry hub
/// invite`, `ferry hub ban`) and within one. For a read, a change and a
/// write that must not interleave with another writer's.
pub(crate) fn lock(path: &Path) -> Result<fs::File> {
    // Made here (O_EXCL: never through a link someone planted) and then
    // given to the folder's owner; one that exists is only opened.
    let mut made = fs::OpenOptions::new();
    made.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut made, 0o600);
    // An existing lock is opened as itself only: not through a link (a
    // dangling one would make root create its target), not a FIFO or a
    // device (checked below), and never created here.
    let mut opts = fs::OpenOptions::new();
    opts.read(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let opened = match made.open(path) {
        Ok(f) => {
            owned_like_folder(&f, path);
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => opts.open(path),
        Err(e) => Err(e),
    };
    let file = opened.map_err(|e| {
        // Made by another user (a command run as root beside a hub running
        // as `ferry`): say how to run it, not only that it failed.
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "; run ferry's commands as the user the hub runs as (`sudo -u ferry ferry ...`)"
        } else if e.raw_os_error() == Some(libc::ELOOP) {
            " (it is a link: a lock must be a file of its own; move the link away)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("cannot open the lock {}{hint}", path.display()))
    })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        bail!("{} is not a regular file; move it away", path.display());
    }
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(fs::TryLockError::WouldBlock) => bail!(
                "{} is still held by another ferry process after {LOCK_WAIT:?} \
                 (a stuck `ferry hub` command?); try again",
                path.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
}

/// A file root just made (never one that was there: a link or a file the
/// folder's owner planted must not be handed over) in a folder another
/// user owns (`sudo ferry hub ban` or `invite` beside a hub running as
/// `ferry`) goes to the folder's owner: otherwise the service could no
/// longer read the list or take the lock, and an invite would be
/// "unknown" to the hub. Anyone else's files are theirs already.
fn owned_like_folder(file: &fs::File, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if file.metadata().is_ok_and(|m| m.uid() == 0)
            && let Some(dir) = path.parent()
            && let Ok(d) = fs::metadata(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
            && d.uid() != 0
        {
            let _ = std::os::unix::fs::fchown(file, Some(d.uid()), Some(d.gid()));
        }
    }
    #[cfg(not(unix))]
    let _ = (file, path);
}

/// Writes a file with `mode` from its creation (a key is never briefly
/// world-readable). Refuses to replace an existing file unless `force`.
/// The new content goes to a temp file of this writer's own and is renamed
/// over `path`, so a reader sees the old file or the new one, whole, and
/// writers at the same time (the hub and `ferry hub invite`, two
/// enrolments) never write into or rename each other's temp file.
pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists; pass --force to replace it (a replaced ep certificate is revoked in crl.pem)",
            path.display()
        );
    }
    let tmp = temp_beside(path);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot write {} (as {})", path.display(), tmp.display()))?;
    // The mode as asked, whatever the umask: a file meant for a reader
    // running as another user (the ban list) must stay readable.
    owned_like_folder(&f, path);
    #[cfg(unix)]
    let set = f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode));
    #[cfg(not(unix))]
    let set = Ok::<(), std::io::Error>(());
    let written = set
        .and_then(|()| f.write_all(data))
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    // The rename itself made durable, so a ban or a revocation written
    // just before a power cut is not rolled back with the folder (some
    // file systems cannot sync a folder: nothing more to do there).
    if written.is_ok()
        && let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
    written
}

/// A temp file name in `path`'s folder (so the rename stays on one file
/// system) that no other writer picks: the process, a counter within it,
/// and a random part for a process id reused after a crash.
fn temp_beside(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{}.{n}.{}.tmp",
        std::process::id(),
        random_hex(4)
    ))
}

/// `n` random bytes, hex. (Not `token::random_hex`: this floor stands
/// below `token`.)
fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a file a configuration names may hold (a certificate, a CA, a
/// revocation list, a token hash): far more than any does. A device or a
/// pipe named by mistake is refused at once, not read for ever.
pub(crate) const MAX_NAMED: u64 = 16 << 20;

/// The bytes of the regular file at `path`, at most `max` of them: a FIFO
/// or a device put in a state file's place must not hang the reader (it
/// is opened without blocking and refused), nor flood it.
pub(crate) fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    // Looked at before it is opened too: opening a device runs its
    // driver, whatever is done with it after.
    if !fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut opts = fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
    let f = opts.open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > max {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the {max} allowed",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "more than the {max} bytes allowed"
        )));
    }
    Ok(bytes)
}
