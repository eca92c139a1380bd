//! Churn soak, on demand (not in CI):
//!
//!     SOAK_MINUTES=30 cargo test --release --test soak -- --ignored --nocapture
//!
//! Players connect, move 64 KiB each way and leave, 8 at a time, for the
//! whole run; hub and ep memory and open files are sampled every 30 s and
//! must end within 10% of their level after the first sample.

mod common;

use common::{
    procs::{Ferry, HubProc},
    *,
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30-minute soak; run on demand"]
async fn churn_soak_keeps_memory_and_files_flat() {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(30.0);
    let certs = Certs::new();
    let echo = echo_server().await;
    let hub = HubProc::start(&hub_toml(&certs, &["echo"], ""), &[], 1);
    let ep = Ferry::spawn(
        "ep",
        &ep_toml(&certs, hub.control, hub.channel, &[("echo", echo)]),
        &[],
    );
    hub.proc.wait_line("ep logged in");
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let player = hub.services["echo"];
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                let data = random_bytes(64 * 1024, w + 1);
                while !stop.load(Ordering::Relaxed) {
                    if echo_through(player, &data).await == data {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(minutes * 60.0);
    let mut series = Vec::new();
    println!(
        "soak: {minutes} min; t(s), players done, failed, hub RSS KiB, hub fds, ep RSS KiB, ep fds"
    );
    loop {
        let sample = (
            start.elapsed().as_secs(),
            done.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
            hub.proc.status_kib("VmRSS:"),
            fds(hub.proc.pid()),
            ep.status_kib("VmRSS:"),
            fds(ep.pid()),
        );
        println!("soak: {sample:?}");
        series.push(sample);
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(Duration::from_secs(30).min(end - Instant::now())).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (first, last) = (series[1.min(series.len() - 1)], *series.last().unwrap());
    let within = |a: u64, b: u64| (b as f64) <= (a as f64) * 1.10 + 1024.0;
    println!("soak: first {first:?} last {last:?}");
    assert_eq!(last.2, 0, "players failed");
    assert!(
        within(first.3, last.3),
        "hub memory grew: {} → {} KiB",
        first.3,
        last.3
    );
    assert!(
        within(first.5, last.5),
        "ep memory grew: {} → {} KiB",
        first.5,
        last.5
    );
    assert!(
        last.4 <= first.4 + 8 && last.6 <= first.6 + 8,
        "file descriptors grew"
    );
}
