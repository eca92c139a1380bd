//! The QUIC transport: TCP players as streams and UDP flows as datagrams
//! over one connection, the TLS doors' refusals on the QUIC door, `auto`
//! falling back to TLS when UDP is black-holed, and a migration that keeps
//! a player's stream intact.

mod common;

use common::udp::*;
use common::*;
use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A hub with QUIC on, a TCP service `echo` and a UDP service `dns`.
async fn quic_hub(certs: &Certs, extra: &str) -> TestHub {
    let o = HubOpts {
        services: vec!["echo".into()],
        extra: format!(
            "quic = \"127.0.0.1:0\"\n{extra}[services.dns]\nbind = \"127.0.0.1:0\"\ntype = \"udp\"\n"
        ),
        ..Default::default()
    };
    TestHub::start(certs, &o).await
}

fn quic_ep(
    certs: &Certs,
    hub: &TestHub,
    services: Vec<(String, SocketAddr)>,
    transport: &str,
) -> ferry::config::ep::EpSettings {
    let mut eo = EpOpts::new(certs, services);
    eo.extra = format!(
        "transport = \"{transport}\"\nquic = \"{}\"\n",
        hub.handle.quic_addr().unwrap()
    );
    ep_settings(certs, hub, &eo)
}

async fn echo_through(to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_players_and_udp_flows_ride_one_quic_connection() {
    let certs = Certs::new();
    let hub = quic_hub(&certs, "").await;
    let (tcp_home, (udp_home, _)) = (echo_server().await, udp_echo().await);
    let settings = quic_ep(
        &certs,
        &hub,
        vec![("echo".into(), tcp_home), ("dns".into(), udp_home)],
        "quic",
    );
    let _ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    assert_eq!(hub.handle.over_quic("home"), Some(true));
    // TCP: several players at once, each a stream.
    let mut players = tokio::task::JoinSet::new();
    for i in 0..20u32 {
        let to = hub.service("echo");
        players.spawn(async move {
            let msg: Vec<u8> = (0..50_000u32).map(|j| (i + j) as u8).collect();
            assert_eq!(echo_through(to, &msg).await, msg);
        });
    }
    while let Some(r) = players.join_next().await {
        r.unwrap();
    }
    // UDP: small datagrams ride QUIC datagrams, large ones the stream;
    // every size arrives whole.
    let p = player().await;
    let to = hub.handle.service_addr("dns").unwrap();
    for size in [1usize, 1_200, 8_192, 65_507] {
        let d: Vec<u8> = (0..size).map(|i| (i * 13) as u8).collect();
        let back = ask(&p, to, &d, Duration::from_secs(10)).await;
        assert_eq!(back.as_deref(), Some(&d[..]), "size {size}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_moves_to_quic_and_falls_back_to_tls_when_udp_is_black_holed() {
    let certs = Certs::new();
    let hub = quic_hub(&certs, "").await;
    let home = echo_server().await;
    // Offered at login over TLS, QUIC is taken at once.
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), home)]);
    eo.extra = "transport = \"auto\"\n".into();
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    let mut logins = hub.handle.logins();
    tokio::time::timeout(Duration::from_secs(10), logins.wait_for(|n| *n >= 2))
        .await
        .unwrap()
        .unwrap();
    hub.wait_sessions(1).await;
    assert_eq!(hub.handle.over_quic("home"), Some(true));
    assert_eq!(echo_through(hub.service("echo"), b"quic").await, b"quic");
    ep.stop().await;
    hub.wait_sessions(0).await;
    // A QUIC address where every datagram vanishes: TLS within seconds.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    eo.extra = format!(
        "transport = \"auto\"\nquic = \"{}\"\n",
        hole.local_addr().unwrap()
    );
    let began = std::time::Instant::now();
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let took = began.elapsed();
    println!("figure: black-holed QUIC, serving over TLS after {took:?}");
    // Under wait_sessions' 20 s, over the 3 s QUIC try.
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(hub.handle.over_quic("home"), Some(false));
    assert_eq!(echo_through(hub.service("echo"), b"tls").await, b"tls");
}

