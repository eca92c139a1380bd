//! `ferry ep join` against folders that cannot take its files and hubs
//! that answer badly: an invite is never burned by a folder the join could
//! have checked first, a token the hub gave is never lost, the hub's first
//! line is read with a cap, and nothing the hub sends is written unchecked
//! (the certificate must be for the key made at home, the CA is the one
//! the invite's fingerprint matched, names cannot add keys to ep.toml).
//!
//! The misbehaving hubs are a hand-written enrol door in this file: the
//! line protocol and TLS with the test's hub certificate, then whatever
//! answer the test makes.

mod common;

use common::procs::{self, run};
use common::udp::free_range;
use common::*;
use ferry::{
    config::ports::ServiceKind,
    enrol::{Line, Offered, Reply, Request},
    secret::Secret,
};
use std::{
    path::{Path, PathBuf},
    time::Instant,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A hub with `[enrol]` on a fixed port and a service `game`.
async fn enrol_hub(certs: &Certs) -> (TestHub, PathBuf) {
    let (door, game) = (free_range(1), free_range(1));
    let o = HubOpts {
        services: vec![],
        allowlist: vec!["127.0.0.2/32".into()],
        extra: format!(
            "[enrol]\nbind = \"127.0.0.1:{door}\"\n[services.game]\nbind = \"127.0.0.1:{game}\"\n"
        ),
        ..Default::default()
    };
    let settings = hub_settings(certs, &o);
    let file = settings.file.clone();
    (TestHub::from_settings(settings, &o).await, file)
}

/// `ferry hub invite` for `ep`; the line it printed.
fn invite(file: &Path, ep: &str) -> String {
    let (ok, text) = run(&["hub", "invite", "-c", file.to_str().unwrap(), "--ep", ep]);
    assert!(ok, "{text}");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ferry ep join "))
        .unwrap_or_else(|| panic!("no join line in {text}"))
        .to_string()
}

/// `ferry ep join LINE --dir DIR` off the async threads (borrowing
/// neither, to run beside a fake door).
fn join(line: &str, dir: &Path) -> impl Future<Output = (bool, String)> + use<> {
    let (line, dir) = (line.to_string(), dir.to_str().unwrap().to_string());
    async move {
        tokio::task::spawn_blocking(move || run(&["ep", "join", &line, "--dir", &dir]))
            .await
            .unwrap()
    }
}

/// The staging folders a join left in `dir`.
fn staging_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".ferry-join")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The token every fake door's enrolment gives.
const GIVEN: &str = "given-token-5f3a9c0e1d2b4a6f";

/// A hand-written enrol door.
struct FakeDoor {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ca_der: Vec<u8>,
}

impl FakeDoor {
    async fn start(certs: &Certs) -> FakeDoor {
        let material = ferry::tls::ServerMaterial::load(&ferry::config::TlsPaths {
            ca: certs.path("ca.pem"),
            cert: certs.path("hub.pem"),
            key: certs.path("hub.key"),
        })
        .unwrap();
        FakeDoor {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: material.enrol_config().unwrap().into(),
            ca_der: ferry::tls::load_certs(&certs.path("ca.pem")).unwrap()[0].to_vec(),
        }
    }

    /// An invite line for this door and its CA.
    fn line(&self) -> String {
        Line {
            door: self.listener.local_addr().unwrap().to_string(),
            more: vec![],
            ca: ferry::enrol::fingerprint(&self.ca_der),
            id: "0123456789abcdef".into(),
            secret: "00112233445566778899aabbccddeeff".into(),
        }
        .to_string()
    }

    /// Takes one join up to its first line: the connection, the hello read.
    async fn hello(&self) -> TcpStream {
        let (mut tcp, _) = self.listener.accept().await.unwrap();
        let mut b = [0u8; 1];
        while tcp.read(&mut b).await.unwrap() == 1 && b[0] != b'\n' {}
        tcp
    }

