//! One-line enrolment: `ferry hub invite` on the hub, `ferry ep join` at
//! home, then `ferry ep` just works; invites that are reused, expired,
//! revoked or tampered with are refused with the reason; a wrong CA stops
//! the ep before it sends anything; strangers cost no Argon2 and no
//! signature.

mod common;

use common::procs::run;
use common::udp::free_range;
use common::*;
use std::{net::SocketAddr, os::unix::fs::PermissionsExt, path::Path, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A hub with `[enrol]` on a fixed port and a service `game`; only
/// 127.0.0.2 is in its allowlist, so an ep on 127.0.0.1 gets in only by
/// enrolling.
async fn enrol_hub(certs: &Certs) -> (TestHub, std::path::PathBuf, u16, SocketAddr) {
    enrol_hub_with(certs, "").await
}

/// `enrol_hub` with top-level `keys` in its hub.toml.
async fn enrol_hub_with(
    certs: &Certs,
    keys: &str,
) -> (TestHub, std::path::PathBuf, u16, SocketAddr) {
    let door = free_range(1);
    let game = free_range(1);
    let o = HubOpts {
        services: vec![],
        allowlist: vec!["127.0.0.2/32".into()],
        extra: format!(
            "{keys}[enrol]\nbind = \"127.0.0.1:{door}\"\n[services.game]\nbind = \"127.0.0.1:{game}\"\n"
        ),
        ..Default::default()
    };
    let settings = hub_settings(certs, &o);
    let file = settings.file.clone();
    let door = SocketAddr::from(([127, 0, 0, 1], door));
    (TestHub::from_settings(settings, &o).await, file, game, door)
}

/// `ferry hub invite` for `ep`; the line it printed.
fn invite(file: &Path, ep: &str, extra: &[&str]) -> String {
    // The invite grants the hub's `game`, where it has one.
    let hub_toml = std::fs::read_to_string(file).unwrap();
    let mut grants = vec![];
    if hub_toml.contains("[services.game]") {
        grants.extend_from_slice(&["--service", "game"]);
    }
    grants.extend_from_slice(extra);
    invite_granting(file, ep, &grants)
}

/// `ferry hub invite` for `ep` with exactly `args` after it; the line.
fn invite_granting(file: &Path, ep: &str, args: &[&str]) -> String {
    invite_saying(file, ep, args).0
}

/// `ferry hub invite`'s join line and all it printed.
fn invite_saying(file: &Path, ep: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["hub", "invite", "-c", file.to_str().unwrap(), "--ep", ep];
    all.extend_from_slice(args);
    let (ok, text) = run(&all);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ferry ep join "))
        .unwrap_or_else(|| panic!("no join line in {text}"))
        .to_string();
    (line, text)
}

/// `ferry hub invite --revoke ID`: whether it succeeded, what it said.
fn revoke_invite(file: &Path, id: &str) -> (bool, String) {
    run(&[
        "hub",
        "invite",
        "-c",
        file.to_str().unwrap(),
        "--revoke",
        id,
    ])
}

/// `ferry ep join LINE --dir DIR` off the async threads.
async fn join(line: &str, dir: &Path) -> (bool, String) {
    let (line, dir) = (line.to_string(), dir.to_str().unwrap().to_string());
    tokio::task::spawn_blocking(move || run(&["ep", "join", &line, "--dir", &dir]))
        .await
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_line_enrols_an_ep_that_then_just_works() {
    let certs = Certs::new();
    let (hub, file, game, _) = enrol_hub(&certs).await;
    let line = invite(
        &file,
        "cabin",
        &["--expires", "1h", "--from", "127.0.0.0/8"],
    );
    println!("figure: the line is {} characters: {line}", line.len());
    assert!(line.len() < 130, "{line}");
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = join(&line, home.path()).await;
    assert!(ok, "{text}");
    assert!(text.contains("enrolled as ep cabin"), "{text}");
    // What it will serve, said where the person reads: the hub chose it.
    assert!(
        text.contains(&format!(
            "game (tcp): players reach 127.0.0.1:{game} at home"
        )),
        "{text}"
    );
    let config = home.path().join("ep.toml");
    for (f, m) in [
        ("certs/ep.key", 0o600),
        ("certs/token", 0o600),
        ("certs/ep.pem", 0o644),
    ] {
        assert_eq!(mode(&home.path().join(f)), m, "{f}");
    }
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains(&format!("local = \"127.0.0.1:{game}\"")),
        "{written}"
    );
    // The game at home listens elsewhere here (the hub holds that port on
    // this one machine): point the service at it, as the file says to.
    let echo = echo_server().await;
    std::fs::write(
        &config,
        written.replace(&format!("127.0.0.1:{game}\""), &format!("{echo}\"")),
    )
    .unwrap();
    // The next `ferry ep -c …` just works: logged in (from an address the
    // allowlist did not have), and a player gets through.
    let settings = ferry::config::ep::EpConfig::load(&config, Default::default())
        .unwrap()
        .check(&config)
        .unwrap();
    assert_eq!(
        ferry::tls::EpTls::load(&settings).unwrap().identity,
        "cabin"
    );
    let _ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    let to: SocketAddr = ([127, 0, 0, 1], game).into();
    let mut p = tokio::net::TcpStream::connect(to).await.unwrap();
    p.write_all(b"hello cabin").await.unwrap();
    let mut back = [0u8; 11];
    p.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello cabin");
    assert_eq!(hub.handle.enrolments(), 1);
    // The secret is stored only as a hash.
    let state = std::fs::read_to_string(certs.path("invites.json")).unwrap();
    let secret = line.rsplit('.').next().unwrap();
    assert!(!state.contains(secret));
    // Used: the same line again is refused with the reason.
    let again = tempfile::tempdir().unwrap();
    let (ok, text) = join(&line, again.path()).await;
    assert!(!ok && text.contains("already used"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_revoked_and_tampered_invites_are_refused_with_the_reason() {
    let certs = Certs::new();
    let (hub, file, _, _) = enrol_hub(&certs).await;
    let dir = tempfile::tempdir().unwrap();
    let try_join = |line: String| {
        let d = dir.path().join(format!("{}", line.len() + rand_suffix()));
        async move { join(&line, &d).await }
    };
    // Expired: made with no time to live, as the store allows.
    let store = ferry::enrol::invites::Store::new(certs.dir.path());
    let (id, secret) = store.create("late", Duration::ZERO, None, vec![]).unwrap();
    let good = invite(&file, "x1", &[]);
    let parsed = ferry::enrol::Line::parse(&good).unwrap();
    let expired = ferry::enrol::Line {
        id,
        secret,
        ..parsed.clone()
    };
    let (ok, text) = try_join(expired.to_string()).await;
    assert!(!ok && text.contains("expired"), "{text}");
    // `--list` shows each invite with its state.
    let (ok, listed) = run(&["hub", "invite", "-c", file.to_str().unwrap(), "--list"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains(&parsed.id) && listed.contains("ep x1") && listed.contains("open"),
        "{listed}"
    );
    assert!(
        listed.contains("ep late") && listed.contains("expired"),
        "{listed}"
    );
    // Revoked with `ferry hub invite --revoke`.
    let (ok, text) = revoke_invite(&file, &parsed.id);
    assert!(ok, "{text}");
    let (ok, text) = try_join(good.clone()).await;
    assert!(!ok && text.contains("revoked"), "{text}");
    // Tampered: another secret, another id, a cut line.
    let fresh = ferry::enrol::Line::parse(&invite(&file, "x2", &[])).unwrap();
    let wrong_secret = ferry::enrol::Line {
        secret: "0".repeat(32),
        ..fresh.clone()
    };
    let (ok, text) = try_join(wrong_secret.to_string()).await;
    assert!(!ok && text.contains("secret does not match"), "{text}");
    let wrong_id = ferry::enrol::Line {
        id: "0".repeat(16),
        ..fresh.clone()
    };
    let (ok, text) = try_join(wrong_id.to_string()).await;
    assert!(!ok && text.contains("unknown invite"), "{text}");
    let cut = fresh.to_string();
    let (ok, text) = try_join(cut[..cut.len() - 3].to_string()).await;
    assert!(!ok && text.contains("damaged"), "{text}");
    // Only from its network.
    let only =
        ferry::enrol::Line::parse(&invite(&file, "x3", &["--from", "192.0.2.0/24"])).unwrap();
    let (ok, text) = try_join(only.to_string()).await;
    assert!(
        !ok && text.contains("not valid from this address"),
        "{text}"
    );
    // A wrong secret did not burn the invite: the right one still works.
    let (ok, text) = try_join(fresh.to_string()).await;
    assert!(ok, "{text}");
    assert_eq!(hub.handle.enrolments(), 1);
}

fn rand_suffix() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fingerprint_stops_the_ep_before_it_sends_the_secret() {
    let certs = Certs::new();
    let (hub, file, _, _) = enrol_hub(&certs).await;
    let line = ferry::enrol::Line::parse(&invite(&file, "careful", &[])).unwrap();
    let forged = ferry::enrol::Line {
        ca: "f".repeat(32),
        ..line.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = join(&forged.to_string(), dir.path()).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("not the one in the invite") && text.contains("nothing was sent"),
        "{text}"
    );
    assert!(!dir.path().join("ep.toml").exists());
    // Nothing reached the hub but the id: the invite is still open.
    assert_eq!(hub.handle.enrolments(), 0);
    let (ok, text) = join(&line.to_string(), dir.path()).await;
    assert!(ok, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_enrol_door_cost_no_argon2_and_no_signature() {
    let certs = Certs::new();
    let (hub, file, _, door) = enrol_hub(&certs).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        tasks.spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(door).await else {
                return;
            };
            let junk = match i % 4 {
                0 => format!("ferry-enrol/1 {:016x}\n", i as u64 * 7919),
                1 => "GET / HTTP/1.1\r\n\r\n".to_string(),
                2 => "\x16\x03\x01\x00\x05hello".to_string(),
                _ => "x".repeat(500),
            };
            let _ = s.write_all(junk.as_bytes()).await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut sink)).await;
        });
    }
    while tasks.join_next().await.is_some() {}
    let (_, argon2_total) = hub.handle.argon2_runs();
    let refused = hub
        .handle
        .refusals()
        .get("enrolment refused")
        .copied()
        .unwrap_or(0);
    println!(
        "figure: 200 stranger connections: Argon2 runs {argon2_total}, signatures {}, refusals {refused}",
        hub.handle.enrolments()
    );
    assert_eq!(argon2_total, 0);
    assert_eq!(hub.handle.enrolments(), 0);
    assert!(refused >= 150, "{refused}");
    // The door still serves a real invite afterwards.
    let line = invite(&file, "after", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = join(&line, dir.path()).await;
    assert!(ok, "{text}");
}

/// `ferry hub invite` and `--revoke` run from several processes while the
/// hub burns invites that eps join with: every invite made is still
/// listed, a used one stays used, a revoked one stays revoked. Before the
/// state had a lock and each writer its own temp file, writers lost each
/// other's changes (a used invite came back open) or failed on the shared
/// temp file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_written_by_the_cli_and_the_hub_at_once_are_never_lost_or_reopened() {
    use ferry::enrol::invites::{State, Store};
    let certs = Certs::new();
    let (hub, file, _, _) = enrol_hub(&certs).await;
    const JOINS: usize = 8;
    const WRITERS: usize = 3;
    const PER_WRITER: usize = 12;
    let lines: Vec<ferry::enrol::Line> = (0..JOINS)
        .map(|i| ferry::enrol::Line::parse(&invite(&file, &format!("j{i}"), &[])).unwrap())
        .collect();
    // Writers: each makes invites and revokes every other one it made,
    // reporting (id, revoked) or what failed.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let file = file.clone();
            std::thread::spawn(move || {
                let mut made = Vec::new();
                let mut failed = Vec::new();
                for k in 0..PER_WRITER {
                    let args = [
                        "hub",
                        "invite",
                        "-c",
                        file.to_str().unwrap(),
                        "--ep",
                        &format!("w{w}k{k}"),
                    ];
                    let (ok, text) = run(&args);
                    let line = text
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("ferry ep join "));
                    let Some(line) = line.filter(|_| ok) else {
                        failed.push(format!("invite: {text}"));
                        continue;
                    };
                    let id = ferry::enrol::Line::parse(line).unwrap().id;
                    let revoke = k % 2 == 1;
                    if revoke {
                        let args = [
                            "hub",
                            "invite",
                            "-c",
                            file.to_str().unwrap(),
                            "--revoke",
                            &id,
                        ];
                        let (ok, text) = run(&args);
                        if !ok {
                            failed.push(format!("revoke {id}: {text}"));
                            continue;
                        }
                    }
                    made.push((id, revoke));
                }
                (made, failed)
            })
        })
        .collect();
    // Meanwhile eps join, one after another (the door works on two at
    // once from one address).
    let mut joined = Vec::new();
    let mut join_failures = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let (ok, text) = join(&line.to_string(), &dir.path().join(format!("j{i}"))).await;
        if ok {
            joined.push(line.id.clone());
        } else {
            join_failures.push(text);
        }
    }
    let mut made = Vec::new();
    let mut failed = Vec::new();
    for w in writers {
        let (m, f) = w.join().unwrap();
        made.extend(m);
        failed.extend(f);
    }
    let listed = Store::new(certs.dir.path()).invites().unwrap();
    let state = |id: &str| listed.iter().find(|i| i.id == id).map(|i| i.state);
    let lost: Vec<&String> = made
        .iter()
        .map(|(id, _)| id)
        .filter(|id| state(id).is_none())
        .collect();
    let reopened: Vec<&String> = joined
        .iter()
        .filter(|id| state(id) != Some(State::Used))
        .collect();
    let unrevoked: Vec<&String> = made
        .iter()
        .filter(|(id, revoked)| *revoked && state(id).is_some_and(|s| s != State::Revoked))
        .map(|(id, _)| id)
        .collect();
    println!(
        "figure: {} CLI invites ({} revoked) during {} joins: {} CLI failures, {} join failures, \
         {} invites lost, {} used invites reopened, {} revocations undone",
        made.len(),
        made.iter().filter(|(_, r)| *r).count(),
        joined.len(),
        failed.len(),
        join_failures.len(),
        lost.len(),
        reopened.len(),
        unrevoked.len()
    );
    assert!(failed.is_empty(), "CLI runs failed: {failed:#?}");
    assert!(join_failures.is_empty(), "joins failed: {join_failures:#?}");
    assert!(
        lost.is_empty(),
        "invites made but no longer listed: {lost:?}"
    );
    assert!(
        reopened.is_empty(),
        "used invites no longer used: {reopened:?}"
    );
    assert!(
        unrevoked.is_empty(),
        "revoked invites no longer revoked: {unrevoked:?}"
    );
    assert_eq!(made.len(), WRITERS * PER_WRITER);
    assert_eq!(hub.handle.enrolments(), JOINS as u64);
    // A used line is still refused as used.
    let again = tempfile::tempdir().unwrap();
    let (ok, text) = join(&lines[0].to_string(), again.path()).await;
    assert!(!ok && text.contains("already used"), "{text}");
    // No writer left a temp file behind.
    let leftovers: Vec<String> = std::fs::read_dir(certs.dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The CA key and the revocation list kept apart from `tls.ca` (as
/// `enrol.ca_key` and `tls.crl` allow): an ep that enrols again has its
/// earlier certificate revoked in the list the hub follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_enrolling_revokes_the_earlier_certificate_in_the_configured_crl() {
    let certs = Certs::new();
    let pki = tempfile::tempdir().unwrap();
    let (key, crl) = (
        pki.path().join("signing.key"),
        pki.path().join("revoked.pem"),
    );
    std::fs::rename(certs.path("ca.key"), &key).unwrap();
    std::fs::rename(certs.path("crl.pem"), &crl).unwrap();
    let door = free_range(1);
    let o = HubOpts {
        services: vec![],
        allowlist: vec!["127.0.0.2/32".into()],
        extra: format!(
            "[enrol]\nbind = \"127.0.0.1:{door}\"\nca_key = {}\n",
            toml_path(&key)
        ),
        ..Default::default()
    };
    let settings = hub_settings_crl(&certs, &o, Some(&crl));
    let file = settings.file.clone();
    let _hub = TestHub::from_settings(settings, &o).await;
    let serial_in = |dir: &Path| {
        let cert = ferry::tls::load_certs(&dir.join("certs/ep.pem")).unwrap();
        ferry::tls::serial_hex(&cert[0]).unwrap()
    };
    let homes = tempfile::tempdir().unwrap();
    let (first, second) = (homes.path().join("1"), homes.path().join("2"));
    let (ok, text) = join(&invite(&file, "cabin", &[]), &first).await;
    assert!(ok, "{text}");
    let (ok, text) = join(&invite(&file, "cabin", &[]), &second).await;
    assert!(ok, "{text}");
    let (old, new) = (serial_in(&first), serial_in(&second));
    let revoked = ferry::tls::crl_serials(&crl).unwrap();
    println!("figure: revoked serials in tls.crl after re-enrolment: {revoked:?}");
    assert!(revoked.contains(&old), "{old} not in {revoked:?}");
    assert!(!revoked.contains(&new));
    assert!(
        !certs.path("crl.pem").exists(),
        "a list beside tls.ca that nobody follows"
    );
}

/// Helper: the settings of the ep `ferry ep join` wrote in `home`, its
/// service pointed at `local`.
fn joined_settings(home: &Path, game: u16, local: SocketAddr) -> ferry::config::ep::EpSettings {
    let config = home.join("ep.toml");
    let written = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        written.replace(&format!("127.0.0.1:{game}\""), &format!("{local}\"")),
    )
    .unwrap();
    ferry::config::ep::EpConfig::load(&config, Default::default())
        .unwrap()
        .check(&config)
        .unwrap()
}

