//! A rotation catches logins already in flight: a token hash (or the
//! allowlist, or the CRL) changed while a login's Argon2 check runs leaves
//! no session on the old credential, whichever of the two finishes first.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// An Argon2id hash of `token` slow enough (seconds) that a reload lands
/// while the hub verifies it.
fn slow_hash(token: &str) -> String {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version, password_hash::SaltString};
    let params = Params::new(64 * 1024, 40, 1, None).unwrap();
    let salt = SaltString::encode_b64(b"ferry-rotation-test").unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(token.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// What changes while the login's Argon2 check runs.
#[derive(Debug, Clone, Copy)]
enum Rotation {
    Token,
    Allowlist,
    Revocation,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotated_during_a_login_leaves_no_session_on_the_old_token() {
    rotated_during_a_login(Rotation::Token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_dropped_from_the_allowlist_during_a_login_gets_no_session() {
    rotated_during_a_login(Rotation::Allowlist).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_during_a_login_gets_no_session() {
    rotated_during_a_login(Rotation::Revocation).await
}

async fn rotated_during_a_login(change: Rotation) {
    let certs = Certs::new();
    // A long heartbeat timeout: a session that should not exist must not
    // end by itself before the test looks.
    let creds =
        |hash: &str| format!("heartbeat_timeout = \"30s\"\n[eps.home]\ntoken_hash = {hash:?}\n");
    let t = Instant::now();
    let slow = slow_hash(TOKEN);
    let argon2 = t.elapsed();
    let mut o = HubOpts {
        extra: creds(&slow),
        allowlist: vec!["127.0.0.0/8".into()],
        ..Default::default()
    };
    let crl = certs.path("crl.pem");
    let settings = hub_settings_crl(&certs, &o, Some(&crl));
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    // Whoever holds the leaked token (or key) logs in…
    let mut tls = raw_control(&certs, &hub).await;
    let hello = hello(TOKEN, ferry::proto::PROTOCOL_VERSION);
    ferry::proto::write_msg(&mut tls, &hello).await.unwrap();
    // …while the operator rotates it.
    let began = Instant::now();
    let reloads = hub.handle.reloads().borrow().0;
    let mut rx = hub.handle.reloads();
    match change {
        Rotation::Token => {
            let rotated =
                ferry::token::hash(&ferry::secret::Secret::new("the-new-token-0123456789"))
                    .unwrap();
            o.extra = creds(&rotated);
        }
        // The ep's control connection comes from 127.0.0.1.
        Rotation::Allowlist => o.allowlist = vec!["127.0.0.2/32".into()],
        Rotation::Revocation => {
            let (ok, text) = procs::run(&[
                "hub",
                "revoke",
                "--ep",
                "home",
                "--dir",
                certs.dir.path().to_str().unwrap(),
            ]);
            assert!(ok, "{text}");
        }
    }
    let revoked = matches!(change, Rotation::Revocation);
    if !revoked {
        let next = write_hub_toml(&certs, &o, Some(&crl));
        std::fs::rename(next, &file).unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|(n, _)| *n > reloads))
            .await
            .expect("the hub reloaded")
            .unwrap();
    }
    let applied_after = began.elapsed();
    let answer: Result<ferry::proto::HubMsg, _> =
        tokio::time::timeout(Duration::from_secs(30), ferry::proto::read_msg(&mut tls))
            .await
            .expect("the hub answered the login");
    println!(
        "figure ({change:?}): Argon2 of the old hash ~{argon2:?}; change made {applied_after:?} into the login; the hub answered {answer:?}"
    );
    // Whatever the order, no session on the old credential lives on:
    // refused at registration, or registered first and then closed by the
    // sweep.
    match answer {
        Ok(ferry::proto::HubMsg::Refused { .. }) => {}
        Ok(ferry::proto::HubMsg::Welcome { .. }) => {
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match ferry::proto::read_msg::<_, ferry::proto::HubMsg>(&mut tls).await {
                        Ok(ferry::proto::HubMsg::Closing { .. }) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(
                closed.is_ok(),
                "a session on the rotated-out credential lived on"
            );
        }
        other => panic!("unexpected answer {other:?}"),
    }
    assert_eq!(*hub.handle.sessions().borrow(), 0);
}

on_every_transport!(replacing_a_token_hash_file_is_a_rotation);

/// The hub follows the files its configuration names, not only hub.toml:
/// a token hash file replaced (synced from another hub, say) ends the
/// sessions of the old token and admits the new one, with no edit to
/// hub.toml and no signal.
async fn replacing_a_token_hash_file_is_a_rotation(t: Transport) {
    let certs = Certs::new();
    let hash_file = certs.path("home.hash");
    std::fs::write(&hash_file, token_hash()).unwrap();
    let o = t.hub_opts(HubOpts {
        extra: format!("[eps.home]\ntoken_hash_file = {}\n", toml_path(&hash_file)),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let echo = echo_server().await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), echo)]));
    let old = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let reloads = hub.handle.reloads().borrow().0;

    // The new hash, written the way sync tools do: a new file renamed over.
    let new_token = "a-brand-new-token-0123456789";
    let new_hash = ferry::token::hash(&ferry::secret::Secret::new(new_token)).unwrap();
    let tmp = certs.path("home.hash.new");
    std::fs::write(&tmp, &new_hash).unwrap();
    std::fs::rename(&tmp, &hash_file).unwrap();
    let mut seen = hub.handle.reloads();
    let reloaded = tokio::time::timeout(
        Duration::from_secs(20),
        seen.wait_for(|(n, _)| *n > reloads),
    )
    .await;
    assert!(reloaded.is_ok(), "no reload after the token file changed");
    let outcome = hub.handle.reloads().borrow().1.clone();
    assert!(outcome.is_ok(), "{outcome:?}");
    hub.wait_sessions(0).await;

    // The old token is refused now; the new one logs in.
    let mut eo_new = t.ep_opts(&hub, EpOpts::new(&certs, vec![("echo".into(), echo)]));
    eo_new.token = new_token.into();
    let refused = t.login_once(&ep_settings(&certs, &hub, &eo), &hub).await;
    assert!(refused.is_err(), "the old token still logs in");
    old.stop().await;
    let new = TestEp::start(ep_settings(&certs, &hub, &eo_new));
    hub.wait_sessions(1).await;
    assert_eq!(echo_through(hub.service("echo"), b"hi").await, b"hi");
    new.stop().await;
    hub.stop().await;
}

on_every_transport!(a_new_ca_closes_the_sessions_of_certificates_it_did_not_issue);

/// The hub's CA replaced in place (its certificate and key with it): an
/// ep whose certificate the new CA did not issue is closed, rather than
/// left looking served while (over TLS) every channel it opens is refused
/// and players wait in vain.
async fn a_new_ca_closes_the_sessions_of_certificates_it_did_not_issue(t: Transport) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let fresh = Certs::new();
    for f in ["hub.key", "hub.pem", "ca.pem"] {
        let tmp = certs.path(&format!("{f}.new"));
        std::fs::copy(fresh.path(f), &tmp).unwrap();
        std::fs::rename(&tmp, certs.path(f)).unwrap();
    }
    hub.wait_sessions(0).await;
}

