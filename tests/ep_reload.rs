//! An ep's reload reaches the very next player: channels that waited in
//! the pool since before the reload carry players to the service as it is
//! configured now.

mod common;

use common::*;
use std::{net::SocketAddr, time::Duration};
use tokio::io::AsyncReadExt;

fn opts() -> HubOpts {
    HubOpts {
        services: vec!["a".into()],
        ..Default::default()
    }
}

/// Over TLS, waits until service `a` has a channel waiting in the pool,
/// opened before the reload that follows (QUIC has no pool).
async fn pooled(hub: &TestHub, t: Transport) {
    if t == Transport::Tls {
        let mut ready = hub.handle.pool_ready("a").unwrap();
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|n| *n >= 1))
            .await
            .unwrap()
            .unwrap();
    }
}

on_every_transport!(a_player_after_an_ep_reload_reaches_the_new_local_address);

/// `local` re-pointed on a running ep: the very next player reaches the new
/// address, even through a channel that was waiting in the pool since
/// before the reload (it reads the service as configured when the player
/// arrives, not when it opened).
async fn a_player_after_an_ep_reload_reaches_the_new_local_address(t: Transport) {
    let certs = Certs::new();
    let (home_a, home_b) = (tagged_echo(b"A").await, tagged_echo(b"B").await);
    let hub = TestHub::start(&certs, &t.hub_opts(opts())).await;
    let eo = |at: SocketAddr| t.ep_opts(&hub, EpOpts::new(&certs, vec![("a".into(), at)]));
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo(home_a));
    let settings = load_ep_file(&file);
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
    pooled(&hub, t).await;
    saved(
        &handle,
        write_ep_toml(&certs, hub.control, hub.channel, &eo(home_b)),
        &file,
    )
    .await;
    for i in 0..3 {
        let tag = first(hub.service("a")).await;
        assert_eq!(
            tag, b'B',
            "player {i} after the reload reached the old address"
        );
    }
}

/// A service moved from one ep to another by reloading both: even when the
/// new ep's offer lands first (and is refused, the old one still holding
/// it), the service is handed over as soon as the old ep lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_moved_between_eps_is_handed_over() {
    let certs = Certs::new();
    let o = HubOpts {
        services: vec!["a".into(), "b".into(), "s".into()],
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &o).await;
    let echo = echo_server().await;
    let (at_home, at_other) = (tagged_echo(b"A").await, tagged_echo(b"B").await);
    let ep_file = |cert: &str, services: Vec<(&str, SocketAddr)>| {
        let mut eo = EpOpts::new(
            &certs,
            services
                .into_iter()
                .map(|(n, a)| (n.to_string(), a))
                .collect(),
        );
        eo.cert = cert.into();
        write_ep_toml(&certs, hub.control, hub.channel, &eo)
    };
    let load = |file: &std::path::Path| {
        ferry::config::ep::EpConfig::load(file, Default::default())
            .unwrap()
            .check(file)
            .unwrap()
    };
    let home_file = ep_file("home", vec![("a", echo), ("s", at_home)]);
    let other_file = ep_file("other", vec![("b", echo)]);
    let (_home, home) = TestEp::start_with_handle(load(&home_file)).await;
    let (_other, other) = TestEp::start_with_handle(load(&other_file)).await;
    hub.wait_sessions(2).await;
    assert_eq!(hub.handle.served_by("s").as_deref(), Some("home"));
    // The new ep's reload lands first: refused, home still holds s.
    saved(
        &other,
        ep_file("other", vec![("b", echo), ("s", at_other)]),
        &other_file,
    )
    .await;
    common::udp::eventually(
        "other's offer of s reached the hub",
        Duration::from_secs(5),
        || hub.handle.offered_by("s").contains(&"other".to_string()),
    )
    .await;
    assert_eq!(hub.handle.served_by("s").as_deref(), Some("home"));
    // Then the old ep lets it go.
    saved(&home, ep_file("home", vec![("a", echo)]), &home_file).await;
    common::udp::eventually("s handed over to other", Duration::from_secs(5), || {
        hub.handle.served_by("s").as_deref() == Some("other")
    })
    .await;
    let mut p = tokio::net::TcpStream::connect(hub.service("s"))
        .await
        .unwrap();
    let mut tag = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), p.read_exact(&mut tag))
        .await
        .expect("a player on s was served")
        .unwrap();
    assert_eq!(&tag, b"B");
}

