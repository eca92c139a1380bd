//! Services at home that sleep: how each was last found (told to the hub,
//! which answers for a service that is away), the `wake` command run when
//! a player finds it not answering, and the `sleep` command run after
//! `sleep_after` with no player (`sleeper`).
//!
//! A wake runs its command once, however many players arrive meanwhile
//! (they all wait for the same outcome), and not again while that command
//! still runs (a server slower than `wake_timeout`, a hung command), nor
//! while the sleep command still runs (it waits for the stop to end). The
//! command is not waited for (it may be the game server itself, or
//! `systemctl start`, or `wakeonlan`): the ep polls the local port until
//! it answers or `wake_timeout` passes, or the command fails. Each task
//! (a wake, a recheck, a sleeper) holds an id; one a reload or a newer
//! task replaced ends at its next look. The wake settings are the ones in
//! force (`configure`), never a copy a dial or a flow took before a reload.

mod local;
mod silence;
mod sleeper;
#[cfg(test)]
mod tests;

pub(super) use local::Local;
use local::run;

use crate::{
    config::ep::{LocalService, Wake},
    proto::HomeState,
};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

/// Between two tries of a waking service's port.
const POLL: Duration = Duration::from_millis(250);
/// Between two tries of a service that is down or asleep, so that one
/// started by hand is seen (and the hub stops answering for it).
const RECHECK: Duration = Duration::from_secs(10);

/// How a stop under way ended, once it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopEnd {
    Running,
    /// Its command ended well and the server is gone.
    Gone,
    /// Its command failed, or the stop outlasted `STOP_WAIT`: the server
    /// may still be up.
    Unsure,
}

/// A stop under way: since when, and how it ended.
#[derive(Clone)]
pub(super) struct Stop {
    began: Instant,
    end: watch::Receiver<StopEnd>,
}

/// How long a join waits for a stop rather than dialling: a stop that
/// takes longer may be a sleep command that hangs while the server still
/// serves (a wrong RCON password), and players are not held for it.
const STOP_HOLD: Duration = Duration::from_secs(30);

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
    /// Each service's wake settings as configured now.
    wakes: Mutex<HashMap<String, Wake>>,
    /// Where each service last answered: the sleep timer a reload starts
    /// watches it there.
    found_at: Mutex<HashMap<String, Local>>,
    /// Each service's first port as configured (not for one ep.toml says
    /// is UDP): where it is taken to answer until it has been found
    /// somewhere, so a dial that fails on another port of its range just
    /// after the ep starts still does not wake it beside a running server.
    /// With it, whether ep.toml says the service is `tcp+udp`.
    first_port: Mutex<HashMap<String, (String, bool)>>,
    /// Joins of each service so far: a visit between two looks of its
    /// sleep timer still counts.
    joins: Mutex<HashMap<String, u64>>,
    /// Services being stopped: from their sleep command's start until
    /// the server is gone (the watch turns true). A join waits for that
    /// before the wake command runs, never a start beside a stop, and a
    /// dial that still reaches the dying server does not count it up.
    /// Apart from the tasks' map, so a reload that forgets the service
    /// does not forget its stop.
    stops: Mutex<HashMap<String, Stop>>,
    /// Services heard speaking RakNet (a Bedrock server's answer to a
    /// ping or a join): only for them does a join met by silence, where
    /// they answered before, say they are away. A datagram shaped like a
    /// join means nothing to a UDP game of another kind, which ignores it.
    raknet: Mutex<std::collections::HashSet<String>>,
    /// Services a look after a join met by silence is under way for: one
    /// at a time (`silence`).
    looking: Mutex<std::collections::HashSet<String>>,
    /// Services forgotten so far: a look under way when one is says
    /// nothing of it.
    forgets: AtomicU64,
}

/// `m`, locked; a panic elsewhere while it was held leaves plain data.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A wake command running: which one, since when, and its mark's id.
#[derive(Clone)]
struct Started {
    id: u64,
    argv: Vec<String>,
    at: Instant,
}

/// One service's wake command, marked running until its process exits.
struct Running {
    map: Arc<Mutex<HashMap<String, Started>>>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Under each name it is known by (a rename carries it over).
        locked(&self.map).retain(|_, s| s.id != self.id);
    }
}

