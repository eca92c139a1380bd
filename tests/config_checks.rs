//! Configurations that would misbehave are refused by `check` and at
//! start-up with the key named; each role takes only its own `FERRY_`
//! variables.

mod common;

use std::{path::Path, process::Command};

use common::procs::ferry_cmd as ferry;

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The shipped configs beside certificates made as `ferry demo` makes them.
fn shipped() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let cfg = root.path().join("config");
    std::fs::create_dir(&cfg).unwrap();
    for f in ["hub.toml", "ep.toml"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(f),
            cfg.join(f),
        )
        .unwrap();
    }
    ferry::demo::first_run(root.path()).unwrap();
    root
}

/// The shipped `role` config with `line` added at the top.
fn with_line(root: &Path, role: &str, line: &str) -> std::path::PathBuf {
    edited(root, role, |text| format!("{line}\n{text}"))
}

/// The shipped `role` config changed by `edit`, in a file of its own.
fn edited(root: &Path, role: &str, edit: impl FnOnce(&str) -> String) -> std::path::PathBuf {
    let file = root.join(format!("config/{role}.toml"));
    let text = edit(&std::fs::read_to_string(&file).unwrap());
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = root.join(format!("config/{role}-{n}.toml"));
    std::fs::write(&out, text).unwrap();
    out
}

#[test]
fn timings_that_would_break_the_runtime_are_refused_with_the_key_and_range() {
    let root = shipped();
    let cases = [
        ("hub", "heartbeat_interval = \"0s\"", "heartbeat_interval"),
        ("hub", "idle_timeout = \"0s\"", "idle_timeout"),
        ("hub", "handshake_timeout = \"0s\"", "handshake_timeout"),
        ("hub", "player_wait = \"0s\"", "player_wait"),
        (
            "hub",
            "penalty_base = \"20m\"\npenalty_max = \"10m\"",
            "penalty_base",
        ),
        ("ep", "connect_timeout = \"0s\"", "connect_timeout"),
        // Counts past what a hub can start with (a semaphore's limit, an
        // overflow of four times the logins pending).
        (
            "hub",
            "argon2_concurrency = 9223372036854775807",
            "argon2_concurrency",
        ),
        (
            "hub",
            "max_pending_auth = 4611686018427387904",
            "max_pending_auth",
        ),
    ];
    for (role, line, key) in cases {
        let file = with_line(root.path(), role, line);
        for cmd in [vec![role, "check", "-c"], vec![role, "-c"]] {
            let (ok, text) = output(ferry().args(&cmd).arg(&file));
            println!(
                "figure: `{}` with {line:?} → {}",
                cmd.join(" "),
                text.trim()
            );
            assert!(!ok, "{line} was accepted: {text}");
            assert!(
                text.contains(key) && text.contains("allowed"),
                "{line}: the error names neither the key nor the range: {text}"
            );
        }
    }
}

#[test]
fn each_role_takes_only_its_own_environment_variables() {
    let root = shipped();
    let hub = root.path().join("config/hub.toml");
    let ep = root.path().join("config/ep.toml");
    // An ep's variables on a host that also runs the hub.
    let (ok, text) = output(
        ferry()
            .env("FERRY_SERVICES__WEB__LOCAL", "127.0.0.1:1")
            .env("FERRY_TOKEN", "not-for-the-hub")
            .env("FERRY_EP_CHANNEL", "hub.example.com:7001")
            .args(["hub", "check", "-c"])
            .arg(&hub),
    );
    assert!(ok, "the hub tripped over the ep's variables: {text}");
    // And the hub's on a host that also runs the ep.
    let (ok, text) = output(
        ferry()
            .env("FERRY_SERVICES__WEB__BIND", "127.0.0.1:1")
            .env("FERRY_EP_ALLOWLIST", "[\"10.0.0.0/8\"]")
            .env("FERRY_HUB_CHANNEL", "0.0.0.0:7001")
            .args(["ep", "check", "-c"])
            .arg(&ep),
    );
    assert!(ok, "the ep tripped over the hub's variables: {text}");
    // Role prefixes reach their role, for keys both roles have.
    let (ok, text) = output(
        ferry()
            .env("FERRY_HUB_CHANNEL", "127.0.0.1:7999")
            .env("FERRY_SERVICES__WEB__BIND", "127.0.0.1:8999")
            .args(["hub", "check", "-c"])
            .arg(&hub),
    );
    assert!(
        ok && text.contains("127.0.0.1:7999") && text.contains("127.0.0.1:8999"),
        "{text}"
    );
    let (ok, text) = output(
        ferry()
            .env("FERRY_EP_CHANNEL", "127.0.0.1:7998")
            .env("FERRY_SERVICES__WEB__LOCAL", "127.0.0.1:8998")
            .args(["ep", "check", "-c"])
            .arg(&ep),
    );
    assert!(
        ok && text.contains("127.0.0.1:7998") && text.contains("127.0.0.1:8998"),
        "{text}"
    );
    // A known key with a bad value is still an error naming it.
    let (ok, text) = output(
        ferry()
            .env("FERRY_HUB_CHANNEL", "nowhere")
            .args(["hub", "check", "-c"])
            .arg(&hub),
    );
    assert!(!ok && text.to_lowercase().contains("channel"), "{text}");
}

