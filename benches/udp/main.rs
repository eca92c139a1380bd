//! `cargo bench --bench udp [-- --smoke] [--json PATH]`
//!
//! UDP through the release `ferry` (hub and ep processes on loopback),
//! against a direct path and a plain UDP relay of the same shape (two
//! forwarding processes, a connected socket per flow, no TLS), each
//! figure taken in the same run: 64-byte echo round trips, loss and
//! jitter of paced 1,200-byte datagrams, new flows per second, hub memory
//! per idle flow, and CPU per GiB.

#[path = "../common/mod.rs"]
mod common;
mod hop;

use common::{Args, cluster::Cluster, machine, measure::median, say, udp};
use serde_json::json;
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

struct Plan {
    rounds: usize,
    pings: usize,
    rate_secs: f64,
    flow_secs: f64,
    idle_flows: usize,
}

fn plan(smoke: bool) -> Plan {
    if smoke {
        Plan {
            rounds: 1,
            pings: 50,
            rate_secs: 0.3,
            flow_secs: 0.3,
            idle_flows: 20,
        }
    } else {
        Plan {
            rounds: 3,
            pings: 2000,
            rate_secs: 3.0,
            flow_secs: 3.0,
            idle_flows: 1000,
        }
    }
}

struct Paths {
    direct: SocketAddr,
    plain: SocketAddr,
    ferry: SocketAddr,
}

