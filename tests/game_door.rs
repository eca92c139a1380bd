//! The game door with a Minecraft client and server written from the
//! protocol pages: the hub answers the server list and a join while home
//! is away, passes both through when it is there, routes several servers
//! on one port by the name typed, and closes what is not a handshake.
//! (tests/game_clients.rs does the same with the real npm clients.)

mod common;

use common::minecraft::{self, disconnect_text, fake_server, join, motd, ping};
use common::udp::free_range;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn mc_hub(t: Transport, port: u16, service_keys: &str) -> HubOpts {
    t.hub_opts(HubOpts {
        services: vec![],
        extra: format!(
            "[services.mc]\nbind = \"127.0.0.1:{port}\"\ngame = \"minecraft\"\n{service_keys}"
        ),
        ..Default::default()
    })
}

fn at(port: u16) -> std::net::SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// Waits until the hub sees `service` at home as `state`.
async fn home_is(hub: &TestHub, service: &str, state: &str) {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while hub.handle.home(service) != Some(state) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{service} never {state}: {:?}",
        hub.handle.home(service)
    );
}

on_every_transport!(
    the_hub_answers_for_a_server_that_is_away_and_passes_through_when_it_is_there,
    hostnames_route_players_on_one_port,
);

async fn the_hub_answers_for_a_server_that_is_away_and_passes_through_when_it_is_there(
    t: Transport,
) {
    let certs = Certs::new();
    let port = free_range(1);
    let o = mc_hub(
        t,
        port,
        "offline_motd = \"Asleep, join to wake\"\noffline_message = \"Gone fishing\"\n",
    );
    let hub = TestHub::start(&certs, &o).await;
    // No ep: the hub answers the list and the join itself.
    let s = ping(at(port), "play.test").await.unwrap();
    assert_eq!(motd(&s), "Asleep, join to wake");
    assert_eq!(s["version"]["protocol"], 765, "the client's own protocol");
    let (id, body) = join(at(port), "play.test").await.unwrap();
    assert_eq!((id, disconnect_text(&body)), (0, "Gone fishing".into()));

    // Home is there: the real server's answers.
    let server = fake_server("REAL").await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), server)]));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    assert_eq!(motd(&ping(at(port), "play.test").await.unwrap()), "REAL");
    let (_, body) = join(at(port), "play.test").await.unwrap();
    assert_eq!(
        disconnect_text(&body),
        "REAL play.test",
        "the handshake arrived untouched"
    );
    home_is(&hub, "mc", "up").await;

    // The server stops while the ep stays: the ping that finds it gone is
    // still answered (by the hub), and so are the ones after it.
    let (_held, dead) = dead_port();
    let eo2 = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), dead)]));
    ep.stop().await;
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo2));
    // Until the new session is in, the hub answers as for no ep; once it
    // is, the ping that finds the server gone is answered all the same.
    for _ in 0..200 {
        let shown = motd(&ping(at(port), "play.test").await.unwrap());
        assert_eq!(shown, "Asleep, join to wake");
        if hub.handle.home("mc") == Some("down") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    home_is(&hub, "mc", "down").await;
    assert_eq!(
        motd(&ping(at(port), "play.test").await.unwrap()),
        "Asleep, join to wake"
    );
    let (_, body) = join(at(port), "play.test").await.unwrap();
    assert_eq!(disconnect_text(&body), "Gone fishing");
    ep.stop().await;
    hub.stop().await;
}

