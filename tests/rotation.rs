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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotated_during_a_login_leaves_no_session_on_the_old_token() {
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
        ..Default::default()
    };
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    // Whoever holds the leaked token logs in…
    let mut tls = raw_control(&certs, &hub).await;
    let hello = ferry::proto::EpMsg::Hello {
        version: ferry::proto::PROTOCOL_VERSION,
        token: ferry::secret::Secret::new(TOKEN),
        services: vec!["echo".into()],
        features: ferry::proto::features(),
        software: None,
        shapes: Default::default(),
    };
    ferry::proto::write_msg(&mut tls, &hello).await.unwrap();
    // …while the operator rotates it.
    let began = Instant::now();
    let reloads = hub.handle.reloads().borrow().0;
    let rotated =
        ferry::token::hash(&ferry::secret::Secret::new("the-new-token-0123456789")).unwrap();
    o.extra = creds(&rotated);
    std::fs::rename(write_hub_toml(&certs, &o, None), &file).unwrap();
    let mut rx = hub.handle.reloads();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|(n, _)| *n > reloads))
        .await
        .expect("the hub reloaded")
        .unwrap();
    let reloaded_after = began.elapsed();
    let answer: Result<ferry::proto::HubMsg, _> =
        tokio::time::timeout(Duration::from_secs(30), ferry::proto::read_msg(&mut tls))
            .await
            .expect("the hub answered the login");
    println!(
        "figure: Argon2 of the old hash ~{argon2:?}; reload applied {reloaded_after:?} into the login; the hub answered {answer:?}"
    );
    // Whatever the order, no session on the old token lives on: refused
    // at registration, or registered first and then closed by the sweep.
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
                "a session on the rotated-out token lived on"
            );
        }
        other => panic!("unexpected answer {other:?}"),
    }
    assert_eq!(*hub.handle.sessions().borrow(), 0);
}
