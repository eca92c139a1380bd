//! Players keep playing while the path between ep and hub misbehaves.
//! Each test prints its figure.

mod common;

use common::{
    faultproxy::{FaultProxy, Mode},
    *,
};
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A hub whose control port the ep reaches through a fault proxy; the
/// channel port is reached directly, as players' traffic is not at issue.
async fn proxied(certs: &Certs) -> (TestHub, FaultProxy, TestEp) {
    let echo = echo_server().await;
    let hub = TestHub::start(certs, &HubOpts::default()).await;
    let proxy = FaultProxy::start(hub.control).await;
    let settings = ep_settings_for(
        certs,
        proxy.addr,
        hub.channel,
        &EpOpts::new(certs, vec![("echo".into(), echo)]),
    );
    let ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    // Served once: the ep has its welcome and is opening channels.
    assert_eq!(echo_through(hub.service("echo"), b"ready").await, b"ready");
    (hub, proxy, ep)
}

/// Echoes `rounds` chunks of 4 KiB, checking each; used by long streams.
async fn echo_rounds(s: &mut TcpStream, seed: u64, rounds: usize) -> Result<(), String> {
    let mut back = vec![0u8; 4096];
    for i in 0..rounds {
        let chunk = random_bytes(4096, seed * 1000 + i as u64);
        s.write_all(&chunk).await.map_err(|e| e.to_string())?;
        s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
        if back != chunk {
            return Err("corrupted".into());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_streams_survive_a_control_reset() {
    let certs = Certs::new();
    let (hub, proxy, _ep) = proxied(&certs).await;
    let mut streams = Vec::new();
    for i in 0..20u64 {
        let mut s = TcpStream::connect(hub.service("echo")).await.unwrap();
        echo_rounds(&mut s, i, 5).await.unwrap();
        streams.push(s);
    }
    let logins = *hub.handle.logins().borrow();
    let reset_at = Instant::now();
    proxy.reset_all();
    let mut rx = hub.handle.logins();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|n| *n > logins))
        .await
        .unwrap()
        .unwrap();
    let back_in = reset_at.elapsed();
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            tokio::spawn(async move { echo_rounds(&mut s, 100 + i as u64, 50).await })
        })
        .collect();
    let mut broken = 0;
    for t in tasks {
        broken += t.await.unwrap().is_err() as usize;
    }
    println!(
        "figure: control reset with 20 streams flowing: {broken} broken, ep back in control after {back_in:?}"
    );
    assert_eq!(broken, 0);
    assert!(
        back_in < Duration::from_secs(5),
        "backoff budget: {back_in:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_control_connection_is_detected_both_ways() {
    let certs = Certs::new();
    let (hub, proxy, _ep) = proxied(&certs).await;
    let before = proxy.accepted();
    let mut sessions = hub.handle.sessions();
    let start = Instant::now();
    proxy.set(Mode::BlackHole);
    // Hub side: the session ends when heartbeats stop (timeout 2 s).
    tokio::time::timeout(Duration::from_secs(20), sessions.wait_for(|n| *n == 0))
        .await
        .unwrap()
        .unwrap();
    let hub_noticed = start.elapsed();
    // Ep side: it gives up on the silent connection and dials again.
    proxy.wait_accepted_over(before).await;
    let ep_noticed = start.elapsed();
    println!(
        "figure: black hole noticed by the hub after {hub_noticed:?}, by the ep after {ep_noticed:?} (heartbeat timeout 2 s)"
    );
    assert!(hub_noticed < Duration::from_secs(5) && ep_noticed < Duration::from_secs(5));
    proxy.set(Mode::Pass);
    hub.wait_sessions(1).await;
    assert_eq!(echo_through(hub.service("echo"), b"back").await, b"back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_path_still_logs_in_and_serves() {
    let certs = Certs::new();
    let echo = echo_server().await;
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let proxy = FaultProxy::start(hub.control).await;
    proxy.set(Mode::Delay(Duration::from_millis(150)));
    let settings = ep_settings_for(
        &certs,
        proxy.addr,
        hub.channel,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    );
    let _ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    assert_eq!(echo_through(hub.service("echo"), b"slow").await, b"slow");
}

on_every_transport!(
    resets_propagate_both_ways,
    a_reset_after_megabytes_is_a_reset_not_an_end,
);

async fn resets_propagate_both_ways(t: Transport) {
    let certs = Certs::new();
    let svc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc_addr = svc.local_addr().unwrap();
    let (hub, _ep) = tunnel_over(&certs, t, HubOpts::default(), svc_addr).await;

    // The player resets: the service sees a reset, not a clean end.
    let mut p = TcpStream::connect(hub.service("echo")).await.unwrap();
    p.write_all(b"hi").await.unwrap();
    let (mut s, _) = svc.accept().await.unwrap();
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await.unwrap();
    socket2::SockRef::from(&p)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(p);
    let mut buf = [0u8; 16];
    let seen = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap();
    println!("figure: player reset → service read {seen:?}");
    assert!(seen.is_err(), "service saw {seen:?}, not a reset");

    // The service resets: the player sees a reset.
    let mut p = TcpStream::connect(hub.service("echo")).await.unwrap();
    p.write_all(b"hi").await.unwrap();
    let (mut s, _) = svc.accept().await.unwrap();
    s.read_exact(&mut two).await.unwrap();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    let seen = tokio::time::timeout(Duration::from_secs(10), p.read(&mut buf))
        .await
        .unwrap();
    println!("figure: service reset → player read {seen:?}");
    assert!(seen.is_err(), "player saw {seen:?}, not a reset");
}

/// Reads until the stream ends: the bytes, and how it ended.
async fn read_all(s: &mut TcpStream) -> (usize, std::io::Result<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Err(_) => panic!("the stream neither ended nor broke"),
            Ok(Ok(0)) => return (n, Ok(())),
            Ok(Ok(k)) => n += k,
            Ok(Err(e)) => return (n, Err(e)),
        }
    }
}

