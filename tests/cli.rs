//! The real binary, as a user runs it.

mod common;

use common::{
    procs::{Ferry, HubProc},
    *,
};
use std::process::Command;

use common::procs::ferry_cmd as ferry;

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "command failed: {text}");
    text
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "command unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A copy of the shipped `config/` beside a `certs/` made by the binary.
fn shipped_layout() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let cfg = root.path().join("config");
    std::fs::create_dir(&cfg).unwrap();
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, cfg.join(f.file_name().unwrap())).unwrap();
    }
    ferry::demo::first_run(root.path()).unwrap();
    root
}

#[test]
fn every_shipped_config_parses_and_checks() {
    let root = shipped_layout();
    let mut seen = 0;
    for f in std::fs::read_dir(root.path().join("config")).unwrap() {
        let f = f.unwrap().path();
        let role = if f.file_name().unwrap().to_string_lossy().starts_with("hub") {
            "hub"
        } else {
            "ep"
        };
        let out = run_ok(ferry().args([role, "check", "-c"]).arg(&f));
        assert!(out.contains("ok"), "{out}");
        seen += 1;
    }
    assert!(seen >= 2);
}

#[test]
fn check_masks_secrets() {
    let root = shipped_layout();
    let token = std::fs::read_to_string(root.path().join("certs/ep-token")).unwrap();
    let out = run_ok(
        ferry()
            .args(["ep", "check", "-c"])
            .arg(root.path().join("config/ep.toml")),
    );
    assert!(out.contains("token     ***"), "{out}");
    assert!(!out.contains(token.trim()), "token printed: {out}");
    let out = run_ok(
        ferry()
            .args(["hub", "check", "-c"])
            .arg(root.path().join("config/hub.toml")),
    );
    assert!(!out.contains("$argon2id$"), "hash printed: {out}");
}

#[test]
fn unknown_key_is_named_with_its_file() {
    let root = shipped_layout();
    let file = root.path().join("config/hub.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text = text.replace("[tls]", "controll = \"1.2.3.4:5\"\n[tls]");
    std::fs::write(&file, text).unwrap();
    let err = run_err(ferry().args(["hub", "check", "-c"]).arg(&file));
    assert!(
        err.contains("controll") && err.contains("hub.toml"),
        "{err}"
    );
}

#[test]
fn environment_and_flags_override_the_file() {
    let root = shipped_layout();
    let file = root.path().join("config/hub.toml");
    let out = run_ok(
        ferry()
            .env("FERRY_CONTROL", "127.0.0.1:9100")
            .args(["hub", "check", "-c"])
            .arg(&file),
    );
    assert!(out.contains("control  127.0.0.1:9100"), "{out}");
    let out = run_ok(
        ferry()
            .env("FERRY_CONTROL", "127.0.0.1:9100")
            .args(["hub", "check", "--control", "127.0.0.1:9200", "-c"])
            .arg(&file),
    );
    assert!(out.contains("control  127.0.0.1:9200"), "{out}");
}

#[test]
fn missing_config_and_bad_values_say_what_is_wrong() {
    let err = run_err(ferry().args(["hub", "check", "-c", "/nonexistent/hub.toml"]));
    assert!(
        err.contains("/nonexistent/hub.toml") && err.contains("not found"),
        "{err}"
    );
    let root = shipped_layout();
    let file = root.path().join("config/ep.toml");
    let err = run_err(
        ferry()
            .env("FERRY_HUB", "no-port-here")
            .args(["ep", "check", "-c"])
            .arg(&file),
    );
    assert!(err.contains("hub") && err.contains("host:port"), "{err}");
}

#[test]
fn token_and_hash_token_make_matching_hashes() {
    let out = run_ok(ferry().args(["hub", "token"]));
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .to_string();
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("token_hash = "))
        .unwrap();
    let hash = hash.trim_matches('"');
    assert!(ferry::token::verify(
        &ferry::secret::Secret::new(token.clone()),
        hash
    ));
    let (ok, h2) = common::procs::run_with_input(&["hub", "hash-token"], &token);
    assert!(ok, "{h2}");
    assert!(ferry::token::verify(
        &ferry::secret::Secret::new(token),
        h2.trim()
    ));
}

