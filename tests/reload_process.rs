//! Reloading the real `ferry hub` process: SIGHUP with systemd's readiness
//! protocol around it, `watch_config = false`, and `check`'s plan against
//! the running hub.

mod common;

use common::procs::{HubProc, ferry_cmd, ready_path};
use common::udp::free_range;
use common::*;
use std::{os::unix::net::UnixDatagram, time::Duration};

fn notified(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("an sd_notify message");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn sighup_reloads_between_reloading_and_ready_and_check_prints_the_plan() {
    let certs = Certs::new();
    let admin = free_range(1);
    let o = HubOpts {
        extra: format!("watch_config = false\n[admin]\nbind = \"127.0.0.1:{admin}\"\n"),
        ..Default::default()
    };
    let file = write_hub_toml(&certs, &o, None);
    let notify = certs.path("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let hub = HubProc::start(&file, &[("NOTIFY_SOCKET", notify.display().to_string())], 1);
    assert_eq!(notified(&sock), "READY=1");

    // Service b added in the file; with watch_config = false nothing
    // happens until SIGHUP (the file watcher would have fired in < 1 s).
    let mut o2 = HubOpts {
        extra: o.extra.clone(),
        ..Default::default()
    };
    o2.services.push("b".into());
    let fresh = write_hub_toml(&certs, &o2, None);
    std::fs::rename(fresh, &file).unwrap();
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        if let Some(line) = hub.proc.next_line(left) {
            assert!(!line.contains("configuration reloaded"), "{line}");
        }
    }

    // `check` shows the plan against the running hub, applying nothing.
    let out = ferry_cmd()
        .args(["hub", "check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("figure: {}", text.lines().last().unwrap_or_default());
    assert!(
        text.contains("reload plan against the hub running at")
            && text.contains("services added: b; removed: none"),
        "{text}"
    );

    hub.proc.signal("HUP");
    let reloading = notified(&sock);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let line = hub.proc.wait_line("configuration reloaded (SIGHUP)");
    assert!(line.contains("services added: b"), "{line}");
    assert_eq!(notified(&sock), "READY=1");
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ready_path(&file)).unwrap()).unwrap();
    assert!(ready["services"]["b"].is_string(), "{ready}");
    // A port in use: refused, said why, READY again, nothing changed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{text}[services.c]\nbind = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    hub.proc.signal("HUP");
    assert!(notified(&sock).starts_with("RELOADING=1"));
    let line = hub
        .proc
        .wait_line("refused, the running configuration stays");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert_eq!(notified(&sock), "READY=1");
    hub.proc.signal("TERM");
    assert_eq!(notified(&sock), "STOPPING=1");
}

/// `ferry ROLE reload --pid … --ready-file …`, as systemd's ExecReload
/// runs it: whether it succeeded, and what it said.
fn reload_cmd(role: &str, pid: u32, ready: &std::path::Path) -> (bool, String) {
    let ready = ready.to_str().unwrap();
    common::procs::run(&[
        role,
        "reload",
        "--pid",
        &pid.to_string(),
        "--ready-file",
        ready,
    ])
}

/// `ferry hub reload` (the units' ExecReload) returns once the change is
/// live, a new service's port answering at once, and fails with the
/// reason when the new configuration is refused. Before, ExecReload was
/// `kill -HUP`: `systemctl reload` returned at once and succeeded whatever
/// the reload did.
#[test]
fn ferry_hub_reload_returns_once_the_change_is_live_and_fails_when_refused() {
    let certs = Certs::new();
    let o = HubOpts {
        extra: "watch_config = false\n".into(),
        ..Default::default()
    };
    let file = write_hub_toml(&certs, &o, None);
    let hub = HubProc::start(&file, &[], 1);
    let ready = ready_path(&file);
    let mut o2 = HubOpts {
        extra: o.extra.clone(),
        ..Default::default()
    };
    let port = free_range(1);
    o2.extra += &format!("[services.b]\nbind = \"127.0.0.1:{port}\"\n");
    std::fs::rename(write_hub_toml(&certs, &o2, None), &file).unwrap();
    let (ok, said) = reload_cmd("hub", hub.proc.pid(), &ready);
    assert!(ok && said.contains("services added: b"), "{said}");
    std::net::TcpStream::connect(("127.0.0.1", port))
        .expect("b's port listens once reload returns");
    // A port in use: refused, and said.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{text}[services.c]\nbind = \"127.0.0.1:{busy}\"\n"),
    )
    .unwrap();
    let (ok, said) = reload_cmd("hub", hub.proc.pid(), &ready);
    assert!(
        !ok && said.contains("refused") && said.contains(&busy.to_string()),
        "{said}"
    );
}

