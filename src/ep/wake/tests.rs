//! Where a failed dial looks before it wakes a service: right after the
//! ep starts (nothing found yet), after only a UDP flow found it, and when
//! the host said nothing (a machine switched off: no try before the wake).

use super::*;
use crate::config::{ep::UdpHeaders, ports::LocalRange};
use std::sync::atomic::AtomicUsize;
use tokio_util::sync::CancellationToken;

/// A service on ports `first` and `first + 1` whose wake command touches
/// `woke`.
fn services(first: u16, woke: &std::path::Path) -> BTreeMap<String, LocalService> {
    let service = LocalService {
        addr: LocalRange::parse(&format!("127.0.0.1:{first}-{}", first + 1)).unwrap(),
        kind: None,
        proxy_protocol: None,
        proxy_protocol_udp: UdpHeaders::First,
        max_players: 10,
        wake: Some(Wake {
            command: vec!["touch".into(), woke.display().to_string()],
            timeout: Duration::from_secs(2),
            sleep: None,
        }),
    };
    BTreeMap::from([("a".to_string(), service)])
}

fn local(first: u16, offset: u16, udp: bool) -> Local {
    Local {
        service: "a".into(),
        at: format!("127.0.0.1:{}", first + offset),
        connect_timeout: Duration::from_secs(2),
        stop: CancellationToken::new(),
        udp,
        proxy: None,
    }
}

/// The first port answering, counted; the second one held, never
/// listening (a dial of it is refused), while the socket returned lives.
async fn first_port_up() -> (u16, Arc<AtomicUsize>, tokio::net::TcpSocket) {
    loop {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let first = l.local_addr().unwrap().port();
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        if first == u16::MAX || held.bind(([127, 0, 0, 1], first + 1).into()).is_err() {
            continue;
        }
        let tries = Arc::new(AtomicUsize::new(0));
        let counted = tries.clone();
        tokio::spawn(async move {
            while l.accept().await.is_ok() {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        return (first, tries, held);
    }
}

/// The ep's view of service `a` (`services`), its server up on the first
/// port; what its wake command would touch, and the sockets held.
struct Home {
    homes: Arc<Homes>,
    woke: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _held: tokio::net::TcpSocket,
}

impl Home {
    /// With the first port, and its tries counted.
    async fn up() -> (Home, u16, Arc<AtomicUsize>) {
        let dir = tempfile::tempdir().unwrap();
        let woke = dir.path().join("woke");
        let (first, tries, held) = first_port_up().await;
        let homes = Arc::new(Homes::default());
        homes.configure(None, &services(first, &woke));
        let home = Home {
            homes,
            woke,
            _dir: dir,
            _held: held,
        };
        (home, first, tries)
    }
}

async fn outcome(rx: Option<watch::Receiver<Woken>>) -> Woken {
    let mut rx = rx.expect("a join waits for the wake's outcome");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|w| *w != Woken::Starting),
    );
    *r.await.expect("an outcome within 10 s").unwrap()
}

#[tokio::test]
async fn a_join_refused_off_the_first_port_before_any_answer_finds_it_up_there() {
    let (home, first, tries) = Home::up().await;
    let (homes, woke) = (&home.homes, &home.woke);
    let refused = homes.refused(&local(first, 1, false), (true, Instant::now(), true));
    assert_eq!(outcome(refused).await, Woken::Up);
    assert_eq!(tries.load(Ordering::Relaxed), 1, "the first port tried");
    assert!(!woke.exists(), "woken beside the running server");
}

#[tokio::test]
async fn a_tcp_join_refused_after_only_a_udp_flow_found_it_finds_it_up_on_its_first_port() {
    let (home, first, _) = Home::up().await;
    let (homes, woke) = (&home.homes, &home.woke);
    homes.answered(&local(first, 0, true));
    let refused = homes.refused(&local(first, 1, false), (true, Instant::now(), true));
    assert_eq!(outcome(refused).await, Woken::Up);
    assert!(!woke.exists(), "woken beside the running server");
}

#[tokio::test]
async fn a_join_the_host_said_nothing_to_wakes_at_once_without_a_try() {
    let (home, first, tries) = Home::up().await;
    let (homes, woke) = (&home.homes, &home.woke);
    // No answer within `connect_timeout`: a host switched off, whose
    // `wakeonlan` must not wait for a try of another of its ports.
    let _ = homes.refused(&local(first, 1, false), (true, Instant::now(), false));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !woke.exists() {
        assert!(std::time::Instant::now() < deadline, "never woken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tries.load(Ordering::Relaxed), 0, "a port tried first");
}
