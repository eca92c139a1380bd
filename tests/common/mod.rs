//! Test harness: certificates made at test time, a hub and an ep running
//! in-process on 127.0.0.1 port 0, and small services to talk to.
#![allow(dead_code)]

pub mod dark;
pub mod fake_hub;
pub mod faultproxy;
pub mod minecraft;
pub mod procs;
pub mod programs;
pub mod quic;
pub mod udp;
pub mod udp_relay;

use ferry::{
    certgen::GenCert,
    config::{
        ep::{EpConfig, EpFlags, EpSettings},
        hub::{HubConfig, HubFlags, HubSettings},
    },
    ep::LoginError,
    hub::{Hub, HubHandle},
    secret::Secret,
};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// The Argon2 hash of `TOKEN`, computed once per test binary.
pub fn token_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| ferry::token::hash(&Secret::new(TOKEN)).unwrap())
}

/// A folder with a CA, a hub certificate (localhost, 127.0.0.1) and ep
/// certificates `home` and `other`.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        GenCert {
            dir: dir.path().to_path_buf(),
            eps: vec!["home".into(), "other".into()],
            ..Default::default()
        }
        .run()
        .unwrap();
        Certs { dir }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
}

pub fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The one hub config builder: in-process hubs and hub processes alike.
pub struct HubOpts {
    pub control: String,
    pub channel: String,
    pub allowlist: Vec<String>,
    pub services: Vec<String>,
    /// Top-level keys (they replace the test defaults they name), then
    /// optionally tables such as `[eps.NAME]`.
    pub extra: String,
    /// Keys added to every `[services.NAME]` table (`type = "udp"`).
    pub service_extra: String,
    /// Where `services` bind (port 0): `127.0.0.1`, or `[::]` for a
    /// dual-stack socket.
    pub service_host: String,
}

impl Default for HubOpts {
    fn default() -> Self {
        HubOpts {
            control: "127.0.0.1:0".into(),
            channel: "127.0.0.1:0".into(),
            allowlist: vec!["127.0.0.1/32".into()],
            services: vec!["echo".into()],
            extra: String::new(),
            service_extra: String::new(),
            service_host: "127.0.0.1".into(),
        }
    }
}

/// `key = value` unless `extra` sets `key` itself.
fn unless_set(extra: &str, key: &str, value: &str) -> String {
    let set = extra
        .lines()
        .any(|l| l.split('=').next().is_some_and(|k| k.trim() == key));
    if set {
        String::new()
    } else {
        format!("{key} = {value:?}\n")
    }
}

/// A hub config file for `o`, in the certificates' folder.
pub fn write_hub_toml(certs: &Certs, o: &HubOpts, crl: Option<&Path>) -> PathBuf {
    // Top-level keys must precede the first table; tables in `extra` follow.
    let (keys, tables) = match o.extra.find("\n[") {
        Some(i) => o.extra.split_at(i + 1),
        None if o.extra.trim_start().starts_with('[') => ("", o.extra.as_str()),
        None => (o.extra.as_str(), ""),
    };
    let mut text = format!(
        "control = {:?}\nchannel = {:?}\nep_allowlist = {:?}\n{}{}{}{}{}",
        o.control,
        o.channel,
        o.allowlist,
        unless_set(keys, "token_hash", token_hash()),
        unless_set(keys, "heartbeat_interval", "200ms"),
        unless_set(keys, "heartbeat_timeout", "2s"),
        unless_set(keys, "drain_timeout", "1s"),
        unless_set(keys, "player_wait", "10s"),
    );
    text += keys;
    text += &format!(
        "\n[tls]\nca = {}\ncert = {}\nkey = {}\n",
        toml_path(&certs.path("ca.pem")),
        toml_path(&certs.path("hub.pem")),
        toml_path(&certs.path("hub.key")),
    );
    if let Some(crl) = crl {
        text += &format!("crl = {}\n", toml_path(crl));
    }
    for s in &o.services {
        text += &format!(
            "[services.{s}]\nbind = \"{}:0\"\n{}",
            o.service_host, o.service_extra
        );
    }
    text += tables;
    // Tests open many connections from loopback; the player door's
    // defaults would refuse them. Tests of the door set their own.
    if !o.extra.contains("[players]") {
        text += "[players]\nmax_players_per_ip = 1000000\nplayer_rate_per_ip = \"1000000/s\"\n\
             max_udp_flows_per_ip = 1000000\n";
    }
    let file = certs.path(&format!("hub-{}.toml", unique()));
    std::fs::write(&file, text).unwrap();
    file
}