/// `ferry ep reload` does the same for an ep started with `--ready-file`.
#[test]
fn ferry_ep_reload_returns_once_done_and_fails_when_refused() {
    let certs = Certs::new();
    let hub = HubProc::start(&write_hub_toml(&certs, &HubOpts::default(), None), &[], 1);
    let mut eo = EpOpts::new(
        &certs,
        vec![("echo".into(), "127.0.0.1:9".parse().unwrap())],
    );
    eo.extra = "watch_config = false\n".into();
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let ready = file.with_extension("ready.json");
    let args = [std::ffi::OsStr::new("--ready-file"), ready.as_os_str()];
    let ep = common::procs::Ferry::spawn_args("ep", &file, &args, &[]);
    ep.wait_line("connected to hub");
    assert!(ready.exists());
    eo.service_extra = "max_players = 7\n".into();
    std::fs::rename(write_ep_toml(&certs, hub.control, hub.channel, &eo), &file).unwrap();
    let (ok, said) = reload_cmd("ep", ep.pid(), &ready);
    assert!(ok && said.contains("configuration reloaded"), "{said}");
    std::fs::write(&file, "this is not toml [").unwrap();
    let (ok, said) = reload_cmd("ep", ep.pid(), &ready);
    assert!(!ok && said.contains("refused"), "{said}");
}

/// A process started without `--ready-file` (by an older unit, before a
/// package upgrade, or an ExecStart of one's own): `ferry hub reload`
/// still reloads it, saying it cannot wait. Before, it refused to send
/// the signal, and `systemctl reload` failed and reloaded nothing.
#[test]
fn ferry_hub_reload_signals_a_hub_without_a_ready_file() {
    let certs = Certs::new();
    let file = write_hub_toml(&certs, &HubOpts::default(), None);
    let hub = HubProc::start(&file, &[], 1);
    let (ok, said) = reload_cmd("hub", hub.proc.pid(), &certs.path("no-such.json"));
    assert!(ok && said.contains("says nothing of its reloads"), "{said}");
    hub.proc.wait_line("configuration reloaded (SIGHUP)");
}

/// A pid that is not a ferry (a number typed wrong) is not signalled: a
/// SIGHUP ends most programs.
#[test]
fn ferry_hub_reload_signals_no_other_program() {
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let certs = Certs::new();
    let (ok, said) = reload_cmd("hub", other.id(), &certs.path("no-such.json"));
    assert!(!ok && said.contains("not ferry"), "{said}");
    assert!(
        other.try_wait().unwrap().is_none(),
        "the other program was stopped"
    );
    other.kill().unwrap();
    other.wait().unwrap();
}

/// A process that ends while `ferry hub reload` waits (killed, crashed)
/// is said at once. Before, the command waited out its 80 s.
#[test]
fn ferry_hub_reload_says_at_once_when_the_hub_ends_while_it_waits() {
    let certs = Certs::new();
    let file = write_hub_toml(&certs, &HubOpts::default(), None);
    let mut hub = HubProc::start(&file, &[], 1);
    let ready = ready_path(&file);
    // Stopped, it cannot take the SIGHUP: the command waits.
    hub.proc.signal("STOP");
    let pid = hub.proc.pid();
    let waiting = std::thread::spawn(move || reload_cmd("hub", pid, &ready));
    // The SIGHUP pending on the stopped hub says the command now waits.
    let pending = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .filter_map(|l| l.strip_prefix("ShdPnd:").or(l.strip_prefix("SigPnd:")))
            .any(|m| u64::from_str_radix(m.trim(), 16).unwrap() & 1 != 0)
    };
    let began = std::time::Instant::now();
    while !pending() {
        assert!(began.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    hub.proc.signal("KILL");
    hub.proc.wait();
    let began = std::time::Instant::now();
    let (ok, said) = waiting.join().unwrap();
    assert!(!ok && said.contains("ended before reporting"), "{said}");
    assert!(
        began.elapsed() < std::time::Duration::from_secs(30),
        "{said}"
    );
}