#[test]
fn gen_cert_writes_the_named_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        ferry()
            .args([
                "hub",
                "gen-cert",
                "--hub-name",
                "play.example.com",
                "--hub-ip",
                "203.0.113.5",
                "--ep",
                "home",
                "--dir",
            ])
            .arg(dir.path()),
    );
    for f in [
        "ca.pem",
        "ca.key",
        "hub.pem",
        "hub.key",
        "ep-home.pem",
        "ep-home.key",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing: {out}");
    }
    let again = run_err(
        ferry()
            .args(["hub", "gen-cert", "--hub-name", "x.example", "--dir"])
            .arg(dir.path()),
    );
    assert!(
        again.contains("already exists") && again.contains("--force"),
        "{again}"
    );
    let out = run_ok(
        ferry()
            .args(["hub", "gen-cert", "--ep", "cabin", "--dir"])
            .arg(dir.path()),
    );
    assert!(
        out.contains("ep-cabin.pem") && !out.contains("hub.pem"),
        "{out}"
    );
}

#[test]
fn hub_and_ep_binaries_carry_a_player() {
    let root = shipped_layout();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = rt.block_on(echo_server());
    // The shipped configs with every port moved to 0 by environment.
    let any = |k: &'static str| (k, "127.0.0.1:0".to_string());
    let hub = HubProc::start(
        &root.path().join("config/hub.toml"),
        &[
            any("FERRY_CONTROL"),
            any("FERRY_CHANNEL"),
            any("FERRY_SERVICES__WEB__BIND"),
            // The shipped admin doors' 7080 and 7081 may be taken (a
            // `ferry demo` running on this machine).
            any("FERRY_ADMIN__BIND"),
        ],
        1,
    );
    let _ep = Ferry::spawn(
        "ep",
        &root.path().join("config/ep.toml"),
        &[
            any("FERRY_ADMIN__BIND"),
            ("FERRY_HUB", hub.control.to_string()),
            ("FERRY_CHANNEL", hub.channel.to_string()),
            ("FERRY_SERVICES__WEB__LOCAL", echo.to_string()),
        ],
    );
    hub.proc.wait_line("ep logged in");
    let data = random_bytes(1 << 20, 11);
    let back = rt.block_on(echo_through(hub.services["web"], &data));
    assert!(back == data);
    let disconnected = hub.proc.wait_line("player disconnected");
    assert!(
        disconnected.contains("up=1048576") && disconnected.contains("down=1048576"),
        "{disconnected}"
    );
}

/// `gen-cert` and `revoke` with a CA folder whose `ca.key` is another
/// CA's (copied from another hub, a CA replaced file by file): refused,
/// naming both files. Before, a list or certificate signed with the wrong
/// key was written and announced, and no hub ever took it.
#[test]
fn a_ca_key_of_another_ca_is_refused_naming_both() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [&a, &b] {
        run_ok(
            ferry()
                .args(["hub", "gen-cert", "--ep", "home", "--dir"])
                .arg(d.path()),
        );
    }
    std::fs::copy(b.path().join("ca.key"), a.path().join("ca.key")).unwrap();
    let err = run_err(
        ferry()
            .args(["hub", "gen-cert", "--ep", "cabin", "--dir"])
            .arg(a.path()),
    );
    assert!(
        err.contains("ca.pem") && err.contains("two different CAs"),
        "{err}"
    );
    let err = run_err(
        ferry()
            .args(["hub", "revoke", "--ep", "home", "--dir"])
            .arg(a.path()),
    );
    assert!(err.contains("two different CAs"), "{err}");
}

/// A token over the 256 bytes a hub takes is refused where it is made or
/// configured; before, `hash-token` hashed it and every login then failed
/// as "wrong token", each earning the ep a penalty.
#[test]
fn a_token_longer_than_a_hub_takes_is_refused_where_it_is_set() {
    let long = "x".repeat(300);
    let (ok, said) = common::procs::run_with_input(&["hub", "hash-token"], &long);
    assert!(!ok && said.contains("256"), "{said}");
    let root = shipped_layout();
    // Written in place: the file keeps its mode 0600.
    std::fs::write(root.path().join("certs/ep-token"), &long).unwrap();
    let file = root.path().join("config/ep.toml");
    let err = run_err(ferry().args(["ep", "check", "-c"]).arg(&file));
    assert!(err.contains("256"), "{err}");
}

