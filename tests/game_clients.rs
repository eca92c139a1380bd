//! The game door with the real npm clients and servers (tests/game,
//! installed by `.ci/run`): minecraft-protocol's ping, a mineflayer bot,
//! flying-squid servers, bedrock-protocol's server and RakNet ping.

mod common;

use common::udp::free_range;
use common::*;
use serde_json::Value;
use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/game")
}

fn installed() -> bool {
    let ok = dir().join("node_modules/mineflayer").exists();
    // CI installs them: there a missing install is a failure, not a skip.
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "tests/game/node_modules missing: npm ci --prefix tests/game"
    );
    if !ok {
        println!(
            "skipped: tests/game/node_modules missing (.ci/run installs it: npm ci --prefix tests/game)"
        );
    }
    ok
}

fn node(script: &str, args: &[&str]) -> Command {
    let mut c = Command::new("node");
    c.arg(dir().join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    c
}

/// A script's one JSON line.
async fn result(script: &str, args: &[&str]) -> Value {
    let out = tokio::time::timeout(Duration::from_secs(90), node(script, args).output())
        .await
        .expect("the script ends")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("{script}: {text}"))
}

/// A server script running until dropped, once it says it is ready.
async fn server(script: &str, args: &[&str]) -> Child {
    let mut child = node(script, args).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the server starts")
        .unwrap()
        .unwrap_or_default();
    assert!(line.contains("ready"), "{script}: {line}");
    child
}

async fn mc_ping(port: u16, name: &str) -> Value {
    result(
        "mc_ping.mjs",
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--server-name",
            name,
        ],
    )
    .await
}

async fn bot(port: u16, name: &str, user: &str, extra: &[&str]) -> Value {
    let p = port.to_string();
    let mut args = vec![
        "--host",
        "127.0.0.1",
        "--port",
        &p,
        "--username",
        user,
        "--server-name",
        name,
    ];
    args.extend_from_slice(extra);
    result("mc_bot.mjs", &args).await
}

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn mc_service(name: &str, port: u16, keys: &str) -> String {
    format!("[services.{name}]\nbind = \"127.0.0.1:{port}\"\ngame = \"minecraft\"\n{keys}")
}

on_every_transport!(
    real_clients_see_home_away_then_the_real_server,
    a_bot_that_joins_a_sleeping_server_spawns_once_it_is_woken,
    two_real_servers_share_one_port_by_the_name_typed,
    bedrock_ping_gets_the_offline_motd_then_the_real_one,
);

async fn real_clients_see_home_away_then_the_real_server(t: Transport) {
    if !installed() {
        return;
    }
    let certs = Certs::new();
    let (port, home) = (free_range(1), free_range(1));
    let keys = "offline_motd = \"Napping\"\noffline_message = \"Come back at 6\"\n";
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: mc_service("mc", port, keys),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let p = mc_ping(port, "play.test").await;
    assert_eq!(p["motd"], "Napping", "{p}");
    assert_eq!(p["pong"], true, "{p}");
    let b = bot(port, "play.test", "alex", &[]).await;
    assert_eq!(b["kicked"], "Come back at 6", "{b}");

    let _squid = server(
        "mc_server.mjs",
        &["--port", &home.to_string(), "--motd", "Real squid"],
    )
    .await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), local(home))]));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let p = mc_ping(port, "play.test").await;
    assert_eq!(p["motd"], "Real squid", "{p}");
    let b = bot(port, "play.test", "alex", &[]).await;
    assert!(b["spawned"].is_array(), "{b}");
    ep.stop().await;
    hub.stop().await;
}

async fn a_bot_that_joins_a_sleeping_server_spawns_once_it_is_woken(t: Transport) {
    if !installed() {
        return;
    }
    let certs = Certs::new();
    let (port, (_held, home)) = (free_range(1), held_port());
    let home = home.port();
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: mc_service("mc", port, ""),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("pid");
    let _server = KillPidFile(pidfile.clone());
    let script = dir().join("mc_server.mjs");
    let wake = format!(
        "wake = [\"node\", {:?}, \"--port\", \"{home}\", \"--pidfile\", {:?}]\n",
        script.to_str().unwrap(),
        pidfile.to_str().unwrap()
    );
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), local(home))]));
    eo.service_extra = wake;
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    // (The first answer may say "Offline" if the ep's word that it sleeps
    // comes after the failed dial.)
    mc_ping(port, "play.test").await;
    common::udp::eventually("the hub sees it asleep", Duration::from_secs(20), || {
        hub.handle.home("mc") == Some("sleeping")
    })
    .await;
    let p = mc_ping(port, "play.test").await;
    assert!(p["motd"].as_str().unwrap().starts_with("Sleeping"), "{p}");
    assert!(!pidfile.exists(), "a ping woke the server");
    let started = std::time::Instant::now();
    let b = bot(port, "play.test", "sam", &["--timeout", "60"]).await;
    let took = started.elapsed();
    assert!(b["spawned"].is_array(), "{b}");
    println!("figure: join → spawn through a woken server: {took:.2?} ({t:?})");
    ep.stop().await;
    hub.stop().await;
}