/// Writes `n` bytes then resets (SO_LINGER 0): a transfer cut short.
async fn send_then_reset(mut s: TcpStream, n: usize) {
    let data = random_bytes(n, 7);
    s.write_all(&data).await.unwrap();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// A download or upload cut short by a reset after 2 MiB must not look
/// whole at the far end: the bytes that made it, then a reset, never a
/// clean end of stream.
async fn a_reset_after_megabytes_is_a_reset_not_an_end(t: Transport) {
    const SIZE: usize = 2 << 20;
    let certs = Certs::new();
    let svc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc_addr = svc.local_addr().unwrap();
    let (hub, _ep) = tunnel_over(&certs, t, HubOpts::default(), svc_addr).await;
    hub.wait_sessions(1).await;

    // Home sends 2 MiB and resets: the player's download.
    let mut p = TcpStream::connect(hub.service("echo")).await.unwrap();
    p.write_all(b"go").await.unwrap();
    let (s, _) = svc.accept().await.unwrap();
    send_then_reset(s, SIZE).await;
    let (got, end) = read_all(&mut p).await;
    println!(
        "figure ({t:?}): service sent {SIZE} bytes then reset → player read {got} bytes, then {end:?}"
    );
    assert!(
        end.is_err(),
        "the player's cut download ended cleanly after {got} bytes"
    );

    // The player sends 2 MiB and resets: the service's upload. (It starts
    // once the service is dialled: a player who resets before that is
    // never carried home at all, which is a test of something else.)
    let mut p = TcpStream::connect(hub.service("echo")).await.unwrap();
    p.write_all(b"up").await.unwrap();
    let (mut s, _) = svc.accept().await.unwrap();
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await.unwrap();
    let reset = tokio::spawn(send_then_reset(p, SIZE));
    let (got, end) = read_all(&mut s).await;
    reset.await.unwrap();
    println!(
        "figure ({t:?}): player sent {SIZE} bytes then reset → service read {got} bytes, then {end:?}"
    );
    assert!(
        end.is_err(),
        "the service's cut upload ended cleanly after {got} bytes"
    );
}

/// No ep within `player_wait`: the player is reset, not closed cleanly
/// with nothing, which a client reading to the end (a download, `nc`)
/// would take for a complete, empty reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_no_ep_serves_in_time_is_reset_not_ended() {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "player_wait = \"1s\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &o).await;
    let mut p = TcpStream::connect(hub.service("echo")).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), p.read(&mut buf))
        .await
        .expect("closed after player_wait");
    assert!(
        matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
}

on_every_transport!(a_silence_shorter_than_the_heartbeat_timeout_ends_nothing);

/// The ep's path to the hub silent for 16 s, under a `heartbeat_timeout`
/// of 60 s: nothing ends, and a player's connection goes on once the path
/// is back. Before, over QUIC, the connection's idle timeout was the ep's
/// fixed 15 s whatever the hub's heartbeat timeout (QUIC takes the smaller
/// side's), so the session and its players ended.
async fn a_silence_shorter_than_the_heartbeat_timeout_ends_nothing(t: Transport) {
    use std::sync::atomic::Ordering;
    let certs = Certs::new();
    let o = HubOpts {
        extra: "heartbeat_timeout = \"60s\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &t.hub_opts(o)).await;
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    let mut proxy = None;
    let (silent, settings) = match t {
        Transport::Tls => {
            let p = FaultProxy::start(hub.control).await;
            eo.extra = t.ep_extra(None);
            let s = ep_settings_for(&certs, p.addr, hub.channel, &eo);
            proxy = Some(p);
            (None, s)
        }
        Transport::Quic => {
            let relay = common::udp_relay::UdpRelay::start(hub.handle.quic_addr().unwrap(), None);
            let relay = relay.await;
            eo.extra = t.ep_extra(Some(relay.addr));
            (Some(relay.silent), ep_settings(&certs, &hub, &eo))
        }
    };
    let quiet = |on: bool| match (&proxy, &silent) {
        (Some(p), _) => p.set(if on { Mode::Hold } else { Mode::Pass }),
        (_, Some(s)) => s.store(on, Ordering::SeqCst),
        _ => unreachable!(),
    };
    let _ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    let mut player = TcpStream::connect(hub.service("echo")).await.unwrap();
    echo_rounds(&mut player, 1, 2).await.unwrap();
    quiet(true);
    // The silence itself: longer than the ep's old fixed QUIC idle timeout.
    tokio::time::sleep(Duration::from_secs(16)).await;
    quiet(false);
    let back = Instant::now();
    tokio::time::timeout(Duration::from_secs(40), echo_rounds(&mut player, 2, 2))
        .await
        .expect("the player's connection goes on")
        .unwrap();
    println!(
        "figure ({t:?}): after a 16 s silence, the player's echo came back {:?} after the path",
        back.elapsed()
    );
    assert_eq!(*hub.handle.logins().borrow(), 1, "the session ended");
}
