//! One-line enrolment: `ferry hub invite` on the hub, `ferry ep join` at
//! home, then `ferry ep` just works; invites that are reused, expired,
//! revoked or tampered with are refused with the reason; a wrong CA stops
//! the ep before it sends anything; strangers cost no Argon2 and no
//! signature.

mod common;

use common::procs::ferry_cmd;
use common::udp::free_range;
use common::*;
use std::{net::SocketAddr, os::unix::fs::PermissionsExt, path::Path, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A hub with `[enrol]` on a fixed port and a service `game`; only
/// 127.0.0.2 is in its allowlist, so an ep on 127.0.0.1 gets in only by
/// enrolling.
async fn enrol_hub(certs: &Certs) -> (TestHub, std::path::PathBuf, u16, SocketAddr) {
    let door = free_range(1);
    let game = free_range(1);
    let o = HubOpts {
        services: vec![],
        allowlist: vec!["127.0.0.2/32".into()],
        extra: format!(
            "[enrol]\nbind = \"127.0.0.1:{door}\"\n[services.game]\nbind = \"127.0.0.1:{game}\"\n"
        ),
        ..Default::default()
    };
    let settings = hub_settings(certs, &o);
    let file = settings.file.clone();
    let door = SocketAddr::from(([127, 0, 0, 1], door));
    (TestHub::from_settings(settings, &o).await, file, game, door)
}

fn run(args: &[&str]) -> (bool, String) {
    let out = ferry_cmd().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `ferry hub invite` for `ep`; the line it printed.
fn invite(file: &Path, ep: &str, extra: &[&str]) -> String {
    let mut args = vec!["hub", "invite", "-c", file.to_str().unwrap(), "--ep", ep];
    args.extend_from_slice(extra);
    let (ok, text) = run(&args);
    assert!(ok, "{text}");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ferry ep join "))
        .unwrap_or_else(|| panic!("no join line in {text}"))
        .to_string()
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
    assert_eq!(settings.identity, "cabin");
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
    let (id, secret) = store.create("late", Duration::ZERO, None).unwrap();
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
    let (ok, text) = run(&[
        "hub",
        "invite",
        "-c",
        file.to_str().unwrap(),
        "--revoke",
        &parsed.id,
    ]);
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
