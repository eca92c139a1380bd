//! A hub reaches only the ports an ep was told to serve: a `Start` whose
//! port offset lies outside the ep's `local` range is refused by the ep
//! (a compromised hub reaches nothing else at home), and a hub reload that
//! widens a service's range or changes its type makes the ep serving it
//! let go, rather than sending players to ports the ep never configured.

mod common;

use common::udp::{eventually, free_range};
use common::*;
use ferry::proto::{self, EpMsg, HubMsg};
use std::{net::SocketAddr, sync::Arc, sync::atomic::AtomicUsize, time::Duration};
use tokio::net::TcpListener;

/// Listens on `addr`, counting connections.
async fn counter(addr: SocketAddr) -> Arc<AtomicUsize> {
    let l = TcpListener::bind(addr).await.unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    n
}

/// Ports `first` and `first + 1` free on 127.0.0.1: the ep's one-port
/// range, and the port just past it that no hub may reach.
async fn range_and_beyond() -> (SocketAddr, Arc<AtomicUsize>) {
    let first = free_range(2);
    let local: SocketAddr = ([127, 0, 0, 1], first).into();
    let beyond = counter(([127, 0, 0, 1], first + 1).into()).await;
    (local, beyond)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_asking_for_a_port_outside_the_range_reaches_nothing() {
    let certs = Certs::new();
    let (local, beyond) = range_and_beyond().await;
    let _home = counter(local).await;
    let common::fake_hub::FakeHub {
        control,
        channel,
        acceptor,
    } = common::fake_hub::FakeHub::start(&certs).await;
    let _ep = TestEp::start(ep_settings_for(
        &certs,
        control.local_addr().unwrap(),
        channel.local_addr().unwrap(),
        &EpOpts::new(&certs, vec![("echo".into(), local)]),
    ));
    // A hub that welcomes the ep, asks for a channel, and then starts a
    // player on offset 1 of a one-port service.
    let (tcp, _) = control.accept().await.unwrap();
    let mut tls = acceptor.accept(tcp).await.unwrap();
    let _hello: EpMsg = proto::read_msg(&mut tls).await.unwrap();
    let welcome = common::fake_hub::welcome();
    proto::write_msg(&mut tls, &welcome).await.unwrap();
    let open = HubMsg::Open {
        service: "echo".into(),
        ticket: "t-1".into(),
    };
    proto::write_msg(&mut tls, &open).await.unwrap();
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), channel.accept())
        .await
        .expect("the ep opened the channel")
        .unwrap();
    let mut ch = acceptor.accept(tcp).await.unwrap();
    let _: EpMsg = proto::read_msg(&mut ch).await.unwrap();
    let start = HubMsg::Start {
        player: "198.51.100.7:40000".parse().unwrap(),
        service: None,
        udp: false,
        offset: 1,
        flow: None,
        name: None,
        no_wake: false,
        pace: None,
    };
    proto::write_msg(&mut ch, &start).await.unwrap();
    // The ep refuses at once: the channel ends, and nothing was dialled.
    let mut buf = [0u8; 64];
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut ch, &mut buf),
    )
    .await;
    println!("figure: a start on offset 1 of a one-port range: channel read {ended:?}");
    assert!(
        matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
        "the ep carried a player to a port outside its range"
    );
    assert_eq!(beyond.load(std::sync::atomic::Ordering::SeqCst), 0);
}

on_every_transport!(a_widened_range_on_the_hub_does_not_reach_past_the_eps_range);

async fn a_widened_range_on_the_hub_does_not_reach_past_the_eps_range(t: Transport) {
    let certs = Certs::new();
    let (local, beyond) = range_and_beyond().await;
    let home = echo_server_at(local).await;
    let mut o = t.hub_opts(HubOpts {
        extra: "player_wait = \"2s\"\n".into(),
        ..Default::default()
    });
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), home)]));
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    assert_eq!(echo_through(hub.service("echo"), b"one").await, b"one");
    // The hub's service grows to two ports; the ep still maps one.
    let first = free_range(2);
    o.services.clear();
    o.extra += &format!(
        "[services.echo]\nbind = \"127.0.0.1:{first}-{}\"\n",
        first + 1
    );
    let reloads = hub.handle.reloads().borrow().0;
    let next = write_hub_toml(&certs, &o, None);
    std::fs::rename(next, &file).unwrap();
    let mut rx = hub.handle.reloads();
    let outcome = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|(n, _)| *n > reloads))
        .await
        .unwrap()
        .unwrap()
        .1
        .clone();
    println!("figure ({t:?}): reload: {outcome:?}");
    eventually(
        "the ep let go of the reshaped service",
        Duration::from_secs(5),
        || hub.handle.served_by("echo").is_none(),
    )
    .await;
    // A player on the new second port reaches nothing at home.
    let second: SocketAddr = ([127, 0, 0, 1], first + 1).into();
    let mut p = tokio::net::TcpStream::connect(second).await.unwrap();
    let closed = closed_by_peer(&mut p, Duration::from_secs(20)).await;
    assert!(closed);
    assert_eq!(beyond.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// An echo service on `addr`.
async fn echo_server_at(addr: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}
