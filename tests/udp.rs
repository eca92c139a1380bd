//! UDP services: each player a flow of its own, first datagrams kept,
//! every size whole, idle flows ended, ranges mapped, floods bounded.

mod common;

use common::udp::*;
use common::*;
use std::{net::SocketAddr, time::Duration};

const UDP: &str = "type = \"udp\"\n";

/// A hub with one UDP service `echo` on `door` and an ep serving it from
/// `local`.
async fn udp_tunnel(
    certs: &Certs,
    door: Door,
    extra: &str,
    local: SocketAddr,
) -> (TestHub, TestEp) {
    door_tunnel(certs, door, &format!("{UDP}{extra}"), local).await
}

on_every_udp_door!(
    fifty_new_flows_at_once_each_get_their_first_answer,
    datagrams_of_every_size_arrive_whole_one_for_one,
    an_idle_flow_ends_and_the_player_gets_a_new_one,
    flows_come_back_after_the_ep_restarts,
    a_port_range_maps_onto_the_same_range_at_home_for_tcp_and_udp,
    a_flood_of_new_sources_stays_bounded_and_never_starves_a_player,
    the_service_learns_each_players_address_from_a_proxy_header,
    flows_come_back_after_the_hub_restarts,
    datagrams_sent_while_home_is_away_reach_it_in_order,
);

async fn fifty_new_flows_at_once_each_get_their_first_answer(door: Door) {
    let certs = Certs::new();
    let (home, seen) = udp_echo().await;
    let (hub, _ep) = udp_tunnel(&certs, door, "", home).await;
    let to = hub.service("echo");
    let mut players = Vec::new();
    for _ in 0..50 {
        players.push(player().await);
    }
    // One datagram each, all at once, no retry: as a game's server ping.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let mut asks = tokio::task::JoinSet::new();
    for (i, p) in players.into_iter().enumerate() {
        let start = start.clone();
        asks.spawn(async move {
            start.wait().await;
            let msg = format!("ping {i}");
            let a = ask(&p, to, msg.as_bytes(), Duration::from_secs(15)).await;
            (a.as_deref() == Some(msg.as_bytes()), i)
        });
    }
    let mut lost = Vec::new();
    while let Some(r) = asks.join_next().await {
        if let (false, i) = r.unwrap() {
            lost.push(i);
        }
    }
    assert!(lost.is_empty(), "players without an answer: {lost:?}");
    // Each player is a peer of its own at home, as without the tunnel.
    assert_eq!(seen.lock().unwrap().len(), 50);
    assert_eq!(hub.handle.udp_flows("echo"), Some(50));
}

async fn datagrams_of_every_size_arrive_whole_one_for_one(door: Door) {
    let certs = Certs::new();
    let (home, _) = udp_echo().await;
    let (hub, _ep) = udp_tunnel(&certs, door, "", home).await;
    let to = hub.service("echo");
    let p = player().await;
    for size in [1usize, 1_472, 8_192, 65_507, 0] {
        let d: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        let back = ask(&p, to, &d, Duration::from_secs(10)).await;
        assert_eq!(back.as_ref().map(Vec::len), Some(size), "size {size}");
        assert_eq!(back.unwrap(), d, "size {size}: bytes changed");
    }
    // A burst keeps its boundaries: twenty datagrams in, twenty out.
    for i in 0..20u8 {
        p.send_to(&vec![i; 100 + i as usize], to).await.unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    for i in 0..20u8 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), p.recv_from(&mut buf))
            .await
            .expect("burst answered")
            .unwrap();
        assert_eq!(&buf[..n], &vec![i; 100 + i as usize][..]);
    }
}

async fn an_idle_flow_ends_and_the_player_gets_a_new_one(door: Door) {
    let certs = Certs::new();
    let (home, seen) = udp_echo().await;
    let (hub, _ep) = udp_tunnel(&certs, door, "udp_idle_timeout = \"1s\"\n", home).await;
    let to = hub.service("echo");
    let p = player().await;
    assert!(ask(&p, to, b"one", Duration::from_secs(10)).await.is_some());
    assert_eq!(hub.handle.udp_flows("echo"), Some(1));
    // Answers count as activity: a flow kept busy by the service lives.
    eventually("idle flow ended", Duration::from_secs(5), || {
        hub.handle.udp_flows("echo") == Some(0)
    })
    .await;
    // The same player comes back: a new flow, a new socket at home.
    assert_eq!(
        ask(&p, to, b"two", Duration::from_secs(10))
            .await
            .as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(hub.handle.udp_flows("echo"), Some(1));
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "a fresh socket at home for the new flow"
    );
}