/// The hub's file as `o` makes it, saved over `file` the way editors do:
/// a new file renamed over the old one.
pub fn save_hub_toml(certs: &Certs, o: &HubOpts, file: &Path) {
    let fresh = write_hub_toml(certs, o, None);
    std::fs::rename(fresh, file).unwrap();
}

/// A service at home that names itself with `tag` first, then echoes.
pub async fn tagged_echo(tag: &'static [u8]) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(tag).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

pub fn hub_settings(certs: &Certs, o: &HubOpts) -> HubSettings {
    hub_settings_crl(certs, o, None)
}

pub fn hub_settings_crl(certs: &Certs, o: &HubOpts, crl: Option<&Path>) -> HubSettings {
    let file = write_hub_toml(certs, o, crl);
    HubConfig::load(&file, HubFlags::default())
        .unwrap()
        .check(&file)
        .unwrap()
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A hub running in this process; stops when dropped.
pub struct TestHub {
    pub control: SocketAddr,
    pub channel: SocketAddr,
    /// The admin door, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    /// The health door, when the config has `[health]`.
    pub health: Option<SocketAddr>,
    pub services: Vec<(String, SocketAddr)>,
    pub handle: HubHandle,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestHub {
    pub async fn start(certs: &Certs, o: &HubOpts) -> Self {
        Self::from_settings(hub_settings(certs, o), o).await
    }

    pub async fn start_with_crl(certs: &Certs, o: &HubOpts, crl: &Path) -> Self {
        Self::from_settings(hub_settings_crl(certs, o, Some(crl)), o).await
    }

    pub async fn from_settings(settings: HubSettings, o: &HubOpts) -> Self {
        let hub = Hub::bind(settings).await.unwrap();
        // A service on `[::]` is reached on 127.0.0.1 (as an IPv4 player
        // reaches a dual-stack socket).
        let services = o
            .services
            .iter()
            .map(|s| {
                let mut at = hub.service_addr(s).unwrap();
                if at.ip().is_unspecified() {
                    at.set_ip([127, 0, 0, 1].into());
                }
                (s.clone(), at)
            })
            .collect();
        let stop = CancellationToken::new();
        let (control, channel, handle) = (hub.control_addr(), hub.channel_addr(), hub.handle());
        let (admin, health) = (hub.admin_addr(), hub.health_addr());
        let task = tokio::spawn(hub.run(stop.clone()));
        TestHub {
            control,
            channel,
            admin,
            health,
            services,
            handle,
            stop,
            task: Some(task),
        }
    }

    /// Saves `o` over the hub's `file` and waits for that reload's
    /// outcome: the plan line, or why it was refused.
    pub async fn reload_to(
        &self,
        certs: &Certs,
        o: &HubOpts,
        file: &Path,
    ) -> Result<String, String> {
        self.reload_after(|| save_hub_toml(certs, o, file)).await
    }

    /// Runs `change` (a file the hub follows written) and waits for that
    /// reload's outcome.
    pub async fn reload_after(&self, change: impl FnOnce()) -> Result<String, String> {
        let mut rx = self.handle.reloads();
        let before = rx.borrow().0;
        change();
        let (_, outcome) =
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|(n, _)| *n > before))
                .await
                .expect("the hub reloaded")
                .unwrap()
                .clone();
        outcome
    }

    pub fn service(&self, name: &str) -> SocketAddr {
        self.services.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Waits until `n` eps are logged in.
    pub async fn wait_sessions(&self, n: usize) {
        let mut rx = self.handle.sessions();
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|c| *c == n))
            .await
            .expect("eps did not log in")
            .unwrap();
    }

    /// Waits (bounded, 20 s) until the hub has seen more than `n` logins.
    pub async fn wait_logins_over(&self, n: u64) {
        let mut rx = self.handle.logins();
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|c| *c > n))
            .await
            .expect("the ep logged in again")
            .unwrap();
    }

    /// Stops the hub and waits until its ports are closed.
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The one ep config builder: in-process eps and ep processes alike.
pub struct EpOpts {
    pub cert: String,
    pub ca: PathBuf,
    pub token: String,
    pub services: Vec<(String, SocketAddr)>,
    /// Top-level keys; they replace the test defaults they name.
    pub extra: String,
    /// Keys added to every `[services.NAME]` table.
    pub service_extra: String,
}

