//! Revocation that fails closed: a `crl.pem` that holds no revocation list
//! signed by the CA (emptied, cut short, DER, a certificate pasted by
//! mistake, another CA's list) is refused at start and ignored by a running
//! hub, which keeps the list it had; a `tls.crl` added by a reload is
//! followed; an enrolled ep is revoked by name.

mod common;

use common::*;
use std::{path::Path, time::Duration};

fn ferry(args: &[&str], dir: &Path) -> (bool, String) {
    let mut all = args.to_vec();
    all.push(dir.to_str().unwrap());
    procs::run(&all)
}

/// Writes `bytes` over the followed list and waits until the hub has read
/// it.
async fn replace_crl(hub: &TestHub, crl: &Path, bytes: &[u8]) {
    let mut reads = hub.handle.crl_reads();
    let before = *reads.borrow();
    let tmp = crl.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, crl).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reads.wait_for(|n| *n > before))
        .await
        .expect("the hub read the changed list")
        .unwrap();
}

on_every_transport!(a_crl_file_without_a_crl_of_the_ca_keeps_revoked_eps_out);

async fn a_crl_file_without_a_crl_of_the_ca_keeps_revoked_eps_out(t: Transport) {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    let hub = TestHub::start_with_crl(&certs, &t.hub_opts(HubOpts::default()), &crl).await;
    let home = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    // Not revoked yet: in over this transport.
    let before = t.login_once(&ep_settings(&certs, &hub, &home), &hub).await;
    assert!(before.is_ok(), "{before:?}");
    let (ok, text) = ferry(
        &["hub", "revoke", "--ep", "home", "--dir"],
        certs.dir.path(),
    );
    assert!(ok, "{text}");
    let good = std::fs::read(&crl).unwrap();
    // Read once by the running hub: the revoked ep is refused.
    replace_crl(&hub, &crl, &good).await;
    let refused = t.login_once(&ep_settings(&certs, &hub, &home), &hub).await;
    assert!(refused.is_err());
    // Another CA's list, for the mistakes a person makes with files.
    let other = tempfile::tempdir().unwrap();
    let (ok, text) = ferry(&["hub", "gen-cert", "--dir"], other.path());
    assert!(ok, "{text}");
    let foreign = std::fs::read(other.path().join("crl.pem")).unwrap();
    // What `openssl crl -outform der` would write.
    let der = {
        use rustls::pki_types::{CertificateRevocationListDer, pem::PemObject};
        CertificateRevocationListDer::from_pem_slice(&good)
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let cases: [(&str, Vec<u8>); 5] = [
        ("emptied", Vec::new()),
        ("cut short", good[..good.len() / 2].to_vec()),
        ("DER", der),
        (
            "a certificate",
            std::fs::read(certs.path("ca.pem")).unwrap(),
        ),
        ("another CA's list", foreign),
    ];
    for (what, bytes) in cases {
        replace_crl(&hub, &crl, &bytes).await;
        let r = t.login_once(&ep_settings(&certs, &hub, &home), &hub).await;
        println!("figure: {t:?}: crl.pem {what}: the revoked ep's login → {r:?}");
        assert!(r.is_err(), "{what}: the revoked ep got back in");
    }
    // A hub starting on such a file refuses to start, naming it.
    std::fs::write(&crl, b"").unwrap();
    let settings = hub_settings_crl(&certs, &HubOpts::default(), Some(&crl));
    let err = match ferry::hub::Hub::bind(settings).await {
        Ok(_) => panic!("a hub started with revocation off"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("holds no revocation list"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_counts_the_revoked_and_a_crl_added_by_reload_is_followed() {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    // Started without `tls.crl`.
    let o = HubOpts::default();
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let home = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    let _ep = TestEp::start(ep_settings(&certs, &hub, &home));
    hub.wait_sessions(1).await;
    // A reload adds it.
    let mut reloads = hub.handle.reloads();
    let before = reloads.borrow().0;
    let with_crl = write_hub_toml(&certs, &o, Some(&crl));
    std::fs::rename(with_crl, &file).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        reloads.wait_for(|(n, _)| *n > before),
    )
    .await
    .expect("reloaded")
    .unwrap();
    // The next revocation reaches the running hub.
    let (ok, text) = ferry(
        &["hub", "revoke", "--ep", "home", "--dir"],
        certs.dir.path(),
    );
    assert!(ok, "{text}");
    tokio::time::timeout(Duration::from_secs(10), hub.wait_sessions(0))
        .await
        .expect("the revoked ep's session closed");
    let out = procs::ferry_cmd()
        .args(["hub", "check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 certificate(s) revoked"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_ep_is_revoked_by_its_name() {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    let (door, game) = (common::udp::free_range(1), common::udp::free_range(1));
    let o = HubOpts {
        services: vec![],
        extra: format!(
            "[enrol]\nbind = \"127.0.0.1:{door}\"\n[services.game]\nbind = \"127.0.0.1:{game}\"\n"
        ),
        ..Default::default()
    };
    let settings = hub_settings_crl(&certs, &o, Some(&crl));
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let out = procs::ferry_cmd()
        .args(["hub", "invite", "--ep", "cabin", "--service", "game", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ferry ep join "))
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().to_path_buf();
    let joined = tokio::task::spawn_blocking(move || {
        procs::ferry_cmd()
            .args(["ep", "join", &line, "--dir"])
            .arg(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        joined.status.success(),
        "{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    let config = home.path().join("ep.toml");
    let echo = echo_server().await;
    let written = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        written.replace(&format!("127.0.0.1:{game}\""), &format!("{echo}\"")),
    )
    .unwrap();
    let settings = ferry::config::ep::EpConfig::load(&config, Default::default())
        .unwrap()
        .check(&config)
        .unwrap();
    let _ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    // Its certificate was never on the hub: the enrolment record names it.
    let (ok, text) = ferry(
        &["hub", "revoke", "--ep", "cabin", "--dir"],
        certs.dir.path(),
    );
    println!("figure: ferry hub revoke --ep cabin said: {}", text.trim());
    assert!(ok, "{text}");
    tokio::time::timeout(Duration::from_secs(10), hub.wait_sessions(0))
        .await
        .expect("the enrolled ep's session closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_will_not_rewrite_a_list_it_cannot_read() {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    let (ok, text) = ferry(
        &["hub", "revoke", "--ep", "home", "--dir"],
        certs.dir.path(),
    );
    assert!(ok, "{text}");
    // The list is emptied by mistake; the next revocation must not start a
    // new list that forgets `home`.
    std::fs::write(&crl, b"").unwrap();
    let (ok, text) = ferry(
        &["hub", "revoke", "--ep", "other", "--dir"],
        certs.dir.path(),
    );
    println!("figure: revoke over an emptied list said: {}", text.trim());
    assert!(!ok && text.contains("holds no revocation list"), "{text}");
    assert_eq!(std::fs::read(&crl).unwrap(), b"", "the file was rewritten");
}