async fn hostnames_route_players_on_one_port(t: Transport) {
    let certs = Certs::new();
    let port = free_range(1);
    let (a, b, c) = (
        fake_server("A").await,
        fake_server("B").await,
        fake_server("C").await,
    );
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: format!(
            "[services.a]\nbind = \"127.0.0.1:{port}\"\ngame = \"minecraft\"\nhosts = [\"a.test\"]\n\
             [services.b]\nbind = \"127.0.0.1:{port}\"\ngame = \"minecraft\"\nhosts = [\"B.test\", \"b2.test\"]\n\
             [services.c]\nbind = \"127.0.0.1:{port}\"\ngame = \"minecraft\"\nhosts = [\"c.test\"]\n"
        ),
        ..Default::default()
    });
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let svcs = vec![("a".into(), a), ("b".into(), b), ("c".into(), c)];
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, svcs));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    for (host, want) in [
        ("a.test", "A"),
        ("b.test", "B"),
        ("B2.Test.", "B"),
        ("c.test\0FML3\0", "C"),
    ] {
        assert_eq!(motd(&ping(at(port), host).await.unwrap()), want, "{host}");
    }
    // A BungeeCord proxy in front (`ip_forward`) appends the player's
    // address, UUID and skin to the name: over 1 KiB.
    let forwarded = format!(
        "b.test\x00203.0.113.7\x00{}\x00{}",
        "0".repeat(32),
        "p".repeat(1500)
    );
    assert_eq!(motd(&ping(at(port), &forwarded).await.unwrap()), "B");
    // Handshakes whose length begins with the byte a legacy ping starts
    // with (254 bytes: `FE 01`, as 1.4's ping) are handshakes.
    for pad in 230..=262 {
        let host = format!("c.test\x00{}", "x".repeat(pad));
        assert_eq!(motd(&ping(at(port), &host).await.unwrap()), "C", "{pad}");
    }
    let (_, body) = join(at(port), "b2.test").await.unwrap();
    assert_eq!(disconnect_text(&body), "B b2.test");
    // An unknown name: told which exist, and counted.
    let (_, body) = join(at(port), "nope.test").await.unwrap();
    let told = disconnect_text(&body);
    assert!(
        told.contains("nope.test") && told.contains("a.test") && told.contains("b2.test"),
        "{told}"
    );
    assert!(
        hub.handle
            .refusals()
            .get("unknown server name")
            .is_some_and(|n| *n >= 1)
    );

    // Junk and silence are closed within 5 s and counted; a player in the
    // middle of a session is not disturbed.
    let mut playing = tokio::net::TcpStream::connect(at(port)).await.unwrap();
    let mut hello = minecraft::handshake("a.test", 2);
    hello.extend(minecraft::packet(0, b"\x05steve"));
    playing.write_all(&hello).await.unwrap();
    let _ = minecraft::read_packet(&mut playing).await.unwrap();
    let before = hub
        .handle
        .refusals()
        .get("no game handshake")
        .copied()
        .unwrap_or(0);
    let mut junk = tokio::net::TcpStream::connect(at(port)).await.unwrap();
    junk.write_all(&[0x7f; 2048]).await.unwrap_or(());
    let mut silent = tokio::net::TcpStream::connect(at(port)).await.unwrap();
    let started = std::time::Instant::now();
    // Nothing but the door's 5 s would close either: bounds for a
    // loaded machine.
    assert!(
        closed_by_peer(&mut junk, Duration::from_secs(20)).await,
        "junk closed"
    );
    assert!(
        closed_by_peer(&mut silent, Duration::from_secs(20)).await,
        "silence closed"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let after = hub
        .handle
        .refusals()
        .get("no game handshake")
        .copied()
        .unwrap_or(0);
    assert!(after >= before + 2, "{before} → {after}");

    // default_host takes the names nobody claims, after a reload.
    let o2 = HubOpts {
        services: vec![],
        extra: o
            .extra
            .replace("hosts = [\"c.test\"]", "default_host = true"),
        ..Default::default()
    };
    let reloaded = hub.reload_to(&certs, &o2, &file).await;
    assert!(reloaded.is_ok(), "{reloaded:?}");
    assert_eq!(motd(&ping(at(port), "nope.test").await.unwrap()), "C");
    assert_eq!(motd(&ping(at(port), "a.test").await.unwrap()), "A");
    // A name beyond ASCII, which Java's case-insensitive compare (a
    // proxy at home choosing by name) takes for `b2.test` (a long s for
    // the s): told the names, never sent home as the default's.
    let (_, body) = join(at(port), "b2.te\u{17f}t").await.unwrap();
    let told = disconnect_text(&body);
    assert!(told.contains("a.test") && !told.starts_with("C "), "{told}");
    drop(playing);
    let _ = junk.read(&mut [0u8; 1]).await;
    ep.stop().await;
    hub.stop().await;
}

/// A server that takes a second to start, started by the ep's `wake`
/// command: it writes its pid, then answers a login with a Disconnect
/// saying "WOKEN" and the host typed.
const LATE_SERVER: &str = r#"
import os, socket, sys, time
port, pidfile = int(sys.argv[1]), sys.argv[2]
open(pidfile, "w").write(str(os.getpid()))
time.sleep(1)
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(16)
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
while True:
    c, _ = l.accept()
    data = b""
    c.settimeout(5)
    try:
        while len(data) < 8:
            chunk = c.recv(1024)
            if not chunk:
                break
            data += chunk
        host = data[5:5 + data[4]].decode()
        text = ('{"text": "WOKEN %s"}' % host).encode()
        body = b"\x00" + varint(len(text)) + text
        c.sendall(varint(len(body)) + body)
    except Exception:
        pass
    c.close()
"#;

on_every_transport!(a_join_wakes_a_sleeping_server_and_a_ping_does_not);

