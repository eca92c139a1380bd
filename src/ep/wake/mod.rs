//! Services at home that sleep: how each was last found (told to the hub,
//! which answers for a service that is away), the `wake` command run when
//! a player finds it not answering, and the `sleep` command run after
//! `sleep_after` with no player.
//!
//! A wake runs its command once, however many players arrive meanwhile
//! (they all wait for the same outcome), and not again while that command
//! still runs (a server slower than `wake_timeout`, a hung command). The
//! command is not waited for (it may be the game server itself, or
//! `systemctl start`, or `wakeonlan`): the ep polls the local port until
//! it answers or `wake_timeout` passes, or the command fails. Each task (a wake, a recheck, a sleeper) holds
//! an id; one a reload or a newer task replaced ends at its next look.

use crate::{config::ep::Wake, proto::HomeState};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    process::Command,
    sync::{oneshot, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// Between two tries of a waking service's port.
const POLL: Duration = Duration::from_millis(250);
/// Between two tries of a service that is down or asleep, so that one
/// started by hand is seen (and the hub stops answering for it).
const RECHECK: Duration = Duration::from_secs(10);

/// How a wake ended, for the players waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Woken {
    Starting,
    Up,
    Failed,
}

#[derive(Default)]
pub(crate) struct Homes {
    /// Each service as last found; sent to the hub when it changes.
    states: watch::Sender<BTreeMap<String, HomeState>>,
    /// The task looking after each service now, if any.
    busy: Mutex<HashMap<String, (u64, Busy)>>,
    /// When each service last answered.
    up_at: Mutex<HashMap<String, Instant>>,
    /// When each service's last wake failed: no new wake for a while, so
    /// a broken command is not run for every join.
    failed_at: Mutex<HashMap<String, Instant>>,
    ids: AtomicU64,
    /// Players who joined each service and are still there: what keeps it
    /// from sleeping (a server-list ping passing through is not one).
    playing: Arc<crate::sources::Counts<String>>,
    /// Services whose wake command is still running. A wake that gave up
    /// (a server slower to open its port than `wake_timeout`, a command
    /// that hangs) or a reload leaves it running; the next join waits on
    /// the port again instead of starting a second server on one world.
    /// A reload that changes the command runs the new one.
    wake_running: Arc<Mutex<HashMap<String, Started>>>,
}

/// A wake command running: which one, since when, and its mark's id.
struct Started {
    id: u64,
    argv: Vec<String>,
    at: Instant,
}

/// One service's wake command, marked running until its process exits.
struct Running {
    map: Arc<Mutex<HashMap<String, Started>>>,
    service: String,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.service).is_some_and(|s| s.id == self.id) {
            map.remove(&self.service);
        }
    }
}

enum Busy {
    Waking(watch::Receiver<Woken>),
    /// Down or asleep: tried every `RECHECK` until it answers.
    Rechecking,
    /// Up with a `sleep` command: watched for `sleep_after` without a
    /// player.
    Sleeper,
}

/// Where a service at home is, and what stops its tasks.
#[derive(Clone)]
pub(super) struct Local {
    pub service: String,
    pub at: String,
    pub connect_timeout: Duration,
    pub stop: CancellationToken,
    /// A UDP service: it answers when a flow hears from it (a port cannot
    /// be tried without speaking its protocol).
    pub udp: bool,
    /// The service's PROXY header, if it takes one: the ep's own tries of
    /// the port send the header's "local" form, so a service that requires
    /// it does not log an error for each.
    pub proxy: Option<crate::proxy_header::Version>,
}

/// Between a failed wake and the next: `wake_timeout`, at most this.
const WAKE_COOLDOWN: Duration = Duration::from_secs(60);

impl Homes {
    /// How `service` was last found, if it was.
    pub fn state_of(&self, service: &str) -> Option<HomeState> {
        self.states.borrow().get(service).copied()
    }