/// `auto` serving over TLS because QUIC's path was silent moves to QUIC
/// once it answers again, `quic_retry` after it failed, with one login
/// beside the session; a player on a TLS channel carries on across the
/// move. Before, the session stayed on TLS for its life (days, after a
/// hub restart), whatever README said of trying QUIC again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_moves_back_to_quic_once_it_answers_again() {
    use std::sync::atomic::Ordering;
    let certs = Certs::new();
    let hub = quic_hub(&certs, "").await;
    let relay = common::udp_relay::UdpRelay::start(hub.handle.quic_addr().unwrap(), None).await;
    relay.silent.store(true, Ordering::SeqCst);
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    eo.extra = format!(
        "transport = \"auto\"\nquic = \"{}\"\nquic_retry = \"2s\"\n",
        relay.addr
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    assert_eq!(hub.handle.over_quic("home"), Some(false));
    let mut player = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    let mut buf = [0u8; 4];
    player.write_all(b"tls1").await.unwrap();
    player.read_exact(&mut buf).await.unwrap();
    let logins = *hub.handle.logins().borrow();
    relay.silent.store(false, Ordering::SeqCst);
    eventually("the session over QUIC", Duration::from_secs(20), || {
        hub.handle.over_quic("home") == Some(true)
    })
    .await;
    let moved = *hub.handle.logins().borrow() - logins;
    println!("figure: logins to move to QUIC: {moved}");
    assert_eq!(moved, 1, "one login beside the TLS session");
    player.write_all(b"tls2").await.unwrap();
    player.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"tls2");
    assert_eq!(echo_through(hub.service("echo"), b"quic").await, b"quic");
    assert_eq!(*hub.handle.sessions().borrow(), 1);
}

/// An ep on TLS under `auto` whose file is reloaded with `transport =
/// "tls"`: the QUIC login it had scheduled is not made, though QUIC
/// answers again. Before, the session's first settings held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_tls_ends_the_tries_of_quic() {
    use std::sync::atomic::Ordering;
    let certs = Certs::new();
    let hub = quic_hub(&certs, "").await;
    let relay = common::udp_relay::UdpRelay::start(hub.handle.quic_addr().unwrap(), None).await;
    relay.silent.store(true, Ordering::SeqCst);
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    let keys = |transport: &str| {
        format!(
            "transport = \"{transport}\"\nquic = \"{}\"\nquic_retry = \"4s\"\n",
            relay.addr
        )
    };
    eo.extra = keys("auto");
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let (_ep, handle) = TestEp::start_with_handle(load_ep_file(&file)).await;
    hub.wait_sessions(1).await;
    assert_eq!(hub.handle.over_quic("home"), Some(false));
    eo.extra = keys("tls");
    saved(
        &handle,
        write_ep_toml(&certs, hub.control, hub.channel, &eo),
        &file,
    )
    .await;
    let logins = *hub.handle.logins().borrow();
    relay.silent.store(false, Ordering::SeqCst);
    // Past the try it had scheduled (4 s after QUIC failed, before the
    // session began), which would log in now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(hub.handle.over_quic("home"), Some(false));
    assert_eq!(
        *hub.handle.logins().borrow(),
        logins,
        "a login after the reload"
    );
}

