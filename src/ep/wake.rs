//! Services at home that sleep: how each was last found (told to the hub,
//! which answers for a service that is away), the `wake` command run when
//! a player finds it not answering, and the `sleep` command run after
//! `sleep_after` with no player.
//!
//! A wake runs its command once, however many players arrive meanwhile;
//! they all wait for the same outcome. The command is not waited for (it
//! may be the game server itself, or `systemctl start`, or `wakeonlan`):
//! the ep polls the local port until it answers or `wake_timeout` passes.

use crate::{config::ep::Wake, proto::HomeState};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::Command,
    sync::watch,
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
    /// Wakes in progress, and services being watched for coming back.
    busy: Mutex<HashMap<String, Busy>>,
}

enum Busy {
    Waking(watch::Receiver<Woken>),
    /// Down or asleep: rechecked every `RECHECK` until it answers.
    Rechecking,
    /// Up with a `sleep` command: watched for `sleep_after` without a
    /// player.
    Sleeper,
}

/// Where a service at home is, and what stops its tasks.
pub(super) struct Local {
    pub service: String,
    pub at: String,
    pub connect_timeout: Duration,
    pub stop: CancellationToken,
}

impl Homes {
    pub fn watch(&self) -> watch::Receiver<BTreeMap<String, HomeState>> {
        self.states.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Busy>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, service: &str, state: HomeState) {
        self.states
            .send_if_modified(|m| m.insert(service.to_string(), state) != Some(state));
    }

    /// A service no longer served: forgotten (its tasks end on their own).
    pub fn retain(&self, served: impl Fn(&str) -> bool) {
        self.states.send_if_modified(|m| {
            let before = m.len();
            m.retain(|k, _| served(k));
            m.len() != before
        });
        self.lock().retain(|k, _| served(k));
    }

    /// A dial of `service` answered.
    pub fn answered(self: &Arc<Self>, l: &Local, wake: Option<&Wake>, playing: Playing) {
        self.set(&l.service, HomeState::Up);
        let Some((cmd, after)) = wake.and_then(|w| w.sleep.clone()) else {
            return;
        };
        let mut busy = self.lock();
        if matches!(
            busy.get(&l.service),
            Some(Busy::Sleeper) | Some(Busy::Waking(_))
        ) {
            return;
        }
        busy.insert(l.service.clone(), Busy::Sleeper);
        drop(busy);
        let (me, service, stop) = (self.clone(), l.service.clone(), l.stop.clone());
        tokio::spawn(async move {
            let step = (after / 10).clamp(Duration::from_millis(200), Duration::from_secs(30));
            let mut idle = Duration::ZERO;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(step) => {}
                    _ = stop.cancelled() => return,
                }
                if !matches!(me.lock().get(&service), Some(Busy::Sleeper)) {
                    return;
                }
                idle = if playing(&service) == 0 {
                    idle + step
                } else {
                    Duration::ZERO
                };
                if idle >= after {
                    break;
                }
            }
            tracing::info!(
                service,
                "no player for {after:?}: running its sleep command"
            );
            me.lock().remove(&service);
            me.set(&service, HomeState::Asleep);
            run(&service, "sleep", &cmd);
        });
    }

    /// A dial of `service` failed. With `wake` and a player who joins
    /// (not a server-list ping), the service is started and the returned
    /// watch says when it answers.
    pub fn refused(
        self: &Arc<Self>,
        l: &Local,
        wake: Option<&Wake>,
        join: bool,
    ) -> Option<watch::Receiver<Woken>> {
        let mut busy = self.lock();
        if let Some(Busy::Waking(rx)) = busy.get(&l.service) {
            return join.then(|| rx.clone());
        }
        let Some(w) = wake.filter(|_| join) else {
            let state = if wake.is_some() {
                HomeState::Asleep
            } else {
                HomeState::Down
            };
            if !matches!(busy.get(&l.service), Some(Busy::Rechecking)) {
                busy.insert(l.service.clone(), Busy::Rechecking);
                drop(busy);
                self.recheck(l);
            } else {
                drop(busy);
            }
            self.set(&l.service, state);
            return None;
        };
        let (tx, rx) = watch::channel(Woken::Starting);
        busy.insert(l.service.clone(), Busy::Waking(rx.clone()));
        drop(busy);
        self.set(&l.service, HomeState::Waking);
        tracing::info!(service = l.service, command = ?w.command, "a player found the service away: waking it");
        run(&l.service, "wake", &w.command);
        let (me, at, service) = (self.clone(), l.at.clone(), l.service.clone());
        let (timeout, connect, stop) = (w.timeout, l.connect_timeout, l.stop.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let up = tokio::select! {
                r = tokio::time::timeout(timeout, until_answers(&at, connect)) => r.is_ok(),
                _ = stop.cancelled() => false,
            };
            me.lock().remove(&service);
            if up {
                tracing::info!(
                    service,
                    secs = started.elapsed().as_secs_f64(),
                    "woken: the service answers"
                );
                me.set(&service, HomeState::Up);
                let _ = tx.send(Woken::Up);
            } else {
                if !stop.is_cancelled() {
                    tracing::warn!(
                        service,
                        local = at,
                        "woken service did not answer within wake_timeout ({timeout:?})"
                    );
                }
                me.set(&service, HomeState::Asleep);
                let _ = tx.send(Woken::Failed);
            }
        });
        Some(rx)
    }

    /// Tries a service that is down or asleep now and then, so one started
    /// by hand is seen.
    fn recheck(self: &Arc<Self>, l: &Local) {
        let (me, at, service, stop) = (
            self.clone(),
            l.at.clone(),
            l.service.clone(),
            l.stop.clone(),
        );
        let connect = l.connect_timeout;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RECHECK) => {}
                    _ = stop.cancelled() => return,
                }
                if !matches!(me.lock().get(&service), Some(Busy::Rechecking)) {
                    return;
                }
                if tokio::time::timeout(connect, TcpStream::connect(&at))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    let mut busy = me.lock();
                    if matches!(busy.get(&service), Some(Busy::Rechecking)) {
                        busy.remove(&service);
                        drop(busy);
                        tracing::info!(service, "the service at home answers again");
                        me.set(&service, HomeState::Up);
                    }
                    return;
                }
            }
        });
    }
}

/// Players on a service now.
pub(super) type Playing = Arc<dyn Fn(&str) -> usize + Send + Sync>;

async fn until_answers(at: &str, connect: Duration) {
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(connect, TcpStream::connect(at)).await {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Starts `argv` without a shell; its output goes to the log, its exit is
/// logged, and it is not waited for.
fn run(service: &str, what: &'static str, argv: &[String]) {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // It may be the game server itself: it outlives this task.
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return tracing::error!(service, command = ?argv, "cannot run the {what} command: {e}");
        }
    };
    let service = service.to_string();
    let out = child.stdout.take();
    let err = child.stderr.take();
    tokio::spawn(async move {
        let log = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
            let service = service.clone();
            async move {
                let Some(r) = r else { return };
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(service, "{what}: {line}");
                }
            }
        };
        let (_, _, status) = tokio::join!(
            log(out.map(|o| Box::new(o) as _)),
            log(err.map(|e| Box::new(e) as _)),
            child.wait()
        );
        match status {
            Ok(s) if s.success() => tracing::info!(service, "{what} command finished"),
            Ok(s) => tracing::warn!(service, "{what} command failed: {s}"),
            Err(e) => tracing::warn!(service, "{what} command: {e}"),
        }
    });
}
