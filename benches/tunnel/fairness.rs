//! `--fairness`: does a player's small round trip wait behind another
//! player's bulk download through the same ep? 64 B round trips alone,
//! beside a download at full speed, and beside a download capped by
//! `max_rate_per_player`, over TLS and over QUIC; p50/p99 and their ratio
//! to the round trips alone, medians of rounds.
//!
//! The download's source and its reader each run on a thread of their
//! own, so the bench's pinger does not queue behind them in this process.
//!
//! A `direct` row does the same with no ferry between: the player dials
//! home's services itself, from an address whose bytes from home cross
//! the same uplink (the shaped class, the router), so each path's own
//! share of the wait is on the page beside ferry's.

use super::common::{Json, cluster::Cluster, ferryproc::Ferry, measure::*, say, tcp};
use super::router;
use serde_json::json;
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The cap on the capped downloader (a home uplink's fair share).
const CAP: &str = "10 MB";

pub struct Plan {
    pub rounds: usize,
    pub pings: usize,
    /// Where the hub's doors for the ep bind: 127.0.0.2 when the hub–ep
    /// path is a shaped uplink (`on_thin_uplink`), the router's address
    /// behind an emulated router (`on_router`).
    pub hub_ip: &'static str,
    /// Behind the router: where the ep dials the hub, where the hub sees it.
    pub routed: Option<(&'static str, &'static str)>,
    /// What the path is, for the heading, and the JSON keys' infix.
    pub path: Option<(String, &'static str)>,
    pub home: Home,
}

/// Where home's services listen, and how a player reaches them with no
/// ferry between (the `direct` row).
#[derive(Clone, Copy)]
pub struct Home {
    pub listen: &'static str,
    /// The direct player's own address, bound before it dials, so what
    /// home sends it takes the uplink (None: any).
    pub player: Option<&'static str>,
    /// Home's address as the direct player dials it.
    pub seen: &'static str,
}

/// Home on this host's loopback, and the direct player beside it.
pub const LOOPBACK_HOME: Home = Home {
    listen: "127.0.0.1",
    player: None,
    seen: "127.0.0.1",
};

/// The home uplink `--fairness` also measures through, as root, in a
/// network namespace of its own: what the ep sends to the hub goes out at
/// this rate, one 1,500-byte packet at a time, through a FIFO.
pub const UPLINK: &str = "100mbit";

/// A hub and an ep over one transport serving an echo, an endless
/// download, and the same download capped.
struct Side {
    _cluster: Cluster,
    _hub: Ferry,
    _ep: Ferry,
    echo: SocketAddr,
    bulk: SocketAddr,
    capped: SocketAddr,
}

fn side(quic: bool, echo: SocketAddr, source: SocketAddr, p: &Plan) -> Side {
    let hub_ip = p.hub_ip;
    let mut cluster = Cluster::new(&["bench"]);
    cluster.hub_ip = hub_ip;
    cluster.routed = p.routed;
    let quic_door = format!("quic = \"{hub_ip}:0\"\n");
    let hub = cluster.hub(
        if quic { &quic_door } else { "" },
        &format!(
            "[services.echo]\nbind = \"127.0.0.1:0\"\n[services.bulk]\nbind = \"127.0.0.1:0\"\n\
             [services.capped]\nbind = \"127.0.0.1:0\"\nmax_rate_per_player = \"{CAP}\"\n\
             [players]\nmax_players_per_ip = 1000000\nplayer_rate_per_ip = \"1000000/s\"\n"
        ),
        3,
    );
    let transport = cluster.transport(&hub, quic);
    let ep = cluster.ep(
        &hub,
        "bench",
        &transport,
        &format!(
            "[services.echo]\nlocal = \"{echo}\"\n[services.bulk]\nlocal = \"{source}\"\n\
             [services.capped]\nlocal = \"{source}\"\n"
        ),
    );
    let ports = hub.services;
    Side {
        _cluster: cluster,
        _hub: hub.proc,
        _ep: ep,
        echo: ports["echo"],
        bulk: ports["bulk"],
        capped: ports["capped"],
    }
}

/// A service at home on `ip` that sends zeros to each connection until
/// it goes, on a thread of its own.
fn source(ip: &'static str) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let buf = vec![0u8; 256 * 1024];
                    while s.write_all(&buf).await.is_ok() {}
                });
            }
        });
    });
    rx.recv().unwrap()
}