/// A hub restarted while an `auto` ep served over QUIC: the ep's tries
/// while it is down fail over QUIC and over TLS alike, and once it is back
/// the ep is on QUIC again. Before, a QUIC try that failed while the hub
/// was down was marked a QUIC failure, and the ep came back over TLS and
/// stayed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_ep_is_back_on_quic_after_a_hub_restart() {
    let certs = Certs::new();
    let hub = quic_hub(&certs, "").await;
    let (control, channel) = (hub.control, hub.channel);
    let quic = hub.handle.quic_addr().unwrap();
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    eo.extra = "transport = \"auto\"\n".into();
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    eventually("the session over QUIC", Duration::from_secs(20), || {
        hub.handle.over_quic("home") == Some(true)
    })
    .await;
    hub.stop().await;
    // The hub is down: its QUIC port says nothing, its control port
    // closes what it accepts. One whole try of the ep's, QUIC then TLS.
    // (The in-process hub's QUIC socket closes as quinn's driver ends,
    // a moment after its stop.)
    let began = std::time::Instant::now();
    let udp = loop {
        match tokio::net::UdpSocket::bind(quic).await {
            Ok(udp) => break udp,
            Err(e) if began.elapsed() > Duration::from_secs(10) => panic!("{quic}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let tcp = tokio::net::TcpListener::bind(control).await.unwrap();
    let mut buf = [0u8; 2048];
    udp.recv_from(&mut buf).await.unwrap();
    drop(tcp.accept().await.unwrap());
    drop((udp, tcp));
    let o = HubOpts {
        control: control.to_string(),
        channel: channel.to_string(),
        services: vec!["echo".into()],
        extra: format!(
            "quic = \"{quic}\"\n[services.dns]\nbind = \"127.0.0.1:0\"\ntype = \"udp\"\n"
        ),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &o).await;
    hub.wait_sessions(1).await;
    eventually("the session over QUIC", Duration::from_secs(15), || {
        hub.handle.over_quic("home") == Some(true)
    })
    .await;
    assert_eq!(echo_through(hub.service("echo"), b"quic").await, b"quic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_keeps_its_stream_when_the_ep_moves_to_another_port() {
    let certs = Certs::new();
    let hub = quic_hub(&certs, "").await;
    let settings = quic_ep(
        &certs,
        &hub,
        vec![("echo".into(), echo_server().await)],
        "quic",
    );
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    hub.wait_sessions(1).await;
    let mut s = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    let mut total = 0usize;
    for round in 0..40u32 {
        if round == 20 {
            // A home router re-mapping the ep's NAT port.
            handle.rebind_quic().unwrap();
        }
        let chunk: Vec<u8> = (0..8192u32).map(|j| (round * 7 + j) as u8).collect();
        s.write_all(&chunk).await.unwrap();
        let mut back = vec![0u8; chunk.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
            .await
            .expect("the stream survived the move")
            .unwrap();
        assert_eq!(back, chunk, "round {round}");
        total += back.len();
    }
    println!("figure: {total} bytes echoed across a migration");
    assert_eq!(hub.handle.sessions().borrow().to_owned(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quic_door_refuses_what_the_tls_doors_refuse() {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    ferry::certgen::revoke(certs.dir.path(), &["other".into()], &[]).unwrap();
    // No penalties here, so each refusal is seen on its own.
    let o = HubOpts {
        services: vec!["echo".into()],
        extra: "quic = \"127.0.0.1:0\"\npenalty_base = \"0s\"\npenalty_max = \"0s\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start_with_crl(&certs, &o, &crl).await;
    let quic = hub.handle.quic_addr().unwrap();
    let home = echo_server().await;
    let attempt = async |eo: &EpOpts| {
        let s = ep_settings(&certs, &hub, eo);
        ferry::ep::login_quic_once(&s, quic).await
    };
    // Wrong token.
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), home)]);
    eo.token = "not-the-token".into();
    let e = attempt(&eo).await.unwrap_err().to_string();
    assert!(e.contains("wrong token"), "{e}");
    // Revoked.
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), home)]);
    eo.cert = "other".into();
    let e = attempt(&eo).await.unwrap_err().to_string();
    assert!(
        e.contains("CertificateRevoked"),
        "{e} / hub: {:?}",
        hub.handle.refusals()
    );
    // Expired.
    issue_ep_cert(&certs, "old", Validity::Expired, false);
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), home)]);
    eo.cert = "old".into();
    let e = attempt(&eo).await.unwrap_err().to_string();
    assert!(e.contains("CertificateExpired"), "{e}");
    // A certificate from a foreign CA.
    let foreign = Certs::new();
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), home)]);
    eo.ca = certs.path("ca.pem");
    let s = {
        let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace(
                &toml_path(&certs.path("ep-home.pem")),
                &toml_path(&foreign.path("ep-home.pem")),
            )
            .replace(
                &toml_path(&certs.path("ep-home.key")),
                &toml_path(&foreign.path("ep-home.key")),
            );
        std::fs::write(&file, text).unwrap();
        load_ep_file(&file)
    };
    let e = ferry::ep::login_quic_once(&s, quic)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("rejected this ep's certificate"), "{e}");
    // No certificate at all.
    let e = no_certificate(&certs, quic).await;
    assert_eq!(e, "CertificateRequired");
    let (_, argon2) = hub.handle.argon2_runs();
    assert_eq!(argon2, 1, "only the wrong token reached Argon2");
    // Not in the allowlist: ignored before any cryptography.
    let o = HubOpts {
        services: vec!["echo".into()],
        allowlist: vec!["127.0.0.2/32".into()],
        extra: "quic = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    };
    let closed = TestHub::start(&certs, &o).await;
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), home)]);
    eo.extra = "connect_timeout = \"1s\"\n".into();
    let s = ep_settings(&certs, &closed, &eo);
    let e = ferry::ep::login_quic_once(&s, closed.handle.quic_addr().unwrap())
        .await
        .unwrap_err()
        .to_string();
    println!("figure: a stranger on the QUIC door: {e}");
    assert!(
        closed
            .handle
            .refusals()
            .get("not in ep_allowlist")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    assert_eq!(closed.handle.argon2_runs().1, 0);
}