async fn flows_come_back_after_the_ep_restarts(door: Door) {
    let certs = Certs::new();
    let (home, _) = udp_echo().await;
    let (hub, ep) = udp_tunnel(&certs, door, "", home).await;
    let to = hub.service("echo");
    let p = player().await;
    assert!(
        ask(&p, to, b"before", Duration::from_secs(10))
            .await
            .is_some()
    );
    ep.stop().await;
    hub.wait_sessions(0).await;
    let eo = door.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), home)]));
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    // The player keeps sending as a game would; answers resume.
    let back = ask_until(&p, to, b"after", Duration::from_secs(15)).await;
    assert_eq!(back, b"after");
}

async fn a_port_range_maps_onto_the_same_range_at_home_for_tcp_and_udp(door: Door) {
    let certs = Certs::new();
    let home_first = free_range(3);
    let mut homes = Vec::new();
    for port in home_first..home_first + 3 {
        let at: SocketAddr = ([127, 0, 0, 1], port).into();
        homes.push(udp_echo_at(at).await.0);
        let tcp = tokio::net::TcpListener::bind(at).await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let port = s.local_addr().unwrap().port();
                    let _ = s.write_all(format!("tcp {port}").as_bytes()).await;
                });
            }
        });
    }
    let hub_first = free_range(3);
    let opts = door.hub_opts(HubOpts {
        services: vec![],
        extra: format!(
            "[services.game]\nbind = \"{}:{hub_first}-{}\"\ntype = \"tcp+udp\"\n",
            door.host(),
            hub_first + 2
        ),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &opts).await;
    let eo = door.ep_opts(&hub, EpOpts::new(&certs, vec![]));
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text += &format!(
        "[services.game]\nlocal = \"127.0.0.1:{home_first}-{}\"\n",
        home_first + 2
    );
    std::fs::write(&file, text).unwrap();
    let settings = load_ep_file(&file);
    let _ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    for i in 0..3u16 {
        let to: SocketAddr = ([127, 0, 0, 1], hub_first + i).into();
        let p = player().await;
        let msg = format!("udp to {}", hub_first + i);
        let back = ask(&p, to, msg.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(
            back.as_deref(),
            Some(msg.as_bytes()),
            "udp port {i} of the range"
        );
        let mut tcp = tokio::net::TcpStream::connect(to).await.unwrap();
        let mut got = String::new();
        use tokio::io::AsyncReadExt;
        tcp.read_to_string(&mut got).await.unwrap();
        assert_eq!(
            got,
            format!("tcp {}", home_first + i),
            "tcp port {i} of the range"
        );
    }
}

#[tokio::test]
async fn an_ep_that_disagrees_on_type_or_range_is_refused_with_the_reason() {
    let certs = Certs::new();
    let opts = HubOpts {
        service_extra: UDP.into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    let (home, _) = udp_echo().await;
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), home)]);
    eo.service_extra = "type = \"tcp\"\n".into();
    let e = login_error(&ep_settings(&certs, &hub, &eo))
        .await
        .to_string();
    assert!(e.contains("type = \"udp\"") && e.contains("\"tcp\""), "{e}");
    // Another ep (a refused login counts against its certificate).
    let mut eo = EpOpts::new(&certs, vec![]);
    eo.cert = "other".into();
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text += "[services.echo]\nlocal = \"127.0.0.1:5000-5001\"\n";
    std::fs::write(&file, text).unwrap();
    let settings = load_ep_file(&file);
    let e = login_error(&settings).await.to_string();
    assert!(e.contains("binds 1 port(s), the ep's local maps 2"), "{e}");
}

