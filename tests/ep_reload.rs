//! An ep's reload reaches the very next player: channels that waited in
//! the pool since before the reload carry players to the service as it is
//! configured now.

mod common;

use common::*;
use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn opts() -> HubOpts {
    HubOpts {
        services: vec!["a".into()],
        ..Default::default()
    }
}

/// A service at home that names itself first, then echoes.
async fn tagged(tag: &'static [u8]) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(tag).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

on_every_transport!(a_player_after_an_ep_reload_reaches_the_new_local_address);

/// `local` re-pointed on a running ep: the very next player reaches the new
/// address, even through a channel that was waiting in the pool since
/// before the reload (it reads the service as configured when the player
/// arrives, not when it opened).
async fn a_player_after_an_ep_reload_reaches_the_new_local_address(t: Transport) {
    let certs = Certs::new();
    let (home_a, home_b) = (tagged(b"A").await, tagged(b"B").await);
    let hub = TestHub::start(&certs, &t.hub_opts(opts())).await;
    let eo = |at: SocketAddr| t.ep_opts(&hub, EpOpts::new(&certs, vec![("a".into(), at)]));
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo(home_a));
    let settings = ferry::config::ep::EpConfig::load(&file, Default::default())
        .unwrap()
        .check(&file)
        .unwrap();
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    hub.wait_sessions(1).await;
    let first = |to: SocketAddr| async move {
        let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
        let mut tag = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut tag))
            .await
            .expect("the service answered")
            .unwrap();
        tag[0]
    };
    assert_eq!(first(hub.service("a")).await, b'A');
    if t == Transport::Tls {
        // Channels opened before the reload wait in the pool.
        let mut ready = hub.handle.pool_ready("a").unwrap();
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|n| *n >= 1))
            .await
            .unwrap()
            .unwrap();
    }
    let mut reloads = handle.reloads();
    let fresh = write_ep_toml(&certs, hub.control, hub.channel, &eo(home_b));
    std::fs::rename(fresh, &file).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloads.wait_for(|n| *n >= 1))
        .await
        .expect("the ep reloaded")
        .unwrap();
    for i in 0..3 {
        let tag = first(hub.service("a")).await;
        assert_eq!(
            tag, b'B',
            "player {i} after the reload reached the old address"
        );
    }
}