enum Busy {
    Waking(watch::Receiver<Woken>),
    /// Down or asleep: tried every `RECHECK` until it answers.
    Rechecking,
    /// Up with a `sleep` command: watched for `sleep_after` without a
    /// player.
    Sleeper,
    /// Its sleep timer stops it (`Homes::stops` says until when).
    Stopping,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u64, Busy)>> {
        locked(&self.busy)
    }

    fn set(&self, service: &str, state: HomeState) {
        if state == HomeState::Up {
            locked(&self.up_at).insert(service.to_string(), Instant::now());
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
    /// reload moved it. Its tasks end at their next look, and the hub
    /// hears nothing of it until the next dial.
    fn forget(&self, service: &str) {
        self.lock().remove(service);
        for m in [&self.up_at, &self.failed_at] {
            locked(m).remove(service);
        }
        locked(&self.found_at).remove(service);
        locked(&self.joins).remove(service);
        locked(&self.raknet).remove(service);
        self.forgets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A stop of the old place holds no join of the new one (a rename
        // carried it over before this).
        locked(&self.stops).remove(service);
        self.states
            .send_if_modified(|m| m.remove(service).is_some());
    }

    /// The services' wake settings from now on: at start, and after a
    /// reload (`old`: the services before it). What is known of a service
    /// removed, moved or given another type is forgotten; any other
    /// change keeps its tasks (a wake under way stays the one wake, a
    /// sleep timer its count), and a changed wake command may run at
    /// once, not after the last one's cooldown. A service up that gained
    /// a `sleep` gets its timer now, not at its next player.
    pub fn configure(
        self: &Arc<Self>,
        old: Option<&BTreeMap<String, LocalService>>,
        new: &BTreeMap<String, LocalService>,
    ) {
        let command = |l: &LocalService| l.wake.as_ref().map(|w| w.command.clone());
        if let Some(old) = old {
            self.carry_renamed(old, new);
        }
        for (name, was) in old.into_iter().flatten() {
            match new.get(name) {
                Some(now) if now.same_place(was) => {
                    if command(now) != command(was) {
                        locked(&self.failed_at).remove(name);
                    }
                }
                // Another `type` on the same ports is the same server: a
                // stop under way still holds its joins (never a start
                // beside a stop).
                Some(now) if now.addr == was.addr => {
                    let stop = locked(&self.stops).get(name).cloned();
                    self.forget(name);
                    if let Some(s) = stop {
                        locked(&self.stops).insert(name.clone(), s);
                    }
                }
                _ => self.forget(name),
            }
        }
        *locked(&self.wakes) = new
            .iter()
            .filter_map(|(n, l)| Some((n.clone(), l.wake.clone()?)))
            .collect();
        *locked(&self.first_port) = new
            .iter()
            .filter(|(_, l)| l.kind != Some(crate::config::ports::ServiceKind::Udp))
            .map(|(n, l)| {
                let both = l.kind == Some(crate::config::ports::ServiceKind::TcpUdp);
                (n.clone(), (l.addr.at(0), both))
            })
            .collect();
        for (name, l) in new {
            if self.state_of(name) != Some(HomeState::Up) {
                continue;
            }
            let found = locked(&self.found_at).get(name).cloned();
            if let Some(mut found) = found {
                if !found.udp {
                    found.proxy = l.proxy_protocol;
                }
                self.start_sleeper(&found);
            }
        }
    }

    /// A service renamed (removed, and one added at the same place): the
    /// new name keeps what guards the server itself, its wake command
    /// still running and its stop under way, so a join under the new name
    /// neither starts a second server nor starts one beside a stop.
    fn carry_renamed(
        &self,
        old: &BTreeMap<String, LocalService>,
        new: &BTreeMap<String, LocalService>,
    ) {
        for (was_name, was) in old.iter().filter(|(n, _)| !new.contains_key(*n)) {
            let heirs = new
                .iter()
                .filter(|(n, now)| !old.contains_key(*n) && now.same_place(was));
            for (name, _) in heirs {
                let mut running = locked(&self.wake_running);
                if let Some(s) = running.get(was_name).cloned() {
                    running.insert(name.clone(), s);
                }
                drop(running);
                let mut stops = locked(&self.stops);
                if let Some(s) = stops.get(was_name).cloned() {
                    stops.insert(name.clone(), s);
                }
            }
        }
    }

    fn wake_of(&self, service: &str) -> Option<Wake> {
        locked(&self.wakes).get(service).cloned()
    }

    /// A player who joined `service`, counted until dropped.
    pub fn player(&self, service: &str) -> crate::sources::Counted<String> {
        // Once per player: no new key unless the service's first.
        let mut joins = locked(&self.joins);
        match joins.get_mut(service) {
            Some(n) => *n += 1,
            None => {
                joins.insert(service.to_string(), 1);
            }
        }
        drop(joins);
        self.playing
            .enter(service.to_string(), usize::MAX)
            .expect("no limit")
    }

    /// A dial of `service`, begun at `dialled`, failed; `plain_no`: the
    /// host itself said no at once (a TCP reset, an ICMP "port
    /// unreachable"), so it is up. With `wake` and a player who joins (not
    /// a server-list ping), the service is started and the returned watch
    /// says when it answers.
    pub fn refused(
        self: &Arc<Self>,
        l: &Local,
        (join, dialled, plain_no): (bool, Instant, bool),
    ) -> Option<watch::Receiver<Woken>> {
        let wake = self.wake_of(&l.service);
        let mut busy = self.lock();
        // It answered someone since this dial began (a wake that just
        // ended, a server started by hand): try again, do not wake. Read
        // under the tasks' lock: a wake marks the service up before it
        // gives up its turn.
        if locked(&self.up_at)
            .get(&l.service)
            .is_some_and(|t| *t > dialled)
        {
            return join.then(|| watch::channel(Woken::Up).1);
        }
        if let Some((_, Busy::Waking(rx))) = busy.get(&l.service) {
            return join.then(|| rx.clone());
        }
        // A dial that failed where the service has not answered (another
        // port of its range, UDP to a service with no `type` in ep.toml:
        // what a player or a hub picks) says nothing of the service: its
        // state, which every hub is told, stays, and it is woken only if
        // it is found silent where it answered (`still_up`).
        let stopping = self.stopping(&l.service);
        let cooling = self.cooling(&l.service, wake.as_ref());
        // For a UDP dial the first port stands in for where it answered
        // only to decide a wake: a ping, or a service without one, reports
        // what it found as it always did (a Bedrock port with nothing
        // there is down, whatever TCP port the service may have).
        let icmp = plain_no;
        let plain_no = plain_no && (!l.udp || (join && wake.is_some()));
        // Where a flow heard it counts for a flow: a hub that starts one on
        // a port of the range with nothing there (its choice) learns
        // nothing of the service, and must not have every hub told it is
        // down.
        let found = self.found(l, plain_no);
        let elsewhere = found.as_ref().is_some_and(|f| match f.udp {
            true => l.udp && f.at != l.at,
            false => f.at != l.at || l.udp,
        });
        let state = if wake.is_some() {
            HomeState::Asleep
        } else {
            HomeState::Down
        };
        // A UDP dial met by silence (no ICMP came back: the host said
        // nothing) is looked into where a flow heard the service, or where
        // it was dialled, before every hub is told (`silence`).
        let silent =
            (l.udp && !icmp).then(|| found.clone().filter(|f| f.udp).unwrap_or_else(|| l.clone()));
        let no_wake = wake.is_none() || !join || cooling;
        if elsewhere && no_wake {
            if let Some(at) = silent {
                self.look(at, state, dialled);
            }
            return None;
        }
        if no_wake {
            drop(busy);
            if let Some(at) = silent.or_else(|| self.untyped(l, icmp, &found)) {
                self.look(at, state, dialled);
                return None;
            }
            self.set(&l.service, state);
            self.recheck(l);
            return None;
        }
        let was_up = elsewhere || self.state_of(&l.service) == Some(HomeState::Up);
        let (tx, rx) = watch::channel(Woken::Starting);
        let id = self.begin(&mut busy, &l.service, Busy::Waking(rx.clone()));
        drop(busy);
        let me = self.clone();
        let looks = (stopping, was_up, plain_no);
        tokio::spawn(me.woken(l.clone(), id, tx, looks));
        Some(rx)
    }

    /// Whether `service`'s last wake failed too lately for another.
    fn cooling(&self, service: &str, wake: Option<&Wake>) -> bool {
        wake.is_some_and(|w| {
            locked(&self.failed_at)
                .get(service)
                .is_some_and(|t| t.elapsed() < w.timeout.min(WAKE_COOLDOWN))
        })
    }

    /// Whether a join of `service` should wait for its stop rather than
    /// dial: its sleep command began less than `STOP_HOLD` ago.
    pub fn is_stopping(&self, service: &str) -> bool {
        self.stopping(service)
            .is_some_and(|s| s.began.elapsed() < STOP_HOLD)
    }

    /// The stop under way of `service`, if one is.
    fn stopping(&self, service: &str) -> Option<Stop> {
        locked(&self.stops)
            .get(service)
            .filter(|s| *s.end.borrow() == StopEnd::Running)
            .cloned()
    }

    /// Runs `service`'s wake command, unless the one run before is still
    /// running: then only the port decides (the sender is dropped).
    fn run_wake(&self, service: &str, argv: &[String]) -> oneshot::Receiver<bool> {
        let mut running = locked(&self.wake_running);
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
        if let Some(s) = running.get(service) {
            // The way out of a command that hangs is to change it; but one
            // that is a slow server still starting would now have a second
            // beside it: said, so the person who changed it can look.
            tracing::warn!(
                service,
                running_for = ?s.at.elapsed(),
                before = ?s.argv,
                "a player found the service away; its wake command was changed while the one \
                 from before still runs: running the new one beside it (if the old one starts \
                 the server, stop it, or two may run on one world)"
            );
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
            id,
        };
        run(service, "wake", argv, (Some(mark), None))
    }

    /// A wake's outcome, once `exited` says its command failed or the
    /// service answers or `w.timeout` passes: told on `tx`, logged, and the
    /// state set if this wake (`id`) is still the service's turn.
    async fn woken(
        self: Arc<Self>,
        l: Local,
        id: u64,
        tx: watch::Sender<Woken>,
        looks: (Option<Stop>, bool, bool),
    ) {
        let me = self;
        let Some(w) = me.wake_due(&l, id, &tx, looks).await else {
            return;
        };
        let timeout = w.timeout;
        me.set(&l.service, HomeState::Waking);
        let exited = me.run_wake(&l.service, &w.command);
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
        // Up (and its time), or the failure's time, before the wake's
        // turn ends: a dial begun meanwhile then tries again rather than
        // waking it a second time, or sits out the cooldown. Not for a
        // service a reload forgot meanwhile: a service added later under
        // its name would start out up, or cooling down.
        if me.current(service, id) {
            if up {
                me.set(service, HomeState::Up);
            } else {
                locked(&me.failed_at).insert(service.clone(), Instant::now());
            }
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
                me.answered(&l);
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
            if mine {
                me.set(service, HomeState::Asleep);
                me.recheck(&l);
            }
        }
    }

    /// The wake settings in force when wake `id` runs (after any stop
    /// under way and the port's try), if no reload forgot the service or
    /// its `wake` and it does not answer where it did. None: the players
    /// waiting are told, on `tx`.
    async fn wake_due(
        self: &Arc<Self>,
        l: &Local,
        id: u64,
        tx: &watch::Sender<Woken>,
        (stopping, mut was_up, plain_no): (Option<Stop>, bool, bool),
    ) -> Option<Wake> {
        if let Some(Stop { end: mut done, .. }) = stopping {
            tracing::info!(
                service = l.service,
                "a player found the service stopping: waking it once its sleep command ends"
            );
            tokio::select! {
                // Ended, or its sender gone (the stop's task ended).
                _ = done.wait_for(|d| *d != StopEnd::Running) => {}
                _ = l.stop.cancelled() => return None,
            }
            // A stop that failed or hung may have left it up: tried
            // before the wake command runs beside it.
            was_up = *done.borrow() != StopEnd::Gone;
        }
        if !self.current(&l.service, id) {
            // A reload forgot the service meanwhile.
            let _ = tx.send(Woken::Failed);
            return None;
        }
        if let Some(up) = self.still_up(l, was_up, plain_no).await {
            if self.end(&l.service, id) {
                self.answered(&up);
            }
            let _ = tx.send(Woken::Up);
            return None;
        }
        if !self.current(&l.service, id) {
            // A reload forgot it while its port was tried.
            let _ = tx.send(Woken::Failed);
            return None;
        }
        // Those in force now: a reload during the stop or the port's try
        // (up to `connect_timeout`) may have changed or removed them.
        let now = self.wake_of(&l.service);
        if now.is_none() {
            self.end(&l.service, id);
            let _ = tx.send(Woken::Failed);
        }
        now
    }

    /// Where `l`'s service answers, as `l` would reach it: where it last
    /// did (for a TCP dial, a TCP port). Not found yet since the ep
    /// started, or (for a TCP dial) only by a UDP flow: with `plain_no`,
    /// its first port. Only then: a home host that is off (`wakeonlan`)
    /// says nothing, and a try of it would hold the wake up for
    /// `connect_timeout`.
    fn found(&self, l: &Local, plain_no: bool) -> Option<Local> {
        let known = locked(&self.found_at).get(&l.service).cloned();
        if !plain_no || known.as_ref().is_some_and(|f| !f.udp || l.udp) {
            return known;
        }
        // For a UDP dial only a service ep.toml says is `tcp+udp`: one
        // with no `type` (a Bedrock server, as the README writes it) may
        // have no TCP port, and a host whose firewall drops the try would
        // hold its wake up for `connect_timeout`.
        self.at_first_port(l, |both| !l.udp || both).or(known)
    }

    /// `l`'s service at its first port, over TCP, if ep.toml does not say
    /// it is UDP and `fits` whether it says `tcp+udp`.
    fn at_first_port(&self, l: &Local, fits: impl Fn(bool) -> bool) -> Option<Local> {
        let (at, both) = locked(&self.first_port).get(&l.service).cloned()?;
        fits(both).then(|| Local {
            at,
            udp: false,
            ..l.clone()
        })
    }

    /// A UDP dial refused (`icmp`) at a service ep.toml names no kind for
    /// (a UDP dial reaches a `type = "tcp"` one never) and that no player
    /// has found yet (the ep just started): it may be a TCP service that
    /// a hub, not a player, chose to reach over UDP, so before every hub
    /// is told it is away, its first port is looked at (a TCP try: the
    /// host is on, it said so). A Bedrock server, with no TCP port, is
    /// found away there as it was before.
    fn untyped(&self, l: &Local, icmp: bool, found: &Option<Local>) -> Option<Local> {
        if !(l.udp && icmp && found.is_none()) {
            return None;
        }
        self.at_first_port(l, |both| !both)
    }

    /// Where the service, up until this dial failed, still answers: the
    /// port it last answered at (a UDP one: if a list ping of the ep's own
    /// is answered there, as a Bedrock server's is). A dial that failed
    /// elsewhere (another port of its range, UDP to a service with no
    /// `type` in ep.toml, a join the server ignored: what a hub picks) is
    /// no reason to run the wake command beside a running server. Not
    /// tried for a service believed away (a host switched off would cost
    /// the wake `connect_timeout`).
    async fn still_up(&self, l: &Local, was_up: bool, plain_no: bool) -> Option<Local> {
        // A UDP join met by silence where nothing was heard yet (the ep
        // just started) is looked into where it was dialled.
        let unheard = (l.udp && !plain_no).then(|| l.clone());
        let found = match self.found(l, plain_no).filter(|_| was_up) {
            Some(f) => f,
            None => unheard?,
        };
        let answers = match found.udp {
            true => self.udp_there(&found).await,
            false => found.answers().await,
        };
        if !answers {
            return None;
        }
        // A hub can send such dials in a loop: said once a second a service.
        static SAID: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
        if let Some(unsaid) = SAID.now(&l.service) {
            tracing::warn!(
                service = l.service,
                failed = l.at,
                answers = found.at,
                unsaid,
                "a player's dial failed, but the service answers where it did before: not woken"
            );
        }
        Some(found)
    }

    /// Tries a service that is down or asleep now and then, so one started
    /// by hand is seen.
    fn recheck(self: &Arc<Self>, l: &Local) {
        if l.udp {
            // The next flow that hears from it says it is up.
            return;
        }
        let mut busy = self.lock();
        // A wake, a recheck or a stop (which looks when it ends) already
        // minds it; a sleep timer gives way (the service it would stop is
        // already down).
        if matches!(
            busy.get(&l.service),
            Some((_, Busy::Waking(_) | Busy::Rechecking | Busy::Stopping))
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
                        // Up, and with a `sleep` its timer: a server woken
                        // after `wake_timeout`, or one a sleep command
                        // left running, sleeps again.
                        me.answered(&l);
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
