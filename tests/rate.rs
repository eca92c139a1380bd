//! Byte-rate caps at the hub: `max_rate_per_player` holds one player's
//! download and upload to the rate (±10 % once the burst is spent),
//! `max_rate` holds the sum of a service's players, a UDP flow over its
//! budget loses datagrams, a reload changes the cap of a running player,
//! and the ep sends a capped download home → hub at the cap. Over TLS and
//! QUIC.

mod common;

use common::{udp::*, *};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// 2 MB/s: a bucket of 500 KB, so 1 MB read is past the burst.
const RATE: u64 = 2_000_000;
const WARM: u64 = 1_000_000;
/// Measured over 2.5 s at the rate.
const SPAN: u64 = 5_000_000;

/// A service that sends zeros to each connection until it goes.
async fn source() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let buf = vec![0u8; 64 * 1024];
                while s.write_all(&buf).await.is_ok() {}
            });
        }
    });
    addr
}

/// A service that reads and drops everything, counting it in `got`.
async fn sink(got: Arc<AtomicU64>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let got = got.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    got.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    addr
}

/// Reads `s` until it ends, counting into `got`.
fn count_reads(mut s: TcpStream, got: Arc<AtomicU64>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            got.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
}

/// When `got` passes `n`.
async fn at(got: &AtomicU64, n: u64) -> Instant {
    tokio::time::timeout(Duration::from_secs(30), async {
        while got.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Instant::now()
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{n} bytes within 30 s (got {})",
            got.load(Ordering::Relaxed)
        )
    })
}

/// The rate `got` grows at after the warm-up, and asserts it is `RATE`
/// ±10 %.
async fn holds_to_rate(what: &str, got: &AtomicU64) -> f64 {
    let start = at(got, WARM).await;
    let end = at(got, WARM + SPAN).await;
    let rate = SPAN as f64 / (end - start).as_secs_f64();
    println!("figure: {what}: {:.0} B/s against a cap of {RATE}", rate);
    let off = (rate - RATE as f64).abs() / RATE as f64;
    assert!(
        off <= 0.10,
        "{what}: {rate:.0} B/s is {:.1} % off {RATE}",
        off * 100.0
    );
    rate
}

fn capped(keys: &str) -> HubOpts {
    HubOpts {
        service_extra: keys.into(),
        ..Default::default()
    }
}

async fn a_download_holds_to_max_rate_per_player(t: Transport) {
    let certs = Certs::new();
    let opts = capped(&format!("max_rate_per_player = {RATE}\n"));
    let (hub, _ep) = tunnel_over(&certs, t, opts, source().await).await;
    hub.wait_sessions(1).await;
    let got = Arc::new(AtomicU64::new(0));
    count_reads(
        TcpStream::connect(hub.service("echo")).await.unwrap(),
        got.clone(),
    );
    holds_to_rate(&format!("download over {t:?}"), &got).await;
}

async fn an_upload_holds_to_max_rate_per_player(t: Transport) {
    let certs = Certs::new();
    let got = Arc::new(AtomicU64::new(0));
    let opts = capped("max_rate_per_player = \"2 MB\"\n");
    let (hub, _ep) = tunnel_over(&certs, t, opts, sink(got.clone()).await).await;
    hub.wait_sessions(1).await;
    let mut player = TcpStream::connect(hub.service("echo")).await.unwrap();
    let sending = tokio::spawn(async move {
        let buf = vec![7u8; 64 * 1024];
        while player.write_all(&buf).await.is_ok() {}
    });
    holds_to_rate(&format!("upload over {t:?}"), &got).await;
    sending.abort();
}