/// Whether `msg`, sent to `to` (again every 500 ms: a datagram may be
/// lost, as on any network), comes back within `within`; a late answer to
/// an earlier message is skipped, not taken for this one's.
async fn heard_back(
    p: &tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    msg: &[u8],
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 65_536];
    while tokio::time::Instant::now() < deadline {
        p.send_to(msg, to).await.unwrap();
        let next = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(next, p.recv_from(&mut buf)).await {
            if &buf[..n] == msg {
                return true;
            }
        }
    }
    false
}

async fn a_flood_of_new_sources_stays_bounded_and_never_starves_a_player(door: Door) {
    let certs = Certs::new();
    let (home, _) = udp_echo().await;
    let (hub, _ep) = udp_tunnel(&certs, door, "max_udp_flows = 16\n", home).await;
    let to = hub.service("echo");
    // A player in conversation: answered, and spoke again.
    let p = player().await;
    for _ in 0..2 {
        assert!(
            ask(&p, to, b"hello", Duration::from_secs(10))
                .await
                .is_some()
        );
    }
    // 2,000 datagrams from 500 sources the hub has never seen (other
    // loopback addresses: a forged flood looks like this to the hub).
    let flood = tokio::spawn(async move {
        for round in 0..4 {
            for host in 2..127u8 {
                let s = player_from(&format!("127.0.{round}.{host}")).await;
                let _ = s.send_to(b"flood", to).await;
            }
        }
    });
    let mut answered = 0;
    let mut peak = 0;
    for i in 0..100 {
        let msg = format!("still here {i}");
        if heard_back(&p, to, msg.as_bytes(), Duration::from_secs(10)).await {
            answered += 1;
        }
        peak = peak.max(hub.handle.udp_flows("echo").unwrap());
    }
    flood.await.unwrap();
    assert!(peak <= 16, "flows peaked at {peak}, over max_udp_flows");
    assert_eq!(answered, 100, "the player lost answers during the flood");
    let refused: u64 = hub.handle.refusals().values().sum();
    println!("flood: peak {peak} flows, player answered {answered}/100, refusals {refused}");
}

async fn the_service_learns_each_players_address_from_a_proxy_header(door: Door) {
    let certs = Certs::new();
    for (mode, headed) in [("first", [true, false]), ("every", [true, true])] {
        let home = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let opts = door.hub_opts(HubOpts {
            service_extra: UDP.into(),
            ..Default::default()
        });
        let hub = TestHub::start(&certs, &opts).await;
        let mut eo = door.ep_opts(
            &hub,
            EpOpts::new(&certs, vec![("echo".into(), home.local_addr().unwrap())]),
        );
        eo.service_extra = format!("proxy_protocol = \"v2\"\nproxy_protocol_udp = \"{mode}\"\n");
        let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
        hub.wait_sessions(1).await;
        let p = player().await;
        let public = hub.service("echo");
        let mut buf = vec![0u8; 65_536];
        for (i, want_header) in headed.iter().enumerate() {
            p.send_to(format!("game {i}").as_bytes(), public)
                .await
                .unwrap();
            let (n, _) = tokio::time::timeout(Duration::from_secs(10), home.recv_from(&mut buf))
                .await
                .expect("datagram at home")
                .unwrap();
            let d = &buf[..n];
            let body = if *want_header {
                assert_eq!(&d[..12], b"\r\n\r\n\0\r\nQUIT\n", "{mode}: datagram {i}");
                assert_eq!(d[13], 0x12, "IPv4 over UDP");
                let len = u16::from_be_bytes([d[14], d[15]]) as usize;
                let a = &d[16..16 + len];
                let src =
                    SocketAddr::from(([a[0], a[1], a[2], a[3]], u16::from_be_bytes([a[8], a[9]])));
                let dst = SocketAddr::from((
                    [a[4], a[5], a[6], a[7]],
                    u16::from_be_bytes([a[10], a[11]]),
                ));
                assert_eq!(src, p.local_addr().unwrap(), "the player's real address");
                assert_eq!(dst, public);
                &d[16 + len..]
            } else {
                d
            };
            assert_eq!(body, format!("game {i}").as_bytes(), "{mode}: datagram {i}");
        }
    }
}