on_every_transport!(an_ep_certificate_issued_through_an_intermediate_serves);

/// A user's own PKI issues ep certificates through an intermediate CA and
/// the ep presents both: it logs in, serves, and a CA bundle replacing
/// `tls.ca` (a rollover) that still holds its root leaves it served.
async fn an_ep_certificate_issued_through_an_intermediate_serves(t: Transport) {
    let certs = Certs::new();
    issue_ep_cert_via_intermediate(&certs, "home2");
    let hub = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let mut eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    eo.cert = "home2".into();
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    assert_eq!(echo_through(hub.service("echo"), b"hi").await, b"hi");
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(certs.path("ca.pem")).unwrap(),
        std::fs::read_to_string(Certs::new().path("ca.pem")).unwrap()
    );
    let outcome = hub
        .reload_after(|| {
            let tmp = certs.path("ca.pem.new");
            std::fs::write(&tmp, bundle).unwrap();
            std::fs::rename(&tmp, certs.path("ca.pem")).unwrap();
        })
        .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(*hub.handle.sessions().borrow(), 1, "the ep's session stays");
    assert_eq!(echo_through(hub.service("echo"), b"hi").await, b"hi");
}

on_every_transport!(a_login_whose_handshake_spans_a_new_ca_gets_no_session);

/// Where a relay holds what its first client sends once the server has
/// answered, until `release`: a handshake begun, not finished.
struct Held {
    addr: std::net::SocketAddr,
    /// The server answered the first client.
    spoke: tokio::sync::watch::Receiver<bool>,
    release: tokio::sync::watch::Sender<bool>,
}

