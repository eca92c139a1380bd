//! Which ep may serve what: a friend's ep enrolled with an invite that
//! grants one service cannot take the owner's other services, however it
//! announces them; an offer it is not granted is skipped, never refusing
//! the rest of its login or penalising anyone; and when the host moves a
//! grant, the rightful ep takes the service back.

mod common;

use common::procs::run;
use common::udp::free_range;
use common::*;
use std::{path::Path, time::Duration};
use tokio::io::AsyncReadExt;

/// Who answers a player on `port`: the greeting's first four bytes.
async fn who_serves(port: u16) -> String {
    let mut p = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tag = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), p.read_exact(&mut tag))
        .await
        .expect("a greeting")
        .unwrap();
    String::from_utf8_lossy(&tag).into_owned()
}

fn hub_toml(door: u16, mc: u16, vh: u16, grants: &str) -> HubOpts {
    HubOpts {
        services: vec![],
        extra: format!(
            "[enrol]\nbind = \"127.0.0.1:{door}\"\n{grants}\
             [services.minecraft]\nbind = \"127.0.0.1:{mc}\"\n\
             [services.valheim]\nbind = \"127.0.0.1:{vh}\"\n"
        ),
        ..Default::default()
    }
}

async fn reload(hub: &TestHub, certs: &Certs, o: &HubOpts, file: &Path) {
    let outcome = hub.reload_to(certs, o, file).await;
    assert!(outcome.is_ok(), "{outcome:?}");
}

/// `ferry hub invite --ep cabin --service SERVICE` on the hub `file`
/// configures, and `ferry ep join` of its line: the ep's folder and the
/// ep.toml written there.
async fn cabin_joins(file: &Path, service: &str) -> (tempfile::TempDir, String) {
    let (dir, written, _) = cabin_joins_at(file, service).await;
    (dir, written)
}

/// `cabin_joins`, and when `ferry ep join` was started (the enrolment,
/// and any drain it starts, comes after).
async fn cabin_joins_at(
    file: &Path,
    service: &str,
) -> (tempfile::TempDir, String, std::time::Instant) {
    let (ok, text) = run(&[
        "hub",
        "invite",
        "-c",
        file.to_str().unwrap(),
        "--ep",
        "cabin",
        "--service",
        service,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("it grants: {service}")), "{text}");
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ferry ep join "))
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let began = std::time::Instant::now();
    let (ok, text) = tokio::task::spawn_blocking(move || run(&["ep", "join", &line, "--dir", &d]))
        .await
        .unwrap();
    assert!(ok, "{text}");
    let written = std::fs::read_to_string(dir.path().join("ep.toml")).unwrap();
    (dir, written, began)
}

on_every_transport!(an_invitee_serves_what_it_was_granted_and_never_the_owners_service);

