//! `ferry hub ban`, `unban`, `kick` and `status --bans`, run as the real
//! binary against a running hub's config file: a ban closes the address's
//! players within a second and refuses it at the TCP and UDP doors, a kick
//! closes them once, bans survive a restart, and a damaged file is named.
//! Players come from 127.0.0.2 and 127.0.0.3 so that the ep, on
//! 127.0.0.1, is never the address banned.

mod common;

use common::minecraft;
use common::procs::{Ferry, HubProc, run};
use common::udp::{ask, ask_until, eventually, player_from, udp_echo};
use common::*;
use ferry::config::hub::{HubConfig, HubFlags};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A hub in this process from `o` over `t`, its config file (for the
/// CLI), and an ep serving each of its services from `local`, logged in.
async fn hub_and_ep(
    certs: &Certs,
    t: Transport,
    o: HubOpts,
    local: SocketAddr,
) -> (TestHub, TestEp, PathBuf) {
    let o = t.hub_opts(o);
    let file = write_hub_toml(certs, &o, None);
    let settings = HubConfig::load(&file, HubFlags::default())
        .unwrap()
        .check(&file)
        .unwrap();
    let hub = TestHub::from_settings(settings, &o).await;
    let services = o.services.iter().map(|s| (s.clone(), local)).collect();
    let ep = TestEp::start(ep_settings(
        certs,
        &hub,
        &t.ep_opts(&hub, EpOpts::new(certs, services)),
    ));
    hub.wait_sessions(1).await;
    (hub, ep, file)
}

/// `ferry hub -c FILE ARGS…`, which must succeed; its output.
async fn ferry_hub(file: &Path, args: &[&str]) -> String {
    let mut all = vec!["hub".to_string(), "-c".into(), file.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&all)
    })
    .await
    .unwrap();
    assert!(ok, "ferry hub {args:?} failed: {out}");
    out
}

/// A player from `src` whose bytes came back through the tunnel.
async fn echoing(src: &str, to: SocketAddr) -> TcpStream {
    let mut s = connect_from(src, to).await.unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("an echo within 10 s")
        .unwrap();
    assert_eq!(&buf, b"hi");
    s
}

/// Whether a new player from `src` is turned away: closed (reset or EOF)
/// before any echo.
async fn refused(src: &str, to: SocketAddr) -> bool {
    let Ok(mut s) = connect_from(src, to).await else {
        return true;
    };
    let _ = s.write_all(b"hi").await;
    let mut buf = [0u8; 2];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Tries players from `src` until one is echoed; how long it took.
async fn admitted_within(src: &str, to: SocketAddr, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if !refused(src, to).await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{src} still refused after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the hub has read `bans.json` more than `before` times.
async fn read_after(hub: &TestHub, before: u64) {
    let mut rx = hub.handle.bans_reads();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|n| *n > before))
        .await
        .expect("the hub read bans.json")
        .unwrap();
}

fn reads(hub: &TestHub) -> u64 {
    *hub.handle.bans_reads().borrow()
}

async fn a_ban_closes_players_at_once_and_unban_lets_them_back(t: Transport) {
    let certs = Certs::new();
    let (hub, _ep, file) = hub_and_ep(&certs, t, HubOpts::default(), echo_server().await).await;
    let at = hub.service("echo");
    let mut banned = echoing("127.0.0.2", at).await;
    let mut other = echoing("127.0.0.3", at).await;

    let start = Instant::now();
    let out = ferry_hub(&file, &["ban", "127.0.0.2"]).await;
    let written = Instant::now();
    assert!(out.contains("banned 127.0.0.2 from every service"), "{out}");
    assert!(
        closed_by_peer(&mut banned, Duration::from_secs(5)).await,
        "the banned player stayed connected"
    );
    let (since_cli, since_file) = (start.elapsed(), written.elapsed());
    println!(
        "figure ({t:?}): banned player closed {since_cli:?} after `ferry hub ban` started, \
         {since_file:?} after it returned"
    );
    assert!(since_file < Duration::from_secs(1), "{since_file:?}");

    assert!(
        refused("127.0.0.2", at).await,
        "a new player from the banned address got in"
    );
    assert!(hub.handle.refusals().get("banned").copied().unwrap_or(0) >= 1);
    // The other address goes on, on its open connection and on new ones.
    other.write_all(b"on").await.unwrap();
    let mut buf = [0u8; 2];
    other.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"on");
    echoing("127.0.0.3", at).await;

    let out = ferry_hub(&file, &["unban", "127.0.0.2"]).await;
    assert!(out.contains("lifted 1 ban of 127.0.0.2"), "{out}");
    let took = admitted_within("127.0.0.2", at, Duration::from_secs(5)).await;
    println!("figure ({t:?}): let back in {took:?} after `ferry hub unban`");
    let out = ferry_hub(&file, &["unban", "127.0.0.2"]).await;
    assert!(out.contains("no ban of 127.0.0.2"), "{out}");
}

