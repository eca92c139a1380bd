//! Revocation without a restart, from the first one on, and certificates
//! that stop being valid while a TLS session for them is cached.

mod common;

use common::*;
use ferry::ep::LoginError;
use std::time::Duration;

on_every_transport!(the_first_revoke_closes_the_session_on_a_running_hub);

/// The first revocation closes the session (over QUIC, its connection
/// with it).
async fn the_first_revoke_closes_the_session_on_a_running_hub(t: Transport) {
    let certs = Certs::new(); // gen-cert, as a user runs it
    let crl = certs.path("crl.pem");
    assert!(crl.exists(), "gen-cert wrote no empty revocation list");
    let hub = TestHub::start_with_crl(&certs, &t.hub_opts(HubOpts::default()), &crl).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    revoke_home(&certs);
    let began = std::time::Instant::now();
    hub.wait_sessions(0).await;
    println!(
        "figure ({t:?}): the first revocation closed the ep's session in {:?}",
        began.elapsed()
    );
    common::udp::eventually("no QUIC connection left", Duration::from_secs(10), || {
        hub.handle.quic_connections() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_cert_force_revokes_the_certificate_it_replaces() {
    let certs = Certs::new();
    for ext in ["pem", "key"] {
        std::fs::copy(
            certs.path(&format!("ep-home.{ext}")),
            certs.path(&format!("ep-old.{ext}")),
        )
        .unwrap();
    }
    let out = procs::ferry_cmd()
        .args(["hub", "gen-cert", "--ep", "home", "--force", "--dir"])
        .arg(certs.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("figure: gen-cert --force said: {}", text.trim());
    assert!(
        out.status.success() && text.contains("revoked the replaced certificate"),
        "{text}"
    );
    let hub = TestHub::start_with_crl(&certs, &HubOpts::default(), &certs.path("crl.pem")).await;
    let mut old = EpOpts::new(&certs, vec![("echo".into(), hub.control)]);
    old.cert = "old".into();
    let err = login_error(&ep_settings(&certs, &hub, &old)).await;
    assert!(
        matches!(&err, LoginError::OwnCertificate(m) if m.contains("Revoked")),
        "the replaced certificate still works: {err:?}"
    );
    // The refusal penalised 127.0.0.1, so the new certificate meets a fresh hub.
    let hub = TestHub::start_with_crl(&certs, &HubOpts::default(), &certs.path("crl.pem")).await;
    let new = EpOpts::new(&certs, vec![("echo".into(), hub.control)]);
    assert!(
        ferry::ep::login(&ep_settings(&certs, &hub, &new))
            .await
            .is_ok()
    );
}

/// A hub following `crl.pem` beside its CA, and the ep `home` logged in.
async fn following_its_list(certs: &Certs) -> (TestHub, TestEp) {
    let hub = TestHub::start_with_crl(certs, &HubOpts::default(), &certs.path("crl.pem")).await;
    let ep = TestEp::start(ep_settings(
        certs,
        &hub,
        &EpOpts::new(certs, vec![("echo".into(), echo_server().await)]),
    ));
    hub.wait_sessions(1).await;
    (hub, ep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_change_applies_even_when_the_rest_cannot_reload() {
    let certs = Certs::new();
    let (hub, _ep) = following_its_list(&certs).await;
    // The key file breaks while the hub runs (a botched copy, a full disk).
    std::fs::write(certs.path("hub.key"), "not a key\n").unwrap();
    ferry::certgen::revoke(certs.dir.path(), &["home".into()], &[]).unwrap();
    let mut rx = hub.handle.sessions();
    let closed = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|n| *n == 0)).await;
    assert!(
        closed.is_ok(),
        "the revocation was not applied: the reload re-read the key"
    );
}

/// A new CA copied in file by file (a sync, scp one at a time): the CA
/// and the hub's certificate first, which a reload refuses while the old
/// list (another CA's) is still there; then the new CA's list. Before,
/// the list's watcher checked it against the CA running and refused it,
/// and nothing tried the whole again: the hub kept trusting the old CA
/// (and refused eps of the new one) until a restart or another save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_replaced_file_by_file_is_taken_once_its_list_arrives() {
    let certs = Certs::new();
    let (hub, _ep) = following_its_list(&certs).await;
    let new = Certs::new();
    let copy = |f: &str| std::fs::copy(new.path(f), certs.path(f)).unwrap();
    let first = hub
        .reload_after(|| {
            for f in ["hub.pem", "hub.key", "ca.pem"] {
                copy(f);
            }
        })
        .await;
    println!("figure: the new CA before its list: {first:?}");
    let mut rx = hub.handle.reloads();
    rx.mark_unchanged();
    copy("crl.pem");
    let taken = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|(_, outcome)| outcome.is_ok()),
    )
    .await;
    assert!(taken.is_ok(), "the new CA was never taken");
    // The old CA's ep is let go, as for any new CA.
    hub.wait_sessions(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_cannot_ride_a_resumed_session() {
    let certs = Certs::new();
    // Long enough for a hub's start and a first login on a loaded machine.
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(8);
    issue_ep_cert(&certs, "brief", Validity::Until(until), false);
    let hub = TestHub::start(&certs, &HubOpts::default()).await;
    let mut o = EpOpts::new(&certs, vec![("echo".into(), hub.control)]);
    o.cert = "brief".into();
    let settings = ep_settings(&certs, &hub, &o);
    // A full handshake while valid leaves a resumable session in the ep.
    let (first, _) = ferry::ep::login(&settings).await.expect("valid at first");
    drop(first);
    // The certificate's validity ends (time passing is the scenario).
    let left = until - time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    tokio::time::sleep(Duration::from_secs_f64(left.as_seconds_f64().max(0.0))).await;
    let again = ferry::ep::login(&settings).await;
    println!(
        "figure: expired certificate, second login → {:?}",
        again.as_ref().err()
    );
    let Err(err) = again else {
        panic!("an expired certificate logged in")
    };
    assert!(
        err.to_string().contains("expired") || matches!(err, LoginError::OwnCertificate(_)),
        "{err}"
    );
}

/// `ferry hub revoke --ep home`, as a user runs it.
fn revoke_home(certs: &Certs) {
    let out = procs::ferry_cmd()
        .args(["hub", "revoke", "--ep", "home", "--dir"])
        .arg(certs.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

on_every_transport!(a_revocation_landing_while_the_hub_starts_is_not_missed);

/// A revocation that lands while the hub starts (after it read the list,
/// before it began following it) is read at the follower's first look, not
/// left for the file's next change.
async fn a_revocation_landing_while_the_hub_starts_is_not_missed(t: Transport) {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    let o = t.hub_opts(HubOpts::default());
    let hub = ferry::hub::Hub::bind(hub_settings_crl(&certs, &o, Some(&crl)))
        .await
        .unwrap();
    revoke_home(&certs);
    let (control, channel, handle) = (hub.control_addr(), hub.channel_addr(), hub.handle());
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(hub.run(stop.clone()));
    let mut reads = handle.crl_reads();
    let read = tokio::time::timeout(Duration::from_secs(10), reads.wait_for(|n| *n >= 1)).await;
    assert!(read.is_ok(), "the list revoked during start was never read");
    let mut eo = EpOpts::new(&certs, vec![("echo".into(), control)]);
    eo.extra = t.ep_extra(handle.quic_addr());
    let s = ep_settings_for(&certs, control, channel, &eo);
    let err = match t {
        Transport::Tls => login_error(&s).await,
        Transport::Quic => {
            let quic = handle.quic_addr().unwrap();
            ferry::ep::login_quic_once(&s, quic).await.unwrap_err()
        }
    };
    assert!(
        matches!(&err, LoginError::OwnCertificate(m) if m.contains("Revoked")),
        "the revoked ep logged in: {err:?}"
    );
    stop.cancel();
    let _ = running.await;
}

/// Several `ferry hub revoke` at once (two operators, or a revoke while the
/// hub revokes a re-enrolled ep's old certificate): every serial ends up
/// in the list, none lost to a writer that read the list before another
/// wrote it.
#[test]
fn revocations_written_at_the_same_moment_are_all_kept() {
    let certs = Certs::new();
    let serials: Vec<String> = (1..=12)
        .map(|n| format!("{:02x}{:02x}", n, n * 7))
        .collect();
    let runs: Vec<_> = serials
        .iter()
        .map(|s| {
            procs::ferry_cmd()
                .args(["hub", "revoke", "--serial", s, "--dir"])
                .arg(certs.dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed = ferry::tls::crl_serials(&certs.path("crl.pem")).unwrap();
    let lost: Vec<_> = serials.iter().filter(|s| !listed.contains(*s)).collect();
    println!(
        "figure: {} revocations at once, {} listed",
        serials.len(),
        listed.len()
    );
    assert!(lost.is_empty(), "revocations lost: {lost:?}");
}

on_every_transport!(a_revoked_ep_s_players_are_cut_at_once);

/// A player connected through an ep whose certificate is then revoked
/// does not stay with it (over TLS its channel would outlive the session):
/// cut at once, long before the drain.
async fn a_revoked_ep_s_players_are_cut_at_once(t: Transport) {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    let o = HubOpts {
        extra: "drain_timeout = \"60s\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start_with_crl(&certs, &t.hub_opts(o), &crl).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let mut player = connected_player(hub.service("echo")).await;
    revoke_home(&certs);
    let began = std::time::Instant::now();
    assert_cut(&mut player, "the revoked ep's player").await;
    println!(
        "figure ({t:?}): the revoked ep's player was cut {:?} after the revoke",
        began.elapsed()
    );
}

/// Asserts `player` is reset within 10 s: a cut is a break, never a clean
/// end a client could take for a complete reply.
async fn assert_cut(player: &mut tokio::net::TcpStream, who: &str) {
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(player, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "{who} was not cut: {read:?}"
    );
    assert!(
        matches!(read, Ok(Err(ref e)) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{who} was ended cleanly, not reset: {read:?}"
    );
}

/// `sudo ferry hub revoke` (root) in a certificate folder the hub's user
/// owns: the list and its lock it writes belong to that user, so the hub
/// can still read the list and a later `sudo -u ferry ferry hub revoke`
/// can still take the lock. A link planted where the lock goes is refused,
/// never followed.
#[test]
fn a_revoke_run_as_root_leaves_its_files_to_the_folder_s_owner() {
    use std::os::unix::fs::MetadataExt;
    let certs = Certs::new();
    let dir = certs.dir.path();
    if std::fs::metadata(certs.path("ca.pem")).unwrap().uid() != 0 {
        return println!("skipped: needs root, as `sudo ferry hub revoke` runs");
    }
    // The hub's user: any uid but root's. It planted a link where the
    // list's lock goes, to a file of root's: root's command must not hand
    // that file over (or make one there).
    std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("shadow");
    std::fs::write(&victim, "root's\n").unwrap();
    let _ = std::fs::remove_file(certs.path("crl.lock"));
    std::os::unix::fs::symlink(&victim, certs.path("crl.lock")).unwrap();
    let out = procs::ferry_cmd()
        .args(["hub", "revoke", "--serial", "0a0b", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("it is a link"),
        "{said}"
    );
    let v = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        v.uid(),
        0,
        "root's file behind a planted link was handed over"
    );
    // With no link planted, the list and the lock root makes are the
    // folder owner's.
    std::fs::remove_file(certs.path("crl.lock")).unwrap();
    let out = procs::ferry_cmd()
        .args(["hub", "revoke", "--serial", "0c0d", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = std::fs::metadata(certs.path("crl.pem")).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534), "crl.pem stayed root's");
    let l = std::fs::metadata(certs.path("crl.lock")).unwrap();
    assert_eq!((l.uid(), l.gid()), (65534, 65534), "crl.lock stayed root's");
}

/// A player still on a channel of an earlier session of the ep (its
/// control connection was reset and it logged in again; the channel
/// lives on, as it should): a revocation of that certificate reaches it
/// too, not only the players of the session open now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_players_of_the_ep_s_earlier_sessions() {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    let o = HubOpts {
        extra: "drain_timeout = \"60s\"\n".into(),
        ..Default::default()
    };
    let hub = TestHub::start_with_crl(&certs, &o, &crl).await;
    let proxy = common::faultproxy::FaultProxy::start(hub.control).await;
    let eo = EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]);
    let _ep = TestEp::start(ep_settings_for(&certs, proxy.addr, hub.channel, &eo));
    hub.wait_sessions(1).await;
    let mut player = connected_player(hub.service("echo")).await;
    let logins = *hub.handle.logins().borrow();
    proxy.reset_all();
    hub.wait_logins_over(logins).await;
    // Still playing on the earlier session's channel.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        player.write_all(b"on").await.unwrap();
        let mut got = [0u8; 2];
        player.read_exact(&mut got).await.unwrap();
    }
    revoke_home(&certs);
    assert_cut(&mut player, "a player of the revoked ep's earlier session").await;
}

/// `ferry hub -c FILE revoke` where FILE has no `tls.crl` naming the list
/// it writes: that hub never sees the revocation, so the command says so
/// (before, it said only what a hub "with tls.crl" would do, and the ep
/// kept logging in). Where FILE follows the list, nothing is said.
#[test]
fn revoke_warns_when_the_hub_s_configuration_does_not_follow_its_list() {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    let o = HubOpts::default();
    for followed in [None, Some(crl.as_path())] {
        let file = write_hub_toml(&certs, &o, followed);
        let out = procs::ferry_cmd()
            .arg("hub")
            .arg("-c")
            .arg(&file)
            .args(["revoke", "--ep", "home", "--dir"])
            .arg(certs.dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(err.contains("has no tls.crl"), followed.is_none(), "{err}");
    }
}

on_every_transport!(a_list_named_before_it_exists_applies_once_written);

/// `tls.crl` added to hub.toml before the file exists: that reload is
/// refused (the hub runs on with no list), and once `ferry hub revoke`
/// writes the list the reload is tried again, so the revoked ep is shut
/// out. Before, nothing followed the missing file: the revocation did not
/// apply until hub.toml was saved again or the hub got a SIGHUP.
async fn a_list_named_before_it_exists_applies_once_written(t: Transport) {
    let certs = Certs::new();
    let crl = certs.path("crl.pem");
    std::fs::remove_file(&crl).unwrap();
    let o = t.hub_opts(HubOpts::default());
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("echo".into(), echo_server().await)]),
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let refused = hub
        .reload_after(|| {
            let named = write_hub_toml(&certs, &o, Some(&crl));
            std::fs::rename(named, &file).unwrap();
        })
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let applied = hub.reload_after(|| revoke_home(&certs)).await;
    assert!(applied.is_ok(), "{applied:?}");
    tokio::time::timeout(Duration::from_secs(10), hub.wait_sessions(0))
        .await
        .expect("the revoked ep is still logged in");
}