async fn two_real_servers_share_one_port_by_the_name_typed(t: Transport) {
    if !installed() {
        return;
    }
    let certs = Certs::new();
    let (port, a, b) = (free_range(1), free_range(1), free_range(1));
    let (_held, asleep) = dead_port();
    let extra = format!(
        "{}{}{}",
        mc_service("a", port, "hosts = [\"a.test\"]\n"),
        mc_service("b", port, "hosts = [\"b.test\"]\n"),
        mc_service(
            "c",
            port,
            "hosts = [\"c.test\"]\noffline_motd = \"C is asleep\"\n"
        ),
    );
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra,
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let _sa = server(
        "mc_server.mjs",
        &[
            "--port",
            &a.to_string(),
            "--motd",
            "Server A",
            "--spawn",
            "100,5,100",
        ],
    )
    .await;
    let _sb = server(
        "mc_server.mjs",
        &[
            "--port",
            &b.to_string(),
            "--motd",
            "Server B",
            "--spawn",
            "-200,5,300",
        ],
    )
    .await;
    let svcs = vec![
        ("a".into(), local(a)),
        ("b".into(), local(b)),
        ("c".into(), asleep),
    ];
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, svcs));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    assert_eq!(mc_ping(port, "a.test").await["motd"], "Server A");
    assert_eq!(mc_ping(port, "B.TEST").await["motd"], "Server B");
    assert_eq!(mc_ping(port, "c.test").await["motd"], "C is asleep");
    let ba = bot(port, "a.test", "alex", &[]).await;
    assert_eq!(
        ba["spawned"][0].as_f64().map(f64::floor),
        Some(100.0),
        "{ba}"
    );
    let bb = bot(port, "b.test", "sam", &[]).await;
    assert_eq!(
        bb["spawned"][0].as_f64().map(f64::floor),
        Some(-200.0),
        "{bb}"
    );
    let unknown = bot(port, "nope.test", "kim", &[]).await;
    let told = unknown["kicked"].as_str().unwrap_or_default();
    assert!(
        told.contains("a.test") && told.contains("b.test"),
        "{unknown}"
    );

    // A bot plays on A while 1,000 strangers send junk or nothing.
    let playing =
        tokio::spawn(async move { bot(port, "a.test", "steady", &["--stay", "8"]).await });
    // (In the game first: strangers from its own address would take the
    // handshake slots a newcomer needs.)
    common::udp::eventually("the bot in the game", Duration::from_secs(60), || {
        hub.handle.players("a").unwrap_or(0) >= 1
    })
    .await;
    let before = hub.handle.refusals();
    let mut strangers = Vec::new();
    for i in 0..1000 {
        // One connect at a time (each then on its own): 1,000 at once
        // would overflow the listen backlog, a test artefact.
        let connected = tokio::net::TcpStream::connect(local(port)).await;
        strangers.push(tokio::spawn(async move {
            // A reset before connect returns: refused at once.
            let Ok(mut s) = connected else {
                return "reset at once";
            };
            if i % 2 == 0 {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, &[0x42; 2048]).await;
            }
            let mut buf = [0u8; 64];
            let read = tokio::io::AsyncReadExt::read(&mut s, &mut buf);
            match tokio::time::timeout(Duration::from_secs(15), read).await {
                Ok(Ok(0)) | Ok(Err(_)) => "closed",
                Ok(Ok(_)) => "answered",
                Err(_) => "left open",
            }
        }));
    }
    let mut seen = std::collections::BTreeMap::new();
    for s in strangers {
        *seen.entry(s.await.unwrap()).or_insert(0) += 1;
    }
    let stayed = playing.await.unwrap();
    assert_eq!(stayed["ok"], true, "{stayed}");
    let after = hub.handle.refusals();
    let n = |m: &std::collections::BTreeMap<&str, u64>| {
        m.get("no game handshake").copied().unwrap_or(0)
            + m.get("too many game handshakes from one address")
                .copied()
                .unwrap_or(0)
            + m.get("too many game handshakes pending")
                .copied()
                .unwrap_or(0)
    };
    println!(
        "figure: 1,000 strangers: {seen:?}; refusals counted: {}",
        n(&after) - n(&before)
    );
    assert_eq!(seen.get("left open"), None, "{seen:?}");
    assert_eq!(seen.get("answered"), None, "{seen:?}");
    assert!(n(&after) - n(&before) >= seen.get("closed").copied().unwrap_or(0));
    ep.stop().await;
    hub.stop().await;
}

async fn bedrock_ping_gets_the_offline_motd_then_the_real_one(t: Transport) {
    if !installed() {
        return;
    }
    let certs = Certs::new();
    let (port, home) = (free_range(1), free_range(1));
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: format!(
            "[services.be]\nbind = \"127.0.0.1:{port}\"\ntype = \"udp\"\ngame = \"bedrock\"\noffline_motd = \"Bedrock asleep\"\n"
        ),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let ping = || async {
        result(
            "bedrock_ping.mjs",
            &["--host", "127.0.0.1", "--port", &port.to_string()],
        )
        .await
    };
    let p = ping().await;
    assert_eq!(p["motd"], "Bedrock asleep", "{p}");
    let _srv = server(
        "bedrock_server.mjs",
        &["--port", &home.to_string(), "--motd", "Bedrock real"],
    )
    .await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("be".into(), local(home))]));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let p = ping().await;
    assert_eq!(p["motd"], "Bedrock real", "{p}");
    ep.stop().await;
    hub.stop().await;
}
