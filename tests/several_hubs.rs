//! One ep, several hubs: each hub serves its own players through its own
//! session, a hub that dies costs the others nothing, and a real DNS
//! server (PowerDNS with a LUA `ifurlup` record on the hubs' `/health`
//! doors) sends new players only to the hubs that can serve them.

mod common;

use common::{programs::*, udp::free_range, *};
use std::{net::SocketAddr, process::Command, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};

/// Where one hub listens: its own loopback address, and the same service
/// and health port numbers on every hub (a DNS answer is an address only).
#[derive(Clone, Copy)]
struct Place {
    ip: &'static str,
    control: u16,
    channel: u16,
    quic: u16,
}

/// The ports every hub shares.
struct Shared {
    service: u16,
    health: u16,
}

fn hub_opts(t: Transport, at: &Place, shared: &Shared) -> HubOpts {
    let quic = match t {
        Transport::Tls => String::new(),
        Transport::Quic => format!("quic = \"{}:{}\"\n", at.ip, at.quic),
    };
    HubOpts {
        control: format!("{}:{}", at.ip, at.control),
        channel: format!("{}:{}", at.ip, at.channel),
        allowlist: vec!["127.0.0.0/8".into()],
        services: vec![],
        extra: format!(
            "{quic}[health]\nbind = \"{ip}:{h}\"\n[services.echo]\nbind = \"{ip}:{p}\"\n",
            ip = at.ip,
            h = shared.health,
            p = shared.service
        ),
        ..Default::default()
    }
}

/// An ep config with a `[[hubs]]` table per place.
fn ep_config(
    certs: &Certs,
    t: Transport,
    places: &[&Place],
    home: SocketAddr,
) -> ferry::config::ep::EpSettings {
    let mut text = format!(
        "token = {:?}\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\nconnect_timeout = \"5s\"\n",
        TOKEN
    );
    for at in places {
        text += &format!(
            "[[hubs]]\nhub = \"{ip}:{c}\"\nchannel = \"{ip}:{ch}\"\nserver_name = \"localhost\"\n",
            ip = at.ip,
            c = at.control,
            ch = at.channel
        );
        text += &match t {
            Transport::Tls => "transport = \"tls\"\n".to_string(),
            Transport::Quic => format!("transport = \"quic\"\nquic = \"{}:{}\"\n", at.ip, at.quic),
        };
    }
    text += &format!(
        "[tls]\nca = {}\ncert = {}\nkey = {}\n[services.echo]\nlocal = \"{home}\"\n",
        toml_path(&certs.path("ca.pem")),
        toml_path(&certs.path("ep-home.pem")),
        toml_path(&certs.path("ep-home.key")),
    );
    let file = certs.path("ep-several.toml");
    std::fs::write(&file, text).unwrap();
    load_ep_file(&file)
}

fn places() -> (Place, Place, Shared) {
    let p = free_range(8);
    let place = |ip, base: u16| Place {
        ip,
        control: base,
        channel: base + 1,
        quic: base + 2,
    };
    (
        place("127.0.0.1", p),
        place("127.0.0.2", p + 3),
        Shared {
            service: p + 6,
            health: p + 7,
        },
    )
}

/// A player that echoes a line every 20 ms until told to stop; how many
/// round trips it made and the first error, if any.
struct Steady {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(u64, Option<String>)>,
    rounds: tokio::sync::watch::Receiver<u64>,
}