async fn a_join_wakes_a_sleeping_server_and_a_ping_does_not(t: Transport) {
    let certs = Certs::new();
    let (port, (_held, local)) = (free_range(1), held_port());
    let local = local.port();
    let o = mc_hub(t, port, "starting_motd = \"Warming up\"\n");
    let hub = TestHub::start(&certs, &o).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let _server = KillPidFile(pidfile.clone());
    let pid = pidfile.to_str().unwrap();
    let wake = format!(
        "wake = [\"python3\", \"-c\", {:?}, \"{local}\", \"{pid}\"]\n\
         sleep = [\"python3\", \"-c\", \"import os, sys; os.kill(int(open(sys.argv[1]).read()), 15)\", \"{pid}\"]\n\
         sleep_after = \"2s\"\n",
        LATE_SERVER
    );
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), at(local))]));
    eo.service_extra = wake;
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    // A server-list ping finds it asleep and leaves it so. (The ep's word
    // that it sleeps rides the control connection, the failed dial the
    // channel: the first answer may say "Offline" if it comes first.)
    ping(at(port), "play.test").await.unwrap();
    home_is(&hub, "mc", "sleeping").await;
    assert_eq!(
        motd(&ping(at(port), "play.test").await.unwrap()),
        "Sleeping \u{2014} join to wake it"
    );
    assert!(!pidfile.exists(), "a ping ran the wake command");

    // A join wakes it, waits for it, and reaches it.
    let joined = tokio::spawn(join(at(port), "play.test"));
    home_is(&hub, "mc", "waking").await;
    assert_eq!(
        motd(&ping(at(port), "play.test").await.unwrap()),
        "Warming up"
    );
    let started = std::time::Instant::now();
    let (_, body) = joined.await.unwrap().unwrap();
    assert_eq!(disconnect_text(&body), "WOKEN play.test");
    println!(
        "join → server answered: {:?} after waking",
        started.elapsed()
    );
    home_is(&hub, "mc", "up").await;

    // No player for `sleep_after`: the sleep command stops it, however
    // often server lists ping it meanwhile (a ping is not a player).
    let pinging = tokio::spawn(async move {
        loop {
            let _ = ping(at(port), "play.test").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    home_is(&hub, "mc", "sleeping").await;
    pinging.abort();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(at(local)).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(stopped.is_ok(), "the sleep command stopped the server");
    ep.stop().await;
    hub.stop().await;
}

/// A Bedrock server's list answer: an Unconnected Pong naming `motd`.
async fn bedrock_server(motd: &'static str) -> std::net::SocketAddr {
    bedrock_server_at("127.0.0.1:0".parse().unwrap(), motd).await
}

async fn bedrock_server_at(at: std::net::SocketAddr, motd: &'static str) -> std::net::SocketAddr {
    let s = tokio::net::UdpSocket::bind(at).await.unwrap();
    let at = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            if n >= 33 && buf[0] == 0x01 {
                let _ = s.send_to(&pong(&buf[1..9], motd), from).await;
            }
        }
    });
    at
}

const MAGIC: [u8; 16] = [
    0x00, 0xff, 0xff, 0x00, 0xfe, 0xfe, 0xfe, 0xfe, 0xfd, 0xfd, 0xfd, 0xfd, 0x12, 0x34, 0x56, 0x78,
];

fn pong(time: &[u8], motd: &str) -> Vec<u8> {
    let text = format!("MCPE;{motd};748;1.21.40;1;10;1;x;Survival;1;1;1;");
    let mut out = vec![0x1c];
    out.extend_from_slice(time);
    out.extend(7u64.to_be_bytes());
    out.extend(MAGIC);
    out.extend((text.len() as u16).to_be_bytes());
    out.extend(text.as_bytes());
    out
}

/// A RakNet Unconnected Ping (time 123).
fn ping_datagram() -> Vec<u8> {
    let mut ping = vec![0x01];
    ping.extend(123u64.to_be_bytes());
    ping.extend(MAGIC);
    ping.extend(9u64.to_be_bytes());
    ping
}

/// The MOTD a Bedrock server-list ping of `to` gets back.
async fn bedrock_ping(to: std::net::SocketAddr) -> Option<String> {
    let p = common::udp::player().await;
    let got = common::udp::ask(&p, to, &ping_datagram(), Duration::from_secs(2)).await?;
    assert_eq!((got[0], &got[1..9]), (0x1c, &123u64.to_be_bytes()[..]));
    assert_eq!(&got[17..33], &MAGIC);
    let n = u16::from_be_bytes([got[33], got[34]]) as usize;
    let text = String::from_utf8_lossy(&got[35..35 + n]).into_owned();
    Some(text.split(';').nth(1).unwrap_or_default().to_string())
}

on_every_transport!(bedrock_lists_the_offline_motd_while_home_is_away);

