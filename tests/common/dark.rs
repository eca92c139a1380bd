//! A path gone dark for good under the connections open on it, as when
//! the home's address changes (an ISP's new lease, a router's new NAT
//! mapping): every packet of the ep's connections open now is dropped
//! (nftables, as root), while what the ep opens afterwards gets through.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

pub struct Dark {
    nft: PathBuf,
    table: String,
}

impl Dark {
    /// Darkens every TCP connection established now to one of
    /// `hub_ports`, and the UDP path `udp` (the ep's QUIC port, the hub's),
    /// each matched by both its ports so no other test's traffic is
    /// touched. None, after saying why, where root or nftables is missing
    /// (outside CI: `.ci/run` installs nftables and runs as root).
    pub fn now(hub_ports: &[u16], udp: Option<(u16, u16)>) -> Option<Dark> {
        let ci = std::env::var_os("CI").is_some();
        let nft = super::programs::find("nft")?;
        if !rustix::process::geteuid().is_root() {
            assert!(!ci, "CI runs as root");
            println!("skipped: needs root for nftables");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "ferrytest_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let tcp = connections_to(hub_ports);
        let mut rules = String::new();
        let mut pair = |proto: &str, (ep, hub): (u16, u16)| {
            rules += &format!("iif lo {proto} sport {ep} {proto} dport {hub} drop\n");
            rules += &format!("iif lo {proto} sport {hub} {proto} dport {ep} drop\n");
        };
        tcp.iter().for_each(|&p| pair("tcp", p));
        udp.into_iter().for_each(|p| pair("udp", p));
        assert!(!rules.is_empty(), "nothing to darken");
        let script = format!(
            "table ip {table} {{ chain input {{ type filter hook input priority 0; policy accept;\n{rules}}}\n}}\n"
        );
        let mut child = std::process::Command::new(&nft)
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft starts");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        if !child.wait().unwrap().success() {
            // Root without netfilter (a container without CAP_NET_ADMIN).
            assert!(!ci, "nft refused:\n{script}");
            println!("skipped: nft refused the rules");
            return None;
        }
        println!("darkened (ep port, hub port): tcp {tcp:?}, udp {udp:?}");
        Some(Dark { nft, table })
    }
}

impl Drop for Dark {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.nft)
            .args(["delete", "table", "ip", &self.table])
            .status();
    }
}

/// (ep's port, hub's port) of each IPv4 TCP connection established now to
/// one of `hub_ports`, read from /proc/net/tcp as `ss` would.
fn connections_to(hub_ports: &[u16]) -> Vec<(u16, u16)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    let mut found: Vec<(u16, u16)> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // 01: established.
            if f.get(3) != Some(&"01") {
                return None;
            }
            let (local, remote) = (port(f.get(1)?)?, port(f.get(2)?)?);
            hub_ports.contains(&remote).then_some((local, remote))
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}
