//! What an idle UDP flow holds after a burst: no buffer of its busiest
//! moment, on the hub or at home. Alone in its binary so that the process's
//! resident memory is this test's, and run with one glibc malloc arena:
//! with one per thread, memory a burst freed on one thread is not reused
//! by the next flow's burst on another, and the figure would measure the
//! allocator's caching rather than what a flow keeps.

mod common;

use common::udp::*;
use common::*;
use std::time::Duration;

/// This process's resident memory, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A player who sends three large datagrams at once (as many as a socket's
/// default buffer holds), gets them back, and then stays, silent.
async fn burst_then_idle(to: std::net::SocketAddr) -> tokio::net::UdpSocket {
    let p = player().await;
    for i in 0..3u8 {
        p.send_to(&vec![i; 50_000], to).await.unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), p.recv_from(&mut buf))
            .await
            .expect("the burst echoed")
            .unwrap();
    }
    p
}

#[test]
fn an_idle_flow_keeps_nothing_of_its_burst() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(measure());
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_idle_flow_keeps_nothing_of_its_burst",
            "--nocapture",
        ])
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn measure() {
    for t in [Transport::Tls, Transport::Quic] {
        let certs = Certs::new();
        let (home, _) = udp_echo().await;
        let opts = HubOpts {
            service_extra: "type = \"udp\"\n".into(),
            ..Default::default()
        };
        let (hub, ep) = tunnel_over(&certs, t, opts, home).await;
        hub.wait_sessions(1).await;
        let to = hub.service("echo");
        // Warm the allocator and the pool before the baseline.
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(burst_then_idle(to).await);
        }
        let before = rss_kib();
        const FLOWS: u64 = 100;
        for _ in 0..FLOWS {
            held.push(burst_then_idle(to).await);
        }
        assert_eq!(hub.handle.udp_flows("echo"), Some(held.len()));
        let per_flow = rss_kib().saturating_sub(before) / FLOWS;
        println!(
            "figure: {t:?}: {per_flow} KiB resident per idle flow after a 150 KB burst (hub and ep)"
        );
        // The burst was 150 KB each way; kept, it would be ~360 KiB.
        assert!(per_flow < 96, "{t:?}: {per_flow} KiB per idle flow");
        drop(held);
        ep.stop().await;
        hub.stop().await;
    }
}