/// A QUIC client with no certificate: the hub's answer, which may end the
/// handshake itself or come just after it (TLS 1.3).
async fn no_certificate(certs: &Certs, hub: SocketAddr) -> String {
    let endpoint = common::quic::anonymous_client(certs);
    let verdict = |e: quinn::ConnectionError| match e {
        quinn::ConnectionError::ConnectionClosed(c) => {
            let code = u64::from(c.error_code);
            match code.checked_sub(0x100) {
                Some(alert) if alert < 0x100 => {
                    format!("{:?}", rustls::AlertDescription::from(alert as u8))
                }
                _ => format!("closed with {code:#x}"),
            }
        }
        other => other.to_string(),
    };
    match endpoint.connect(hub, "localhost").unwrap().await {
        Err(e) => verdict(e),
        Ok(conn) => {
            if let Ok((mut send, mut recv)) = conn.open_bi().await {
                let _ = send.write_all(b"x").await;
                let mut b = [0u8; 1];
                let _ = recv.read(&mut b).await;
            }
            verdict(conn.closed().await)
        }
    }
}

/// Holding an ep's certificate but not its token: the hub lets such a
/// client open its one control stream and no other, holds little for it,
/// and closes the connection once the login has failed or timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_the_token_costs_little_and_is_disconnected() {
    let certs = Certs::new();
    let config = hub_toml(
        &certs,
        &["echo"],
        "quic = \"127.0.0.1:0\"\nhandshake_timeout = \"2s\"\n",
    );
    let hub = common::procs::HubProc::start(&config, &[], 1);
    let quic = hub.quic.expect("the hub's QUIC door");
    let rss0 = hub.proc.status_kib("VmRSS:");
    let client = common::quic::ep_client(&certs, "home");
    let conn = client.connect(quic, "localhost").unwrap().await.unwrap();
    let began = std::time::Instant::now();
    // As many streams as the hub allows, each pushing 64 KiB of junk; no
    // hello on any of them.
    let mut opened = 0;
    let mut pushers = tokio::task::JoinSet::new();
    while opened < 2_000 {
        match tokio::time::timeout(Duration::from_millis(300), conn.open_bi()).await {
            Ok(Ok((mut send, _recv))) => {
                opened += 1;
                pushers.spawn(async move {
                    let junk = vec![0xa5u8; 64 * 1024];
                    let _ = send.write_all(&junk).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                    drop(_recv);
                });
            }
            _ => break,
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    let took = began.elapsed();
    let peak = hub.proc.status_kib("VmHWM:");
    pushers.abort_all();
    println!(
        "figure: a client with a certificate and no token opened {opened} stream(s); hub RSS {rss0} KiB → peak {peak} KiB; disconnected after {took:?} ({:?})",
        closed.as_ref().map(|e| e.to_string())
    );
    assert!(opened <= 1, "the hub let a stranger open {opened} streams");
    assert!(
        closed.is_ok(),
        "the connection of a failed login stayed open"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(
        peak.saturating_sub(rss0) < 16 * 1024,
        "the hub grew from {rss0} KiB to {peak} KiB"
    );
}

/// A session ended on purpose (here: the ep's token hash rewritten, so it
/// logs in again) leaves no QUIC connection behind on either side: its
/// keep-alives would otherwise hold it open for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_on_purpose_leaves_no_connection_behind() {
    let certs = Certs::new();
    let creds = |hash: &str| format!("quic = \"127.0.0.1:0\"\n[eps.home]\ntoken_hash = {hash:?}\n");
    let mut o = HubOpts {
        extra: creds(token_hash()),
        ..Default::default()
    };
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let eo = Transport::Quic.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    assert_eq!(hub.handle.quic_connections(), 1);
    for round in 0..3 {
        // The same token hashed again (a fresh salt): a credential change.
        let logins = *hub.handle.logins().borrow();
        let fresh = ferry::token::hash(&ferry::secret::Secret::new(TOKEN)).unwrap();
        o.extra = creds(&fresh);
        let next = write_hub_toml(&certs, &o, None);
        std::fs::rename(next, &file).unwrap();
        let mut rx = hub.handle.logins();
        tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|n| *n > logins))
            .await
            .expect("the ep logged in again")
            .unwrap();
        eventually(
            &format!("round {round}: one QUIC connection left"),
            Duration::from_secs(10),
            || hub.handle.quic_connections() == 1,
        )
        .await;
        assert_eq!(echo_through(hub.service("echo"), b"again").await, b"again");
    }
}

