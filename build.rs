//! Records the commit the binary is built from, for `ferry --version`.
//! `FERRY_COMMIT` in the environment wins (a build from a source tarball
//! has no git); without either it says "unknown".

use std::{path::PathBuf, process::Command};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=FERRY_COMMIT");
    let commit = std::env::var("FERRY_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FERRY_COMMIT={commit}");
    // A new commit moves the branch the HEAD file names. `--git-path`
    // finds each file where git keeps it (a worktree's branches live in
    // the main checkout's folder), and a missing file is never named:
    // cargo would rerun this script, and rebuild ferry, on every build.
    // A branch kept in `packed-refs` has no file yet; its folder is
    // watched for the one its next commit writes.
    let path = |name: &str| git(&["rev-parse", "--git-path", name]).map(PathBuf::from);
    for file in [path("HEAD"), path("packed-refs")].into_iter().flatten() {
        if file.exists() {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|b| path(&b)) {
        let watched = if branch.exists() {
            Some(branch.as_path())
        } else {
            branch.parent().filter(|p| p.exists())
        };
        if let Some(p) = watched {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