/// The shipped `role` config with `table` appended at the end.
fn with_table(root: &Path, role: &str, table: &str) -> std::path::PathBuf {
    edited(root, role, |text| format!("{text}\n{table}"))
}

#[test]
fn service_types_and_port_ranges_are_checked_and_printed() {
    let root = shipped();
    let good = "[services.valheim]\nbind = \"0.0.0.0:2456-2458\"\ntype = \"udp\"\n\
                [services.site]\nbind = \"0.0.0.0:2457\"\n";
    let (ok, text) = output(ferry().args(["hub", "check", "-c"]).arg(with_table(
        root.path(),
        "hub",
        good,
    )));
    assert!(ok, "{text}");
    assert!(
        text.contains("valheim      udp players on 0.0.0.0:2456-2458"),
        "{text}"
    );
    assert!(text.contains("at most 1024 flows"), "{text}");
    let bad = [
        (
            "[services.a]\nbind = \"0.0.0.0:2456-2458\"\ntype = \"udp\"\n[services.b]\nbind = \"0.0.0.0:2458\"\ntype = \"tcp+udp\"\n",
            "overlaps",
        ),
        (
            "[services.a]\nbind = \"0.0.0.0:10-5\"\n",
            "ends before it starts",
        ),
        (
            "[services.a]\nbind = \"0.0.0.0:1000-60000\"\n",
            "at most 1024 ports",
        ),
        (
            "[services.a]\nbind = \"0.0.0.0:53\"\ntype = \"sctp\"\n",
            "services.a.type",
        ),
        (
            "[services.a]\nbind = \"0.0.0.0:53\"\ntype = \"udp\"\nudp_idle_timeout = \"0s\"\n",
            "udp_idle_timeout",
        ),
    ];
    for (table, says) in bad {
        let (ok, text) = output(ferry().args(["hub", "check", "-c"]).arg(with_table(
            root.path(),
            "hub",
            table,
        )));
        println!("figure: {table:?} → {}", text.trim());
        assert!(!ok && text.contains(says), "{table}: {text}");
    }
    let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(with_table(
        root.path(),
        "ep",
        "[services.valheim]\nlocal = \"127.0.0.1:2456-2458\"\ntype = \"udp\"\n",
    )));
    assert!(ok && text.contains("127.0.0.1:2456-2458 (udp)"), "{text}");
}

#[test]
fn game_keys_are_checked_and_ferry_hub_check_lists_which_names_go_where() {
    let root = shipped();
    let good = "[services.survival]\nbind = \"0.0.0.0:25565\"\ngame = \"minecraft\"\nhosts = [\"Survival.Example.com.\"]\n\
                [services.creative]\nbind = \"0.0.0.0:25565\"\ngame = \"minecraft\"\nhosts = [\"creative.example.com:25565\"]\ndefault_host = true\n\
                [services.bedrock]\nbind = \"0.0.0.0:19132\"\ntype = \"udp\"\ngame = \"bedrock\"\noffline_motd = \"Asleep\"\n";
    let (ok, text) = output(ferry().args(["hub", "check", "-c"]).arg(with_table(
        root.path(),
        "hub",
        good,
    )));
    assert!(ok, "{text}");
    assert!(
        text.contains("players who typed survival.example.com (port shared with creative)"),
        "{text}"
    );
    assert!(
        text.contains("players who typed creative.example.com or any other name"),
        "{text}"
    );
    let mc = |keys: &str| format!("[services.a]\nbind = \"0.0.0.0:25565\"\n{keys}\n");
    let two = |a: &str, b: &str| {
        format!(
            "[services.a]\nbind = \"0.0.0.0:25565\"\ngame = \"minecraft\"\n{a}\n\
             [services.b]\nbind = \"0.0.0.0:25565\"\ngame = \"minecraft\"\n{b}\n"
        )
    };
    let bad = [
        (
            mc("offline_motd = \"x\""),
            "services.a.offline_motd needs services.a.game",
        ),
        (
            mc("hosts = [\"a.test\"]"),
            "services.a.hosts needs services.a.game",
        ),
        (mc("game = \"bedrock\""), "needs type = \"udp\""),
        (mc("game = \"quake\""), "services.a.game"),
        (
            mc("game = \"minecraft\"\nhosts = [\"a b\"]"),
            "is not a host name",
        ),
        (
            mc("game = \"minecraft\"\noffline_icon = \"/nonexistent.png\""),
            "offline_icon",
        ),
        (two("hosts = [\"x.test\"]", ""), "overlaps"),
        (
            two("hosts = [\"x.test\"]", "hosts = [\"X.test\"]"),
            "both name x.test",
        ),
        (
            two("default_host = true", "default_host = true"),
            "one at most",
        ),
        (
            mc(&format!(
                "game = \"minecraft\"\noffline_motd = \"{}\"",
                "z".repeat(300)
            )),
            "offline_motd is longer than 256 characters",
        ),
        (
            "[services.a]\nbind = \"0.0.0.0:25565-25566\"\ngame = \"minecraft\"\n".to_string(),
            "a game service has one port",
        ),
    ];
    for (table, says) in bad {
        let (ok, text) = output(ferry().args(["hub", "check", "-c"]).arg(with_table(
            root.path(),
            "hub",
            &table,
        )));
        assert!(!ok && text.contains(says), "{table}: {text}");
    }
    let ep_bad = [
        ("wake = []", "services.game.wake is empty"),
        ("wake_timeout = \"1m\"", "needs services.game.wake"),
        (
            "wake = [\"true\"]\nsleep = [\"true\"]",
            "sleep needs sleep_after",
        ),
        (
            "wake = [\"true\"]\nsleep_after = \"1m\"",
            "sleep_after needs sleep",
        ),
    ];
    for (keys, says) in ep_bad {
        let table = format!("[services.game]\nlocal = \"127.0.0.1:25565\"\n{keys}\n");
        let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(with_table(
            root.path(),
            "ep",
            &table,
        )));
        assert!(!ok && text.contains(says), "{table}: {text}");
    }
}