    /// Takes one join: the CA, TLS and the request; answers `reply(req)`.
    async fn answer(&self, reply: impl FnOnce(Request) -> Reply) {
        let mut tcp = self.hello().await;
        let ca = format!("ca {}\n", ferry::enrol::hex(&self.ca_der));
        tcp.write_all(ca.as_bytes()).await.unwrap();
        let mut tls = self.acceptor.accept(tcp).await.unwrap();
        let req: Request = ferry::proto::read_msg(&mut tls).await.unwrap();
        ferry::proto::write_msg(&mut tls, &reply(req))
            .await
            .unwrap();
        let _ = tls.shutdown().await;
    }
}

/// What the real hub would answer: the request's key certified as `ep` by
/// the test CA, a token, one service.
fn granted(certs: &Certs, req: &Request, ep: &str) -> Reply {
    let (cert, _) =
        ferry::certgen::sign_csr(&certs.path("ca.pem"), &certs.path("ca.key"), &req.csr, ep)
            .unwrap();
    Reply::Enrolled {
        ep: ep.into(),
        cert,
        ca: std::fs::read_to_string(certs.path("ca.pem")).unwrap(),
        token: Secret::new(GIVEN),
        control_port: 7001,
        channel_port: 7002,
        services: vec![offered("game", 25565, 1)],
    }
}

fn offered(name: &str, first_port: u16, ports: u16) -> Offered {
    Offered {
        name: name.into(),
        kind: ServiceKind::Tcp,
        first_port,
        ports,
    }
}

/// (a) A folder under a regular file, and a leftover token from an
/// earlier try without `--force`: both stop the join before the hub is
/// contacted, so the same line then works in a good folder. Before, both
/// burned the invite first and the second try said "already used".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_that_cannot_take_the_files_stops_the_join_before_the_invite_is_used() {
    let certs = Certs::new();
    let (hub, file) = enrol_hub(&certs).await;
    let line = invite(&file, "cabin");
    let home = tempfile::tempdir().unwrap();
    let blocker = home.path().join("not-a-folder");
    std::fs::write(&blocker, "a file where a folder should be\n").unwrap();
    let (ok, text) = join(&line, &blocker.join("ferry")).await;
    assert!(!ok, "{text}");
    assert!(text.contains("nothing was sent to the hub"), "{text}");
    let leftover = home.path().join("leftover");
    std::fs::create_dir_all(leftover.join("certs")).unwrap();
    std::fs::write(leftover.join("certs/token"), "from an earlier try\n").unwrap();
    let (ok, text) = join(&line, &leftover).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("already exists") && text.contains("nothing was sent to the hub"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(leftover.join("certs/token")).unwrap(),
        "from an earlier try\n"
    );
    assert!(
        staging_in(&leftover).is_empty(),
        "{:?}",
        staging_in(&leftover)
    );
    assert!(!leftover.join("certs/ep.key").exists());
    assert_eq!(hub.handle.enrolments(), 0);
    // A hub's own certificate folder (hub and ep on one machine): even
    // with --force the join will not replace the hub's ca.pem.
    let hub_dir = home.path().join("hub");
    std::fs::create_dir_all(hub_dir.join("certs")).unwrap();
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(certs.path(f), hub_dir.join("certs").join(f)).unwrap();
    }
    let (line_, dir_) = (line.clone(), hub_dir.to_str().unwrap().to_string());
    let (ok, text) = tokio::task::spawn_blocking(move || {
        common::procs::run(&["ep", "join", &line_, "--dir", &dir_, "--force"])
    })
    .await
    .unwrap();
    assert!(!ok && text.contains("holds a CA key"), "{text}");
    assert_eq!(
        std::fs::read(hub_dir.join("certs/ca.pem")).unwrap(),
        std::fs::read(certs.path("ca.pem")).unwrap()
    );
    let good = home.path().join("good");
    let (ok, text) = join(&line, &good).await;
    assert!(ok, "{text}");
    assert!(good.join("ep.toml").exists() && good.join("certs/token").exists());
    assert!(staging_in(&good).is_empty(), "{:?}", staging_in(&good));
    assert_eq!(hub.handle.enrolments(), 1);
}

