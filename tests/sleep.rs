//! A service at home that sleeps when idle (`sleep`, `sleep_after`) keeps
//! doing so across what can happen to it: a reload of the ep that changes
//! another of its keys, a sleep command that fails, a player who arrives
//! while it stops.

mod common;

use common::*;
use std::{path::Path, time::Duration};

/// Appends `argv[2]` to the file `argv[1]`, then exits with `argv[3]`.
const NOTE: &str =
    "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n'); sys.exit(int(sys.argv[3]))";

/// A command that notes `what` in `log` and exits with `code`.
fn note(log: &Path, what: &str, code: u8) -> String {
    format!(
        "[\"python3\", \"-c\", {NOTE:?}, {:?}, {what:?}, \"{code}\"]",
        log.to_str().unwrap()
    )
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (bounded) until `log` holds at least `n` lines; its lines.
async fn noted(log: &Path, n: usize, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = lines(log);
        if now.len() >= n || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A player who sends `data` and waits for it back, the connection kept
/// open meanwhile (a player who closes its side while the service wakes
/// has left).
async fn round_trip(to: std::net::SocketAddr, data: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    s.write_all(data).await.unwrap();
    let mut back = vec![0; data.len()];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut back))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    back
}

fn hub_opts(t: Transport) -> HubOpts {
    t.hub_opts(HubOpts {
        services: vec!["a".into()],
        ..Default::default()
    })
}

on_every_transport!(a_reload_that_changes_another_key_keeps_the_sleep_timer);

/// The server is up and its sleep timer runs; the ep's file is saved with
/// another key of the service changed: the server still sleeps after
/// `sleep_after`, though no player comes to start a new timer.
async fn a_reload_that_changes_another_key_keeps_the_sleep_timer(t: Transport) {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let hub = TestHub::start(&certs, &hub_opts(t)).await;
    let local = echo_server().await;
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("a".into(), local)]));
    eo.service_extra = format!(
        "wake = [\"true\"]\nsleep = {}\nsleep_after = \"2s\"\n",
        note(&log, "slept", 0)
    );
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let settings = load_ep_file(&file);
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    hub.wait_sessions(1).await;
    assert_eq!(echo_through(hub.service("a"), b"hi").await, b"hi");
    // Its timer runs now; another key of the service changes.
    eo.service_extra += "max_players = 7\n";
    let fresh = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    saved(&handle, fresh, &file).await;
    let slept = noted(&log, 1, Duration::from_secs(20)).await;
    assert_eq!(slept, ["slept"], "the server was never put to sleep");
    hub.stop().await;
}

on_every_transport!(a_server_its_sleep_command_left_up_sleeps_again);

/// A sleep command that fails (a wrong RCON password, say) leaves the
/// server up: the ep finds it up at its next look and puts it to sleep
/// again after `sleep_after`, rather than leaving it up for good.
async fn a_server_its_sleep_command_left_up_sleeps_again(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (hub, ep) = echo_that_sleeps(t, &note(&log, "tried", 1)).await;
    assert_eq!(echo_through(hub.service("a"), b"hi").await, b"hi");
    // The first try, then the next after the ep's look (every 10 s).
    let tried = noted(&log, 2, Duration::from_secs(30)).await;
    assert_eq!(tried, ["tried", "tried"], "tried once, then left up");
    ep.stop().await;
    hub.stop().await;
}