async fn players_of_a_service_share_its_max_rate(t: Transport) {
    let certs = Certs::new();
    let opts = capped("max_rate = \"2000 KB\"\n");
    let (hub, _ep) = tunnel_over(&certs, t, opts, source().await).await;
    hub.wait_sessions(1).await;
    let total = Arc::new(AtomicU64::new(0));
    let each = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    for one in &each {
        let s = TcpStream::connect(hub.service("echo")).await.unwrap();
        let (one, total) = (one.clone(), total.clone());
        let (mut rd, _wr) = s.into_split();
        tokio::spawn(async move {
            let _keep = _wr;
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                one.fetch_add(n as u64, Ordering::Relaxed);
                total.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
    }
    holds_to_rate(&format!("two downloads over {t:?}"), &total).await;
    let (a, b) = (
        each[0].load(Ordering::Relaxed),
        each[1].load(Ordering::Relaxed),
    );
    println!("figure: the two players' shares over {t:?}: {a} and {b} bytes");
    assert!(a.min(b) * 4 > a.max(b), "one player starved: {a} vs {b}");
}

async fn a_reload_changes_the_cap_of_a_running_player(t: Transport) {
    let certs = Certs::new();
    let opts = t.hub_opts(capped("max_rate_per_player = \"500 KB\"\n"));
    let settings = hub_settings(&certs, &opts);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &opts).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), source().await)]),
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let got = Arc::new(AtomicU64::new(0));
    count_reads(
        TcpStream::connect(hub.service("echo")).await.unwrap(),
        got.clone(),
    );
    at(&got, 200_000).await;
    let faster = t.hub_opts(capped(&format!("max_rate_per_player = {RATE}\n")));
    hub.reload_to(&certs, &faster, &file).await.unwrap();
    let from = got.load(Ordering::Relaxed);
    let start = at(&got, from + WARM).await;
    let end = at(&got, from + WARM + SPAN).await;
    let rate = SPAN as f64 / (end - start).as_secs_f64();
    println!("figure: after a reload from 500 KB/s to {RATE} over {t:?}: {rate:.0} B/s");
    assert!(
        (rate - RATE as f64).abs() <= RATE as f64 * 0.10,
        "{rate:.0}"
    );
}

/// What left home for a capped download (the ep's `bytes` counter, down)
/// runs no further ahead of what the player has read than a burst and
/// what is in flight: the ep paces it to the cap, so the home uplink
/// carries the cap, not bursts as large as the buffers between home and
/// hub (a QUIC stream window, a TCP receive buffer: up to megabytes).
async fn a_capped_download_leaves_home_at_the_cap(t: Transport) {
    const SLOW: u64 = 200_000;
    let certs = Certs::new();
    let opts = t.hub_opts(capped(&format!("max_rate_per_player = {SLOW}\n")));
    let hub = TestHub::start(&certs, &opts).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), source().await)]),
    );
    let (_ep, home) = TestEp::start_with_handle(ep_settings(&certs, &hub, &eo)).await;
    hub.wait_sessions(1).await;
    let got = Arc::new(AtomicU64::new(0));
    count_reads(
        TcpStream::connect(hub.service("echo")).await.unwrap(),
        got.clone(),
    );
    let sent = || {
        let m = home.metrics();
        let line = "ferry_bytes_total{service=\"echo\",direction=\"down\"} ";
        let v = m.lines().find_map(|l| l.strip_prefix(line));
        v.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64
    };
    // Past the burst: 64 KiB, then 2 s at the cap.
    let mut ahead = 0;
    for n in [200_000, 300_000, 400_000, 464_000] {
        at(&got, n).await;
        ahead = ahead.max(sent().saturating_sub(got.load(Ordering::Relaxed)));
    }
    println!(
        "figure: over {t:?}, home ahead of the player by at most {ahead} bytes (cap {SLOW} B/s)"
    );
    assert!(
        ahead <= 128 * 1024,
        "home sent {ahead} bytes more than the player read: not paced"
    );
}

/// The pacing rates (`SO_MAX_PACING_RATE`, bytes/s) `ss` sees on TCP
/// sockets matching `filter` (`ss`'s own filter syntax).
fn kernel_pacing(filter: &[&str]) -> Vec<u64> {
    let out = std::process::Command::new("ss")
        .args(["-tinH"])
        .args(filter)
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .filter_map(|w| w.strip_suffix("bps"))
        .filter_map(|w| w.split_once('/'))
        .filter_map(|(_, max)| max.parse::<u64>().ok())
        .map(|bits| bits / 8)
        .collect()
}

