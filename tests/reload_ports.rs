//! Reloads that move ports the hub already holds: a service renamed, two
//! services swapping ports, a range extended downwards, and a UDP port that
//! is given up for good. The hub hands its own sockets over instead of
//! failing to bind them a second time, and lets go of what it no longer
//! serves.

mod common;

use common::udp::*;
use common::*;
use std::{net::SocketAddr, time::Duration};

fn tables(text: &str) -> HubOpts {
    HubOpts {
        services: vec![],
        extra: text.into(),
        ..Default::default()
    }
}

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// A TCP echo through `to`, and a UDP one.
async fn both_answer(to: SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    assert_eq!(echo_roundtrip(&mut s, b"tcp").await, b"tcp", "{to}");
    let p = player().await;
    assert_eq!(
        ask_until(&p, to, b"udp", Duration::from_secs(10)).await,
        b"udp",
        "{to}"
    );
}

async fn echo_roundtrip(s: &mut tokio::net::TcpStream, msg: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("echoed")
        .unwrap();
    back
}

/// A TCP echo and a UDP echo on one port at home, for `tcp+udp`.
async fn tcp_udp_echo() -> SocketAddr {
    loop {
        let tcp = echo_server().await;
        if std::net::UdpSocket::bind(tcp).is_ok() {
            return udp_echo_at(tcp).await.0;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_the_hub_holds_move_between_services_and_offsets() {
    let certs = Certs::new();
    let p = free_range(4);
    let svc = |name: &str, bind: &str| {
        format!("[services.{name}]\nbind = \"127.0.0.1:{bind}\"\ntype = \"tcp+udp\"\n")
    };
    let o = tables(&(svc("a", &p.to_string()) + &svc("b", &(p + 1).to_string())));
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let both = tcp_udp_echo().await;
    let names = ["a", "b", "c"].map(|n| (n.to_string(), both));
    let _ep = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, names.to_vec()),
    ));
    hub.wait_sessions(1).await;
    both_answer(local(p)).await;
    // A player connected before the moves keeps its connection.
    let mut stays = tokio::net::TcpStream::connect(local(p)).await.unwrap();
    assert_eq!(echo_roundtrip(&mut stays, b"before").await, b"before");

    // `a` and `b` swap ports.
    let o = tables(&(svc("a", &(p + 1).to_string()) + &svc("b", &p.to_string())));
    let plan = hub.reload_to(&certs, &o, &file).await;
    println!("figure: swap → {plan:?}");
    assert!(plan.is_ok(), "{plan:?}");
    assert_eq!(hub.handle.service_addr("a"), Some(local(p + 1)));
    both_answer(local(p)).await;
    both_answer(local(p + 1)).await;

    // `b` is renamed `c`, on the same port.
    let o = tables(&(svc("a", &(p + 1).to_string()) + &svc("c", &p.to_string())));
    let plan = hub.reload_to(&certs, &o, &file).await;
    println!("figure: rename → {plan:?}");
    assert!(plan.is_ok(), "{plan:?}");
    assert_eq!(hub.handle.service_addr("c"), Some(local(p)));
    both_answer(local(p)).await;

    // `a`'s single port becomes a range reaching one port lower: its port
    // moves to offset 1 (the ep's range follows in its own file).
    let o = tables(&(svc("a", &format!("{}-{}", p + 2, p + 3)) + &svc("c", &p.to_string())));
    assert!(hub.reload_to(&certs, &o, &file).await.is_ok());
    let o = tables(&(svc("a", &format!("{}-{}", p + 1, p + 3)) + &svc("c", &p.to_string())));
    let plan = hub.reload_to(&certs, &o, &file).await;
    println!("figure: range extended downwards → {plan:?}");
    assert!(plan.is_ok(), "{plan:?}");
    for port in p + 1..=p + 3 {
        assert!(
            tokio::net::TcpStream::connect(local(port)).await.is_ok(),
            "port {port} listens"
        );
    }
    assert_eq!(echo_roundtrip(&mut stays, b"after").await, b"after");
}

