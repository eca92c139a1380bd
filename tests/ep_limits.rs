//! What a hub can make the ep do at home is bounded by the ep itself: at
//! most `max_players` players per service, however many the hub starts,
//! and no UDP for a service ep.toml declares TCP-only. The hub here is
//! written by hand, as a compromised one would be.

mod common;

use common::*;
use ferry::proto::{self, EpMsg, HubMsg};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;

/// A home service that holds every connection open and counts them.
async fn holder() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (addr, n)
}

struct Hub {
    fake: common::fake_hub::FakeHub,
    control: TlsStream<tokio::net::TcpStream>,
}

/// A hand-written hub with an ep logged in, serving `echo` from `local`
/// with `keys` in its ep.toml service table.
async fn logged_in(certs: &Certs, local: SocketAddr, extra: &str, keys: &str) -> (Hub, TestEp) {
    let fake = common::fake_hub::FakeHub::start(certs).await;
    let mut eo = EpOpts::new(certs, vec![("echo".into(), local)]);
    eo.extra = extra.into();
    eo.service_extra = keys.into();
    let ep = TestEp::start(ep_settings_for(
        certs,
        fake.control.local_addr().unwrap(),
        fake.channel.local_addr().unwrap(),
        &eo,
    ));
    let (tcp, _) = fake.control.accept().await.unwrap();
    let mut control = fake.acceptor.accept(tcp).await.unwrap();
    let _hello: EpMsg = proto::read_msg(&mut control).await.unwrap();
    proto::write_msg(&mut control, &common::fake_hub::welcome())
        .await
        .unwrap();
    (Hub { fake, control }, ep)
}

impl Hub {
    /// A channel the ep opened for `echo`, and a `Start` sent on it.
    async fn start(&mut self, n: usize, udp: bool) -> TlsStream<tokio::net::TcpStream> {
        let open = HubMsg::Open {
            service: "echo".into(),
            ticket: format!("t-{n}"),
        };
        proto::write_msg(&mut self.control, &open).await.unwrap();
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), self.fake.channel.accept())
            .await
            .expect("the ep opened the channel")
            .unwrap();
        let mut ch = self.fake.acceptor.accept(tcp).await.unwrap();
        let _: EpMsg = proto::read_msg(&mut ch).await.unwrap();
        let start = HubMsg::Start {
            player: format!("198.51.100.7:{}", 40000 + n).parse().unwrap(),
            service: None,
            udp,
            offset: 0,
            flow: None,
            name: None,
            no_wake: false,
            pace: None,
        };
        proto::write_msg(&mut ch, &start).await.unwrap();
        ch
    }
}