/// A server the wake command runs: notes "woke", takes `argv[4]` seconds
/// to start if given, listens on `argv[1]`, writes its pid, echoes.
const SERVER: &str = r#"
import os, socket, sys, threading, time
port, pidfile, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
open(log, "a").write("woke\n")
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
open(pidfile, "w").write(str(os.getpid()))
def echo(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"#;

/// The sleep command: notes "stopping", lets the server go on a moment
/// (`rcon-cli stop` while it saves: a dial then still reaches it), kills
/// it, takes a while (a world being saved), notes "stopped".
const STOP: &str = r#"
import os, signal, sys, time
pidfile, log = sys.argv[1], sys.argv[2]
open(log, "a").write("stopping\n")
time.sleep(0.5)
os.kill(int(open(pidfile).read()), signal.SIGKILL)
time.sleep(2)
open(log, "a").write("stopped\n")
"#;

on_every_transport!(a_player_who_arrives_while_the_server_stops_wakes_it_after_the_stop);

/// A join while the sleep command still runs (the port already closed)
/// waits for the stop to end, then wakes the server: never a start beside
/// a stop, which would put two servers on one world or have the stop
/// take the new one down.
async fn a_player_who_arrives_while_the_server_stops_wakes_it_after_the_stop(t: Transport) {
    let all = woken_during_a_stop(t, SERVER, STOP, None).await;
    assert_eq!(
        all[..4],
        ["woke", "stopping", "stopped", "woke"],
        "woken beside the stop: {all:?}"
    );
}

/// A server `server` woken by a first player, put to sleep by `stop`
/// after 1 s without one, and a second player arriving once `stop`
/// noted "stopping" (and, with an `edit`, once the ep's file gained those
/// lines for the service and was reloaded): both served; what the log
/// noted, once it holds 4 lines (or after 10 s).
async fn woken_during_a_stop(
    t: Transport,
    server: &str,
    stop: &str,
    edit: Option<&str>,
) -> Vec<String> {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let (log, pidfile) = (dir.path().join("log"), dir.path().join("pid"));
    let _server = KillPidFile(pidfile.clone());
    let (_held, local) = held_port();
    let hub = TestHub::start(&certs, &hub_opts(t)).await;
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("a".into(), local)]));
    let (log_s, pid_s) = (log.to_str().unwrap(), pidfile.to_str().unwrap());
    eo.service_extra = format!(
        "wake = [\"python3\", \"-c\", {server:?}, \"{}\", {pid_s:?}, {log_s:?}]\n\
         wake_timeout = \"20s\"\n\
         sleep = [\"python3\", \"-c\", {stop:?}, {pid_s:?}, {log_s:?}]\nsleep_after = \"1s\"\n",
        local.port()
    );
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let (ep, handle) = TestEp::start_with_handle(load_ep_file(&file)).await;
    hub.wait_sessions(1).await;
    // Woken by the first player.
    assert_eq!(round_trip(hub.service("a"), b"one").await, b"one");
    // A second player while it stops.
    let stopping = noted(&log, 2, Duration::from_secs(20)).await;
    assert_eq!(stopping, ["woke", "stopping"]);
    if let Some(lines) = edit {
        eo.service_extra += lines;
        let fresh = write_ep_toml(&certs, hub.control, hub.channel, &eo);
        saved(&handle, fresh, &file).await;
    }
    assert_eq!(round_trip(hub.service("a"), b"two").await, b"two");
    let all = noted(&log, 4, Duration::from_secs(10)).await;
    ep.stop().await;
    hub.stop().await;
    all
}

on_every_transport!(a_type_written_into_ep_toml_during_a_stop_still_holds_the_join);

/// The ep's file gains `type = "tcp"` for the service (the same ports)
/// while its sleep command runs: a player arriving then still waits for
/// the stop to end before the wake command runs. Before, the reload
/// forgot the stop under way and the wake ran beside it (two servers on
/// one world, or the stop taking the new one down).
async fn a_type_written_into_ep_toml_during_a_stop_still_holds_the_join(t: Transport) {
    let all = woken_during_a_stop(t, SERVER, STOP, Some("type = \"tcp\"\n")).await;
    assert_eq!(
        all[..4],
        ["woke", "stopping", "stopped", "woke"],
        "woken beside the stop: {all:?}"
    );
}

/// An echo server on `home`, and `home + 1` held, never listening (a dial
/// there is refused): keep the socket returned while that matters.
async fn echo_then_dead(home: u16) -> tokio::net::TcpSocket {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", home))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.bind(([127, 0, 0, 1], home + 1).into()).unwrap();
    hold
}

on_every_transport!(a_dial_where_the_service_never_listened_does_not_wake_it);

