//! 5,000 connections of junk against each TLS port of a real hub process,
//! while a player plays and another ep logs in.

mod common;

use common::{procs::HubProc, *};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let mut hub = HubProc::start(&hub_toml(&certs, &["echo", "beta"], ""), &[], 2);
    let (control, channel) = (hub.control, hub.channel);
    let echo = echo_server().await;
    let _ep = TestEp::start(ep_settings_for(
        &certs,
        control,
        channel,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    ));
    hub.proc.wait_line("ep logged in");
    let rss_before = hub.proc.status_kib("VmRSS:");

    // A player pings through the tunnel for the whole flood.
    let stop = Arc::new(AtomicBool::new(false));
    let (pings, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let player = {
        let (stop, pings, errors) = (stop.clone(), pings.clone(), errors.clone());
        let addr = hub.services["echo"];
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
    let peak = hub.proc.status_kib("VmHWM:");
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
    assert!(hub.proc.alive(), "the hub died under the flood");
    assert!(peak < 64 * 1024, "hub peak RSS {peak} KiB");
    // And it still serves a new player.
    assert_eq!(echo_through(hub.services["echo"], b"after").await, b"after");
}