/// (b) A door that answers `ca ` and then hex without end: the join stops
/// reading at its cap and says so, quickly. Before, it read all of it into
/// memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_line_is_cut_off_after_a_bounded_read() {
    // The door stops by itself here, so the unbounded reader of old ends too.
    const PUSH: usize = 256 << 20;
    // What a reader that stopped at its cap can still have taken in: its
    // cap plus both sockets' largest buffers here (tcp_rmem and tcp_wmem
    // at most 32 MiB and 4 MiB).
    const BOUND: usize = 40 << 20;
    let certs = Certs::new();
    let door = FakeDoor::start(&certs).await;
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let flood = async {
        let mut tcp = door.hello().await;
        let chunk = vec![b'a'; 64 << 10];
        let mut sent = tcp.write_all(b"ca ").await.map_or(0, |()| 3);
        while sent < PUSH {
            match tcp.write(&chunk).await {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
        sent
    };
    let ((ok, text), sent) = tokio::join!(join(&door.line(), home.path()), flood);
    println!(
        "figure: an endless answer line: the join took {sent} bytes before it closed, in {:?}",
        started.elapsed()
    );
    assert!(!ok, "{text}");
    assert!(text.contains("line longer than"), "{text}");
    assert!(sent < BOUND, "{sent} bytes taken");
    assert!(!home.path().join("ep.toml").exists());
    assert!(staging_in(home.path()).is_empty());
}

/// (c) A certificate from the right CA but for a key the hub made itself:
/// refused, nothing written. Before, it was written as the ep's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_key_is_refused_and_nothing_is_written() {
    let certs = Certs::new();
    let door = FakeDoor::start(&certs).await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("ep");
    let other = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&other)
        .unwrap()
        .pem()
        .unwrap();
    let serve = door.answer(|req| {
        granted(
            &certs,
            &Request {
                csr: csr.clone(),
                ..req
            },
            "cabin",
        )
    });
    let ((ok, text), ()) = tokio::join!(join(&door.line(), &dir), serve);
    assert!(!ok, "{text}");
    assert!(text.contains("not for the key made here"), "{text}");
    assert!(!dir.exists(), "a refused join leaves no folder behind");
}

/// (d) The reply names another CA than the one whose fingerprint the
/// invite carries (and that the TLS was checked against): the ep writes
/// the checked one, so its later logins trust only that. Before, it wrote
/// the reply's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_written_is_the_one_the_invite_fingerprint_matched() {
    let (certs, stranger) = (Certs::new(), Certs::new());
    let door = FakeDoor::start(&certs).await;
    let home = tempfile::tempdir().unwrap();
    let serve = door.answer(|req| match granted(&certs, &req, "cabin") {
        Reply::Enrolled {
            ep,
            cert,
            token,
            control_port,
            channel_port,
            services,
            ..
        } => Reply::Enrolled {
            ep,
            cert,
            ca: std::fs::read_to_string(stranger.path("ca.pem")).unwrap(),
            token,
            control_port,
            channel_port,
            services,
        },
        refused => refused,
    });
    let ((ok, text), ()) = tokio::join!(join(&door.line(), home.path()), serve);
    assert!(ok, "{text}");
    let written = ferry::tls::load_certs(&home.path().join("certs/ca.pem")).unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(
        ferry::enrol::fingerprint(&written[0]),
        ferry::enrol::fingerprint(&door.ca_der),
        "certs/ca.pem is not the CA the invite named"
    );
    // And the files work together: key, certificate and CA load as the ep's.
    let config = home.path().join("ep.toml");
    let settings = ferry::config::ep::EpConfig::load(&config, Default::default())
        .unwrap()
        .check(&config)
        .unwrap();
    assert_eq!(
        ferry::tls::EpTls::load(&settings).unwrap().identity,
        "cabin"
    );
}