/// A player's connection to `addr`, from `from` if given.
async fn dial(addr: SocketAddr, from: Option<&str>) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        let ip: IpAddr = ip.parse().unwrap();
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    socket.connect(addr).await.unwrap()
}

/// A player downloading from `addr` as fast as it can, on its own thread.
struct Download {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Download {
    fn start(addr: SocketAddr, from: Option<&'static str>) -> Download {
        let (stop, bytes) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (st, by) = (stop.clone(), bytes.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut s = dial(addr, from).await;
                let mut buf = vec![0u8; 256 * 1024];
                while !st.load(Ordering::Relaxed) {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => by.fetch_add(n as u64, Ordering::Relaxed),
                    };
                }
            });
        });
        Download {
            stop,
            bytes,
            thread: Some(thread),
        }
    }

    /// Waits until the transfer is past its first 4 MiB and 1.5 s (under
    /// way, and past a cap's burst: a quarter second of a 10 MB/s cap
    /// takes the first second of a 100 Mbit/s uplink to drain).
    async fn under_way(&self) {
        let begun = Instant::now();
        while self.bytes.load(Ordering::Relaxed) < 4 << 20
            || begun.elapsed() < Duration::from_millis(1500)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// p50, p99 (µs) of `pings` round trips of 64 B, and the download's MB/s
/// meanwhile (None: alone); the player's connections from `from`.
async fn pings_beside(
    echo: SocketAddr,
    bulk: Option<SocketAddr>,
    from: Option<&'static str>,
    pings: usize,
) -> [f64; 3] {
    let download = bulk.map(|b| Download::start(b, from));
    if let Some(d) = &download {
        d.under_way().await;
    }
    let so_far = || {
        download
            .as_ref()
            .map_or(0, |d| d.bytes.load(Ordering::Relaxed))
    };
    let (t0, b0) = (Instant::now(), so_far());
    let mut rtts = ping_pong_on(dial(echo, from).await, 64, pings).await;
    // A download's rate wants a window longer than a few fast round trips.
    let window = Duration::from_millis(250);
    if download.is_some() && t0.elapsed() < window {
        tokio::time::sleep(window - t0.elapsed()).await;
    }
    let mbps = (so_far() - b0) as f64 / t0.elapsed().as_secs_f64() / 1e6;
    [
        us(percentile(&mut rtts, 0.5)),
        us(percentile(&mut rtts, 0.99)),
        mbps,
    ]
}

/// What one row's player dials: the echo, the download, the capped one
/// (none directly: the cap is ferry's), and from where.
struct Targets {
    echo: SocketAddr,
    bulk: SocketAddr,
    capped: Option<SocketAddr>,
    from: Option<&'static str>,
}

/// The three conditions, each a row of [p50, p99, MB/s] medians (NaN where
/// there is no capped download).
async fn one_row(t: &Targets, p: &Plan) -> [[f64; 3]; 3] {
    let mut runs: [Vec<[f64; 3]>; 3] = Default::default();
    for _ in 0..p.rounds {
        runs[0].push(pings_beside(t.echo, None, t.from, p.pings).await);
        runs[1].push(pings_beside(t.echo, Some(t.bulk), t.from, p.pings).await);
        runs[2].push(match t.capped {
            Some(c) => pings_beside(t.echo, Some(c), t.from, p.pings).await,
            None => [f64::NAN; 3],
        });
    }
    runs.map(|rows| {
        std::array::from_fn(|i| median(&mut rows.iter().map(|r| r[i]).collect::<Vec<_>>()))
    })
}

pub async fn run(p: &Plan, out: &mut String, js: &mut Json) {
    let h = p.home;
    let (echo, source) = (tcp::echo_at(h.listen).await, source(h.listen));
    heading(p, out);
    let seen = |a: SocketAddr| SocketAddr::new(h.seen.parse().unwrap(), a.port());
    let direct = Targets {
        echo: seen(echo),
        bulk: seen(source),
        capped: None,
        from: h.player,
    };
    let direct = one_row(&direct, p).await;
    report(p, "direct", direct, out, js);
    for (name, quic) in [("TLS", false), ("QUIC", true)] {
        let s = side(quic, echo, source, p);
        let t = Targets {
            echo: s.echo,
            bulk: s.bulk,
            capped: Some(s.capped),
            from: None,
        };
        let rows = one_row(&t, p).await;
        report(p, name, rows, out, js);
    }
}

fn heading(p: &Plan, out: &mut String) {
    say!(
        out,
        "fairness{}: 64 B round trips through one ep, alone and beside another player's download; \
         p50/p99 µs, medians of {} rounds of {} round trips; direct: no ferry between, the same path",
        match &p.path {
            Some((path, _)) => format!(" on {path} (own netns, MTU 1500)"),
            None => String::new(),
        },
        p.rounds,
        p.pings
    );
    say!(
        out,
        "{:<6} {:>14} {:>24} {:>10} {:>10} {:>32} {:>10}",
        "",
        "alone",
        "beside a download",
        "p99 ratio",
        "p99 added",
        format!("beside one capped at {CAP}/s"),
        "p99 ratio"
    );
}

/// One row of the table and its JSON. "p99 added" is what a player
/// notices beside the download (p99 beside it less p99 alone, µs), to read
/// against the direct row's: the path's own share.
fn report(p: &Plan, name: &str, rows: [[f64; 3]; 3], out: &mut String, js: &mut Json) {
    let [alone, bulk, capped] = rows;
    let (cell, ratio) = match capped[0].is_nan() {
        true => ("-".to_string(), "-".to_string()),
        false => (
            format!("{:.0}/{:.0} ({:.2} MB/s)", capped[0], capped[1], capped[2]),
            format!("{:.1}×", capped[1] / alone[1]),
        ),
    };
    say!(
        out,
        "{name:<6} {:>14} {:>24} {:>9.1}× {:>10.0} {:>32} {:>10}",
        format!("{:.0}/{:.0}", alone[0], alone[1]),
        format!("{:.0}/{:.0} ({:.2} MB/s)", bulk[0], bulk[1], bulk[2]),
        bulk[1] / alone[1],
        bulk[1] - alone[1],
        cell,
        ratio
    );
    let mut row = json!({
        "alone_us": [alone[0], alone[1]],
        "download_us": [bulk[0], bulk[1]], "download_mbps": bulk[2],
        "p99_ratio": bulk[1] / alone[1],
        "p99_added_us": bulk[1] - alone[1],
    });
    if !capped[0].is_nan() {
        row["capped_us"] = json!([capped[0], capped[1]]);
        row["capped_mbps"] = json!(capped[2]);
        row["cap"] = json!(CAP);
        row["capped_p99_ratio"] = json!(capped[1] / alone[1]);
    }
    let infix = p.path.as_ref().map_or("", |(_, key)| key);
    js.insert(format!("fairness_{infix}{}", name.to_lowercase()), row);
}

/// The flags the bench re-executes itself with inside a namespace: the
/// shaped uplink, and the emulated router.
pub const INSIDE: &str = "--fairness-uplink";
pub const INSIDE_ROUTER: &str = "--fairness-router";

/// Loopback as the internet's packets are: MTU 1500, no segmentation
/// offload.
const MTU_1500: &str =
    "ip link set lo mtu 1500 up && ip link set dev lo gso_max_size 1500 gso_max_segs 1";

/// The figure again where the hub–ep path, not this machine's two cores,
/// is what the download fills: in a fresh network namespace (as root;
/// skipped with a message otherwise) whose loopback has MTU 1500 and no
/// segmentation offload, and where packets to the hub's doors (bound on
/// 127.0.0.2) leave through an HTB class of `UPLINK` with a FIFO, as on a
/// home connection's uplink; everything else is unshaped.
pub fn on_thin_uplink(smoke: bool) -> Json {
    let shape = format!(
        "{MTU_1500} && \
         tc qdisc add dev lo root handle 1: htb default 2 r2q 1000 && \
         tc class add dev lo parent 1: classid 1:1 htb rate {UPLINK} quantum 1514 && \
         tc qdisc add dev lo parent 1:1 pfifo limit 1000 && \
         tc class add dev lo parent 1: classid 1:2 htb rate 40gbit quantum 60000 && \
         tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip dst 127.0.0.2/32 flowid 1:1"
    );
    in_namespace(smoke, &shape, INSIDE, &format!("a {UPLINK} uplink"), &[])
}

/// The path `on_router` emulates: a home uplink of `mbit` Mbit/s (by
/// default `UPLINK`'s rate; `--router-mbit N`), a router FIFO of 100 ms at
/// that rate (home routers often hold more), and a round trip of
/// `rtt_ms` (by default `ROUTER_RTT_MS`, a nearby cloud region;
/// `--router-rtt-ms N`).
pub fn router_path(mbit: u64, rtt_ms: u64) -> router::Path {
    router::Path {
        uplink_bps: mbit * 1_000_000,
        buffer: (mbit * 12_500) as usize,
        rtt: Duration::from_millis(rtt_ms),
    }
}

/// The router's uplink when `--router-mbit` does not say.
pub const ROUTER_MBIT: u64 = 100;
/// The path's round trip when `--router-rtt-ms` does not say.
pub const ROUTER_RTT_MS: u64 = 20;

/// The figure once more behind an emulated home router (`router`): the
/// queue a download fills is the router's, a hop away, where the host's
/// small-queue limit does not reach, and the path has a round trip.
pub fn on_router(smoke: bool, mbit: u64, rtt_ms: u64) -> Json {
    let extra = [
        "--router-mbit".to_string(),
        mbit.to_string(),
        "--router-rtt-ms".to_string(),
        rtt_ms.to_string(),
    ];
    in_namespace(smoke, MTU_1500, INSIDE_ROUTER, "an emulated router", &extra)
}

/// Runs this bench again as `flag` in a fresh network namespace set up by
/// the shell commands `shape`, and returns its figures.
fn in_namespace(smoke: bool, shape: &str, flag: &str, what: &str, extra: &[String]) -> Json {
    let skipped = |why: &str| {
        println!("fairness on {what}: skipped ({why})");
        Json::new()
    };
    if !rustix::process::geteuid().is_root() {
        return skipped("needs root for a network namespace and tc");
    }
    let json = std::env::temp_dir().join(format!("ferry-bench-uplink-{}.json", std::process::id()));
    let shape = format!("{shape} && exec \"$0\" \"$@\"");
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--net", "--", "sh", "-c", &shape])
        .arg(std::env::current_exe().unwrap())
        .arg(flag)
        .arg("--json")
        .arg(&json)
        .args(extra);
    if smoke {
        cmd.arg("--smoke");
    }
    let ran = cmd.stdout(std::process::Stdio::inherit()).output();
    let Ok(o) = ran else {
        return skipped("unshare is not installed");
    };
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        return skipped(err.lines().last().unwrap_or("unshare failed"));
    }
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    serde_json::from_str(&text).unwrap_or_default()
}