/// An ep enrolled again (a stolen machine replaced, say) with no
/// revocation list to follow: the earlier machine's session ends when the
/// new enrolment lands, not when the new machine first logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolling_again_cuts_the_earlier_machine_off_at_once() {
    let certs = Certs::new();
    let (hub, file, game, _) = enrol_hub(&certs).await;
    let homes = tempfile::tempdir().unwrap();
    let (first, second) = (homes.path().join("1"), homes.path().join("2"));
    let (ok, text) = join(&invite(&file, "cabin", &[]), &first).await;
    assert!(ok, "{text}");
    let _old = TestEp::start(joined_settings(&first, game, echo_server().await));
    hub.wait_sessions(1).await;
    // A grant for it added to hub.toml later (as README says to) does not
    // make the name look like another ep's.
    let mut toml = std::fs::read_to_string(&file).unwrap();
    toml += "[eps.cabin]\nservices = [\"game\"]\n";
    std::fs::write(&file, toml).unwrap();
    let (ok, text) = join(&invite(&file, "cabin", &[]), &second).await;
    assert!(ok, "{text}");
    hub.wait_sessions(0).await;
}

/// `ferry hub revoke --ep` of an enrolled ep where the hub follows no
/// revocation list (hub.toml without `tls.crl`): before, the command
/// warned and the ep stayed logged in, its token and address valid; now
/// its record in enrolled.json is marked revoked, the running hub closes
/// its session and its next login is refused, and the name can still be
/// invited for a new machine (hub.toml granting it services, too).
async fn revoking_an_enrolled_ep_shuts_it_out_where_the_hub_follows_no_list(t: Transport) {
    let certs = Certs::new();
    let (hub, file, game, _) = enrol_hub_with(&certs, t.hub_extra()).await;
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = join(&invite(&file, "cabin", &[]), home.path()).await;
    assert!(ok, "{text}");
    let config = home.path().join("ep.toml");
    let written = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, t.ep_extra(hub.handle.quic_addr()) + &written).unwrap();
    let settings = joined_settings(home.path(), game, echo_server().await);
    let _ep = TestEp::start(settings.clone());
    hub.wait_sessions(1).await;
    // Its grant written in hub.toml, as README says to change one.
    let granted = hub
        .reload_after(|| {
            let toml = std::fs::read_to_string(&file).unwrap();
            std::fs::write(&file, toml + "[eps.cabin]\nservices = [\"game\"]\n").unwrap();
        })
        .await;
    assert!(granted.is_ok(), "{granted:?}");
    let dir = certs.path("ca.pem").parent().unwrap().to_owned();
    let (ok, text) = run(&[
        "hub",
        "-c",
        file.to_str().unwrap(),
        "revoke",
        "--dir",
        dir.to_str().unwrap(),
        "--ep",
        "cabin",
    ]);
    assert!(ok && text.contains("no longer count"), "{text}");
    let state = std::fs::read_to_string(dir.join("enrolled.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(json["eps"]["cabin"]["revoked"], true, "{state}");
    // `hub check` says so, rather than list it among live eps.
    let (ok, text) = run(&["hub", "check", "-c", file.to_str().unwrap()]);
    assert!(
        ok && text.contains("enrolled eps: cabin (revoked)"),
        "{text}"
    );
    tokio::time::timeout(Duration::from_secs(15), hub.wait_sessions(0))
        .await
        .expect("the revoked ep is still logged in");
    // Over QUIC the door says nothing to an address it does not admit:
    // the ep gives up sooner than its usual 10 s here.
    let mut once = settings.clone();
    once.timing.connect_timeout = Duration::from_secs(2);
    let err = t.login_once(&once, &hub).await.unwrap_err();
    println!("figure: the revoked ep's next login over {t:?}: {err}");
    assert!(err.contains("ep_allowlist"), "{err}");
    // The name is still an enrolled ep's: a new machine may be invited.
    invite(&file, "cabin", &[]);
}

on_every_transport!(revoking_an_enrolled_ep_shuts_it_out_where_the_hub_follows_no_list);

/// A machine enrolled under a name revoked before (a stolen laptop
/// replaced), on a hub that reloads only when told (`watch_config =
/// false`): its invite's services are its at once. Before, the revoked
/// record's empty list stood and the new ep served nothing until a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ep_enrolled_again_after_a_revocation_serves_its_invite_s_services() {
    let certs = Certs::new();
    let revoked = serde_json::json!({"eps": {"cabin": {
        "token_hash": "revoked by ferry hub revoke", "serial": "01", "address": "127.0.0.9",
        "enrolled": 1, "services": ["game"], "revoked": true
    }}});
    std::fs::write(certs.path("enrolled.json"), revoked.to_string()).unwrap();
    let (hub, file, game, _) = enrol_hub_with(&certs, "watch_config = false\n").await;
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = join(&invite(&file, "cabin", &[]), home.path()).await;
    assert!(ok, "{text}");
    let _ep = TestEp::start(joined_settings(home.path(), game, echo_server().await));
    hub.wait_sessions(1).await;
    common::udp::eventually(
        "the new machine serves game",
        Duration::from_secs(10),
        || hub.handle.served_by("game").as_deref() == Some("cabin"),
    )
    .await;
}