/// (e) Names from the hub with quotes and line breaks: a service name
/// that would add `local = "10.0.0.9:22"` to another service reads back
/// as one service of exactly that name; an ep name that would add
/// `server_name` is refused. A port range past 65535 is written as
/// claimed, not a panic. Before, both names added their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_the_hub_cannot_add_keys_to_ep_toml() {
    let certs = Certs::new();
    let door = FakeDoor::start(&certs).await;
    let home = tempfile::tempdir().unwrap();
    let sneaky = "game]\nlocal = \"10.0.0.9:22\"\n[services.x";
    let serve = door.answer(|req| match granted(&certs, &req, "cabin") {
        Reply::Enrolled {
            ep,
            cert,
            ca,
            token,
            control_port,
            channel_port,
            ..
        } => Reply::Enrolled {
            ep,
            cert,
            ca,
            token,
            control_port,
            channel_port,
            services: vec![offered(sneaky, 25565, 1), offered("wide", 65535, 3)],
        },
        refused => refused,
    });
    let dir = home.path().join("services");
    let ((ok, text), ()) = tokio::join!(join(&door.line(), &dir), serve);
    assert!(ok, "{text}");
    let config = dir.join("ep.toml");
    let written = std::fs::read_to_string(&config).unwrap();
    let loaded = ferry::config::ep::EpConfig::load(&config, Default::default())
        .unwrap_or_else(|e| panic!("{e}\n{written}"));
    let names: Vec<&String> = loaded.services.keys().collect();
    assert_eq!(names, [sneaky, "wide"], "{written}");
    assert_eq!(
        loaded.services[sneaky].local, "127.0.0.1:25565",
        "{written}"
    );
    assert_eq!(loaded.services["wide"].local, "127.0.0.1:65535-65537");

    let sneaky_ep = "cabin\nserver_name = \"evil.example\" #";
    let serve = door.answer(|req| granted(&certs, &req, sneaky_ep));
    let dir = home.path().join("ep-name");
    let ((ok, text), ()) = tokio::join!(join(&door.line(), &dir), serve);
    let written = std::fs::read_to_string(dir.join("ep.toml")).unwrap_or_default();
    assert!(!ok, "{text}\n{written}");
    assert!(text.contains("is not an ep name"), "{text}");
    assert!(!dir.exists());
}

/// (f) The folder checked fine, then changed while the hub answered
/// (`certs` became a file): the join fails after the invite is used, so
/// everything stays in the staging folder and the token is printed.
/// Before, the token existed only in the dead process's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_after_the_hub_answered_keeps_the_files_and_prints_the_token() {
    let certs = Certs::new();
    let door = FakeDoor::start(&certs).await;
    let home = tempfile::tempdir().unwrap();
    let serve = door.answer(|req| {
        std::fs::write(home.path().join("certs"), "in the way\n").unwrap();
        granted(&certs, &req, "cabin")
    });
    let ((ok, text), ()) = tokio::join!(join(&door.line(), home.path()), serve);
    assert!(!ok, "{text}");
    assert!(text.contains(GIVEN), "the token is not in: {text}");
    let kept = staging_in(home.path());
    assert_eq!(kept.len(), 1, "{text}");
    let kept = &kept[0];
    assert!(text.contains(&kept.display().to_string()), "{text}");
    assert_eq!(
        std::fs::read_to_string(kept.join("certs/token")).unwrap(),
        format!("{GIVEN}\n")
    );
    for f in ["ep.toml", "certs/ep.key", "certs/ep.pem", "certs/ca.pem"] {
        assert!(kept.join(f).exists(), "{f} not kept");
    }
    // Moved by hand, as the message says, it is a working enrolment.
    std::fs::remove_file(home.path().join("certs")).unwrap();
    std::fs::rename(kept.join("certs"), home.path().join("certs")).unwrap();
    std::fs::rename(kept.join("ep.toml"), home.path().join("ep.toml")).unwrap();
    let config = home.path().join("ep.toml");
    let settings = ferry::config::ep::EpConfig::load(&config, Default::default())
        .unwrap()
        .check(&config)
        .unwrap();
    assert_eq!(
        ferry::tls::EpTls::load(&settings).unwrap().identity,
        "cabin"
    );
}

