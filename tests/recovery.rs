//! The tunnel comes back by itself after an ep or hub restart.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

on_every_transport!(
    ep_restart_recovers_and_a_waiting_player_is_served,
    a_udp_flow_that_arrives_while_the_ep_is_away_is_served,
    a_udp_player_is_answered_again_after_the_home_s_address_changes,
    a_tcp_player_is_carried_on_or_broken_when_the_home_s_address_changes,
);

/// The home's address changes under a UDP player mid-game: every
/// connection the ep had open to the hub is lost without a word (the ep's
/// old ports go dark for good), what it opens next gets through. The
/// player, still sending, is answered again within seconds: over QUIC the
/// connection moves to the new port; over TLS the flow's dead channel is
/// given up within the heartbeat timeout (2 s here), not after the
/// kernel's ~15 minutes of retries, and the next datagram starts a new
/// flow through the ep's new session. The game at home speaks unasked
/// too, so the ep's end of the dead channel has data in flight: the ep
/// gives it up as well and holds one flow again, not a ghost beside it.
async fn a_udp_player_is_answered_again_after_the_home_s_address_changes(t: Transport) {
    use common::udp::*;
    let certs = Certs::new();
    let home = chatty_echo().await;
    let o = HubOpts {
        service_extra: "type = \"udp\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &t.hub_opts(o)).await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), home)]));
    let (_ep, handle) = TestEp::start_with_handle(ep_settings(&certs, &hub, &eo)).await;
    hub.wait_sessions(1).await;
    let to = hub.handle.service_addr("echo").unwrap();
    let p = player().await;
    let within = Duration::from_secs(10);
    answered(&p, to, b"before", within).await;
    let hub_ports = [hub.control.port(), hub.channel.port()];
    let quic = handle.quic_local_addr().map(|a| a.port());
    let udp = quic.zip(hub.handle.quic_addr().map(|a| a.port()));
    let Some(_dark) = common::dark::Dark::now(&hub_ports, udp) else {
        return;
    };
    if quic.is_some() {
        handle.rebind_quic().unwrap();
    }
    let began = Instant::now();
    answered(&p, to, b"after", Duration::from_secs(20)).await;
    println!(
        "figure: answered again {:?} after the home's address changed",
        began.elapsed()
    );
    // The ep's flows for `echo`: the player's, and no ghost on the dead path.
    let flows = || handle.status()["services"][0]["players"].as_i64();
    let deadline = Instant::now() + within;
    while flows() != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the ep holds {:?} flows",
            flows()
        );
        answered(&p, to, b"still", within).await;
    }
    println!(
        "figure: the ep back to one flow {:?} after the change",
        began.elapsed()
    );
}

/// The home's address changes under a TCP player who keeps talking (an
/// ssh session, a game) to a service that talks too: over QUIC the
/// connection moves to the new port and the player is carried on; over
/// TLS its channel was a connection from the old address, which cannot
/// move: the player is broken (a reset) within seconds of the heartbeat
/// timeout, not left hanging for the kernel's ~15 minutes of retries; the
/// ep lets go of the service at home as soon (no ghost player there); and
/// the player joins again at once through the ep's new session.
async fn a_tcp_player_is_carried_on_or_broken_when_the_home_s_address_changes(t: Transport) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let (home, mut home_ended) = chatty_tcp_echo().await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), home)]));
    let (_ep, handle) = TestEp::start_with_handle(ep_settings(&certs, &hub, &eo)).await;
    hub.wait_sessions(1).await;
    let mut player = TcpStream::connect(hub.service("echo")).await.unwrap();
    let mut heard = Vec::new();
    let mut buf = [0u8; 256];
    player.write_all(b"before").await.unwrap();
    while !contains(&heard, b"before") {
        let n = player.read(&mut buf).await.unwrap();
        heard.extend_from_slice(&buf[..n]);
    }
    let hub_ports = [hub.control.port(), hub.channel.port()];
    let quic = handle.quic_local_addr().map(|a| a.port());
    let udp = quic.zip(hub.handle.quic_addr().map(|a| a.port()));
    let Some(_dark) = common::dark::Dark::now(&hub_ports, udp) else {
        return;
    };
    if quic.is_some() {
        handle.rebind_quic().unwrap();
    }
    let began = Instant::now();
    heard.clear();
    // The player keeps talking, as a game or a typing user does.
    let ended = loop {
        assert!(
            began.elapsed() < Duration::from_secs(45),
            "the player neither carried on nor broken within 45 s"
        );
        if let Err(e) = player.write_all(b"again!").await {
            break Some(e.kind());
        }
        match tokio::time::timeout(Duration::from_millis(500), player.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) => panic!("a clean end: a cut session must look broken"),
            Ok(Ok(n)) => heard.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => break Some(e.kind()),
        }
        if contains(&heard, b"again!") {
            break None;
        }
    };
    if quic.is_some() {
        assert_eq!(ended, None, "over QUIC the player is carried on");
        println!(
            "figure: carried on, answered {:?} after the change",
            began.elapsed()
        );
        return;
    }
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
    assert!(
        matches!(ended, Some(ConnectionReset | BrokenPipe)),
        "over TLS the player is broken, with a reset: {ended:?}"
    );
    println!("figure: broken {:?} after the change", began.elapsed());
    // The ep's end: home still talks into the dead channel, and the ep
    // lets go of it rather than keep a ghost player at home.
    let players = || handle.status()["services"][0]["players"].as_i64();
    let deadline = Instant::now() + Duration::from_secs(30);
    while players() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the ep holds {:?} players",
            players()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "figure: the ep let go of home {:?} after the change",
        began.elapsed()
    );
    let home_saw = home_ended.recv().await.expect("home's connection ended");
    assert!(
        matches!(home_saw, Some(ConnectionReset | BrokenPipe)),
        "home saw {home_saw:?}: a cut player must look broken at home too"
    );
    // Joining again works at once, through the ep's new session.
    let mut again = TcpStream::connect(hub.service("echo")).await.unwrap();
    again.write_all(b"rejoin").await.unwrap();
    let mut heard = Vec::new();
    let rejoined = async {
        while !contains(&heard, b"rejoin") {
            let n = again.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed");
            heard.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), rejoined)
        .await
        .expect("served again");
}

