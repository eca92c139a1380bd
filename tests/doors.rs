//! The hub's doors under hostile input. Each test prints its figure.

mod common;

use common::*;
use ferry::{
    ep::LoginError,
    proto::{self, EpMsg, HubMsg},
};
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_beyond_the_caps_are_bounded_and_closed_at_the_deadline() {
    let certs = Certs::new();
    let opts = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        // A deadline the 60 connections all arrive within, however loaded
        // the machine: none of the first 20 gives its place back before
        // the last comes.
        extra: "handshake_timeout = \"3s\"\nmax_pending_auth = 20\nmax_pending_per_source = 4\n"
            .into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    // 10 sources × 6 silent connections: 60 tries against a cap of 20 (4 each).
    let mut conns = Vec::new();
    for src in 2..12 {
        for _ in 0..6 {
            conns.push(
                connect_from(&format!("127.0.0.{src}"), hub.control)
                    .await
                    .unwrap(),
            );
        }
    }
    let start = Instant::now();
    let mut closed = 0;
    for c in &mut conns {
        closed += closed_by_peer(c, Duration::from_secs(10)).await as usize;
    }
    let peak = hub.handle.peak_pending_logins();
    println!(
        "figure: 60 silent connections, peak pending {peak} (cap 20), all closed after {:?}",
        start.elapsed()
    );
    assert_eq!(closed, 60, "every silent connection was closed");
    assert!(peak <= 20, "pending logins {peak} exceeded the cap");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "closed at the 3 s deadline, not later"
    );
    // The last slot is given back just after its connection is closed.
    common::udp::eventually("no login pending", Duration::from_secs(10), || {
        hub.handle.pending_logins() == 0
    })
    .await;
    let r = hub.handle.refusals();
    println!("figure: refusals {r:?}");
    let turned: u64 = [
        "too many logins pending",
        "too many logins pending from one address",
    ]
    .iter()
    .map(|k| r.get(k).copied().unwrap_or(0))
    .sum();
    assert_eq!(turned, 40, "the 40 over the cap were turned away at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbled_client_hello_is_cut_at_the_overall_deadline() {
    let certs = Certs::new();
    let opts = HubOpts {
        extra: "handshake_timeout = \"1s\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    let mut s = tokio::net::TcpStream::connect(hub.control).await.unwrap();
    // A TLS record header promising a long ClientHello, then a byte every 100 ms.
    let start = Instant::now();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
    let mut alive = true;
    while alive && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        alive = s.write_all(&[0x01]).await.is_ok()
            && !closed_by_peer(&mut s, Duration::from_millis(1)).await;
    }
    println!(
        "figure: dribbling client cut after {:?} (deadline 1 s)",
        start.elapsed()
    );
    assert!(!alive);
    // Any bound under the loop's 20 s tells a deadline for the whole
    // handshake from one per read (which the dribble would never meet).
    assert!(start.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_client_is_refused() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in ferry::tls::load_certs(&certs.path("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            ferry::tls::load_certs(&certs.path("ep-home.pem")).unwrap(),
            ferry::tls::load_key(&certs.path("ep-home.key")).unwrap(),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(hub.control).await.unwrap();
    let r = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await;
    let err = r.expect_err("TLS 1.2 handshake succeeded");
    println!("figure: TLS 1.2 client refused: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_server_auth_certificates_are_refused_and_the_ep_says_why() {
    let certs = Certs::new();
    issue_ep_cert(&certs, "old", Validity::Expired, false);
    issue_ep_cert(&certs, "wrongusage", Validity::Now, true);
    for name in ["old", "wrongusage"] {
        // A refusal penalises 127.0.0.1, so each case gets a fresh hub.
        let hub = TestHub::start(&certs, &HubOpts::default()).await;
        let mut o = EpOpts::new(&certs, vec![("echo".into(), hub.control)]);
        o.cert = name.into();
        let err = login_error(&ep_settings(&certs, &hub, &o)).await;
        println!("figure: {name} certificate → {err}");
        assert!(
            matches!(err, LoginError::OwnCertificate(_)),
            "{name}: {err}"
        );
        assert_eq!(
            hub.handle.argon2_runs().1,
            0,
            "no Argon2 before a valid certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_ep_is_refused_and_its_session_closed_without_restart() {
    let certs = Certs::new();
    // A list revoking some other serial, so the hub starts with a CRL.
    ferry::certgen::revoke(certs.dir.path(), &[], &["01".into()]).unwrap();
    let echo = echo_server().await;
    let hub = TestHub::start_with_crl(&certs, &HubOpts::default(), &certs.path("crl.pem")).await;
    let settings = ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    );
    let _ep = TestEp::start(settings.clone());
    hub.wait_sessions(1).await;
    let start = Instant::now();
    ferry::certgen::revoke(certs.dir.path(), &["home".into()], &[]).unwrap();
    hub.wait_sessions(0).await;
    println!(
        "figure: revoked ep's session closed {:?} after the CRL was written",
        start.elapsed()
    );
    let err = login_error(&settings).await;
    println!("figure: revoked ep's next login → {err}");
    assert!(matches!(err, LoginError::OwnCertificate(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_wrong_tokens_in_parallel_stay_within_the_argon2_bound() {
    let certs = Certs::new();
    let opts = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        extra: "max_pending_per_source = 256\n".into(),
        ..Default::default()
    };
    let echo = echo_server().await;
    let hub = TestHub::start(&certs, &opts).await;
    let _ep = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    ));
    hub.wait_sessions(1).await;
    // The attacker holds a valid certificate but not the token, from 127.0.0.9.
    let mut bad = EpOpts::new(&certs, vec![("echo".into(), echo)]);
    bad.cert = "other".into();
    bad.token = "guess".into();
    let bad = ep_settings(&certs, &hub, &bad);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let s = bad.clone();
            let control = hub.control;
            tokio::spawn(async move { wrong_token_attempt(&s, control).await })
        })
        .collect();
    let mut outcomes = std::collections::BTreeMap::new();
    for t in tasks {
        *outcomes.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    let (peak, runs) = hub.handle.argon2_runs();
    println!(
        "figure: 200 wrong-token logins → {outcomes:?}; Argon2 runs {runs}, at most {peak} at once (limit 2)"
    );
    assert!(peak <= 2);
    assert!(
        runs < 200,
        "penalties and the semaphore cut the work: {runs} runs"
    );
    // The failures are charged to the certificate that failed, not to the
    // address: its next login is refused before any Argon2 run.
    let again = wrong_token_attempt(&bad, hub.control).await;
    assert!(again.contains("too many failed logins"), "{again}");
    assert_eq!(
        hub.handle.argon2_runs().1,
        runs,
        "a penalised identity cost an Argon2 run"
    );
    // The established ep never noticed.
    assert_eq!(*hub.handle.sessions().borrow(), 1);
    assert_eq!(
        echo_through(hub.service("echo"), b"unaffected").await,
        b"unaffected"
    );
}

/// One login from 127.0.0.9 with the given (wrong) settings; the outcome.
async fn wrong_token_attempt(
    s: &ferry::config::ep::EpSettings,
    control: std::net::SocketAddr,
) -> String {
    let Ok(tcp) = connect_from("127.0.0.9", control).await else {
        return "connect failed".into();
    };
    let connector = tokio_rustls::TlsConnector::from(ferry::tls::EpTls::load(s).unwrap().client);
    let Ok(mut tls) = connector.connect(s.hubs[0].server_name.clone(), tcp).await else {
        return "closed before TLS".into();
    };
    let hello = EpMsg::Hello {
        version: proto::PROTOCOL_VERSION,
        token: s.token.clone(),
        services: vec!["echo".into()],
        features: vec![],
        software: None,
        shapes: Default::default(),
    };
    if proto::write_msg(&mut tls, &hello).await.is_err() {
        return "closed".into();
    }
    match proto::read_msg::<_, HubMsg>(&mut tls).await {
        Ok(HubMsg::Refused { reason, retry, .. }) => {
            if retry && !reason.contains("too many failed logins") {
                "busy".into()
            } else {
                reason
            }
        }
        Ok(other) => panic!("a wrong token got {other:?}"),
        Err(_) => "closed".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_allowlisted_source_with_valid_credentials_costs_no_argon2() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await; // allows 127.0.0.1 only
    let good = by_hand(&certs, &hub);
    for _ in 0..20 {
        let r = wrong_token_attempt(&good, hub.control).await; // from 127.0.0.9
        assert_eq!(r, "closed before TLS");
    }
    println!(
        "figure: 20 logins from a non-allowlisted address, Argon2 runs {}",
        hub.handle.argon2_runs().1
    );
    assert_eq!(hub.handle.argon2_runs().1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_tickets_replayed_foreign_or_from_elsewhere_are_refused() {
    let certs = Certs::new();
    let opts = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    let settings = by_hand(&certs, &hub);
    // Log in by hand to see the tickets the hub issues.
    let (ctrl, _) = ferry::ep::login(&settings).await.unwrap();
    let (mut rd, _wr) = tokio::io::split(ctrl);
    let ticket = loop {
        match proto::read_msg::<_, HubMsg>(&mut rd).await.unwrap() {
            HubMsg::Open { ticket, .. } => break ticket,
            _ => continue,
        }
    };
    let channel = hub.channel.to_string();
    let present = |ticket: String| {
        let settings = settings.clone();
        let channel = channel.clone();
        async move {
            let mut tls = ferry::ep::connect_for_tests(&settings, &channel).await;
            let msg = EpMsg::Channel {
                service: "echo".into(),
                ticket,
            };
            proto::write_msg(&mut tls, &msg).await.unwrap();
            tls
        }
    };
    let _first = present(ticket.clone()).await; // legitimate use
    let mut replay = present(ticket.clone()).await;
    let mut buf = [0u8; 16];
    assert_eq!(
        replay.read(&mut buf).await.unwrap_or(0),
        0,
        "replayed ticket accepted"
    );
    let mut forged = present("00".repeat(32)).await;
    assert_eq!(
        forged.read(&mut buf).await.unwrap_or(0),
        0,
        "forged ticket accepted"
    );
    // From another address: the channel door drops it before TLS.
    let mut elsewhere = connect_from("127.0.0.3", hub.channel).await.unwrap();
    assert!(closed_by_peer(&mut elsewhere, Duration::from_secs(2)).await);
    let refused = hub.handle.refusals();
    println!("figure: ticket refusals {refused:?}");
    assert!(refused.get("channel refused").copied().unwrap_or(0) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_out_of_order_closes_only_that_connection() {
    let certs = Certs::new();
    let (hub, _ep) = echo_tunnel(&certs).await;
    let mut tls = raw_control(&certs, &hub).await;
    let msg = EpMsg::Channel {
        service: "echo".into(),
        ticket: "x".into(),
    };
    proto::write_msg(&mut tls, &msg).await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(tls.read(&mut buf).await.unwrap_or(0), 0);
    assert_eq!(echo_through(hub.service("echo"), b"fine").await, b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_ep_logs_in_while_strangers_fill_the_pending_cap() {
    let certs = Certs::new();
    let opts = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        services: vec!["echo".into(), "beta".into()],
        // The strangers' deadline far beyond what a loaded machine takes
        // to turn one away or log one in.
        extra: "max_pending_auth = 4\nmax_pending_per_source = 2\nhandshake_timeout = \"20s\"\n"
            .into(),
        ..Default::default()
    };
    let echo = echo_server().await;
    let hub = TestHub::start(&certs, &opts).await;
    let _ep = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), echo)]),
    ));
    hub.wait_sessions(1).await; // 127.0.0.1 is now a proven address
    // Strangers hold every place of the global cap with silent connections.
    let mut silent = Vec::new();
    for src in ["127.0.0.2", "127.0.0.3"] {
        for _ in 0..2 {
            silent.push(connect_from(src, hub.control).await.unwrap());
        }
    }
    let mut turned = connect_from("127.0.0.4", hub.control).await.unwrap();
    assert!(
        closed_by_peer(&mut turned, Duration::from_secs(10)).await,
        "cap not full"
    );
    let mut o = EpOpts::new(&certs, vec![("beta".into(), echo)]);
    o.cert = "other".into();
    let t = Instant::now();
    let login = ferry::ep::login(&ep_settings(&certs, &hub, &o)).await;
    println!(
        "figure: with the pending cap full of strangers, a proven address logged in after {:?}",
        t.elapsed()
    );
    assert!(login.is_ok(), "{:?}", login.err());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "waited for the strangers' deadline"
    );
    drop(silent);
}

on_every_transport!(an_ep_logging_in_again_and_again_costs_one_argon2_run);

/// An ep that logs in again and again with its token (a flapping line, or
/// an ep doing it on purpose to keep the few Argon2 slots busy so other
/// eps' logins are told "busy") costs one Argon2 run: the token is
/// remembered with the hash it matched. A wrong token still costs a run,
/// and a rotated hash (tests/reload.rs) no longer matches what was kept.
async fn an_ep_logging_in_again_and_again_costs_one_argon2_run(t: Transport) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let o = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), hub.control)]),
    );
    let s = ep_settings(&certs, &hub, &o);
    for _ in 0..10 {
        t.login_once(&s, &hub).await.unwrap();
    }
    let (_, runs) = hub.handle.argon2_runs();
    println!("figure ({t:?}): 10 logins of one ep with its token: {runs} Argon2 run(s)");
    assert_eq!(runs, 1);
    let mut wrong = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), hub.control)]),
    );
    wrong.token = "not-the-token-0123456789".into();
    assert!(
        t.login_once(&ep_settings(&certs, &hub, &wrong), &hub)
            .await
            .is_err()
    );
    assert_eq!(hub.handle.argon2_runs().1, 2);
}