impl EpOpts {
    pub fn new(certs: &Certs, services: Vec<(String, SocketAddr)>) -> Self {
        EpOpts {
            cert: "home".into(),
            ca: certs.path("ca.pem"),
            token: TOKEN.into(),
            services,
            extra: String::new(),
            service_extra: String::new(),
        }
    }
}

/// An ep config file for `o`, in the certificates' folder.
pub fn write_ep_toml(
    certs: &Certs,
    control: SocketAddr,
    channel: SocketAddr,
    o: &EpOpts,
) -> PathBuf {
    let x = &o.extra;
    let mut text = format!(
        "hub = \"{control}\"\n{}server_name = \"localhost\"\ntoken = {:?}\n{}{}{}{x}\n\
         [tls]\nca = {}\ncert = {}\nkey = {}\n",
        unless_set(x, "channel", &channel.to_string()),
        o.token,
        unless_set(x, "backoff_min", "50ms"),
        unless_set(x, "backoff_max", "500ms"),
        unless_set(x, "connect_timeout", "5s"),
        toml_path(&o.ca),
        toml_path(&certs.path(&format!("ep-{}.pem", o.cert))),
        toml_path(&certs.path(&format!("ep-{}.key", o.cert))),
    );
    for (name, addr) in &o.services {
        text += &format!("[services.{name}]\nlocal = \"{addr}\"\n{}", o.service_extra);
    }
    let file = certs.path(&format!("ep-{}.toml", unique()));
    std::fs::write(&file, text).unwrap();
    file
}

pub fn ep_settings(certs: &Certs, hub: &TestHub, o: &EpOpts) -> EpSettings {
    ep_settings_for(certs, hub.control, hub.channel, o)
}

pub fn ep_settings_for(
    certs: &Certs,
    control: SocketAddr,
    channel: SocketAddr,
    o: &EpOpts,
) -> EpSettings {
    load_ep_file(&write_ep_toml(certs, control, channel, o))
}

/// The ep's settings from its file, as `ferry ep -c FILE` reads them.
pub fn load_ep_file(file: &Path) -> EpSettings {
    EpConfig::load(file, EpFlags::default())
        .unwrap()
        .check(file)
        .unwrap()
}

/// An ep running in this process; stops when dropped.
pub struct TestEp {
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestEp {
    pub fn start(settings: EpSettings) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(ferry::ep::run(settings, stop.clone()));
        TestEp {
            stop,
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// `start`, with a handle on the running ep.
    pub async fn start_with_handle(settings: EpSettings) -> (Self, ferry::ep::Handle) {
        let stop = CancellationToken::new();
        let bound = ferry::ep::bind(settings, stop.clone(), CancellationToken::new())
            .await
            .unwrap();
        let handle = bound.handle();
        let task = tokio::spawn(bound.run());
        (
            TestEp {
                stop,
                task: Some(task),
            },
            handle,
        )
    }
}

impl Drop for TestEp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One login attempt; the error an ep would report.
pub async fn login_error(settings: &EpSettings) -> LoginError {
    match ferry::ep::login(settings).await {
        Ok(_) => panic!("login unexpectedly succeeded"),
        Err(e) => e,
    }
}

/// An echo service: echoes until the peer's FIN, then closes its write side.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A player through `addr` (an echo behind it) that has had one echo:
/// relaying now.
pub async fn connected_player(addr: SocketAddr) -> TcpStream {
    let mut p = TcpStream::connect(addr).await.unwrap();
    p.write_all(b"hi").await.unwrap();
    let mut got = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), p.read_exact(&mut got))
        .await
        .expect("an echo")
        .unwrap();
    p
}

/// Sends `data` through `addr`, half-closes, and returns all that came back.
pub async fn echo_through(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    back
}

