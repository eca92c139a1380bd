//! `cargo bench --bench tunnel [-- --smoke] [--json PATH] [--no-memory] [--memory-only] [--quic] [--second-hub] [--fairness [--no-uplink]] [--router-only] [--router-mbit N] [--router-rtt-ms N]`
//! (`--fairness-uplink` and `--fairness-router` are internal: `--fairness`
//! again, in the shaped namespace it makes as root, and behind the router
//! it emulates there; `--router-only` runs only the latter)
//!
//! Runs the release `ferry` as two processes (hub and ep) on loopback with
//! certificates made here, plus this process's own sink and echo services
//! and load generator. Every ferry figure is taken in the same run as the
//! same figure over a direct connection, alternating, medians of rounds.

#[path = "../common/mod.rs"]
mod common;
mod fairness;
mod router;

use common::{
    Args, Json, cluster::Cluster, ferryproc::Ferry as Proc, hop::Hop, machine, measure::*,
    plainhop, say, tcp,
};
use serde_json::json;
use std::{net::SocketAddr, time::Duration};

struct Plan {
    rounds: usize,
    one_stream: u64,
    parallel_each: u64,
    pings: usize,
    first_bytes: usize,
    rate_secs: u64,
    idle: Vec<usize>,
    /// How long the second-hub figure watches two idle eps.
    hub_idle_secs: u64,
    /// Only the idle-player memory section (`--memory-only`).
    memory_only: bool,
    /// Hub and ep over QUIC instead of TLS over TCP (`--quic`).
    quic: bool,
}

const MIB: u64 = 1 << 20;

fn plan(smoke: bool) -> Plan {
    if smoke {
        Plan {
            rounds: 1,
            one_stream: 4 * MIB,
            parallel_each: MIB / 2,
            pings: 20,
            first_bytes: 5,
            rate_secs: 1,
            idle: vec![20],
            hub_idle_secs: 2,
            memory_only: false,
            quic: false,
        }
    } else {
        Plan {
            rounds: 5,
            one_stream: 512 * MIB,
            parallel_each: 64 * MIB,
            pings: 2000,
            first_bytes: 200,
            rate_secs: 5,
            idle: vec![1000, 10000],
            hub_idle_secs: 60,
            memory_only: false,
            quic: false,
        }
    }
}