fn contains(heard: &[u8], what: &[u8]) -> bool {
    heard.windows(what.len()).any(|w| w == what)
}

/// A TCP echo that also sends `t` every 100 ms, as a game server does;
/// how each connection ended (`None`: a clean end) goes to the receiver.
async fn chatty_tcp_echo() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Option<std::io::ErrorKind>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.into_split();
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut buf = vec![0u8; 2048];
                let ended = loop {
                    let wrote = tokio::select! {
                        r = rd.read(&mut buf) => match r {
                            Ok(0) => break None,
                            Ok(n) => wr.write_all(&buf[..n]).await,
                            Err(e) => break Some(e.kind()),
                        },
                        _ = tick.tick() => wr.write_all(b"t").await,
                    };
                    if let Err(e) = wrote {
                        break Some(e.kind());
                    }
                };
                let _ = tx.send(ended);
            });
        }
    });
    (addr, rx)
}

/// A UDP echo that also sends `tick` to each peer it has heard, every
/// 100 ms, as a game server does.
async fn chatty_echo() -> std::net::SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut peers = std::collections::HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                r = sock.recv_from(&mut buf) => if let Ok((n, from)) = r {
                    peers.insert(from);
                    let _ = sock.send_to(&buf[..n], from).await;
                },
                _ = tick.tick() => for p in &peers {
                    let _ = sock.send_to(b"tick", p).await;
                },
            }
        }
    });
    addr
}

/// Sends `d` every 200 ms until its echo comes back (other datagrams,
/// such as ticks, are skipped), up to `within`.
async fn answered(p: &tokio::net::UdpSocket, to: std::net::SocketAddr, d: &[u8], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 2048];
    loop {
        p.send_to(d, to).await.unwrap();
        let next = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(next, p.recv_from(&mut buf)).await {
            if &buf[..n] == d {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?} not answered within {within:?}",
            String::from_utf8_lossy(d)
        );
    }
}

/// A UDP flow whose first datagram arrives while the ep is away waits for
/// it (as a TCP player does) and is answered once it is back: the first
/// datagram is not lost.
async fn a_udp_flow_that_arrives_while_the_ep_is_away_is_served(t: Transport) {
    use common::udp::*;
    let certs = Certs::new();
    let (home, _) = udp_echo().await;
    let o = HubOpts {
        service_extra: "type = \"udp\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &t.hub_opts(o)).await;
    let settings = ep_settings(
        &certs,
        &hub,
        &t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), home)])),
    );
    let ep = TestEp::start(settings.clone());
    hub.wait_sessions(1).await;
    let to = hub.handle.service_addr("echo").unwrap();
    let p = player().await;
    assert_eq!(
        ask_until(&p, to, b"before", Duration::from_secs(10)).await,
        b"before"
    );
    ep.stop().await;
    hub.wait_sessions(0).await;
    // A new flow's first datagram while no ep is there.
    let q = player().await;
    q.send_to(b"patient", to).await.unwrap();
    let _ep = TestEp::start(settings);
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(10), q.recv_from(&mut buf))
        .await
        .expect("the waiting flow's first datagram was answered")
        .unwrap();
    assert_eq!(&buf[..got.0], b"patient");
}