/// A name hub.toml gives an ep on the shared token (`[eps.home]` with
/// only its services): `ferry hub invite` refuses it, as an enrolment
/// would give the name a token of its own, lock that ep out and hand its
/// services to the new machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_cannot_take_the_name_of_an_ep_on_the_shared_token() {
    let certs = Certs::new();
    let door = free_range(1);
    let o = HubOpts {
        services: vec!["game".into()],
        extra: format!(
            "[enrol]\nbind = \"127.0.0.1:{door}\"\n[eps.lodge]\nservices = [\"game\"]\n"
        ),
        ..Default::default()
    };
    let file = hub_settings(&certs, &o).file;
    let (ok, text) = run(&[
        "hub",
        "invite",
        "-c",
        file.to_str().unwrap(),
        "--ep",
        "lodge",
    ]);
    assert!(!ok && text.contains("shared token"), "{text}");
}

/// The enrolment folder moved in hub.toml (`enrol.state`) on a running
/// hub: the door keeps the folder it runs with until a restart, the
/// reload line says so, and the eps enrolled there stay logged in rather
/// than losing their credential to an empty new folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_enrolment_folder_waits_for_a_restart() {
    let certs = Certs::new();
    let (hub, file, game, _) = enrol_hub(&certs).await;
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = join(&invite(&file, "cabin", &[]), home.path()).await;
    assert!(ok, "{text}");
    let _ep = TestEp::start(joined_settings(home.path(), game, echo_server().await));
    hub.wait_sessions(1).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(&file).unwrap().replace(
        "[enrol]\n",
        &format!("[enrol]\nstate = {:?}\n", elsewhere.path()),
    );
    let outcome = hub
        .reload_after(|| std::fs::write(&file, toml).unwrap())
        .await;
    let plan = outcome.expect("the reload applied");
    assert!(plan.contains("restart") && plan.contains("enrol"), "{plan}");
    assert!(!plan.contains("credentials changed"), "{plan}");
    assert_eq!(
        *hub.handle.sessions().borrow(),
        1,
        "the enrolled ep lost its session to the moved folder: {plan}"
    );
}