/// A TCP relay to `to` holding its first connection's client bytes once
/// the server sent any.
async fn held_tcp(to: std::net::SocketAddr) -> Held {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (spoke_tx, spoke) = tokio::sync::watch::channel(false);
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = tokio::net::TcpStream::connect(to).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let hold = std::mem::take(&mut first);
            let (tx, mut released) = (spoke_tx.clone(), released.clone());
            let said = spoke_tx.subscribe();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = sr.read(&mut buf).await {
                    if hold {
                        tx.send_replace(true);
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = cr.read(&mut buf).await {
                    if hold && *said.borrow() {
                        let _ = released.wait_for(|r| *r).await;
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Held {
        addr,
        spoke,
        release,
    }
}

/// A login whose TLS handshake began under the old CA and finished after
/// the reload that replaced it (the reload's sweep ran before the session
/// existed, and the handshake was verified by the old CA) gets no session:
/// it is refused as it registers. Before, the hub took the CA in force
/// after the handshake for the one that verified it and let it in.
async fn a_login_whose_handshake_spans_a_new_ca_gets_no_session(t: Transport) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    let (mut held, settings) = match t {
        Transport::Tls => {
            let held = held_tcp(hub.control).await;
            eo.extra = t.ep_extra(None);
            let s = ep_settings_for(&certs, held.addr, hub.channel, &eo);
            (held, s)
        }
        Transport::Quic => {
            let quic = hub.handle.quic_addr().unwrap();
            let relay = common::udp_relay::UdpRelay::start(quic, Some(400)).await;
            let held = Held {
                addr: relay.addr,
                spoke: relay.spoke,
                release: relay.release,
            };
            eo.extra = t.ep_extra(Some(held.addr));
            (held, ep_settings(&certs, &hub, &eo))
        }
    };
    let (mut reloads, mut sessions) = (hub.handle.reloads(), hub.handle.sessions());
    let reloaded = reloads.borrow().0;
    let _ep = TestEp::start(settings);
    tokio::time::timeout(Duration::from_secs(10), held.spoke.wait_for(|s| *s))
        .await
        .expect("the handshake began")
        .unwrap();
    let fresh = Certs::new();
    for f in ["hub.key", "hub.pem", "ca.pem"] {
        let tmp = certs.path(&format!("{f}.new"));
        std::fs::copy(fresh.path(f), &tmp).unwrap();
        std::fs::rename(&tmp, certs.path(f)).unwrap();
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        reloads.wait_for(|(n, _)| *n > reloaded),
    )
    .await
    .expect("the hub reloaded")
    .unwrap();
    let refused = |h: &TestHub| h.handle.refusals().values().sum::<u64>();
    let before = refused(&hub);
    held.release.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), async {
        while refused(&hub) == before && *sessions.borrow_and_update() == 0 {
            let _ = tokio::time::timeout(Duration::from_millis(50), sessions.changed()).await;
        }
    })
    .await
    .expect("the login ended one way or the other");
    assert_eq!(
        *hub.handle.sessions().borrow(),
        0,
        "a session under the old CA"
    );
    assert_eq!(
        *hub.handle.logins().borrow(),
        0,
        "{:?}",
        hub.handle.refusals()
    );
}

on_every_transport!(a_player_waiting_across_a_token_rotation_stays_with_the_new_login);

/// An ep's token rotated in hub.toml while one player is on its service
/// `a` and another waits for `b`, which no ep serves yet; the ep logs in
/// with the new token, serving both. The first player goes at the drain's
/// end (its session had the old token); the one that waited, carried by
/// the new login, carries on. Before 65875ac it was cut as well: it had
/// arrived before the reload.
async fn a_player_waiting_across_a_token_rotation_stays_with_the_new_login(t: Transport) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The new login's Argon2 check takes a second or more in a debug build.
    const DRAIN: Duration = Duration::from_secs(4);
    let certs = Certs::new();
    let creds = |hash: &str| {
        t.hub_opts(HubOpts {
            services: vec!["a".into(), "b".into()],
            extra: format!(
                "drain_timeout = \"{}s\"\n[eps.home]\ntoken_hash = {hash:?}\n",
                DRAIN.as_secs()
            ),
            ..Default::default()
        })
    };
    let settings = hub_settings(&certs, &creds(token_hash()));
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &creds(token_hash())).await;
    let (a, b) = (echo_server().await, echo_server().await);
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("a".into(), a)]));
    let old = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let mut buf = [0u8; 4];
    let mut first = tokio::net::TcpStream::connect(hub.service("a"))
        .await
        .unwrap();
    first.write_all(b"ping").await.unwrap();
    first.read_exact(&mut buf).await.unwrap();
    let mut waiting = tokio::net::TcpStream::connect(hub.service("b"))
        .await
        .unwrap();
    waiting.write_all(b"ping").await.unwrap();
    common::udp::eventually("a player waiting for b", Duration::from_secs(10), || {
        hub.handle.players("b") == Some(1)
    })
    .await;
    let new_token = "a-brand-new-token-0123456789";
    let new_hash = ferry::token::hash(&ferry::secret::Secret::new(new_token)).unwrap();
    let outcome = hub.reload_to(&certs, &creds(&new_hash), &file).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    let rotated = std::time::Instant::now();
    // Its stop waits for its player, cut at the drain's end.
    let old = tokio::spawn(old.stop());
    let mut eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("a".into(), a), ("b".into(), b)]),
    );
    eo.token = new_token.into();
    let _new = TestEp::start(ep_settings(&certs, &hub, &eo));
    waiting.read_exact(&mut buf).await.unwrap();
    if rotated.elapsed() >= DRAIN {
        // Carried after the drain's end: nothing left to tell.
        println!(
            "figure: too slow a machine to tell ({:?})",
            rotated.elapsed()
        );
        return;
    }
    let read = tokio::time::timeout(DRAIN * 3, first.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the old session's player stayed: {read:?}"
    );
    while rotated.elapsed() < DRAIN + Duration::from_secs(1) {
        let _ = waiting.write_all(b"ping").await;
        let read = tokio::time::timeout(Duration::from_secs(5), waiting.read_exact(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "the player the new login carries was cut {:?} after the rotation: {read:?}",
            rotated.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    old.await.unwrap();
}
