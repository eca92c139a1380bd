//! The player door: the player's real address for the service (PROXY
//! protocol, checked by an independent parser and by nginx), and limits
//! checked before a channel is taken.

mod common;

use common::*;
use std::{net::SocketAddr, sync::atomic::Ordering, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A service that hands each connection's first `n` bytes to the test.
async fn header_catcher(n: usize) -> (SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; n];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = tx.send(buf).await;
                }
            });
        }
    });
    (addr, rx)
}

async fn tunnel_with_proxy(certs: &Certs, local: SocketAddr, version: &str) -> (TestHub, TestEp) {
    let hub = TestHub::start(certs, &HubOpts::default()).await;
    let mut o = EpOpts::new(certs, vec![("echo".into(), local)]);
    o.service_extra = format!("proxy_protocol = {version:?}\n");
    let ep = TestEp::start(ep_settings(certs, &hub, &o));
    (hub, ep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reads_the_players_address_in_a_v1_or_v2_header() {
    let certs = Certs::new();
    for version in ["v1", "v2"] {
        let len = if version == "v1" { 256 } else { 28 };
        let (local, mut headers) = header_catcher(len).await;
        let (hub, _ep) = tunnel_with_proxy(&certs, local, version).await;
        let mut player = TcpStream::connect(hub.service("echo")).await.unwrap();
        // v1 is text up to CRLF; pad so the catcher's fixed read completes.
        player.write_all(&[b'x'; 256]).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), headers.recv())
            .await
            .unwrap()
            .unwrap();
        let (src, dst) = (player.local_addr().unwrap(), hub.service("echo"));
        let expect = ppp::v2::Addresses::from((src, dst));
        match version {
            "v1" => {
                let end = got.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
                let text = std::str::from_utf8(&got[..end]).unwrap();
                println!("figure: v1 header {text:?}");
                let h = ppp::v1::Header::try_from(text).expect("ppp parses the v1 header");
                let ppp::v2::Addresses::IPv4(ip) = expect else {
                    unreachable!()
                };
                assert_eq!(h.addresses, ppp::v1::Addresses::Tcp4(ip));
                assert!(
                    got[end..].iter().all(|b| *b == b'x'),
                    "player bytes follow the header"
                );
            }
            _ => {
                println!("figure: v2 header {:02x?}", &got);
                let h = ppp::v2::Header::try_from(&got[..]).expect("ppp parses the v2 header");
                assert_eq!(h.command, ppp::v2::Command::Proxy);
                assert_eq!(h.protocol, ppp::v2::Protocol::Stream);
                assert_eq!(h.addresses, expect);
            }
        }
    }
}

/// nginx with `listen … proxy_protocol`, answering each request with the
/// addresses its PROXY header named. None where nginx is not installed
/// (`.ci/run` installs it, and there the test requires it).
struct Nginx {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    _hold: socket2::Socket,
}

