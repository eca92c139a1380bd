//! Faults of whole processes: killed, frozen, stopped, starved of files.
//! The hub and the ep run as the real binary. Each test prints its figure.

mod common;

use common::{
    procs::{Ferry, HubProc, ready_path},
    *,
};
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_killed_and_restarted_is_rejoined_by_itself() {
    let certs = Certs::new();
    let echo = echo_server().await;
    let config = hub_toml(&certs, &["echo"], "");
    let hub = HubProc::start(&config, &[], 1);
    let ep = Ferry::spawn(
        "ep",
        &ep_toml(&certs, hub.control, hub.channel, &[("echo", echo)]),
        &[],
    );
    hub.proc.wait_line("ep logged in");
    assert_eq!(echo_through(hub.services["echo"], b"one").await, b"one");
    let (control, channel, player) = (hub.control, hub.channel, hub.services["echo"]);
    hub.proc.signal("KILL");
    drop(hub);
    let killed = Instant::now();
    let same = |a: std::net::SocketAddr| a.to_string();
    let hub = HubProc::start(
        &config,
        &[
            ("FERRY_CONTROL", same(control)),
            ("FERRY_CHANNEL", same(channel)),
            ("FERRY_SERVICES__ECHO__BIND", same(player)),
        ],
        1,
    );
    // The player arrives at once; the hub holds it until the ep is back.
    assert_eq!(echo_through(player, b"two").await, b"two");
    let n = killed.elapsed();
    println!("figure: hub SIGKILL → restart → a new player served after {n:?}");
    assert!(n < Duration::from_secs(10));
    drop((ep, hub));
}

on_every_transport!(ep_killed_while_a_player_waits_serves_it_when_back);