/// An invite that grants nothing yet (README: "grants nothing until
/// hub.toml does"): the ep it enrols starts and stays logged in, serving
/// nothing, rather than refusing the ep.toml its join wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ep_invited_for_nothing_yet_logs_in_serving_nothing() {
    let certs = Certs::new();
    let (hub, file, game, _) = enrol_hub(&certs).await;
    let line = invite_granting(&file, "cabin", &[]);
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = join(&line, home.path()).await;
    assert!(ok, "{text}");
    let toml = std::fs::read_to_string(home.path().join("ep.toml")).unwrap();
    assert!(!toml.lines().any(|l| l.starts_with("[services.")), "{toml}");
    let _ep = TestEp::start(joined_settings(home.path(), game, echo_server().await));
    hub.wait_sessions(1).await;
    assert_eq!(hub.handle.served_by("game"), None);
}

/// enrolled.json is a file a person may edit: an ep's token hash there is
/// held to what one in hub.toml is, so one asking gigabytes for each of
/// the ep's logins stops the hub's start with the file and the key named.
#[test]
fn an_edited_enrolment_asking_gigabytes_per_login_is_refused_naming_it() {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "[enrol]\nbind = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    };
    let file = write_hub_toml(&certs, &o, None);
    let heavy = token_hash().replace("m=19456", "m=4194304");
    let edited = serde_json::json!({"eps": {"cabin": {
        "token_hash": heavy, "serial": "01", "address": "127.0.0.9", "enrolled": 1,
        "services": []
    }}});
    std::fs::write(certs.path("enrolled.json"), edited.to_string()).unwrap();
    let (ok, text) = run(&["hub", "check", "-c", file.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("enrolled.json: eps.cabin.token_hash") && text.contains("m=4194304"),
        "{text}"
    );
}

/// An invite lost and sent again: the one used retires the other for the
/// same name, so whoever holds the first cannot later take the name (and
/// its services) from the machine that enrolled; and `--revoke` of a used
/// invite says it was used rather than hiding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_used_retires_older_ones_for_its_name() {
    let certs = Certs::new();
    let (_hub, file, _, _) = enrol_hub(&certs).await;
    let lost = invite(&file, "cabin", &[]);
    let lost_id = ferry::enrol::Line::parse(&lost).unwrap().id;
    let (again, text) = invite_saying(&file, "cabin", &["--service", "game"]);
    assert!(
        text.contains(&format!(
            "note: invite {lost_id} for ep cabin is still open"
        )),
        "{text}"
    );
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = join(&again, home.path()).await;
    assert!(ok, "{text}");
    let thief = tempfile::tempdir().unwrap();
    let (ok, text) = join(&lost, thief.path()).await;
    assert!(!ok && text.contains("revoked"), "{text}");
    let used = ferry::enrol::Line::parse(&again).unwrap().id;
    let revoke = || revoke_invite(&file, &used);
    // Used a moment ago: it stays used, and its machine may no longer
    // ask again with it; a second time there is nothing to do.
    let (ok, text) = revoke();
    let said = text.contains("already used") && text.contains("may no longer ask again");
    assert!(ok && said && text.contains("cabin"), "{text}");
    let (ok, text) = revoke();
    assert!(!ok && text.contains("already used"), "{text}");
    let (ok, listed) = run(&["hub", "invite", "-c", file.to_str().unwrap(), "--list"]);
    assert!(ok && listed.contains(&used), "{listed}");
    let line = listed.lines().find(|l| l.contains(&used)).unwrap();
    assert!(line.contains("used"), "{line}");
    let (_, text) = invite_saying(&file, "cabin", &[]);
    assert!(text.contains("note: ep cabin is enrolled"), "{text}");
}