/// A service over a range of two ports whose server listens on the first
/// only: a player (or a hub) reaching the second finds nothing there, but
/// the server is up, so its wake command is not run beside it, and the
/// hub goes on seeing it up.
async fn a_dial_where_the_service_never_listened_does_not_wake_it(t: Transport) {
    use common::udp::free_range;
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (public, home) = (free_range(2), free_range(2));
    let _hold = echo_then_dead(home).await;
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: format!(
            "[services.a]\nbind = \"127.0.0.1:{public}-{}\"\n",
            public + 1
        ),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let mut eo = t.ep_opts(
        &hub,
        EpOpts::new(&certs, vec![("a".into(), ([127, 0, 0, 1], home).into())]),
    );
    eo.service_extra = format!("wake = {}\n", note(&log, "woke", 0));
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &format!("local = \"127.0.0.1:{home}\""),
        &format!("local = \"127.0.0.1:{home}-{}\"", home + 1),
    );
    std::fs::write(&file, text).unwrap();
    let settings = load_ep_file(&file);
    let ep = TestEp::start(settings);
    hub.wait_sessions(1).await;
    let first = std::net::SocketAddr::from(([127, 0, 0, 1], public));
    assert_eq!(round_trip(first, b"up").await, b"up");
    // The second port: nothing listens at home.
    let second = std::net::SocketAddr::from(([127, 0, 0, 1], public + 1));
    // Closed with a reset, which on loopback can come before the
    // connect is seen to complete.
    if let Ok(mut s) = tokio::net::TcpStream::connect(second).await {
        assert!(closed_by_peer(&mut s, Duration::from_secs(20)).await);
    }
    assert_eq!(round_trip(first, b"still").await, b"still");
    assert_eq!(hub.handle.home("a"), Some("up"));
    assert!(lines(&log).is_empty(), "woken: {:?}", lines(&log));
    ep.stop().await;
    hub.stop().await;
}

on_every_transport!(a_hub_that_dials_a_dead_port_without_waking_first_still_wakes_nothing);

/// A hub (compromised, here written by hand) asks for a port of the
/// range where nothing listens, first as a server-list ping (no wake),
/// then as a join: at once after the ep starts (the service not yet found
/// anywhere), and again once a player reached the first port. The server
/// is up on the first port: the ping's failed dial must not mark it
/// asleep (every hub is told), and the join must not run the wake command
/// beside the running server. Before, the ping made it asleep and the
/// join then woke it, and before any player had reached it the join woke
/// it anyway: on a real host, a second server on the same world.
async fn a_hub_that_dials_a_dead_port_without_waking_first_still_wakes_nothing(t: Transport) {
    use common::udp::free_range;
    use ferry::proto::HubMsg;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let home = free_range(2);
    let local: std::net::SocketAddr = ([127, 0, 0, 1], home).into();
    let _hold = echo_then_dead(home).await;
    let fake = common::fake_hub::AnyFakeHub::start(t, &certs).await;
    let (c, ch, extra) = fake.doors();
    let mut eo = EpOpts::new(&certs, vec![("a".into(), local)]);
    eo.service_extra = format!("wake = {}\n", note(&log, "woke", 0));
    eo.extra = extra;
    let _ep = TestEp::start(ep_over_two_ports(&certs, (c, ch), &eo, home));
    let mut session = fake.login().await;
    // A player on each: (offset, no_wake); each channel's end awaited.
    let dials = [(1, true), (1, false), (0, false), (1, true), (1, false)];
    for (n, (offset, no_wake)) in dials.into_iter().enumerate() {
        let start = HubMsg::Start {
            player: "198.51.100.7:40000".parse().unwrap(),
            service: None,
            udp: false,
            offset,
            flow: None,
            name: None,
            no_wake,
            pace: None,
        };
        let mut chan = session.player("a", start).await;
        if offset == 0 {
            // Served: the echo answers.
            chan.write_all(b"up").await.unwrap();
            let mut buf = [0u8; 2];
            chan.read_exact(&mut buf).await.unwrap();
            continue;
        }
        let mut buf = [0u8; 64];
        let ended = tokio::time::timeout(Duration::from_secs(15), chan.read(&mut buf)).await;
        assert!(
            matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
            "start {n}: the channel was held (a wake?): {ended:?}; log {:?}",
            lines(&log)
        );
    }
    assert!(lines(&log).is_empty(), "woken: {:?}", lines(&log));
}