/// The ep killed (SIGKILL, the OOM killer, a panic): a player who comes
/// once the hub knows waits and is served when the ep is back. Over TLS
/// the ep's kernel resets its connections at once. Over QUIC nothing is
/// said: the hub probes a connection gone quiet and gives it no new
/// player within seconds, not at the 15 s heartbeat timeout this hub
/// keeps (before, the player got a stream on the dead connection and was
/// cut once the ep's next login replaced it, after the drain).
async fn ep_killed_while_a_player_waits_serves_it_when_back(t: Transport) {
    let certs = Certs::new();
    let echo = echo_server().await;
    let keys = "player_wait = \"30s\"\nheartbeat_interval = \"5s\"\nheartbeat_timeout = \"15s\"\n";
    let extra = format!("{}{keys}", t.hub_extra());
    let hub = HubProc::start(&hub_toml(&certs, &["echo"], &extra), &[], 1);
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), echo)]);
    eo.extra = t.ep_extra(hub.quic);
    let ep_config = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let ep = Ferry::spawn("ep", &ep_config, &[]);
    hub.proc.wait_line("ep logged in");
    let killed = Instant::now();
    ep.signal("KILL");
    drop(ep);
    hub.proc.wait_line(match t {
        Transport::Tls => "ep session ended",
        Transport::Quic => "ep not heard on its QUIC connection",
    });
    let known = killed.elapsed();
    assert!(
        known < Duration::from_secs(10),
        "the hub knew only after {known:?} (its heartbeat timeout is 15 s)"
    );
    let player = tokio::spawn(echo_through(hub.services["echo"], b"waiting"));
    let start = Instant::now();
    let _ep = Ferry::spawn("ep", &ep_config, &[]);
    assert_eq!(player.await.unwrap(), b"waiting");
    println!(
        "figure ({t:?}): ep SIGKILL: the hub knew after {known:?}; the waiting player was served {:?} after the ep restarted",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_ep_is_noticed_and_recovers_after_sigcont() {
    let certs = Certs::new();
    let echo = echo_server().await;
    let (hub, ep) = proc_tunnel(&certs, "", "echo", echo);
    assert_eq!(echo_through(hub.services["echo"], b"a").await, b"a");
    let frozen = Instant::now();
    ep.signal("STOP");
    hub.proc.wait_line("ep session ended: no heartbeat");
    let noticed = frozen.elapsed();
    ep.signal("CONT");
    hub.proc.wait_line("ep logged in");
    let back = frozen.elapsed();
    assert_eq!(echo_through(hub.services["echo"], b"b").await, b"b");
    println!(
        "figure: ep frozen (SIGSTOP): hub noticed after {noticed:?} (timeout 2 s); after SIGCONT logged in again at {back:?}"
    );
    assert!(noticed < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_keeps_hub_and_ep_memory_small() {
    let certs = Certs::new();
    const TOTAL: usize = 100 << 20;
    // A service that pushes 100 MB as fast as it can.
    let svc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc_addr = svc.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = svc.accept().await.unwrap();
        let chunk = vec![0xabu8; 256 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            s.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        s.shutdown().await.unwrap();
    });
    let (hub, ep) = proc_tunnel(&certs, "", "push", svc_addr);
    let (hub0, ep0) = (hub.proc.status_kib("VmRSS:"), ep.status_kib("VmRSS:"));
    let mut p = TcpStream::connect(hub.services["push"]).await.unwrap();
    // Read 1 KiB per 10 ms for 3 s (the service keeps pushing meanwhile),
    // then the rest at full speed.
    let mut buf = vec![0u8; 1024];
    let mut got = 0;
    let slow_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < slow_until {
        got += p.read(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (hub_mid, ep_mid) = (hub.proc.status_kib("VmRSS:"), ep.status_kib("VmRSS:"));
    let mut big = vec![0u8; 256 * 1024];
    loop {
        let n = p.read(&mut big).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(big[..n].iter().all(|&b| b == 0xab));
        got += n;
    }
    let (hub_peak, ep_peak) = (hub.proc.status_kib("VmHWM:"), ep.status_kib("VmHWM:"));
    println!(
        "figure: slow reader, 100 MiB pushed: hub RSS {hub0} → {hub_mid} KiB while stalled (peak {hub_peak}), ep {ep0} → {ep_mid} KiB (peak {ep_peak})"
    );
    assert_eq!(got, TOTAL);
    assert!(
        hub_mid < hub0 + 4096 && ep_mid < ep0 + 4096,
        "memory grew with the backlog"
    );
    assert!(
        hub_peak < 64 * 1024 && ep_peak < 64 * 1024,
        "peak RSS over the 64 MiB bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_active_players_then_exits() {
    let certs = Certs::new();
    let echo = echo_server().await;
    let (mut hub, _ep) = proc_tunnel(&certs, "drain_timeout = \"2s\"\n", "echo", echo);
    let mut p = TcpStream::connect(hub.services["echo"]).await.unwrap();
    let mut back = [0u8; 3];
    p.write_all(b"abc").await.unwrap();
    p.read_exact(&mut back).await.unwrap();
    let start = Instant::now();
    hub.proc.signal("TERM");
    hub.proc.wait_line("stopped accepting");
    // New players are no longer accepted, but this one keeps playing.
    assert!(TcpStream::connect(hub.services["echo"]).await.is_err());
    p.write_all(b"def").await.unwrap();
    p.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"def");
    let status = hub.proc.wait();
    println!(
        "figure: SIGTERM with a player active: hub exited {status} after {:?} (drain 2 s)",
        start.elapsed()
    );
    assert!(status.success());
    assert!(closed_by_peer(&mut p, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_files_backs_off_and_recovers() {
    let certs = Certs::new();
    let echo = echo_server().await;
    // A player cap above what 48 files hold, so the accept loop itself runs dry.
    let config = hub_toml(
        &certs,
        &["echo"],
        "pool_size = 0\nmax_players_total = 1000\n",
    );
    let hub = HubProc::attach(
        Ferry::spawn_with_fd_limit(
            "hub",
            &config,
            &["--ready-file".as_ref(), ready_path(&config).as_os_str()],
            48,
        ),
        &ready_path(&config),
        1,
    );
    let _ep = Ferry::spawn(
        "ep",
        &ep_toml(&certs, hub.control, hub.channel, &[("echo", echo)]),
        &[],
    );
    hub.proc.wait_line("ep logged in");
    // Hold idle players until the hub cannot accept more.
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(TcpStream::connect(hub.services["echo"]).await.unwrap());
    }
    hub.proc.wait_line("accept failed");
    let cpu0 = hub.proc.cpu_secs();
    let t0 = Instant::now();
    // While starved, the accept loop must not spin.
    let mut extra = Vec::new();
    for _ in 0..20 {
        extra.push(TcpStream::connect(hub.services["echo"]).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = hub.proc.cpu_secs() - cpu0;
    let window = t0.elapsed();
    drop(held);
    drop(extra);
    // Files free again: a new player is served.
    assert_eq!(echo_through(hub.services["echo"], b"alive").await, b"alive");
    println!(
        "figure: fd limit 48 exhausted: hub used {cpu:.2} CPU-s over {window:?} while starved, then served a new player"
    );
    assert!(
        cpu < 0.5 * window.as_secs_f64(),
        "accept loop spun: {cpu} CPU-s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ep_sigterm_lets_its_player_finish_then_exits() {
    let certs = Certs::new();
    let echo = echo_server().await;
    let (hub, mut ep) = proc_tunnel(&certs, "", "echo", echo);
    let mut p = TcpStream::connect(hub.services["echo"]).await.unwrap();
    let mut back = [0u8; 3];
    p.write_all(b"abc").await.unwrap();
    p.read_exact(&mut back).await.unwrap();
    ep.signal("TERM");
    ep.wait_line("shutting down");
    // The player is mid-game: it keeps being served, then leaves.
    p.write_all(b"def").await.unwrap();
    p.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"def");
    let left = Instant::now();
    p.shutdown().await.unwrap();
    assert!(closed_by_peer(&mut p, Duration::from_secs(5)).await);
    let status = ep.wait();
    println!(
        "figure: ep SIGTERM with a player: served until it left; ep exited {status} {:?} later",
        left.elapsed()
    );
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ep_facing_a_dead_hub_idles() {
    let certs = Certs::new();
    // Addresses where nothing listens: a hub that is down.
    let (_hold, dead) = dead_port();
    let cfg = ep_toml(&certs, dead, dead, &[("echo", dead)]);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("backoff_max = \"500ms\"", "backoff_max = \"2s\"");
    std::fs::write(&cfg, text).unwrap();
    let ep = Ferry::spawn("ep", &cfg, &[]);
    ep.wait_line("login failed");
    let cpu0 = ep.cpu_secs();
    let t0 = Instant::now();
    // Count the attempts over a few seconds by their log lines.
    let mut attempts = 0;
    while t0.elapsed() < Duration::from_secs(6) {
        ep.wait_line("login failed");
        attempts += 1;
    }
    let cpu = ep.cpu_secs() - cpu0;
    println!(
        "figure: ep facing a dead hub: {attempts} attempts and {cpu:.3} CPU-s in {:?}",
        t0.elapsed()
    );
    assert!(cpu < 0.2, "ep busy while the hub is down");
    // Backoff 50 ms doubling to 2 s, jittered down to half: at most ~12.
    assert!(attempts <= 20, "ep hammering: {attempts} attempts");
}

/// How a socket's reading ended: after how many bytes, and whether by a
/// clean end (FIN) or a break.
async fn read_to_end_or_break(s: &mut TcpStream) -> (u64, std::io::Result<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (n, Ok(())),
            Ok(k) => n += k as u64,
            Err(e) => return (n, Err(e)),
        }
    }
}

on_every_transport!(
    a_killed_hub_resets_a_player_mid_download,
    a_killed_ep_resets_home_mid_upload
);

/// The hub killed (SIGKILL, the OOM killer) while a player downloads: the
/// player sees a break, not the end of the file. Before, the kernel closed
/// the player's socket with a FIN, and a download with no length of its
/// own (HTTP/1.0, `nc > file`) looked complete.
async fn a_killed_hub_resets_a_player_mid_download(t: Transport) {
    let certs = Certs::new();
    let home = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = home.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = home.accept().await.unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while s.write_all(&chunk).await.is_ok() {}
    });
    let (hub, _ep) = proc_tunnel_over(&certs, t, "", "echo", local);
    let mut p = TcpStream::connect(hub.services["echo"]).await.unwrap();
    let mut first = vec![0u8; 256 * 1024];
    p.read_exact(&mut first).await.unwrap();
    hub.proc.signal("KILL");
    let (n, ended) = read_to_end_or_break(&mut p).await;
    assert!(
        ended.is_err(),
        "the player read a clean end after {n} more bytes: the cut download looks complete"
    );
}

/// The ep killed while a player uploads: the service at home sees a
/// break, not the end of the upload (a backup receiver would keep a
/// truncated file as whole).
async fn a_killed_ep_resets_home_mid_upload(t: Transport) {
    let certs = Certs::new();
    let home = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = home.local_addr().unwrap();
    let (got, at_home) = tokio::sync::oneshot::channel();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = home.accept().await.unwrap();
        let mut first = vec![0u8; 256 * 1024];
        s.read_exact(&mut first).await.unwrap();
        let _ = started_tx.send(());
        let _ = got.send(read_to_end_or_break(&mut s).await);
    });
    let (_hub, ep) = proc_tunnel_over(&certs, t, "", "echo", local);
    let mut p = TcpStream::connect(_hub.services["echo"]).await.unwrap();
    let upload = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        while p.write_all(&chunk).await.is_ok() {}
    });
    started.await.unwrap();
    ep.signal("KILL");
    let (n, ended) = tokio::time::timeout(Duration::from_secs(30), at_home)
        .await
        .expect("home's socket ended")
        .unwrap();
    upload.abort();
    assert!(
        ended.is_err(),
        "home read a clean end after {n} more bytes: the cut upload looks complete"
    );
}
