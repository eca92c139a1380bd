//! A service a reload removes: players still waiting for one of its
//! channels are told at once (none will come), and a hub stopped after
//! the reload does not wait out the removed service's drain.

mod common;

use common::udp::eventually;
use common::*;
use std::time::Duration;

/// Keys that make either wait long enough to tell apart from "at once".
const LONG_WAITS: &str = "drain_timeout = \"60s\"\nplayer_wait = \"30s\"\n";

fn opts(t: Transport, services: &[&str]) -> HubOpts {
    t.hub_opts(HubOpts {
        services: services.iter().map(|s| s.to_string()).collect(),
        extra: LONG_WAITS.into(),
        ..Default::default()
    })
}

/// A hub serving `a` (its ep there) and `b` (no ep serves it), and its file.
async fn hub_with_a_and_b(t: Transport, certs: &Certs) -> (TestHub, TestEp, std::path::PathBuf) {
    let o = opts(t, &["a", "b"]);
    let settings = hub_settings(certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(certs, vec![("a".into(), echo_server().await)]),
    );
    let ep = TestEp::start(ep_settings(certs, &hub, &eo));
    hub.wait_sessions(1).await;
    (hub, ep, file)
}

on_every_transport!(a_player_waiting_for_a_removed_service_is_closed_at_once);

/// A player waiting for `b`'s ep when a reload removes `b` is closed
/// within a couple of seconds, not after `player_wait` (30 s here).
async fn a_player_waiting_for_a_removed_service_is_closed_at_once(t: Transport) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = Certs::new();
    let (hub, ep, file) = hub_with_a_and_b(t, &certs).await;
    let mut player = tokio::net::TcpStream::connect(hub.service("b"))
        .await
        .unwrap();
    player.write_all(b"hello").await.unwrap();
    eventually("the player at b's door", Duration::from_secs(10), || {
        hub.handle.players("b") == Some(1)
    })
    .await;
    let plan = hub.reload_to(&certs, &opts(t, &["a"]), &file).await;
    assert!(plan.is_ok(), "{plan:?}");
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), player.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the player still waits for a removed service: {closed:?}"
    );
    ep.stop().await;
    hub.stop().await;
}

on_every_transport!(a_hub_stopped_after_a_reload_removed_a_service_stops_at_once);

/// With nobody to drain, a hub stops at once, also after a reload that
/// removed a service (its drain timer, 60 s here, holds nothing back).
async fn a_hub_stopped_after_a_reload_removed_a_service_stops_at_once(t: Transport) {
    let certs = Certs::new();
    let (hub, ep, file) = hub_with_a_and_b(t, &certs).await;
    let plan = hub.reload_to(&certs, &opts(t, &["a"]), &file).await;
    assert!(plan.is_ok(), "{plan:?}");
    ep.stop().await;
    tokio::time::timeout(Duration::from_secs(10), hub.stop())
        .await
        .expect("the hub stopped within 10 s, with no player to drain");
}

on_every_transport!(a_service_removed_and_put_back_within_its_drain_keeps_its_players);

/// A service taken out of the file and put back before its drain ends
/// (a block cut and pasted over two saves, a tool that writes in two
/// passes): its player carries on past the drain. Before, the removal's
/// timer cut it all the same.
async fn a_service_removed_and_put_back_within_its_drain_keeps_its_players(t: Transport) {
    let cut = removed_and_put_back(t, "").await;
    assert_eq!(cut, None, "the player was cut after the removal");
}

on_every_transport!(a_service_put_back_for_another_ep_still_cuts_the_old_eps_players);

/// The same, but put back granted to another ep only (`[eps.home]` no
/// longer lists it): the players home carried go at the drain's end, as a
/// grant withdrawn cuts them.
async fn a_service_put_back_for_another_ep_still_cuts_the_old_eps_players(t: Transport) {
    let cut = removed_and_put_back(t, "[eps.home]\nservices = [\"b\"]\n").await;
    let cut = cut.expect("home's player outlived its grant");
    assert!(cut < Duration::from_secs(3), "cut after {cut:?}");
}

