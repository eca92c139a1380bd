//! `cargo bench --bench quic [-- --smoke] [--json PATH]`
//!
//! One hub process with its QUIC door and two ep processes, one over QUIC
//! and one over TLS/TCP, each serving its own copy of the same services,
//! against a direct path and two plain-TCP forwarding processes in a chain
//! (the tunnel's shape with no security), in the same run: connect to
//! first byte and new TCP players per second, memory per idle player on the
//! hub and each ep, one-stream throughput (also
//! again, as root, inside a network namespace whose loopback MTU is 1500,
//! the internet's), and 64-byte UDP echo round trips and loss at 0 % and
//! (as root, with nftables) 2 % random loss each way on the hub–ep path
//! only. The drops are in an input-hook
//! chain: an output-hook drop is reported to the sending TCP stack, which
//! retries at once and hides the very stall being measured.

#[path = "../common/mod.rs"]
mod common;

use common::{
    Args,
    cluster::Cluster,
    machine,
    measure::{
        connection_rate, first_byte, idle_players, median, percentile, throughput_parallel, us,
    },
    plainhop, say, tcp, udp,
};
use serde_json::json;
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

struct Plan {
    rounds: usize,
    /// Idle players held on each transport for the memory figure.
    idle: usize,
    first_bytes: usize,
    rate_secs: u64,
    stream: u64,
    pings: usize,
}

/// The paths to one kind of service.
#[derive(Clone, Copy)]
struct Paths {
    direct: SocketAddr,
    /// Through two plain-TCP forwarders (TCP services only).
    plain: Option<SocketAddr>,
    tls: SocketAddr,
    quic: SocketAddr,
}

impl Paths {
    fn each(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut v = vec![("direct", self.direct)];
        v.extend(self.plain.map(|p| ("plain 2-hop", p)));
        v.extend([("tls", self.tls), ("quic", self.quic)]);
        v
    }
}

/// 2 % random loss each way on the hub's ports, in an input-hook chain;
/// removed when dropped.
struct Loss;

impl Loss {
    fn apply(percent: u32, tcp: &[u16], udp: u16) -> Option<Loss> {
        let ports = tcp
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rules = format!(
            "table inet ferrybench {{ chain input {{ type filter hook input priority 0; policy accept;\n\
             iif lo tcp dport {{ {ports} }} numgen random mod 100 < {percent} drop\n\
             iif lo tcp sport {{ {ports} }} numgen random mod 100 < {percent} drop\n\
             iif lo udp dport {udp} numgen random mod 100 < {percent} drop\n\
             iif lo udp sport {udp} numgen random mod 100 < {percent} drop\n}}\n}}\n"
        );
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        use std::io::Write;
        child.stdin.take()?.write_all(rules.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        if !out.status.success() {
            eprintln!("nft: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Loss)
    }
}

impl Drop for Loss {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", "ferrybench"])
            .status();
    }
}

/// `n` 64-byte echoes on one flow, one at a time, each waited for up to
/// 1 s: round trips of the answered ones, and how many got none.
fn udp_echo(to: SocketAddr, n: usize) -> (Vec<Duration>, usize) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 128];
    // Make the flow first (and its channel).
    for _ in 0..50 {
        let _ = s.send(&[0u8; 64]);
        if s.recv(&mut buf).is_ok() {
            break;
        }
    }
    while s.recv(&mut buf).is_ok() {}
    let (mut rtts, mut lost) = (Vec::with_capacity(n), 0);
    for i in 0..n as u32 {
        let mut msg = [0u8; 64];
        msg[..4].copy_from_slice(&i.to_be_bytes());
        let t = Instant::now();
        s.send(&msg).unwrap();
        loop {
            match s.recv(&mut buf) {
                Ok(len) if len >= 4 && buf[..4] == i.to_be_bytes() => {
                    rtts.push(t.elapsed());
                    break;
                }
                Ok(_) => continue, // a late answer to an earlier one
                Err(_) if t.elapsed() >= Duration::from_secs(1) => {
                    lost += 1;
                    break;
                }
                Err(_) => continue,
            }
        }
    }
    (rtts, lost)
}

