//! The host's view of players: the hub's players table (`/api/players`,
//! `ferry hub status --players`) shows each real player with the three
//! latencies that say where lag comes from, masks addresses when told to,
//! and the history a page opened late starts from (`/api/history`).

mod common;

use common::{procs::ferry_cmd, *};
use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An echo service whose listen queue is full when the ep dials: the
/// kernel drops the ep's SYN and its retry comes a second later, so the
/// dial home takes about a second (a slow service, on purpose). The queue
/// stays full until 400 ms after `start` is sent (just before the player
/// comes), whatever the set-up before took.
async fn slow_to_answer_echo() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    // A queue of one, filled by a connection nobody accepts yet.
    sock.listen(0).unwrap();
    let addr: SocketAddr = sock.local_addr().unwrap().as_socket().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    sock.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(sock.into()).unwrap();
    let (start, started) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = started.await;
        // Long enough for the ep's first SYN to be dropped.
        tokio::time::sleep(Duration::from_millis(400)).await;
        drop(filler);
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 || s.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, start)
}

async fn players(admin: SocketAddr) -> Vec<serde_json::Value> {
    let (code, body) = http_get(admin, "/api/players", None).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `/api/players` until `ok` holds for a row (ten seconds at most).
async fn row_where(
    admin: SocketAddr,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = players(admin).await;
        if let Some(r) = rows.iter().find(|r| ok(r)) {
            return r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such row in {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_players_table_shows_where_a_players_lag_comes_from(t: Transport) {
    let certs = Certs::new();
    let opts = HubOpts {
        extra: "[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    };
    let (slow, start) = slow_to_answer_echo().await;
    let (hub, _ep) = tunnel_over(&certs, t, opts, slow).await;
    hub.wait_sessions(1).await;
    let admin = hub.admin.unwrap();
    let _ = start.send(());
    let mut player = connect_from("127.0.0.2", hub.service("echo"))
        .await
        .unwrap();
    player.write_all(b"hello").await.unwrap();
    let mut b = [0u8; 5];
    player.read_exact(&mut b).await.unwrap();
    // The relay counts a chunk just after writing it: the player may read
    // the echo a moment before the table has it.
    let row = row_where(admin, |r| {
        !r["ep_service_ms"].is_null() && r["bytes_down"] == 5
    })
    .await;
    println!("figure: players row over {t:?}: {row}");
    assert_eq!(row["service"], "echo");
    assert!(
        row["player"].as_str().unwrap().starts_with("127.0.0.2:"),
        "{row}"
    );
    assert_eq!(row["protocol"], "tcp");
    let transport = if t == Transport::Quic { "quic" } else { "tls" };
    assert_eq!(row["transport"], transport);
    assert_eq!(row["ep"], "home");
    assert_eq!(row["bytes_up"], 5);
    assert_eq!(row["bytes_down"], 5);
    // Loopback: the player and the ep are a few µs to a few ms away; the
    // service at home took a second (its SYN was dropped once).
    let ms = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k} in {row}"));
    // (Bounds a loaded machine meets; the point is which leg took the
    // second.)
    assert!(ms("player_hub_ms") < 500.0, "{row}");
    assert!(ms("hub_ep_ms") < 500.0, "{row}");
    assert!(ms("ep_service_ms") > 800.0, "{row}");
    assert!(ms("ep_service_ms") < 5_000.0, "{row}");
    // The metrics carry the same, per service, never per player.
    let (_, metrics) = http_get(admin, "/metrics", None).await;
    for name in [
        "ferry_local_dial_seconds_count{service=\"echo\"} 1",
        "ferry_ep_rtt_seconds{ep=\"home\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(
        !metrics.contains("127.0.0.2"),
        "a player's address in metrics"
    );
    // The player's RTT is sampled every 10 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) = http_get(admin, "/metrics", None).await;
        if metrics.contains("ferry_player_rtt_seconds_count{service=\"echo\"} 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no RTT sample:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `ferry hub status --players` prints it.
    let config = write_hub_toml(&certs, &t.hub_opts(HubOpts::default()), None);
    let out = ferry_cmd()
        .args([
            "hub",
            "status",
            "--players",
            "--admin",
            &admin.to_string(),
            "-c",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    println!("figure: ferry hub status --players →\n{table}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("1 players"), "{table}");
    assert!(table.contains("127.0.0.2:"), "{table}");
    assert!(table.contains("ep service ms"), "{table}");
    // Gone from the table once it leaves.
    drop(player);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !players(admin).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a player who left stays listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn udp_flows_are_listed_without_a_round_trip_and_addresses_can_be_masked(t: Transport) {
    let certs = Certs::new();
    let opts = |hide: bool| {
        t.hub_opts(HubOpts {
            extra: format!("[admin]\nbind = \"127.0.0.1:0\"\nhide_addresses = {hide}\n"),
            service_extra: "type = \"udp\"\n".into(),
            ..Default::default()
        })
    };
    let (echo, _seen) = common::udp::udp_echo().await;
    let settings = hub_settings(&certs, &opts(false));
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &opts(false)).await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), echo)]));
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let admin = hub.admin.unwrap();
    let player = tokio::net::UdpSocket::bind("127.0.0.3:0").await.unwrap();
    player.send_to(b"ping", hub.service("echo")).await.unwrap();
    let mut b = [0u8; 16];
    let _ = tokio::time::timeout(Duration::from_secs(10), player.recv_from(&mut b))
        .await
        .expect("an answer through the tunnel");
    let row = row_where(admin, |r| r["protocol"] == "udp").await;
    assert!(
        row["player"].as_str().unwrap().starts_with("127.0.0.3:"),
        "{row}"
    );
    // Masking is applied live by a reload.
    let plan = hub.reload_to(&certs, &opts(true), &file).await;
    assert!(
        plan.as_ref()
            .is_ok_and(|p| p.contains("admin.hide_addresses")),
        "{plan:?}"
    );
    let row = row_where(admin, |r| r["protocol"] == "udp").await;
    println!("figure: a UDP flow's row over {t:?}: {row}");
    assert_eq!(row["player"], "127.0.0.x", "{row}");
    // The gap between a datagram and its answer is the game's, not a RTT.
    assert!(row["player_hub_ms"].is_null(), "{row}");
    assert!(row["ep_service_ms"].is_null(), "{row}");
    assert!(!row["hub_ep_ms"].is_null(), "{row}");
    let (_, page) = http_get(admin, "/", None).await;
    assert!(!page.contains("127.0.0.3"), "a masked address on the page");
    assert!(page.contains("127.0.0.x"), "the masked player on the page");
}

/// Polls until the players table is empty (ten seconds at most).
async fn table_empties(admin: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !players(admin).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            players(admin).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A player who gives up waiting for an ep leaves the table.
async fn a_player_who_stops_waiting_leaves_the_table(t: Transport) {
    let certs = Certs::new();
    let opts = t.hub_opts(HubOpts {
        extra: "[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &opts).await;
    let admin = hub.admin.unwrap();
    let waiting = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    let row = row_where(admin, |r| r["transport"] == "waiting").await;
    assert!(row["ep"].is_null(), "{row}");
    drop(waiting);
    table_empties(admin).await;
}

/// A UDP flow that idles out leaves the table.
async fn a_udp_flow_that_idles_out_leaves_the_table(t: Transport) {
    let certs = Certs::new();
    let opts = HubOpts {
        extra: "[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        service_extra: "type = \"udp\"\nudp_idle_timeout = 1\n".into(),
        ..Default::default()
    };
    let (echo, _seen) = common::udp::udp_echo().await;
    let (hub, _ep) = tunnel_over(&certs, t, opts, echo).await;
    hub.wait_sessions(1).await;
    let admin = hub.admin.unwrap();
    let p = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let answer =
        common::udp::ask_until(&p, hub.service("echo"), b"hi", Duration::from_secs(10)).await;
    assert_eq!(answer, b"hi");
    row_where(admin, |r| r["protocol"] == "udp").await;
    table_empties(admin).await;
}

on_every_transport!(
    a_player_who_stops_waiting_leaves_the_table,
    a_udp_flow_that_idles_out_leaves_the_table,
    the_players_table_shows_where_a_players_lag_comes_from,
    udp_flows_are_listed_without_a_round_trip_and_addresses_can_be_masked,
);