async fn an_invitee_serves_what_it_was_granted_and_never_the_owners_service(t: Transport) {
    let certs = Certs::new();
    let (door, mc, vh) = (free_range(1), free_range(1), free_range(1));
    let hub_toml = |grants: &str| t.hub_opts(hub_toml(door, mc, vh, grants));
    let o = hub_toml("");
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    // The host invites a friend's machine for Valheim only.
    let (dir, written) = cabin_joins(&file, "valheim").await;
    let config = dir.path().join("ep.toml");
    assert!(
        !written.contains("[services.minecraft]"),
        "the join offers only what was granted:\n{written}"
    );
    // The friend's ep (or whoever stole its key and token) announces
    // Minecraft too, and logs in first.
    let evil = tagged_echo(b"EVIL").await;
    let cabin_vh = tagged_echo(b"CABN").await;
    let text = t.ep_extra(hub.handle.quic_addr())
        + &written.replace(&format!("127.0.0.1:{vh}\""), &format!("{cabin_vh}\""))
        + &format!("[services.minecraft]\nlocal = \"{evil}\"\n");
    std::fs::write(&config, text).unwrap();
    let cabin = ferry::config::ep::EpConfig::load(&config, Default::default())
        .unwrap()
        .check(&config)
        .unwrap();
    let _cabin = TestEp::start(cabin);
    hub.wait_sessions(1).await;
    // The owner's ep logs in after it and serves Minecraft.
    let home = tagged_echo(b"HOME").await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("minecraft".into(), home)]));
    let _home = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(2).await;
    assert_eq!(who_serves(mc).await, "HOME", "Minecraft players reach home");
    assert_eq!(
        who_serves(vh).await,
        "CABN",
        "Valheim players reach the cabin"
    );
    assert_eq!(
        hub.handle
            .refusals()
            .get("login refused")
            .copied()
            .unwrap_or(0),
        0,
        "{:?}",
        hub.handle.refusals()
    );

    // The host grants the cabin Minecraft too and home lets go (a reload
    // naming home's services): the cabin serves it...
    let grants =
        "[eps.home]\nservices = []\n[eps.cabin]\nservices = [\"valheim\", \"minecraft\"]\n";
    reload(&hub, &certs, &hub_toml(grants), &file).await;
    assert_eq!(who_serves(mc).await, "EVIL");
    // ...and takes it back: home, still logged in and offering it, is the
    // rightful ep again at once.
    let grants = "[eps.home]\nservices = [\"minecraft\"]\n";
    reload(&hub, &certs, &hub_toml(grants), &file).await;
    assert_eq!(who_serves(mc).await, "HOME");
    assert_eq!(who_serves(vh).await, "CABN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_added_by_reload_reaches_an_ep_already_logged_in() {
    let certs = Certs::new();
    let grants = |list: &str| HubOpts {
        extra: format!("[eps.home]\nservices = [{list}]\n"),
        ..Default::default()
    };
    let o = grants("");
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    // Granted nothing: logged in all the same, serving nothing.
    let home = tagged_echo(b"HOME").await;
    let _ep = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), home)]),
    ));
    hub.wait_sessions(1).await;
    assert_eq!(hub.handle.served_by("echo"), None);
    reload(&hub, &certs, &grants("\"echo\""), &file).await;
    assert_eq!(hub.handle.served_by("echo").as_deref(), Some("home"));
    assert_eq!(who_serves(hub.service("echo").port()).await, "HOME");
}

#[test]
fn an_enrolment_from_before_grants_serves_nothing_until_granted() {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "[enrol]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    };
    let file = write_hub_toml(&certs, &o, None);
    // enrolled.json as a hub before grants wrote it: no services field.
    let legacy = serde_json::json!({"eps": {"cabin": {
        "token_hash": token_hash(), "serial": "01", "address": "127.0.0.9", "enrolled": 1
    }}});
    std::fs::write(certs.path("enrolled.json"), legacy.to_string()).unwrap();
    let (ok, text) = run(&["hub", "check", "-c", file.to_str().unwrap()]);
    println!("figure: check with a legacy enrolment:\n{text}");
    assert!(ok, "{text}");
    assert!(text.contains("grants   cabin: none"), "{text}");
}