on_every_transport!(proxy_headers_turned_on_by_an_ep_reload_reach_the_very_next_player);

/// A service at home that answers `P` when a connection begins with a
/// PROXY v1 header and `N` otherwise (the player sends `hello\n` first).
async fn header_sniffer() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // All the player sent, then the answer; the connection is
                // left for the player to close (unread bytes would reset it).
                let mut got = Vec::new();
                let mut buf = [0u8; 512];
                while !got.ends_with(b"hello\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let tag = if got.starts_with(b"PROXY ") {
                    b"P"
                } else {
                    b"N"
                };
                let _ = s.write_all(tag).await;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// `proxy_protocol` turned on by an ep reload: the very next player's
/// connection at home starts with the header, through a channel that
/// waited in the pool since before the reload too.
async fn proxy_headers_turned_on_by_an_ep_reload_reach_the_very_next_player(t: Transport) {
    let certs = Certs::new();
    let home = header_sniffer().await;
    let hub = TestHub::start(&certs, &t.hub_opts(opts())).await;
    let eo = |proxy: bool| {
        let mut o = EpOpts::new(&certs, vec![("a".into(), home)]);
        if proxy {
            o.service_extra = "proxy_protocol = \"v1\"\n".into();
        }
        t.ep_opts(&hub, o)
    };
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo(false));
    let settings = load_ep_file(&file);
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    hub.wait_sessions(1).await;
    let tag = |to: SocketAddr| async move {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
        s.write_all(b"hello\n").await.unwrap();
        let mut tag = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut tag))
            .await
            .expect("the service answered")
            .unwrap();
        tag[0]
    };
    assert_eq!(tag(hub.service("a")).await, b'N');
    pooled(&hub, t).await;
    saved(
        &handle,
        write_ep_toml(&certs, hub.control, hub.channel, &eo(true)),
        &file,
    )
    .await;
    for i in 0..3 {
        assert_eq!(
            tag(hub.service("a")).await,
            b'P',
            "player {i} after the reload came without the header"
        );
    }
}

on_every_transport!(an_ep_reloaded_with_another_certificate_logs_in_as_it);

/// ep.toml pointed at another certificate: the ep logs in again as the
/// ep that certificate names, over QUIC as over TLS (a QUIC login takes
/// the TLS material as it is at that login, not as it was when the ep's
/// QUIC socket was made).
async fn an_ep_reloaded_with_another_certificate_logs_in_as_it(t: Transport) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &t.hub_opts(opts())).await;
    let home = echo_server().await;
    let eo = |cert: &str| {
        let mut o = EpOpts::new(&certs, vec![("a".into(), home)]);
        o.cert = cert.into();
        t.ep_opts(&hub, o)
    };
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo("home"));
    let settings = load_ep_file(&file);
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    hub.wait_sessions(1).await;
    assert_eq!(hub.handle.served_by("a").as_deref(), Some("home"));
    saved(
        &handle,
        write_ep_toml(&certs, hub.control, hub.channel, &eo("other")),
        &file,
    )
    .await;
    common::udp::eventually(
        "served by the new identity",
        Duration::from_secs(20),
        || hub.handle.served_by("a").as_deref() == Some("other"),
    )
    .await;
    if t == Transport::Quic {
        assert_eq!(hub.handle.over_quic("other"), Some(true));
    }
    assert_eq!(
        echo_through(hub.service("a"), b"as other").await,
        b"as other"
    );
}

on_every_transport!(an_ep_certificate_replaced_in_place_is_used_without_a_restart);

/// The certificate and key files ep.toml names are replaced (a renewal,
/// or `ferry ep join --force` on a running ep, whose old certificate the
/// hub then revokes), ep.toml untouched: the ep follows those files and
/// logs in with the new certificate, as the hub follows its own.
async fn an_ep_certificate_replaced_in_place_is_used_without_a_restart(t: Transport) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &t.hub_opts(opts())).await;
    let mut o = EpOpts::new(&certs, vec![("a".into(), echo_server().await)]);
    // Its own copy of home's files, to replace in place.
    for ext in ["pem", "key"] {
        std::fs::copy(
            certs.path(&format!("ep-home.{ext}")),
            certs.path(&format!("ep-mine.{ext}")),
        )
        .unwrap();
    }
    o.cert = "mine".into();
    let file = write_ep_toml(&certs, hub.control, hub.channel, &t.ep_opts(&hub, o));
    let settings = load_ep_file(&file);
    let (_ep, _handle) = TestEp::start_with_handle(settings).await;
    hub.wait_sessions(1).await;
    assert_eq!(hub.handle.served_by("a").as_deref(), Some("home"));
    for ext in ["key", "pem"] {
        let fresh = certs.path(&format!("fresh.{ext}"));
        std::fs::copy(certs.path(&format!("ep-other.{ext}")), &fresh).unwrap();
        std::fs::rename(&fresh, certs.path(&format!("ep-mine.{ext}"))).unwrap();
    }
    common::udp::eventually(
        "served by the replaced certificate's identity",
        Duration::from_secs(20),
        || hub.handle.served_by("a").as_deref() == Some("other"),
    )
    .await;
}