impl Steady {
    async fn start(to: SocketAddr) -> Steady {
        let mut s = TcpStream::connect(to).await.unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let (count, rounds) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            let mut buf = [0u8; 16];
            loop {
                let line = format!("{n:015}\n");
                let round = async {
                    s.write_all(line.as_bytes()).await?;
                    s.read_exact(&mut buf).await?;
                    Ok::<_, std::io::Error>(())
                };
                match tokio::time::timeout(Duration::from_secs(5), round).await {
                    Ok(Ok(())) if buf == line.as_bytes() => {
                        n += 1;
                        count.send_replace(n);
                    }
                    Ok(Ok(())) => return (n, Some("echo differs".into())),
                    Ok(Err(e)) => return (n, Some(e.to_string())),
                    Err(_) => return (n, Some("no echo within 5 s".into())),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = &mut stopped => return (n, None),
                }
            }
        });
        Steady { stop, task, rounds }
    }

    /// Waits for `k` more round trips (the player still plays now).
    async fn plays_on(&mut self, k: u64) {
        let now = *self.rounds.borrow();
        let more = self.rounds.wait_for(|n| *n >= now + k);
        let r = tokio::time::timeout(Duration::from_secs(10), more).await;
        assert!(
            matches!(r, Ok(Ok(_))),
            "the player stopped at {now} round trips"
        );
    }

    async fn finish(self) -> (u64, Option<String>) {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

/// Waits (up to 20 s) until `check` holds for the ep's status.
async fn status_until(
    ep: &ferry::ep::Handle,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    let t = Instant::now();
    while !check(&ep.status()) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never {what}: {}",
            ep.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hub_row<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["hub"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hub"] == name)
        .unwrap_or_else(|| panic!("no hub {name} in {status}"))
}

on_every_transport!(one_ep_serves_two_hubs_and_a_dead_one_costs_the_other_nothing);

async fn one_ep_serves_two_hubs_and_a_dead_one_costs_the_other_nothing(t: Transport) {
    let certs = Certs::new();
    let (a_at, b_at, shared) = places();
    let (a_name, b_name) = (
        format!("{}:{}", a_at.ip, a_at.control),
        format!("{}:{}", b_at.ip, b_at.control),
    );
    let a = TestHub::start(&certs, &hub_opts(t, &a_at, &shared)).await;
    let b = TestHub::start(&certs, &hub_opts(t, &b_at, &shared)).await;
    // A third hub that takes connections and never answers (a hub whose
    // machine hangs): its login waits out connect_timeout, again and again.
    let silent_tcp = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let silent_udp = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
    let (tcp_port, udp_port) = (
        silent_tcp.local_addr().unwrap().port(),
        silent_udp.local_addr().unwrap().port(),
    );
    let silent = Place {
        ip: "127.0.0.3",
        control: tcp_port,
        channel: tcp_port,
        quic: udp_port,
    };
    let silent_name = format!("127.0.0.3:{tcp_port}");
    let home = echo_server().await;
    let hubs = [&silent, &a_at, &b_at];
    let (_ep, ep) = TestEp::start_with_handle(ep_config(&certs, t, &hubs, home)).await;
    a.wait_sessions(1).await;
    b.wait_sessions(1).await;
    assert_ne!(hub_row(&ep.status(), &silent_name)["state"], "connected");
    let (on_a, on_b): (SocketAddr, SocketAddr) = (
        format!("{}:{}", a_at.ip, shared.service).parse().unwrap(),
        format!("{}:{}", b_at.ip, shared.service).parse().unwrap(),
    );
    assert_eq!(echo_through(on_a, b"via a").await, b"via a");
    assert_eq!(echo_through(on_b, b"via b").await, b"via b");

    // The ep shows each hub: connected, over what, its round trip, and
    // the players carried for it.
    let mut steady = Steady::start(on_b).await;
    let transport = match t {
        Transport::Tls => "tls",
        Transport::Quic => "quic",
    };
    status_until(&ep, "both hubs with a round trip and B's player", |s| {
        [&a_name, &b_name].iter().all(|h| {
            let row = hub_row(s, h);
            row["state"] == "connected" && row["transport"] == transport && row["rtt_ms"].is_f64()
        }) && hub_row(s, &b_name)["players"] == 1
            && hub_row(s, &a_name)["players"] == 0
    })
    .await;
    println!("figure: the ep's hubs {}", ep.status()["hub"]);
    assert_ne!(hub_row(&ep.status(), &silent_name)["state"], "connected");
    let m = ep.metrics();
    for h in [&a_name, &b_name] {
        let connected = metric(&m, &format!("ferry_hub_connected{{hub=\"{h}\"}}"));
        assert_eq!(connected, Some(1.0), "{m}");
        let rtt = metric(&m, &format!("ferry_hub_rtt_seconds{{hub=\"{h}\"}}")).unwrap();
        assert!(rtt > 0.0 && rtt < 1.0, "{m}");
    }
    // Players carried for B: the steady one (an earlier player's relay
    // at home may still be ending).
    let players_b = format!("ferry_hub_players{{hub=\"{b_name}\"}}");
    status_until(&ep, "one player carried for B in the metrics", |_| {
        metric(&ep.metrics(), &players_b) == Some(1.0)
    })
    .await;

    // Hub A goes away. B's player never notices; new players on B come in.
    a.stop().await;
    status_until(&ep, "hub A seen gone", |s| {
        hub_row(s, &a_name)["state"] != "connected"
    })
    .await;
    for i in 0..10u8 {
        assert_eq!(echo_through(on_b, &[i; 100]).await, [i; 100]);
    }
    steady.plays_on(3).await;
    assert_eq!(hub_row(&ep.status(), &b_name)["state"], "connected");

    // A comes back on its addresses: the ep logs in to it again on its own.
    let a = TestHub::start(&certs, &hub_opts(t, &a_at, &shared)).await;
    a.wait_sessions(1).await;
    assert_eq!(echo_through(on_a, b"back").await, b"back");
    let (rounds, error) = steady.finish().await;
    println!(
        "figure: B's player made {rounds} round trips while A died and came back, error: {error:?}"
    );
    assert_eq!(error, None);
    a.stop().await;
    b.stop().await;
}

/// PowerDNS serving `play.test` with `mc` as a LUA record that answers
/// the hubs whose `/health/echo` says up, checked every second.
struct PowerDns {
    _run: Running,
    port: u16,
}

impl PowerDns {
    fn start(dir: &std::path::Path, health: u16) -> Option<PowerDns> {
        let bin = find("pdns_server")?;
        find("dig")?;
        let port = free_range(1);
        let zone = dir.join("play.test.zone");
        std::fs::write(
            &zone,
            format!(
                "$TTL 1\n\
                 @ IN SOA ns.play.test. admin.play.test. 1 3600 600 86400 1\n\
                 @ IN NS ns.play.test.\n\
                 ns IN A 127.0.0.1\n\
                 mc IN LUA A \"ifurlup('http://127.0.0.1:{health}/health/echo', {{'127.0.0.1', '127.0.0.2'}}, {{selector='all', timeout=1, stringmatch='up'}})\"\n"
            ),
        )
        .unwrap();
        let named = dir.join("named.conf");
        std::fs::write(
            &named,
            format!(
                "zone \"play.test\" {{ type master; file \"{}\"; }};\n",
                zone.display()
            ),
        )
        .unwrap();
        let run = Running::start(
            Command::new(bin)
                .arg(format!("--config-dir={}", dir.display()))
                .arg(format!("--socket-dir={}", dir.display()))
                .arg("--launch=bind")
                .arg(format!("--bind-config={}", named.display()))
                .arg("--local-address=127.0.0.1")
                .arg(format!("--local-port={port}"))
                .arg("--enable-lua-records=yes")
                .arg("--lua-health-checks-interval=1")
                // No answer cached: each query sees the latest checks.
                .arg("--cache-ttl=0")
                .arg("--query-cache-ttl=0")
                .arg("--negquery-cache-ttl=0")
                // Loopback only: no security-status lookup on the internet.
                .arg("--security-poll-suffix=")
                .arg("--guardian=no")
                .arg("--daemon=no")
                .arg("--disable-syslog")
                .arg("--write-pid=no")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        Some(PowerDns { _run: run, port })
    }

    /// `dig mc.play.test A` against this server: the addresses, sorted.
    async fn resolve(&self) -> Vec<String> {
        let port = self.port;
        let out = tokio::task::spawn_blocking(move || {
            Command::new(find("dig").unwrap())
                .args(["@127.0.0.1", "-p", &port.to_string()])
                .args(["mc.play.test", "A", "+short", "+tries=1", "+time=1"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(';') && !l.is_empty())
            .map(str::to_string)
            .collect();
        ips.sort();
        ips
    }

    /// Asks until the answer is exactly `want`; how long that took.
    async fn until(&self, want: &[&str]) -> Duration {
        let t = Instant::now();
        loop {
            let got = self.resolve().await;
            if got == want {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "dig answers {got:?}, never {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An echo server that can be stopped (its port then refuses).
async fn stoppable_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

async fn health(ip: &str, port: u16) -> u16 {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    http_get(addr, "/health/echo", None).await.0
}

on_every_transport!(dns_sends_players_only_to_the_hubs_that_can_serve_them);

async fn dns_sends_players_only_to_the_hubs_that_can_serve_them(t: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (a_at, b_at, shared) = places();
    let Some(dns) = PowerDns::start(dir.path(), shared.health) else {
        return;
    };
    let certs = Certs::new();
    // Hub A is a process of its own, to be killed as a machine dies.
    let a_file = write_hub_toml(&certs, &hub_opts(t, &a_at, &shared), None);
    let a = procs::HubProc::start(&a_file, &[], 1);
    let b = TestHub::start(&certs, &hub_opts(t, &b_at, &shared)).await;
    let (home, home_task) = stoppable_echo().await;
    let _ep = TestEp::start(ep_config(&certs, t, &[&a_at, &b_at], home));
    a.proc.wait_line("ep logged in");
    b.wait_sessions(1).await;
    let both = ["127.0.0.1", "127.0.0.2"];
    dns.until(&both).await;
    // Play through each answer.
    for ip in dns.resolve().await {
        let at: SocketAddr = format!("{ip}:{}", shared.service).parse().unwrap();
        assert_eq!(echo_through(at, ip.as_bytes()).await, ip.as_bytes());
    }
    let on_b: SocketAddr = format!("127.0.0.2:{}", shared.service).parse().unwrap();
    let mut steady = Steady::start(on_b).await;

    // Hub A dies (SIGKILL): DNS answers only B, new players get in
    // through B, and the player already on B never notices.
    a.proc.signal("KILL");
    let took = dns.until(&["127.0.0.2"]).await;
    println!(
        "figure ({t:?}): hub A killed → dig answers only hub B after {took:.2?} (lua-health-checks-interval = 1 s, ifurlup timeout 1 s, TTL 1 s)"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    for ip in dns.resolve().await {
        let at: SocketAddr = format!("{ip}:{}", shared.service).parse().unwrap();
        assert_eq!(echo_through(at, b"after").await, b"after");
    }
    steady.plays_on(3).await;
    let (rounds, error) = steady.finish().await;
    println!(
        "figure: the player on B made {rounds} round trips through A's death, error: {error:?}"
    );
    assert_eq!(error, None);

    // A is back: the ep logs in to it again, DNS answers both.
    drop(a);
    let a = procs::HubProc::start(&a_file, &[], 1);
    a.proc.wait_line("ep logged in");
    let back = dns.until(&both).await;
    println!("figure ({t:?}): hub A back → dig answers both after {back:.2?}");

    // The service at home stops: the first player to find it so makes
    // the ep tell every hub, and both answer down.
    home_task.abort();
    let _ = home_task.await;
    let refused = TcpStream::connect(home).await;
    assert!(refused.is_err(), "home still listens");
    if let Ok(mut p) = TcpStream::connect(on_b).await {
        assert!(closed_by_peer(&mut p, Duration::from_secs(10)).await);
    }
    let t0 = Instant::now();
    while health("127.0.0.1", shared.health).await != 503
        || health("127.0.0.2", shared.health).await != 503
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "a hub still says up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
    b.stop().await;
}

/// Certificates whose hub certificate names both hubs' addresses (one CA,
/// one hub certificate shared by the replicas).
fn two_hub_certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    ferry::certgen::GenCert {
        dir: dir.path().to_path_buf(),
        hub_names: vec!["localhost".into()],
        hub_ips: vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()],
        eps: vec!["home".into()],
        force: false,
    }
    .run()
    .unwrap();
    Certs { dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_naming_two_hubs_joins_an_ep_that_serves_both() {
    let certs = two_hub_certs();
    let (a_at, _, shared) = places();
    // Replicas listen on the same ports, as the line's hubs must.
    let b_at = Place {
        ip: "127.0.0.2",
        ..a_at
    };
    let door = free_range(1);
    // Replicas: the same CA, hub certificate and enrolment state (one
    // folder here; synced files between machines), the same ports on two
    // addresses. Neither allowlist has the ep's address: it gets in only
    // as an enrolled ep.
    let opts = |at: &Place| {
        let mut o = hub_opts(Transport::Tls, at, &shared);
        o.allowlist = vec!["127.0.0.3/32".into()];
        o.extra = format!("[enrol]\nbind = \"{}:{door}\"\n{}", at.ip, o.extra);
        o
    };
    let a = TestHub::start(&certs, &opts(&a_at)).await;
    let b = TestHub::start(&certs, &opts(&b_at)).await;
    let hub_toml = certs.path("hub-a.toml");
    save_hub_toml(&certs, &opts(&a_at), &hub_toml);
    let (ok, text) = common::procs::run(&[
        "hub",
        "invite",
        "-c",
        hub_toml.to_str().unwrap(),
        "--ep",
        "cabin",
        "--service",
        "echo",
        "--hub",
        "127.0.0.1",
        "--hub",
        "127.0.0.2",
    ]);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ferry ep join "))
        .unwrap_or_else(|| panic!("no join line in {text}"))
        .to_string();
    println!(
        "figure: a two-hub line is {} characters: {line}",
        line.len()
    );
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().to_str().unwrap().to_string();
    let joined = line.clone();
    let (ok, text) = tokio::task::spawn_blocking(move || {
        common::procs::run(&["ep", "join", &joined, "--dir", &dir])
    })
    .await
    .unwrap();
    assert!(ok, "{text}");
    let config = home.path().join("ep.toml");
    let written = std::fs::read_to_string(&config).unwrap();
    for h in [&a_at, &b_at] {
        let table = format!(
            "[[hubs]]\nhub = \"{ip}:{c}\"\nchannel = \"{ip}:{ch}\"\n",
            ip = h.ip,
            c = h.control,
            ch = h.channel
        );
        assert!(written.contains(&table), "no {table:?} in:\n{written}");
    }
    // Point the service at the echo server at home, as the file says to.
    let echo = echo_server().await;
    let svc = format!("127.0.0.1:{}\"", shared.service);
    std::fs::write(&config, written.replace(&svc, &format!("{echo}\""))).unwrap();
    let settings = ferry::config::ep::EpConfig::load(&config, Default::default())
        .unwrap()
        .check(&config)
        .unwrap();
    let _ep = TestEp::start(settings);
    a.wait_sessions(1).await;
    b.wait_sessions(1).await;
    for h in [&a_at, &b_at] {
        let at: SocketAddr = format!("{}:{}", h.ip, shared.service).parse().unwrap();
        assert_eq!(echo_through(at, h.ip.as_bytes()).await, h.ip.as_bytes());
    }
    assert_eq!(a.handle.enrolments() + b.handle.enrolments(), 1);
    a.stop().await;
    b.stop().await;
}

on_every_transport!(a_hub_that_parks_a_thousand_channels_costs_another_hubs_players_nothing);

/// A compromised or broken hub asks the ep for 1,100 channels and lets
/// each hang mid-handshake: it may use up what the ep keeps for it (1,024
/// opening or waiting), never another hub's share. The other hub's
/// players, more than its pool holds, are all served meanwhile.
async fn a_hub_that_parks_a_thousand_channels_costs_another_hubs_players_nothing(t: Transport) {
    use ferry::proto::{self, EpMsg, HubMsg};
    let certs = Certs::new();
    let fake = common::fake_hub::FakeHub::start(&certs).await;
    let b = TestHub::start(&certs, &t.hub_opts(HubOpts::default())).await;
    let home = echo_server().await;
    let b_transport = match t {
        Transport::Tls => "transport = \"tls\"\n".to_string(),
        Transport::Quic => format!(
            "transport = \"quic\"\nquic = \"{}\"\n",
            b.handle.quic_addr().unwrap()
        ),
    };
    let text = format!(
        "token = {TOKEN:?}\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\nconnect_timeout = \"60s\"\n\
         [[hubs]]\nhub = \"{}\"\nchannel = \"{}\"\nserver_name = \"localhost\"\ntransport = \"tls\"\n\
         [[hubs]]\nhub = \"{}\"\nchannel = \"{}\"\nserver_name = \"localhost\"\n{b_transport}\
         [tls]\nca = {}\ncert = {}\nkey = {}\n[services.echo]\nlocal = \"{home}\"\n",
        fake.control.local_addr().unwrap(),
        fake.channel.local_addr().unwrap(),
        b.control,
        b.channel,
        toml_path(&certs.path("ca.pem")),
        toml_path(&certs.path("ep-home.pem")),
        toml_path(&certs.path("ep-home.key")),
    );
    let file = certs.path("ep-parked.toml");
    std::fs::write(&file, text).unwrap();
    let settings = load_ep_file(&file);
    let _ep = TestEp::start(settings);
    // The hand-written hub logs the ep in, then asks for 1,100 channels.
    let (tcp, _) = fake.control.accept().await.unwrap();
    let mut control = fake.acceptor.accept(tcp).await.unwrap();
    let _hello: EpMsg = proto::read_msg(&mut control).await.unwrap();
    proto::write_msg(&mut control, &common::fake_hub::welcome())
        .await
        .unwrap();
    // It asks without end (a place the ep frees is asked for again), takes
    // each channel's TCP connection and never answers its TLS hello; the
    // ep refuses the asks beyond what it keeps for this hub.
    let (mut rd, mut wr) = tokio::io::split(control);
    let asking = tokio::spawn(async move {
        for i in 0u64.. {
            let open = HubMsg::Open {
                service: "echo".into(),
                ticket: format!("t-{i}"),
            };
            if proto::write_msg(&mut wr, &open).await.is_err() {
                return;
            }
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let parked = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = fake.channel.accept().await {
            held.push(s);
        }
    });
    let (full_tx, full) = tokio::sync::oneshot::channel();
    let reading = tokio::spawn(async move {
        let mut full_tx = Some(full_tx);
        while let Ok(m) = proto::read_msg::<_, EpMsg>(&mut rd).await {
            if matches!(m, EpMsg::ChannelFailed { .. })
                && let Some(tx) = full_tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), full)
        .await
        .expect("the ep refused channels beyond its bound")
        .unwrap();
    // Meanwhile hub B's players come and go, more than B's pool holds,
    // so B asks the ep for new channels all along.
    b.wait_sessions(1).await;
    let began = Instant::now();
    for i in 0..20u8 {
        assert_eq!(echo_through(b.service("echo"), &[i; 64]).await, [i; 64]);
    }
    println!(
        "figure ({t:?}): with another hub holding 1,024 channels open, 20 players through hub B took {:?}",
        began.elapsed()
    );
    for task in [asking, parked, reading] {
        task.abort();
    }
}
