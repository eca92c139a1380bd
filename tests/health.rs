//! `/health/SERVICE` for a DNS server's health checks: 200 while an ep
//! serves the service and home last answered or sleeps (a join wakes it),
//! 503 otherwise (no ep, the service at home down, a name the hub does not
//! have); no token, and the health door answers nothing else.

mod common;

use common::*;
use std::{net::SocketAddr, time::Duration};
use tokio::net::TcpStream;

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get(addr, path, None).await
}

async fn becomes(addr: SocketAddr, path: &str, want: u16) {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while get(addr, path).await.0 != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{path} never {want}");
}

on_every_transport!(health_says_whether_players_can_be_served);

async fn health_says_whether_players_can_be_served(t: Transport) {
    let certs = Certs::new();
    let hash = ferry::token::hash(&ferry::secret::Secret::new("admin-token-123456")).unwrap();
    let o = t.hub_opts(HubOpts {
        extra: format!(
            "[health]\nbind = \"127.0.0.1:0\"\n\
             [admin]\nbind = \"127.0.0.1:0\"\ntoken_hash = {hash:?}\n"
        ),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let (health, admin) = (hub.health.unwrap(), hub.admin.unwrap());
    // The hub is up; no ep serves `echo`; `nope` does not exist.
    assert_eq!(get(health, "/health").await, (200, "up\n".into()));
    assert_eq!(get(health, "/health/echo").await, (503, "down\n".into()));
    assert_eq!(get(health, "/health/nope").await, (503, "down\n".into()));
    // Nothing else on the health door; the admin door keeps its token.
    assert_eq!(get(health, "/api/status").await.0, 404);
    assert_eq!(get(health, "/metrics").await.0, 404);
    assert_eq!(get(admin, "/health/echo").await.0, 503);
    assert_eq!(get(admin, "/api/status").await.0, 401);

    // An ep serves it: up.
    let (_held, dead) = dead_port();
    let local = echo_server().await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), local)]));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    becomes(health, "/health/echo", 200).await;
    assert_eq!(echo_through(hub.service("echo"), b"hi").await, b"hi");
    ep.stop().await;
    becomes(health, "/health/echo", 503).await;

    // An ep whose service at home is down: down once a player finds it so.
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), dead)]));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    becomes(health, "/health/echo", 200).await;
    // (Under load the reset may come before connect returns.)
    if let Ok(mut p) = TcpStream::connect(hub.service("echo")).await {
        assert!(closed_by_peer(&mut p, Duration::from_secs(10)).await);
    }
    becomes(health, "/health/echo", 503).await;
    ep.stop().await;

    // A server with a wake command, not answering: a join wakes it (the
    // command here starts nothing, so it stays waking). Up while it wakes
    // or sleeps, since a join through this hub wakes it: every hub 503
    // while it sleeps would take a failover address from all of them.
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), dead)]));
    eo.service_extra = "wake = [\"true\"]\nsleep = [\"true\"]\nsleep_after = \"1h\"\n".into();
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    becomes(health, "/health/echo", 200).await;
    let _joining = TcpStream::connect(hub.service("echo")).await.unwrap();
    common::udp::eventually("echo waking", Duration::from_secs(20), || {
        hub.handle.home("echo") == Some("waking")
    })
    .await;
    assert_eq!(get(health, "/health/echo").await.0, 200);
    hub.stop().await;
}

on_every_transport!(strangers_holding_connections_do_not_shut_the_health_door);

/// The health door is public (a DNS server's checker asks it without a
/// secret), so strangers can reach it: from 36 addresses in nine networks
/// they open connections that never send a request, more than the door
/// holds. The door stays answerable: past a source's, a network's or the
/// door's cap a newcomer takes the place of the oldest connection waiting
/// there, which is reset, so the checker's question is answered.
async fn strangers_holding_connections_do_not_shut_the_health_door(t: Transport) {
    let certs = Certs::new();
    let o = t.hub_opts(HubOpts {
        extra: "[health]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let health = hub.health.unwrap();
    let mut held = Vec::new();
    for net in 1..=9 {
        for host in 1..=4 {
            for _ in 0..16 {
                held.push(
                    connect_from(&format!("127.0.{net}.{host}"), health)
                        .await
                        .unwrap(),
                );
            }
        }
    }
    // Accepted in order: by its answer, every stranger was taken in.
    assert_eq!(get(health, "/health").await, (200, "up\n".into()));
    let first: Vec<_> = held.drain(..16).collect();
    let reset = reset_by_peer(first, Duration::from_secs(2)).await;
    let reset = reset.iter().filter(|r| **r).count();
    println!("figure: of the first stranger's 16 idle connections the door reset {reset}");
    assert!(
        reset >= 8,
        "one source kept {} connections waiting",
        16 - reset
    );
    drop(held);
    hub.stop().await;
}