/// A service at home that, once a peer has spoken, keeps sending to it
/// every 50 ms, as a game server streams its world.
async fn talker() -> SocketAddr {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let (_, peer) = s.recv_from(&mut buf).await.unwrap();
        loop {
            let _ = s.send_to(b"tick", peer).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    addr
}

/// A hub serving `echo` on one fixed port of `kind` (`tcp+udp`, `tcp`), to
/// reload; its ep sends to `home`.
struct OnePort {
    t: Transport,
    certs: Certs,
    hub: TestHub,
    _ep: TestEp,
    file: std::path::PathBuf,
    port: u16,
}

impl OnePort {
    async fn start(t: Transport, home: SocketAddr) -> OnePort {
        let certs = Certs::new();
        let port = free_range(1);
        let o = t.hub_opts(Self::tables(port, "tcp+udp"));
        let settings = hub_settings(&certs, &o);
        let file = settings.file.clone();
        let hub = TestHub::from_settings(settings, &o).await;
        let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), home)]));
        let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
        hub.wait_sessions(1).await;
        OnePort {
            t,
            certs,
            hub,
            _ep,
            file,
            port,
        }
    }

    fn tables(port: u16, kind: &str) -> HubOpts {
        tables(&format!(
            "[services.echo]\nbind = \"127.0.0.1:{port}\"\ntype = \"{kind}\"\n"
        ))
    }

    /// The first answer to a player's "hi".
    async fn answer(&self) -> Vec<u8> {
        let p = player().await;
        ask_until(&p, local(self.port), b"hi", Duration::from_secs(10)).await
    }

    async fn reload_to(&self, kind: &str) {
        let o = self.t.hub_opts(Self::tables(self.port, kind));
        let plan = self.hub.reload_to(&self.certs, &o, &self.file).await;
        assert!(plan.is_ok(), "to {kind}: {plan:?}");
    }
}

on_every_transport!(a_udp_port_given_up_is_released_though_home_keeps_talking);

async fn a_udp_port_given_up_is_released_though_home_keeps_talking(t: Transport) {
    let one = OnePort::start(t, talker().await).await;
    assert_eq!(one.answer().await, b"tick");
    // The service keeps its TCP port and gives up UDP; home keeps talking.
    one.reload_to("tcp").await;
    eventually("the UDP port is released", Duration::from_secs(5), || {
        std::net::UdpSocket::bind(local(one.port)).is_ok()
    })
    .await;
    assert_eq!(one.hub.handle.udp_flows("echo"), None);
}

on_every_transport!(a_udp_port_given_up_and_back_at_once_serves_again);

/// A UDP port given up and given back by the next save (an edit undone):
/// the flows of the port given up hold its socket for a moment as they
/// end, and the second reload must not meet that socket and refuse with
/// "address in use", leaving the service without its UDP port until
/// someone saves again.
async fn a_udp_port_given_up_and_back_at_once_serves_again(t: Transport) {
    let one = OnePort::start(t, udp_echo().await.0).await;
    assert_eq!(one.answer().await, b"hi");
    one.reload_to("tcp").await;
    one.reload_to("tcp+udp").await;
    assert_eq!(one.answer().await, b"hi");
}

/// A service's port moved to another address of the same number (here
/// from 127.0.0.1 to the dual-stack `[::]`): the bind meets the hub's own
/// socket, and the refusal says so and how to get there, rather than
/// reading as if another program held the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_port_to_another_address_says_the_hub_holds_it() {
    let certs = Certs::new();
    let port = free_range(1);
    let at = |host: &str| tables(&format!("[services.a]\nbind = \"{host}:{port}\"\n"));
    let o = at("127.0.0.1");
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return println!("skipped: no IPv6 on this machine");
    }
    // The hub runs (its file watcher is set up before its ports serve): a
    // player is seen at the door.
    let _player = tokio::net::TcpStream::connect(local(port)).await.unwrap();
    eventually("a player at the door", Duration::from_secs(10), || {
        hub.handle.players("a") == Some(1)
    })
    .await;
    let outcome = hub.reload_to(&certs, &at("[::]"), &file).await;
    let err = outcome.expect_err("the move was applied");
    assert!(
        err.contains("the hub itself holds port") && err.contains("nothing changed"),
        "{err}"
    );
}
