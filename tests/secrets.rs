//! Secrets stay private and hashes stay strong (issue 28, items 3 and 6):
//! a CA key or an ep's token file that other users could read is refused
//! with the `chmod` that fixes it, by every command that reads it and at
//! start; only Argon2id token hashes are accepted, weak ones with a
//! warning; a service port on the hub's own QUIC, admin or enrol port is
//! refused by `check` and at start.
#![cfg(unix)]

mod common;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version, password_hash::SaltString};
use common::procs::{Ferry, run};
use common::udp::free_range;
use common::*;
use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::ExitStatus,
    time::{Duration, Instant},
};

fn check(role: &str, config: &Path) -> (bool, String) {
    run(&[role, "check", "-c", config.to_str().unwrap()])
}

/// `ferry ROLE -c CONFIG` as a user starts it: how it exited and what it
/// said, or None for the status if it was still running after `within`
/// (it started, where it should have refused).
fn start(role: &str, config: &Path, within: Duration) -> (Option<ExitStatus>, String) {
    let mut p = Ferry::spawn(role, config, &[]);
    let deadline = Instant::now() + within;
    let mut said = String::new();
    // next_line is None once the process has exited or the time is up.
    while let Some(line) = p.next_line(deadline.saturating_duration_since(Instant::now())) {
        said += &line;
        said.push('\n');
    }
    // Closed before the deadline: it exited (perhaps not yet reaped).
    let status = if Instant::now() >= deadline && p.alive() {
        None
    } else {
        Some(p.wait())
    };
    (status, said)
}

