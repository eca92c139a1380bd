//! Changing a running hub's configuration: services added, moved and
//! removed, limits and pools changed, bad files refused, editors' ways of
//! saving noticed, a rotated token closing one session only; no player
//! who is not affected notices anything.

mod common;

use common::udp::{eventually, free_range};
use common::*;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn opts(extra: &str) -> HubOpts {
    HubOpts {
        services: vec!["a".into()],
        extra: extra.into(),
        ..Default::default()
    }
}

/// Waits for the next reload to finish; its outcome.
async fn next_reload(hub: &TestHub, after: u64) -> Result<String, String> {
    let mut rx = hub.handle.reloads();
    let (_, outcome) =
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|(n, _)| *n > after))
            .await
            .expect("the hub reloaded")
            .unwrap()
            .clone();
    outcome
}

/// A hub from `o` serving service `a` (an echo) through an ep, and the
/// hub's config file.
async fn hub_serving_a(certs: &Certs, o: &HubOpts) -> (TestHub, TestEp, PathBuf) {
    let settings = hub_settings(certs, o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, o).await;
    let eo = EpOpts::new(certs, vec![("a".into(), echo_server().await)]);
    let ep = TestEp::start(ep_settings(certs, &hub, &eo));
    hub.wait_sessions(1).await;
    (hub, ep, file)
}

fn reloads(hub: &TestHub) -> u64 {
    hub.handle.reloads().borrow().0
}