/// Strangers holding the enrol door's connections idle (here 64 from 8
/// addresses in two networks, every place of the door; 16 filled it
/// before) keep no ep out: a newcomer takes the place of the oldest one
/// still waiting for its first line. Nor does one who knows an open
/// invite's id and holds connections past its first line: one enrolment
/// per id is at work, the rest are told "busy" while still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_holding_the_enrol_door_idle_keep_no_ep_out() {
    let certs = Certs::new();
    let (_hub, file, _, door) = enrol_hub(&certs).await;
    let line = invite(&file, "cabin", &[]);
    let known = ferry::enrol::Line::parse(&invite(&file, "mallory", &[])).unwrap();
    let mut idle = Vec::new();
    for _ in 0..20 {
        if let Ok(mut s) = connect_from("127.0.3.10", door).await {
            let hello = format!("ferry-enrol/1 {}\n", known.id);
            let _ = s.write_all(hello.as_bytes()).await;
            idle.push(s);
        }
    }
    for n in 0..64u8 {
        let from = format!("127.0.{}.{}", 1 + n % 2, 10 + n % 8 / 2);
        if let Ok(s) = connect_from(&from, door).await {
            idle.push(s);
        }
    }
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = join(&line, home.path()).await;
    println!(
        "figure: beside {} idle stranger connections the join said: {text}",
        idle.len()
    );
    assert!(ok, "{text}");
}

