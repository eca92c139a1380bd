//! The end of a shutdown drain: players still relaying are cut off with a
//! reset (a download cut short must never look complete), and a second
//! signal skips the drain.

mod common;

use common::*;
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// A service that streams forever, a little at a time.
async fn endless() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let chunk = [7u8; 1024];
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                loop {
                    tick.tick().await;
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

on_every_transport!(
    a_download_cut_off_by_the_drain_ends_in_a_reset_not_a_fin,
    a_download_goes_on_for_the_whole_drain,
);

async fn a_download_cut_off_by_the_drain_ends_in_a_reset_not_a_fin(t: Transport) {
    let certs = Certs::new();
    // drain_timeout 1s
    let (hub, _ep) = tunnel_over(&certs, t, HubOpts::default(), endless().await).await;
    hub.wait_sessions(1).await;
    let mut player = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    player.read_exact(&mut buf[..1024]).await.unwrap();
    let stopping = tokio::spawn(hub.stop());
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), player.read(&mut buf)).await {
            Err(_) => panic!("the drain never ended the download"),
            Ok(Ok(0)) => break Ok(0),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(e),
        }
    };
    println!("figure: the player's download ended with {end:?}");
    let err = end.expect_err("the cut-off download ended with a clean FIN");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    stopping.await.unwrap();
}

/// A shutdown stops new players at once and lets those playing go on for
/// `drain_timeout`: the download keeps flowing until then, and only then
/// ends, with a reset.
async fn a_download_goes_on_for_the_whole_drain(t: Transport) {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "drain_timeout = \"3s\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep) = tunnel_over(&certs, t, o, endless().await).await;
    hub.wait_sessions(1).await;
    let door = hub.service("echo");
    let mut player = tokio::net::TcpStream::connect(door).await.unwrap();
    let mut buf = [0u8; 4096];
    player.read_exact(&mut buf[..1024]).await.unwrap();
    let began = std::time::Instant::now();
    let stopping = tokio::spawn(hub.stop());
    let (flowed, end) = flow_until_the_end(&mut player, began).await;
    println!(
        "figure ({t:?}): with a 3 s drain, the download flowed {flowed:?} after the stop, then {end:?}"
    );
    assert!(
        flowed >= Duration::from_millis(2500),
        "the player was cut off {flowed:?} into a 3 s drain"
    );
    assert!(end.is_err(), "the cut-off download ended with a clean FIN");
    stopping.await.unwrap();
}

/// Reads `player`'s download to its end: for how long after `began` bytes
/// still came, and how it ended (a clean end, or the error).
async fn flow_until_the_end(
    player: &mut tokio::net::TcpStream,
    began: std::time::Instant,
) -> (Duration, std::io::Result<usize>) {
    let mut buf = [0u8; 4096];
    let mut last_byte = began;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), player.read(&mut buf)).await {
            Err(_) => panic!("the drain never ended the download"),
            Ok(Ok(0)) => break Ok(0),
            Ok(Ok(_)) => last_byte = std::time::Instant::now(),
            Ok(Err(e)) => break Err(e),
        }
    };
    (last_byte - began, end)
}

on_every_transport!(a_second_sigterm_during_the_drain_stops_at_once);

async fn a_second_sigterm_during_the_drain_stops_at_once(t: Transport) {
    let certs = Certs::new();
    let (mut hub, _ep) = proc_tunnel_over(
        &certs,
        t,
        "drain_timeout = \"60s\"\n",
        "echo",
        endless().await,
    );
    let mut player = tokio::net::TcpStream::connect(hub.services["echo"])
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    player.read_exact(&mut buf[..1024]).await.unwrap();
    hub.proc.signal("TERM");
    hub.proc.wait_line("stopped accepting");
    let t = std::time::Instant::now();
    hub.proc.signal("TERM");
    let exit = hub.proc.wait_within(Duration::from_secs(20));
    println!(
        "figure ({t:?}): with a 60 s drain, the second SIGTERM ended the hub after {:?}",
        t.elapsed()
    );
    assert!(
        exit.is_some(),
        "the hub kept draining after a second signal"
    );
    let end = loop {
        match player.read(&mut buf).await {
            Ok(0) => break Ok(0),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    assert!(end.is_err(), "the player saw a clean end: {end:?}");
}

on_every_transport!(an_ep_stopping_drains_its_players_for_its_own_drain_timeout);

/// The ep stops (SIGTERM): its players go on for the ep's own
/// `drain_timeout`, longer than the hub's here, over QUIC as over TLS (the
/// hub let the connection go after its own drain), then end with a reset.
async fn an_ep_stopping_drains_its_players_for_its_own_drain_timeout(t: Transport) {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "drain_timeout = \"1s\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &t.hub_opts(o)).await;
    let mut eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), endless().await)]),
    );
    eo.extra += "drain_timeout = \"4s\"\n";
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let mut player = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    player.read_exact(&mut buf[..1024]).await.unwrap();
    let began = std::time::Instant::now();
    let stopping = tokio::spawn(ep.stop());
    let (flowed, end) = flow_until_the_end(&mut player, began).await;
    println!(
        "figure ({t:?}): with the ep's 4 s drain, the download flowed {flowed:?}, then {end:?}"
    );
    assert!(
        flowed >= Duration::from_millis(3500),
        "the player was cut off {flowed:?} into the ep's 4 s drain"
    );
    assert!(end.is_err(), "the cut-off download ended with a clean FIN");
    stopping.await.unwrap();
}