/// Migration may move a session to a new port or address, but never to an
/// address outside `ep_allowlist`: nothing from there reaches the session,
/// which ends, and the ep is not served from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_cannot_take_a_session_outside_the_allowlist() {
    let certs = Certs::new();
    let hub = quic_hub(&certs, "").await; // ep_allowlist 127.0.0.1/32
    let settings = quic_ep(
        &certs,
        &hub,
        vec![("echo".into(), echo_server().await)],
        "quic",
    );
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    hub.wait_sessions(1).await;
    let mut player = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    player.write_all(b"one").await.unwrap();
    let mut back = [0u8; 3];
    player.read_exact(&mut back).await.unwrap();
    // The ep's connection moves to 127.0.0.2, an address not allowed.
    handle
        .rebind_quic_to("127.0.0.2:0".parse().unwrap())
        .unwrap();
    let _ = player.write_all(b"two").await;
    let got = tokio::time::timeout(Duration::from_secs(8), player.read(&mut back)).await;
    println!("figure: after the ep moved outside the allowlist the player read {got:?}");
    assert!(
        !matches!(got, Ok(Ok(3))),
        "the session went on from an address outside ep_allowlist"
    );
    hub.wait_sessions(0).await;
}

/// Players who arrive while the ep is away are held (`player_wait`) and
/// served by whichever session attaches first: here `auto`, which logs in
/// over TLS and moves to QUIC at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_waiting_for_an_ep_in_auto_mode_are_served() {
    let certs = Certs::new();
    let hub = quic_hub(&certs, "").await;
    let waiting: Vec<_> = (0..10u8)
        .map(|i| {
            let to = hub.service("echo");
            tokio::spawn(async move { common::echo_through(to, &[i; 100]).await })
        })
        .collect();
    let home = echo_server().await;
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), home)]);
    eo.extra = "transport = \"auto\"\n".into();
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    for (i, w) in waiting.into_iter().enumerate() {
        let back = tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .expect("a waiting player was served")
            .unwrap();
        assert_eq!(back, vec![i as u8; 100]);
    }
    assert_eq!(hub.handle.over_quic("home"), Some(true));
}

/// The ep's log says which transport it logged in over, and where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eps_log_names_its_transport_and_address() {
    let certs = Certs::new();
    let home = echo_server().await;
    let config = hub_toml(&certs, &["echo"], "quic = \"127.0.0.1:0\"\n");
    let hub = common::procs::HubProc::start(&config, &[], 1);
    let quic = hub.quic.unwrap();
    let ep_config = ep_toml(&certs, hub.control, hub.channel, &[("echo", home)]);
    let text = std::fs::read_to_string(&ep_config).unwrap();
    std::fs::write(
        &ep_config,
        format!("transport = \"quic\"\nquic = \"{quic}\"\n{text}"),
    )
    .unwrap();
    let ep = common::procs::Ferry::spawn("ep", &ep_config, &[]);
    let line = ep.wait_line("connected to hub");
    println!("figure: {line}");
    assert!(
        line.contains("transport=\"quic\"") || line.contains("transport=quic"),
        "{line}"
    );
    assert!(line.contains(&quic.to_string()), "{line}");
}

/// The ep's QUIC socket toward an IPv6 hub also reaches IPv4-mapped
/// addresses, whatever the host's `net.ipv6.bindv6only` (as quinn's own
/// client endpoint binds); an IPv4 one is plain IPv4.
#[test]
fn the_ep_s_ipv6_quic_socket_is_dual_stack() {
    let v6 = ferry::quic::client_socket("[::]:0".parse().unwrap()).unwrap();
    assert!(!socket2::SockRef::from(&v6).only_v6().unwrap());
    let v4 = ferry::quic::client_socket("0.0.0.0:0".parse().unwrap()).unwrap();
    assert!(v4.local_addr().unwrap().is_ipv4());
}