/// One who knows an open invite's id (not a secret) and holds a
/// connection past its CA line keeps the invite's ep out no longer than
/// the ep takes to connect: the newer connection for the id takes the
/// place over until a request has arrived. Before, the ep was told
/// "busy" for as long as the holder kept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_holding_an_invites_id_does_not_keep_its_ep_out() {
    let certs = Certs::new();
    let (_hub, file, _, door) = enrol_hub(&certs).await;
    let line = invite(&file, "cabin", &[]);
    let id = ferry::enrol::Line::parse(&line).unwrap().id;
    let mut holder = connect_from("127.0.3.10", door).await.unwrap();
    holder
        .write_all(format!("ferry-enrol/1 {id}\n").as_bytes())
        .await
        .unwrap();
    let mut answered = Vec::new();
    let mut b = [0u8; 1];
    while holder.read(&mut b).await.unwrap() == 1 && b[0] != b'\n' {
        answered.push(b[0]);
    }
    assert!(
        answered.starts_with(b"ca "),
        "{:?}",
        String::from_utf8_lossy(&answered)
    );
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = join(&line, home.path()).await;
    assert!(ok && !text.contains("asking again"), "{text}");
    let closed = tokio::time::timeout(Duration::from_secs(5), holder.read(&mut b)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the holder kept its connection: {closed:?}"
    );
}