async fn a_service_ban_spares_other_services_and_a_timed_one_expires(t: Transport) {
    let certs = Certs::new();
    let o = HubOpts {
        services: vec!["echo".into(), "other".into()],
        ..Default::default()
    };
    let (hub, _ep, file) = hub_and_ep(&certs, t, o, echo_server().await).await;
    let (echo, other) = (hub.service("echo"), hub.service("other"));
    let mut on_other = echoing("127.0.0.2", other).await;
    let mut on_echo = echoing("127.0.0.2", echo).await;

    ferry_hub(&file, &["ban", "127.0.0.2", "--service", "other"]).await;
    assert!(closed_by_peer(&mut on_other, Duration::from_secs(5)).await);
    assert!(refused("127.0.0.2", other).await);
    on_echo.write_all(b"on").await.unwrap();
    let mut buf = [0u8; 2];
    on_echo.read_exact(&mut buf).await.unwrap();
    echoing("127.0.0.2", echo).await;

    // A service hub.toml does not have is named with the ones it has.
    let (ok, out) = run(&[
        "hub",
        "-c",
        file.to_str().unwrap(),
        "ban",
        "127.0.0.2",
        "--service",
        "nope",
    ]);
    assert!(
        !ok && out.contains("no service \"nope\"") && out.contains("echo, other"),
        "{out}"
    );

    // A ban for 2 s ends by itself, with no write to the file.
    let before = reads(&hub);
    let start = Instant::now();
    ferry_hub(&file, &["ban", "127.0.0.3", "--for", "2s"]).await;
    read_after(&hub, before).await;
    assert!(refused("127.0.0.3", echo).await);
    let reads_then = reads(&hub);
    let took = admitted_within("127.0.0.3", echo, Duration::from_secs(10)).await;
    println!(
        "figure ({t:?}): a 2 s ban let the address in {:?} after `ferry hub ban` started \
         ({took:?} of retrying)",
        start.elapsed()
    );
    // At least the 2 s asked for, counted from before the ban was written.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        reads(&hub),
        reads_then,
        "the file was not touched meanwhile"
    );
    // The next write drops it from the file.
    ferry_hub(&file, &["ban", "10.9.9.9"]).await;
    let text = std::fs::read_to_string(certs.path("bans.json")).unwrap();
    assert!(
        !text.contains("127.0.0.3") && text.contains("127.0.0.2"),
        "{text}"
    );
}

async fn a_kick_closes_players_once_and_they_may_come_back(t: Transport) {
    let certs = Certs::new();
    let (hub, _ep, file) = hub_and_ep(&certs, t, HubOpts::default(), echo_server().await).await;
    let at = hub.service("echo");
    let mut kicked = echoing("127.0.0.2", at).await;
    let mut kept = echoing("127.0.0.3", at).await;
    let out = ferry_hub(&file, &["kick", "127.0.0.2"]).await;
    let written = Instant::now();
    assert!(out.contains("kick of 127.0.0.2"), "{out}");
    assert!(closed_by_peer(&mut kicked, Duration::from_secs(5)).await);
    println!(
        "figure ({t:?}): kicked player closed {:?} after `ferry hub kick`",
        written.elapsed()
    );
    // Back at once, and not kicked again by a later change to the file.
    let mut back = echoing("127.0.0.2", at).await;
    let before = reads(&hub);
    ferry_hub(&file, &["ban", "10.9.9.9"]).await;
    read_after(&hub, before).await;
    for s in [&mut back, &mut kept] {
        s.write_all(b"on").await.unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.unwrap();
    }
}