/// `gen-cert --force` alone renews the hub certificate for the names and
/// addresses it has (the hub's advice 30 days before it ends); before, it
/// said "nothing to do" and the certificate expired anyway. `--ep NAME
/// --force` leaves it alone; an address given as `--hub-name` is refused.
#[test]
fn gen_cert_force_renews_the_hub_certificate_for_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(
        ferry()
            .args([
                "hub",
                "gen-cert",
                "--hub-name",
                "play.example.com",
                "--hub-ip",
                "203.0.113.5",
                "--dir",
            ])
            .arg(d),
    );
    let cert = |d: &std::path::Path| ferry::tls::load_certs(&d.join("hub.pem")).unwrap()[0].clone();
    let first = cert(d);
    run_ok(
        ferry()
            .args(["hub", "gen-cert", "--ep", "cabin", "--force", "--dir"])
            .arg(d),
    );
    assert_eq!(cert(d), first, "--ep --force replaced the hub certificate");
    let out = run_ok(ferry().args(["hub", "gen-cert", "--force", "--dir"]).arg(d));
    assert!(out.contains("hub.pem"), "{out}");
    let renewed = cert(d);
    assert_ne!(renewed, first);
    assert_eq!(
        ferry::tls::subject_names(&renewed),
        ferry::tls::subject_names(&first)
    );
    let err = run_err(
        ferry()
            .args(["hub", "gen-cert", "--hub-name", "203.0.113.9", "--dir"])
            .arg(d),
    );
    assert!(err.contains("--hub-ip"), "{err}");
}

/// `gen-cert` with `-c` and no `--dir` works in the folder of the CA the
/// hub's config names, wherever the shell is; before, it made a new CA in
/// ./certs, whose ep certificates no hub accepted.
#[test]
fn gen_cert_without_dir_works_in_the_folder_of_the_config_s_ca() {
    let root = shipped_layout();
    let elsewhere = tempfile::tempdir().unwrap();
    run_ok(
        ferry()
            .current_dir(elsewhere.path())
            .args(["hub", "-c"])
            .arg(root.path().join("config/hub.toml"))
            .args(["gen-cert", "--ep", "cabin"]),
    );
    assert!(root.path().join("certs/ep-cabin.pem").exists());
    assert!(
        !elsewhere.path().join("certs").exists(),
        "a CA made where the shell was"
    );
}

/// `admin.hide_addresses` from the environment, as every other key; and
/// the check's warnings reach the terminal (logging starts before it).
#[test]
fn hide_addresses_from_the_environment_and_check_warnings_are_shown() {
    let root = shipped_layout();
    let out = run_ok(
        ferry()
            .env("FERRY_HUB_ADMIN__HIDE_ADDRESSES", "true")
            .args(["hub", "check", "-c"])
            .arg(root.path().join("config/hub.toml")),
    );
    assert!(out.contains("addresses masked"), "{out}");
    let file = root.path().join("config/ep.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let cut = text.find("[services").map_or(text.len(), |i| i);
    std::fs::write(&file, &text[..cut]).unwrap();
    let out = run_ok(ferry().args(["ep", "check", "-c"]).arg(&file));
    assert!(out.contains("no [services.NAME]"), "{out}");
}

/// `ep check` says when the ep's certificate is one a hub trusting its
/// `tls.ca` would refuse (another CA's here): before, it said "ok" and the
/// cause showed only as the hub's TLS alert at each login.
#[test]
fn ep_check_warns_of_a_certificate_of_another_ca() {
    let root = shipped_layout();
    let other = tempfile::tempdir().unwrap();
    run_ok(
        ferry()
            .args(["hub", "gen-cert", "--ep", "home", "--dir"])
            .arg(other.path()),
    );
    let certs = root.path().join("certs");
    for f in ["ep-home.pem", "ep-home.key"] {
        std::fs::copy(other.path().join(f), certs.join(f)).unwrap();
    }
    let out = run_ok(
        ferry()
            .args(["ep", "check", "-c"])
            .arg(root.path().join("config/ep.toml")),
    );
    assert!(out.contains("would refuse it"), "{out}");
}