/// An enrolled ep given a token of its own in hub.toml (`[eps.cabin]
/// token_hash`, to rotate it alone, as README says) keeps its invite's
/// grants: hub.toml's token wins, not an empty list. Before, the ep had
/// no list at all and could serve any service no list names, the host's
/// Minecraft included.
#[test]
fn a_token_written_for_an_enrolled_ep_keeps_its_invite_s_grants() {
    let certs = Certs::new();
    let o = HubOpts {
        extra: format!(
            "[enrol]\nbind = \"127.0.0.1:0\"\n[eps.cabin]\ntoken_hash = \"{}\"\n",
            token_hash()
        ),
        ..Default::default()
    };
    let file = write_hub_toml(&certs, &o, None);
    let enrolled = serde_json::json!({"eps": {"cabin": {
        "token_hash": token_hash(), "serial": "01", "address": "127.0.0.9", "enrolled": 1,
        "services": ["valheim"]
    }}});
    std::fs::write(certs.path("enrolled.json"), enrolled.to_string()).unwrap();
    let (ok, text) = run(&["hub", "check", "-c", file.to_str().unwrap()]);
    println!("figure: check with a token written for an enrolled ep:\n{text}");
    assert!(ok, "{text}");
    assert!(text.contains("grants   cabin: valheim"), "{text}");
    // Revoked (`ferry hub revoke` marks the record): nothing, and never
    // the reach of an ep without a list.
    let revoked = serde_json::json!({"eps": {"cabin": {
        "token_hash": token_hash(), "serial": "01", "address": "127.0.0.9", "enrolled": 1,
        "services": ["valheim"], "revoked": true
    }}});
    std::fs::write(certs.path("enrolled.json"), revoked.to_string()).unwrap();
    let (ok, text) = run(&["hub", "check", "-c", file.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("grants   cabin: none"), "{text}");
    assert!(
        !text.contains("127.0.0.9"),
        "a revoked ep's address admitted: {text}"
    );
}

on_every_transport!(an_invite_granting_a_served_service_takes_it_at_once);

/// An invite granting a service that an ep without a list of its own
/// serves (home, on the shared token): once the friend's machine enrols,
/// home lets the service go and its players finish within the drain, as
/// after a reload granting it. Before, home went on serving it, new
/// players included, until some later reload.
async fn an_invite_granting_a_served_service_takes_it_at_once(t: Transport) {
    use tokio::io::AsyncWriteExt;
    let certs = Certs::new();
    let (door, mc, vh) = (free_range(1), free_range(1), free_range(1));
    let mut o = t.hub_opts(hub_toml(door, mc, vh, ""));
    // A drain a loaded machine's join process and round trip fit in.
    o.extra = format!("drain_timeout = \"5s\"\n{}", o.extra);
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let home = tagged_echo(b"HOME").await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("minecraft".into(), home)]));
    let _home = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let mut p = tokio::net::TcpStream::connect(("127.0.0.1", mc))
        .await
        .unwrap();
    let mut tag = [0u8; 4];
    p.read_exact(&mut tag).await.unwrap();
    assert_eq!(&tag, b"HOME");

    // From the join's start: its process may return well after the hub
    // applied the grant and began the drain.
    let (dir, written, granted) = cabin_joins_at(&file, "minecraft").await;
    assert_eq!(
        hub.handle.served_by("minecraft"),
        None,
        "home still serves a service granted to the cabin alone"
    );
    // Within the drain home's player still plays; then it is cut.
    p.write_all(b"hi").await.unwrap();
    let mut got = [0u8; 2];
    p.read_exact(&mut got).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(15), p.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    let after = granted.elapsed();
    println!("figure ({t:?}): home's player was cut {after:?} after the enrolment");
    assert!(after >= Duration::from_millis(4500), "cut before the drain");
    // The cabin logs in and serves it.
    let cabin = tagged_echo(b"CABN").await;
    let config = dir.path().join("ep.toml");
    let text = t.ep_extra(hub.handle.quic_addr())
        + &written.replace(&format!("127.0.0.1:{mc}\""), &format!("{cabin}\""));
    std::fs::write(&config, text).unwrap();
    let _cabin = TestEp::start(load_ep_file(&config));
    hub.wait_sessions(2).await;
    assert_eq!(who_serves(mc).await, "CABN");
}

on_every_transport!(an_ep_whose_grant_is_withdrawn_loses_its_players_after_the_drain);

