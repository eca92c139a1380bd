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
    // A process started without the file (an older ferry still running
    // after an upgrade, an ExecStart of one's own) is still reloaded, as a
    // bare SIGHUP would: only the wait is lost.
    let before = read(&a.ready_file).ok();
    is_ferry(a.pid)?;
    let sent_at = crate::sdnotify::monotonic_us();
    let pid = nix::unistd::Pid::from_raw(a.pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
        .with_context(|| format!("cannot signal process {}", a.pid))?;
    let Some(before) = before else {
        println!(
            "sent SIGHUP to {role} {}; {} says nothing of its reloads (started without \
             --ready-file, or by a ferry before `reload`): see its log for how it went",
            a.pid,
            a.ready_file.display()
        );
        return Ok(());
    };
    let deadline = std::time::Instant::now() + WITHIN;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(LOOK_EVERY);
        // A process that ended (killed, crashed) reports nothing: said at
        // once rather than after the whole wait.
        // (Looked at before the file: one that reported the reload and
        // then stopped has the report read below.)
        let ended = nix::sys::signal::kill(pid, None) == Err(nix::errno::Errno::ESRCH);
        // Written whole (renamed into place); unreadable for a moment at
        // most.
        let Ok(now) = read(&a.ready_file) else {
            if ended {
                bail!(
                    "the {role} (pid {}) ended before reporting the reload: see its log",
                    a.pid
                );
            }
            continue;
        };
        // Done, and begun after this signal: a reload under way when it
        // was sent may have read the file before the change. (A ferry
        // whose file says no start is trusted on its count.)
        if now.signalled <= before.signalled || now.began_us.is_some_and(|b| b < sent_at) {
            if ended {
                bail!(
                    "the {role} (pid {}) ended before reporting the reload: see its log",
                    a.pid
                );
            }
            continue;
        }
        if now.ok {
            println!("configuration reloaded: {}", now.said);
            return Ok(());
        }
        bail!(
            "configuration reload refused, the running configuration stays: {}",
            now.said
        );
    }
    bail!(
        "the {role} (pid {}) did not report the reload in {} within {WITHIN:?}",
        a.pid,
        a.ready_file.display()
    )
}

/// A SIGHUP ends most programs: `pid` must be a ferry (its name in
/// /proc), so a wrong number typed by hand reloads nothing rather than
/// stopping something else. Where /proc cannot say, it is sent.
fn is_ferry(pid: i32) -> Result<()> {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(name) if name.trim() != "ferry" => bail!(
            "process {pid} is {:?}, not ferry: not signalled",
            name.trim()
        ),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no process {pid}")
        }
        Err(_) => Ok(()),
    }
}

/// What the ready file says of the reloads a signal asked for.
struct Seen {
    signalled: u64,
    began_us: Option<u64>,
    ok: bool,
    said: String,
}

fn read(path: &Path) -> Result<Seen> {
    let bytes = crate::files::read_regular(path, 1 << 20)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let r = &json["reloads"];
    Ok(Seen {
        signalled: r["signalled"]
            .as_u64()
            .with_context(|| format!("{} counts no reloads", path.display()))?,
        began_us: r["began_us"].as_u64(),
        ok: r["ok"].as_bool().unwrap_or(false),
        said: r["said"].as_str().unwrap_or_default().to_string(),
    })
}