/// The two carriers between hub and ep. Every fault or attack test runs
/// on both (`on_every_transport!`): a break must look like a break, and a
/// promise kept over TLS must be kept over QUIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    Quic,
}

impl Transport {
    /// Top-level hub keys this transport needs.
    pub fn hub_extra(self) -> &'static str {
        match self {
            Transport::Tls => "",
            Transport::Quic => "quic = \"127.0.0.1:0\"\n",
        }
    }

    /// Top-level ep keys for a hub whose QUIC door (if any) is `quic`.
    pub fn ep_extra(self, quic: Option<SocketAddr>) -> String {
        match self {
            Transport::Tls => "transport = \"tls\"\n".into(),
            Transport::Quic => format!(
                "transport = \"quic\"\nquic = \"{}\"\n",
                quic.expect("a hub with quic on")
            ),
        }
    }

    /// One login of `s` to `hub` over this transport, for tests of who the
    /// doors let in.
    pub async fn login_once(self, s: &EpSettings, hub: &TestHub) -> Result<(), String> {
        let r = match self {
            Transport::Tls => ferry::ep::login(s).await.map(|_| ()),
            Transport::Quic => {
                let quic = hub.handle.quic_addr().expect("a hub with quic on");
                ferry::ep::login_quic_once(s, quic).await
            }
        };
        r.map_err(|e| e.to_string())
    }

    /// `o` with this transport's hub keys added.
    pub fn hub_opts(self, mut o: HubOpts) -> HubOpts {
        o.extra = format!("{}{}", self.hub_extra(), o.extra);
        o
    }

    /// `o` with this transport's ep keys added, for `hub`.
    pub fn ep_opts(self, hub: &TestHub, mut o: EpOpts) -> EpOpts {
        o.extra = format!("{}{}", self.ep_extra(hub.handle.quic_addr()), o.extra);
        o
    }
}

/// Runs each `async fn NAME(t: Transport)` as two tests, `NAME::tls` and
/// `NAME::quic`.
#[macro_export]
macro_rules! on_every_transport {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls() {
                super::$name($crate::common::Transport::Tls).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic() {
                super::$name($crate::common::Transport::Quic).await
            }
        }
    )*};
}

/// A hub (from `opts`) with one ep over `t` serving `local` as `echo`.
pub async fn tunnel_over(
    certs: &Certs,
    t: Transport,
    opts: HubOpts,
    local: SocketAddr,
) -> (TestHub, TestEp) {
    let hub = TestHub::start(certs, &t.hub_opts(opts)).await;
    let eo = t.ep_opts(&hub, EpOpts::new(certs, vec![("echo".into(), local)]));
    let ep = TestEp::start(ep_settings(certs, &hub, &eo));
    (hub, ep)
}

/// A hub with one ep serving `local` as service `echo`. Players may connect
/// at once: the hub holds them until the ep's channels arrive.
pub async fn tunnel_to(certs: &Certs, local: SocketAddr) -> (TestHub, TestEp) {
    tunnel_with(certs, &HubOpts::default(), local).await
}

/// `tunnel_to`, with a hub built from `opts`.
pub async fn tunnel_with(certs: &Certs, opts: &HubOpts, local: SocketAddr) -> (TestHub, TestEp) {
    let hub = TestHub::start(certs, opts).await;
    let ep = TestEp::start(ep_settings(
        certs,
        &hub,
        &EpOpts::new(certs, vec![("echo".into(), local)]),
    ));
    (hub, ep)
}

/// A hub with one ep serving an echo service, the ep logged in.
pub async fn echo_tunnel(certs: &Certs) -> (TestHub, TestEp) {
    let (hub, ep) = tunnel_to(certs, echo_server().await).await;
    hub.wait_sessions(1).await;
    (hub, ep)
}

/// A TCP connection from a chosen loopback source address ("another host").
pub async fn connect_from(src: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(format!("{src}:0").parse().unwrap())?;
    sock.connect(to).await
}