/// Asserts that `role` refuses to start with `config`, saying `says`.
fn refused_at_start(role: &str, config: &Path, says: &[&str]) {
    let (status, said) = start(role, config, Duration::from_secs(20));
    let status = status.unwrap_or_else(|| panic!("ferry {role} started: {said}"));
    assert!(!status.success(), "{said}");
    for s in says {
        assert!(said.contains(s), "ferry {role} did not say {s:?}: {said}");
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_readable_ca_key_is_refused_by_gen_cert_and_revoke_with_the_fix() {
    let certs = Certs::new();
    let dir = certs.dir.path().to_str().unwrap();
    let ca_key = certs.path("ca.key");
    chmod(&ca_key, 0o644);
    let crl_before = std::fs::read(certs.path("crl.pem")).unwrap();
    let fix = format!("chmod 600 {}", ca_key.display());
    for args in [
        vec!["hub", "gen-cert", "--dir", dir, "--ep", "cabin"],
        vec!["hub", "revoke", "--dir", dir, "--ep", "home"],
    ] {
        let (ok, text) = run(&args);
        println!(
            "figure: `ferry {}` with a 0644 ca.key → {}",
            args[1],
            text.trim()
        );
        assert!(!ok, "{args:?} used a readable CA key: {text}");
        assert!(text.contains("CA key") && text.contains(&fix), "{text}");
    }
    assert!(
        !certs.path("ep-cabin.pem").exists(),
        "signed with it anyway"
    );
    assert_eq!(std::fs::read(certs.path("crl.pem")).unwrap(), crl_before);
    // The mode was the only thing wrong.
    chmod(&ca_key, 0o600);
    let (ok, text) = run(&["hub", "gen-cert", "--dir", dir, "--ep", "cabin"]);
    assert!(ok, "{text}");
    let (ok, text) = run(&["hub", "revoke", "--dir", dir, "--ep", "home"]);
    assert!(ok, "{text}");
}

#[test]
fn a_hub_with_enrolment_refuses_a_readable_ca_key_at_check_invite_and_start() {
    let certs = Certs::new();
    let door = free_range(1);
    let config = hub_toml(
        &certs,
        &["echo"],
        &format!("[enrol]\nbind = \"127.0.0.1:{door}\"\n"),
    );
    let (ok, text) = check("hub", &config);
    assert!(ok, "{text}");
    let ca_key = certs.path("ca.key");
    chmod(&ca_key, 0o640);
    let fix = format!("chmod 600 {}", ca_key.display());
    let (ok, text) = check("hub", &config);
    println!(
        "figure: `ferry hub check` with a 0640 ca.key → {}",
        text.trim()
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("enrol.ca_key") && text.contains(&fix),
        "{text}"
    );
    let (ok, text) = run(&[
        "hub",
        "invite",
        "-c",
        config.to_str().unwrap(),
        "--ep",
        "cabin",
    ]);
    assert!(!ok && text.contains(&fix), "{text}");
    refused_at_start("hub", &config, &["enrol.ca_key", &fix]);
}

/// An ep config whose token is in `token_file` (the hub is nowhere: these
/// configs are refused before the ep dials).
fn ep_with_token_file(certs: &Certs, token_file: &Path) -> std::path::PathBuf {
    let (_hold, nowhere) = dead_port();
    let file = ep_toml(certs, nowhere, nowhere, &[("echo", nowhere)]);
    let text = std::fs::read_to_string(&file).unwrap();
    let line = format!("token = {:?}\n", TOKEN);
    assert!(text.contains(&line));
    let text = text.replace(&line, &format!("token_file = {}\n", toml_path(token_file)));
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_readable_token_file_is_refused_by_ep_check_and_at_start() {
    let certs = Certs::new();
    let token_file = certs.path("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    chmod(&token_file, 0o644);
    let config = ep_with_token_file(&certs, &token_file);
    let fix = format!("chmod 600 {}", token_file.display());
    let (ok, text) = check("ep", &config);
    println!(
        "figure: `ferry ep check` with a 0644 token_file → {}",
        text.trim()
    );
    assert!(!ok, "{text}");
    assert!(text.contains("token_file") && text.contains(&fix), "{text}");
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    refused_at_start("ep", &config, &["token_file", &fix]);
    chmod(&token_file, 0o600);
    let (ok, text) = check("ep", &config);
    assert!(ok, "{text}");
}

/// A real Argon2 hash of the test token.
fn hash(alg: Algorithm, m: u32, t: u32) -> String {
    let params = Params::new(m, t, 1, None).unwrap();
    let salt = SaltString::encode_b64(b"a salt of sixteen").unwrap();
    Argon2::new(alg, Version::V0x13, params)
        .hash_password(TOKEN.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

#[test]
fn argon2i_and_argon2d_hashes_are_refused_with_the_fix() {
    let certs = Certs::new();
    for (alg, name) in [
        (Algorithm::Argon2i, "argon2i"),
        (Algorithm::Argon2d, "argon2d"),
    ] {
        let h = hash(alg, 19456, 2);
        assert!(h.starts_with(&format!("${name}$")), "{h}");
        // The hub's token, and the admin door's.
        let configs = [
            hub_toml(&certs, &["echo"], &format!("token_hash = {h:?}\n")),
            hub_toml(
                &certs,
                &["echo"],
                &format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken_hash = {h:?}\n"),
            ),
        ];
        for config in &configs {
            let (ok, text) = check("hub", config);
            println!(
                "figure: `ferry hub check` with an {name} hash → {}",
                text.trim()
            );
            assert!(!ok, "{name} accepted: {text}");
            assert!(
                text.contains(name) && text.contains("ferry hub token"),
                "{text}"
            );
        }
        refused_at_start("hub", &configs[0], &[name, "argon2id"]);
    }
}

#[test]
fn a_weak_argon2id_hash_is_accepted_with_a_warning_at_check_and_start() {
    let certs = Certs::new();
    let config = hub_toml(
        &certs,
        &["echo"],
        &format!("token_hash = {:?}\n", hash(Algorithm::Argon2id, 1024, 1)),
    );
    let (ok, text) = check("hub", &config);
    println!(
        "figure: `ferry hub check` with m=1024,t=1 → {}",
        text.trim()
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: token_hash is weaker than `ferry hub token` makes")
            && text.contains("m=1024")
            && text.contains("t=1"),
        "{text}"
    );
    let hub = procs::HubProc::start(&config, &[], 1);
    let line = hub.proc.wait_line("weaker than");
    assert!(
        line.contains("WARN") && line.contains("token_hash"),
        "{line}"
    );
    // What `ferry hub token` makes draws no warning.
    let (ok, text) = check("hub", &hub_toml(&certs, &["echo"], ""));
    assert!(ok && !text.contains("weaker"), "{text}");
}

#[test]
fn a_service_on_the_quic_admin_or_enrol_port_is_refused_by_hub_check() {
    let certs = Certs::new();
    let [quic, admin, enrol] = [free_range(1), free_range(1), free_range(1)];
    let doors = format!(
        "quic = \"127.0.0.1:{quic}\"\n[admin]\nbind = \"127.0.0.1:{admin}\"\n\
         [enrol]\nbind = \"127.0.0.1:{enrol}\"\n"
    );
    let with = |service: &str| hub_toml(&certs, &[], &format!("{doors}{service}"));
    let refused = [
        (quic, "udp", "quic", "UDP"),
        (quic, "tcp+udp", "quic", "UDP"),
        (admin, "tcp", "admin.bind", "TCP"),
        (enrol, "tcp+udp", "enrol.bind", "TCP"),
    ];
    for (port, kind, door, proto) in refused {
        let config = with(&format!(
            "[services.game]\nbind = \"0.0.0.0:{port}\"\ntype = \"{kind}\"\n"
        ));
        let (ok, text) = check("hub", &config);
        println!(
            "figure: a {kind} service on the {door} port → {}",
            text.trim()
        );
        assert!(
            !ok,
            "a {kind} service on {door}'s port was accepted: {text}"
        );
        assert!(
            text.contains("services.game.bind") && text.contains(door) && text.contains(proto),
            "{text}"
        );
    }
    // TCP and UDP ports are different ports; port 0 never clashes.
    let accepted = [
        format!("[services.game]\nbind = \"127.0.0.1:{quic}\"\ntype = \"tcp\"\n"),
        format!("[services.game]\nbind = \"127.0.0.1:{admin}\"\ntype = \"udp\"\n"),
        "[services.game]\nbind = \"127.0.0.1:0\"\ntype = \"tcp+udp\"\n".to_string(),
    ];
    for service in accepted {
        let (ok, text) = check("hub", &with(&service));
        assert!(ok, "{service}: {text}");
    }
    // The hub's own TCP doors cannot share a port either.
    let config = hub_toml(
        &certs,
        &["echo"],
        &format!("[admin]\nbind = \"127.0.0.1:{enrol}\"\n[enrol]\nbind = \"0.0.0.0:{enrol}\"\n"),
    );
    let (ok, text) = check("hub", &config);
    assert!(
        !ok && text.contains("enrol.bind") && text.contains("admin.bind"),
        "{text}"
    );
    // And at start, before anything is bound.
    let config = with(&format!("[services.game]\nbind = \"127.0.0.1:{admin}\"\n"));
    refused_at_start("hub", &config, &["services.game.bind", "admin.bind"]);
}
