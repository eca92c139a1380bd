//! Eps and strangers the hub must refuse, each with the reason the ep sees.

mod common;

use common::*;
use ferry::{
    certgen::GenCert,
    ep::LoginError,
    proto::{self, EpMsg, HubMsg},
};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn other_ca() -> Certs {
    Certs::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ep_certificate_from_another_ca_is_refused() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let foreign = other_ca();
    // The ep trusts the right CA but holds a certificate from another.
    let mut o = EpOpts::new(&foreign, vec![("echo".into(), hub.control)]);
    o.ca = certs.path("ca.pem");
    let err = login_error(&ep_settings(&foreign, &hub, &o)).await;
    assert!(matches!(err, LoginError::OwnCertificate(_)), "{err}");
    assert!(
        err.to_string().contains("rejected this ep's certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_certificate_from_another_ca_is_refused_by_the_ep() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let foreign = other_ca();
    let mut o = EpOpts::new(&certs, vec![("echo".into(), hub.control)]);
    o.ca = foreign.path("ca.pem");
    let err = login_error(&ep_settings(&certs, &hub, &o)).await;
    assert!(matches!(err, LoginError::HubCertificate(_)), "{err}");
    assert!(err.to_string().contains("not trusted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_with_the_reason() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let mut o = EpOpts::new(&certs, vec![("echo".into(), hub.control)]);
    o.token = "not-the-token".into();
    let err = login_error(&ep_settings(&certs, &hub, &o)).await;
    assert!(
        matches!(&err, LoginError::Refused(r) if r == "wrong token"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("not-the-token"),
        "the token leaked into the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_refused_with_the_reason() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let o = EpOpts::new(&certs, vec![("nosuch".into(), hub.control)]);
    let err = login_error(&ep_settings(&certs, &hub, &o)).await;
    assert!(
        err.to_string().contains("unknown service \"nosuch\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_outside_the_allowlist_is_dropped_before_tls() {
    let certs = Certs::new();
    let opts = HubOpts {
        allowlist: vec!["127.0.0.2/32".into()],
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &opts).await;
    let o = EpOpts::new(&certs, vec![("echo".into(), hub.control)]);
    let err = login_error(&ep_settings(&certs, &hub, &o)).await;
    assert!(matches!(err, LoginError::ClosedEarly), "{err}");
    assert!(err.to_string().contains("ep_allowlist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ep_stands_by_and_takes_over_when_the_first_leaves() {
    let certs = Certs::new();
    let (hub, first) = echo_tunnel(&certs).await;
    // Another ep offering the same service logs in (it is not refused, nor
    // its certificate penalised) and waits: players still reach the first.
    let second_home = echo_server().await;
    let mut o = EpOpts::new(&certs, vec![("echo".into(), second_home)]);
    o.cert = "other".into();
    let second = TestEp::start(ep_settings(&certs, &hub, &o));
    hub.wait_sessions(2).await;
    assert_eq!(hub.handle.served_by("echo").as_deref(), Some("home"));
    // The first leaves: the second serves, no new login (the hand-over
    // follows the first session's end, which the count shows just before).
    first.stop().await;
    hub.wait_sessions(1).await;
    common::udp::eventually(
        "the second ep serves",
        std::time::Duration::from_secs(5),
        || hub.handle.served_by("echo").as_deref() == Some("other"),
    )
    .await;
    assert_eq!(hub.handle.served_by("echo").as_deref(), Some("other"));
    assert_eq!(
        echo_through(hub.service("echo"), b"still here").await,
        b"still here"
    );
    drop(second);
}

/// A TLS client of the right CA's trust but with no client certificate.
async fn tls_without_client_cert(
    certs: &Certs,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ferry::tls::load_certs(&certs.path("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![proto::ALPN.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap() // TLS 1.3: the client finishes before the hub judges it
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_certificate_is_refused() {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let mut tls = tls_without_client_cert(&certs, hub.control).await;
    let hello = EpMsg::Hello {
        version: proto::PROTOCOL_VERSION,
        token: ferry::secret::Secret::new(TOKEN),
        services: vec!["echo".into()],
        features: vec![],
        software: None,
        shapes: Default::default(),
    };
    let _ = proto::write_msg(&mut tls, &hello).await;
    let answer = proto::read_msg::<_, HubMsg>(&mut tls).await;
    let err = answer.expect_err("hub answered a client without a certificate");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_control_frame_closes_only_that_connection() {
    let certs = Certs::new();
    let (hub, _ep) = echo_tunnel(&certs).await;
    let mut tls = raw_control(&certs, &hub).await;
    // A 4 GiB length prefix, then silence: the hub must close, not allocate.
    tls.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = [0u8; 64];
    let n = tls.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "hub answered a hostile frame");
    // The established ep is untouched.
    assert_eq!(
        echo_through(hub.service("echo"), b"still here").await,
        b"still here"
    );
}

#[test]
fn gen_cert_refuses_to_overwrite_and_issues_more_eps() {
    let certs = Certs::new();
    let again = GenCert {
        dir: certs.dir.path().to_path_buf(),
        eps: vec!["home".into()],
        ..Default::default()
    }
    .run();
    let err = again.expect_err("overwrote an ep key");
    assert!(err.to_string().contains("already exists"), "{err}");
    let more = GenCert {
        dir: certs.dir.path().to_path_buf(),
        eps: vec!["cabin".into()],
        ..Default::default()
    }
    .run()
    .unwrap();
    assert_eq!(more.written.len(), 2, "only the new ep's files: {more:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca.key", "hub.key", "ep-home.key", "ep-cabin.key"] {
            let mode = std::fs::metadata(certs.path(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
}

#[cfg(unix)]
#[test]
fn a_world_readable_key_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let certs = Certs::new();
    let key = certs.path("hub.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = ferry::tls::load_key(&key).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

/// A hub's own certificate is checked as an ep would check it: another
/// CA's is refused, a wildcard name passes, and one only out of its dates
/// is let through for a warning (a clock set wrong must not stop the hub).
#[test]
fn the_hubs_own_certificate_is_checked_as_an_ep_would() {
    use ferry::tls::{load_certs, verify_own_server_cert};
    let hub_files = |names: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        ferry::certgen::GenCert {
            dir: dir.path().to_path_buf(),
            hub_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
        .run()
        .unwrap();
        dir
    };
    let roots_of = |d: &std::path::Path| {
        let mut store = rustls::RootCertStore::empty();
        for c in load_certs(&d.join("ca.pem")).unwrap() {
            store.add(c).unwrap();
        }
        std::sync::Arc::new(store)
    };
    let dir = hub_files(&["*.example.com"]);
    let chain = load_certs(&dir.path().join("hub.pem")).unwrap();
    let own = verify_own_server_cert(roots_of(dir.path()), &chain);
    assert!(matches!(own, Ok(None)), "{own:?}");
    let other = hub_files(&["hub.example"]);
    let e = verify_own_server_cert(roots_of(other.path()), &chain).unwrap_err();
    assert!(e.to_string().contains("would refuse"), "{e}");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("ca.pem"), ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["hub.example".into()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let expired = params.signed_by(&key, &issuer).unwrap();
    let dated = verify_own_server_cert(roots_of(dir.path()), &[expired.der().clone()]);
    assert!(
        matches!(&dated, Ok(Some(w)) if w.contains("dates")),
        "{dated:?}"
    );
}