#[test]
fn several_hubs_are_checked_and_printed_and_one_hub_works_as_before() {
    let root = shipped();
    // The shipped single-hub file is unchanged and checks as before.
    let (ok, text) = output(
        ferry()
            .args(["ep", "check", "-c"])
            .arg(root.path().join("config/ep.toml")),
    );
    assert!(ok && text.contains("hub       127.0.0.1:7000"), "{text}");
    let several = |hubs: &str| {
        edited(root.path(), "ep", |text| {
            let text = text.replace("hub = \"127.0.0.1:7000\"\n", "");
            // Top-level keys first, then the tables.
            let at = text.find("[tls]").unwrap();
            format!("{}{hubs}\n{}", &text[..at], &text[at..])
        })
    };
    let two = several(
        "transport = \"tls\"\n\
         [[hubs]]\nhub = \"a.example.net:7000\"\n\
         [[hubs]]\nhub = \"b.example.net:7100\"\nchannel = \"b.example.net:7200\"\ntransport = \"quic\"\nserver_name = \"hub-b\"\n",
    );
    let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(&two));
    assert!(ok, "{text}");
    for line in [
        "hub       a.example.net:7000",
        "channel   a.example.net:7001",
        "transport Tls",
        "hub       b.example.net:7100 (certificate must name \"hub-b\")",
        "channel   b.example.net:7200",
        "transport Quic",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    let refused = [
        (
            "hub = \"c.example.net:7000\"\n[[hubs]]\nhub = \"a.example.net:7000\"\n",
            "hub is set at the top level (in the file, a FERRY_ variable or a flag) and [[hubs]]",
        ),
        (
            "[[hubs]]\nhub = \"a.example.net:7000\"\n[[hubs]]\nhub = \"a.example.net:7000\"\n",
            "hubs[1].hub = \"a.example.net:7000\" is named twice",
        ),
        (
            "[[hubs]]\nhub = \"A.Example.net:7000\"\n[[hubs]]\nhub = \"a.example.net:7000\"\n",
            "is named twice",
        ),
        (
            "[[hubs]]\nhub = \"[2001:db8::1]:7000\"\n[[hubs]]\nhub = \"[2001:0db8::1]:7000\"\n",
            "is named twice",
        ),
        ("[[hubs]]\nhub = \"a.example.net\"\n", "hubs[0].hub"),
        (
            "[[hubs]]\nhub = \"a.example.net:7000\"\ntoken = \"x\"\n",
            "found `token`",
        ),
        ("", "no hub: set hub"),
    ];
    for (hubs, why) in refused {
        let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(several(hubs)));
        assert!(
            !ok && text.contains(why),
            "{hubs:?}: no {why:?} in:\n{text}"
        );
    }
}