/// Whether the ep ended `ch` (rather than carrying a player on it).
async fn ended(ch: &mut TlsStream<tokio::net::TcpStream>, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, tokio::io::AsyncReadExt::read(ch, &mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_cannot_start_more_players_than_max_players() {
    let certs = Certs::new();
    let (home, dialled) = holder().await;
    let (mut hub, _ep) = logged_in(&certs, home, "max_players = 3\n", "").await;
    let mut channels = Vec::new();
    for n in 0..3 {
        channels.push(hub.start(n, false).await);
    }
    common::udp::eventually("three players at home", Duration::from_secs(10), || {
        dialled.load(Ordering::SeqCst) == 3
    })
    .await;
    // A fourth, while three play: refused at home's door.
    let mut fourth = hub.start(3, false).await;
    assert!(
        ended(&mut fourth, Duration::from_secs(10)).await,
        "the ep carried a 4th player"
    );
    assert_eq!(dialled.load(Ordering::SeqCst), 3);
    // One leaves: the next is carried.
    drop(channels.pop());
    let mut next = hub.start(4, false).await;
    common::udp::eventually("the next player at home", Duration::from_secs(10), || {
        dialled.load(Ordering::SeqCst) == 4
    })
    .await;
    assert!(!ended(&mut next, Duration::from_millis(200)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_cannot_start_udp_on_a_tcp_only_service() {
    let certs = Certs::new();
    let home = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = home.local_addr().unwrap();
    let (mut hub, _ep) = logged_in(&certs, local, "", "type = \"tcp\"\n").await;
    let mut ch = hub.start(0, true).await;
    let mut frame = Vec::new();
    ferry::datagram::encode(&mut frame, b"to a socket nobody opened");
    let _ = tokio::io::AsyncWriteExt::write_all(&mut ch, &frame).await;
    assert!(
        ended(&mut ch, Duration::from_secs(10)).await,
        "the ep opened UDP for a TCP service"
    );
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_millis(300), home.recv_from(&mut buf)).await;
    assert!(got.is_err(), "a datagram reached the TCP-only service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_token_ends_a_long_backoff_at_once() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let echo = echo_server().await;
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), echo)]);
    let good = eo.token.clone();
    eo.token = "not-the-token".into();
    // A wrong token waits the maximum: here an hour.
    eo.extra = "backoff_max = \"1h\"\n".into();
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let settings = load_ep_file(&file);
    let _ep = TestEp::start(settings);
    common::udp::eventually(
        "the hub refused the wrong token",
        Duration::from_secs(10),
        || {
            hub.handle
                .refusals()
                .get("wrong token")
                .copied()
                .unwrap_or(0)
                >= 1
        },
    )
    .await;
    // The operator fixes ep.toml: the ep logs in now, not in an hour.
    eo.token = good;
    std::fs::rename(write_ep_toml(&certs, hub.control, hub.channel, &eo), &file).unwrap();
    let t = std::time::Instant::now();
    hub.wait_sessions(1).await;
    println!(
        "figure: logged in {:?} after the token was fixed",
        t.elapsed()
    );
}

/// A hub that asks for more channels than it will ever start (each open
/// channel holds a connection and a TLS session at the ep): the ep opens
/// at most its 1,024 waiting places, ignores the rest, and once the hub
/// lets those go a new channel carries a player again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_cannot_make_the_ep_open_channels_without_end() {
    let certs = Certs::new();
    let (mut hub, _ep) = logged_in(&certs, echo_server().await, "", "").await;
    for n in 0..1100 {
        let open = HubMsg::Open {
            service: "echo".into(),
            ticket: format!("t-{n}"),
        };
        proto::write_msg(&mut hub.control, &open).await.unwrap();
    }
    // Accepted and held without a handshake: each keeps its place taken.
    let mut held = Vec::new();
    loop {
        let wait = if held.len() < 1024 { 20 } else { 1 };
        match tokio::time::timeout(Duration::from_secs(wait), hub.fake.channel.accept()).await {
            Ok(Ok((tcp, _))) => held.push(tcp),
            Ok(Err(e)) => panic!("accept: {e}"),
            Err(_) => break,
        }
    }
    println!(
        "figure: asked for 1,100 channels, the ep opened {}",
        held.len()
    );
    assert_eq!(held.len(), 1024, "the ep's waiting channels are not capped");
    drop(held);
    // Let go, the places serve a player again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 2000;
    loop {
        n += 1;
        let mut ch = hub.start(n, false).await;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut ch, b"hi").await;
        let mut got = [0u8; 2];
        let read = tokio::io::AsyncReadExt::read_exact(&mut ch, &mut got);
        if matches!(
            tokio::time::timeout(Duration::from_secs(5), read).await,
            Ok(Ok(_))
        ) {
            assert_eq!(&got, b"hi");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no player got through after"
        );
    }
}

/// A hub that opens QUIC streams and never sends their `Start` (each may
/// hold a window of bytes at the ep): past the ep's waiting places (1,024,
/// as for TLS channels) each further one is reset at once, and once the
/// hub lets those go a stream that starts a player is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_cannot_make_the_ep_hold_streams_without_a_start() {
    let certs = Certs::new();
    let local = echo_server().await;
    let fake = common::fake_hub::FakeQuicHub::start(&certs);
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), local)]);
    let at = fake.endpoint.local_addr().unwrap();
    eo.extra = format!("transport = \"quic\"\nquic = \"{at}\"\n");
    let _ep = TestEp::start(ep_settings_for(&certs, at, at, &eo));
    let (conn, _control_send, _control_recv) = fake.login().await;
    let mut held = Vec::new();
    for _ in 0..1100 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        // Half a frame's length: the stream exists at the ep, unfinished.
        send.write_all(&[0]).await.unwrap();
        held.push((send, recv));
    }
    let mut reset = 0;
    for (_, recv) in held.iter_mut().rev().take(76) {
        let read = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(64)).await;
        if matches!(read, Ok(Err(_))) {
            reset += 1;
        }
    }
    println!("figure: of 1,100 streams without a start the ep reset the last {reset} of 76");
    assert_eq!(
        reset, 76,
        "the ep held more streams without a start than its waiting places"
    );
    drop(held);
    // Let go, the places serve a player again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let start = HubMsg::Start {
            player: "198.51.100.7:40000".parse().unwrap(),
            service: None,
            udp: false,
            offset: 0,
            flow: None,
            name: Some("echo".into()),
            no_wake: false,
            pace: None,
        };
        proto::write_msg(&mut send, &start).await.unwrap();
        let _ = send.write_all(b"hi").await;
        let mut got = [0u8; 2];
        let echoed = tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut got)).await;
        if matches!(echoed, Ok(Ok(()))) {
            assert_eq!(&got, b"hi");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no player got through after"
        );
    }
    conn.close(0u32.into(), b"done");
}