/// A server the wake command runs, as Minecraft stops: on SIGTERM it
/// closes its port at once, saves for a while, notes "exited", exits.
const SAVING_SERVER: &str = r#"
import os, signal, socket, sys, threading, time
port, pidfile, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
open(log, "a").write("woke\n")
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
def term(*_):
    # Exits whatever happens (the test's folder may be gone already).
    try:
        s.close()
        time.sleep(2)
        open(log, "a").write("exited\n")
    finally:
        os._exit(0)
signal.signal(signal.SIGTERM, term)
open(pidfile, "w").write(str(os.getpid()))
def echo(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    try:
        c, _ = s.accept()
    except OSError:
        # Closed by `term`, which exits in a moment.
        time.sleep(10)
        continue
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"#;

/// A sleep command that asks the server to stop and returns at once
/// (`rcon-cli stop`, `kill`).
const ASK_STOP: &str = r#"
import os, signal, sys
pidfile, log = sys.argv[1], sys.argv[2]
open(log, "a").write("stopping\n")
os.kill(int(open(pidfile).read()), signal.SIGTERM)
"#;

on_every_transport!(a_sleep_command_that_returns_before_the_server_exits_still_holds_the_wake);

/// The sleep command returns while the server still saves (its port
/// already closed): a join then waits until the server exited before the
/// wake command runs, and is served.
async fn a_sleep_command_that_returns_before_the_server_exits_still_holds_the_wake(t: Transport) {
    let all = woken_during_a_stop(t, SAVING_SERVER, ASK_STOP, None).await;
    assert_eq!(
        all[..4],
        ["woke", "stopping", "exited", "woke"],
        "woken before the server exited: {all:?}"
    );
}

/// A sleep command that fails (a wrong RCON password) after a while,
/// leaving the server up.
const FAILING_STOP: &str = r#"
import sys, time
log = sys.argv[2]
open(log, "a").write("stopping\n")
time.sleep(1.5)
open(log, "a").write("failed\n")
sys.exit(1)
"#;

on_every_transport!(a_player_who_waited_for_a_stop_that_failed_finds_the_server_not_a_second_one);

/// A join while the sleep command runs waits for it; the command fails
/// and the server is still up: the player is served by it, and the wake
/// command is not run beside it.
async fn a_player_who_waited_for_a_stop_that_failed_finds_the_server_not_a_second_one(
    t: Transport,
) {
    // Started as `systemctl start` does: the wake command ends at once,
    // so no running command of its own keeps a second one from running.
    let launcher = format!(
        "import subprocess, sys\n\
         subprocess.Popen([sys.executable, '-c', {SERVER:?}] + sys.argv[1:], start_new_session=True)\n"
    );
    let all = woken_during_a_stop(t, &launcher, FAILING_STOP, None).await;
    // Next comes the next stop, a second after the player left; a second
    // server would have noted "woke" well before.
    assert_eq!(
        all[..4],
        ["woke", "stopping", "failed", "stopping"],
        "woken beside the running server: {all:?}"
    );
}

on_every_transport!(a_service_renamed_while_it_wakes_is_not_woken_twice);

/// The ep's file renames a service while its server is still starting
/// (same local port, same wake command): a player of the new name waits
/// for that server rather than running the wake command a second time
/// (two servers on one world).
async fn a_service_renamed_while_it_wakes_is_not_woken_twice(t: Transport) {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let (log, pidfile) = (dir.path().join("log"), dir.path().join("pid"));
    let _server = KillPidFile(pidfile.clone());
    let (_held, local) = held_port();
    let hub = TestHub::start(
        &certs,
        &t.hub_opts(HubOpts {
            services: vec!["a".into(), "b".into()],
            ..Default::default()
        }),
    )
    .await;
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("a".into(), local)]));
    let (log_s, pid_s) = (log.to_str().unwrap(), pidfile.to_str().unwrap());
    eo.service_extra = format!(
        "wake = [\"python3\", \"-c\", {SERVER:?}, \"{}\", {pid_s:?}, {log_s:?}, \"4\"]\n\
         wake_timeout = \"20s\"\n",
        local.port()
    );
    let file = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    let settings = load_ep_file(&file);
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    hub.wait_sessions(1).await;
    // The first player wakes it; the server takes 4 s to start.
    let first = tokio::spawn(round_trip(hub.service("a"), b"one"));
    assert_eq!(noted(&log, 1, Duration::from_secs(20)).await, ["woke"]);
    eo.services = vec![("b".into(), local)];
    let fresh = write_ep_toml(&certs, hub.control, hub.channel, &eo);
    saved(&handle, fresh, &file).await;
    assert_eq!(round_trip(hub.service("b"), b"two").await, b"two");
    assert_eq!(
        lines(&log),
        ["woke"],
        "woken a second time under its new name"
    );
    first.abort();
    hub.stop().await;
}