async fn bedrock_lists_the_offline_motd_while_home_is_away(t: Transport) {
    let certs = Certs::new();
    let port = free_range(1);
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: format!(
            "[services.be]\nbind = \"127.0.0.1:{port}\"\ntype = \"udp\"\ngame = \"bedrock\"\n\
             offline_motd = \"Asleep; back soon\"\n"
        ),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    assert_eq!(
        bedrock_ping(at(port)).await.as_deref(),
        Some("Asleep, back soon")
    );
    let server = bedrock_server("REAL").await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("be".into(), server)]));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    let mut got = None;
    for _ in 0..20 {
        got = bedrock_ping(at(port)).await;
        if got.as_deref() == Some("REAL") {
            break;
        }
    }
    assert_eq!(got.as_deref(), Some("REAL"));
    ep.stop().await;
    hub.wait_sessions(0).await;
    assert_eq!(
        bedrock_ping(at(port)).await.as_deref(),
        Some("Asleep, back soon")
    );
    hub.stop().await;
}

on_every_transport!(a_denied_source_gets_no_server_list_answer);

/// A Bedrock port answers server-list pings itself while home is away: not
/// to a source its `deny` list refuses, so a ping forged "from" a victim is
/// not reflected (the pong is several times the ping) and the denied learn
/// nothing.
async fn a_denied_source_gets_no_server_list_answer(t: Transport) {
    let certs = Certs::new();
    let port = free_range(1);
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: format!(
            "[services.be]\nbind = \"127.0.0.1:{port}\"\ntype = \"udp\"\ngame = \"bedrock\"\n\
             deny = [\"127.0.0.2/32\"]\n"
        ),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let denied = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    denied.send_to(&ping_datagram(), at(port)).await.unwrap();
    // Taken in order: once the allowed source's answer is back, any answer
    // to the denied one would be in its socket already.
    assert!(bedrock_ping(at(port)).await.is_some());
    let mut buf = [0u8; 1500];
    let answered = denied.try_recv_from(&mut buf);
    assert!(
        matches!(&answered, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the denied source got {answered:?}"
    );
    hub.stop().await;
}

/// As `LATE_SERVER`, and it writes one line per connection that sends it
/// anything (a probe that only connects is not a player) to argv[3].
const COUNTING_SERVER: &str = r#"
import os, socket, sys, time
port, pidfile, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
open(pidfile, "w").write(str(os.getpid()))
time.sleep(1)
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(16)
while True:
    c, _ = l.accept()
    c.settimeout(5)
    try:
        data = c.recv(1024)
        if data:
            with open(log, "a") as f:
                f.write(data[5:5 + data[4]].decode() + "\n")
            body = b'\x00\x11{"text": "HELLO"}'
            c.sendall(bytes([len(body)]) + body)
    except Exception:
        pass
    c.close()
"#;

on_every_transport!(a_player_who_leaves_while_the_server_wakes_is_never_dialled);

async fn a_player_who_leaves_while_the_server_wakes_is_never_dialled(t: Transport) {
    let certs = Certs::new();
    let (port, (_held, local)) = (free_range(1), held_port());
    let local = local.port();
    let hub = TestHub::start(&certs, &mc_hub(t, port, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let (pidfile, log) = (dir.path().join("pid"), dir.path().join("log"));
    let _server = KillPidFile(pidfile.clone());
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), at(local))]));
    eo.service_extra = format!(
        "wake = [\"python3\", \"-c\", {:?}, \"{local}\", {:?}, {:?}]\n",
        COUNTING_SERVER,
        pidfile.to_str().unwrap(),
        log.to_str().unwrap()
    );
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    // A join that gives up while the server starts.
    let mut gone = tokio::net::TcpStream::connect(at(port)).await.unwrap();
    let mut hello = minecraft::handshake("quitter.test", 2);
    hello.extend(minecraft::packet(0, b"\x05alice"));
    gone.write_all(&hello).await.unwrap();
    home_is(&hub, "mc", "waking").await;
    drop(gone);
    // One who stays is served once it is up, with what it sent first.
    let (_, body) = join(at(port), "stayer.test").await.unwrap();
    assert_eq!(disconnect_text(&body), "HELLO");
    let seen = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        ["stayer.test"],
        "dialled for: {seen:?}"
    );
    ep.stop().await;
    hub.stop().await;
}

on_every_transport!(a_bedrock_server_found_down_is_seen_when_it_comes_back);