/// Whether the peer resets each of `conns` within `within` (a close
/// without a reset, or nothing, is false); all waited on at once.
pub async fn reset_by_peer(conns: Vec<TcpStream>, within: Duration) -> Vec<bool> {
    let waits = conns.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let deadline = tokio::time::Instant::now() + within;
            loop {
                match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                    Ok(Err(e)) => return e.kind() == std::io::ErrorKind::ConnectionReset,
                    Ok(Ok(0)) | Err(_) => return false,
                    Ok(Ok(_)) => {}
                }
            }
        })
    });
    let mut out = Vec::new();
    for w in waits.collect::<Vec<_>>() {
        out.push(w.await.unwrap_or(false));
    }
    out
}

/// Waits (bounded) until the peer closes `s`; returns whether it did.
pub async fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A hub config file for the binary: port 0 everywhere, `services` echo-like.
pub fn hub_toml(certs: &Certs, services: &[&str], extra: &str) -> PathBuf {
    let o = HubOpts {
        allowlist: vec!["127.0.0.0/8".into()],
        services: services.iter().map(|s| s.to_string()).collect(),
        extra: extra.into(),
        ..Default::default()
    };
    write_hub_toml(certs, &o, None)
}

/// An ep config file for the binary.
pub fn ep_toml(
    certs: &Certs,
    control: SocketAddr,
    channel: SocketAddr,
    services: &[(&str, SocketAddr)],
) -> PathBuf {
    let services = services.iter().map(|(n, a)| (n.to_string(), *a)).collect();
    write_ep_toml(certs, control, channel, &EpOpts::new(certs, services))
}

/// A TLS connection to the hub's control port with the `home` ep's
/// identity, for speaking the protocol by hand.
/// The `Hello` of an ep of this build serving `echo`, with `token` and
/// protocol `version`, as a test writes it by hand.
pub fn hello(token: &str, version: u32) -> ferry::proto::EpMsg {
    ferry::proto::EpMsg::Hello {
        version,
        token: Secret::new(token),
        services: vec!["echo".into()],
        features: ferry::proto::features(),
        software: None,
        shapes: Default::default(),
    }
}

/// Settings of an ep `home` offering `echo`, for tests that log in and
/// speak for it by hand (the service's local address is never dialled).
pub fn by_hand(certs: &Certs, hub: &TestHub) -> EpSettings {
    ep_settings(
        certs,
        hub,
        &EpOpts::new(certs, vec![("echo".into(), hub.control)]),
    )
}

pub async fn raw_control(certs: &Certs, hub: &TestHub) -> ferry::ep::Tunnel {
    let settings = by_hand(certs, hub);
    ferry::ep::connect_for_tests(&settings, &hub.control.to_string()).await
}

/// A hub process with `extra` config and one `echo`-named service served
/// by an ep process from `local`; returns once the ep is logged in.
pub fn proc_tunnel(
    certs: &Certs,
    extra: &str,
    service: &str,
    local: SocketAddr,
) -> (procs::HubProc, procs::Ferry) {
    let hub = procs::HubProc::start(&hub_toml(certs, &[service], extra), &[], 1);
    let ep = procs::Ferry::spawn(
        "ep",
        &ep_toml(certs, hub.control, hub.channel, &[(service, local)]),
        &[],
    );
    hub.proc.wait_line("ep logged in");
    (hub, ep)
}

/// `proc_tunnel` over transport `t`: the hub process with its QUIC door
/// on for QUIC, the ep process told to use it.
pub fn proc_tunnel_over(
    certs: &Certs,
    t: Transport,
    extra: &str,
    service: &str,
    local: SocketAddr,
) -> (procs::HubProc, procs::Ferry) {
    let extra = format!("{}{extra}", t.hub_extra());
    let hub = procs::HubProc::start(&hub_toml(certs, &[service], &extra), &[], 1);
    let mut eo = EpOpts::new(certs, vec![(service.to_string(), local)]);
    eo.extra = t.ep_extra(hub.quic);
    let ep = procs::Ferry::spawn(
        "ep",
        &write_ep_toml(certs, hub.control, hub.channel, &eo),
        &[],
    );
    hub.proc.wait_line("ep logged in");
    (hub, ep)
}

/// An address where nothing listens, held (bound, never listening) so that
/// no other test can take the port while it is in use: connecting to it is
/// refused. Keep the socket alive as long as the address matters.
pub fn dead_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = hold.local_addr().unwrap();
    (hold, addr)
}