/// A door that gave the join's place away (a reset before answering, as
/// a door full of strangers' connections does to its oldest) or said it
/// was busy: the join asks again after a wait, and enrols. Before, it
/// stopped at the first reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_reset_or_told_busy_before_the_answer_asks_again() {
    let certs = Certs::new();
    let door = FakeDoor::start(&certs).await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("ep");
    let serve = async {
        let tcp = door.hello().await;
        ferry::net::abort_on_close(&tcp);
        drop(tcp);
        let mut tcp = door.hello().await;
        tcp.write_all(b"no the hub is busy with other enrolments; try again in a minute\n")
            .await
            .unwrap();
        drop(tcp);
        door.answer(|req| granted(&certs, &req, "cabin")).await;
    };
    let ((ok, text), ()) = tokio::join!(join(&door.line(), &dir), serve);
    assert!(ok, "{text}");
    assert_eq!(text.matches("asking again").count(), 2, "{text}");
    assert!(dir.join("ep.toml").exists());
}

/// Relays joins to the door at `to`, but the first one only until the
/// hub has used `id` (invites.json in `state` says so): then it resets
/// the join's connection, so the hub's answer, the only copy of the
/// token, is lost on the way. Later joins pass untouched.
async fn losing_the_first_answer(to: String, state: PathBuf, id: String, cut: Cut) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (ep, _) = listener.accept().await.unwrap();
            if !first && cut.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            let hub = TcpStream::connect(&to).await.unwrap();
            let (state, id) = (state.clone(), id.clone());
            if !std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let (mut ep, mut hub) = (ep, hub);
                    let _ = tokio::io::copy_bidirectional(&mut ep, &mut hub).await;
                });
                continue;
            }
            tokio::spawn(async move {
                // Its end is a reset, as a connection cut on the way.
                ferry::net::abort_on_close(&ep);
                let (mut ep_r, mut ep_w) = ep.into_split();
                let (mut hub_r, mut hub_w) = hub.into_split();
                let up = tokio::spawn(async move { tokio::io::copy(&mut ep_r, &mut hub_w).await });
                let used = || {
                    std::fs::read_to_string(state.join("invites.json")).is_ok_and(|t| {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        let invites = v["invites"].as_array().unwrap();
                        invites
                            .iter()
                            .any(|i| i["id"] == id.as_str() && i["state"] == "used")
                    })
                };
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = hub_r.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || used() {
                        break;
                    }
                    ep_w.write_all(&buf[..n]).await.unwrap();
                }
                up.abort();
                let _ = up.await;
            });
        }
    });
    addr
}

/// What a join wrote in `dir` is what the hub recorded for `ep` in
/// `state`: the certificate's serial and the token's hash.
fn written_is_recorded(dir: &Path, state: &Path, ep: &str) {
    let enrolled: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("enrolled.json")).unwrap())
            .unwrap();
    let cert = ferry::tls::load_certs(&dir.join("certs/ep.pem")).unwrap();
    let serial = ferry::tls::serial_hex(&cert[0]).unwrap();
    assert_eq!(enrolled["eps"][ep]["serial"], serial.as_str());
    let token = std::fs::read_to_string(dir.join("certs/token")).unwrap();
    let hash = enrolled["eps"][ep]["token_hash"].as_str().unwrap();
    assert!(ferry::token::verify(&Secret::new(token.trim()), hash));
}

/// While set, the relay closes every connection after the first at once.
type Cut = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// The hub enrols the machine but its answer is lost on the way (the
/// connection reset as it comes): the join asks again with the same key
/// and secret, the hub enrols it anew, and what is written is what the
/// hub recorded. Before, the join failed and the invite was spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_on_the_way_is_asked_again_with_the_same_key() {
    let certs = Certs::new();
    let (hub, file) = enrol_hub(&certs).await;
    let line = invite(&file, "cabin");
    let mut parsed = Line::parse(&line).unwrap();
    // The enrol state sits beside the CA unless `[enrol] state` moves it.
    let state = certs.path("ca.pem").parent().unwrap().to_path_buf();
    let cut = Cut::default();
    parsed.door = losing_the_first_answer(parsed.door, state.clone(), parsed.id.clone(), cut).await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("ep");
    let (ok, text) = join(&parsed.to_string(), &dir).await;
    assert!(ok, "{text}");
    assert!(text.contains("asking again with the same key"), "{text}");
    assert_eq!(hub.handle.enrolments(), 2, "enrolled, then enrolled anew");
    written_is_recorded(&dir, &state, "cabin");
    // Another machine with the line (another key) is refused meanwhile.
    let (ok, text) = join(&line, &home.path().join("other")).await;
    assert!(!ok && text.contains("already used"), "{text}");
}

