//! What the benchmark needs from the machine: more open files, and a line
//! naming the machine for the report.

/// Raises the open-file limit to the hard limit (children inherit it).
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    // Root may raise the hard limit too; 10,000 players need ~20,000 fds
    // in this process and in each of hub and ep.
    let want = lim.maximum.unwrap_or(u64::MAX).max(200_000);
    lim.maximum = Some(want);
    lim.current = Some(want);
    if setrlimit(Resource::Nofile, lim).is_err() {
        lim = getrlimit(Resource::Nofile);
        lim.current = lim.maximum;
    }
    let _ = setrlimit(Resource::Nofile, lim);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // TLS figures beside a download move with it (BENCHMARKS.md: BBR and
    // CUBIC on the thin uplink), and a network namespace inherits it.
    let cc = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "{cores} cores, {cpu}, Linux {}, TCP congestion control {}",
        kernel.trim(),
        cc.trim()
    )
}