async fn ep_restart_recovers_and_a_waiting_player_is_served(t: Transport) {
    let certs = Certs::new();
    let echo = echo_server().await;
    let hub = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let settings = ep_settings(
        &certs,
        &hub,
        &t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), echo)])),
    );
    let ep = TestEp::start(settings.clone());
    hub.wait_sessions(1).await;
    assert_eq!(
        echo_through(hub.service("echo"), b"before").await,
        b"before"
    );
    ep.stop().await;
    hub.wait_sessions(0).await;
    // A player arrives while no ep is there: the hub holds it (port lease).
    let waiting = tokio::spawn(echo_through(hub.service("echo"), b"patient"));
    let _ep = TestEp::start(settings);
    assert_eq!(waiting.await.unwrap(), b"patient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_restart_recovers_by_itself() {
    let certs = Certs::new();
    let echo = echo_server().await;
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let (control, channel) = (hub.control, hub.channel);
    let _ep = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    ));
    hub.wait_sessions(1).await;
    assert_eq!(
        echo_through(hub.service("echo"), b"before").await,
        b"before"
    );
    hub.stop().await;
    let started = Instant::now();
    // Same control and channel ports (the ep's config names them).
    let opts = HubOpts {
        control: control.to_string(),
        channel: channel.to_string(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    assert_eq!(echo_through(hub.service("echo"), b"after").await, b"after");
    println!(
        "hub restart: new player served {:?} after the new hub bound",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_mid_game_survives_a_replaced_control_session() {
    let certs = Certs::new();
    let (hub, _ep) = echo_tunnel(&certs).await;
    let mut player = TcpStream::connect(hub.service("echo")).await.unwrap();
    player.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    player.read_exact(&mut buf).await.unwrap();
    // The same ep identity logs in again: the old control session ends.
    let settings = by_hand(&certs, &hub);
    let (_tls, _welcome) = ferry::ep::login(&settings).await.unwrap();
    player.write_all(b"two").await.unwrap();
    player.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"two", "the relaying channel kept flowing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_who_leaves_while_waiting_never_reaches_the_service() {
    let certs = Certs::new();
    let svc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc_addr = svc.local_addr().unwrap();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    // No ep yet: the player waits at the port, then gives up.
    let p = TcpStream::connect(hub.service("echo")).await.unwrap();
    drop(p);
    let settings = ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), svc_addr)]),
    );
    let _ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    // The next real player is the first connection the service sees.
    let mut p = TcpStream::connect(hub.service("echo")).await.unwrap();
    p.write_all(b"real").await.unwrap();
    let (mut s, _) = svc.accept().await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(
        &got, b"real",
        "a phantom connection reached the service first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_session_is_told_why() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let settings = by_hand(&certs, &hub);
    let (first, _) = ferry::ep::login(&settings).await.unwrap();
    let (_second, _) = ferry::ep::login(&settings).await.unwrap();
    let (mut rd, _wr) = tokio::io::split(first);
    let reason = loop {
        match ferry::proto::read_msg::<_, ferry::proto::HubMsg>(&mut rd)
            .await
            .unwrap()
        {
            ferry::proto::HubMsg::Closing { reason, .. } => break reason,
            _ => continue,
        }
    };
    assert!(reason.contains("replaced by a newer login"), "{reason}");
}

on_every_transport!(two_eps_sharing_a_certificate_do_not_spin_on_logins);

/// Each replaced ep is told why and waits `backoff_max` (over QUIC too:
/// the hub's goodbye must reach the ep before the connection closes).
async fn two_eps_sharing_a_certificate_do_not_spin_on_logins(t: Transport) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let mut o = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    o.extra = "backoff_max = \"5s\"\n".into();
    let settings = ep_settings(&certs, &hub, &t.ep_opts(&hub, o));
    let _a = TestEp::start(settings.clone());
    let _b = TestEp::start(settings);
    // The second login replaces the first; from then on, count.
    let mut logins = hub.handle.logins();
    tokio::time::timeout(Duration::from_secs(20), logins.wait_for(|n| *n >= 2))
        .await
        .unwrap()
        .unwrap();
    let start = *logins.borrow();
    let (peak, runs) = hub.handle.argon2_runs();
    // A window of time is what is measured here, not a readiness wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = *hub.handle.logins().borrow() - start;
    let runs = hub.handle.argon2_runs().1 - runs;
    println!(
        "figure ({t:?}): two eps with one certificate: {n} more logins and {runs} Argon2 runs in 3 s (peak {peak})"
    );
    assert!(n <= 3, "{n} logins in 3 s: the replaced eps spin");
}