#[test]
fn a_token_written_in_a_readable_ep_toml_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let root = shipped();
    let file = edited(root.path(), "ep", |text| {
        text.replace(
            "token_file = \"../certs/ep-token\"",
            "token = \"a-token-written-here-0123456789\"",
        )
    });
    let warning = "holds the token and others on this machine may read it";
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(&file));
    assert!(
        ok && text.contains(warning) && text.contains("chmod 600"),
        "{text}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(&file));
    assert!(ok && !text.contains(warning), "{text}");
    // The shipped file keeps it in token_file: nothing to warn of.
    let shipped = root.path().join("config/ep.toml");
    std::fs::set_permissions(&shipped, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(&shipped));
    assert!(ok && !text.contains(warning), "{text}");
}

#[test]
fn byte_rate_caps_are_read_with_units_printed_and_junk_is_refused_naming_the_key() {
    let root = shipped();
    let good = "[services.films]\nbind = \"0.0.0.0:8096\"\nmax_rate = \"8 Mbit\"\n\
                max_rate_per_player = 250000\n";
    let (ok, text) = output(ferry().args(["hub", "check", "-c"]).arg(with_table(
        root.path(),
        "hub",
        good,
    )));
    assert!(ok, "{text}");
    let line = text.lines().find(|l| l.contains("films")).unwrap();
    println!("figure: {}", line.trim());
    assert!(
        line.contains("at most 1000000 B/s (8 Mbit/s) for all")
            && line.contains("at most 250000 B/s (2 Mbit/s) per player"),
        "{text}"
    );
    let bad = [
        ("max_rate = \"fast\"", "max_rate"),
        ("max_rate_per_player = \"2 Mb\"", "max_rate_per_player"),
        ("max_rate_per_player = 100", "max_rate_per_player"),
        ("max_rate = -5", "max_rate"),
        ("max_rate = \"5 MB/h\"", "max_rate"),
    ];
    for (key, says) in bad {
        let table = format!("[services.a]\nbind = \"0.0.0.0:8096\"\n{key}\n");
        let (ok, text) = output(ferry().args(["hub", "check", "-c"]).arg(with_table(
            root.path(),
            "hub",
            &table,
        )));
        println!("figure: {key:?} → {}", text.trim());
        assert!(!ok && text.contains(says), "{key}: {text}");
    }
}

#[test]
fn the_uplink_guard_is_on_by_default_and_check_says_when_it_is_off() {
    let root = shipped();
    let shipped_file = root.path().join("config/ep.toml");
    let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(&shipped_file));
    assert!(ok && !text.contains("uplink guard off"), "{text}");
    let off = edited(root.path(), "ep", |t| format!("uplink_guard = false\n{t}"));
    let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(&off));
    assert!(ok && text.contains("uplink guard off"), "{text}");
    let (ok, text) = output(
        ferry()
            .args(["ep", "check", "-c"])
            .arg(&shipped_file)
            .env("FERRY_EP_UPLINK_GUARD", "false"),
    );
    assert!(ok && text.contains("uplink guard off"), "{text}");
    let bad = edited(root.path(), "ep", |t| format!("uplink_guard = \"no\"\n{t}"));
    let (ok, text) = output(ferry().args(["ep", "check", "-c"]).arg(&bad));
    assert!(!ok && text.contains("uplink_guard"), "{text}");
}

/// A file the configuration names that is a pipe or a device (a typo, a
/// path pasted from elsewhere): `check` says it is not a regular file,
/// at once. Before, a pipe made it wait for ever and `/dev/zero` read
/// until memory ran out.
#[test]
fn a_pipe_or_a_device_named_as_a_file_is_refused_at_once() {
    let root = shipped();
    let pipe = root.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success());
    let pipe = pipe.to_str().unwrap().to_string();
    let cases = [
        ("hub", "ca = \"../certs/ca.pem\"", "ca"),
        ("hub", "cert = \"../certs/hub.pem\"", "cert"),
        ("hub", "key = \"../certs/hub.key\"", "key"),
        ("hub", "crl = \"../certs/crl.pem\"", "crl"),
        (
            "hub",
            "token_hash_file = \"../certs/token.hash\"",
            "token_hash_file",
        ),
        ("ep", "ca = \"../certs/ca.pem\"", "ca"),
        ("ep", "token_file = \"../certs/ep-token\"", "token_file"),
    ];
    for (role, line, key) in cases {
        for bad in [pipe.as_str(), "/dev/zero"] {
            let file = edited(root.path(), role, |t| {
                t.replacen(line, &format!("{key} = {bad:?}"), 1)
            });
            let child = ferry()
                .args([role, "check", "-c"])
                .arg(&file)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id().to_string();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || tx.send(child.wait_with_output()));
            let Ok(out) = rx.recv_timeout(std::time::Duration::from_secs(30)) else {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
                panic!("{role} {key} = {bad}: check hung");
            };
            let out = out.unwrap();
            let ok = out.status.success();
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(!ok, "{role} {key} = {bad}: accepted");
            assert!(
                text.contains("not a regular file"),
                "{role} {key} = {bad}: {text}"
            );
        }
    }
}