/// Streams through `to` until told to stop: sends numbered chunks and
/// checks every echoed byte; the total echoed.
fn stream(
    to: SocketAddr,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<u64>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
        let mut total = 0u64;
        let mut i = 0u32;
        loop {
            if stopped.try_recv().is_ok() {
                return total;
            }
            let chunk: Vec<u8> = (0..4096u32)
                .map(|j| (i.wrapping_mul(31) + j) as u8)
                .collect();
            s.write_all(&chunk).await.expect("stream write");
            let mut back = vec![0u8; chunk.len()];
            s.read_exact(&mut back).await.expect("stream read");
            assert_eq!(back, chunk, "bytes changed in chunk {i}");
            total += back.len() as u64;
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (stop, task)
}

async fn echo_once(to: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(to).await?;
    s.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::other("no echo"))??;
    Ok(back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rewrites_of_the_hub_file_drop_no_player() {
    let certs = Certs::new();
    let (echo_a, echo_b) = (echo_server().await, echo_server().await);
    let o = opts("drain_timeout = \"30s\"\n");
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let eo = EpOpts::new(&certs, vec![("a".into(), echo_a), ("b".into(), echo_b)]);
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let logins = *hub.handle.logins().borrow();
    let (stop, streaming) = stream(hub.service("a"));
    let mut b_player: Option<tokio::net::TcpStream> = None;
    for round in 0..20u32 {
        let with_b = round % 2 == 0;
        let port = free_range(1);
        let pool = 1 + round % 5;
        let b = if with_b {
            format!("[services.b]\nbind = \"127.0.0.1:{port}\"\n")
        } else {
            String::new()
        };
        // Removed services' players may finish for drain_timeout.
        let mut o = opts(&format!("pool_size = {pool}\ndrain_timeout = \"30s\"\n{b}"));
        o.service_extra = format!("max_players = {}\n", 100 + round);
        let before = reloads(&hub);
        save_hub_toml(&certs, &o, &file);
        let outcome = next_reload(&hub, before).await;
        let plan = outcome.unwrap_or_else(|e| panic!("round {round}: {e}"));
        println!("figure: round {round}: {plan}");
        if with_b {
            let at = hub.handle.service_addr("b").expect("b is bound");
            assert_eq!(at.port(), port);
            // Reachable at once after the reload (5 s: a loaded machine).
            let t = std::time::Instant::now();
            let back = loop {
                match echo_once(at, b"to b").await {
                    Ok(b) => break b,
                    Err(e) => assert!(t.elapsed() < Duration::from_secs(5), "b unreachable: {e}"),
                }
            };
            assert_eq!(back, b"to b");
            if b_player.is_none() {
                let mut p = tokio::net::TcpStream::connect(at).await.unwrap();
                p.write_all(b"x").await.unwrap();
                let mut one = [0u8; 1];
                p.read_exact(&mut one).await.unwrap();
                b_player = Some(p);
            }
        } else {
            assert!(hub.handle.service_addr("b").is_none());
            // A player who was on b when it went keeps going, then
            // hangs up.
            if let Some(mut p) = b_player.take() {
                p.write_all(b"still").await.unwrap();
                let mut back = [0u8; 5];
                p.read_exact(&mut back).await.unwrap();
                assert_eq!(&back, b"still");
            }
        }
    }
    stop.send(()).unwrap();
    let total = streaming.await.expect("a's player saw no error");
    println!("figure: a's player streamed {total} bytes through 20 reloads, no error");
    assert!(total > 0);
    assert_eq!(
        *hub.handle.logins().borrow(),
        logins,
        "the ep logged in again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_changes_nothing_and_says_why() {
    let certs = Certs::new();
    let (hub, _ep, file) = hub_serving_a(&certs, &opts("")).await;
    let a = hub.service("a");
    let good = std::fs::read_to_string(&file).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let cases = [
        (format!("{good}\n[services.b\n"), "hub-"),
        (format!("nonsense_key = 1\n{good}"), "nonsense_key"),
        (
            format!("{good}\n[services.b]\nbind = \"127.0.0.1:{taken_port}\"\n"),
            "nothing changed",
        ),
    ];
    for (text, says) in cases {
        let before = reloads(&hub);
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let e = next_reload(&hub, before)
            .await
            .expect_err("the bad file was applied");
        println!("figure: refused reload: {e}");
        assert!(e.contains(says), "{e}");
        assert!(hub.handle.service_addr("b").is_none());
        assert_eq!(echo_once(a, b"a works").await.unwrap(), b"a works");
    }
}

/// Replaces the symlink `link` with one pointing at `target`, atomically.
fn swap_symlink(link: &Path, target: &Path) {
    let tmp: PathBuf = link.with_extension("new-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_place_and_symlink_swaps_are_noticed() {
    let certs = Certs::new();
    let echo = echo_server().await;
    let o = opts("");
    let real = write_hub_toml(&certs, &o, None);
    let link = certs.path("hub-link.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let settings = ferry::config::hub::HubConfig::load(&link, Default::default())
        .unwrap()
        .check(&link)
        .unwrap();
    let hub = TestHub::from_settings(settings, &o).await;
    let _ep = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("a".into(), echo)]),
    ));
    hub.wait_sessions(1).await;
    // Written in place (truncate and write, as some editors do).
    let before = reloads(&hub);
    let text = std::fs::read_to_string(&real).unwrap();
    std::fs::write(&real, format!("pool_size = 2\n{text}")).unwrap();
    let plan = next_reload(&hub, before).await.unwrap();
    assert!(
        plan.contains("pool_size") || plan.contains("changed: a"),
        "{plan}"
    );
    // A symlink swapped to another file (as configuration managers do).
    let other = write_hub_toml(&certs, &opts("pool_size = 3\n"), None);
    let before = reloads(&hub);
    swap_symlink(&link, &other);
    let plan = next_reload(&hub, before).await.unwrap();
    assert!(plan.contains("changed: a (pool_size)"), "{plan}");
    eventually("pool of 3", Duration::from_secs(5), || {
        *hub.handle.pool_ready("a").unwrap().borrow() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_closes_that_eps_session_only() {
    let certs = Certs::new();
    let (echo_a, echo_b) = (echo_server().await, echo_server().await);
    let new_token = "the-rotated-token-0123456789";
    let new_hash = ferry::token::hash(&ferry::secret::Secret::new(new_token)).unwrap();
    let creds = |home: &str| {
        format!(
            "[eps.home]\ntoken_hash = {home:?}\n[eps.other]\ntoken_hash = {:?}\n",
            token_hash()
        )
    };
    let mut o = opts(&creds(token_hash()));
    o.services = vec!["a".into(), "b".into()];
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let home = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("a".into(), echo_a)]),
    ));
    let mut eo = EpOpts::new(&certs, vec![("b".into(), echo_b)]);
    eo.cert = "other".into();
    let _other = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(2).await;
    let (stop, streaming) = stream(hub.service("b"));
    let logins = *hub.handle.logins().borrow();
    let before = reloads(&hub);
    let mut o2 = opts(&creds(&new_hash));
    o2.services = o.services.clone();
    save_hub_toml(&certs, &o2, &file);
    let plan = next_reload(&hub, before).await.unwrap();
    assert!(
        plan.contains("credentials changed (sessions closed): home"),
        "{plan}"
    );
    hub.wait_sessions(1).await;
    home.stop().await;
    let mut eo = EpOpts::new(&certs, vec![("a".into(), echo_a)]);
    eo.token = new_token.into();
    let _home = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(2).await;
    assert_eq!(echo_once(hub.service("a"), b"back").await.unwrap(), b"back");
    stop.send(()).unwrap();
    streaming.await.expect("other's player saw no error");
    assert_eq!(
        *hub.handle.logins().borrow(),
        logins + 1,
        "only home logged in again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rewrites_of_the_ep_file_need_no_new_login() {
    let certs = Certs::new();
    let (echo_a, echo_b, echo_c) = (
        echo_server().await,
        echo_server().await,
        echo_server().await,
    );
    let mut o = opts("");
    o.services = vec!["a".into(), "b".into()];
    let hub = TestHub::start(&certs, &o).await;
    let eo = |with_b: bool, a_at: SocketAddr| {
        let mut v = vec![("a".to_string(), a_at)];
        if with_b {
            v.push(("b".into(), echo_b));
        }
        EpOpts::new(&certs, v)
    };
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo(false, echo_a));
    let settings = load_ep_file(&file);
    let _ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    let logins = *hub.handle.logins().borrow();
    let (stop, streaming) = stream(hub.service("a"));
    for round in 0..20u32 {
        let with_b = round % 2 == 0;
        // Re-point a between two equal echo services as well.
        let a_at = if round % 4 < 2 { echo_c } else { echo_a };
        let fresh = write_ep_toml(&certs, hub.control, hub.channel, &eo(with_b, a_at));
        std::fs::rename(fresh, &file).unwrap();
        let b = hub.service("b");
        if with_b {
            let t = std::time::Instant::now();
            eventually("b served", Duration::from_secs(15), || {
                hub.handle.served_by("b").is_some()
            })
            .await;
            // The ep polls its file every 500 ms; then one message on the
            // live session and a channel from the pool.
            loop {
                if let Ok(back) = echo_once(b, b"to b").await {
                    assert_eq!(back, b"to b");
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(15),
                    "round {round}: b not served"
                );
            }
            println!(
                "figure: round {round}: b answered {:?} after the save",
                t.elapsed()
            );
        } else {
            eventually("b no longer served", Duration::from_secs(15), || {
                hub.handle.served_by("b").is_none()
            })
            .await;
        }
    }
    stop.send(()).unwrap();
    let total = streaming.await.expect("a's player saw no error");
    println!("figure: a's player streamed {total} bytes through 20 ep reloads");
    assert_eq!(
        *hub.handle.logins().borrow(),
        logins,
        "the ep logged in again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flows_outlive_a_limits_change_and_a_service_gains_udp() {
    use common::udp::*;
    let certs = Certs::new();
    let (home_udp, _) = udp_echo().await;
    let port = free_range(1);
    let base = |kind: &str, flows: u32| {
        opts(&format!(
            "[services.g]\nbind = \"127.0.0.1:{port}\"\ntype = \"{kind}\"\nmax_udp_flows = {flows}\n"
        ))
    };
    let o = base("udp", 100);
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let echo = echo_server().await;
    let eo = EpOpts::new(&certs, vec![("a".into(), echo), ("g".into(), home_udp)]);
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let p = player().await;
    assert!(ask(&p, to, b"one", Duration::from_secs(10)).await.is_some());
    // The limit changes: the same flow carries on (no second flow).
    let before = reloads(&hub);
    save_hub_toml(&certs, &base("udp", 50), &file);
    let plan = next_reload(&hub, before).await.unwrap();
    assert!(plan.contains("changed: g (limits)"), "{plan}");
    assert_eq!(
        ask(&p, to, b"two", Duration::from_secs(5)).await.as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(hub.handle.udp_flows("g"), Some(1));
    // The service gains TCP on the same port; its UDP flow is untouched.
    let before = reloads(&hub);
    save_hub_toml(&certs, &base("tcp+udp", 50), &file);
    let plan = next_reload(&hub, before).await.unwrap();
    assert!(plan.contains("g (type)"), "{plan}");
    assert_eq!(
        ask(&p, to, b"three", Duration::from_secs(5))
            .await
            .as_deref(),
        Some(&b"three"[..])
    );
    assert_eq!(hub.handle.udp_flows("g"), Some(1));
    // Something listens: the handshake completes. Home has no TCP service
    // behind the port, so the hub's reset after it can beat `connect`'s
    // own check; that reset is the one other answer a listener gives.
    if let Err(e) = tokio::net::TcpStream::connect(to).await {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "tcp now listens on the port {to}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_hub_certificate_is_used_for_new_handshakes() {
    let certs = Certs::new();
    let (hub, _ep, file) = hub_serving_a(&certs, &opts("")).await;
    let (stop, streaming) = stream(hub.service("a"));
    // A hub certificate from the same CA that names another host only.
    let other = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(certs.path(f), other.path().join(f)).unwrap();
    }
    ferry::certgen::GenCert {
        dir: other.path().to_path_buf(),
        hub_names: vec!["elsewhere.example".into()],
        ..Default::default()
    }
    .run()
    .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let swap = |f: &str| toml_path(&other.path().join(f));
    let text = text
        .replace(&toml_path(&certs.path("hub.pem")), &swap("hub.pem"))
        .replace(&toml_path(&certs.path("hub.key")), &swap("hub.key"));
    let before = reloads(&hub);
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let plan = next_reload(&hub, before).await.unwrap();
    assert!(plan.contains("also applied: tls"), "{plan}");
    // A new login checks the new certificate (which does not name
    // localhost); the session and the player already in are untouched.
    let eo = EpOpts::new(&certs, vec![("a".into(), hub.control)]);
    let e = login_error(&ep_settings(&certs, &hub, &eo))
        .await
        .to_string();
    assert!(
        e.contains("not trusted") || e.contains("certificate"),
        "{e}"
    );
    assert_eq!(*hub.handle.sessions().borrow(), 1);
    stop.send(()).unwrap();
    streaming.await.expect("the player saw no error");
}

/// A hub certificate no ep would accept (another CA's, as a renewal run
/// against the wrong folder makes) is refused by the reload, which names
/// the file and why; the hub goes on with the one it has, so new players
/// are still carried. Before, it was taken ("also applied: tls") and every
/// new channel then failed with nothing but TLS alerts in the hub's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_certificate_no_ep_would_accept_is_refused_by_a_reload() {
    let certs = Certs::new();
    let (hub, _ep, file) = hub_serving_a(&certs, &opts("")).await;
    let foreign = Certs::new();
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(
            &toml_path(&certs.path("hub.pem")),
            &toml_path(&foreign.path("hub.pem")),
        )
        .replace(
            &toml_path(&certs.path("hub.key")),
            &toml_path(&foreign.path("hub.key")),
        );
    let before = reloads(&hub);
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let refused = next_reload(&hub, before).await.unwrap_err();
    println!("figure: the reload said: {refused}");
    assert!(
        refused.contains(&foreign.path("hub.pem").display().to_string())
            && refused.contains("would refuse"),
        "{refused}"
    );
    // New players still get channels: the pool's handshakes use the old one.
    for i in 0..8u8 {
        assert_eq!(echo_once(hub.service("a"), &[i]).await.unwrap(), [i]);
    }
}

on_every_transport!(a_reload_that_drops_the_eps_address_ends_its_session);

/// An ep's address taken out of `ep_allowlist` by a reload: its session
/// ends (over QUIC, its connection too), and it cannot log in again.
async fn a_reload_that_drops_the_eps_address_ends_its_session(t: Transport) {
    let certs = Certs::new();
    let mut o = t.hub_opts(opts(""));
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("a".into(), echo_server().await)]),
    );
    let s = ep_settings(&certs, &hub, &eo);
    let _ep = TestEp::start(s.clone());
    hub.wait_sessions(1).await;
    assert_eq!(echo_once(hub.service("a"), b"in").await.unwrap(), b"in");
    let before = reloads(&hub);
    o.allowlist = vec!["127.0.0.2/32".into()];
    save_hub_toml(&certs, &o, &file);
    next_reload(&hub, before).await.unwrap();
    hub.wait_sessions(0).await;
    eventually("no QUIC connection left", Duration::from_secs(10), || {
        hub.handle.quic_connections() == 0
    })
    .await;
    let again = t.login_once(&s, &hub).await;
    assert!(again.is_err(), "logged in from outside the allowlist");
    println!(
        "figure ({t:?}): a login from the dropped address: {}",
        again.unwrap_err()
    );
}

