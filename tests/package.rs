//! What the package installs: the systemd units pass `systemd-analyze
//! verify` and score well on `systemd-analyze security`; `--version` names
//! the commit; the man page and completions come from the CLI itself.
//! (`packaging/build-deb`, run by `.ci/run`, builds the .deb and checks
//! its contents by extracting it.)

mod common;

use common::procs::ferry_cmd;
use std::{path::Path, process::Command};

/// The units with `ExecStart` pointing at the binary under test, since
/// `verify` checks that the program exists.
fn units(dir: &Path) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    ["ferry-hub.service", "ferry-ep.service"]
        .iter()
        .map(|u| {
            let text = std::fs::read_to_string(root.join(u)).unwrap();
            let out = dir.join(u);
            std::fs::write(
                &out,
                text.replace("/usr/bin/ferry", env!("CARGO_BIN_EXE_ferry")),
            )
            .unwrap();
            out
        })
        .collect()
}

#[test]
fn the_systemd_units_verify_and_are_hardened() {
    let Some(analyze) = common::programs::find("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = units(dir.path());
    let out = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    for unit in &units {
        let text = std::fs::read_to_string(unit).unwrap();
        for line in [
            "Type=notify",
            "reload --pid $MAINPID --ready-file /run/ferry-",
            "User=ferry",
            "StateDirectory=ferry",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service",
        ] {
            assert!(text.contains(line), "{}: no {line:?}", unit.display());
        }
        assert!(text.contains("LimitNOFILE="), "{}", unit.display());
        let out = Command::new(&analyze)
            .args(["security", "--offline=yes"])
            .arg(unit)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let line = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no score: {report}"));
        println!("figure: {}", line.trim());
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(score <= 2.0, "{line}");
    }
}

#[test]
fn version_names_the_commit_and_the_man_page_and_completions_come_from_the_cli() {
    let out = ferry_cmd().arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    println!("figure: {}", v.trim());
    assert!(
        v.starts_with(&format!("ferry {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let man = ferry_cmd().arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.contains(".TH ferry 1") && man.contains("hub"), "{man}");
    for shell in ["bash", "zsh", "fish"] {
        let out = ferry_cmd().args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && out.stdout.len() > 500, "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("gen-cert"),
            "{shell}"
        );
    }
}