impl Paths {
    fn each(&self) -> [(&'static str, SocketAddr); 3] {
        [
            ("direct", self.direct),
            ("plain 2-hop", self.plain),
            ("ferry", self.ferry),
        ]
    }
}

fn main() {
    let args = Args::parse("udp");
    hop::serve_if_asked(&args);
    let fd_limit = machine::raise_fd_limit();
    let p = plan(args.smoke);
    let cluster = Cluster::new(&["bench"]);
    let echo = udp::echo();
    let sink = udp::Sink::start();
    let hub = cluster.hub(
        "",
        "[services.echo]\nbind = \"127.0.0.1:0\"\ntype = \"udp\"\n\
         [services.sink]\nbind = \"127.0.0.1:0\"\ntype = \"udp\"\n\
         [services.burst]\nbind = \"127.0.0.1:0\"\ntype = \"udp\"\nudp_idle_timeout = \"2s\"\n\
         # One load generator on loopback: lift the per-address limits.\n\
         [players]\nmax_udp_flows = 100000\nmax_udp_flows_per_ip = 1000000\n",
        3,
    );
    let ep = cluster.ep(
        &hub,
        "bench",
        // The new-flow figure holds thousands of one-shot flows at once.
        "max_players = 1000000\n",
        &format!(
            "[services.echo]\nlocal = \"{echo}\"\n[services.sink]\nlocal = \"{}\"\n\
             [services.burst]\nlocal = \"{echo}\"\n",
            sink.addr
        ),
    );
    let (hub, ports) = (hub.proc, hub.services);
    let (_far, far) = hop::spawn(&[echo, sink.addr, echo]);
    let (_near, near) = hop::spawn(&far);
    let echo_paths = Paths {
        direct: echo,
        plain: near[0],
        ferry: ports["echo"],
    };
    let burst_paths = Paths {
        direct: echo,
        plain: near[2],
        ferry: ports["burst"],
    };
    let sink_paths = Paths {
        direct: sink.addr,
        plain: near[1],
        ferry: ports["sink"],
    };

    let (mut out, mut js) = common::begin("UDP", fd_limit);

    // Round trips of 64-byte datagrams, one flow per path, rounds alternating.
    let mut rtt: [Vec<Duration>; 3] = Default::default();
    for _ in 0..p.rounds {
        for (i, (_, to)) in echo_paths.each().iter().enumerate() {
            rtt[i].extend(ping(*to, 64, p.pings));
        }
    }
    let q = |v: &mut Vec<Duration>| {
        v.sort();
        let at = |f: f64| v[((v.len() - 1) as f64 * f) as usize].as_secs_f64() * 1e6;
        (at(0.5), at(0.99))
    };
    let [d0, p0, f0] = rtt.each_mut().map(q);
    say!(
        out,
        "rtt 64 B p50/p99 µs: direct {:.0}/{:.0}  plain 2-hop {:.0}/{:.0}  ferry {:.0}/{:.0}  ferry-direct {:.0}/{:.0}",
        d0.0,
        d0.1,
        p0.0,
        p0.1,
        f0.0,
        f0.1,
        f0.0 - d0.0,
        f0.1 - d0.1
    );
    js.insert(
        "rtt_64B_us".into(),
        json!({"direct": [d0.0, d0.1], "plain_2hop": [p0.0, p0.1], "ferry": [f0.0, f0.1]}),
    );

    // Loss and jitter of paced 1,200-byte datagrams, one way (player → home).
    let (cpu0, bytes0) = (hub.cpu_secs() + ep.cpu_secs(), sink.bytes());
    let mut ferry_bytes = 0u64;
    let mut ferry_cpu = 0.0;
    for mbit in [50u64, 200] {
        let mut row = serde_json::Map::new();
        let mut line = format!("{mbit:>3} Mbit/s of 1,200 B:");
        for (name, to) in sink_paths.each() {
            let mut losses = Vec::new();
            let mut jitters = Vec::new();
            for _ in 0..p.rounds {
                let (c0, b0) = (hub.cpu_secs() + ep.cpu_secs(), sink.bytes());
                let (sent, got, jitter) = sink.run(to, mbit, p.rate_secs);
                if name == "ferry" {
                    ferry_cpu += hub.cpu_secs() + ep.cpu_secs() - c0;
                    ferry_bytes += sink.bytes() - b0;
                }
                losses.push(100.0 * (sent - got.min(sent)) as f64 / sent as f64);
                jitters.push(jitter);
            }
            let (loss, jitter) = (median(&mut losses), median(&mut jitters));
            line += &format!("  {name} loss {loss:.3} % jitter {jitter:.3} ms;");
            row.insert(
                name.into(),
                json!({"loss_percent": loss, "jitter_ms": jitter}),
            );
        }
        say!(out, "{line}");
        js.insert(format!("paced_{mbit}mbit"), serde_json::Value::Object(row));
    }
    let _ = (cpu0, bytes0);
    let gib = ferry_bytes as f64 / (1u64 << 30) as f64;
    say!(
        out,
        "cpu per GiB through ferry (hub + ep, paced runs): {:.2} s",
        ferry_cpu / gib
    );
    js.insert("cpu_seconds_per_gib".into(), json!(ferry_cpu / gib));

    // Hub memory per idle flow: flows answered once, then silent.
    let hub0 = hub.status_kib("VmRSS:");
    let ep0 = ep.status_kib("VmRSS:");
    let mut held = Vec::new();
    for _ in 0..p.idle_flows {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.send_to(b"hold", echo_paths.ferry).unwrap();
        let mut b = [0u8; 16];
        if s.recv_from(&mut b).is_ok() {
            held.push(s);
        }
    }
    let n = held.len().max(1) as f64;
    let (hub1, ep1) = (hub.status_kib("VmRSS:"), ep.status_kib("VmRSS:"));
    let per_hub = hub1.saturating_sub(hub0) as f64 / n;
    let per_ep = ep1.saturating_sub(ep0) as f64 / n;
    say!(
        out,
        "memory {} idle flows: hub +{:.1} MiB ({per_hub:.1} KiB per flow), ep +{:.1} MiB ({per_ep:.1} KiB per flow)",
        held.len(),
        hub1.saturating_sub(hub0) as f64 / 1024.0,
        ep1.saturating_sub(ep0) as f64 / 1024.0
    );
    js.insert(
        "memory_per_idle_flow_kib".into(),
        json!({"flows": held.len(), "hub": per_hub, "ep": per_ep}),
    );
    // New flows per second: 16 at a time, each a fresh socket asking once.
    let mut rates = serde_json::Map::new();
    let mut line = "new flows/s (16 at a time):".to_string();
    for (name, to) in burst_paths.each() {
        let r = new_flows(to, 16, p.flow_secs);
        line += &format!("  {name} {r:.0}");
        rates.insert(name.into(), json!(r));
    }
    say!(out, "{line}");
    js.insert("new_flows_per_sec".into(), serde_json::Value::Object(rates));

    common::write_json(&args.json, &js);
}

/// `n` round trips of `size` bytes on one socket.
fn ping(to: SocketAddr, size: usize, n: usize) -> Vec<Duration> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let msg = vec![7u8; size];
    let mut buf = vec![0u8; 2048];
    // The first exchange makes the flow; it is not a round trip to time.
    let _ = s.send(&msg);
    let _ = s.recv(&mut buf);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.send(&msg).unwrap();
        if s.recv(&mut buf).is_ok() {
            out.push(t.elapsed());
        }
    }
    out
}

/// Flows made per second by `par` threads, each asking once per fresh
/// socket, for `secs`. Each socket has a loopback address of its own
/// (127.T.x.y), so no flow's address comes back while the last one with
/// it is still in a table: every flow is new to every relay.
fn new_flows(to: SocketAddr, par: usize, secs: f64) -> f64 {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let done: usize = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..par)
            .map(|t| {
                sc.spawn(move || {
                    let mut n = 0u32;
                    let mut buf = [0u8; 64];
                    while Instant::now() < end {
                        let ip = [127, 100 + t as u8, (n >> 8) as u8, (n & 0xff) as u8 | 1];
                        let s = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        s.send_to(b"new", to).unwrap();
                        if s.recv_from(&mut buf).is_ok() {
                            n += 1;
                        }
                    }
                    n as usize
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    done as f64 / secs
}