/// The host withdraws a running ep's grant: its players finish within
/// `drain_timeout`, as on a removed service, then are cut; over TLS their
/// channels would otherwise keep them with the ep for as long as they play.
async fn an_ep_whose_grant_is_withdrawn_loses_its_players_after_the_drain(t: Transport) {
    use tokio::io::AsyncWriteExt;
    let certs = Certs::new();
    let grants = |list: &str| {
        t.hub_opts(HubOpts {
            // A drain a loaded machine's round trip fits in.
            extra: format!("drain_timeout = \"5s\"\n[eps.home]\nservices = [{list}]\n"),
            ..Default::default()
        })
    };
    let o = grants("\"echo\"");
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let mut p = connected_player(hub.service("echo")).await;
    let mut got = [0u8; 2];
    // Taken before the reload: it may return well after the drain began.
    let withdrawn = std::time::Instant::now();
    reload(&hub, &certs, &grants(""), &file).await;
    // Within the drain the player still plays.
    p.write_all(b"hi").await.unwrap();
    p.read_exact(&mut got).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(15), p.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the ep kept a player of a service it is no longer granted: {read:?}"
    );
    let after = withdrawn.elapsed();
    println!("figure ({t:?}): the player was cut {after:?} after the grant was withdrawn");
    assert!(
        after >= Duration::from_millis(4500),
        "cut before the drain: {after:?}"
    );
}

on_every_transport!(an_ep_offering_many_services_it_is_not_granted_stays_logged_in);

/// An ep that offers twenty services it is not granted, beside twenty it
/// is (long names: each refusal tells the list of what it may serve):
/// the answer telling it why is cut to fit a frame, and the session goes
/// on. Before, the answer was over the frame limit, its write failed just
/// after the welcome, and the ep logged in again and again.
async fn an_ep_offering_many_services_it_is_not_granted_stays_logged_in(t: Transport) {
    let certs = Certs::new();
    let name = |kind: &str, i: usize| format!("{kind}-{}-{i:02}", "x".repeat(50));
    let (granted, other): (Vec<String>, Vec<String>) = (
        (0..20).map(|i| name("mine", i)).collect(),
        (0..20).map(|i| name("not", i)).collect(),
    );
    let mut extra = format!(
        "[eps.home]\ntoken_hash = {:?}\nservices = {granted:?}\n",
        token_hash()
    );
    for s in granted.iter().chain(&other) {
        extra += &format!("[services.{s}]\nbind = \"127.0.0.1:0\"\n");
    }
    let o = HubOpts {
        services: vec![],
        extra,
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &t.hub_opts(o)).await;
    let home = echo_server().await;
    let offered = granted
        .iter()
        .chain(&other)
        .map(|s| (s.clone(), home))
        .collect();
    let _ep = TestEp::start(ep_settings(
        &certs,
        &hub,
        &t.ep_opts(&hub, EpOpts::new(&certs, offered)),
    ));
    hub.wait_sessions(1).await;
    let at = hub.handle.service_addr(&granted[0]).unwrap();
    assert_eq!(echo_through(at, b"served").await, b"served");
    assert_eq!(
        *hub.handle.logins().borrow(),
        1,
        "logged in again and again"
    );
    assert_eq!(*hub.handle.sessions().borrow(), 1);
}

/// A player still on a channel of an earlier session of the ep (its
/// control connection was reset and it logged in again; the channel lives
/// on, as it should): when the ep's grant is withdrawn or its address
/// taken out of `ep_allowlist` (its session closed on purpose), also while
/// the ep is away, not logged in at all, that player too is cut after the
/// drain. Before, only the players of the
/// session open at the reload were, and this one played on for as long
/// as it liked. Over TLS, where a channel is a connection of its own; the
/// fault proxy that resets the control connection is TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_withdrawn_reaches_players_of_the_ep_s_earlier_sessions() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let opts = |list: &str, allowed: &str| HubOpts {
        allowlist: vec![allowed.into()],
        extra: format!("drain_timeout = \"2s\"\n[eps.home]\nservices = [{list}]\n"),
        ..Default::default()
    };
    for (what, after, away) in [
        ("grant withdrawn", opts("", "127.0.0.1/32"), false),
        (
            "address no longer allowed",
            opts("\"echo\"", "127.0.0.2/32"),
            false,
        ),
        (
            "grant withdrawn while the ep is away",
            opts("", "127.0.0.1/32"),
            true,
        ),
        (
            "address no longer allowed while the ep is away",
            opts("\"echo\"", "127.0.0.2/32"),
            true,
        ),
    ] {
        let certs = Certs::new();
        let o = opts("\"echo\"", "127.0.0.1/32");
        let settings = hub_settings(&certs, &o);
        let file = settings.file.clone();
        let hub = TestHub::from_settings(settings, &o).await;
        let proxy = common::faultproxy::FaultProxy::start(hub.control).await;
        let eo = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
        let _ep = TestEp::start(ep_settings_for(&certs, proxy.addr, hub.channel, &eo));
        hub.wait_sessions(1).await;
        let mut p = connected_player(hub.service("echo")).await;
        let mut got = [0u8; 2];
        let logins = *hub.handle.logins().borrow();
        if away {
            // Its control connection cut and kept from coming back.
            proxy.set(common::faultproxy::Mode::Refuse);
            proxy.reset_all();
            hub.wait_sessions(0).await;
        } else {
            proxy.reset_all();
            hub.wait_logins_over(logins).await;
        }
        // Still playing on the earlier session's channel.
        p.write_all(b"hi").await.unwrap();
        p.read_exact(&mut got).await.unwrap();
        reload(&hub, &certs, &after, &file).await;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(15), p.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "{what}: a player of the ep's earlier session kept playing: {read:?}"
        );
        hub.stop().await;
    }
}