/// An ep that leaves puts its control stream down, and the hub may learn
/// it from a heartbeat that fails to be sent before it reads the stream's
/// end (a race the real ep lost now and then in CI). Either way the ep left
/// on purpose: its players keep the connection for the ep's own drain, not
/// the hub's. A scripted ep stops reading first and finishes its side only
/// once the hub has ended the session on the failed write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ep_that_stops_reading_before_it_finishes_still_left_on_purpose() {
    use ferry::proto::{HubMsg, read_msg, write_msg};
    let certs = Certs::new();
    // The scripted ep sends no heartbeats: only the failed write can end
    // its session within the test.
    let hub = quic_hub(
        &certs,
        "drain_timeout = \"1s\"\nheartbeat_timeout = \"20s\"\n",
    )
    .await;
    let client = common::quic::ep_client(&certs, "home");
    let to = hub.handle.quic_addr().unwrap();
    let conn = client.connect(to, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = hello(TOKEN, ferry::proto::PROTOCOL_VERSION);
    write_msg(&mut send, &hello).await.unwrap();
    let welcome: HubMsg = read_msg(&mut recv).await.unwrap();
    assert!(matches!(welcome, HubMsg::Welcome { .. }), "{welcome:?}");
    hub.wait_sessions(1).await;
    // A player downloading from home without end.
    let mut player = tokio::net::TcpStream::connect(hub.service("echo"))
        .await
        .unwrap();
    let (mut down, mut up) = conn.accept_bi().await.unwrap();
    let start: HubMsg = read_msg(&mut up).await.unwrap();
    assert!(matches!(start, HubMsg::Start { .. }), "{start:?}");
    tokio::spawn(async move {
        let chunk = vec![7u8; 16 * 1024];
        while down.write_all(&chunk).await.is_ok() {}
        drop(up);
    });
    let mut buf = vec![0u8; 64 * 1024];
    player.read_exact(&mut buf[..1024]).await.unwrap();
    // Leaving as a dropped quinn reader does (stop code 0), the end of the
    // ep's own side held back until the hub's heartbeat has failed on it.
    recv.stop(0u32.into()).unwrap();
    let stopped = std::time::Instant::now();
    hub.wait_sessions(0).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "the session outlived its failed heartbeat: {:?}",
        stopped.elapsed()
    );
    let left = std::time::Instant::now();
    let _ = send.finish();
    // The hub's drain is 1 s; the ep's (unknown to the hub) is longer.
    let mut flowed = 0usize;
    let end = loop {
        if left.elapsed() > Duration::from_secs(3) {
            break None;
        }
        match tokio::time::timeout(Duration::from_secs(5), player.read(&mut buf)).await {
            Ok(Ok(0)) => break Some("a clean end".to_string()),
            Ok(Ok(n)) => flowed += n,
            Ok(Err(e)) => break Some(e.to_string()),
            Err(_) => break Some("no byte for 5 s".into()),
        }
    };
    println!(
        "figure: the session ended on a failed heartbeat; the player got {flowed} bytes in {:?} after, then {end:?}",
        left.elapsed()
    );
    assert!(
        end.is_none(),
        "the player was cut off {:?} after the ep left ({end:?}): the hub took its leaving for a failure",
        left.elapsed()
    );
}