/// Over TLS each player has a channel of its own, and a capped one is
/// paced by the kernel while its transfer is steady: on the ep's side for
/// a download, on the hub's for an upload, an eighth above the cap; so a
/// step of the cap leaves home a packet at a time, not back to back ahead
/// of every other player's packets (BENCHMARKS.md, "The kernel paces a
/// capped TLS channel"). QUIC carries every player on one socket: there
/// the ep takes shorter steps instead (a unit test in `rate`).
#[tokio::test]
async fn a_steady_capped_transfer_is_paced_by_the_kernel_over_tls() {
    let certs = Certs::new();
    let paced = RATE + RATE / 8;
    let opts = capped(&format!("max_rate_per_player = {RATE}\n"));
    let (hub, ep) = tunnel_over(&certs, Transport::Tls, opts, source().await).await;
    hub.wait_sessions(1).await;
    let to_hub = format!("dst = {}", hub.channel);
    assert!(kernel_pacing(&[&to_hub]).is_empty(), "nothing paced before");
    let got = Arc::new(AtomicU64::new(0));
    count_reads(
        TcpStream::connect(hub.service("echo")).await.unwrap(),
        got.clone(),
    );
    at(&got, WARM).await;
    assert_eq!(
        kernel_pacing(&[&to_hub]),
        [paced],
        "the ep's side, downloading"
    );
    drop((hub, ep));

    let got = Arc::new(AtomicU64::new(0));
    let opts = capped(&format!("max_rate_per_player = {RATE}\n"));
    let (hub, _ep) = tunnel_over(&certs, Transport::Tls, opts, sink(got.clone()).await).await;
    hub.wait_sessions(1).await;
    let mut player = TcpStream::connect(hub.service("echo")).await.unwrap();
    let sending = tokio::spawn(async move {
        let buf = vec![7u8; 64 * 1024];
        while player.write_all(&buf).await.is_ok() {}
    });
    at(&got, WARM).await;
    let from_hub = format!("src = {}", hub.channel);
    assert_eq!(
        kernel_pacing(&[&from_hub]),
        [paced],
        "the hub's side, uploading"
    );
    sending.abort();
}

on_every_transport!(
    a_capped_download_leaves_home_at_the_cap,
    a_download_holds_to_max_rate_per_player,
    an_upload_holds_to_max_rate_per_player,
    players_of_a_service_share_its_max_rate,
    a_reload_changes_the_cap_of_a_running_player,
);