/// One enrolment made by hand as `ferry ep join` makes it, for `key`
/// (which a join keeps only in memory): the hub's reply, or its refusal
/// at the first line. Asked again while the door is busy, as a join does
/// (the previous ask's place is given back only once the hub has closed
/// it, a moment after its reply).
async fn ask_by_hand(line: &str, key: &rcgen::KeyPair) -> ferry::enrol::Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = ask_once(line, key).await;
        match refusal(&reply) {
            Some(why) if why.contains("busy") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            _ => return reply,
        }
    }
}

async fn ask_once(line: &str, key: &rcgen::KeyPair) -> ferry::enrol::Reply {
    use ferry::enrol::{HELLO, Reply, Request};
    let line = ferry::enrol::Line::parse(line).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(&line.door).await.unwrap();
    let hello = format!("{HELLO} {}\n", line.id);
    tcp.write_all(hello.as_bytes()).await.unwrap();
    // A byte at a time: TLS follows the line.
    let (mut text, mut b) = (Vec::new(), [0u8; 1]);
    while tcp.read(&mut b).await.unwrap() == 1 && b[0] != b'\n' {
        text.push(b[0]);
    }
    let text = String::from_utf8(text).unwrap();
    if let Some(why) = text.strip_prefix("no ") {
        return Reply::Refused { reason: why.into() };
    }
    let ca = ferry::enrol::unhex(text.strip_prefix("ca ").unwrap()).unwrap();
    let config = ferry::tls::enrol_client_config(&ca).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(key)
        .unwrap()
        .pem()
        .unwrap();
    let req = Request {
        secret: ferry::secret::Secret::new(&line.secret),
        csr,
    };
    ferry::proto::write_msg(&mut tls, &req).await.unwrap();
    ferry::proto::read_msg(&mut tls).await.unwrap()
}

fn refusal(reply: &ferry::enrol::Reply) -> Option<&str> {
    match reply {
        ferry::enrol::Reply::Refused { reason } => Some(reason),
        ferry::enrol::Reply::Enrolled { .. } => None,
    }
}