async fn a_bedrock_server_found_down_is_seen_when_it_comes_back(t: Transport) {
    let certs = Certs::new();
    let (port, home) = (free_range(1), free_range(1));
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: format!(
            "[services.be]\nbind = \"127.0.0.1:{port}\"\ntype = \"udp\"\ngame = \"bedrock\"\n\
             offline_motd = \"Down\"\n"
        ),
        ..Default::default()
    });
    let hub = TestHub::start(&certs, &o).await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("be".into(), at(home))]));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    // Nothing at home: the first pings go there, are refused (ICMP), and
    // the hub then answers for it.
    let mut answered = None;
    for _ in 0..40 {
        answered = bedrock_ping(at(port)).await;
        if hub.handle.home("be") == Some("down") && answered.is_some() {
            break;
        }
    }
    assert_eq!(hub.handle.home("be"), Some("down"));
    assert_eq!(answered.as_deref(), Some("Down"));
    // The server starts (by hand): a ping the hub lets through now and
    // then finds it, and the list shows it again, without a join.
    let _server = bedrock_server_at(at(home), "BACK").await;
    // (A list pings every few seconds; the hub lets one through every 10.)
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut shown = None;
    while std::time::Instant::now() < deadline {
        shown = bedrock_ping(at(port)).await;
        if shown.as_deref() == Some("BACK") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(shown.as_deref(), Some("BACK"));
    ep.stop().await;
    hub.stop().await;
}

/// A wake command that outlives its wake (a modpack slower to open its
/// port than `wake_timeout`, or a command that hangs): the next join after
/// the cooldown waits on the port again and does not run it a second time
/// (a second server on the same world).
const HUNG_WAKE: &str = r#"
import os, sys, time
open(sys.argv[1], "a").write("ran\n")
open(sys.argv[2], "w").write(str(os.getpid()))
time.sleep(30)
"#;

on_every_transport!(a_wake_command_still_running_is_not_run_again);

async fn a_wake_command_still_running_is_not_run_again(t: Transport) {
    let certs = Certs::new();
    let (port, (_held, local)) = (free_range(1), held_port());
    let local = local.port();
    let hub = TestHub::start(&certs, &mc_hub(t, port, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let (log, pidfile) = (dir.path().join("log"), dir.path().join("pid"));
    let _wake = KillPidFile(pidfile.clone());
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), at(local))]));
    eo.service_extra = format!(
        "wake = [\"python3\", \"-c\", {:?}, {:?}, {:?}]\nwake_timeout = \"2s\"\n",
        HUNG_WAKE,
        log.to_str().unwrap(),
        pidfile.to_str().unwrap()
    );
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    for round in 0..2 {
        let joined = tokio::spawn(join(at(port), "play.test"));
        home_is(&hub, "mc", "waking").await;
        // The wake gives up after wake_timeout; the player is told.
        let _ = joined.await.unwrap();
        home_is(&hub, "mc", "sleeping").await;
        if round == 0 {
            // The cooldown after a failed wake: min(wake_timeout, 60 s).
            tokio::time::sleep(Duration::from_millis(2400)).await;
        }
    }
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        runs.lines().count(),
        1,
        "the wake command ran again: {runs:?}"
    );
    ep.stop().await;
    hub.stop().await;
}

/// A Bedrock server the ep's `wake` starts a moment later: answers list
/// pings, and writes its pid.
const LATE_BEDROCK: &str = r#"
import os, socket, sys, time
time.sleep(0.5)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
open(sys.argv[2], "w").write(str(os.getpid()))
magic = bytes([0, 255, 255, 0, 254, 254, 254, 254, 253, 253, 253, 253, 18, 52, 86, 120])
text = b"MCPE;WOKEN;748;1.21.40;0;10;1;x;Survival;1;1;1;"
while True:
    d, a = s.recvfrom(2048)
    if len(d) >= 33 and d[0] == 1:
        s.sendto(b"\x1c" + d[1:9] + (7).to_bytes(8, "big") + magic + len(text).to_bytes(2, "big") + text, a)
"#;

on_every_transport!(a_bedrock_join_that_gives_up_still_sees_the_server_woken);

/// A Bedrock client's join wakes the server and then gives up (RakNet's
/// retries end before a PC boots): the ep sees the server answer of its
/// own accord, so the list shows it up at once rather than "starting"
/// until `wake_timeout`.
async fn a_bedrock_join_that_gives_up_still_sees_the_server_woken(t: Transport) {
    let certs = Certs::new();
    let (port, home) = (free_range(1), free_range(1));
    let hub = bedrock_hub(&certs, t, port).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let _server = KillPidFile(pidfile.clone());
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("be".into(), at(home))]));
    eo.service_extra = format!(
        "wake = [\"python3\", \"-c\", {:?}, \"{home}\", {:?}]\nwake_timeout = \"2m\"\n",
        LATE_BEDROCK,
        pidfile.to_str().unwrap()
    );
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    // One Open Connection Request 1, then the client is gone.
    bedrock_join(at(port)).await;
    home_is(&hub, "be", "waking").await;
    let woke = std::time::Instant::now();
    home_is(&hub, "be", "up").await;
    println!("figure ({t:?}): up {:?} after waking", woke.elapsed());
    ep.stop().await;
    hub.stop().await;
}