fn main() {
    let args = Args::parse("tunnel");
    plainhop::serve_if_asked(&args);
    let fd_limit = machine::raise_fd_limit();
    let mut plan = plan(args.smoke);
    // For trying levers quickly: skip the idle-player memory section.
    if args.has("--no-memory") {
        plan.idle.clear();
    }
    plan.memory_only = args.has("--memory-only");
    plan.quic = args.has("--quic");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The second-hub figure alone (a minute of two idle eps).
    if args.has("--second-hub") {
        let mut out = String::new();
        let v = rt.block_on(second_hub(&mut out, plan.hub_idle_secs));
        let mut js = Json::new();
        js.insert("second_hub".into(), v);
        return common::write_json(&args.json, &js);
    }
    // Small round trips beside a bulk download (`--fairness`), alone.
    // (`--fairness-uplink`, `--fairness-router`: the same inside the
    // shaped namespace, behind the emulated router.)
    let uplink = args.has(fairness::INSIDE);
    let routed = args.has(fairness::INSIDE_ROUTER);
    let mbit = args
        .value("--router-mbit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(fairness::ROUTER_MBIT)
        .max(1);
    let rtt_ms = args
        .value("--router-rtt-ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(fairness::ROUTER_RTT_MS)
        .clamp(1, 1000);
    if args.has("--router-only") {
        return common::write_json(&args.json, &fairness::on_router(args.smoke, mbit, rtt_ms));
    }
    if args.has("--fairness") || uplink || routed {
        let mut p = fairness::Plan {
            rounds: if args.smoke { 1 } else { 5 },
            pings: if args.smoke { 100 } else { 2000 },
            hub_ip: if uplink { "127.0.0.2" } else { "127.0.0.1" },
            routed: None,
            path: uplink.then(|| (format!("a {} uplink, FIFO", fairness::UPLINK), "uplink_")),
            home: fairness::Home {
                // On the shaped uplink, what is sent to 127.0.0.2 is shaped.
                player: uplink.then_some("127.0.0.2"),
                ..fairness::LOOPBACK_HOME
            },
        };
        if routed {
            let path = fairness::router_path(mbit, rtt_ms);
            if let Err(e) = router::start(path) {
                println!("fairness behind an emulated router: skipped ({e})");
                return common::write_json(&args.json, &Json::new());
            }
            // Every round trip takes the path's 20 ms: fewer of them.
            (p.rounds, p.pings) = if args.smoke { (1, 20) } else { (3, 400) };
            p.hub_ip = router::HUB_BIND;
            p.routed = Some((router::HUB_DIALED, router::EP_SEEN));
            p.path = Some((path.describe(), "router_"));
            p.home = fairness::Home {
                listen: router::HOME,
                player: Some(router::HUB_BIND),
                seen: router::EP_SEEN,
            };
        }
        let js = rt.block_on(async {
            let (mut out, mut js) = common::begin("fairness", fd_limit);
            fairness::run(&p, &mut out, &mut js).await;
            js
        });
        let mut js = js;
        if !uplink && !routed && !args.has("--no-uplink") {
            js.extend(fairness::on_thin_uplink(args.smoke));
            js.extend(fairness::on_router(args.smoke, mbit, rtt_ms));
        }
        return common::write_json(&args.json, &js);
    }
    let js = rt.block_on(run(&plan, fd_limit));
    common::write_json(&args.json, &js);
}

struct Setup {
    _cluster: Cluster,
    hub: Proc,
    ep: Proc,
    _hops: (Hop, Hop),
    /// Sink and echo through two plain-TCP forwarding processes.
    plain: (SocketAddr, SocketAddr),
    sink: (SocketAddr, SocketAddr),
    echo: (SocketAddr, SocketAddr),
    cold: SocketAddr,
}

/// `quic`: the hub opens its QUIC door and the ep serves over it
/// (`--quic`); else TLS over TCP.
async fn setup(quic: bool) -> Setup {
    let cluster = Cluster::new(&["bench"]);
    let (sink, echo) = (tcp::sink().await, tcp::echo().await);
    let hub = cluster.hub(
        if quic { "quic = \"127.0.0.1:0\"\n" } else { "" },
        "[services.sink]\nbind = \"127.0.0.1:0\"\n[services.echo]\nbind = \"127.0.0.1:0\"\n\
         [services.cold]\nbind = \"127.0.0.1:0\"\npool_size = 0\n\
         # One load generator on loopback: the player door's per-address\n\
         # limits would refuse it, so they are lifted here.\n\
         [players]\nmax_players_per_ip = 1000000\nplayer_rate_per_ip = \"1000000/s\"\n",
        3,
    );
    let transport = cluster.transport(&hub, quic);
    let ep = cluster.ep(
        &hub,
        "bench",
        // The memory figure holds 10,000 idle players on one service.
        &format!("max_players = 1000000\n{transport}"),
        &format!(
            "[services.sink]\nlocal = \"{sink}\"\n[services.echo]\nlocal = \"{echo}\"\n[services.cold]\nlocal = \"{echo}\"\n"
        ),
    );
    let (hub, ports) = (hub.proc, hub.services);
    let (far, far_addrs) = plainhop::spawn(&[sink, echo]);
    let (near, plain) = plainhop::spawn(&far_addrs);
    Setup {
        _cluster: cluster,
        hub,
        ep,
        _hops: (near, far),
        plain: (plain[0], plain[1]),
        sink: (sink, ports["sink"]),
        echo: (echo, ports["echo"]),
        cold: ports["cold"],
    }
}

async fn run(p: &Plan, fd_limit: u64) -> Json {
    let s = setup(p.quic).await;
    let (mut out, mut js) = common::begin("tunnel", fd_limit);
    if !p.memory_only {
        speed(&s, p, &mut out, &mut js).await;
    }
    memory(&s, p, fd_limit, &mut out, &mut js).await;
    if !p.memory_only {
        js.insert(
            "second_hub".into(),
            second_hub(&mut out, p.hub_idle_secs).await,
        );
    }
    js
}

/// Throughput, CPU per GiB, round trips, first bytes, new connections.
async fn speed(s: &Setup, p: &Plan, out: &mut String, js: &mut Json) {
    // Throughput: one stream, then 8, alternating direct and ferry.
    let (cpu_hub0, cpu_ep0) = (s.hub.cpu_secs(), s.ep.cpu_secs());
    let mut ferry_bytes = 0u64;
    for (label, streams, each) in [
        ("1 stream", 1usize, p.one_stream),
        ("8 streams", 8, p.parallel_each),
    ] {
        let (mut direct, mut plain, mut tunnel) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..p.rounds {
            direct.push(throughput_parallel(s.sink.0, streams, each).await);
            plain.push(throughput_parallel(s.plain.0, streams, each).await);
            tunnel.push(throughput_parallel(s.sink.1, streams, each).await);
            ferry_bytes += streams as u64 * each;
        }
        let (d, pl, f) = (median(&mut direct), median(&mut plain), median(&mut tunnel));
        say!(
            out,
            "throughput {label:<10} direct {d:>6.0} MB/s  plain 2-hop {pl:>6.0} MB/s  ferry {f:>6.0} MB/s  ferry/direct {:.2}  ferry/plain {:.2}",
            f / d,
            f / pl
        );
        js.insert(
            format!("throughput_{}", label.replace(' ', "_")),
            json!({"direct_mbps": d, "plain_2hop_mbps": pl, "ferry_mbps": f, "ratio": f / d, "ratio_to_plain": f / pl}),
        );
    }
    let gib = ferry_bytes as f64 / (1u64 << 30) as f64;
    let (hub_cpu, ep_cpu) = (
        (s.hub.cpu_secs() - cpu_hub0) / gib,
        (s.ep.cpu_secs() - cpu_ep0) / gib,
    );
    say!(
        out,
        "cpu per GiB forwarded: hub {hub_cpu:.2} s, ep {ep_cpu:.2} s"
    );
    js.insert(
        "cpu_seconds_per_gib".into(),
        json!({"hub": hub_cpu, "ep": ep_cpu}),
    );

    // Round-trip latency of small messages.
    for size in [1usize, 1024, 16 * 1024] {
        let mut d = ping_pong(s.echo.0, size, p.pings).await;
        let mut pl = ping_pong(s.plain.1, size, p.pings).await;
        let mut f = ping_pong(s.echo.1, size, p.pings).await;
        let q = |v: &mut Vec<Duration>| (us(percentile(v, 0.5)), us(percentile(v, 0.99)));
        let (d, pl, f) = (q(&mut d), q(&mut pl), q(&mut f));
        say!(
            out,
            "rtt {size:>5} B  p50/p99 µs: direct {:.0}/{:.0}  plain 2-hop {:.0}/{:.0}  ferry {:.0}/{:.0}  ferry-direct {:.0}/{:.0}  ferry-plain {:.0}/{:.0}",
            d.0,
            d.1,
            pl.0,
            pl.1,
            f.0,
            f.1,
            f.0 - d.0,
            f.1 - d.1,
            f.0 - pl.0,
            f.1 - pl.1
        );
        js.insert(
            format!("rtt_{size}B_us"),
            json!({"direct": [d.0, d.1], "plain_2hop": [pl.0, pl.1], "ferry": [f.0, f.1], "added_vs_direct": [f.0 - d.0, f.1 - d.1], "added_vs_plain": [f.0 - pl.0, f.1 - pl.1]}),
        );
    }

    // Connect to first echoed byte.
    let gap = Duration::from_millis(20);
    let mut d = first_byte(s.echo.0, p.first_bytes, gap).await;
    let mut pl = first_byte(s.plain.1, p.first_bytes, gap).await;
    let mut warm = first_byte(s.echo.1, p.first_bytes, gap).await;
    let mut cold = first_byte(s.cold, p.first_bytes, gap).await;
    let row = |v: &mut Vec<Duration>| (us(percentile(v, 0.5)), us(percentile(v, 0.99)));
    let (d, pl, w, c) = (row(&mut d), row(&mut pl), row(&mut warm), row(&mut cold));
    say!(
        out,
        "first byte   direct      p50 {:>7.1} µs p99 {:>7.1} µs",
        d.0,
        d.1
    );
    say!(
        out,
        "first byte   plain 2-hop p50 {:>7.1} µs p99 {:>7.1} µs",
        pl.0,
        pl.1
    );
    say!(
        out,
        "first byte   pool warm   p50 {:>7.1} µs p99 {:>7.1} µs ({:.1}× direct, {:.1}× plain 2-hop)",
        w.0,
        w.1,
        w.0 / d.0,
        w.0 / pl.0
    );
    say!(
        out,
        "first byte   pool off    p50 {:>7.1} µs p99 {:>7.1} µs",
        c.0,
        c.1
    );
    js.insert(
        "first_byte_us".into(),
        json!({"direct": [d.0, d.1], "plain_2hop": [pl.0, pl.1], "warm": [w.0, w.1], "cold": [c.0, c.1]}),
    );

    // Sustained new connections.
    let dur = Duration::from_secs(p.rate_secs);
    let rd = connection_rate(s.echo.0, 16, dur).await;
    let rf = connection_rate(s.echo.1, 16, dur).await;
    say!(
        out,
        "new connections/s (16 at a time): direct {rd:.0}, ferry {rf:.0}"
    );
    js.insert(
        "connections_per_sec".into(),
        json!({"direct": rd, "ferry": rf}),
    );
}

/// Memory with idle players.
async fn memory(s: &Setup, p: &Plan, fd_limit: u64, out: &mut String, js: &mut Json) {
    let (hub0, ep0) = (
        s.hub.status_kib("VmRSS:") * 1024,
        s.ep.status_kib("VmRSS:") * 1024,
    );
    say!(
        out,
        "memory   0 idle players: hub {:>7.1} MiB, ep {:>7.1} MiB",
        hub0 as f64 / MIB as f64,
        ep0 as f64 / MIB as f64
    );
    let mut mem = vec![json!({"players": 0, "hub_rss": hub0, "ep_rss": ep0})];
    let mut held = Vec::new();
    for &n in &p.idle {
        let failed = idle_players(s.echo.1, n - held.len(), &mut held).await;
        if failed > 0 {
            say!(
                out,
                "memory: {failed} of {n} idle players could not connect (fd limit {fd_limit}?)"
            );
        }
        let n = held.len();
        let (h, e) = (
            s.hub.status_kib("VmRSS:") * 1024,
            s.ep.status_kib("VmRSS:") * 1024,
        );
        let (per_hub, per_ep) = (
            (h.saturating_sub(hub0)) / n as u64,
            (e.saturating_sub(ep0)) / n as u64,
        );
        say!(
            out,
            "memory {n:>5} idle players: hub {:>7.1} MiB, ep {:>7.1} MiB; per player hub {:.1} KiB, ep {:.1} KiB",
            h as f64 / MIB as f64,
            e as f64 / MIB as f64,
            per_hub as f64 / 1024.0,
            per_ep as f64 / 1024.0
        );
        mem.push(json!({"players": n, "hub_rss": h, "ep_rss": e, "hub_bytes_per_player": per_hub, "ep_bytes_per_player": per_ep}));
    }
    js.insert("memory".into(), json!(mem));
    lag_costs(&held, out, js);
}

/// What the players table costs: one `TCP_INFO` read per TCP player (the
/// hub's sampler every 10 s, and each `/api/players`), timed over the
/// idle players' sockets; and the history's memory per service.
fn lag_costs(held: &[tokio::net::TcpStream], out: &mut String, js: &mut Json) {
    use std::os::fd::AsRawFd;
    let (began, mut reads) = (std::time::Instant::now(), 0u64);
    for _ in 0..10 {
        for s in held {
            if ferry::tcp_info::rtt(s.as_raw_fd()).is_some() {
                reads += 1;
            }
        }
    }
    let per_read_us = began.elapsed().as_secs_f64() * 1e6 / reads.max(1) as f64;
    let history = ferry::history::POINTS * std::mem::size_of::<ferry::history::Point>();
    say!(
        out,
        "players table: TCP_INFO {per_read_us:.2} µs per read ({reads} reads); history {:.1} KiB per service per hour",
        history as f64 / 1024.0
    );
    js.insert(
        "players_table".into(),
        json!({"tcp_info_us": per_read_us, "history_bytes_per_service": history}),
    );
}

/// What a second hub costs an ep at idle: RSS, and CPU over `secs`, of an
/// ep serving one hub against one serving two (each hub its own process,
/// heartbeats at the default 5 s).
async fn second_hub(out: &mut String, secs: u64) -> serde_json::Value {
    let cluster = Cluster::new(&["one", "two"]);
    let echo = tcp::echo().await;
    let tables = "[services.echo]\nbind = \"127.0.0.1:0\"\n";
    let (a, b) = (
        cluster.hub_named("hub-a", "", tables, 1),
        cluster.hub_named("hub-b", "", tables, 1),
    );
    let service = format!("[services.echo]\nlocal = \"{echo}\"\n");
    let one = cluster.ep(&a, "one", "", &service);
    let two = cluster.ep_of(&[&a, &b], "two", "", &service);
    let (cpu1, cpu2) = (one.cpu_secs(), two.cpu_secs());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = |p: &Proc, at: f64| (p.cpu_secs() - at) / secs as f64 * 100.0;
    let (c1, c2) = (cpu(&one, cpu1), cpu(&two, cpu2));
    let (r1, r2) = (
        one.status_kib("VmRSS:") * 1024,
        two.status_kib("VmRSS:") * 1024,
    );
    say!(
        out,
        "ep at idle over {secs} s: one hub {:.1} MiB, {c1:.3} % CPU; two hubs {:.1} MiB, {c2:.3} % CPU; the second hub costs {:.0} KiB",
        r1 as f64 / MIB as f64,
        r2 as f64 / MIB as f64,
        (r2 as f64 - r1 as f64) / 1024.0
    );
    json!({"secs": secs, "one_hub": {"rss": r1, "cpu_percent": c1}, "two_hubs": {"rss": r2, "cpu_percent": c2}})
}
