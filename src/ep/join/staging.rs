//! Where a join writes. Everything goes first into a staging folder inside
//! DIR (one file system, so each move is a rename): the key before the hub
//! is contacted, which proves the folder takes files while the invite is
//! still unused; the rest once the hub has answered. Then `certs/` and
//! `ep.toml` are renamed into place, `ep.toml` last, so its presence means
//! a complete join. If anything fails after the hub answered, the staging
//! folder is kept and the error says where, with the token: the hub keeps
//! only its hash, and the invite is used.

use super::{
    answer::Enrolled,
    earlier::{self, Mark},
};
use crate::{enrol::Line, files::write_file};
use anyhow::{Context, Result, bail};
use std::{
    fs,
    path::{Path, PathBuf},
};

/// The files a join writes in `certs/`, with their modes.
const CERTS: [(&str, u32); 4] = [
    ("ep.key", 0o600),
    ("ep.pem", 0o644),
    ("ca.pem", 0o644),
    ("token", 0o600),
];

pub(super) struct Staging {
    dir: PathBuf,
    path: PathBuf,
    force: bool,
    /// Made by an earlier join of the same line, whose key this one asks
    /// with.
    resumed: bool,
    /// The record of the line its key is for, locked while this join runs;
    /// retired once the hub answered.
    mark: Option<Mark>,
    /// The outermost folder this join created for DIR, removed again (if
    /// still empty) when the join fails before the hub answered.
    created: Option<PathBuf>,
    after: AfterDrop,
}

/// What dropping the staging folder removes.
#[derive(Clone, Copy, PartialEq)]
enum AfterDrop {
    /// The join stopped before anything of the hub's was written: all of it.
    Everything,
    /// The files are in place: the (empty) staging folder.
    Staging,
    /// The files are not all in place: nothing.
    Nothing,
}

/// A hub's certificate folder (a hub and an ep on one machine, both in
/// /var/lib/ferry) is refused, even with --force: its ca.pem is the hub's
/// own CA, which the join would replace.
fn not_a_hubs_folder(dir: &Path) -> Result<()> {
    let hub_ca = dir.join("certs").join("ca.key");
    if fs::symlink_metadata(&hub_ca).is_ok() {
        bail!(
            "{} holds a CA key: that folder is a hub's certificates, whose ca.pem the join \
             would replace; join into another folder (--dir, e.g. {}) (nothing was sent to the hub)",
            hub_ca.parent().unwrap_or(dir).display(),
            dir.join("ep").display()
        );
    }
    Ok(())
}

impl Staging {
    /// Checks that DIR can take the join's files (`ready`), then takes the
    /// key an earlier join of `line` left there,
    /// or makes one and writes it into a new staging folder, all before
    /// the hub is contacted.
    pub fn prepare(dir: &Path, force: bool, line: &Line) -> Result<(Staging, rcgen::KeyPair)> {
        let created = ready(dir, force)?;
        if let Some(found) = earlier::find(dir, line) {
            let staging = Staging {
                dir: dir.to_path_buf(),
                path: found.path,
                force,
                resumed: true,
                mark: Some(found.mark),
                created,
                after: AfterDrop::Everything,
            };
            return Ok((staging, found.key));
        }
        // The key is made, and written, before anything is sent: a folder
        // that cannot take it stops the join while the invite is still
        // unused, and a failure leaves no half-enrolled state on the hub.
        let key = rcgen::KeyPair::generate().context("cannot generate the ep's key")?;
        let path = dir.join(format!(
            ".ferry-join.{}.{}",
            std::process::id(),
            crate::token::random_hex(4)
        ));
        let made = private_dir(&path);
        let mut staging = Staging {
            dir: dir.to_path_buf(),
            path,
            force,
            resumed: false,
            mark: None,
            created,
            after: AfterDrop::Everything,
        };
        // From here, an error drops `staging`, which cleans up.
        made.and_then(|()| fs::create_dir(staging.path.join("certs")))
            .with_context(|| {
                format!(
                    "cannot write in {} (nothing was sent to the hub)",
                    staging.dir.display()
                )
            })?;
        write_file(
            &staging.path.join("certs/ep.key"),
            key.serialize_pem().as_bytes(),
            0o600,
            false,
        )
        .and_then(|()| Ok(Mark::make(&staging.path, line)?))
        .map(|mark| staging.mark = Some(mark))
        .with_context(|| {
            format!(
                "cannot write the ep's key in {} (nothing was sent to the hub)",
                staging.dir.display()
            )
        })?;
        Ok((staging, key))
    }

    /// Whether the key is an earlier join's, and where it is.
    pub fn resumed(&self) -> Option<&Path> {
        self.resumed.then_some(self.path.as_path())
    }

    /// When a request with this key first went out, if one did.
    pub fn sent(&self) -> Option<std::time::SystemTime> {
        self.mark.as_ref().and_then(|m| m.sent)
    }

    /// Notes that a request with this key goes out now.
    pub fn sending(&mut self) {
        if let Some(m) = &mut self.mark {
            m.sent_now();
        }
    }

    /// The join failed with `e` before it had the hub's answer, or with a
    /// refusal: the folder and its key are kept while the hub may still
    /// take that key again (a request went out, and the hub's window has
    /// time left for a join run again), and removed otherwise.
    pub fn failed(mut self, e: anyhow::Error) -> anyhow::Error {
        let window = std::time::Duration::from_secs(crate::enrol::invites::ASK_AGAIN);
        let left = self.sent().and_then(|at| {
            (at + window)
                .duration_since(std::time::SystemTime::now())
                .ok()
        });
        match left {
            Some(left) if left > super::door::DEADLINE => {
                self.after = AfterDrop::Nothing;
                e.context(format!(
                    "the hub may have used the invite for this join's key, kept in {}: run the \
                     same command again within {}s to ask with it",
                    self.path.display(),
                    left.as_secs()
                ))
            }
            _ => e,
        }
    }

