//! `cargo bench --bench quic [-- --smoke] [--json PATH]`
//!
//! One hub process with its QUIC door and two ep processes, one over QUIC
//! and one over TLS/TCP, each serving its own copy of the same services,
//! against a direct path, in the same run: connect to first byte and new
//! TCP players per second, one-stream throughput, and 64-byte UDP echo
//! round trips and loss at 0 % and (as root, with nftables) 2 % random
//! loss each way on the hub–ep path only. The drops are in an input-hook
//! chain: an output-hook drop is reported to the sending TCP stack, which
//! retries at once and hides the very stall being measured.

#[path = "../common/mod.rs"]
mod common;

use common::{
    Args,
    cluster::Cluster,
    machine,
    measure::{connection_rate, first_byte, median, percentile, throughput_parallel, us},
    say, tcp, udp,
};
use serde_json::json;
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

struct Plan {
    rounds: usize,
    first_bytes: usize,
    rate_secs: u64,
    stream: u64,
    pings: usize,
}

/// The three paths to one kind of service.
#[derive(Clone, Copy)]
struct Paths {
    direct: SocketAddr,
    tls: SocketAddr,
    quic: SocketAddr,
}

impl Paths {
    fn each(&self) -> [(&'static str, SocketAddr); 3] {
        [
            ("direct", self.direct),
            ("tls", self.tls),
            ("quic", self.quic),
        ]
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
    let fd_limit = machine::raise_fd_limit();
    let p = if args.smoke {
        Plan {
            rounds: 1,
            first_bytes: 5,
            rate_secs: 1,
            stream: 4 << 20,
            pings: 50,
        }
    } else {
        Plan {
            rounds: 3,
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
    let cluster = Cluster::new(&["q", "t"]);
    let (echo, sink) = rt.block_on(async { (tcp::echo().await, tcp::sink().await) });
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
    let ports = &hub.services;
    let echo_paths = Paths {
        direct: echo,
        tls: ports["echo_t"],
        quic: ports["echo_q"],
    };
    let sink_paths = Paths {
        direct: sink,
        tls: ports["sink_t"],
        quic: ports["sink_q"],
    };
    let udp_paths = Paths {
        direct: udp_echo_home,
        tls: ports["udp_t"],
        quic: ports["udp_q"],
    };

    let (mut out, mut js) = common::begin("QUIC", fd_limit);

    rt.block_on(async {
        // Connect to first byte.
        let gap = Duration::from_millis(20);
        let mut row = serde_json::Map::new();
        let mut line = "connect → first byte p50/p99 µs:".to_string();
        let mut p50 = [0.0; 3];
        for (i, (name, to)) in echo_paths.each().into_iter().enumerate() {
            let mut v = first_byte(to, p.first_bytes, gap).await;
            let (a, b) = (us(percentile(&mut v, 0.5)), us(percentile(&mut v, 0.99)));
            p50[i] = a;
            line += &format!("  {name} {a:.0}/{b:.0}");
            row.insert(name.into(), json!([a, b]));
        }
        line += &format!("  quic/direct {:.2}×", p50[2] / p50[0]);
        say!(out, "{line}");
        js.insert("first_byte_us".into(), serde_json::Value::Object(row));

        // New TCP players per second.
        let dur = Duration::from_secs(p.rate_secs);
        let mut rates = [0.0; 3];
        for (i, (_, to)) in echo_paths.each().into_iter().enumerate() {
            rates[i] = connection_rate(to, 16, dur).await;
        }
        say!(
            out,
            "new TCP players/s (16 at a time): direct {:.0}  tls {:.0}  quic {:.0}  quic/tls {:.1}×",
            rates[0],
            rates[1],
            rates[2],
            rates[2] / rates[1]
        );
        js.insert(
            "players_per_sec".into(),
            json!({"direct": rates[0], "tls": rates[1], "quic": rates[2]}),
        );

        // One-stream throughput, rounds alternating.
        let mut tp: [Vec<f64>; 3] = Default::default();
        for _ in 0..p.rounds {
            for (i, (_, to)) in sink_paths.each().into_iter().enumerate() {
                tp[i].push(throughput_parallel(to, 1, p.stream).await);
            }
        }
        let [a, b, c] = tp.each_mut().map(|v| median(v));
        say!(
            out,
            "throughput 1 stream MB/s: direct {a:.0}  tls {b:.0}  quic {c:.0}  quic/tls {:.2}",
            c / b
        );
        js.insert(
            "throughput_1_stream_mbps".into(),
            json!({"direct": a, "tls": b, "quic": c}),
        );
    });

    // UDP echo, without and with loss on the hub–ep path.
    let root = rustix::process::geteuid().is_root();
    for loss in [0u32, 2] {
        let _rules = if loss > 0 {
            let rules = if root {
                Loss::apply(loss, &[hub.control.port(), hub.channel.port()], quic.port())
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
        for (name, to) in udp_paths.each() {
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
            line += &format!("  {name} {a:.0}/{b:.0} ({pct:.1} %)");
            row.insert(
                name.into(),
                json!({"p50_us": a, "p99_us": b, "lost_percent": pct}),
            );
        }
        say!(out, "{line}");
        js.insert(
            format!("udp_echo_loss_{loss}"),
            serde_json::Value::Object(row),
        );
    }
    drop(eps);
    common::write_json(&args.json, &js);
}