async fn a_udp_flow_of_a_banned_address_ends_and_its_datagrams_are_refused(t: Transport) {
    let certs = Certs::new();
    let (local, _seen) = udp_echo().await;
    let o = HubOpts {
        service_extra: "type = \"udp\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep, file) = hub_and_ep(&certs, t, o, local).await;
    let at = hub.service("echo");
    let (banned, other) = (
        player_from("127.0.0.2").await,
        player_from("127.0.0.3").await,
    );
    ask_until(&banned, at, b"a", Duration::from_secs(10)).await;
    ask_until(&other, at, b"b", Duration::from_secs(10)).await;
    assert_eq!(hub.handle.udp_flows("echo"), Some(2));

    ferry_hub(&file, &["ban", "127.0.0.2"]).await;
    let written = Instant::now();
    eventually("the banned flow ended", Duration::from_secs(10), || {
        hub.handle.udp_flows("echo") == Some(1)
    })
    .await;
    println!(
        "figure ({t:?}): banned UDP flow ended {:?} after `ferry hub ban`",
        written.elapsed()
    );
    let refusals = || hub.handle.refusals().get("banned").copied().unwrap_or(0);
    let before = refusals();
    assert_eq!(
        ask(&banned, at, b"a", Duration::from_millis(300)).await,
        None
    );
    eventually("the refusal counted", Duration::from_secs(5), || {
        refusals() > before
    })
    .await;
    assert_eq!(hub.handle.udp_flows("echo"), Some(1));
    assert_eq!(
        ask_until(&other, at, b"b", Duration::from_secs(5)).await,
        b"b"
    );

    ferry_hub(&file, &["unban", "127.0.0.2"]).await;
    assert_eq!(
        ask_until(&banned, at, b"a", Duration::from_secs(5)).await,
        b"a"
    );
}

/// `hub_and_ep` of one echo service with 127.0.0.2 banned, and the hub
/// having read the ban; the service's address.
async fn with_a_ban(certs: &Certs, t: Transport) -> (TestHub, TestEp, PathBuf, SocketAddr) {
    let (hub, ep, file) = hub_and_ep(certs, t, HubOpts::default(), echo_server().await).await;
    let at = hub.service("echo");
    let before = reads(&hub);
    ferry_hub(&file, &["ban", "127.0.0.2"]).await;
    read_after(&hub, before).await;
    (hub, ep, file, at)
}

async fn a_damaged_file_keeps_the_previous_list(t: Transport) {
    let certs = Certs::new();
    let (hub, _ep, file, at) = with_a_ban(&certs, t).await;
    assert!(refused("127.0.0.2", at).await);

    // Half a file, as a careless editor saves it (renamed in, whole).
    let path = certs.path("bans.json");
    let before = reads(&hub);
    std::fs::write(certs.path("bans.tmp"), "{\"bans\": [").unwrap();
    std::fs::rename(certs.path("bans.tmp"), &path).unwrap();
    read_after(&hub, before).await;
    assert!(
        refused("127.0.0.2", at).await,
        "a damaged file let the banned address in"
    );
    echoing("127.0.0.3", at).await;

    // The CLI will not write over it either: it names it.
    let (ok, out) = run(&["hub", "-c", file.to_str().unwrap(), "ban", "127.0.0.4"]);
    assert!(
        !ok && out.contains(&path.display().to_string()) && out.contains("damaged"),
        "{out}"
    );

    // `check` names it too.
    let (ok, out) = run(&["hub", "check", "-c", file.to_str().unwrap()]);
    assert!(!ok && out.contains(&path.display().to_string()), "{out}");
}

/// An editor that saves by moving the file aside and writing a new one
/// (vim, emacs): a look in between does not lift the bans. Before, it read
/// the missing file as an empty list and let the banned address in until
/// the next look. A file still gone at the next look is removed, and that
/// lifts them all, as README says.
async fn an_editor_s_save_lifts_no_ban_and_a_removal_lifts_them_all(t: Transport) {
    let certs = Certs::new();
    let (hub, _ep, _file, at) = with_a_ban(&certs, t).await;
    let path = certs.path("bans.json");
    let aside = certs.path("bans.json~");
    let before = reads(&hub);
    std::fs::rename(&path, &aside).unwrap();
    read_after(&hub, before).await;
    let banned = refused("127.0.0.2", at).await;
    // Unless this machine was so slow that a second look came first.
    let looks = reads(&hub) - before;
    assert!(banned || looks > 1, "a save in progress lifted the ban");
    // Still gone at the next look: removed.
    read_after(&hub, before + 1).await;
    echoing("127.0.0.2", at).await;
}

/// The state folder itself gone while the hub runs (a volume unmounted,
/// a folder moved), or another in its place, is not "no bans": the hub
/// keeps its list. Before, it read the missing file as empty and let
/// everyone in.
async fn a_state_folder_gone_keeps_the_previous_list(t: Transport) {
    let certs = Certs::new();
    let volume = tempfile::tempdir().unwrap();
    let state = volume.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let o = HubOpts {
        extra: format!(
            "[enrol]\nbind = \"127.0.0.1:0\"\nstate = {}\n",
            toml_path(&state)
        ),
        ..Default::default()
    };
    let (hub, _ep, file) = hub_and_ep(&certs, t, o, echo_server().await).await;
    let at = hub.service("echo");
    let before = reads(&hub);
    ferry_hub(&file, &["ban", "127.0.0.2"]).await;
    read_after(&hub, before).await;
    assert!(state.join("bans.json").exists());
    assert!(refused("127.0.0.2", at).await);

    let before = reads(&hub);
    std::fs::rename(&state, volume.path().join("moved")).unwrap();
    read_after(&hub, before).await;
    assert!(
        refused("127.0.0.2", at).await,
        "the folder gone let the banned address in"
    );
    // An empty folder in its place, as an unmounted volume leaves its
    // mount point: still not "no bans".
    let before = reads(&hub);
    std::fs::create_dir(&state).unwrap();
    read_after(&hub, before).await;
    assert!(
        refused("127.0.0.2", at).await,
        "an empty folder in its place let the banned address in"
    );
    echoing("127.0.0.3", at).await;
}

/// A ban written while a stopping hub lets its players finish (here a
/// drain of 60 s) closes the banned address's players as at any other
/// time, and the drain ends once the last player has. Before, the hub
/// stopped following the file when the stop began.
async fn a_ban_during_the_drain_closes_its_players(t: Transport) {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "drain_timeout = \"60s\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep, file) = hub_and_ep(&certs, t, o, echo_server().await).await;
    let at = hub.service("echo");
    let mut player = echoing("127.0.0.2", at).await;
    let began = Instant::now();
    let stopping = tokio::spawn(hub.stop());
    // The stop has begun once the door no longer takes players.
    while TcpStream::connect(at).await.is_ok() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the door stayed open"
        );
        tokio::task::yield_now().await;
    }
    ferry_hub(&file, &["ban", "127.0.0.2"]).await;
    let mut b = [0u8; 1];
    let end = tokio::time::timeout(Duration::from_secs(5), player.read(&mut b)).await;
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "the banned player was not closed during the drain: {end:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the drain went on after its last player was closed")
        .unwrap();
    println!(
        "figure ({t:?}): stopped {:?} after the stop began, the drain 60 s",
        began.elapsed()
    );
}