/// As above, but the join is killed while it waits to ask again (the
/// user's Ctrl-C, a laptop shut): the same command run again asks with the
/// key the first left, and gets the enrolment the hub made for it. Before,
/// the second run made a new key and found the invite used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_killed_before_the_answer_is_run_again_with_its_key() {
    let certs = Certs::new();
    let (hub, file) = enrol_hub(&certs).await;
    let mut parsed = Line::parse(&invite(&file, "cabin")).unwrap();
    let state = certs.path("ca.pem").parent().unwrap().to_path_buf();
    let cut = Cut::new(true.into());
    parsed.door =
        losing_the_first_answer(parsed.door, state.clone(), parsed.id.clone(), cut.clone()).await;
    let line = parsed.to_string();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("ep");
    let dir_arg = dir.to_str().unwrap();
    let first = procs::Ferry::spawn_command(&["ep", "join", &line, "--dir", dir_arg]);
    let said = tokio::task::spawn_blocking(move || {
        let said = first.wait_line("asking again with the same key");
        first.signal("KILL");
        said
    })
    .await
    .unwrap();
    assert!(said.contains("lost its answer"), "{said}");
    assert_eq!(hub.handle.enrolments(), 1);
    assert_eq!(staging_in(&dir).len(), 1, "the killed join's folder stays");
    cut.store(false, std::sync::atomic::Ordering::SeqCst);
    let (ok, text) = join(&line, &dir).await;
    assert!(ok, "{text}");
    assert!(text.contains("asking with the key it left"), "{text}");
    assert_eq!(hub.handle.enrolments(), 2, "enrolled, then enrolled anew");
    written_is_recorded(&dir, &state, "cabin");
    assert!(staging_in(&dir).is_empty(), "{:?}", staging_in(&dir));
}

/// A hub that refuses after the request went out (it used the invite,
/// then could not record the enrolment): the join keeps its folder and
/// says to run it again, and the run again asks with the same key and
/// writes what the hub then gave. A grant that fails the checks keeps
/// nothing (above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_the_request_keeps_the_key_for_a_run_again() {
    let certs = Certs::new();
    let door = FakeDoor::start(&certs).await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("ep");
    let first_csr = std::sync::Mutex::new(String::new());
    let serve = door.answer(|req| {
        *first_csr.lock().unwrap() = req.csr;
        Reply::Refused {
            reason: "cannot record the enrolment: No space left on device".into(),
        }
    });
    let ((ok, text), ()) = tokio::join!(join(&door.line(), &dir), serve);
    assert!(!ok, "{text}");
    assert!(text.contains("run the same command again within"), "{text}");
    assert_eq!(staging_in(&dir).len(), 1, "{text}");
    let serve = door.answer(|req| {
        let key = |csr: &str| {
            use rcgen::PublicKeyData;
            let parsed = rcgen::CertificateSigningRequestParams::from_pem(csr).unwrap();
            parsed.public_key.der_bytes().to_vec()
        };
        assert_eq!(
            key(&req.csr),
            key(&first_csr.lock().unwrap()),
            "another key"
        );
        granted(&certs, &req, "cabin")
    });
    let ((ok, text), ()) = tokio::join!(join(&door.line(), &dir), serve);
    assert!(ok, "{text}");
    assert!(
        text.contains("sent its request without an answer"),
        "{text}"
    );
    assert!(dir.join("certs/token").exists());
    assert!(staging_in(&dir).is_empty(), "{:?}", staging_in(&dir));
}