on_every_transport!(a_certificate_without_its_token_that_goes_silent_is_penalised_by_name);

/// A certificate that completes TLS and then sends nothing (a leaked key
/// without its token, or a broken ep) is charged under its own name: its
/// next logins are refused at once until the penalty is over, so it cannot
/// keep holding its address's login places, while another ep from the same
/// address logs in.
async fn a_certificate_without_its_token_that_goes_silent_is_penalised_by_name(t: Transport) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), hub.control)]),
    );
    let s = ep_settings(&certs, &hub, &eo);
    match t {
        Transport::Tls => {
            let tcp = tokio::net::TcpStream::connect(hub.control).await.unwrap();
            let connector =
                tokio_rustls::TlsConnector::from(ferry::tls::EpTls::load(&s).unwrap().client);
            let mut tls = connector
                .connect(s.hubs[0].server_name.clone(), tcp)
                .await
                .unwrap();
            // Half a frame's length, then gone.
            tls.write_all(&[0]).await.unwrap();
            tls.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
        }
        Transport::Quic => {
            let quic = hub.handle.quic_addr().unwrap();
            let client = common::quic::ep_client(&certs, "home");
            // The handshake, then gone without a control stream.
            let conn = client.connect(quic, "localhost").unwrap().await.unwrap();
            conn.close(0u32.into(), b"gone");
            client.wait_idle().await;
        }
    }
    // Counted once the hub has charged it.
    common::udp::eventually("the failed login counted", Duration::from_secs(10), || {
        hub.handle.refusals().values().sum::<u64>() > 0
    })
    .await;
    let again = t.login_once(&s, &hub).await;
    println!("figure ({t:?}): the silent certificate's next login: {again:?}");
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.contains("too many failed logins")),
        "{again:?}"
    );
    let mut other = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), hub.control)]),
    );
    other.cert = "other".into();
    let other = ep_settings(&certs, &hub, &other);
    assert!(t.login_once(&other, &hub).await.is_ok());
}

