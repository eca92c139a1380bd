//! 5,000 connections of junk against each TLS port of a real hub process,
//! while a player plays and another ep logs in.

mod common;

use common::*;
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn field(line: &str, key: &str) -> String {
    let start = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
    line[start..].split_whitespace().next().unwrap().to_string()
}

async fn junk(src: String, to: SocketAddr, seed: u64) {
    if let Ok(mut s) = connect_from(&src, to).await {
        let _ = s.write_all(&random_bytes(512, seed)).await;
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_floods_cost_bounded_memory_and_disturb_no_player() {
    let certs = Certs::new();
    let file = certs.path("flood-hub.toml");
    let text = format!(
        "control = \"127.0.0.1:0\"\nchannel = \"127.0.0.1:0\"\nep_allowlist = [\"127.0.0.0/8\"]\n\
         token_hash = {:?}\n[tls]\nca = \"ca.pem\"\ncert = \"hub.pem\"\nkey = \"hub.key\"\n\
         [services.echo]\nbind = \"127.0.0.1:0\"\n[services.beta]\nbind = \"127.0.0.1:0\"\n",
        token_hash()
    );
    std::fs::write(&file, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["hub", "-c"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let hub = Child(child);
    let wait = |needle: &str| loop {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("hub log line");
        if l.contains(needle) {
            return l;
        }
    };
    let listening = wait("hub listening");
    let control: SocketAddr = field(&listening, "control").parse().unwrap();
    let channel: SocketAddr = field(&listening, "channel").parse().unwrap();
    let mut players = std::collections::HashMap::new();
    for _ in 0..2 {
        let l = wait("players welcome");
        players.insert(
            field(&l, "service"),
            field(&l, "addr").parse::<SocketAddr>().unwrap(),
        );
    }
    let echo = echo_server().await;
    let _ep = TestEp::start(ep_settings_for(
        &certs,
        control,
        channel,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    ));
    wait("ep logged in");
    let rss_before = status_kib(pid, "VmRSS:");

    // A player pings through the tunnel for the whole flood.
    let stop = Arc::new(AtomicBool::new(false));
    let (pings, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let player = {
        let (stop, pings, errors) = (stop.clone(), pings.clone(), errors.clone());
        let addr = players["echo"];
        tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut back = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let ok =
                    s.write_all(&[9u8; 64]).await.is_ok() && s.read_exact(&mut back).await.is_ok();
                if ok && back == [9u8; 64] {
                    pings.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        })
    };

    let start = Instant::now();
    let mut flood = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    for i in 0..10_000u64 {
        // Control junk from 100 "hosts"; channel junk from the ep's own
        // address (the only one that gets past the channel door to TLS).
        let (src, to) = if i % 2 == 0 {
            (format!("127.0.0.{}", 2 + (i / 2) % 100), control)
        } else {
            ("127.0.0.1".to_string(), channel)
        };
        let permit = sem.clone().acquire_owned().await.unwrap();
        flood.push(tokio::spawn(async move {
            junk(src, to, i + 1).await;
            drop(permit);
        }));
        if i == 5_000 {
            // Mid-flood, another ep logs in.
            let mut o = EpOpts::new(&certs, vec![("beta".into(), echo)]);
            o.cert = "other".into();
            let s = ep_settings_for(&certs, control, channel, &o);
            let t = Instant::now();
            let login = ferry::ep::login(&s).await;
            println!("figure: login during the flood took {:?}", t.elapsed());
            assert!(
                login.is_ok(),
                "legitimate login failed during the flood: {:?}",
                login.err()
            );
        }
    }
    for f in flood {
        f.await.unwrap();
    }
    let flood_time = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    player.await.unwrap();
    let peak = status_kib(pid, "VmHWM:");
    println!(
        "figure: 10,000 junk connections (5,000 per TLS port) in {flood_time:?}; hub RSS {rss_before} KiB before, peak {peak} KiB; player pings {} with {} errors",
        pings.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "the player noticed the flood"
    );
    assert!(pings.load(Ordering::Relaxed) > 0);
    let mut hub = hub;
    assert!(
        hub.0.try_wait().unwrap().is_none(),
        "the hub died under the flood"
    );
    assert!(peak < 64 * 1024, "hub peak RSS {peak} KiB");
    // And it still serves a new player.
    assert_eq!(echo_through(players["echo"], b"after").await, b"after");
}