/// The ep's admin token hash file replaced (a leaked token rotated, as
/// SECURITY.md says to): from the ep's reload on the old token no longer
/// opens its door and the new one does, with no edit to ep.toml and no
/// signal. Before, the ep did not follow that file, and the old token
/// kept working until something else reloaded the ep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ep_admin_token_hash_file_replaced_is_a_rotation() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &opts()).await;
    let (old, new) = ("ep-admin-before-0123", "ep-admin-after-4567");
    let hash = |t: &str| ferry::token::hash(&ferry::secret::Secret::new(t)).unwrap();
    let hash_file = certs.path("ep-admin.hash");
    std::fs::write(&hash_file, hash(old)).unwrap();
    let mut o = EpOpts::new(&certs, vec![("a".into(), echo_server().await)]);
    o.extra = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken_hash_file = {}\n",
        toml_path(&hash_file)
    );
    let file = write_ep_toml(&certs, hub.control, hub.channel, &o);
    let settings = load_ep_file(&file);
    let stop = tokio_util::sync::CancellationToken::new();
    let bound = ferry::ep::bind(settings, stop.clone(), Default::default())
        .await
        .unwrap();
    let (door, handle) = (bound.admin_addr().unwrap(), bound.handle());
    tokio::spawn(bound.run());
    assert_eq!(http_get(door, "/api/status", Some(old)).await.0, 200);
    let fresh = certs.path("ep-admin.hash.new");
    std::fs::write(&fresh, hash(new)).unwrap();
    saved(&handle, fresh, &hash_file).await;
    assert_eq!(http_get(door, "/api/status", Some(new)).await.0, 200);
    assert_eq!(http_get(door, "/api/status", Some(old)).await.0, 401);
    stop.cancel();
}

/// ep.toml saved naming a `token_file` that is not there yet (a config
/// deployed before its secret): that reload is refused, and once the file
/// is written the reload is tried again and applies. Before, nothing
/// followed the missing file: the new configuration waited for another
/// save or a SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refused_for_a_missing_file_applies_once_it_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let certs = Certs::new();
    let (home_a, home_b) = (tagged_echo(b"A").await, tagged_echo(b"B").await);
    let hub = TestHub::start(&certs, &opts()).await;
    let eo = |at: SocketAddr| EpOpts::new(&certs, vec![("a".into(), at)]);
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo(home_a));
    let (_ep, handle) = TestEp::start_with_handle(load_ep_file(&file)).await;
    hub.wait_sessions(1).await;
    let token = certs.path("ep-token");
    let fresh = write_ep_toml(&certs, hub.control, hub.channel, &eo(home_b));
    let text = std::fs::read_to_string(&fresh).unwrap().replace(
        &format!("token = {TOKEN:?}\n"),
        &format!("token_file = {}\n", toml_path(&token)),
    );
    std::fs::write(&fresh, text).unwrap();
    let mut reloads = handle.reloads();
    let before = *reloads.borrow();
    let mut refused = handle.refused_reloads();
    std::fs::rename(fresh, &file).unwrap();
    tokio::time::timeout(Duration::from_secs(10), refused.wait_for(|n| *n > 0))
        .await
        .expect("the reload naming a missing token file was refused")
        .unwrap();
    // The token file then written (0600, as the ep asks) applies it.
    let tmp = certs.path("ep-token.new");
    std::fs::write(&tmp, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, &token).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloads.wait_for(|n| *n > before))
        .await
        .expect("the ep reloaded once its token file was written")
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(hub.service("a"))
        .await
        .unwrap();
    let mut tag = [0u8; 1];
    s.read_exact(&mut tag).await.unwrap();
    assert_eq!(tag[0], b'B');
}