/// The ep of `eo` for hub doors `c` and `ch`, its one service's `local`
/// the two ports from `home`.
fn ep_over_two_ports(
    certs: &Certs,
    (c, ch): (std::net::SocketAddr, std::net::SocketAddr),
    eo: &EpOpts,
    home: u16,
) -> ferry::config::ep::EpSettings {
    let file = write_ep_toml(certs, c, ch, eo);
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &format!("local = \"127.0.0.1:{home}\""),
        &format!("local = \"127.0.0.1:{home}-{}\"", home + 1),
    );
    std::fs::write(&file, text).unwrap();
    load_ep_file(&file)
}

/// A UDP game at `port` that echoes datagrams and ignores joins (RakNet's
/// Open Connection Request 1), as a Bedrock server does with one it finds
/// malformed and any other UDP game with all of them; `bedrock`: it
/// answers list pings with a pong. The pings are counted in `pings`.
async fn ignoring_joins(
    port: u16,
    bedrock: bool,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use ferry::game::bedrock::MAGIC;
    let socket = tokio::net::UdpSocket::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let pings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = pings.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let answer = match buf[0] {
                0x01 => {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if !bedrock {
                        continue;
                    }
                    let mut pong = vec![0x1c];
                    pong.extend_from_slice(&buf[1..9]);
                    pong.extend_from_slice(&[7; 8]);
                    pong.extend_from_slice(&MAGIC);
                    pong.extend_from_slice(b"\x00\x05MCPE;");
                    pong
                }
                0x05 => continue,
                _ => buf[..n].to_vec(),
            };
            let _ = socket.send_to(&answer, from).await;
        }
    });
    pings
}

on_every_transport!(a_udp_dial_to_a_tcp_service_just_started_tells_no_hub_it_is_down);

/// A TCP service with no `type` in ep.toml (a Java server, as README
/// writes it), right after the ep starts, before any player has found it:
/// a hub sends it a UDP flow (here a hub whose service is `tcp+udp`; a
/// compromised hub can at will), refused at home. Before, the ep took the
/// refusal for the service's and told every hub it was down: their server
/// lists answered "offline", `/health/SERVICE` said 503. Now it tries the
/// service's first port, finds it up, and changes nothing.
async fn a_udp_dial_to_a_tcp_service_just_started_tells_no_hub_it_is_down(t: Transport) {
    use common::udp::free_range;
    let certs = Certs::new();
    let (home, tries) = counting_greeter().await;
    let port = free_range(1);
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: format!("[services.mc]\nbind = \"127.0.0.1:{port}\"\ntype = \"tcp+udp\"\n"),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), home)]));
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let p = common::udp::player().await;
    // The ep looks at the service's TCP port for each refusal, one look
    // at a time: a second try means the first look has decided.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tries.load(std::sync::atomic::Ordering::Relaxed) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no look at the first port"
        );
        p.send_to(b"hello", ("127.0.0.1", port)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It found the service up: no hub is told it is down.
    assert_ne!(hub.handle.home("mc"), Some("down"));
}