/// A Bedrock client's join (one Open Connection Request 1) sent to `to`.
async fn bedrock_join(to: std::net::SocketAddr) {
    let mut join = vec![0x05];
    join.extend(MAGIC);
    join.push(11);
    join.resize(600, 0);
    let p = common::udp::player().await;
    p.send_to(&join, to).await.unwrap();
}

/// A hub whose UDP service `be` is a Bedrock server on `port`.
async fn bedrock_hub(certs: &Certs, t: Transport, port: u16) -> TestHub {
    let o = t.hub_opts(HubOpts {
        services: vec![],
        extra: format!(
            "[services.be]\nbind = \"127.0.0.1:{port}\"\ntype = \"udp\"\ngame = \"bedrock\"\n"
        ),
        ..Default::default()
    });
    TestHub::start(certs, &o).await
}

/// A port at home where nothing answers at all, as on a host switched
/// off: UDP bound and never read (datagrams vanish without a word), and
/// TCP answering nothing (`tcp_that_says_nothing`).
async fn a_host_that_says_nothing() -> (std::net::SocketAddr, Vec<Box<dyn std::any::Any + Send>>) {
    loop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let home = udp.local_addr().unwrap();
        if let Some(mut held) = common::udp::tcp_that_says_nothing(home).await {
            held.push(Box::new(udp));
            return (home, held);
        }
    }
}

on_every_transport!(a_bedrock_join_to_a_host_that_says_nothing_wakes_it);

/// A Bedrock service whose host says nothing back (switched off: the
/// `wakeonlan` case, or a firewall that drops): no ICMP "port unreachable"
/// comes, and nothing answers the ep's own looks (a list ping, a try of
/// the host), so a join unanswered for a moment counts as the service not
/// there, and the wake command runs. Before, only that ICMP started a
/// wake over UDP, so the join waited for ever.
async fn a_bedrock_join_to_a_host_that_says_nothing_wakes_it(t: Transport) {
    let certs = Certs::new();
    let port = free_range(1);
    let (home, _silent) = a_host_that_says_nothing().await;
    let hub = bedrock_hub(&certs, t, port).await;
    let dir = tempfile::tempdir().unwrap();
    let woken = dir.path().join("woken");
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("be".into(), home)]));
    eo.service_extra = format!(
        "wake = [\"touch\", {:?}]\nwake_timeout = \"30s\"\n",
        woken.to_str().unwrap()
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    bedrock_join(at(port)).await;
    common::udp::eventually("the wake command ran", Duration::from_secs(10), || {
        woken.exists()
    })
    .await;
    home_is(&hub, "be", "waking").await;
}

/// Silent connections that fill the game door's readers (here 20: a
/// quarter of a hub capped at 80 players) do not keep a player out: the
/// player's connection takes the oldest silent one's place, which is
/// reset. Before, the player was the one reset, for as long as strangers
/// from a few networks kept reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_filling_the_readers_do_not_keep_a_player_out() {
    let certs = Certs::new();
    let port = free_range(1);
    let o = HubOpts {
        services: vec![],
        extra: format!(
            "max_players_total = 80\n[services.mc]\nbind = \"127.0.0.1:{port}\"\n\
             game = \"minecraft\"\noffline_message = \"Gone fishing\"\n"
        ),
        ..Default::default()
    };
    let hub = TestHub::start(&certs, &o).await;
    let mut silent = Vec::new();
    for i in 0..20 {
        let src = format!("127.0.7.{}", 1 + i / 8);
        silent.push(connect_from(&src, at(port)).await.unwrap());
    }
    let (_, body) = join(at(port), "play.test")
        .await
        .expect("the player was reset");
    assert_eq!(disconnect_text(&body), "Gone fishing");
    assert!(
        closed_by_peer(&mut silent[0], Duration::from_secs(10)).await,
        "the oldest silent connection kept its place"
    );
    let refusals = hub.handle.refusals();
    println!("figure: 20 silent readers and a player: the player answered; refusals {refusals:?}");
    assert_eq!(refusals.get("too many game handshakes pending"), Some(&1));
}

/// Waits (bounded) until `n` places are taken under `hub`'s player cap.
async fn cap_taken(hub: &TestHub, n: usize, what: &str) {
    let h = &hub.handle;
    common::udp::eventually(what, Duration::from_secs(5), || h.cap_taken() == n).await;
}