/// 256 KB/s per flow; the player sends 1000-byte datagrams at about
/// 2 MB/s for 1.5 s and the echo answers all it hears.
async fn a_udp_flow_over_its_cap_loses_datagrams(door: Door) {
    const CAP: u64 = 256_000;
    let certs = Certs::new();
    let (echo, _) = udp_echo().await;
    let keys = format!("type = \"udp\"\nmax_rate_per_player = \"{CAP} B\"\n");
    let (hub, _ep) = door_tunnel(&certs, door, &keys, echo).await;
    let to = hub.service("echo");
    let p = Arc::new(player().await);
    ask_until(&p, to, &[1u8; 1000], Duration::from_secs(10)).await;
    let back = Arc::new(AtomicU64::new(0));
    let (rp, b) = (p.clone(), back.clone());
    let reading = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok(n) = rp.recv(&mut buf).await {
            b.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_millis(1500) {
        tick.tick().await;
        for _ in 0..2 {
            p.send_to(&[2u8; 1000], to).await.unwrap();
            sent += 1000;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // The answers in flight have long arrived by then.
    tokio::time::sleep(Duration::from_millis(500)).await;
    reading.abort();
    let got = back.load(Ordering::Relaxed);
    // The bucket was nearly full when the burst began.
    let allowed = (ferry::rate::burst(CAP) as f64 + CAP as f64 * elapsed) as u64;
    println!(
        "figure: udp over {:?}: sent {sent} B in {elapsed:.2} s, {got} B came back, \
         the cap allows {allowed} B",
        door.t
    );
    assert!(got as f64 <= allowed as f64 * 1.10, "{got} > {allowed}");
    assert!(got as f64 >= allowed as f64 * 0.5, "{got} ≪ {allowed}");
    assert!(sent > allowed * 3, "the sender outran the cap");
}

on_every_udp_door!(a_udp_flow_over_its_cap_loses_datagrams);

/// Datagrams from a source the service's `deny` list refuses spend none
/// of its shared `max_rate`: a denied flood (forged sources, say) leaves
/// the budget to the players the door admits.
async fn a_denied_flood_spends_none_of_the_shared_budget(door: Door) {
    let certs = Certs::new();
    let (echo, _) = udp_echo().await;
    // A kilobyte a second after a 64 KiB burst: what the flood would
    // spend takes minutes to come back.
    let keys = "type = \"udp\"\nmax_rate = \"1024 B\"\ndeny = [\"127.0.0.2/32\"]\n";
    let (hub, _ep) = door_tunnel(&certs, door, keys, echo).await;
    let to = hub.service("echo");
    let denied = player_from("127.0.0.2").await;
    for _ in 0..200 {
        denied.send_to(&[0u8; 1000], to).await.unwrap();
    }
    // Read in order after the flood: eight kilobytes pass at once from
    // the burst left, where a spent budget would let one through a second.
    let p = player().await;
    for i in 0..8u8 {
        p.send_to(&[i; 1000], to).await.unwrap();
    }
    let mut buf = [0u8; 2048];
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while answered < 8
        && let Ok(Ok(_)) = tokio::time::timeout_at(deadline, p.recv_from(&mut buf)).await
    {
        answered += 1;
    }
    assert_eq!(
        answered, 8,
        "the denied flood spent the admitted player's budget"
    );
}

on_every_udp_door!(a_denied_flood_spends_none_of_the_shared_budget);

/// Datagrams from new sources the door's flow caps refuse (the service
/// full of players in conversation: forged sources, say) spend none of its
/// shared `max_rate`. Before, each paid before the caps refused it.
async fn a_flood_the_caps_refuse_spends_none_of_the_shared_budget(door: Door) {
    let certs = Certs::new();
    let (echo, _) = udp_echo().await;
    let keys = "type = \"udp\"\nmax_rate = \"1024 B\"\nmax_udp_flows = 1\n";
    let (hub, _ep) = door_tunnel(&certs, door, keys, echo).await;
    let to = hub.service("echo");
    // The one place, held by a player in conversation.
    let p = player().await;
    for i in 0..2u8 {
        ask_until(&p, to, &[i; 8], Duration::from_secs(10)).await;
    }
    // 80 KB from 80 new sources: more than the 64 KiB burst. The player
    // answers between them, so its place stays its own however slow the
    // machine (a conversation quiet for a second gives way).
    let mut flood = Vec::new();
    for i in 0..80 {
        let s = player_from("127.0.0.2").await;
        s.send_to(&[0u8; 1000], to).await.unwrap();
        flood.push(s);
        if i % 10 == 9 {
            ask_until(&p, to, &[i; 8], Duration::from_secs(10)).await;
        }
    }
    for i in 0..8u8 {
        p.send_to(&[i; 1000], to).await.unwrap();
    }
    let mut buf = [0u8; 2048];
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while answered < 8
        && let Ok(Ok(_)) = tokio::time::timeout_at(deadline, p.recv_from(&mut buf)).await
    {
        answered += 1;
    }
    println!("figure: refusals {:?}", hub.handle.refusals());
    assert_eq!(answered, 8, "the refused flood spent the player's budget");
}

on_every_udp_door!(a_flood_the_caps_refuse_spends_none_of_the_shared_budget);