on_every_transport!(a_hub_cannot_have_every_hub_told_a_playing_udp_game_is_down);

/// A UDP game up and answering (a Bedrock server, or another game that
/// ignores RakNet), and one hub (compromised) that starts a flow on a
/// port of the range with nothing there, and a join the server ignores:
/// the state every hub is told stays "up", and the wake command does not
/// run beside the server. Before, either made the ep report it down (or
/// asleep) to every hub, so the honest hubs' health checks and server
/// lists said offline, and with `wake` the join ran the wake command
/// beside the running server.
/// Also right after the ep starts, before any flow heard the game: the
/// ep's own look finds it there (a list ping, or for a game that is not
/// Bedrock its host answering), where before the join's silence ran the
/// wake command beside it.
async fn a_hub_cannot_have_every_hub_told_a_playing_udp_game_is_down(t: Transport) {
    for bedrock in [true, false] {
        for wake in [false, true] {
            for heard in [true, false] {
                playing_game_told_down(t, (bedrock, wake, heard)).await;
            }
        }
    }
}

async fn playing_game_told_down(t: Transport, (bedrock, wake, heard): (bool, bool, bool)) {
    use common::udp::{eventually, free_range};
    use ferry::proto::HubMsg;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let home = free_range(2);
    let pings = ignoring_joins(home, bedrock).await;
    let fake = common::fake_hub::AnyFakeHub::start(t, &certs).await;
    let (c, ch, extra) = fake.doors();
    let local: std::net::SocketAddr = ([127, 0, 0, 1], home).into();
    let mut eo = EpOpts::new(&certs, vec![("bed".into(), local)]);
    eo.service_extra = "type = \"udp\"\n".into();
    if wake {
        eo.service_extra += &format!("wake = {}\n", note(&log, "woke", 0));
    }
    eo.extra = extra;
    let settings = ep_over_two_ports(&certs, (c, ch), &eo, home);
    let (_ep, handle) = TestEp::start_with_handle(settings).await;
    let mut session = fake.login().await;
    let flow = |offset| HubMsg::Start {
        player: "198.51.100.7:40000".parse().unwrap(),
        service: None,
        udp: true,
        offset,
        flow: None,
        name: None,
        no_wake: false,
        pace: None,
    };
    let framed = |d: &[u8]| {
        let mut out = Vec::new();
        ferry::datagram::encode(&mut out, d);
        out
    };
    let home_is = || {
        handle.status()["services"][0]["home"]
            .as_str()
            .map(str::to_string)
    };
    let away = || matches!(home_is().as_deref(), Some("down" | "asleep" | "waking"));
    let case = format!("bedrock {bedrock}, wake {wake}, heard first {heard}");
    let mut held = Vec::new();
    // Once the game was heard, its host's firewall may drop a TCP try of
    // the port (ufw, Windows): that says nothing of the game either.
    let _dropping = match heard {
        true => common::udp::tcp_that_says_nothing(local).await,
        false => None,
    };
    if heard {
        // A player that plays: the server answers, so it is up.
        let mut playing = session.player("bed", flow(0)).await;
        playing.write_all(&framed(b"move")).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), playing.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(n)) if n > 0),
            "the server answered: {n:?}"
        );
        eventually("up", Duration::from_secs(10), || {
            home_is().as_deref() == Some("up")
        })
        .await;
        // A flow on the range's other port, where nothing listens: its
        // host says so at once (an ICMP), which says nothing of the game.
        let mut nowhere = session.player("bed", flow(1)).await;
        nowhere.write_all(&framed(b"\x01probe")).await.unwrap();
        nowhere.write_all(&framed(b"\x01again")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            home_is().as_deref(),
            Some("up"),
            "a flow where nothing listens: {case}"
        );
        held.extend([playing, nowhere]);
    }
    // A join the server ignores, where it plays: after its silence (2 s)
    // the ep's own look (a list ping first), unless the state changed
    // first, as it did before; then whatever a slower path might still do.
    let mut ignored = session.player("bed", flow(0)).await;
    let mut join = vec![0x05];
    join.extend_from_slice(&ferry::game::bedrock::MAGIC);
    ignored.write_all(&framed(&join)).await.unwrap();
    let pinged = || pings.load(std::sync::atomic::Ordering::SeqCst);
    eventually("a look, or a change", Duration::from_secs(15), || {
        pinged() >= 1 || away()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !away(),
        "a join the server ignores: {:?}: {case}",
        home_is()
    );
    assert!(lines(&log).is_empty(), "woken: {:?}: {case}", lines(&log));
    drop((held, ignored));
}

