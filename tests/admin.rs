//! The admin door: Prometheus metrics a real parser reads, counters that
//! move with players, status as JSON and as a table, a token where it is
//! not loopback, and no effect on players under a flood of junk requests.

mod common;

use common::http_get as get;

use common::{procs::*, *};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Checks `text` with the Prometheus project's own Python parser; false
/// where it is not installed (`.ci/run` installs it; there it is required).
fn parses_with_prometheus_client(text: &str) -> bool {
    let check = std::process::Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output();
    if !check.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install prometheus-client (.ci/run)"
        );
        println!("skipped the parser check: python3 prometheus_client is not installed");
        return false;
    }
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
             fams = list(text_string_to_metric_families(sys.stdin.read()))\nprint(len(fams))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "figure: prometheus_client parsed {} metric families",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    true
}

fn admin_opts() -> HubOpts {
    HubOpts {
        services: vec!["echo".into(), "idle".into()],
        extra: "[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_players_come_and_go() {
    let certs = Certs::new();
    let (hub, _ep) = tunnel_with(&certs, &admin_opts(), echo_server().await).await;
    let admin = hub.admin.unwrap();
    hub.wait_sessions(1).await;
    let (code, before) = get(admin, "/metrics", None).await;
    assert_eq!(code, 200);
    parses_with_prometheus_client(&before);
    // Every configured service has its series at zero before a player.
    assert_eq!(
        sample(&before, "ferry_players_total{service=\"idle\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &before,
            "ferry_bytes_total{service=\"idle\",direction=\"up\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(&before, "ferry_argon2_checks_total{outcome=\"ok\"}"),
        1.0
    );
    assert!(
        before.contains("ferry_ep_connected{ep=\"home\",version=\""),
        "{before}"
    );
    // A player comes…
    let mut p = TcpStream::connect(hub.service("echo")).await.unwrap();
    p.write_all(&[7u8; 1000]).await.unwrap();
    let mut back = [0u8; 1000];
    p.read_exact(&mut back).await.unwrap();
    // The relay counts a chunk just after writing it: the echo may reach
    // the player a moment before the count of the last chunk lands.
    let down = "ferry_bytes_total{service=\"echo\",direction=\"down\"}";
    let mut during = String::new();
    for _ in 0..100 {
        during = get(admin, "/metrics", None).await.1;
        if sample(&during, down) == 1000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sample(&during, "ferry_players{service=\"echo\"}"), 1.0);
    assert_eq!(
        sample(
            &during,
            "ferry_bytes_total{service=\"echo\",direction=\"up\"}"
        ),
        1000.0
    );
    assert_eq!(
        sample(
            &during,
            "ferry_bytes_total{service=\"echo\",direction=\"down\"}"
        ),
        1000.0
    );
    assert_eq!(
        sample(
            &during,
            "ferry_player_first_byte_seconds_count{service=\"echo\"}"
        ),
        1.0
    );
    // …and goes.
    drop(p);
    let mut players = 1.0;
    for _ in 0..100 {
        let (_, after) = get(admin, "/metrics", None).await;
        players = sample(&after, "ferry_players{service=\"echo\"}");
        if players == 0.0 {
            assert_eq!(sample(&after, "ferry_players_total{service=\"echo\"}"), 1.0);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(players, 0.0, "the player gauge did not come down");
    let (code, status) = get(admin, "/api/status", None).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["eps"][0]["name"], "home");
    assert_eq!(v["services"][0]["name"], "echo");
    assert_eq!(v["services"][0]["players_total"], 1);
    let (code, page) = get(admin, "/", None).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<td data-k=\"name\">echo</td>"),
        "no server-side table: {page}"
    );
}

#[test]
fn a_non_loopback_admin_door_needs_a_token() {
    let certs = Certs::new();
    let file = hub_toml(&certs, &["echo"], "[admin]\nbind = \"0.0.0.0:0\"\n");
    let out = ferry_cmd()
        .args(["hub", "check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("admin.token_hash"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_checked_and_never_logged() {
    let certs = Certs::new();
    let token = "admin-secret-4242";
    let hash = ferry::token::hash(&ferry::secret::Secret::new(token)).unwrap();
    let config = hub_toml(
        &certs,
        &["echo"],
        &format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken_hash = {hash:?}\n"),
    );
    let hub = HubProc::start(&config, &[("RUST_LOG", "debug".into())], 1);
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ready_path(&config)).unwrap()).unwrap();
    let admin: SocketAddr = ready["admin"].as_str().unwrap().parse().unwrap();
    assert_eq!(get(admin, "/metrics", None).await.0, 401);
    assert_eq!(get(admin, "/metrics", Some(token)).await.0, 200);
    assert_eq!(get(admin, "/metrics", Some("wrong")).await.0, 401);
    // Verified once, the token passes the penalty the wrong one earned.
    assert_eq!(
        get(admin, "/api/status", Some(token)).await.0,
        200,
        "the cached check"
    );
    assert_eq!(
        get(admin, &format!("/api/status?token={token}"), None)
            .await
            .0,
        200
    );
    // `ferry hub status` with the token prints the table.
    let out = ferry_cmd()
        .args(["hub", "status", "--admin", &admin.to_string(), "-c"])
        .arg(&config)
        .env("FERRY_ADMIN_TOKEN", token)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    println!("figure: ferry hub status →\n{table}");
    assert!(out.status.success() && table.contains("echo"), "{table}");
    // Asking the door needs its address, nothing secret: a config whose
    // token file this user cannot read (here: gone) names it, or `--admin`
    // does without any config.
    let door_only = certs.path("door-only.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "[admin]\nbind = \"127.0.0.1:0\"",
            &format!("[admin]\nbind = \"{admin}\""),
        )
        .replace(
            &format!("token_hash = {hash:?}"),
            "token_hash_file = \"/nonexistent/admin.hash\"",
        );
    std::fs::write(&door_only, text).unwrap();
    for args in [
        vec!["-c".to_string(), door_only.display().to_string()],
        vec![
            "--admin".into(),
            admin.to_string(),
            "-c".into(),
            "/nonexistent/hub.toml".into(),
        ],
    ] {
        let out = ferry_cmd()
            .args(["hub", "status"])
            .args(&args)
            .env("FERRY_ADMIN_TOKEN", token)
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && table.contains("echo"),
            "{args:?}: {err}"
        );
    }
    hub.proc.signal("TERM");
    let mut logged = Vec::new();
    while let Some(l) = hub.proc.next_line(Duration::from_secs(20)) {
        logged.push(l);
    }
    assert!(
        !logged.iter().any(|l| l.contains(token)),
        "the token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_and_slow_admin_requests_do_not_touch_players() {
    let certs = Certs::new();
    let (hub, _ep) = tunnel_with(&certs, &admin_opts(), echo_server().await).await;
    let admin = hub.admin.unwrap();
    hub.wait_sessions(1).await;
    // 200 connections that send half a request and stall, and 500 of junk.
    let mut slow = Vec::new();
    for _ in 0..200 {
        // Beyond the door's cap of 64 a connection may be reset at once.
        if let Ok(mut s) = TcpStream::connect(admin).await {
            let _ = s.write_all(b"GET /metr").await;
            slow.push(s);
        }
    }
    let stalled = slow.len();
    for i in 0..500u64 {
        if let Ok(mut s) = TcpStream::connect(admin).await {
            let _ = s.write_all(&random_bytes(300, i)).await;
        }
    }
    // Players are untouched meanwhile.
    for round in 0..20u64 {
        let data = random_bytes(4096, round);
        assert_eq!(echo_through(hub.service("echo"), &data).await, data);
    }
    // The stalled requests are cut at the request deadline, freeing the door.
    let t = std::time::Instant::now();
    let mut cut = 0;
    for s in &mut slow {
        cut += closed_by_peer(s, Duration::from_secs(10)).await as usize;
    }
    println!(
        "figure: {stalled} stalled admin requests all closed after {:?}; players unaffected",
        t.elapsed()
    );
    assert_eq!(cut, stalled);
    assert_eq!(get(admin, "/api/status", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ep_admin_door_shows_the_hub_connection_and_services() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let echo = echo_server().await;
    let config = ep_toml(&certs, hub.control, hub.channel, &[("echo", echo)]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("[tls]", "[admin]\nbind = \"127.0.0.1:0\"\n[tls]");
    std::fs::write(&config, text).unwrap();
    let ready = ready_path(&config);
    let ep = Ferry::spawn_args(
        "ep",
        &config,
        &["--ready-file".as_ref(), ready.as_os_str()],
        &[("FERRY_LOG_FORMAT", "json".into())],
    );
    hub.wait_sessions(1).await;
    let admin: SocketAddr = loop {
        if let Some(a) = std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["admin"].as_str().map(|s| s.parse().unwrap()))
        {
            break a;
        }
        // Between looks at the file, wait for the ep's next log line.
        let _ = ep.next_line(Duration::from_millis(200));
    };
    assert_eq!(echo_through(hub.service("echo"), b"hi").await, b"hi");
    let (code, status) = get(admin, "/api/status", None).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    println!("figure: the ep's status {v}");
    assert_eq!(v["hub"][0]["state"], "connected");
    assert_eq!(v["services"][0]["local_reachable"], "yes (last dial)");
    let (_, metrics) = get(admin, "/metrics", None).await;
    assert_eq!(
        sample(
            &metrics,
            &format!("ferry_hub_connected{{hub=\"{}\"}}", hub.control)
        ),
        1.0
    );
    parses_with_prometheus_client(&metrics);
    assert!(
        metrics.contains("ferry_local_dial_seconds_count{service=\"echo\"} 1"),
        "{metrics}"
    );
    // Its history starts at start: a point per service.
    let (code, history) = get(admin, "/api/history", None).await;
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(h["every_s"], 10, "{h}");
    assert!(!h["services"]["echo"].as_array().unwrap().is_empty(), "{h}");
    // The players table is the hub's.
    assert_eq!(get(admin, "/api/players", None).await.0, 404);
    // Its logs are JSON objects, one a line (FERRY_LOG_FORMAT=json).
    let line = ep.wait_line("connected to hub");
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert!(
        parsed["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("connected")
    );
}

/// A hub whose admin door on loopback needs `token`.
async fn hub_with_admin_token(certs: &Certs, token: &str) -> (TestHub, SocketAddr) {
    let hash = ferry::token::hash(&ferry::secret::Secret::new(token)).unwrap();
    let o = HubOpts {
        extra: format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken_hash = {hash:?}\n"),
        ..Default::default()
    };
    let hub = TestHub::start(certs, &o).await;
    let admin = hub.admin.unwrap();
    (hub, admin)
}

/// GET from the local address `src`: the status, or None when the door
/// closed the connection without an answer.
async fn get_from(src: &str, addr: SocketAddr, path: &str, token: Option<&str>) -> Option<u16> {
    let mut s = connect_from(src, addr).await.ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    if read.is_err() {
        panic!("the admin door neither answered nor closed: {reply}");
    }
    reply.split(' ').nth(1)?.parse().ok()
}

/// GET as a browser sends it for a page of another site: the status.
async fn get_for_a_page(addr: SocketAddr, token: &str, (mode, dest): (&str, &str)) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "GET /?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nSec-Fetch-Site: cross-site\r\n\
         Sec-Fetch-Mode: {mode}\r\nSec-Fetch-Dest: {dest}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Any page the operator visits can make their browser ask the door with
/// a wrong token (an image, a frame, a script's fetch). Before, each one
/// earned the operator's own address a penalty, and five locked the
/// operator out of the door for as long as the page kept at it. Now such
/// requests are refused before the token is looked at; a link followed
/// from another site (a top-level page) is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_site_s_page_cannot_cost_the_operator_a_penalty() {
    let certs = Certs::new();
    let token = "admin-secret-cross-site";
    let (_hub, admin) = hub_with_admin_token(&certs, token).await;
    for (mode, dest) in [
        ("no-cors", "image"),
        ("navigate", "iframe"),
        ("cors", "empty"),
    ] {
        for n in 0..6 {
            let got = get_for_a_page(admin, &format!("wrong-{n}"), (mode, dest)).await;
            assert_eq!(got, Some(403), "{mode} {dest}");
        }
    }
    assert_eq!(
        get_from("127.0.0.1", admin, "/metrics", Some(token)).await,
        Some(200),
        "the operator was penalised by another site's page"
    );
    let link = get_for_a_page(admin, token, ("navigate", "document")).await;
    assert_eq!(link, Some(200));
}

/// A wrong token earns its source a penalty: until it is over, that source
/// is told 429 before any Argon2 run (so a stranger cannot keep the one
/// Argon2 slot busy), while a token already verified still works and other
/// sources are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_admin_token_costs_its_source_a_penalty_before_any_argon2_run() {
    let certs = Certs::new();
    let token = "admin-secret-penalty";
    let (_hub, admin) = hub_with_admin_token(&certs, token).await;
    let here = "127.0.0.1";
    assert_eq!(
        get_from(here, admin, "/metrics", Some(token)).await,
        Some(200)
    );
    assert_eq!(
        get_from(here, admin, "/metrics", Some("wrong-1")).await,
        Some(401)
    );
    let t = std::time::Instant::now();
    let penalised = get_from(here, admin, "/metrics", Some("wrong-2")).await;
    let unknown = get_from(here, admin, "/metrics", Some("another-token")).await;
    let remembered = get_from(here, admin, "/metrics", Some(token)).await;
    let elsewhere = get_from("127.0.0.2", admin, "/metrics", Some("wrong-3")).await;
    println!(
        "figure: after a wrong admin token its source got {penalised:?} and {unknown:?} within \
         {:?}; a verified token {remembered:?}; another source {elsewhere:?}",
        t.elapsed()
    );
    assert_eq!(penalised, Some(429));
    assert_eq!(unknown, Some(429));
    assert_eq!(remembered, Some(200));
    assert_eq!(elsewhere, Some(401));
}

/// While its source is penalised, a guesser gets a few tries against the
/// tokens the door remembers, then the same answer whatever it sends: the
/// right token after many guesses is not told apart from them, while
/// another source sending it gets in. (Before, every guess was checked
/// against the remembered tokens at the speed the guesser could connect.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_penalised_source_cannot_test_guesses_against_a_remembered_token() {
    let certs = Certs::new();
    let token = "admin-secret-guessed";
    let (_hub, admin) = hub_with_admin_token(&certs, token).await;
    assert_eq!(
        get_from("127.0.0.1", admin, "/metrics", Some(token)).await,
        Some(200),
        "the operator's token, now remembered"
    );
    let guesser = "127.0.0.3";
    assert_eq!(
        get_from(guesser, admin, "/metrics", Some("guess-0")).await,
        Some(401)
    );
    let mut told = Vec::new();
    for i in 1..=10 {
        let guess = format!("guess-{i}");
        told.push(get_from(guesser, admin, "/metrics", Some(&guess)).await);
    }
    let right = get_from(guesser, admin, "/metrics", Some(token)).await;
    let elsewhere = get_from("127.0.0.4", admin, "/metrics", Some(token)).await;
    println!(
        "figure: 10 guesses got {told:?}; then the right token {right:?}, from elsewhere {elsewhere:?}"
    );
    assert!(told.iter().all(|t| *t == Some(429)), "{told:?}");
    assert_eq!(right, Some(429), "the right token was told apart");
    assert_eq!(elsewhere, Some(200));
}

/// Strangers from ever new addresses (an IPv6 /48 holds 65,536 /64s, each
/// a source of its own) keep the one Argon2 slot busy: the operator's
/// token, not yet remembered (a restart, a rotation), waits its turn and
/// gets in. Before, it was told "busy" at once, struck, and then held off
/// as a guesser for as long as the strangers kept on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_gets_in_while_strangers_keep_argon2_busy() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let certs = Certs::new();
    let token = "admin-secret-busy";
    let (_hub, admin) = hub_with_admin_token(&certs, token).await;
    let (stop, answered) = (
        tokio_util::sync::CancellationToken::new(),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut strangers = tokio::task::JoinSet::new();
    for i in 0..24u32 {
        let (stop, answered) = (stop.clone(), answered.clone());
        strangers.spawn(async move {
            let mut n = 0u32;
            while !stop.is_cancelled() {
                n += 1;
                let src = format!("127.{}.{}.{}", 40 + i, n / 250 % 250, n % 250 + 1);
                get_from(&src, admin, "/metrics", Some("wrong")).await;
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    common::udp::eventually(
        "the strangers were answered",
        Duration::from_secs(30),
        || answered.load(Ordering::Relaxed) >= 48,
    )
    .await;
    let t = std::time::Instant::now();
    let first = get_from("127.0.0.1", admin, "/metrics", Some(token)).await;
    let waited = t.elapsed();
    let again = get_from("127.0.0.1", admin, "/metrics", Some(token)).await;
    stop.cancel();
    while strangers.join_next().await.is_some() {}
    println!(
        "figure: with 24 strangers keeping Argon2 busy the operator's first login got {first:?} \
         after {waited:?}, the next {again:?}; strangers answered {}",
        answered.load(Ordering::Relaxed)
    );
    assert_eq!(first, Some(200), "the operator was turned away");
    assert_eq!(again, Some(200));
}

/// One source cannot hold the door with requests it never finishes:
/// beyond a few waiting connections its newest takes the place of its
/// oldest, which is reset, so its own next request and another source's
/// both get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_hold_the_admin_door_with_unfinished_requests() {
    let certs = Certs::new();
    let token = "admin-secret-slots";
    let (_hub, admin) = hub_with_admin_token(&certs, token).await;
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut s = connect_from("127.0.0.1", admin).await.unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n").await;
        stalled.push(s);
    }
    let same = get_from("127.0.0.1", admin, "/metrics", Some(token)).await;
    let other = get_from("127.0.0.2", admin, "/metrics", Some(token)).await;
    let reset = reset_by_peer(stalled, Duration::from_secs(2)).await;
    let reset = reset.iter().filter(|r| **r).count();
    println!(
        "figure: of 16 stalled requests from one source the door reset {reset}; \
         its next request got {same:?}, another source {other:?}"
    );
    assert_eq!(reset, 9, "at most 8 wait per source, the oldest give way");
    assert_eq!(same, Some(200));
    assert_eq!(other, Some(200));
}

/// What an ep says its version is becomes a metric label: only a short,
/// plain string is kept, and an ep's series goes when the ep does, so eps
/// that come and go (or lie) cannot grow the hub's metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eps_version_label_is_bounded_and_gone_with_the_ep() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &admin_opts()).await;
    let admin = hub.admin.unwrap();
    let mut tls = raw_control(&certs, &hub).await;
    let software = "x".repeat(10_000);
    let hello = ferry::proto::EpMsg::Hello {
        version: ferry::proto::PROTOCOL_VERSION,
        token: ferry::secret::Secret::new(TOKEN),
        services: vec!["echo".into()],
        features: ferry::proto::features(),
        software: Some(software.clone()),
        shapes: Default::default(),
    };
    ferry::proto::write_msg(&mut tls, &hello).await.unwrap();
    let welcome: ferry::proto::HubMsg = ferry::proto::read_msg(&mut tls).await.unwrap();
    assert!(
        matches!(welcome, ferry::proto::HubMsg::Welcome { .. }),
        "{welcome:?}"
    );
    hub.wait_sessions(1).await;
    let (_, during) = get(admin, "/metrics", None).await;
    let line = during
        .lines()
        .find(|l| l.starts_with("ferry_ep_connected{ep=\"home\""))
        .expect("the ep's series")
        .to_string();
    println!("figure: a 10,000-character version became: {line}");
    assert!(line.len() < 100, "{line}");
    drop(tls);
    hub.wait_sessions(0).await;
    let (_, after) = get(admin, "/metrics", None).await;
    assert!(
        !after.contains("ferry_ep_connected{ep=\"home\""),
        "the gone ep's series stayed: {after}"
    );
}

/// A web page elsewhere that rebinds its own name to 127.0.0.1 cannot
/// read a door without a token (who plays, from where): only a request
/// naming the door by an address (or `localhost`) is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_without_a_token_answers_only_requests_that_name_it_by_address() {
    let certs = Certs::new();
    let (hub, _ep) = tunnel_with(&certs, &admin_opts(), echo_server().await).await;
    let admin = hub.admin.unwrap();
    let ask = |host: String| async move {
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        let req = format!("GET /api/players HTTP/1.1\r\nHost: {host}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        reply.split(' ').nth(1).unwrap().to_string()
    };
    assert_eq!(ask("evil.example".into()).await, "403");
    assert_eq!(ask(format!("evil.example:{}", admin.port())).await, "403");
    assert_eq!(ask(admin.to_string()).await, "200");
    assert_eq!(ask(format!("localhost:{}", admin.port())).await, "200");
    assert_eq!(ask("[::1]:80".into()).await, "200");
    // Health checks name the door as they like.
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: hub.example\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