impl Nginx {
    fn start() -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install nginx (.ci/run)"
            );
            println!("skipped: nginx is not installed (.ci/run installs it)");
            return None;
        };
        // Hold the port with SO_REUSEPORT (never listening), so no other
        // test takes it; nginx's `reuseport` listener shares it.
        let hold =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        hold.set_reuse_port(true).unwrap();
        hold.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let addr = hold.local_addr().unwrap().as_socket().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = format!(
            "daemon on; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
               fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen {addr} proxy_protocol reuseport;\n\
                 location / {{ return 200 \"$proxy_protocol_addr:$proxy_protocol_port $proxy_protocol_server_addr:$proxy_protocol_server_port\\n\"; }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        // With `daemon on` the command returns once nginx listens.
        let out = std::process::Command::new(bin)
            .args(["-p", &d.to_string(), "-c"])
            .arg(dir.path().join("nginx.conf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Nginx {
            dir,
            addr,
            _hold: hold,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("nginx.pid")) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_logs_the_players_real_address() {
    let Some(nginx) = Nginx::start() else { return };
    let certs = Certs::new();
    for version in ["v1", "v2"] {
        let (hub, _ep) = tunnel_with_proxy(&certs, nginx.addr, version).await;
        let mut player = TcpStream::connect(hub.service("echo")).await.unwrap();
        player
            .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        player.read_to_string(&mut reply).await.unwrap();
        let body = reply.rsplit("\r\n\r\n").next().unwrap().trim().to_string();
        println!("figure: nginx behind ferry ({version}) saw {body:?}");
        let want = format!("{} {}", player.local_addr().unwrap(), hub.service("echo"));
        assert_eq!(body, want);
    }
}

/// Connects from `src`; Some(stream) if admitted (greeted), None if the
/// hub refused it.
async fn try_player(src: &str, to: SocketAddr) -> Option<TcpStream> {
    let mut s = connect_from(src, to).await.ok()?;
    let mut b = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
        Ok(Ok(1)) => Some(s),
        Ok(_) => None,
        Err(_) => panic!("neither greeted nor refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_before_a_channel_is_taken() {
    let certs = Certs::new();
    let (local, dials) = counting_greeter().await;
    let opts = HubOpts {
        extra: "[services.echo]\nbind = \"127.0.0.1:0\"\nmax_players_per_ip = 2\n\
                player_rate_per_ip = \"4/min\"\nban_for = \"10m\"\ndeny = [\"127.0.0.9\"]\n"
            .into(),
        services: vec![],
        ..Default::default()
    };
    let settings = hub_settings(&certs, &opts);
    let hub = TestHub::from_settings(
        settings,
        &HubOpts {
            services: vec!["echo".into()],
            ..Default::default()
        },
    )
    .await;
    let _ep = TestEp::start(ep_settings(
        &certs,
        &hub,
        &EpOpts::new(&certs, vec![("echo".into(), local)]),
    ));
    let svc = hub.service("echo");
    // Two at once from one address; the third is refused.
    let a = try_player("127.0.0.5", svc).await.expect("first");
    let b = try_player("127.0.0.5", svc).await.expect("second");
    assert!(
        try_player("127.0.0.5", svc).await.is_none(),
        "a third at once"
    );
    drop((a, b));
    // Denied outright.
    assert!(
        try_player("127.0.0.9", svc).await.is_none(),
        "denied address served"
    );
    // Rate: 4 a minute (two used); then refusals, then a ban.
    let mut admitted = 2;
    for _ in 0..12 {
        if let Some(p) = try_player("127.0.0.5", svc).await {
            admitted += 1;
            drop(p);
        }
    }
    assert_eq!(admitted, 4, "the rate admits 4 a minute");
    let refusals = hub.handle.refusals();
    println!(
        "figure: refusals {refusals:?}; dials at home {}",
        dials.load(Ordering::Relaxed)
    );
    assert!(
        refusals.get("banned player address").copied().unwrap_or(0) >= 1,
        "{refusals:?}"
    );
    // A banned address costs no channel; another address is still served.
    let before = dials.load(Ordering::Relaxed);
    assert!(try_player("127.0.0.5", svc).await.is_none());
    assert!(
        try_player("127.0.0.6", svc).await.is_some(),
        "a second address was not served"
    );
    assert_eq!(
        dials.load(Ordering::Relaxed),
        before + 1,
        "a refused player reached home"
    );
    assert_eq!(dials.load(Ordering::Relaxed), admitted + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_wide_cap_keeps_the_doors_working() {
    let certs = Certs::new();
    let (local, _) = counting_greeter().await;
    let opts = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        services: vec!["echo".into(), "beta".into()],
        extra: "max_players_total = 3\n".into(),
        ..Default::default()
    };
    let (hub, _ep) = tunnel_with(&certs, &opts, local).await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            try_player(&format!("127.0.1.{i}"), hub.service("echo"))
                .await
                .expect("under the cap"),
        );
    }
    assert!(
        try_player("127.0.1.9", hub.service("echo")).await.is_none(),
        "over the hub's cap"
    );
    // The control door still works: another ep logs in for the other service.
    let mut o = EpOpts::new(&certs, vec![("beta".into(), local)]);
    o.cert = "other".into();
    assert!(
        ferry::ep::login(&ep_settings(&certs, &hub, &o))
            .await
            .is_ok()
    );
    drop(held);
}

on_every_transport!(
    a_player_silent_both_ways_is_closed_after_the_idle_timeout,
    an_idle_timeout_after_home_ended_keeps_the_reply_whole,
);

async fn a_player_silent_both_ways_is_closed_after_the_idle_timeout(t: Transport) {
    let certs = Certs::new();
    let (local, _) = counting_greeter().await;
    let opts = HubOpts {
        // 3 s: a talker's writes 100 ms apart stay well inside it on a
        // loaded machine.
        extra: "[players]\nplayer_idle_timeout = \"3s\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep) = tunnel_over(&certs, t, opts, local).await;
    let mut talker = try_player("127.0.0.1", hub.service("echo")).await.unwrap();
    let mut silent = try_player("127.0.0.1", hub.service("echo")).await.unwrap();
    let t = std::time::Instant::now();
    // One player keeps talking, the other says nothing.
    let chatter = tokio::spawn(async move {
        for _ in 0..60 {
            if talker.write_all(b".").await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    });
    assert!(closed_by_peer(&mut silent, Duration::from_secs(20)).await);
    let after = t.elapsed();
    println!("figure ({t:?}): a silent player was closed after {after:?} (player_idle_timeout 3s)");
    assert!(
        after >= Duration::from_millis(2_700),
        "closed too early: {after:?}"
    );
    assert!(chatter.await.unwrap(), "a talking player was closed");
}

/// Home sent its whole reply and closed; a player that reads it only
/// after `player_idle_timeout` gets it all and a clean end. Before, the
/// timeout reset the player, and the kernel threw away what it still held
/// for the player (a slow reader's tail): the reply came cut, and broken.
async fn an_idle_timeout_after_home_ended_keeps_the_reply_whole(t: Transport) {
    const REPLY: usize = 256 * 1024;
    let certs = Certs::new();
    let home = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = home.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = home.accept().await.unwrap();
        s.write_all(&[5u8; REPLY]).await.unwrap();
        s.shutdown().await.unwrap();
        // Still reading: only its sending side ended.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    let opts = HubOpts {
        extra: "[players]\nplayer_idle_timeout = \"1s\"\n".into(),
        ..Default::default()
    };
    let (hub, _ep) = tunnel_over(&certs, t, opts, local).await;
    // A small receive buffer: most of the reply waits in the hub's
    // kernel, for the player to read.
    let p = tokio::net::TcpSocket::new_v4().unwrap();
    p.set_recv_buffer_size(16 * 1024).unwrap();
    let mut p = p.connect(hub.service("echo")).await.unwrap();
    // Silent both ways past the timeout, as a paused reader is.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), p.read_to_end(&mut got))
        .await
        .expect("the reply within 10 s");
    assert!(end.is_ok(), "a break after {} bytes: {end:?}", got.len());
    assert_eq!(got.len(), REPLY);
}

on_every_transport!(one_network_cannot_fill_a_service);

/// Players from many addresses of one network (an IPv4 /24 here; an IPv6
/// /48 alike: a household's prefix holds thousands of /64s, each its own
/// address) stop at `max_players_per_net`, before a channel is taken;
/// another network is still served, and a place given back is taken
/// again. Before, only each address was capped, so one IPv6 household
/// could fill a service or the hub.
async fn one_network_cannot_fill_a_service(t: Transport) {
    let certs = Certs::new();
    let (local, dials) = counting_greeter().await;
    let o = HubOpts {
        services: vec![],
        extra: "[services.echo]\nbind = \"127.0.0.1:0\"\nmax_players_per_ip = 1\n\
                max_players_per_net = 2\n"
            .into(),
        ..Default::default()
    };
    let (hub, _ep) = tunnel_over(&certs, t, o, local).await;
    hub.wait_sessions(1).await;
    let svc = hub.handle.service_addr("echo").unwrap();
    let a = try_player("127.0.0.2", svc)
        .await
        .expect("first of the /24");
    let _b = try_player("127.0.0.3", svc)
        .await
        .expect("second of the /24");
    let before = dials.load(Ordering::Relaxed);
    assert!(
        try_player("127.0.0.4", svc).await.is_none(),
        "a third of one /24 at once"
    );
    assert_eq!(dials.load(Ordering::Relaxed), before, "it reached home");
    let refusals = hub.handle.refusals();
    assert!(
        refusals.get("too many players from one network").copied() >= Some(1),
        "{refusals:?}"
    );
    assert!(try_player("127.0.1.2", svc).await.is_some(), "another /24");
    drop(a);
    let again = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(p) = try_player("127.0.0.4", svc).await {
                return p;
            }
        }
    });
    again.await.expect("the place given back is taken again");
}
