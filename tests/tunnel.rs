//! End-to-end: players through the hub and the ep to real services.

mod common;

use common::*;
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_of_random_bytes_echo_exactly() {
    let certs = Certs::new();
    let (hub, _ep) = echo_tunnel(&certs).await;
    let data = random_bytes(16 << 20, 7);
    let back = echo_through(hub.service("echo"), &data).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
}

/// The player sends a request, shuts its write side, and still gets the
/// whole (large) reply the service sends after seeing the FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_half_close_still_receives_the_reply() {
    let certs = Certs::new();
    let svc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc_addr = svc.local_addr().unwrap();
    let reply = random_bytes(1 << 20, 3);
    let expected = reply.clone();
    tokio::spawn(async move {
        let (mut s, _) = svc.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap(); // waits for the player's FIN
        assert_eq!(req, b"GET /big");
        s.write_all(&reply).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let (hub, _ep) = tunnel_to(&certs, svc_addr).await;
    let mut p = TcpStream::connect(hub.service("echo")).await.unwrap();
    p.write_all(b"GET /big").await.unwrap();
    p.shutdown().await.unwrap();
    let mut got = Vec::new();
    p.read_to_end(&mut got).await.unwrap();
    assert!(
        got == expected,
        "reply truncated: {} of {} bytes",
        got.len(),
        expected.len()
    );
}

/// The service says its piece and closes its write side first; the player
/// sees EOF and can still send, and the service receives it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_half_close_still_receives_from_the_player() {
    let certs = Certs::new();
    let svc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc_addr = svc.local_addr().unwrap();
    let upload = random_bytes(1 << 20, 5);
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = svc.accept().await.unwrap();
        s.write_all(b"banner").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        tx.send(got).unwrap();
    });
    let (hub, _ep) = tunnel_to(&certs, svc_addr).await;
    let mut p = TcpStream::connect(hub.service("echo")).await.unwrap();
    let mut banner = Vec::new();
    p.read_to_end(&mut banner).await.unwrap(); // EOF: the service's FIN passed through
    assert_eq!(banner, b"banner");
    p.write_all(&upload).await.unwrap();
    p.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .unwrap()
        .unwrap();
    assert!(
        got == upload,
        "upload truncated: {} of {} bytes",
        got.len(),
        upload.len()
    );
}

/// A hub with services `alpha` and `beta`, and an echo service for each.
async fn two_service_hub(certs: &Certs) -> (TestHub, std::net::SocketAddr, std::net::SocketAddr) {
    let opts = HubOpts {
        services: vec!["alpha".into(), "beta".into()],
        ..Default::default()
    };
    let hub = TestHub::start(certs, &opts).await;
    (hub, echo_server().await, echo_server().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_players_on_two_services() {
    let certs = Certs::new();
    let (hub, echo_a, echo_b) = two_service_hub(&certs).await;
    let eps = vec![("alpha".to_string(), echo_a), ("beta".to_string(), echo_b)];
    let _ep = TestEp::start(ep_settings(&certs, &hub, &EpOpts::new(&certs, eps)));
    let mut players = Vec::new();
    for i in 0..100u64 {
        let addr = hub.service(if i % 2 == 0 { "alpha" } else { "beta" });
        players.push(tokio::spawn(async move {
            let data = random_bytes(64 * 1024, i + 1);
            echo_through(addr, &data).await == data
        }));
    }
    let mut ok = 0;
    for p in players {
        ok += p.await.unwrap() as usize;
    }
    assert_eq!(ok, 100, "players served intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_eps_serve_different_services_on_one_hub() {
    let certs = Certs::new();
    let (hub, echo_a, echo_b) = two_service_hub(&certs).await;
    let _a = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("alpha".into(), echo_a)]),
    ));
    let mut other = EpOpts::new(&certs, vec![("beta".into(), echo_b)]);
    other.cert = "other".into();
    let _b = TestEp::start(ep_settings(&certs, &hub, &other));
    hub.wait_sessions(2).await;
    assert_eq!(echo_through(hub.service("alpha"), b"a").await, b"a");
    assert_eq!(echo_through(hub.service("beta"), b"b").await, b"b");
}