/// A TCP port kept for a server the test starts later (a woken game
/// server): bound with SO_REUSEADDR and not listening, so nothing else
/// takes it meanwhile, connections to it are refused, and a server that
/// also sets SO_REUSEADDR (Python's, Node's) can bind it.
pub fn held_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.set_reuseaddr(true).unwrap();
    hold.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = hold.local_addr().unwrap();
    (hold, addr)
}

/// Kills the process whose pid a test's server wrote to a file, when the
/// test ends however it ends.
pub struct KillPidFile(pub PathBuf);

impl Drop for KillPidFile {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// When a certificate made by `issue_ep_cert` is valid.
pub enum Validity {
    Now,
    Expired,
    /// Valid from an hour ago until then.
    Until(time::OffsetDateTime),
}

/// Issues an ep certificate `ep-NAME.pem`/`.key` from the test CA with a
/// chosen validity and usage (server-auth usage is wrong for an ep).
pub fn issue_ep_cert(certs: &Certs, name: &str, validity: Validity, server_auth: bool) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let issuer = test_ca(certs);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![if server_auth {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    match validity {
        Validity::Now => {}
        Validity::Expired => {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        Validity::Until(t) => {
            p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
            p.not_after = t;
        }
    }
    let cert = p.signed_by(&key, &issuer).unwrap();
    save_ep_cert(certs, name, &cert.pem(), &key);
}

/// The test CA, as an issuer of certificates.
fn test_ca(certs: &Certs) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let read = |f: &str| std::fs::read_to_string(certs.path(f)).unwrap();
    let key = rcgen::KeyPair::from_pem(&read("ca.key")).unwrap();
    rcgen::Issuer::from_ca_cert_pem(&read("ca.pem"), key).unwrap()
}

/// Writes `ep-NAME.pem` (`pem`) and its private key `ep-NAME.key`.
fn save_ep_cert(certs: &Certs, name: &str, pem: &str, key: &rcgen::KeyPair) {
    std::fs::write(certs.path(&format!("ep-{name}.pem")), pem).unwrap();
    let keyfile = certs.path(&format!("ep-{name}.key"));
    std::fs::write(&keyfile, key.serialize_pem()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Issues an ep certificate `ep-NAME.pem`/`.key` through an intermediate
/// CA the test CA signed, as a user's own PKI would: the file holds the
/// ep's certificate, then the intermediate's.
pub fn issue_ep_cert_via_intermediate(certs: &Certs, name: &str) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let root = test_ca(certs);
    let mid_key = KeyPair::generate().unwrap();
    let mut mid = CertificateParams::default();
    mid.distinguished_name = rcgen::DistinguishedName::new();
    mid.distinguished_name
        .push(DnType::CommonName, "intermediate CA");
    mid.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    mid.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mid_cert = mid.signed_by(&mid_key, &root).unwrap();
    let mid = Issuer::new(mid, mid_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &mid).unwrap();
    save_ep_cert(
        certs,
        name,
        &format!("{}{}", cert.pem(), mid_cert.pem()),
        &key,
    );
}

/// A service that greets every connection with one byte and counts them:
/// each count is a channel taken and a dial at home.
pub async fn counting_greeter() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = s.write_all(b"!").await;
                let mut sink = [0u8; 64];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, n)
}

/// The status and body of `GET path` on an admin or health door.
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

/// Saves `fresh` over the ep's `file` the way editors do, and waits for
/// that ep's next reload.
pub async fn saved(ep: &ferry::ep::Handle, fresh: std::path::PathBuf, file: &std::path::Path) {
    let mut reloads = ep.reloads();
    let before = *reloads.borrow();
    std::fs::rename(fresh, file).unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reloads.wait_for(|n| *n > before),
    )
    .await
    .expect("the ep reloaded")
    .unwrap();
}

/// The value of the sample `name{labels}` in Prometheus text, if there.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The value of the sample `name{labels}` in Prometheus text; it must be there.
pub fn sample(text: &str, name_and_labels: &str) -> f64 {
    metric(text, name_and_labels).unwrap_or_else(|| panic!("no {name_and_labels} in:\n{text}"))
}