    /// Where `ep.toml` will be.
    pub fn config(&self) -> PathBuf {
        self.dir.join("ep.toml")
    }

    /// Writes what the hub gave and moves it all into place.
    pub fn install(mut self, e: &Enrolled, toml: &str) -> Result<()> {
        // Whatever happens now, the hub's part must not be thrown away, nor
        // its key taken by a join run again.
        self.after = AfterDrop::Nothing;
        if let Some(mark) = self.mark.take() {
            mark.retire();
        }
        if let Err(err) = self.write(e, toml) {
            return Err(anyhow::anyhow!(
                "the hub enrolled this machine as ep {}, but its files could not be written: {err:#}.\n\
                 Keep {} (it holds the ep's key) and save the rest now; the hub keeps no copy:\n\
                 token (certs/token): {}\ncertificate (certs/ep.pem):\n{}\
                 CA (certs/ca.pem):\n{}",
                e.ep,
                self.path.display(),
                e.token.expose(),
                e.cert,
                e.ca,
            ));
        }
        if let Err(err) = self.move_into_place() {
            return Err(anyhow::anyhow!(
                "the hub enrolled this machine as ep {}, but moving its files into {} failed: {err:#}.\n\
                 Nothing is lost: what is not yet in {} is in {} (ep.toml and certs/); move it there by hand.\n\
                 In case that folder is lost too, the ep's token is: {}",
                e.ep,
                self.dir.display(),
                self.dir.display(),
                self.path.display(),
                e.token.expose(),
            ));
        }
        self.after = AfterDrop::Staging;
        Ok(())
    }

    fn write(&self, e: &Enrolled, toml: &str) -> Result<()> {
        let certs = self.path.join("certs");
        write_file(&certs.join("ep.pem"), e.cert.as_bytes(), 0o644, false)?;
        write_file(&certs.join("ca.pem"), e.ca.as_bytes(), 0o644, false)?;
        let token = format!("{}\n", e.token.expose());
        write_file(&certs.join("token"), token.as_bytes(), 0o600, false)?;
        write_file(&self.path.join("ep.toml"), toml.as_bytes(), 0o644, false)
    }

    fn move_into_place(&self) -> Result<()> {
        let (staged, certs) = (self.path.join("certs"), self.dir.join("certs"));
        if fs::symlink_metadata(&certs).is_err() {
            rename(&staged, &certs)?;
        } else {
            for (f, _) in CERTS {
                self.place(&staged.join(f), &certs.join(f))?;
            }
        }
        self.place(&self.path.join("ep.toml"), &self.config())
    }

    /// Renames `from` to `to`; an existing `to` is replaced only with
    /// `force` (one may have appeared since the check).
    fn place(&self, from: &Path, to: &Path) -> Result<()> {
        if !self.force && fs::symlink_metadata(to).is_ok() {
            bail!("{} already exists", to.display());
        }
        rename(from, to)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        match self.after {
            AfterDrop::Nothing => {}
            AfterDrop::Staging => {
                let _ = fs::remove_dir_all(&self.path);
            }
            AfterDrop::Everything => {
                let _ = fs::remove_dir_all(&self.path);
                // Only folders this join made, and only while empty.
                if let Some(top) = &self.created {
                    for d in self.dir.ancestors() {
                        if fs::remove_dir(d).is_err() || d == top {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Checks that DIR can take the join's files (none there unless `force`)
/// and makes it; the outermost folder made, if any.
fn ready(dir: &Path, force: bool) -> Result<Option<PathBuf>> {
    not_a_hubs_folder(dir)?;
    for target in targets(dir) {
        let Ok(meta) = fs::symlink_metadata(&target) else {
            continue;
        };
        if !force {
            bail!(
                "{} already exists; pass --force to replace it (nothing was sent to the hub)",
                target.display()
            );
        }
        if meta.is_dir() {
            bail!(
                "{} is a folder, where join writes a file; move it away (nothing was sent to the hub)",
                target.display()
            );
        }
    }
    let created = outermost_missing(dir);
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the folder {} (nothing was sent to the hub)",
            dir.display()
        )
    })?;
    let certs = dir.join("certs");
    match fs::metadata(&certs) {
        Ok(m) if !m.is_dir() => bail!(
            "{} is not a folder; move it away (nothing was sent to the hub)",
            certs.display()
        ),
        // The files are moved into it one by one: it must take them.
        Ok(_) => probe(&certs).with_context(|| {
            format!(
                "cannot write in {} (nothing was sent to the hub)",
                certs.display()
            )
        })?,
        Err(_) => {}
    }
    Ok(created)
}

/// The files a join writes in DIR.
fn targets(dir: &Path) -> Vec<PathBuf> {
    let certs = dir.join("certs");
    let mut all = vec![dir.join("ep.toml")];
    all.extend(CERTS.iter().map(|(f, _)| certs.join(f)));
    all
}

/// The outermost of `dir` and its parents that does not exist yet.
fn outermost_missing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err())
        .last()
        .map(Path::to_path_buf)
}

/// The staging folder holds the token: only its owner may look in.
fn private_dir(path: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path)
}

/// Whether a new file can be made in `dir` (and removed again).
fn probe(dir: &Path) -> Result<()> {
    let f = dir.join(format!(".ferry-join-probe.{}", crate::token::random_hex(4)));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&f)?;
    fs::remove_file(&f)?;
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
}