async fn flows_come_back_after_the_hub_restarts(door: Door) {
    let certs = Certs::new();
    let (home, _) = udp_echo().await;
    let first = free_range(3);
    // A fixed QUIC port too: the ep comes back to the same one.
    let quic = free_range(1);
    let mut opts = door.hub_opts(HubOpts {
        control: format!("127.0.0.1:{first}"),
        channel: format!("127.0.0.1:{}", first + 1),
        services: vec![],
        extra: format!(
            "[services.echo]\nbind = \"{}:{}\"\ntype = \"udp\"\n",
            door.host(),
            first + 2
        ),
        ..Default::default()
    });
    opts.extra = opts.extra.replace(
        "quic = \"127.0.0.1:0\"",
        &format!("quic = \"127.0.0.1:{quic}\""),
    );
    let hub = TestHub::start(&certs, &opts).await;
    let eo = door.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), home)]));
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let to: SocketAddr = ([127, 0, 0, 1], first + 2).into();
    let p = player().await;
    assert!(
        ask(&p, to, b"before", Duration::from_secs(10))
            .await
            .is_some()
    );
    hub.stop().await;
    // quinn's endpoint task lets the old QUIC socket go a moment after the
    // hub stopped (a restart is a new process, where this never shows).
    eventually("the QUIC port released", Duration::from_secs(5), || {
        std::net::UdpSocket::bind(("127.0.0.1", quic)).is_ok()
    })
    .await;
    // The same hub comes back on the same ports; the ep reconnects by
    // itself and the player, still sending, gets answers again.
    let hub = TestHub::start(&certs, &opts).await;
    hub.wait_sessions(1).await;
    assert_eq!(
        ask_until(&p, to, b"after", Duration::from_secs(15)).await,
        b"after"
    );
    assert_eq!(hub.handle.udp_flows("echo"), Some(1));
}

/// A player who keeps sending while the ep logs in: what waited at the hub
/// and what comes after reach the service in the order sent (over QUIC the
/// hub starts sending on its own as the flow opens: it must not pass what
/// waited).
async fn datagrams_sent_while_home_is_away_reach_it_in_order(door: Door) {
    let certs = Certs::new();
    let home = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let opts = door.hub_opts(HubOpts {
        service_extra: UDP.into(),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &opts).await;
    let public = hub.service("echo");
    let p = player().await;
    const LAST: u32 = 3_000;
    // Sent before the ep starts: they wait at the hub (its queue holds 128).
    const WAITED: u32 = 50;
    let (waited, all_waiting) = tokio::sync::oneshot::channel();
    let (ep_in, logged_in) = tokio::sync::oneshot::channel();
    let sender = tokio::spawn(async move {
        for i in 0..WAITED {
            p.send_to(&i.to_be_bytes(), public).await.unwrap();
        }
        waited.send(()).unwrap();
        // The rest while the flow opens and after.
        logged_in.await.unwrap();
        let mut pace = tokio::time::interval(Duration::from_micros(500));
        for i in WAITED..=LAST {
            pace.tick().await;
            p.send_to(&i.to_be_bytes(), public).await.unwrap();
        }
    });
    all_waiting.await.unwrap();
    let eo = door.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), home.local_addr().unwrap())]),
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    ep_in.send(()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.last() != Some(&LAST) {
        let (n, _) = tokio::time::timeout(Duration::from_secs(15), home.recv_from(&mut buf))
            .await
            .expect("the flow's datagrams at home")
            .unwrap();
        assert_eq!(n, 4);
        got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
    }
    sender.await.unwrap();
    // Every datagram that waited arrives, and none after a later one.
    assert_eq!(
        got[..WAITED as usize],
        (0..WAITED).collect::<Vec<_>>(),
        "what waited for home"
    );
    let out_of_order: Vec<_> = got.windows(2).filter(|w| w[0] >= w[1]).collect();
    assert!(
        out_of_order.is_empty(),
        "out of order at home: {out_of_order:?}"
    );
    println!(
        "{} of {} datagrams reached home, in order",
        got.len(),
        LAST + 1
    );
}