/// A player on `a`; `a` removed, then put back with `grants` (tables);
/// when the player was cut, counted from the removal (None: it carried on
/// past twice the 1 s drain).
async fn removed_and_put_back(t: Transport, grants: &str) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = Certs::new();
    let short = |services: &[&str], tables: &str| {
        t.hub_opts(HubOpts {
            services: services.iter().map(|s| s.to_string()).collect(),
            extra: format!("drain_timeout = \"1s\"\n{tables}"),
            ..Default::default()
        })
    };
    let o = short(&["a", "b"], "");
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("a".into(), echo_server().await)]),
    );
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let mut player = tokio::net::TcpStream::connect(hub.service("a"))
        .await
        .unwrap();
    let mut buf = [0u8; 4];
    player.write_all(b"ping").await.unwrap();
    player.read_exact(&mut buf).await.unwrap();
    let removed = std::time::Instant::now();
    assert!(
        hub.reload_to(&certs, &short(&["b"], ""), &file)
            .await
            .is_ok()
    );
    let back = short(&["a", "b"], grants);
    assert!(hub.reload_to(&certs, &back, &file).await.is_ok());
    // Past the 1 s drain, twice over.
    let mut cut = None;
    while removed.elapsed() < Duration::from_secs(3) {
        let _ = player.write_all(b"ping").await;
        let read = tokio::time::timeout(Duration::from_secs(5), player.read_exact(&mut buf)).await;
        if !matches!(read, Ok(Ok(_))) {
            cut = Some(removed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ep.stop().await;
    hub.stop().await;
    cut
}

on_every_transport!(a_second_removal_keeps_its_reprieve_past_the_first_removal_s_timer);

/// `a` removed (home's player draining), put back granted to cabin only
/// (home's player still goes at the first drain's end), served by cabin,
/// and removed again; once the first drain has cut home's player, `a` is
/// put back: cabin's player carries on past the second drain. Before
/// 6c041e0, the first removal's timer took the second removal's entry
/// away by name, and cabin's player was cut at the second drain's end.
async fn a_second_removal_keeps_its_reprieve_past_the_first_removal_s_timer(t: Transport) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const DRAIN: Duration = Duration::from_secs(3);
    let certs = Certs::new();
    issue_ep_cert(&certs, "cabin", Validity::Now, false);
    let hub_opts = |services: &[&str], a_to: &str| {
        t.hub_opts(HubOpts {
            services: services.iter().map(|s| s.to_string()).collect(),
            extra: format!(
                "drain_timeout = \"{}s\"\n[eps.{a_to}]\nservices = {services:?}\n",
                DRAIN.as_secs()
            ),
            ..Default::default()
        })
    };
    let o = hub_opts(&["a", "b"], "home");
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let mut eps = Vec::new();
    for name in ["home", "cabin"] {
        let mut eo = EpOpts::new(&certs, vec![("a".into(), echo_server().await)]);
        eo.cert = name.into();
        eps.push(TestEp::start(ep_settings(
            &certs,
            &hub,
            &t.ep_opts(&hub, eo),
        )));
    }
    hub.wait_sessions(2).await;
    let served_by = |who: &'static str| {
        eventually(who, Duration::from_secs(10), || {
            hub.handle.served_by("a").as_deref() == Some(who)
        })
    };
    served_by("home").await;
    let mut buf = [0u8; 4];
    let mut homes = tokio::net::TcpStream::connect(hub.service("a"))
        .await
        .unwrap();
    homes.write_all(b"ping").await.unwrap();
    homes.read_exact(&mut buf).await.unwrap();
    let reload = async |o: HubOpts| {
        let outcome = hub.reload_to(&certs, &o, &file).await;
        assert!(outcome.is_ok(), "{outcome:?}");
    };
    reload(hub_opts(&["b"], "home")).await;
    reload(hub_opts(&["a", "b"], "cabin")).await;
    served_by("cabin").await;
    // Put back on a port of its own (`:0`).
    let a = hub.handle.service_addr("a").unwrap();
    let mut cabins = tokio::net::TcpStream::connect(a).await.unwrap();
    cabins.write_all(b"ping").await.unwrap();
    cabins.read_exact(&mut buf).await.unwrap();
    reload(hub_opts(&["b"], "cabin")).await;
    let second = std::time::Instant::now();
    // The first drain ends: home's player is cut.
    let read = tokio::time::timeout(DRAIN * 3, homes.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    reload(hub_opts(&["a", "b"], "cabin")).await;
    if second.elapsed() >= DRAIN {
        // Put back after the second drain's end: its cut was right.
        println!(
            "figure: too slow a machine to tell ({:?})",
            second.elapsed()
        );
        return;
    }
    // Past the second drain, by a second.
    while second.elapsed() < DRAIN + Duration::from_secs(1) {
        let _ = cabins.write_all(b"ping").await;
        let read = tokio::time::timeout(Duration::from_secs(5), cabins.read_exact(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "cabin's player was cut {:?} after the second removal: {read:?}",
            second.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
