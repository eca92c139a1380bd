//! UDP helpers: an echo service at home that remembers who spoke to it,
//! players that send and wait for answers, and free port ranges.

use super::{Certs, EpOpts, HubOpts, TestEp, TestHub, Transport, ep_settings};
use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::net::UdpSocket;

/// The sources an echo service has seen.
pub type Seen = Arc<Mutex<HashSet<SocketAddr>>>;

/// A UDP echo service on `addr` (port 0: any); its address and the
/// sources it has answered.
pub async fn udp_echo_at(addr: SocketAddr) -> (SocketAddr, Seen) {
    let sock = UdpSocket::bind(addr).await.unwrap();
    let addr = sock.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            s.lock().unwrap().insert(from);
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, seen)
}

pub async fn udp_echo() -> (SocketAddr, Seen) {
    udp_echo_at("127.0.0.1:0".parse().unwrap()).await
}

/// A player: a UDP socket on 127.0.0.1 (or another loopback address).
pub async fn player_from(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0")).await.unwrap()
}

pub async fn player() -> UdpSocket {
    player_from("127.0.0.1").await
}

/// Sends `d` to `to` once and waits up to `wait` for one answer.
pub async fn ask(p: &UdpSocket, to: SocketAddr, d: &[u8], wait: Duration) -> Option<Vec<u8>> {
    p.send_to(d, to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(wait, p.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Asks until answered (the path may be coming back), up to `within`.
pub async fn ask_until(p: &UdpSocket, to: SocketAddr, d: &[u8], within: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(a) = ask(p, to, d, Duration::from_millis(200)).await {
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer within {within:?}"
        );
    }
}

/// The first of `n` consecutive ports free for both TCP and UDP on
/// 127.0.0.1 right now. Another program could take one before the test
/// binds it; the tests that need a range accept that small race.
pub fn free_range(n: u16) -> u16 {
    // Below the kernel's ephemeral range: another test's outgoing
    // connection (or port-0 listener) never takes a port from there
    // between this check and the bind that follows it.
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u16, low.saturating_sub(n).max(10_001));
    for _ in 0..200 {
        let first = from + (random() % u64::from(to - from)) as u16;
        let held: Vec<_> = (first..first + n)
            .map(|p| {
                let u = std::net::UdpSocket::bind(("127.0.0.1", p)).ok()?;
                let t = std::net::TcpListener::bind(("127.0.0.1", p)).ok()?;
                Some((u, t))
            })
            .collect();
        if held.iter().all(Option::is_some) {
            return first;
        }
    }
    panic!("no {n} consecutive free ports on 127.0.0.1");
}

/// A different number each call, in every test process.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// Polls `f` until it holds, for state with no event to wait on.
pub async fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where a UDP service listens and how its ep reaches the hub: every UDP
/// behaviour is tested on an IPv4 bind and on a dual-stack `[::]` one
/// (IPv4 players then arrive as `::ffff:a.b.c.d`), over TLS and QUIC.
#[derive(Clone, Copy, Debug)]
pub struct Door {
    pub t: Transport,
    pub dual_stack: bool,
}

impl Door {
    /// The host a service binds on this door.
    pub fn host(self) -> &'static str {
        if self.dual_stack { "[::]" } else { "127.0.0.1" }
    }

    /// `o` with this door's transport keys and service host.
    pub fn hub_opts(self, mut o: HubOpts) -> HubOpts {
        o.service_host = self.host().into();
        self.t.hub_opts(o)
    }

    pub fn ep_opts(self, hub: &TestHub, o: EpOpts) -> EpOpts {
        self.t.ep_opts(hub, o)
    }
}

/// Runs each `async fn NAME(door: Door)` as four tests: `NAME::tls_v4`,
/// `NAME::tls_dual_stack`, `NAME::quic_v4`, `NAME::quic_dual_stack`.
#[macro_export]
macro_rules! on_every_udp_door {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::common::{Transport, udp::Door};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls_v4() {
                super::$name(Door { t: Transport::Tls, dual_stack: false }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls_dual_stack() {
                super::$name(Door { t: Transport::Tls, dual_stack: true }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic_v4() {
                super::$name(Door { t: Transport::Quic, dual_stack: false }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic_dual_stack() {
                super::$name(Door { t: Transport::Quic, dual_stack: true }).await
            }
        }
    )*};
}

/// `service_tunnel` on `door`.
pub async fn door_tunnel(
    certs: &Certs,
    door: Door,
    service_keys: &str,
    local: SocketAddr,
) -> (TestHub, TestEp) {
    let opts = door.hub_opts(HubOpts {
        service_extra: service_keys.to_string(),
        ..Default::default()
    });
    let hub = TestHub::start(certs, &opts).await;
    let eo = door.ep_opts(&hub, EpOpts::new(certs, vec![("echo".into(), local)]));
    let ep = TestEp::start(ep_settings(certs, &hub, &eo));
    hub.wait_sessions(1).await;
    (hub, ep)
}

/// A hub whose one service `echo` has `service_keys` (its `type` among
/// them), and an ep serving it from `local`, logged in.
pub async fn service_tunnel(
    certs: &Certs,
    service_keys: &str,
    local: SocketAddr,
) -> (TestHub, TestEp) {
    let opts = HubOpts {
        service_extra: service_keys.to_string(),
        ..Default::default()
    };
    let hub = TestHub::start(certs, &opts).await;
    let ep = TestEp::start(ep_settings(
        certs,
        &hub,
        &EpOpts::new(certs, vec![("echo".into(), local)]),
    ));
    hub.wait_sessions(1).await;
    (hub, ep)
}

/// TCP on `at` answering nothing, as a host switched off or a firewall
/// that drops: a listen queue filled and never accepted, so the kernel
/// drops further tries without a word. What holds it, or None if the
/// port is taken.
pub async fn tcp_that_says_nothing(at: SocketAddr) -> Option<Vec<Box<dyn std::any::Any + Send>>> {
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.bind(at).ok()?;
    let listener = tcp.listen(1).unwrap();
    let mut held: Vec<Box<dyn std::any::Any + Send>> = vec![Box::new(listener)];
    for _ in 0..4 {
        let tried = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(at),
        );
        if let Ok(Ok(s)) = tried.await {
            held.push(Box::new(s));
        }
    }
    Some(held)
}