/// The machine that used an invite may ask again with its key (its answer
/// lost on the way), but not once the operator acted on the name:
/// `ferry hub revoke --serial` or `--ep`, a new invite for the name,
/// `ferry hub invite --revoke` of the used invite; another key never.
/// (What an ask again already past the door meets when it is recorded is
/// `invites::tests::asking_again_takes_back_only_its_own`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_again_with_a_used_invite_does_not_undo_a_revocation() {
    let certs = Certs::new();
    let door = free_range(1);
    let o = HubOpts {
        services: vec![],
        allowlist: vec!["127.0.0.2/32".into()],
        extra: format!("[enrol]\nbind = \"127.0.0.1:{door}\"\n"),
        ..Default::default()
    };
    let settings = hub_settings_crl(&certs, &o, Some(&certs.path("crl.pem")));
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let dir = certs
        .path("ca.pem")
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let key = || rcgen::KeyPair::generate().unwrap();

    let line = invite(&file, "cabin", &[]);
    let k = key();
    assert_eq!(refusal(&ask_by_hand(&line, &k).await), None);
    assert_eq!(
        refusal(&ask_by_hand(&line, &k).await),
        None,
        "the same key again"
    );
    assert_eq!(hub.handle.enrolments(), 2);
    let other = ask_by_hand(&line, &key()).await;
    let why = refusal(&other).unwrap_or_default();
    assert!(why.contains("already used"), "{why}");

    let refused = |reply: ferry::enrol::Reply| {
        let why = refusal(&reply).unwrap_or_default().to_string();
        assert!(why.contains("already used"), "{why}");
    };
    // Its certificate revoked in the list by another tool (asking again
    // not ended): the ask passes the door and is refused as it records,
    // by the list as the file has it then.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(certs.path("enrolled.json")).unwrap())
            .unwrap();
    let serial = state["eps"]["cabin"]["serial"].as_str().unwrap();
    let ca = ferry::certgen::CaFiles {
        cert: certs.path("ca.pem"),
        key: certs.path("ca.key"),
        crl: certs.path("crl.pem"),
    };
    ferry::certgen::revoke_serials(&ca, &[serial.to_string()]).unwrap();
    let why = refusal(&ask_by_hand(&line, &k).await).map(str::to_string);
    assert!(
        why.as_deref()
            .unwrap_or_default()
            .contains("revoked or replaced"),
        "{why:?}"
    );
    assert_eq!(hub.handle.enrolments(), 2);
    // `ferry hub revoke --serial` ends asking again: the door says no.
    let (ok, text) = run(&["hub", "revoke", "--dir", &dir, "--serial", serial]);
    assert!(ok && text.contains("enrolled ep cabin"), "{text}");
    refused(ask_by_hand(&line, &k).await);

    // A new invite for the name: the older one's machine may not take
    // it back, before or after the new one is used.
    let older = invite(&file, "cabin", &[]);
    let ko = key();
    assert_eq!(refusal(&ask_by_hand(&older, &ko).await), None);
    let newer = invite(&file, "cabin", &[]);
    refused(ask_by_hand(&older, &ko).await);
    assert_eq!(refusal(&ask_by_hand(&newer, &key()).await), None);

    // `ferry hub revoke --ep` and `ferry hub invite --revoke`.
    let (last, kn) = (invite(&file, "cabin", &[]), key());
    assert_eq!(refusal(&ask_by_hand(&last, &kn).await), None);
    let (ok, text) = run(&["hub", "revoke", "--dir", &dir, "--ep", "cabin"]);
    assert!(ok, "{text}");
    refused(ask_by_hand(&last, &kn).await);
    let (line, kl) = (invite(&file, "cabin", &[]), key());
    assert_eq!(refusal(&ask_by_hand(&line, &kl).await), None);
    let id = ferry::enrol::Line::parse(&line).unwrap().id;
    let (ok, text) = revoke_invite(&file, &id);
    assert!(ok && text.contains("may no longer ask again"), "{text}");
    refused(ask_by_hand(&line, &kl).await);
    assert_eq!(hub.handle.enrolments(), 6);
}

/// `ferry ep join` with no line (and with `-`) reads it from standard
/// input, so the secret shows in neither `ps` nor the shell's history;
/// nothing there is a clear error before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_on_standard_input_enrols() {
    let certs = Certs::new();
    let (_hub, file, _, _) = enrol_hub(&certs).await;
    let home = tempfile::tempdir().unwrap();
    let join_reading = |input: String, extra: &'static [&'static str], dir: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            let dir = dir.to_str().unwrap().to_string();
            let mut args = vec!["ep", "join", "--dir", &dir];
            args.extend_from_slice(extra);
            common::procs::run_with_input(&args, &input)
        })
    };
    for (n, extra) in [&[][..], &["-"][..]].into_iter().enumerate() {
        let line = invite(&file, &format!("cabin{n}"), &[]);
        let dir = home.path().join(format!("ep{n}"));
        let (ok, text) = join_reading(format!("  {line}\n"), extra, dir.clone())
            .await
            .unwrap();
        assert!(
            ok && text.contains(&format!("enrolled as ep cabin{n}")),
            "{text}"
        );
        assert!(dir.join("ep.toml").exists());
    }
    let (ok, text) = join_reading(String::new(), &[], home.path().join("none"))
        .await
        .unwrap();
    assert!(!ok && text.contains("no invite line"), "{text}");
}