    pub fn watch(&self) -> watch::Receiver<BTreeMap<String, HomeState>> {
        self.states.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Busy)>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, service: &str, state: HomeState) {
        if state == HomeState::Up {
            let mut up = self.up_at.lock().unwrap_or_else(|p| p.into_inner());
            up.insert(service.to_string(), Instant::now());
        }
        self.states
            .send_if_modified(|m| m.insert(service.to_string(), state) != Some(state));
    }

    /// Makes `busy` the task for `service`; its id.
    fn begin(&self, map: &mut HashMap<String, (u64, Busy)>, service: &str, busy: Busy) -> u64 {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        map.insert(service.to_string(), (id, busy));
        id
    }

    /// Whether task `id` still looks after `service`.
    fn current(&self, service: &str, id: u64) -> bool {
        self.lock().get(service).is_some_and(|(i, _)| *i == id)
    }

    /// Ends task `id`'s turn, if it still has it.
    fn end(&self, service: &str, id: u64) -> bool {
        let mut busy = self.lock();
        if busy.get(service).is_some_and(|(i, _)| *i == id) {
            busy.remove(service);
            return true;
        }
        false
    }

    /// What is known of `service` is forgotten: it was removed, or a
    /// reload changed where it is or how it wakes. Its tasks end at their
    /// next look, and the hub hears nothing of it until the next dial.
    pub fn forget(&self, service: &str) {
        self.lock().remove(service);
        for m in [&self.up_at, &self.failed_at] {
            m.lock().unwrap_or_else(|p| p.into_inner()).remove(service);
        }
        self.states
            .send_if_modified(|m| m.remove(service).is_some());
    }

    /// A dial of `service` answered.
    /// A player who joined `service`, counted until dropped.
    pub fn player(&self, service: &str) -> crate::sources::Counted<String> {
        self.playing
            .enter(service.to_string(), usize::MAX)
            .expect("no limit")
    }

    pub fn answered(self: &Arc<Self>, l: &Local, wake: Option<&Wake>) {
        self.set(&l.service, HomeState::Up);
        let mut busy = self.lock();
        if matches!(busy.get(&l.service), Some((_, Busy::Rechecking))) {
            busy.remove(&l.service);
        }
        let Some((cmd, after)) = wake.and_then(|w| w.sleep.clone()) else {
            return;
        };
        if busy.contains_key(&l.service) {
            return;
        }
        let id = self.begin(&mut busy, &l.service, Busy::Sleeper);
        drop(busy);
        let (me, l) = (self.clone(), l.clone());
        tokio::spawn(async move {
            let service = &l.service;
            let step = (after / 10).clamp(Duration::from_millis(200), Duration::from_secs(30));
            let mut idle = Duration::ZERO;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(step) => {}
                    _ = l.stop.cancelled() => return,
                }
                if !me.current(service, id) {
                    return;
                }
                idle = if me.playing.held(service) == 0 {
                    idle + step
                } else {
                    Duration::ZERO
                };
                if idle >= after {
                    break;
                }
            }
            if !me.end(service, id) {
                return;
            }
            tracing::info!(
                service,
                "no player for {after:?}: running its sleep command"
            );
            me.set(service, HomeState::Asleep);
            // Its exit is logged; nothing waits on it.
            drop(run(service, "sleep", &cmd, None));
            me.recheck(&l);
        });
    }

    /// A dial of `service`, begun at `dialled`, failed. With `wake` and a
    /// player who joins (not a server-list ping), the service is started
    /// and the returned watch says when it answers.
    pub fn refused(
        self: &Arc<Self>,
        l: &Local,
        wake: Option<&Wake>,
        (join, dialled): (bool, Instant),
    ) -> Option<watch::Receiver<Woken>> {
        // It answered someone since this dial began (a wake that just
        // ended, a server started by hand): try again, do not wake.
        let answered_since = {
            let up = self.up_at.lock().unwrap_or_else(|p| p.into_inner());
            up.get(&l.service).is_some_and(|t| *t > dialled)
        };
        if answered_since {
            return join.then(|| watch::channel(Woken::Up).1);
        }
        let mut busy = self.lock();
        if let Some((_, Busy::Waking(rx))) = busy.get(&l.service) {
            return join.then(|| rx.clone());
        }
        let cooling = wake.is_some_and(|w| {
            let failed = self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
            failed
                .get(&l.service)
                .is_some_and(|t| t.elapsed() < w.timeout.min(WAKE_COOLDOWN))
        });
        let Some(w) = wake.filter(|_| join && !cooling) else {
            let state = if wake.is_some() {
                HomeState::Asleep
            } else {
                HomeState::Down
            };
            drop(busy);
            self.set(&l.service, state);
            self.recheck(l);
            return None;
        };
        let (tx, rx) = watch::channel(Woken::Starting);
        let id = self.begin(&mut busy, &l.service, Busy::Waking(rx.clone()));
        drop(busy);
        self.set(&l.service, HomeState::Waking);
        let exited = self.run_wake(&l.service, &w.command);
        let me = self.clone();
        tokio::spawn(me.woken(l.clone(), w.clone(), id, tx, exited));
        Some(rx)
    }

    /// Runs `service`'s wake command, unless the one run before is still
    /// running: then only the port decides (the sender is dropped).
    fn run_wake(&self, service: &str, argv: &[String]) -> oneshot::Receiver<bool> {
        let mut running = self.wake_running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = running.get(service).filter(|s| s.argv == argv) {
            tracing::warn!(
                service,
                running_for = ?s.at.elapsed(),
                "a player found the service away; its wake command from before is still \
                 running, so it is not run again: waiting for the port (a command that \
                 hangs blocks wakes until it ends, is changed, or the ep restarts)"
            );
            return oneshot::channel().1;
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let started = Started {
            id,
            argv: argv.to_vec(),
            at: Instant::now(),
        };
        running.insert(service.to_string(), started);
        drop(running);
        tracing::info!(service, command = ?argv, "a player found the service away: waking it");
        let mark = Running {
            map: self.wake_running.clone(),
            service: service.to_string(),
            id,
        };
        run(service, "wake", argv, Some(mark))
    }

    /// A wake's outcome, once `exited` says its command failed or the
    /// service answers or `w.timeout` passes: told on `tx`, logged, and the
    /// state set if this wake (`id`) is still the service's turn.
    async fn woken(
        self: Arc<Self>,
        l: Local,
        w: Wake,
        id: u64,
        tx: watch::Sender<Woken>,
        exited: oneshot::Receiver<bool>,
    ) {
        let (me, timeout) = (self, w.timeout);
        let started = Instant::now();
        let failed = async {
            match exited.await {
                Ok(false) => {}
                // Exited well (systemctl, wakeonlan), or still running
                // (the server itself): the port decides.
                _ => std::future::pending().await,
            }
        };
        let up = tokio::select! {
            r = tokio::time::timeout(timeout, me.until_answers(&l)) => r.is_ok(),
            _ = failed => false,
            _ = l.stop.cancelled() => false,
        };
        let service = &l.service;
        if up {
            // Up (and its time) before the wake's turn ends: a dial
            // begun meanwhile then tries again rather than waking it
            // a second time.
            me.set(service, HomeState::Up);
        }
        let mine = me.end(service, id);
        if up {
            tracing::info!(
                service,
                secs = started.elapsed().as_secs_f64(),
                "woken: the service answers"
            );
            if mine {
                // Its sleep timer, if it has one.
                me.answered(&l, Some(&w));
            }
            let _ = tx.send(Woken::Up);
        } else {
            if !l.stop.is_cancelled() {
                tracing::warn!(
                    service,
                    local = l.at,
                    "the woken service did not answer (wake_timeout {timeout:?}, or its command failed)"
                );
            }
            let _ = tx.send(Woken::Failed);
            me.failed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(service.clone(), Instant::now());
            if mine {
                me.set(service, HomeState::Asleep);
                me.recheck(&l);
            }
        }
    }

    /// Tries a service that is down or asleep now and then, so one started
    /// by hand is seen.
    fn recheck(self: &Arc<Self>, l: &Local) {
        if l.udp {
            // The next flow that hears from it says it is up.
            return;
        }
        let mut busy = self.lock();
        // A wake or a recheck already minds it; a sleep timer gives way
        // (the service it would stop is already down).
        if matches!(
            busy.get(&l.service),
            Some((_, Busy::Waking(_) | Busy::Rechecking))
        ) {
            return;
        }
        let id = self.begin(&mut busy, &l.service, Busy::Rechecking);
        drop(busy);
        let (me, l) = (self.clone(), l.clone());
        tokio::spawn(async move {
            let service = &l.service;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RECHECK) => {}
                    _ = l.stop.cancelled() => return,
                }
                if !me.current(service, id) {
                    return;
                }
                if l.answers().await {
                    if me.end(service, id) {
                        tracing::info!(service, "the service at home answers again");
                        me.set(service, HomeState::Up);
                    }
                    return;
                }
            }
        });
    }
}

