//! The player door under a flood: 10,000 connections from 50 loopback
//! addresses at one service's port, while a player streams on another
//! service and an ep holds its session.

mod common;

use common::{procs::*, *};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Some(()) if the player from `src` was admitted (greeted), None if refused.
async fn player(src: String, to: SocketAddr) -> Option<()> {
    let mut s = connect_from(&src, to).await.ok()?;
    let mut b = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(30), s.read(&mut b)).await {
        Ok(Ok(1)) => Some(()),
        _ => None,
    }
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_from_fifty_addresses_take_channels_only_for_admitted_players() {
    let certs = Certs::new();
    let (game, dials) = counting_greeter().await;
    let chat = echo_server().await;
    // The example limits, hub-wide.
    let config = hub_toml(
        &certs,
        &["game", "chat"],
        "[players]\nmax_players_per_ip = 8\nplayer_rate_per_ip = \"30/min\"\nban_for = \"10m\"\n",
    );
    let hub = HubProc::start(&config, &[], 2);
    let _ep = Ferry::spawn(
        "ep",
        &ep_toml(
            &certs,
            hub.control,
            hub.channel,
            &[("game", game), ("chat", chat)],
        ),
        &[],
    );
    hub.proc.wait_line("ep logged in");
    let pid = hub.proc.pid();
    // A player streaming on the other service the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let (chat_addr, halt) = (hub.services["chat"], stop.clone());
    let streamer = tokio::spawn(async move {
        let mut s = TcpStream::connect(chat_addr).await.unwrap();
        let (mut rounds, mut errors) = (0u64, 0u64);
        let mut buf = vec![0u8; 1024];
        while !halt.load(Ordering::Relaxed) {
            let data = random_bytes(1024, rounds);
            if s.write_all(&data).await.is_err()
                || s.read_exact(&mut buf).await.is_err()
                || buf != data
            {
                errors += 1;
                break;
            }
            rounds += 1;
        }
        (rounds, errors)
    });
    // Peak open files, sampled while the flood runs.
    let (sampling, peak_files) = (stop.clone(), Arc::new(AtomicUsize::new(0)));
    let peak = peak_files.clone();
    let sampler = tokio::spawn(async move {
        while !sampling.load(Ordering::Relaxed) {
            peak.fetch_max(open_files(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let t = Instant::now();
    let target = hub.services["game"];
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::new();
    for round in 0..200 {
        for a in 1..=50 {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let src = format!("127.0.2.{a}");
            tasks.push(tokio::spawn(async move {
                let r = player(src, target).await;
                drop(permit);
                r
            }));
            let _ = round;
        }
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap().is_some() as usize;
    }
    let flood = t.elapsed();
    // A banned address is refused before any channel is taken; a second
    // address is served meanwhile.
    let before = dials.load(Ordering::Relaxed);
    assert!(
        player("127.0.2.1".into(), target).await.is_none(),
        "a banned address was served"
    );
    assert!(
        player("127.0.3.1".into(), target).await.is_some(),
        "a fresh address was not served"
    );
    let taken = dials.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (rounds, errors) = streamer.await.unwrap();
    sampler.await.unwrap();
    let hwm = hub.proc.status_kib("VmHWM:");
    hub.proc.signal("TERM");
    let summary = hub.proc.wait_line("hub stopped");
    println!(
        "figure: 10,000 connections from 50 addresses in {flood:?}: {admitted} admitted, channels taken {taken} \
         (admitted + 1 fresh), hub peak RSS {:.1} MiB, peak open files {}; streaming player {rounds} rounds, {errors} errors",
        hwm as f64 / 1024.0,
        peak_files.load(Ordering::Relaxed)
    );
    println!(
        "figure: {}",
        summary.split("refusals=").nth(1).unwrap_or(&summary)
    );
    assert_eq!(errors, 0, "the streaming player was disturbed");
    assert_eq!(
        taken,
        before + 1,
        "the banned address's attempt reached home"
    );
    assert_eq!(
        taken,
        admitted + 1,
        "channels were taken for refused players"
    );
    assert!(
        admitted <= 50 * 30,
        "more admitted than the rate allows: {admitted}"
    );
}