fn main() {
    let args = Args::parse("quic");
    plainhop::serve_if_asked(&args);
    let fd_limit = machine::raise_fd_limit();
    let p = if args.smoke {
        Plan {
            rounds: 1,
            idle: 50,
            first_bytes: 5,
            rate_secs: 1,
            stream: 4 << 20,
            pings: 50,
        }
    } else {
        Plan {
            rounds: 3,
            idle: 2000,
            first_bytes: 200,
            rate_secs: 5,
            stream: 512 << 20,
            pings: 2000,
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let setup = rt.block_on(Setup::start());
    // Child mode: the throughput figure alone, run by the parent inside a
    // network namespace whose loopback MTU is 1500.
    if args.has(THROUGHPUT_ONLY) {
        let mut out = String::new();
        let row = rt.block_on(throughput(&mut out, &p, &setup.sink));
        let mut js = common::Json::new();
        js.insert("throughput_1_stream_mbps".into(), row);
        return common::write_json(&args.json, &js);
    }
    let (mut out, mut js) = common::begin("QUIC", fd_limit);
    rt.block_on(async {
        // First, while no traffic has grown the processes' heaps: freed
        // memory they keep would take new players unseen.
        let (row, line) = idle_memory(&p, &setup).await;
        say!(out, "{line}");
        js.insert("idle_memory_kib_per_player".into(), row);
        let (row, line) = first_bytes(&p, &setup.echo).await;
        say!(out, "{line}");
        js.insert("first_byte_us".into(), row);
        let (row, line) = players_per_sec(&p, &setup.echo).await;
        say!(out, "{line}");
        js.insert("players_per_sec".into(), row);
        let row = throughput(&mut out, &p, &setup.sink).await;
        js.insert("throughput_1_stream_mbps".into(), row);
    });
    js.insert("mtu_1500".into(), at_mtu_1500(&mut out, &args));
    udp_rows(&mut out, &mut js, &p, &setup);
    drop(setup);
    common::write_json(&args.json, &js);
}

/// The child flag: run only the throughput figure.
const THROUGHPUT_ONLY: &str = "--throughput-only";

/// The processes under test and the paths to each service.
struct Setup {
    _cluster: Cluster,
    hub: common::ferryproc::HubProc,
    /// The ep over QUIC, then the one over TLS.
    eps: Vec<common::ferryproc::Ferry>,
    _hops: (common::hop::Hop, common::hop::Hop),
    echo: Paths,
    sink: Paths,
    udp: Paths,
    quic: SocketAddr,
}

impl Setup {
    async fn start() -> Setup {
        let cluster = Cluster::new(&["q", "t"]);
        let (echo, sink) = (tcp::echo().await, tcp::sink().await);
        let udp_echo_home = udp::echo();
        let mut services = String::new();
        for t in ["q", "t"] {
            services += &format!(
                "[services.echo_{t}]\nbind = \"127.0.0.1:0\"\n[services.sink_{t}]\nbind = \"127.0.0.1:0\"\n\
                 [services.udp_{t}]\nbind = \"127.0.0.1:0\"\ntype = \"udp\"\n"
            );
        }
        let hub = cluster.hub(
            "quic = \"127.0.0.1:0\"\n",
            &format!(
                "{services}[players]\nmax_players_per_ip = 1000000\nplayer_rate_per_ip = \"1000000/s\"\nmax_udp_flows_per_ip = 1000000\n"
            ),
            6,
        );
        let quic = hub.quic.expect("the hub's QUIC door");
        let mut eps = Vec::new();
        for (t, transport) in [("q", "quic"), ("t", "tls")] {
            let top =
                format!("transport = \"{transport}\"\nquic = \"{quic}\"\nmax_players = 1000000\n");
            let tables = format!(
                "[services.echo_{t}]\nlocal = \"{echo}\"\n[services.sink_{t}]\nlocal = \"{sink}\"\n\
                 [services.udp_{t}]\nlocal = \"{udp_echo_home}\"\n"
            );
            eps.push(cluster.ep(&hub, t, &top, &tables));
        }
        let (far, far_addrs) = plainhop::spawn(&[echo, sink]);
        let (near, plain) = plainhop::spawn(&far_addrs);
        let ports = &hub.services;
        let (echo, sink, udp) = (
            Paths {
                direct: echo,
                plain: Some(plain[0]),
                tls: ports["echo_t"],
                quic: ports["echo_q"],
            },
            Paths {
                direct: sink,
                plain: Some(plain[1]),
                tls: ports["sink_t"],
                quic: ports["sink_q"],
            },
            Paths {
                direct: udp_echo_home,
                plain: None,
                tls: ports["udp_t"],
                quic: ports["udp_q"],
            },
        );
        Setup {
            _cluster: cluster,
            hub,
            eps,
            _hops: (near, far),
            echo,
            sink,
            udp,
            quic,
        }
    }
}

/// Memory per idle player: `p.idle` players held open over QUIC, then as
/// many more over TLS, each through the hub and its own ep. The hub's
/// figure for TLS is taken with the QUIC players still held, so neither
/// set reuses memory the other freed.
async fn idle_memory(p: &Plan, s: &Setup) -> (serde_json::Value, String) {
    let mut held = Vec::new();
    let mut row = serde_json::Map::new();
    let mut line = format!("memory per idle player KiB ({} each):", p.idle);
    let mut hub_per = std::collections::HashMap::new();
    for (name, to, ep) in [
        ("quic", s.echo.quic, &s.eps[0]),
        ("tls", s.echo.tls, &s.eps[1]),
    ] {
        let rss = || {
            (
                s.hub.proc.status_kib("VmRSS:") as f64,
                ep.status_kib("VmRSS:") as f64,
            )
        };
        let (hub0, ep0) = rss();
        let before = held.len();
        let failed = idle_players(to, p.idle, &mut held).await;
        let n = (held.len() - before).max(1) as f64;
        let (hub1, ep1) = rss();
        let (h, e) = ((hub1 - hub0).max(0.0) / n, (ep1 - ep0).max(0.0) / n);
        hub_per.insert(name, h);
        line += &format!("  {name} hub {h:.1}, ep {e:.1}");
        if failed > 0 {
            line += &format!(" ({failed} failed to connect)");
        }
        row.insert(name.into(), json!({"hub": h, "ep": e}));
    }
    line += &format!("  hub quic/tls {:.2}", hub_per["quic"] / hub_per["tls"]);
    (serde_json::Value::Object(row), line)
}

/// Connect to first byte, p50/p99 on each path, with QUIC's ratios.
async fn first_bytes(p: &Plan, echo: &Paths) -> (serde_json::Value, String) {
    let gap = Duration::from_millis(20);
    let mut row = serde_json::Map::new();
    let mut line = "connect → first byte p50/p99 µs:".to_string();
    let mut p50 = std::collections::HashMap::new();
    for (name, to) in echo.each() {
        let mut v = first_byte(to, p.first_bytes, gap).await;
        let (a, b) = (us(percentile(&mut v, 0.5)), us(percentile(&mut v, 0.99)));
        p50.insert(name, a);
        line += &format!("  {name} {a:.0}/{b:.0}");
        row.insert(name.into(), json!([a, b]));
    }
    let q = p50["quic"];
    line += &format!(
        "  quic/direct {:.2}×, quic/plain 2-hop {:.2}×, quic/tls {:.2}×",
        q / p50["direct"],
        q / p50["plain 2-hop"],
        q / p50["tls"]
    );
    (serde_json::Value::Object(row), line)
}

/// New TCP players per second, 16 at a time, on each path.
async fn players_per_sec(p: &Plan, echo: &Paths) -> (serde_json::Value, String) {
    let dur = Duration::from_secs(p.rate_secs);
    let mut row = serde_json::Map::new();
    let mut line = "new TCP players/s (16 at a time):".to_string();
    let mut rate = std::collections::HashMap::new();
    for (name, to) in echo.each() {
        let r = connection_rate(to, 16, dur).await;
        rate.insert(name, r);
        line += &format!("  {name} {r:.0}");
        row.insert(name.into(), json!(r));
    }
    line += &format!(
        "  quic/plain 2-hop {:.2}×, quic/tls {:.1}×",
        rate["quic"] / rate["plain 2-hop"],
        rate["quic"] / rate["tls"]
    );
    (serde_json::Value::Object(row), line)
}

/// One-stream throughput on each path, rounds alternating, medians.
async fn throughput(out: &mut String, p: &Plan, sink: &Paths) -> serde_json::Value {
    let paths = sink.each();
    let mut tp: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _ in 0..p.rounds {
        for (i, (_, to)) in paths.iter().enumerate() {
            tp[i].push(throughput_parallel(*to, 1, p.stream).await);
        }
    }
    let mut row = serde_json::Map::new();
    let mut line = "throughput 1 stream MB/s:".to_string();
    let mut m = std::collections::HashMap::new();
    for ((name, _), v) in paths.iter().zip(tp.iter_mut()) {
        let x = median(v);
        m.insert(*name, x);
        line += &format!("  {name} {x:.0}");
        row.insert((*name).into(), json!(x));
    }
    line += &format!("  quic/tls {:.2}", m["quic"] / m["tls"]);
    say!(out, "{line}");
    serde_json::Value::Object(row)
}

/// The throughput figure again, in a fresh network namespace whose
/// loopback has the internet's MTU (1500): this bench run again there
/// with `--throughput-only` (as root; skipped with a message otherwise).
fn at_mtu_1500(out: &mut String, args: &Args) -> serde_json::Value {
    let skipped = |out: &mut String, why: &str| {
        say!(out, "throughput at MTU 1500: skipped ({why})");
        serde_json::Value::Null
    };
    if !rustix::process::geteuid().is_root() {
        return skipped(out, "needs root for a network namespace");
    }
    let json = std::env::temp_dir().join(format!("ferry-bench-mtu-{}.json", std::process::id()));
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--net", "--", "sh", "-c"])
        .arg("ip link set lo mtu 1500 up && exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .arg(THROUGHPUT_ONLY)
        .arg("--json")
        .arg(&json);
    if args.smoke {
        cmd.arg("--smoke");
    }
    let ran = cmd.output();
    let Ok(o) = ran else {
        return skipped(out, "unshare is not installed");
    };
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        return skipped(out, err.lines().last().unwrap_or("unshare failed"));
    }
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let row = v["throughput_1_stream_mbps"].clone();
    let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
    say!(
        out,
        "throughput 1 stream MB/s at MTU 1500 (own netns):  direct {:.0}  plain 2-hop {:.0}  tls {:.0}  quic {:.0}  quic/tls {:.2}",
        f("direct"),
        f("plain 2-hop"),
        f("tls"),
        f("quic"),
        f("quic") / f("tls")
    );
    row
}

/// UDP echo, without and with loss on the hub–ep path.
fn udp_rows(out: &mut String, js: &mut common::Json, p: &Plan, s: &Setup) {
    let root = rustix::process::geteuid().is_root();
    for loss in [0u32, 2] {
        let _rules = if loss > 0 {
            let rules = if root {
                Loss::apply(
                    loss,
                    &[s.hub.control.port(), s.hub.channel.port()],
                    s.quic.port(),
                )
            } else {
                None
            };
            if rules.is_none() {
                say!(
                    out,
                    "udp echo with {loss} % loss: skipped (needs root and nftables to drop on loopback)"
                );
                continue;
            }
            rules
        } else {
            None
        };
        let mut row = serde_json::Map::new();
        let mut line =
            format!("udp echo 64 B, {loss} % loss each way on the hub–ep path, p50/p99 µs (lost):");
        let mut p50 = std::collections::HashMap::new();
        for (name, to) in s.udp.each() {
            let (mut rtts, lost) = udp_echo(to, p.pings);
            let (a, b) = if rtts.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                (
                    us(percentile(&mut rtts, 0.5)),
                    us(percentile(&mut rtts, 0.99)),
                )
            };
            let pct = 100.0 * lost as f64 / p.pings as f64;
            p50.insert(name, a);
            line += &format!("  {name} {a:.0}/{b:.0} ({pct:.1} %)");
            row.insert(
                name.into(),
                json!({"p50_us": a, "p99_us": b, "lost_percent": pct}),
            );
        }
        line += &format!("  p50 quic/tls {:.2}", p50["quic"] / p50["tls"]);
        say!(out, "{line}");
        js.insert(
            format!("udp_echo_loss_{loss}"),
            serde_json::Value::Object(row),
        );
    }
}
