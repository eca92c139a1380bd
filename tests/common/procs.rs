//! The real `ferry` binary as a child process, its log lines and /proc.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The `ferry` binary as a command, with no `FERRY_` variables or
/// `RUST_LOG` inherited from the test's environment.
pub fn ferry_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRY_") {
            c.env_remove(k);
        }
    }
    c
}

/// `ferry ARGS…`, run to its end: whether it succeeded, and its output
/// (stdout, then stderr).
pub fn run(args: &[&str]) -> (bool, String) {
    let out = ferry_cmd().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `run` with `input` on standard input.
pub fn run_with_input(args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = ferry_cmd()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub struct Ferry {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Ferry {
    /// Runs `ferry ROLE -c CONFIG` with `env`, RUST_LOG=info.
    pub fn spawn(role: &str, config: &Path, env: &[(&str, String)]) -> Ferry {
        Self::spawn_args(role, config, &[], env)
    }

    /// The same with more arguments.
    pub fn spawn_args(
        role: &str,
        config: &Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, String)],
    ) -> Ferry {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg(role).arg("-c").arg(config).args(args);
        Self::run(cmd, env)
    }

    /// `ferry ARGS`, for a command a test stops on its own terms.
    pub fn spawn_command(args: &[&str]) -> Ferry {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(args);
        Self::run(cmd, &[])
    }

    /// The same, with the open-file limit lowered to `fds` first.
    pub fn spawn_with_fd_limit(
        role: &str,
        config: &Path,
        args: &[&std::ffi::OsStr],
        fds: u32,
    ) -> Ferry {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("ulimit -n {fds} && exec \"$0\" {role} -c \"$@\""))
            .arg(env!("CARGO_BIN_EXE_ferry"))
            .arg(config)
            .args(args);
        Self::run(cmd, &[])
    }

    fn run(mut cmd: Command, env: &[(&str, String)]) -> Ferry {
        cmd.env("RUST_LOG", "info");
        for (k, _) in std::env::vars() {
            if k.starts_with("FERRY_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn ferry");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        // Drain stderr for the child's whole life, so logging never blocks it.
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Ferry { child, lines: rx }
    }

    /// The next log line containing `needle` (60 s at most).
    pub fn wait_line(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("ferry never logged {needle:?}"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/PID/status` figure in KiB (VmRSS:, VmHWM:).
    pub fn status_kib(&self, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// The next log line within `within`; None once the process has
    /// exited (its stderr closed) or the time is up.
    pub fn next_line(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    /// Waits at most `within` for the process to exit (its stderr closing
    /// is the signal); None if it is still running.
    pub fn wait_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Some(self.wait()),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
            }
        }
    }

    /// Its log lines from a TERM to its exit.
    pub fn lines_to_exit(&mut self) -> Vec<String> {
        self.signal("TERM");
        let mut lines = Vec::new();
        while let Some(l) = self.next_line(Duration::from_secs(30)) {
            lines.push(l);
        }
        assert!(
            self.wait_within(Duration::from_secs(5)).is_some(),
            "still running"
        );
        lines
    }

    /// User + system CPU seconds so far.
    pub fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / rustix::param::clock_ticks_per_second() as f64
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn field(line: &str, key: &str) -> String {
    let start = line.find(&format!("{key}=")).expect("field in log line") + key.len() + 1;
    line[start..].split_whitespace().next().unwrap().to_string()
}

/// A hub process and the addresses it bound.
pub struct HubProc {
    pub proc: Ferry,
    pub control: SocketAddr,
    pub channel: SocketAddr,
    pub services: std::collections::HashMap<String, SocketAddr>,
    /// The QUIC door, when the config turns it on.
    pub quic: Option<SocketAddr>,
}

/// Where a hub process started by the harness writes its `--ready-file`.
pub fn ready_path(config: &Path) -> std::path::PathBuf {
    config.with_extension("ready.json")
}

impl HubProc {
    /// Starts `ferry hub --ready-file …` and reads its addresses from that
    /// file, the machine-readable signal that every port is bound.
    pub fn start(config: &Path, env: &[(&str, String)], services: usize) -> HubProc {
        let ready = ready_path(config);
        let _ = std::fs::remove_file(&ready);
        let args = [std::ffi::OsStr::new("--ready-file"), ready.as_os_str()];
        Self::attach(
            Ferry::spawn_args("hub", config, &args, env),
            &ready,
            services,
        )
    }

    /// Reads the addresses of a hub process started some other way with
    /// `--ready-file ready`. Between looks at the file it waits for the
    /// process's next log line (or its exit), never a fixed sleep.
    pub fn attach(proc: Ferry, ready: &Path, services: usize) -> HubProc {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let json: serde_json::Value = loop {
            if let Some(v) = std::fs::read_to_string(ready)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
            {
                break v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "hub never became ready"
            );
            if let Err(mpsc::RecvTimeoutError::Disconnected) =
                proc.lines.recv_timeout(Duration::from_millis(200))
            {
                panic!("hub exited before it was ready");
            }
        };
        let addr = |v: &serde_json::Value| -> SocketAddr { v.as_str().unwrap().parse().unwrap() };
        let map: std::collections::HashMap<String, SocketAddr> = json["services"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), addr(v)))
            .collect();
        assert_eq!(map.len(), services, "{json}");
        HubProc {
            control: addr(&json["control"]),
            channel: addr(&json["channel"]),
            services: map,
            quic: json["quic"].as_str().map(|q| q.parse().unwrap()),
            proc,
        }
    }
}