/// The hub ends a session on purpose (here: another ep took the name) and
/// says why, then puts the control stream down; over QUIC the ep can meet
/// the stop on its next heartbeat before it reads the words. It still
/// hears them: its status shows the hub's reason, not "stopped by peer",
/// and it waits for a person instead of logging in again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ep_hears_why_even_when_its_heartbeat_meets_the_stop_first() {
    use ferry::proto::{CloseKind, HubMsg, write_msg};
    let certs = Certs::new();
    let fake = common::fake_hub::FakeQuicHub::start(&certs);
    // A person is waited for at the longest backoff (15 to 30 s here).
    let settings = ep_of(&certs, &fake, "backoff_max = \"30s\"\n").await;
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    let (conn, mut send, mut recv) = fake.login().await;
    // The ep heartbeats every 200 ms (the fake's welcome): the stop meets
    // its next one; the words follow as a retransmission might, later.
    let mut beat = [0u8; 4];
    recv.read_exact(&mut beat).await.unwrap();
    recv.stop(0u32.into()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closing = HubMsg::Closing {
        reason: "another ep logged in with this certificate".into(),
        kind: Some(CloseKind::Replaced),
    };
    let _ = write_msg(&mut send, &closing).await;
    let _ = send.finish();
    let state = || {
        handle.status()["hub"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    common::udp::eventually("the ep ended the session", Duration::from_secs(10), || {
        state().starts_with("reconnecting")
    })
    .await;
    println!(
        "figure: the ep's status after the hub's stop and words: {}",
        state()
    );
    assert!(
        state().contains("another ep logged in"),
        "the ep did not hear the hub's reason: {}",
        state()
    );
    // Replaced waits for a person: no new login within a few seconds.
    let again = tokio::time::timeout(Duration::from_secs(3), fake.endpoint.accept()).await;
    assert!(again.is_err(), "the replaced ep logged in again at once");
    conn.close(0u32.into(), b"done");
}

/// A hub that puts the control stream down and says nothing more (a
/// stream stopped, never finished) holds the ep for a moment at most: the
/// ep ends the session and logs in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_stops_the_stream_and_says_nothing_does_not_hold_the_ep() {
    let certs = Certs::new();
    let fake = common::fake_hub::FakeQuicHub::start(&certs);
    let _ep = TestEp::start(ep_of(&certs, &fake, "").await);
    let (conn, _send, mut recv) = fake.login().await;
    recv.stop(0u32.into()).unwrap();
    let stopped = std::time::Instant::now();
    let again = tokio::time::timeout(Duration::from_secs(10), fake.login()).await;
    println!(
        "figure: stopped and silent, the hub had the ep back after {:?}",
        stopped.elapsed()
    );
    assert!(
        again.is_ok(),
        "the ep stayed in a session the hub had put down"
    );
    conn.close(0u32.into(), b"done");
}

/// An ep serving `echo` that logs in to `fake` over QUIC, with `extra`.
async fn ep_of(
    certs: &Certs,
    fake: &common::fake_hub::FakeQuicHub,
    extra: &str,
) -> ferry::config::ep::EpSettings {
    let mut eo = EpOpts::new(certs, vec![("echo".into(), echo_server().await)]);
    let at = fake.endpoint.local_addr().unwrap();
    eo.extra = format!("transport = \"quic\"\nquic = \"{at}\"\n{extra}");
    ep_settings_for(certs, at, at, &eo)
}

/// A login as `home` with the protocol `version` over QUIC by a client
/// that gives the hub no stream credit: nothing the hub says reaches it.
async fn stalled_login(
    certs: &Certs,
    hub: &TestHub,
    version: u32,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    (quinn::SendStream, quinn::RecvStream),
) {
    let at = hub.handle.quic_addr().unwrap();
    let mut closed = quinn::TransportConfig::default();
    closed.stream_receive_window(0u32.into());
    let client = common::quic::ep_client_with(certs, "home", closed);
    let conn = client.connect(at, "localhost").unwrap().await.unwrap();
    // Both halves kept: a receiving side dropped would tell the hub to
    // stop sending, and its writes would fail at once rather than wait.
    let (mut send, recv) = conn.open_bi().await.unwrap();
    ferry::proto::write_msg(&mut send, &hello(TOKEN, version))
        .await
        .unwrap();
    (client, conn, (send, recv))
}

/// A verified ep refused (here: a protocol version older than the hub
/// speaks) that gives the hub no stream credit cannot take its refusal: it
/// holds its login place to the deadline and is charged for it, as
/// silence is. Its certificate's next login is told it is penalised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_the_ep_will_not_take_is_charged_to_its_name() {
    use ferry::proto::{HubMsg, read_msg, write_msg};
    let certs = Certs::new();
    let hub = quic_hub(&certs, "handshake_timeout = \"1s\"\n").await;
    let at = hub.handle.quic_addr().unwrap();
    let (_client, conn, _send) = stalled_login(&certs, &hub, 0).await;
    let began = std::time::Instant::now();
    let why = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    println!(
        "figure: the stalled refusal's connection closed after {:?}: {why:?}; refusals {:?}",
        began.elapsed(),
        hub.handle.refusals()
    );
    assert!(why.is_ok(), "the login outlived its deadline");
    // The same certificate again, taking what it is told.
    let client = common::quic::ep_client(&certs, "home");
    let conn = client.connect(at, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_msg(&mut send, &hello(TOKEN, ferry::proto::PROTOCOL_VERSION))
        .await
        .unwrap();
    let said: HubMsg = read_msg(&mut recv).await.unwrap();
    println!("figure: after a refusal it would not take, the certificate was told {said:?}");
    assert!(
        matches!(&said, HubMsg::Refused { reason, .. } if reason.contains("too many failed logins")),
        "not charged: {said:?}"
    );
}

/// A client with an ep's certificate that never logs in (a stolen
/// certificate, a token rotated away) and sends a QUIC datagram a packet
/// until its login: the hub reads them from the handshake on, copying the
/// few it keeps for flows not yet open. Before, quinn kept each one until
/// the login, holding the whole packet it came in for a 32-byte charge
/// against its 4 MiB: 12 MB here for about 85,000 small packets (of the
/// 100,000 sent), about 190 MB for full-size ones, per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_before_the_login_hold_no_memory() {
    use ferry::proto::{HubMsg, read_msg, write_msg};
    let certs = Certs::new();
    let file = hub_toml(&certs, &["echo"], "quic = \"127.0.0.1:0\"\n");
    let hub = common::procs::HubProc::start(&file, &[], 1);
    let before = hub.proc.status_kib("VmHWM:");
    let client = common::quic::ep_client(&certs, "home");
    let conn = client
        .connect(hub.quic.unwrap(), "localhost")
        .unwrap()
        .await
        .unwrap();
    for n in 0..100_000u32 {
        let _ = conn.send_datagram(b"\0\0\0\x01x".to_vec().into());
        // A moment between sends for the client's driver to send each on
        // its own: quinn would put many in one packet.
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_micros(25) {
            std::hint::spin_loop();
        }
        if n % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let packets = conn.stats().path.sent_packets;
    // A login refused before its token is checked (no Argon2 memory in
    // the figure): the refusal comes after the hub has received every
    // packet before it, still before the connection ends.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_msg(&mut send, &hello(TOKEN, 0)).await.unwrap();
    let said: HubMsg = read_msg(&mut recv).await.unwrap();
    assert!(matches!(said, HubMsg::Refused { .. }), "{said:?}");
    let grew = hub.proc.status_kib("VmHWM:").saturating_sub(before);
    println!(
        "figure: {packets} packets of datagrams before a login: the hub's peak grew {grew} KiB"
    );
    assert!(grew < 6 << 10, "the hub held {grew} KiB for them");
}

/// A stream the hub opens on a connection whose session the ep ended (a
/// player there holding it open) is reset at once: its player learns, and
/// a hub that goes on opening streams there cannot make the ep hold them.
/// Without the reset the stream waited, unread, until the connection's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_connection_whose_session_ended_is_reset() {
    use ferry::proto::{CloseKind, HubMsg, write_msg};
    let certs = Certs::new();
    let fake = common::fake_hub::FakeQuicHub::start(&certs);
    let _ep = TestEp::start(ep_of(&certs, &fake, "").await);
    let (conn, mut send, _recv) = fake.login().await;
    let start = |port: u16| HubMsg::Start {
        player: format!("198.51.100.7:{port}").parse().unwrap(),
        service: None,
        udp: false,
        offset: 0,
        flow: None,
        name: Some("echo".into()),
        no_wake: false,
        pace: None,
    };
    // A player on the connection, which holds it open.
    let (mut held_send, mut held_recv) = conn.open_bi().await.unwrap();
    write_msg(&mut held_send, &start(40000)).await.unwrap();
    held_send.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    held_recv.read_exact(&mut buf).await.unwrap();
    let closing = HubMsg::Closing {
        reason: "hub shutting down".into(),
        kind: Some(CloseKind::ShuttingDown),
    };
    write_msg(&mut send, &closing).await.unwrap();
    let _ = send.finish();
    // The ep logs in anew: its session on `conn` is over.
    let _again = tokio::time::timeout(Duration::from_secs(10), fake.login())
        .await
        .expect("the ep logged in again");
    let (mut late_send, mut late_recv) = conn.open_bi().await.unwrap();
    let _ = write_msg(&mut late_send, &start(40001)).await;
    let read = tokio::time::timeout(Duration::from_secs(5), late_recv.read(&mut buf)).await;
    println!("figure: a stream on the ended session's connection: {read:?}");
    assert!(matches!(read, Ok(Err(_))), "not reset: {read:?}");
    // The player there carries on.
    held_send.write_all(b"pong").await.unwrap();
    held_recv.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

/// An ep whose login registered but which never takes its welcome (no
/// stream credit: a hub's write waits until the login's deadline) ends
/// that session; the service goes on to another ep standing by for it.
/// Before, only a session's loop handed its services on as it ended, so
/// a login dropped after it registered left the service with no ep until
/// the standby's next login. QUIC only: over TLS the welcome fits the
/// socket's buffer, so a login cannot stall on it; the hand-off is the
/// same code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_never_takes_its_welcome_hands_its_service_on() {
    let certs = Certs::new();
    let hub = quic_hub(&certs, "handshake_timeout = \"10s\"\n").await;
    let (_client, conn, _send) = stalled_login(&certs, &hub, ferry::proto::PROTOCOL_VERSION).await;
    hub.wait_logins_over(0).await;
    assert_eq!(hub.handle.served_by("echo").as_deref(), Some("home"));
    let mut o = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    o.cert = "other".into();
    let o = Transport::Quic.ep_opts(&hub, o);
    let _standby = TestEp::start(ep_settings(&certs, &hub, &o));
    hub.wait_logins_over(1).await;
    assert_eq!(
        hub.handle.served_by("echo").as_deref(),
        Some("home"),
        "the stalled login still holds it as the standby logs in"
    );
    // The stalled login's deadline (10 s) ends it.
    common::udp::eventually("the standby serves", Duration::from_secs(20), || {
        hub.handle.served_by("echo").as_deref() == Some("other")
    })
    .await;
    assert_eq!(
        echo_through(hub.service("echo"), b"handed on").await,
        b"handed on"
    );
    drop(conn);
}
