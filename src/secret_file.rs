//! Files that hold a secret: a TLS private key, the CA key, an ep's token.
//! Every one of them is read through here, and refused if anyone but its
//! owner may open it: on a shared host a group- or world-readable CA key is
//! a CA every local user holds (a hub certificate of their own, every ep's
//! token read off the wire), so ferry stops and names the `chmod` that fixes
//! it, at `check`, at start and on reload alike.
//!
//! Token *hashes* (`token_hash_file`, `admin.token_hash_file`) are not read
//! here: an Argon2id hash of a 256-bit random token gives nobody a login.

use anyhow::{Context, Result, bail};
use std::{fs::File, io::Read, path::Path};

/// Secret files are a key or a token, a few KiB at most; a bigger one is a
/// wrong path (a log, a device), read no further.
const MAX_LEN: u64 = 1 << 20;

/// The contents of `path`, a secret called `what` in errors ("private key
/// file", "CA key", "token_file"). The mode is checked on the file as
/// opened, so the file checked is the file read.
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    let file = open(path, what)?;
    let mut bytes = Vec::new();
    file.take(MAX_LEN + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if bytes.len() as u64 > MAX_LEN {
        bail!(
            "{what} {} is over {} KiB: not a key or a token; check the path",
            path.display(),
            MAX_LEN / 1024
        );
    }
    Ok(bytes)
}

/// Checks that `path` could be read by `read`, for a file the running
/// program reads later (the CA key that signs enrolled eps).
pub fn check(path: &Path, what: &str) -> Result<()> {
    open(path, what).map(drop)
}

/// What to do about a file another user owns, for an error that says so.
pub fn denied_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (another user's file: run ferry as the user the service runs as, \
         `sudo -u ferry ferry ...`, or `chown ferry:ferry` it)"
    } else {
        ""
    }
}

fn open(path: &Path, what: &str) -> Result<File> {
    let cannot = |e: std::io::Error| {
        let hint = denied_hint(&e);
        anyhow::Error::new(e).context(format!("cannot read {what} {}{hint}", path.display()))
    };
    // Looked at before it is opened, and opened without waiting: a pipe
    // or a device named by mistake is refused, not waited on.
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        bail!("{what} {} is not a regular file", path.display());
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
    let file: File = opts.open(path).map_err(cannot)?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a regular file", path.display());
    }
    owner_only(&meta, path, what)?;
    Ok(file)
}

#[cfg(unix)]
fn owner_only(meta: &std::fs::Metadata, path: &Path, what: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    // Group or other write (or execute) bits are refused too: whoever may
    // replace a CA key may sign with their own.
    let how = if mode & 0o044 != 0 {
        "readable"
    } else {
        "writable"
    };
    bail!(
        "{what} {} is {how} by group or others (mode {mode:o}); \
         fix it with: chmod 600 {}",
        path.display(),
        path.display()
    )
}

#[cfg(not(unix))]
fn owner_only(_: &std::fs::Metadata, _: &Path, _: &str) -> Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_an_owner_only_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "s3cret\n").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = read(&f, "token_file");
            assert_eq!(got.is_ok(), ok, "mode {mode:o}: {got:?}");
            if let Err(e) = got {
                let e = e.to_string();
                assert!(e.contains("token_file") && e.contains("chmod 600"), "{e}");
            }
        }
        assert!(check(dir.path(), "CA key").is_err(), "a folder");
        assert!(check(&dir.path().join("absent"), "CA key").is_err());
    }
}