/// Silent connections on a small hub do not keep a player out:
/// - a port of one service of ten players, and sixteen silent connections
///   from two addresses (eight each, as many as one source may have read
///   at once): they hold none of the ten places while they are read;
/// - a hub of twenty players in all, twelve of them on another service,
///   and eight silent connections (under the ten the readers may hold):
///   the hub is full, and the oldest silent one gives its place under the
///   hub's cap to the player.
///
/// Every place under the cap is given back once everyone has gone.
/// Before, each silent connection took its place at the service's door as
/// it connected, and the player was reset ("service full"); and a full
/// hub reset the player, however many of its places silent connections
/// held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_fill_a_small_hub() {
    let cases = [
        ("", "max_players = 10\n", 0, 16),
        ("max_players_total = 20\n", "", 12, 8),
    ];
    for (hub_key, service_key, online, silent) in cases {
        let certs = Certs::new();
        let port = free_range(1);
        let o = HubOpts {
            services: vec!["a".into()],
            extra: format!(
                "{hub_key}[services.mc]\nbind = \"127.0.0.1:{port}\"\n\
                 game = \"minecraft\"\noffline_message = \"Gone fishing\"\n{service_key}"
            ),
            ..Default::default()
        };
        let hub = TestHub::start(&certs, &o).await;
        let case = (hub_key.to_string() + service_key).trim().to_string();
        // Players of the other service: no ep, so each waits for one,
        // holding its place.
        let mut players = Vec::new();
        for _ in 0..online {
            // Silent, so the hub sees them leave while they wait.
            let p = tokio::net::TcpStream::connect(hub.service("a"));
            players.push(p.await.unwrap());
        }
        cap_taken(&hub, online, "the other service's players seated").await;
        let mut held = Vec::new();
        for i in 0..silent {
            let src = format!("127.0.7.{}", 1 + i / 8);
            // Before, the ones past the door's limits were reset at once.
            held.push(connect_from(&src, at(port)).await);
        }
        cap_taken(&hub, online + silent, "the silent connections read").await;
        let joined = join(at(port), "play.test").await;
        let refusals = hub.handle.refusals();
        println!(
            "figure: {case}, {online} online, {silent} silent, then a player; refusals {refusals:?}"
        );
        let (_, body) = joined.expect("the player was reset");
        assert_eq!(disconnect_text(&body), "Gone fishing");
        assert_eq!(refusals.get("service full"), None, "{case}");
        // On the full hub, the one silent connection that gave way.
        let displaced = (online > 0).then_some(&1);
        assert_eq!(refusals.get("hub player cap reached"), displaced, "{case}");
        drop((players, held));
        cap_taken(&hub, 0, "every place given back").await;
        hub.stop().await;
    }
}

on_every_transport!(
    a_server_list_ping_that_shuts_its_side_gets_the_status,
    a_server_list_ping_through_the_game_door_counts_every_byte,
);

/// A hub with a Minecraft service on its game door, and an ep serving it
/// from a fake server whose message of the day is "REAL"; and the door's
/// port. The certificates' folder lives as long as they do.
async fn mc_through_the_door(t: Transport) -> (Certs, TestHub, TestEp, u16) {
    let certs = Certs::new();
    let port = free_range(1);
    let hub = TestHub::start(&certs, &mc_hub(t, port, "")).await;
    let server = fake_server("REAL").await;
    let eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), server)]));
    let ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    (certs, hub, ep, port)
}

/// A status ping that sends its handshake and request and then shuts its
/// sending side (a script, `nc -N`) gets the server's status from home.
/// Before, the hub took the end for a player who left and reset it.
async fn a_server_list_ping_that_shuts_its_side_gets_the_status(t: Transport) {
    let (_certs, _hub, _ep, port) = mc_through_the_door(t).await;
    let mut s = tokio::net::TcpStream::connect(at(port)).await.unwrap();
    let mut out = minecraft::handshake("play.test", 1);
    out.extend(minecraft::packet(0, &[]));
    s.write_all(&out).await.unwrap();
    s.shutdown().await.unwrap();
    let (id, body) = tokio::time::timeout(Duration::from_secs(20), minecraft::read_packet(&mut s))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    assert_eq!(id, 0, "a status response");
    let json: serde_json::Value = serde_json::from_str(&minecraft::read_string(&body)).unwrap();
    assert_eq!(motd(&json), "REAL");
}

on_every_transport!(a_sleeping_server_removed_and_put_back_is_still_sleeping);

