//! `ferry hub reload` and `ferry ep reload`: a SIGHUP to the running
//! process, then a wait until its `--ready-file` says that reload is done,
//! and how it went. systemd's `ExecReload` runs it, so `systemctl reload`
//! returns once the change is live and fails, with the reason, when the new
//! configuration is refused (a bare `kill -HUP` returns at once and says
//! nothing of either).

use anyhow::{Context, Result, bail};
use clap::Args;
use std::{path::Path, time::Duration};

#[derive(Args)]
pub(super) struct ReloadArgs {
    /// The running process (under systemd, `$MAINPID`).
    #[arg(long)]
    pid: i32,
    /// The file the process was started with (`--ready-file`): its count
    /// of reloads a signal asked for says when this one is done.
    #[arg(long = "ready-file", value_name = "PATH")]
    ready_file: std::path::PathBuf,
}

/// A reload reads files and binds ports: seconds at most. Under systemd's
/// own limit for a reload (`TimeoutSec`, 90 s by default).
const WITHIN: Duration = Duration::from_secs(80);
const LOOK_EVERY: Duration = Duration::from_millis(50);

pub(super) fn run(a: &ReloadArgs, role: &str) -> Result<()> {
    let before = read(&a.ready_file)
        .with_context(|| {
            format!(
                "was the {role} started with --ready-file {}?",
                a.ready_file.display()
            )
        })?
        .0;
    let pid = nix::unistd::Pid::from_raw(a.pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
        .with_context(|| format!("cannot signal process {}", a.pid))?;
    let deadline = std::time::Instant::now() + WITHIN;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(LOOK_EVERY);
        // Written whole (renamed into place); unreadable for a moment at
        // most.
        let Ok((done, ok, said)) = read(&a.ready_file) else {
            continue;
        };
        if done <= before {
            continue;
        }
        if ok {
            println!("configuration reloaded: {said}");
            return Ok(());
        }
        bail!("configuration reload refused, the running configuration stays: {said}");
    }
    bail!(
        "the {role} (pid {}) did not report the reload in {} within {WITHIN:?}",
        a.pid,
        a.ready_file.display()
    )
}

/// The reloads a signal asked for that are done, and how the last went.
fn read(path: &Path) -> Result<(u64, bool, String)> {
    let bytes = crate::files::read_regular(path, 1 << 20)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let r = &json["reloads"];
    let done = r["signalled"].as_u64().with_context(|| {
        format!(
            "{} counts no reloads (a ferry from before `reload`?)",
            path.display()
        )
    })?;
    let said = r["said"].as_str().unwrap_or_default().to_string();
    Ok((done, r["ok"].as_bool().unwrap_or(false), said))
}