impl Homes {
    /// Until the service answers: its TCP port accepts, or (UDP) a flow
    /// hears from it.
    async fn until_answers(&self, l: &Local) {
        if l.udp {
            let mut states = self.states.subscribe();
            let heard = states.wait_for(|m| m.get(&l.service) == Some(&HomeState::Up));
            // Only a Bedrock join wakes a UDP service, so the server can
            // be asked as a server list would: the joining client may
            // have given up, and no flow may ever hear from it.
            tokio::select! {
                _ = heard => {}
                _ = l.pongs() => {}
            }
            return;
        }
        while !l.answers().await {
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Local {
    /// Until the Bedrock server at `at` answers a list ping of the ep's
    /// own (tried every `POLL`).
    async fn pongs(&self) {
        loop {
            if self.pong_once().await.unwrap_or(false) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn pong_once(&self) -> std::io::Result<bool> {
        let to = tokio::net::lookup_host(&self.at)
            .await?
            .next()
            .ok_or(std::io::ErrorKind::AddrNotAvailable)?;
        let any: std::net::SocketAddr = if to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(any).await?;
        socket.connect(to).await?;
        socket
            .send(&crate::game::bedrock::ping(rand_guid()))
            .await?;
        let mut buf = [0u8; 1500];
        Ok(
            match tokio::time::timeout(POLL, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => crate::game::bedrock::is_pong(&buf[..n]),
                _ => false,
            },
        )
    }

    /// One try of the port (with the PROXY header's local form if the
    /// service takes one).
    async fn answers(&self) -> bool {
        let tried = async {
            let mut tcp = TcpStream::connect(&self.at).await?;
            if let Some(v) = self.proxy {
                tcp.write_all(&crate::proxy_header::local_header(v)).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        matches!(
            tokio::time::timeout(self.connect_timeout, tried).await,
            Ok(Ok(()))
        )
    }
}

/// Starts `argv` without a shell, its exit logged and told (true:
/// success), not waited for. Its output goes where the ep's goes (the
/// journal under systemd): not through a pipe, which would break the
/// moment the ep restarts and take a server it started down with it.
/// `mark` is held until the process exits.
fn run(
    service: &str,
    what: &'static str,
    argv: &[String],
    mark: Option<Running>,
) -> oneshot::Receiver<bool> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        // It may be the game server itself: it outlives this task.
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(service, command = ?argv, "cannot run the {what} command: {e}");
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(false);
            return rx;
        }
    };
    let (tx, rx) = oneshot::channel();
    let service = service.to_string();
    tokio::spawn(async move {
        let status = child.wait().await;
        drop(mark);
        let _ = tx.send(status.as_ref().is_ok_and(|s| s.success()));
        match status {
            Ok(s) if s.success() => tracing::info!(service, "{what} command finished"),
            Ok(s) => tracing::warn!(service, "{what} command failed: {s}"),
            Err(e) => tracing::warn!(service, "{what} command: {e}"),
        }
    });
    rx
}

/// A client GUID for the ep's own pings (any value; not a secret).
fn rand_guid() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