/// An address taken out of `ep_allowlist`, or a grant withdrawn, then
/// undone and redone (an edit undone, redone): the players on the ep's
/// channels get the last change's whole drain, not what is left of the
/// first one's. The ep is away (its control connection kept from coming
/// back), so only the players' own channels are left to cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_undone_and_redone_gives_its_players_the_whole_drain() {
    let drain = Duration::from_secs(4);
    let opts = |list: &str, allowed: &str| HubOpts {
        allowlist: vec![allowed.into()],
        extra: format!(
            "drain_timeout = \"{}s\"\n[eps.home]\nservices = [{list}]\n",
            drain.as_secs()
        ),
        ..Default::default()
    };
    let ours = opts("\"echo\"", "127.0.0.1/32");
    for (what, other) in [
        ("address taken out", opts("\"echo\"", "127.0.0.2/32")),
        ("grant withdrawn", opts("", "127.0.0.1/32")),
    ] {
        undone_and_redone(what, drain, (&ours, &other)).await;
    }
}

async fn undone_and_redone(what: &str, drain: Duration, (ours, other): (&HubOpts, &HubOpts)) {
    use tokio::io::AsyncWriteExt;
    let certs = Certs::new();
    let settings = hub_settings(&certs, ours);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, ours).await;
    let proxy = common::faultproxy::FaultProxy::start(hub.control).await;
    let eo = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    let _ep = TestEp::start(ep_settings_for(&certs, proxy.addr, hub.channel, &eo));
    hub.wait_sessions(1).await;
    let mut p = connected_player(hub.service("echo")).await;
    proxy.set(common::faultproxy::Mode::Refuse);
    proxy.reset_all();
    hub.wait_sessions(0).await;
    // The first change applied by `first`, the last one after `last`.
    reload(&hub, &certs, other, &file).await;
    let first = tokio::time::Instant::now();
    reload(&hub, &certs, ours, &file).await;
    // Far enough into the first drain that its end comes well before the
    // last one's.
    tokio::time::sleep(drain / 2).await;
    let last = tokio::time::Instant::now();
    reload(&hub, &certs, other, &file).await;
    tokio::time::sleep_until(first + drain + Duration::from_millis(500)).await;
    // Unless this machine was too slow to leave a second of the last
    // drain to look in.
    if tokio::time::Instant::now() + Duration::from_secs(1) < last + drain {
        let mut got = [0u8; 2];
        let echoed = match p.write_all(b"hi").await {
            Ok(()) => tokio::time::timeout(Duration::from_secs(1), p.read_exact(&mut got)).await,
            Err(e) => Ok(Err(e)),
        };
        assert!(
            matches!(echoed, Ok(Ok(_))),
            "{what}: cut at the first change's drain's end: {echoed:?}"
        );
    }
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(drain * 3, p.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "{what}: kept playing after the last change's drain: {read:?}"
    );
    hub.stop().await;
}
