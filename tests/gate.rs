//! Junk from an ep's own address (a carrier-grade NAT neighbour, a scanner
//! on the home LAN) costs the hub a bounded amount and does not lock the
//! real ep out.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// `n` garbage connections to `to`, `parallel` at a time.
async fn junk(to: std::net::SocketAddr, n: usize, parallel: usize) {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            if let Ok(mut s) = TcpStream::connect(to).await {
                // Half send garbage, half hang up at once (a TLS error,
                // an aborted handshake).
                if i % 2 == 0 {
                    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
                }
                let _ = s.shutdown().await;
                let mut buf = [0u8; 256];
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::io::AsyncReadExt::read(&mut s, &mut buf),
                )
                .await;
            }
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_from_the_eps_own_address_does_not_lock_it_out() {
    let certs = Certs::new();
    let opts = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        // The shipped penalties: 2 s doubling to 10 minutes.
        extra: "penalty_base = \"2s\"\npenalty_max = \"10m\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    let echo = echo_server().await;
    let settings = ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    );
    let ep = TestEp::start(settings.clone());
    hub.wait_sessions(1).await;
    // The ep's address (127.0.0.1) floods both TLS ports.
    let t = Instant::now();
    tokio::join!(junk(hub.control, 3000, 32), junk(hub.channel, 2000, 32));
    let flood = t.elapsed();
    let refusals = hub.handle.refusals();
    let before_tls = refusals.get("penalised address").copied().unwrap_or(0);
    println!("figure: 5000 junk connections in {flood:?}; refusals {refusals:?}");
    // The ep restarts (a router re-dial would do the same).
    ep.stop().await;
    hub.wait_sessions(0).await;
    let logins = *hub.handle.logins().borrow();
    let t = Instant::now();
    let _ep = TestEp::start(settings);
    let mut rx = hub.handle.logins();
    let back = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|n| *n > logins)).await;
    println!(
        "figure: after the flood the ep logged in again in {:?}",
        t.elapsed()
    );
    assert!(
        back.is_ok(),
        "the real ep was locked out by its neighbours' junk"
    );
    assert!(t.elapsed() < Duration::from_secs(9));
    assert_eq!(echo_through(hub.service("echo"), b"back").await, b"back");
    // Bounded cost: most junk never reached a TLS handshake.
    assert!(before_tls >= 2500, "junk reached TLS: {refusals:?}");
}

on_every_transport!(quic_junk_from_the_eps_own_address_does_not_lock_it_out);

/// The QUIC door flooded from the ep's own address: handshakes that stall
/// after their first packet, all through the ep's restart, and handshakes
/// with no certificate before it. The ep, over either transport, is back
/// within seconds: a UDP source that never answered a retry holds no slot
/// and earns no penalty for the address it names.
async fn quic_junk_from_the_eps_own_address_does_not_lock_it_out(t: Transport) {
    use tokio_util::sync::CancellationToken;
    let certs = Certs::new();
    let opts = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        extra: "quic = \"127.0.0.1:0\"\npenalty_base = \"2s\"\npenalty_max = \"10m\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    let quic = hub.handle.quic_addr().unwrap();
    let echo = echo_server().await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), echo)]));
    let settings = ep_settings(&certs, &hub, &eo);
    let ep = TestEp::start(settings.clone());
    hub.wait_sessions(1).await;
    let stop = CancellationToken::new();
    let stalled =
        common::quic::stalled_initials(&certs, quic, Duration::from_millis(2), stop.clone());
    let anonymous =
        common::quic::anonymous_handshakes(&certs, quic, 200, CancellationToken::new()).await;
    let refusals = hub.handle.refusals();
    println!("figure ({t:?}): {anonymous} certificate-less QUIC handshakes; refusals {refusals:?}");
    ep.stop().await;
    hub.wait_sessions(0).await;
    let logins = *hub.handle.logins().borrow();
    let began = Instant::now();
    let _ep = TestEp::start(settings);
    let mut rx = hub.handle.logins();
    let back = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|n| *n > logins)).await;
    let took = began.elapsed();
    stop.cancel();
    let sent = stalled.await.unwrap();
    println!(
        "figure ({t:?}): during {sent} stalled QUIC handshakes from its address, the ep logged in again in {took:?}; refusals {:?}",
        hub.handle.refusals()
    );
    assert!(back.is_ok(), "the real ep was locked out by QUIC junk");
    assert!(took < Duration::from_secs(9), "{took:?}");
    assert_eq!(echo_through(hub.service("echo"), b"back").await, b"back");
}