/// The admin token rotated on a running hub (its hash in hub.toml
/// replaced): from the reload on the old token no longer opens the door,
/// even where it was verified (and remembered) before, and the new one
/// does, and an event stream (the page's live view) opened with the old
/// one ends; the reload line says so and asks for no restart. With
/// `hide_addresses`, `/api/config` (what `ferry hub check` reads, naming
/// homes and denied networks) still answers on this machine (elsewhere
/// it is refused: `admin::tests::only_this_machine_is_local`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_admin_token_applies_at_once() {
    let certs = Certs::new();
    let (old, new) = ("admin-token-before-0123", "admin-token-after-4567");
    let admin = |token: &str| {
        let hash = ferry::token::hash(&ferry::secret::Secret::new(token)).unwrap();
        format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken_hash = {hash:?}\nhide_addresses = true\n")
    };
    let mut o = opts(&admin(old));
    o.allowlist.push("198.51.100.7/32".into());
    o.service_extra = "deny = [\"203.0.113.0/24\"]\n".into();
    let (hub, _ep, file) = hub_serving_a(&certs, &o).await;
    let door = hub.admin.unwrap();
    assert_eq!(http_get(door, "/api/status", Some(old)).await.0, 200);
    assert_eq!(http_get(door, "/api/config", Some(old)).await.0, 200);
    let mut events = tokio::net::TcpStream::connect(door).await.unwrap();
    let ask = format!("GET /events?token={old} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    events.write_all(ask.as_bytes()).await.unwrap();
    let mut first = [0u8; 64];
    let n = events.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let before = reloads(&hub);
    let mut o2 = opts(&admin(new));
    (o2.allowlist, o2.service_extra) = (o.allowlist.clone(), o.service_extra.clone());
    save_hub_toml(&certs, &o2, &file);
    let plan = next_reload(&hub, before).await.unwrap();
    assert!(plan.contains("also applied: admin.token_hash"), "{plan}");
    assert!(!plan.contains("restart"), "{plan}");
    // The new token first: a wrong one earns its source a penalty.
    assert_eq!(http_get(door, "/api/status", Some(new)).await.0, 200);
    assert_eq!(http_get(door, "/api/status", Some(old)).await.0, 401);
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), events.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the old token's event stream went on");
}
