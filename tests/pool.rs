//! The hub's pool of ready channels: no channel is lost when a player leaves
//! at the moment of the handover, and a channel the ep could not open is
//! replaced at once rather than after its ticket expires.

mod common;

use common::{faultproxy::*, *};
use std::time::Duration;
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// Waits until `service`'s pool holds `n` ready channels; false on timeout.
async fn pool_reaches(hub: &TestHub, service: &str, n: usize, within: Duration) -> bool {
    let mut rx = hub.handle.pool_ready(service).unwrap();
    tokio::time::timeout(within, rx.wait_for(|r| *r >= n))
        .await
        .is_ok()
}

/// A hub and an ep serving `echo` whose channels pass a fault proxy set
/// to `mode` from the start; once the ep is logged in.
async fn channels_through_a_proxy(
    certs: &Certs,
    opts: &HubOpts,
    mode: Mode,
) -> (TestHub, FaultProxy, TestEp) {
    let hub = TestHub::start(certs, opts).await;
    let proxy = FaultProxy::start(hub.channel).await;
    proxy.set(mode);
    let ep = TestEp::start(ep_settings_for(
        certs,
        hub.control,
        proxy.addr,
        &EpOpts::new(certs, vec![("echo".into(), echo_server().await)]),
    ));
    hub.wait_sessions(1).await;
    (hub, proxy, ep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_who_leave_at_the_handover_lose_no_channel() {
    let certs = Certs::new();
    // Heartbeat ticks (which also top the pool up) far apart, so only the
    // handover itself can keep the pool full.
    let opts = HubOpts {
        extra: "pool_size = 1\nheartbeat_interval = \"30s\"\nheartbeat_timeout = \"90s\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep) = tunnel_with(&certs, &opts, echo_server().await).await;
    for i in 0..20 {
        let ready = pool_reaches(&hub, "echo", 1, Duration::from_secs(5)).await;
        assert!(
            ready,
            "player {i}: the channel was lost until the next heartbeat tick"
        );
        let mut s = TcpStream::connect(hub.service("echo")).await.unwrap();
        s.shutdown().await.unwrap(); // gone as the channel is handed over
        assert!(closed_by_peer(&mut s, Duration::from_secs(5)).await);
    }
    println!("figure: 20 players left at the handover; the pool stayed full");
    assert!(pool_reaches(&hub, "echo", 1, Duration::from_secs(5)).await);
    assert_eq!(
        echo_through(hub.service("echo"), b"still fine").await,
        b"still fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_the_ep_could_not_open_is_replaced_promptly() {
    let certs = Certs::new();
    // Unanswered tickets count toward the pool for 2 × handshake_timeout.
    let opts = HubOpts {
        extra: "pool_size = 1\nhandshake_timeout = \"10s\"\n".into(),
        ..Default::default()
    };
    let (hub, proxy, _ep) = channels_through_a_proxy(&certs, &opts, Mode::Refuse).await;
    proxy.wait_accepted_over(0).await; // the first channel failed
    proxy.set(Mode::Pass);
    let t = std::time::Instant::now();
    let ready = pool_reaches(&hub, "echo", 1, Duration::from_secs(8)).await;
    println!(
        "figure: after a failed channel the pool was ready again in {:?}",
        t.elapsed()
    );
    assert!(
        ready,
        "the hub waited for the failed channel's ticket to expire"
    );
    assert_eq!(
        echo_through(hub.service("echo"), b"served").await,
        b"served"
    );
}

/// `pool_size = 0`: players who leave before their channels come (a port
/// scan, impatient clients) leave no channel parked. Before, each came and
/// was parked for `idle_timeout` (60 s), holding a socket and TLS state at
/// the hub and the ep: under a low open-file limit the hub could accept no
/// player for that minute. Over QUIC a player's stream is opened for it,
/// and nothing is parked (no pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_for_players_who_left_are_not_parked_beyond_the_pool() {
    let certs = Certs::new();
    let opts = HubOpts {
        extra: "pool_size = 0\n".into(),
        ..Default::default()
    };
    let (hub, proxy, _ep) = channels_through_a_proxy(&certs, &opts, Mode::Pass).await;
    // The channels asked for these players come only after they left.
    proxy.set(Mode::Hold);
    let mut gone = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(hub.service("echo")).await.unwrap();
        s.shutdown().await.unwrap();
        gone.push(s);
    }
    for mut s in gone {
        assert!(closed_by_peer(&mut s, Duration::from_secs(5)).await);
    }
    proxy.set(Mode::Pass);
    assert_eq!(echo_through(hub.service("echo"), b"after").await, b"after");
    let parked = pool_reaches(&hub, "echo", 1, Duration::from_secs(3)).await;
    assert!(!parked, "a channel for a player who left was parked");
}

/// An ep (compromised, or broken) that closes each pooled channel as soon
/// as it is taken: the hub replaces them after a pause, not a round trip
/// later, so it is not made to do TLS handshakes in a loop. TLS only: over
/// QUIC the hub opens a stream per player and keeps no pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ep_closing_its_pooled_channels_at_once_is_not_asked_in_a_loop() {
    use ferry::proto::{self, EpMsg, HubMsg};
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let settings = by_hand(&certs, &hub);
    let (ctrl, _) = ferry::ep::login(&settings).await.unwrap();
    let (rd, mut wr) = tokio::io::split(ctrl);
    let mut rd = proto::FrameReader::new(rd);
    // Its heartbeats, so the session lives.
    tokio::spawn(async move {
        while proto::write_msg(&mut wr, &EpMsg::Heartbeat).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let channel = hub.channel.to_string();
    let began = std::time::Instant::now();
    let mut asked = 0;
    while began.elapsed() < Duration::from_secs(2) {
        let next = tokio::time::timeout(Duration::from_millis(200), rd.read::<HubMsg>());
        let Ok(msg) = next.await else { continue };
        if let HubMsg::Open { service, ticket } = msg.expect("the session lives") {
            asked += 1;
            let mut tls = ferry::ep::connect_for_tests(&settings, &channel).await;
            let msg = EpMsg::Channel { service, ticket };
            proto::write_msg(&mut tls, &msg).await.unwrap();
            tls.shutdown().await.unwrap();
        }
    }
    println!("figure: an ep closing each pooled channel at once was asked for {asked} in 2 s");
    // A pool of 4 replaced at each heartbeat tick (200 ms in tests) and
    // after each pause: tens. Before, a round trip apart: thousands.
    assert!(asked <= 200, "asked for {asked} channels in 2 s");
}