/// A Minecraft service asleep at home, taken out of hub.toml and put back
/// within its drain: the server list still says it sleeps (join to wake
/// it). Before, putting it back forgot what the ep had said of it, and the
/// hub answered "Offline" until the ep's next word (its next change).
async fn a_sleeping_server_removed_and_put_back_is_still_sleeping(t: Transport) {
    let certs = Certs::new();
    let (port, (_held, local)) = (free_range(1), held_port());
    let o = mc_hub(t, port, "");
    let settings = hub_settings(&certs, &o);
    let file = settings.file.clone();
    let hub = TestHub::from_settings(settings, &o).await;
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), local)]));
    eo.service_extra = "wake = [\"true\"]\nsleep = [\"true\"]\nsleep_after = \"1h\"\n".into();
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    ping(at(port), "play.test").await.unwrap();
    home_is(&hub, "mc", "sleeping").await;
    let without = t.hub_opts(HubOpts {
        services: vec!["other".into()],
        extra: "drain_timeout = \"30s\"\n".into(),
        ..Default::default()
    });
    let removed = hub.reload_to(&certs, &without, &file).await;
    assert!(removed.is_ok(), "{removed:?}");
    let back = hub.reload_to(&certs, &o, &file).await;
    assert!(back.is_ok(), "{back:?}");
    home_is(&hub, "mc", "sleeping").await;
    assert_eq!(
        motd(&ping(at(port), "play.test").await.unwrap()),
        "Sleeping \u{2014} join to wake it"
    );
}

/// The bytes of a player the game door read first (the handshake, the
/// status request) and home's first answer (the status) count in the
/// service's bytes, and the first byte's time is that answer's. Before,
/// they moved outside the relay and were never counted: a status of
/// several KB showed as the 10-byte pong, and the first byte was timed
/// at the pong, a client's round trip later.
async fn a_server_list_ping_through_the_game_door_counts_every_byte(t: Transport) {
    let (_certs, hub, _ep, port) = mc_through_the_door(t).await;
    let status = ping(at(port), "play.test").await.unwrap();
    // The status packet (its JSON, a length and an id), then the pong.
    let least_down = (status.to_string().len() + 10) as f64;
    let least_up = (minecraft::handshake("play.test", 1).len() + 2 + 10) as f64;
    let down = "ferry_bytes_total{service=\"mc\",direction=\"down\"}";
    let up = "ferry_bytes_total{service=\"mc\",direction=\"up\"}";
    let mut text = String::new();
    // The relay counts a chunk just after writing it.
    for _ in 0..200 {
        text = hub.handle.metrics();
        let at_least = |name, least| metric(&text, name).is_some_and(|v| v >= least);
        if at_least(down, least_down) && at_least(up, least_up) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        sample(&text, down) >= least_down,
        "{least_down} down: {text}"
    );
    assert!(sample(&text, up) >= least_up, "{least_up} up: {text}");
    let first = "ferry_player_first_byte_seconds_count{service=\"mc\"}";
    assert_eq!(sample(&text, first), 1.0, "{text}");
}

on_every_transport!(a_login_handshake_alone_does_not_wake_a_sleeping_server);

/// A connection that sends a login handshake and nothing more (what a
/// scanner sends) is closed by the door and wakes nothing; a join, which
/// sends its Login Start with the handshake, wakes the server. Before, a
/// handshake alone went home and ran the wake command (`wakeonlan`
/// powering a PC on), and one every `sleep_after` kept it up.
async fn a_login_handshake_alone_does_not_wake_a_sleeping_server(t: Transport) {
    let certs = Certs::new();
    let (port, (_held, local)) = (free_range(1), held_port());
    let hub = TestHub::start(&certs, &mc_hub(t, port, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let woken = dir.path().join("woken");
    let mut eo = t.ep_opts(&hub, EpOpts::new(&certs, vec![("mc".into(), local)]));
    eo.service_extra = format!(
        "wake = [\"touch\", {:?}]\nsleep = [\"true\"]\nsleep_after = \"1h\"\nwake_timeout = \"30s\"\n",
        woken.to_str().unwrap()
    );
    let _ep = TestEp::start(ep_settings(&certs, &hub, &eo));
    hub.wait_sessions(1).await;
    ping(at(port), "play.test").await.unwrap();
    home_is(&hub, "mc", "sleeping").await;
    let mut scan = tokio::net::TcpStream::connect(at(port)).await.unwrap();
    scan.write_all(&minecraft::handshake("play.test", 2))
        .await
        .unwrap();
    // It waits for an answer; the door gives it 5 s to send the rest.
    assert!(
        closed_by_peer(&mut scan, Duration::from_secs(15)).await,
        "the door held a handshake alone"
    );
    assert!(!woken.exists(), "a handshake alone woke the server");
    let refusals = hub.handle.refusals();
    assert_eq!(refusals.get("no game handshake"), Some(&1), "{refusals:?}");
    assert_eq!(hub.handle.home("mc"), Some("sleeping"));
    // A join wakes it.
    let join = tokio::spawn(join(at(port), "play.test"));
    common::udp::eventually("the wake command ran", Duration::from_secs(10), || {
        woken.exists()
    })
    .await;
    join.abort();
}
