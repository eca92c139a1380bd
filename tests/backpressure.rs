//! A player who stops reading keeps the connection: backpressure is not a
//! dead peer.

mod common;

on_every_transport!(an_upload_the_service_does_not_read_for_a_while_is_not_cut);

use common::*;
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// How long the player stops reading: longer than any timeout that would
/// mistake a full window for a dead path (TCP_USER_TIMEOUT was 30 s).
const PAUSE: Duration = Duration::from_secs(60);
const TOTAL: usize = 64 << 20;

/// A service that pushes `TOTAL` deterministic bytes to each connection.
async fn pusher() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let data = random_bytes(TOTAL, 7);
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_who_stops_reading_for_a_minute_receives_every_byte() {
    let certs = Certs::new();
    let (hub, _ep) = tunnel_to(&certs, pusher().await).await;
    let mut player = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    let mut got = vec![0u8; 1 << 20];
    player.read_exact(&mut got).await.unwrap();
    // The paused download: every buffer between here and the service fills
    // and the ep's channel sits behind a zero window for the whole pause.
    tokio::time::sleep(PAUSE).await;
    let mut rest = Vec::new();
    let end = player.read_to_end(&mut rest).await;
    got.extend_from_slice(&rest);
    println!(
        "figure: after a {PAUSE:?} pause the player read {} of {TOTAL} bytes ({end:?})",
        got.len()
    );
    assert!(end.is_ok(), "the paused player was cut off: {end:?}");
    assert_eq!(got.len(), TOTAL);
    assert!(got == random_bytes(TOTAL, 7), "bytes differ");
}

/// Hub and ep look for TLS channels whose path went dark (`dark_path`,
/// `heartbeat_timeout` 2 s in tests, looks 5 s apart): a service at home
/// that reads nothing for longer than three looks holds the hub's channel
/// behind a zero window, and that must not look dark.
const UPLOAD_PAUSE: Duration = Duration::from_secs(16);
const UPLOAD: usize = 64 << 20;

/// A service that reads nothing for `UPLOAD_PAUSE`, then everything, and
/// answers how many bytes it got.
async fn late_reader() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(UPLOAD_PAUSE).await;
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all).await;
                let _ = s.write_all(&(all.len() as u64).to_be_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn an_upload_the_service_does_not_read_for_a_while_is_not_cut(t: Transport) {
    let certs = Certs::new();
    let (hub, _ep) = tunnel_over(&certs, t, HubOpts::default(), late_reader().await).await;
    let mut player = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    let began = std::time::Instant::now();
    player.write_all(&random_bytes(UPLOAD, 3)).await.unwrap();
    player.shutdown().await.unwrap();
    let mut count = [0u8; 8];
    let read = player.read_exact(&mut count).await;
    println!(
        "figure: {UPLOAD} bytes up, the service reading only after {UPLOAD_PAUSE:?}: answered after {:?} ({read:?})",
        began.elapsed()
    );
    assert!(read.is_ok(), "the player was cut off: {read:?}");
    assert_eq!(u64::from_be_bytes(count), UPLOAD as u64);
}