/// The hub process's log and exit status when it stops by itself within
/// 30 s (None if it is still running then).
fn stopped_at_start(file: &Path) -> Option<(std::process::ExitStatus, String)> {
    let mut p = Ferry::spawn("hub", file, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    while let Some(l) = p.next_line(deadline.saturating_duration_since(Instant::now())) {
        log += &l;
        log += "\n";
    }
    // Its stderr closed before the deadline: it exited (or is about to).
    if Instant::now() >= deadline {
        return None;
    }
    Some((p.wait(), log))
}

async fn a_ban_survives_a_restart_of_the_hub_process(t: Transport) {
    let certs = Certs::new();
    let local = echo_server().await;
    let file = hub_toml(&certs, &["echo"], t.hub_extra());
    let start = |file: &Path| {
        let hub = HubProc::start(file, &[], 1);
        let mut eo = EpOpts::new(&certs, vec![("echo".into(), local)]);
        eo.extra = t.ep_extra(hub.quic);
        let ep = Ferry::spawn(
            "ep",
            &write_ep_toml(&certs, hub.control, hub.channel, &eo),
            &[],
        );
        hub.proc.wait_line("ep logged in");
        (hub, ep)
    };
    let (hub, ep) = start(&file);
    let at = hub.services["echo"];
    let mut player = echoing("127.0.0.2", at).await;
    ferry_hub(&file, &["ban", "127.0.0.2"]).await;
    assert!(closed_by_peer(&mut player, Duration::from_secs(5)).await);
    hub.proc.signal("TERM");
    let mut proc = hub.proc;
    proc.wait_within(Duration::from_secs(20))
        .expect("the hub stopped");
    drop(ep);

    let (hub, _ep) = start(&file);
    let at = hub.services["echo"];
    echoing("127.0.0.3", at).await;
    assert!(
        refused("127.0.0.2", at).await,
        "the ban did not survive the restart"
    );
}

async fn status_bans_lists_them(t: Transport) {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep, file) = hub_and_ep(&certs, t, o, echo_server().await).await;
    let admin = hub.admin.unwrap().to_string();
    ferry_hub(
        &file,
        &["ban", "127.0.0.2", "--service", "echo", "--for", "1h"],
    )
    .await;
    ferry_hub(&file, &["ban", "2001:db8::/48"]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let v = loop {
        let (_, body) = http_get(hub.admin.unwrap(), "/api/status", None).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["bans"].as_array().is_some_and(|b| b.len() == 2) {
            break v;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let body = v.to_string();
    let bans = v["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 2, "{body}");
    assert_eq!(bans[0]["address"], "127.0.0.2");
    assert_eq!(bans[0]["service"], "echo");
    assert!(bans[0]["until"].as_u64().unwrap() > bans[0]["since"].as_u64().unwrap());
    assert_eq!(bans[1]["address"], "2001:db8::/48");
    assert!(bans[1]["service"].is_null() && bans[1]["until"].is_null());

    let out = ferry_hub(&file, &["status", "--bans", "--admin", &admin]).await;
    println!("{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("127.0.0.2"))
        .expect(&out);
    assert!(row.contains("echo") && row.contains("UTC"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("2001:db8::/48"))
        .expect(&out);
    assert!(row.contains("all") && row.contains("permanent"), "{out}");
    let plain = ferry_hub(&file, &["status", "--admin", &admin]).await;
    assert!(
        !plain.contains("permanent") && plain.contains("echo"),
        "{plain}"
    );
    assert!(refused("127.0.0.2", hub.service("echo")).await);
    let (_, metrics) = http_get(hub.admin.unwrap(), "/metrics", None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferry_player_refusals") && l.contains("reason=\"banned\"")),
        "{metrics}"
    );
    // A permanent ban banned again for a while is shortened, and says so.
    let out = ferry_hub(&file, &["ban", "2001:db8::/48", "--for", "1h"]).await;
    assert!(
        out.contains("again") && out.contains("it was banned until `ferry hub unban`"),
        "{out}"
    );
}

/// A Minecraft join from `src` typing `host`: the first packet back.
async fn join_from(src: &str, to: SocketAddr, host: &str) -> std::io::Result<(i32, Vec<u8>)> {
    join_on(connect_from(src, to).await?, host).await
}

/// The same on a connection already made.
async fn join_on(mut s: TcpStream, host: &str) -> std::io::Result<(i32, Vec<u8>)> {
    let mut out = minecraft::handshake(host, 2);
    let mut login = Vec::new();
    minecraft::varint(&mut login, 5);
    login.extend(b"steve");
    login.extend([0u8; 16]);
    out.extend(minecraft::packet(0, &login));
    s.write_all(&out).await?;
    tokio::time::timeout(Duration::from_secs(10), minecraft::read_packet(&mut s))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))?
}

/// A hub whose Minecraft services `names` (each at `NAME.test`, answered
/// by a fake server saying its name in capitals) share one port, and an
/// ep serving them; the hub, its config file and the port.
async fn minecraft_hub(
    certs: &Certs,
    t: Transport,
    names: &[&str],
) -> (TestHub, TestEp, PathBuf, SocketAddr) {
    let port = common::udp::free_range(1);
    let (mut extra, mut local) = (String::new(), vec![]);
    for n in names {
        extra += &format!(
            "[services.{n}]\nbind = \"127.0.0.1:{port}\"\ngame = \"minecraft\"\nhosts = [\"{n}.test\"]\n"
        );
        let says: &'static str = n.to_uppercase().leak();
        local.push((n.to_string(), minecraft::fake_server(says).await));
    }
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra,
        ..Default::default()
    });
    let file = write_hub_toml(certs, &o, None);
    let settings = HubConfig::load(&file, HubFlags::default())
        .unwrap()
        .check(&file)
        .unwrap();
    let hub = TestHub::from_settings(settings, &o).await;
    let eo = t.ep_opts(&hub, EpOpts::new(certs, local));
    let ep = TestEp::start(ep_settings(certs, &hub, &eo));
    hub.wait_sessions(1).await;
    (hub, ep, file, ([127, 0, 0, 1], port).into())
}

