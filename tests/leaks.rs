//! A service at home that is down, and players who break off: each player
//! is closed, and nothing is left behind in the hub or the ep (file
//! descriptors, tasks). One test alone in its own test binary, the
//! transports one after the other: the process's descriptors are
//! counted, and a test running beside it would move them.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::{io::AsyncWriteExt, net::TcpStream};

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (bounded) until `f` is at most `target`; returns the last value.
async fn settles(f: impl Fn() -> usize, target: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = f();
        if v <= target || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A player's view of a service that is down: the hub passes the failure
/// on as a reset, which can arrive before connect() even returns.
async fn refused_or_closed(player: std::net::SocketAddr, within: Duration) -> bool {
    match TcpStream::connect(player).await {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(mut s) => {
            let _ = s.write_all(b"hello?").await;
            closed_by_peer(&mut s, within).await
        }
    }
}

/// Until `hub`'s pool for `echo` holds its 4 channels (TLS; QUIC has none).
async fn pool_full(hub: &TestHub, t: Transport) {
    if t == Transport::Tls {
        let mut ready = hub.handle.pool_ready("echo").unwrap();
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|n| *n >= 4))
            .await
            .expect("the pool refilled within 10 s")
            .unwrap();
    }
}

/// One test, so that nothing runs beside it (see the top).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_leave_nothing_behind() {
    for t in [Transport::Tls, Transport::Quic] {
        closes_each_player_and_leaks_nothing(t).await;
        break_off_and_leak_nothing(t).await;
    }
}

async fn closes_each_player_and_leaks_nothing(t: Transport) {
    let certs = Certs::new();
    let (_hold, dead) = dead_port();
    let (hub, ep) = tunnel_over(&certs, t, HubOpts::default(), dead).await;
    hub.wait_sessions(1).await;
    let player = hub.service("echo");
    // Warm-up: one player, so the pool and every lazy resource exist.
    assert!(refused_or_closed(player, Duration::from_secs(5)).await);
    // Over TLS the pool refills after each take: counted once it is full
    // (4 channels, each a socket at both ends).
    pool_full(&hub, t).await;
    let (fds0, tasks0) = (fd_count(), alive_tasks());
    let start = Instant::now();
    let players: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let t = Instant::now();
                (
                    refused_or_closed(player, Duration::from_secs(10)).await,
                    t.elapsed(),
                )
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for p in players {
        let (closed, took) = p.await.unwrap();
        assert!(closed, "a player was left hanging");
        slowest = slowest.max(took);
    }
    pool_full(&hub, t).await;
    let fds = settles(fd_count, fds0).await;
    let alive = settles(alive_tasks, tasks0).await;
    println!(
        "figure ({t:?}): 200 players with the service down: all closed, slowest after {slowest:?} (all in {:?}); fds {fds0} → {fds}, tasks {tasks0} → {alive}",
        start.elapsed()
    );
    // Well inside the hub's player_wait (10 s in tests): each was told,
    // none waited for a channel that never came.
    assert!(slowest < Duration::from_secs(8), "{slowest:?}");
    assert!(fds <= fds0, "file descriptors leaked: {fds0} → {fds}");
    assert!(alive <= tasks0, "tasks leaked: {tasks0} → {alive}");
    ep.stop().await;
    hub.stop().await;
}

/// Players relayed, then reset (a game closed abruptly): nothing of them
/// stays in the hub or the ep. Before, over QUIC each side's aborted
/// stream kept a task (and quinn a waiter) until the connection ended,
/// hours or days later, and kept the connection counted busy.
async fn break_off_and_leak_nothing(t: Transport) {
    let certs = Certs::new();
    let (hub, ep) = tunnel_over(&certs, t, HubOpts::default(), echo_server().await).await;
    hub.wait_sessions(1).await;
    let player = hub.service("echo");
    let break_off = move || async move {
        let mut s = TcpStream::connect(player).await.unwrap();
        let mut back = [0u8; 2];
        s.write_all(b"hi").await.unwrap();
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut back)
            .await
            .unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    };
    break_off().await;
    pool_full(&hub, t).await;
    let (fds0, tasks0) = (fd_count(), alive_tasks());
    let players: Vec<_> = (0..200).map(|_| tokio::spawn(break_off())).collect();
    for p in players {
        p.await.unwrap();
    }
    pool_full(&hub, t).await;
    let fds = settles(fd_count, fds0).await;
    let alive = settles(alive_tasks, tasks0).await;
    println!("figure ({t:?}): 200 players broke off: fds {fds0} → {fds}, tasks {tasks0} → {alive}");
    assert!(fds <= fds0, "file descriptors leaked: {fds0} → {fds}");
    assert!(alive <= tasks0, "tasks leaked: {tasks0} → {alive}");
    ep.stop().await;
    hub.stop().await;
}