/// `localhost` may resolve to ::1 before 127.0.0.1; channels must still come
/// from the address the ep logged in from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_named_by_host_name_serves_players() {
    let certs = Certs::new();
    let echo = echo_server().await;
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let mut settings = ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    );
    settings.hubs[0].hub = format!("localhost:{}", hub.control.port());
    settings.hubs[0].channel = format!("localhost:{}", hub.channel.port());
    let _ep = TestEp::start(settings);
    assert_eq!(
        echo_through(hub.service("echo"), b"by name").await,
        b"by name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eps_can_reach_the_hub_over_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        println!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let certs = Certs::new();
    let echo = echo_server().await;
    let opts = HubOpts {
        control: "[::1]:0".into(),
        channel: "[::1]:0".into(),
        allowlist: vec!["::1/128".into()],
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    let _ep = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    ));
    assert_eq!(echo_through(hub.service("echo"), b"v6").await, b"v6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_leave_from_the_control_connections_address_and_say_so_when_they_cannot() {
    let certs = Certs::new();
    let opts = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    let settings = ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    let _ep = TestEp::start(settings.clone());
    hub.wait_sessions(1).await; // control from 127.0.0.1
    assert_eq!(echo_through(hub.service("echo"), b"same").await, b"same");
    // A channel from another address of the same host (a rotated IPv6
    // temporary address, a second WAN link) is refused before TLS...
    let ch = hub.channel.to_string();
    let from = Some("127.0.0.2".parse().unwrap());
    let err = match ferry::ep::connect_channel_for_tests(&settings, &ch, from).await {
        Ok(_) => panic!("a channel from another address was accepted"),
        Err(e) => e,
    };
    println!("figure: the ep says: {err}");
    // ...and the ep says what happened rather than blaming the allowlist,
    assert!(
        matches!(err, ferry::ep::LoginError::ChannelClosedEarly(_))
            && err
                .to_string()
                .contains("only from the address of this ep's control connection"),
        "{err}"
    );
    // ...and so does the hub (a warning, counted by reason).
    let refusals = hub.handle.refusals();
    assert!(
        refusals
            .get("channel from a stranger")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{refusals:?}"
    );
    // Bound to the control connection's address, the same dial is accepted.
    let from = Some("127.0.0.1".parse().unwrap());
    assert!(
        ferry::ep::connect_channel_for_tests(&settings, &ch, from)
            .await
            .is_ok()
    );
}

/// A certificate's holder (a compromised ep) opening channel handshakes
/// with tickets the hub never gave: the first refused one penalises its
/// address, so the rest are turned away before TLS (one a second gets a
/// probation try) instead of each costing the hub a full handshake; the
/// ep's players are still served, and its next channel taken clears the
/// penalty. Before, a valid certificate cleared the penalty at once, and
/// 1,024 handshakes could be in flight from one address. Over QUIC there
/// is no channel door: a player is a stream the hub opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_handshakes_with_tickets_never_given_are_turned_away_before_tls() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let settings = ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    let _ep = TestEp::start(settings.clone());
    hub.wait_sessions(1).await;
    assert_eq!(
        echo_through(hub.service("echo"), b"before").await,
        b"before"
    );
    let ch = hub.channel.to_string();
    let (mut handshakes, mut turned) = (0, 0);
    for _ in 0..50 {
        let Ok(mut tls) = ferry::ep::connect_channel_for_tests(&settings, &ch, None).await else {
            turned += 1;
            continue;
        };
        handshakes += 1;
        let junk = ferry::proto::EpMsg::Channel {
            service: "echo".into(),
            ticket: "0".repeat(64),
        };
        let _ = ferry::proto::write_msg(&mut tls, &junk).await;
        // Refused: the hub closes it.
        let mut b = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut b)).await;
    }
    println!(
        "figure: 50 channel dials with tickets never given: {handshakes} TLS handshakes, \
         {turned} turned away before TLS"
    );
    assert!(handshakes <= 5, "{handshakes} handshakes of 50");
    assert_eq!(echo_through(hub.service("echo"), b"after").await, b"after");
}

/// The kernel's timer for the TCP socket from `local` to `remote`
/// (/proc/net/tcp's `tr`: 2 is the keepalive timer, 0 none).
fn tcp_timer(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u8> {
    let hex = |a: std::net::SocketAddr| {
        let std::net::IpAddr::V4(ip) = a.ip() else {
            panic!("IPv4 only")
        };
        format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port())
    };
    let (l, r) = (hex(local), hex(remote));
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f[1] == l && f[2] == r).then(|| f[5].split(':').next().unwrap().parse().unwrap())
        })
}

on_every_transport!(player_and_service_legs_keep_alive_so_a_vanished_peer_is_found);

async fn player_and_service_legs_keep_alive_so_a_vanished_peer_is_found(t: Transport) {
    let certs = Certs::new();
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = service.local_addr().unwrap();
    let (hub, _ep) = tunnel_over(&certs, t, HubOpts::default(), local).await;
    let player = TcpStream::connect(hub.service("echo")).await.unwrap();
    let (home_leg, ep_side) = service.accept().await.unwrap();
    // The hub's end of the player's connection, and the ep's end of the
    // service's connection: both idle now. Each side sets keepalive just
    // after its connect or accept returns, which may be a moment after
    // ours: looked at until set, for a few seconds at most.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (hub_player_leg, ep_service_leg) = loop {
        let legs = (
            tcp_timer(hub.service("echo"), player.local_addr().unwrap()),
            tcp_timer(ep_side, home_leg.local_addr().unwrap()),
        );
        if legs == (Some(2), Some(2)) || std::time::Instant::now() > deadline {
            break legs;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "figure: kernel timers, hub player leg {hub_player_leg:?}, ep service leg {ep_service_leg:?} (2 = keepalive)"
    );
    assert_eq!(hub_player_leg, Some(2), "no keepalive on the player leg");
    assert_eq!(ep_service_leg, Some(2), "no keepalive on the service leg");
}