async fn a_game_port_refuses_a_banned_address_by_service_and_before_reading(t: Transport) {
    let certs = Certs::new();
    let (hub, _ep, file, at) = minecraft_hub(&certs, t, &["a", "b"]).await;

    // Banned from a only: its name is read, then a refuses it; b admits it.
    let before = reads(&hub);
    ferry_hub(&file, &["ban", "127.0.0.2", "--service", "a"]).await;
    read_after(&hub, before).await;
    let (_, body) = join_from("127.0.0.2", at, "b.test").await.unwrap();
    assert_eq!(minecraft::disconnect_text(&body), "B b.test");
    assert!(join_from("127.0.0.2", at, "a.test").await.is_err());
    let (_, body) = join_from("127.0.0.3", at, "a.test").await.unwrap();
    assert_eq!(minecraft::disconnect_text(&body), "A a.test");

    // Banned from both: refused before a byte is read (not after the
    // 5 s a silent player is given; 3 s leaves a loaded machine room).
    let before = reads(&hub);
    ferry_hub(&file, &["ban", "127.0.0.2"]).await;
    read_after(&hub, before).await;
    let start = Instant::now();
    // The reset may come before the connect returns.
    if let Ok(mut silent) = connect_from("127.0.0.2", at).await {
        assert!(closed_by_peer(&mut silent, Duration::from_secs(5)).await);
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(hub.handle.refusals().get("banned").copied().unwrap_or(0) >= 2);
}

/// A player still in a game door's handshake when the kick is applied is
/// not yet in the players table the kick sweeps: it is closed as it is
/// seated. Before, it joined after the kick.
async fn a_kick_reaches_a_game_player_still_in_its_handshake(t: Transport) {
    let certs = Certs::new();
    let (hub, _ep, file, at) = minecraft_hub(&certs, t, &["a"]).await;
    let typing = connect_from("127.0.0.2", at).await.unwrap();
    let before = reads(&hub);
    ferry_hub(&file, &["kick", "127.0.0.2"]).await;
    read_after(&hub, before).await;
    let joined = join_on(typing, "a.test").await;
    assert!(
        joined.as_ref().is_err(),
        "joined after the kick: {joined:?}"
    );
    // A kick is not a ban: the same address joins again.
    let (_, body) = join_from("127.0.0.2", at, "a.test").await.unwrap();
    assert_eq!(minecraft::disconnect_text(&body), "A a.test");
}

async fn a_dual_stack_port_matches_ipv4_bans_and_ipv6_bans(t: Transport) {
    let certs = Certs::new();
    let o = HubOpts {
        service_host: "[::]".into(),
        ..Default::default()
    };
    let (hub, _ep, file) = hub_and_ep(&certs, t, o, echo_server().await).await;
    let port = hub.service("echo").port();
    let (v4, v6): (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], port).into(),
        (std::net::Ipv6Addr::LOCALHOST, port).into(),
    );
    // The socket sees ::ffff:127.0.0.2; the ban names 127.0.0.2.
    let mut mapped = echoing("127.0.0.2", v4).await;
    let mut six = TcpStream::connect(v6).await.unwrap();
    six.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    six.read_exact(&mut buf).await.unwrap();
    ferry_hub(&file, &["ban", "127.0.0.2"]).await;
    ferry_hub(&file, &["ban", "::1"]).await;
    assert!(closed_by_peer(&mut mapped, Duration::from_secs(5)).await);
    assert!(closed_by_peer(&mut six, Duration::from_secs(5)).await);
    assert!(refused("127.0.0.2", v4).await);
    let six_refused = match TcpStream::connect(v6).await {
        Err(_) => true,
        Ok(mut s) => {
            let _ = s.write_all(b"hi").await;
            matches!(
                tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        }
    };
    assert!(six_refused, "::1 got in");
    echoing("127.0.0.3", v4).await;
}