on_every_transport!(a_refused_handshake_is_counted_before_its_peer_sees_the_close);

on_every_transport!(a_told_refusal_is_counted_before_the_ep_hears_it);

/// A handshake refused (junk where TLS belongs, or silence past the
/// deadline) is in the counts by the time its peer sees the connection
/// close: an ep's operator, a test or a monitor reading them then sees
/// why, at the control door and (over TLS) at the channel door. Junk
/// still gets the TLS alert saying why, then a clean close. (Refusals
/// after a verified certificate, told to the ep, are not covered here.)
async fn a_refused_handshake_is_counted_before_its_peer_sees_the_close(t: Transport) {
    let certs = Certs::new();
    let opts = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        extra: "handshake_timeout = \"1s\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep) = tunnel_over(&certs, t, opts, echo_server().await).await;
    hub.wait_sessions(1).await;
    let count = |reason: &str| hub.handle.refusals().get(reason).copied().unwrap_or(0);
    // An HTTP request with a body: more than the hub reads before it
    // knows this is no TLS, so only a close that drains what is left
    // lets the alert arrive (a socket dropped unread sends a reset).
    let junk = [&b"POST / HTTP/1.1\r\n\r\n"[..], &[b'x'; 16 * 1024]].concat();
    let probes: Vec<(&str, SocketAddr, &[u8], &str)> = match t {
        // Each control probe from an address of its own, so none is
        // turned away by the penalty the one before earned; channels
        // come from where the ep is logged in (silence first: the junk
        // then takes the penalised address's probation slot).
        Transport::Tls => vec![
            ("127.0.0.5", hub.control, b"", "login timeout"),
            ("127.0.0.6", hub.control, &junk, "TLS handshake failed"),
            ("127.0.0.1", hub.channel, b"", "channel refused"),
            ("127.0.0.1", hub.channel, &junk, "channel refused"),
        ],
        Transport::Quic => vec![],
    };
    for (from, door, junk, reason) in probes {
        let before = count(reason);
        let mut s = connect_from(from, door).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut read = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut read)).await;
        assert!(end.is_ok(), "not closed within 10 s");
        if !junk.is_empty() {
            // A TLS alert record (type 21), and a close, not a reset.
            assert!(end.unwrap().is_ok(), "reset instead of closed");
            assert_eq!(read.first(), Some(&21), "no TLS alert: {read:?}");
        }
        let after = count(reason);
        let what = if junk.is_empty() { "silence" } else { "junk" };
        println!("figure ({t:?}): {what} to {door} from {from}: {reason:?} {before} -> {after}");
        assert_eq!(
            after,
            before + 1,
            "{reason:?} not counted when the peer saw the close"
        );
    }
    if t == Transport::Quic {
        // A certificate that completes the handshake and opens no stream.
        let quic = hub.handle.quic_addr().unwrap();
        let client = common::quic::ep_client(&certs, "other");
        let before = count("login timeout");
        let conn = client.connect(quic, "localhost").unwrap().await.unwrap();
        let why = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("closed at the 1 s deadline");
        let after = count("login timeout");
        println!(
            "figure ({t:?}): a silent QUIC login closed ({why}): login timeout {before} -> {after}"
        );
        assert_eq!(
            after,
            before + 1,
            "the timeout not counted when the peer saw the close"
        );
    }
}

