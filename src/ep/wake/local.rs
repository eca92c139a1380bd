//! A service at home as its wake and sleep tasks see it: where it is, how
//! its port is tried, and how its commands are started.

use std::time::Duration;
use tokio::{io::AsyncWriteExt, net::TcpStream, process::Command, sync::oneshot};
use tokio_util::sync::CancellationToken;

use super::{POLL, Running};

/// How long a host at home has to answer a try of a port: one on the home
/// network answers within milliseconds, one switched off never.
const HOST_TRY: Duration = Duration::from_secs(1);

/// Where a service at home is, and what stops its tasks.
#[derive(Clone)]
pub(in crate::ep) struct Local {
    pub service: String,
    pub at: String,
    pub connect_timeout: Duration,
    pub stop: CancellationToken,
    /// A UDP service: it answers when a flow hears from it (a port cannot
    /// be tried without speaking its protocol).
    pub udp: bool,
    /// The service's PROXY header, if it takes one: the ep's own tries of
    /// the port send the header's "local" form, so a service that requires
    /// it does not log an error for each.
    pub proxy: Option<crate::proxy_header::Version>,
}

impl Local {
    /// Until the Bedrock server at `at` answers a list ping of the ep's
    /// own (tried every `POLL`).
    pub(super) async fn pongs(&self) {
        loop {
            if self.pong_once().await.unwrap_or(false) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the Bedrock server at `at` answers one list ping of the
    /// ep's own within `POLL`.
    pub(super) async fn pong_once(&self) -> std::io::Result<bool> {
        // The address a flow would use (`udp_listener`).
        let to = crate::ep::udp_listener::resolve(&self.at).await?;
        let any: std::net::SocketAddr = if to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(any).await?;
        socket.connect(to).await?;
        socket
            .send(&crate::game::bedrock::ping(rand_guid()))
            .await?;
        let mut buf = [0u8; 1500];
        Ok(
            match tokio::time::timeout(POLL, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => crate::game::bedrock::is_pong(&buf[..n]),
                _ => false,
            },
        )
    }

    /// Whether the host at `at` answers a TCP try of the port within
    /// `HOST_TRY` in any way (a connection, a refusal, a firewall's
    /// rejection): it is on. A host switched off answers nothing (on a
    /// home network its address then fails to resolve to a machine after
    /// seconds). The name is looked up first, outside that second. A
    /// connection gets the PROXY header's local form, as `answers` sends
    /// it, so a service that requires one logs no error for it.
    pub(super) async fn host_answers(&self) -> bool {
        let Some(to) = tokio::net::lookup_host(&self.at)
            .await
            .ok()
            .and_then(|mut a| a.next())
        else {
            return false;
        };
        match tokio::time::timeout(HOST_TRY, TcpStream::connect(to)).await {
            Ok(Ok(mut tcp)) => {
                if let Some(v) = self.proxy {
                    let _ = tcp.write_all(&crate::proxy_header::local_header(v)).await;
                }
                true
            }
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }

    /// One try of the port (with the PROXY header's local form if the
    /// service takes one).
    pub(super) async fn answers(&self) -> bool {
        let tried = async {
            let mut tcp = TcpStream::connect(&self.at).await?;
            if let Some(v) = self.proxy {
                tcp.write_all(&crate::proxy_header::local_header(v)).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        matches!(
            tokio::time::timeout(self.connect_timeout, tried).await,
            Ok(Ok(()))
        )
    }
}

/// Starts `argv` without a shell, its exit logged and told (true:
/// success), not waited for. Its output goes where the ep's goes (the
/// journal under systemd): not through a pipe, which would break the
/// moment the ep restarts and take a server it started down with it.
/// `mark` is held until the process exits. With a `limit` (a command
/// that only stops something, never the server itself), the command runs
/// in a process group of its own, killed whole once it has run that
/// long: one that hangs is not left behind for the next stop to run
/// beside. A `wake` stays in the ep's group: in a background group of the
/// ep's terminal, a command that asks there (`sudo`) would be stopped
/// for ever, and it has no limit.
pub(super) fn run(
    service: &str,
    what: &'static str,
    argv: &[String],
    (mark, limit): (Option<Running>, Option<Duration>),
) -> oneshot::Receiver<bool> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        // It may be the game server itself: it outlives this task.
        .kill_on_drop(false);
    if limit.is_some() {
        cmd.process_group(0);
    }
    scrub(&mut cmd, std::env::vars_os().map(|(k, _)| k));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(service, command = ?argv, "cannot run the {what} command: {e}");
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(false);
            return rx;
        }
    };
    let (tx, rx) = oneshot::channel();
    let service = service.to_string();
    tokio::spawn(async move {
        let status = match limit {
            Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    tracing::warn!(
                        service,
                        "the {what} command still runs after {limit:?}: killed, with what it started"
                    );
                    kill_group(&child);
                    child.wait().await
                }
            },
            None => child.wait().await,
        };
        drop(mark);
        let _ = tx.send(status.as_ref().is_ok_and(|s| s.success()));
        match status {
            Ok(s) if s.success() => tracing::info!(service, "{what} command finished"),
            Ok(s) => tracing::warn!(service, "{what} command failed: {s}"),
            Err(e) => tracing::warn!(service, "{what} command: {e}"),
        }
    });
    rx
}

/// Kills the process group `child` leads (it was started as one), and
/// so whatever it started that did not leave the group.
fn kill_group(child: &tokio::process::Child) {
    use nix::{sys::signal::Signal, unistd::Pid};
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if let Err(e) = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        tracing::warn!("cannot kill the command's process group {pid}: {e}");
    }
}

/// The ep's own settings from the environment (`FERRY_EP_TOKEN` above
/// all) are not a command's: a game server it starts runs plugins and
/// mods that could read them.
fn scrub(cmd: &mut Command, keys: impl IntoIterator<Item = std::ffi::OsString>) {
    for key in keys {
        // figment matches the prefix in any case.
        let key_upper = key.to_string_lossy().to_ascii_uppercase();
        if key_upper.starts_with(crate::config::ENV_PREFIX) {
            cmd.env_remove(key);
        }
    }
}

/// A client GUID for the ep's own pings (any value; not a secret).
fn rand_guid() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether process `pid` is gone (or a zombie nobody reaped yet).
    fn gone(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn a_command_past_its_limit_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // A script whose own child hangs, as `rcon-cli` under `sh -c` may.
        let inner = format!("echo $$ > {}; exec sleep 60", pidfile.display());
        let argv = ["sh", "-c", &format!("sh -c '{inner}' & wait")].map(String::from);
        let ran = run("s", "sleep", &argv, (None, Some(Duration::from_secs(5))));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pid = loop {
            match std::fs::read_to_string(&pidfile) {
                Ok(p) if p.ends_with('\n') => break p.trim().to_string(),
                _ if std::time::Instant::now() > deadline => panic!("the command never ran"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert!(!gone(&pid), "its child runs until the limit");
        let ok = tokio::time::timeout(Duration::from_secs(10), ran)
            .await
            .expect("ended within 10 s")
            .unwrap();
        assert!(!ok, "a command killed at its limit did not succeed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gone(&pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "its child outlived it"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn a_command_gets_none_of_the_eps_settings_from_the_environment() {
        let mut cmd = Command::new("true");
        scrub(
            &mut cmd,
            ["FERRY_EP_TOKEN", "PATH", "ferry_admin_token", "HOME"].map(Into::into),
        );
        let removed: Vec<_> = cmd
            .as_std()
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(removed, ["FERRY_EP_TOKEN", "ferry_admin_token"]);
    }
}