/// Eight `ferry hub ban` processes at once: the lock keeps every entry.
#[test]
fn writers_at_once_lose_no_entry() {
    let certs = Certs::new();
    let file = hub_toml(&certs, &["echo"], "");
    let spawned: Vec<_> = (0..8)
        .map(|i| {
            common::procs::ferry_cmd()
                .args(["hub", "-c"])
                .arg(&file)
                .args(["ban", &format!("10.1.0.{i}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in spawned {
        assert!(c.wait().unwrap().success());
    }
    let text = std::fs::read_to_string(certs.path("bans.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["bans"].as_array().unwrap().len(), 8, "{text}");
}

on_every_transport!(
    a_dual_stack_port_matches_ipv4_bans_and_ipv6_bans,
    a_game_port_refuses_a_banned_address_by_service_and_before_reading,
    a_ban_closes_players_at_once_and_unban_lets_them_back,
    a_service_ban_spares_other_services_and_a_timed_one_expires,
    a_kick_closes_players_once_and_they_may_come_back,
    a_kick_reaches_a_game_player_still_in_its_handshake,
    a_udp_flow_of_a_banned_address_ends_and_its_datagrams_are_refused,
    a_damaged_file_keeps_the_previous_list,
    an_editor_s_save_lifts_no_ban_and_a_removal_lifts_them_all,
    a_state_folder_gone_keeps_the_previous_list,
    a_ban_during_the_drain_closes_its_players,
    a_ban_survives_a_restart_of_the_hub_process,
    status_bans_lists_them,
    a_ban_of_a_service_renamed_says_it_keeps_nobody_out,
);

/// A ban of one service, then hub.toml renames the service: bans name
/// services, so this one no longer keeps anybody out, and the reload, the
/// page's status and `status --bans` say so rather than list it as if in
/// force.
async fn a_ban_of_a_service_renamed_says_it_keeps_nobody_out(t: Transport) {
    let certs = Certs::new();
    let o = |service: &str| HubOpts {
        services: vec![service.into()],
        extra: "[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep, file) = hub_and_ep(&certs, t, o("echo"), echo_server().await).await;
    let admin = hub.admin.unwrap();
    let before = reads(&hub);
    ferry_hub(&file, &["ban", "127.0.0.2", "--service", "echo"]).await;
    read_after(&hub, before).await;
    let plan = hub
        .reload_to(&certs, &t.hub_opts(o("survival")), &file)
        .await;
    let plan = plan.expect("reloaded");
    assert!(
        plan.contains("bans name services hub.toml no longer has (echo)"),
        "{plan}"
    );
    let (_, body) = http_get(admin, "/api/status", None).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["bans"][0]["service"], "echo", "{body}");
    assert_eq!(v["bans"][0]["service_gone"], true, "{body}");
    let out = ferry_hub(&file, &["status", "--bans", "--admin", &admin.to_string()]).await;
    assert!(out.contains("echo (not in hub.toml)"), "{out}");
}

#[test]
fn a_damaged_file_stops_the_hub_at_start_naming_it() {
    let certs = Certs::new();
    let file = hub_toml(&certs, &["echo"], "");
    let path = certs.path("bans.json");
    std::fs::write(&path, "not json").unwrap();
    let (status, log) = stopped_at_start(&file).expect("the hub stopped at start");
    assert!(!status.success());
    assert!(
        log.contains(&path.display().to_string()) && log.contains("damaged"),
        "{log}"
    );
}

/// hub.toml edited since the hub started so that its state folder moved
/// (the hub takes that when restarted): `ferry hub ban` says the running
/// hub follows the other file, rather than only that it acts within a
/// second; written where the hub looks, it says nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_written_where_the_running_hub_does_not_look_says_so() {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep, file) = hub_and_ep(&certs, Transport::Tls, o, echo_server().await).await;
    let started = std::fs::read_to_string(&file).unwrap();
    let admin = "[admin]\nbind = \"127.0.0.1:0\"";
    assert!(started.contains(admin));
    let asked = started.replace(
        admin,
        &format!("[admin]\nbind = \"{}\"", hub.admin.unwrap()),
    );
    std::fs::write(&file, &asked).unwrap();
    let out = ferry_hub(&file, &["ban", "127.0.0.2"]).await;
    assert!(!out.contains("warning"), "{out}");

    let moved = tempfile::tempdir().unwrap();
    let ca = moved.path().join("ca.pem");
    std::fs::copy(certs.path("ca.pem"), &ca).unwrap();
    let old_ca = toml_path(&certs.path("ca.pem"));
    assert!(asked.contains(&old_ca), "{asked}");
    let edited = asked.replace(&old_ca, &toml_path(&ca));
    std::fs::write(&file, edited).unwrap();
    let out = ferry_hub(&file, &["ban", "127.0.0.3"]).await;
    let followed = certs.path("bans.json").display().to_string();
    assert!(
        out.contains("warning: the running hub follows") && out.contains(&followed),
        "{out}"
    );
}

/// A hub without an admin door still lists its bans: `status --bans`
/// reads the file (before, it said there was no admin door to ask).
#[test]
fn status_bans_without_an_admin_door_reads_the_file() {
    let certs = Certs::new();
    let file = hub_toml(&certs, &["echo"], "");
    let file = file.to_str().unwrap();
    let (ok, out) = run(&["hub", "-c", file, "ban", "127.0.0.2", "--for", "1h"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["hub", "-c", file, "status", "--bans"]);
    assert!(
        ok && out.contains("127.0.0.2") && out.contains("no admin door"),
        "{out}"
    );
    let (ok, out) = run(&["hub", "-c", file, "status", "--bans", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert!(
        ok && v[0]["address"] == "127.0.0.2" && v[0]["until"].is_u64(),
        "{out}"
    );
}

/// With `hide_addresses`, `status --bans` on the hub's machine reads the
/// file, whole: the door's masked list showed a ban of 127.0.0.2 as
/// `127.0.0.0/24`, which reads as a ban of the network and which `unban`
/// does not find. The door itself still masks, now saying so.
#[tokio::test]
async fn status_bans_of_a_hub_that_hides_addresses_lists_them_whole() {
    let certs = Certs::new();
    // No hub runs, and nothing listens at the door's address.
    let (_held, door) = dead_port();
    let extra = format!("[admin]\nbind = \"{door}\"\nhide_addresses = true\n");
    let file = hub_toml(&certs, &["echo"], &extra);
    let file = file.to_str().unwrap();
    // No ban yet, so no file: an empty list, not a question to the door.
    let (ok, out) = run(&["hub", "-c", file, "status", "--bans"]);
    assert!(ok && out.contains("hides addresses"), "{out}");
    let (ok, out) = run(&["hub", "-c", file, "ban", "127.0.0.2", "--for", "1h"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["hub", "-c", file, "status", "--bans"]);
    assert!(
        ok && out.contains("127.0.0.2") && out.contains("hides addresses"),
        "{out}"
    );
    let (ok, out) = run(&["hub", "-c", file, "unban", "127.0.0.2"]);
    assert!(ok, "{out}");
}

/// A long list (up to 10,000 bans) reaches the page and each of its live
/// updates cut to 200, saying how many there are and where to see them
/// all: sent whole each second, it cost the hub and the browser about a
/// megabyte a second. `/api/status` still lists them all.
#[tokio::test]
async fn a_long_ban_list_reaches_the_page_cut_and_said_so() {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    };
    let file = write_hub_toml(&certs, &o, None);
    let settings = HubConfig::load(&file, HubFlags::default())
        .unwrap()
        .check(&file)
        .unwrap();
    let path = ferry::bans::path(&settings);
    let hub = TestHub::from_settings(settings, &o).await;
    let admin = hub.admin.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ferry::bans::change(&path, now, |f| {
        for i in 0..300u32 {
            let at = format!("10.{}.{}.1", i / 256, i % 256);
            f.bans.push(ferry::bans::Ban {
                address: ferry::bans::Net::parse(&at).unwrap(),
                service: None,
                until: None,
                since: now,
            });
        }
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(admin, "/api/status", None).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["bans"].as_array().is_some_and(|b| b.len() == 300) {
            break;
        }
        assert!(Instant::now() < deadline, "the hub never listed 300 bans");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, page) = http_get(admin, "/", None).await;
    assert!(page.contains("the last 200 of 300"), "{page}");
    assert_eq!(page.matches("<tr><td>10.").count(), 200);
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let event = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an event within 10 s")
            .unwrap();
        assert!(n > 0, "the stream ended");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(at) = text.find("data: ")
            && let Some(end) = text[at..].find("\n\n")
        {
            break text[at + 6..at + end].to_string();
        }
    };
    let v: serde_json::Value = serde_json::from_str(&event).unwrap();
    let bans = v["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 200);
    assert_eq!(v["bans_total"], 300);
    // The newest: the last one banned is shown.
    assert_eq!(bans[199]["address"], "10.1.43.1");
}