on_every_transport!(a_player_that_shuts_its_side_while_the_server_wakes_gets_the_answer);

/// A player that sends its request and shuts its sending side at once (`nc
/// -N`, an HTTP/1.0 client, a script) while the server is woken (a second
/// to start here): it gets the whole answer and a clean end. Before, the
/// ep took the end for a player who left, and the player was reset.
async fn a_player_that_shuts_its_side_while_the_server_wakes_gets_the_answer(t: Transport) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let (log, pidfile) = (dir.path().join("log"), dir.path().join("pid"));
    let _server = KillPidFile(pidfile.clone());
    let (_held, local) = held_port();
    let hub = TestHub::start(&certs, &hub_opts(t)).await;
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("a".into(), local)]));
    let (log_s, pid_s) = (log.to_str().unwrap(), pidfile.to_str().unwrap());
    eo.service_extra = format!(
        "wake = [\"python3\", \"-c\", {SERVER:?}, \"{}\", {pid_s:?}, {log_s:?}, \"1\"]\n\
         wake_timeout = \"20s\"\n",
        local.port()
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let mut s = tokio::net::TcpStream::connect(hub.service("a"))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut back)).await;
    assert!(matches!(read, Ok(Ok(_))), "{read:?}, after {back:?}");
    assert_eq!(back, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(lines(&log), ["woke"]);
}

on_every_transport!(a_server_running_when_the_ep_starts_sleeps_with_no_player);

/// A server already running when the ep starts (its own unit started it
/// at boot) and no player ever: it sleeps after `sleep_after`. Before, the
/// timer started only at a first player or server-list ping, so it ran on.
async fn a_server_running_when_the_ep_starts_sleeps_with_no_player(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_hub, _ep) = echo_that_sleeps(t, &note(&log, "slept", 0)).await;
    assert_eq!(noted(&log, 1, Duration::from_secs(15)).await, ["slept"]);
}

/// A hub and an ep over `t` serving `a`, an echo server already up, with
/// `sleep` (argv as TOML) after 1 s without a player; the ep logged in.
async fn echo_that_sleeps(t: Transport, sleep: &str) -> (TestHub, TestEp) {
    let certs = Certs::new();
    let hub = TestHub::start(&certs, &hub_opts(t)).await;
    let local = echo_server().await;
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("a".into(), local)]));
    eo.service_extra = format!("wake = [\"true\"]\nsleep = {sleep}\nsleep_after = \"1s\"\n");
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    (hub, ep)
}

on_every_transport!(a_server_that_opens_its_port_after_the_ep_starts_sleeps_with_no_player);

/// A server that opens its port a while after the ep starts (both started
/// at boot; a Java server takes seconds): it sleeps after `sleep_after`
/// with no player ever. Before, the ep's one look at start found it
/// closed and nothing looked again until a player came.
async fn a_server_that_opens_its_port_after_the_ep_starts_sleeps_with_no_player(t: Transport) {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let hub = TestHub::start(&certs, &hub_opts(t)).await;
    let (held, local) = held_port();
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("a".into(), local)]));
    eo.service_extra = format!(
        "wake = [\"true\"]\nsleep = {}\nsleep_after = \"1s\"\n",
        note(&log, "slept", 0)
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    // The server comes up once the ep has looked and found nothing.
    let _server = held.listen(16).unwrap();
    assert_eq!(noted(&log, 1, Duration::from_secs(30)).await, ["slept"]);
}