/// A login refused after the certificate was verified (here: a wrong
/// token) is told to the ep only once the hub has counted it: an operator
/// who reads the refusal in the ep's log and then looks at the hub finds
/// it there. (Over QUIC the hub used to count only once the ep had let go
/// of the stream, up to a second later.)
async fn a_told_refusal_is_counted_before_the_ep_hears_it(t: Transport) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let count = || {
        hub.handle
            .refusals()
            .get("wrong token")
            .copied()
            .unwrap_or(0)
    };
    let hello = hello("not-the-token-0123456789", proto::PROTOCOL_VERSION);
    let before = count();
    // Counted while the connection is still held open by the ep.
    let (said, after) = match t {
        Transport::Tls => {
            let mut tls = raw_control(&certs, &hub).await;
            proto::write_msg(&mut tls, &hello).await.unwrap();
            let said: HubMsg = proto::read_msg(&mut tls).await.unwrap();
            (said, count())
        }
        Transport::Quic => {
            let client = common::quic::ep_client(&certs, "home");
            let at = hub.handle.quic_addr().unwrap();
            let conn = client.connect(at, "localhost").unwrap().await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            proto::write_msg(&mut send, &hello).await.unwrap();
            let said: HubMsg = proto::read_msg(&mut recv).await.unwrap();
            (said, count())
        }
    };
    println!("figure ({t:?}): told {said:?}; wrong token {before} -> {after} when heard");
    assert!(matches!(said, HubMsg::Refused { .. }), "{said:?}");
    assert_eq!(
        after,
        before + 1,
        "the refusal was heard before it was counted"
    );
}
