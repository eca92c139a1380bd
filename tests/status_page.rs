//! The status page in a real headless browser (Debian's Chromium, driven
//! by playwright-core; `.ci/run` installs both): it loads without console
//! errors, shows the service, and its player count follows a player in
//! and out without a reload.

mod common;

use common::*;
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
};

/// Whether the browser and its driver are here; in CI they must be.
fn browser_ready(dir: &Path) -> bool {
    let ok = dir.join("node_modules/playwright-core").exists()
        && Path::new("/usr/bin/chromium").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and tests/browser's packages (.ci/run)"
        );
        println!("skipped: chromium or tests/browser/node_modules missing (.ci/run installs them)");
    }
    ok
}

/// The browser driver's folder and a hub with an admin door and one ep
/// serving `echo`; None (skipped) without a browser.
async fn page_hub() -> Option<(std::path::PathBuf, TestHub, (TestEp, Certs))> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !browser_ready(&dir) {
        return None;
    }
    let certs = Certs::new();
    let opts = HubOpts {
        extra: "[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    };
    let (hub, ep) = tunnel_with(&certs, &opts, echo_server().await).await;
    hub.wait_sessions(1).await;
    // The certificates' folder lives as long as the ep that reads it.
    Some((dir, hub, (ep, certs)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_a_player_live_in_a_real_browser() {
    let Some((dir, hub, _ep)) = page_hub().await else {
        return;
    };
    // Kept out of git: target/ is ignored.
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let mut driver = Command::new("node")
        .arg(dir.join("status_page.mjs"))
        .arg(format!("http://{}/", hub.admin.unwrap()))
        .arg("echo")
        .arg(&shot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut stdin = driver.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = driver.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let next = || {
        let v = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the browser driver went quiet");
        assert_ne!(v["event"], "failed", "{v}");
        v
    };
    assert_eq!(next()["players"], "0");
    let player = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    writeln!(stdin, "connected").unwrap();
    let one = next();
    println!("figure: the page showed {one} while a player was connected");
    assert_eq!(one["players"], "1");
    drop(player);
    writeln!(stdin, "left").unwrap();
    assert_eq!(next()["players"], "0");
    let mut done = next();
    if done["event"] == "note" {
        println!("figure: {}", done["note"]);
        done = next();
    }
    assert_eq!(done["event"], "done");
    assert_eq!(done["errors"], serde_json::json!([]), "console errors");
    drop(stdin);
    assert!(driver.wait().unwrap().success());
    println!("figure: screenshot at {}", shot.display());
}

/// A host opens the page after 30 s of traffic: the chart already shows
/// those 30 s (the hub's history), and the players table the player.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_opened_late_shows_the_traffic_before_it_in_a_real_browser() {
    let Some((dir, hub, _ep)) = page_hub().await else {
        return;
    };
    let admin = hub.admin.unwrap();
    let began = std::time::Instant::now();
    let mut player = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    // A player trickling 1 KiB each 100 ms for 30 s, and until the hub's
    // history holds three 10 s points of it.
    let mut buf = vec![0u8; 1024];
    loop {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        player.write_all(&buf).await.unwrap();
        player.read_exact(&mut buf).await.unwrap();
        let (_, body) = http_get(admin, "/api/history", None).await;
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        let busy = h["services"]["echo"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["up"].as_u64() > Some(0))
            .count();
        if busy >= 3 && began.elapsed() >= std::time::Duration::from_secs(30) {
            break;
        }
        assert!(began.elapsed() < std::time::Duration::from_secs(60), "{h}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "figure: traffic for {:?} before the page opened",
        began.elapsed()
    );
    let out = Command::new("node")
        .arg(dir.join("history_page.mjs"))
        .arg(format!("http://{admin}/"))
        .output()
        .expect("node");
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("the driver's report");
    println!("figure: the page drew {v}");
    assert_eq!(v["event"], "done", "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "console errors");
    let past: u64 = v["traffic"]["pastPoints"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let secs: u64 = v["traffic"]["seconds"].as_str().unwrap().parse().unwrap();
    assert!(
        past >= 3,
        "the chart drew {past} points of traffic from before the page"
    );
    assert!(secs >= 30, "the chart spans {secs} s");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["service"], "echo");
    assert!(
        rows[0]["player_hub_ms"].as_str().unwrap().ends_with(" ms"),
        "{v}"
    );
    assert!(
        rows[0]["hub_ep_ms"].as_str().unwrap().ends_with(" ms"),
        "{v}"
    );
    drop(player);
}
