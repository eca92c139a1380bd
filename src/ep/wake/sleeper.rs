//! A service found up, and its sleep timer: `sleep` runs after
//! `sleep_after` without a player, and while it runs the service is
//! stopping (a join waits for it to end before the wake command runs).

use std::{sync::Arc, time::Duration};
use tokio::{sync::watch, time::Instant};

use super::{Busy, Homes, Local, POLL, Stop, StopEnd, locked, run};
use crate::proto::HomeState;

/// The longest a sleep command is waited for before the service counts
/// as stopped anyway (a stop that hangs must not block wakes for good).
const STOP_WAIT: Duration = Duration::from_secs(300);

impl Homes {
    /// Each service with a `sleep` not known yet (the ep just started, or
    /// a reload added it) is looked at, as a dial would: one running (its
    /// own unit started it at boot) gets its sleep timer without waiting
    /// for a first player, who may never come; a TCP one not answering yet
    /// is looked at again every 10 s until it does. A wake runs only for a
    /// join. (A UDP server is asked as Bedrock's server list would: other
    /// UDP games start their timer at their first flow.)
    pub fn first_look(
        self: &Arc<Self>,
        services: &std::collections::BTreeMap<String, crate::config::ep::LocalService>,
        (connect_timeout, stop): (Duration, &tokio_util::sync::CancellationToken),
    ) {
        for (name, l) in services {
            if self.sleep_of(name).is_none() || self.state_of(name).is_some() {
                continue;
            }
            let udp = l.kind == Some(crate::config::ports::ServiceKind::Udp);
            let local = Local {
                service: name.clone(),
                at: l.addr.at(0),
                connect_timeout,
                stop: stop.clone(),
                udp,
                proxy: l.proxy_protocol.filter(|_| !udp),
            };
            let homes = self.clone();
            tokio::spawn(async move {
                let up = match local.udp {
                    true => local.pong_once().await.unwrap_or(false),
                    false => local.answers().await,
                };
                if homes.state_of(&local.service).is_some() {
                    return;
                }
                match up {
                    true => homes.answered(&local),
                    // Starting with the machine (a Java server takes
                    // seconds to open its port): looked at again now and
                    // then, as a server found down is, until it answers.
                    false => homes.recheck(&local),
                }
            });
        }
    }

    /// A dial (or a flow) of `l`'s service reached it: it is up, and with
    /// a `sleep` its timer starts. Not while its sleep command runs: the
    /// server is going, whatever it still answers (the stop's end looks
    /// again).
    pub fn answered(self: &Arc<Self>, l: &Local) {
        {
            // Checked and set under the tasks' lock, which a stop's start
            // takes too: never "up" just after "asleep" for a server going.
            let mut busy = self.lock();
            if self.stopping(&l.service).is_some() {
                return;
            }
            if let Some((_, Busy::Rechecking)) = busy.get(&l.service) {
                busy.remove(&l.service);
            }
            locked(&self.found_at).insert(l.service.clone(), l.clone());
            self.set(&l.service, HomeState::Up);
        }
        self.start_sleeper(l);
    }

    /// The sleep timer of `l`'s service, if it has a `sleep` and nothing
    /// else minds it.
    pub(super) fn start_sleeper(self: &Arc<Self>, l: &Local) {
        if self.sleep_of(&l.service).is_none() {
            return;
        }
        let mut busy = self.lock();
        if busy.contains_key(&l.service) {
            return;
        }
        let id = self.begin(&mut busy, &l.service, Busy::Sleeper);
        drop(busy);
        tokio::spawn(self.clone().sleeper(l.clone(), id));
    }

    fn sleep_of(&self, service: &str) -> Option<(Vec<String>, Duration)> {
        self.wake_of(service)?.sleep
    }

    /// Until `cmd` (the sleep command) ended and the server is gone: its
    /// TCP port closed (a command such as `rcon-cli stop` or `kill` ends
    /// while the server still saves), and a server the wake command ran
    /// itself exited. A command that failed leaves the server up: then
    /// its end is enough (the look after it finds the server). Whether
    /// the server is known gone.
    async fn stopped(&self, l: &Local, cmd: &[String]) -> bool {
        let ran = run(&l.service, "sleep", cmd, (None, Some(STOP_WAIT)));
        let ok = ran.await.unwrap_or(false);
        if !ok {
            return false;
        }
        loop {
            let running = locked(&self.wake_running).contains_key(&l.service);
            if !running && (l.udp || !l.answers().await) {
                return true;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Joins of `service` so far.
    fn joins_of(&self, service: &str) -> u64 {
        locked(&self.joins).get(service).copied().unwrap_or(0)
    }

    /// Watches for `sleep_after` without a player (the settings in force
    /// at each look: a reload may change or remove them), then stops it.
    async fn sleeper(self: Arc<Self>, l: Local, id: u64) {
        let service = &l.service;
        let (mut idle, mut joins) = (Duration::ZERO, self.joins_of(service));
        let (cmd, after) = loop {
            let Some((cmd, after)) = self.sleep_of(service) else {
                self.end(service, id);
                return;
            };
            if idle >= after {
                break (cmd, after);
            }
            let step = (after / 10).clamp(Duration::from_millis(200), Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = l.stop.cancelled() => return,
            }
            if !self.current(service, id) {
                return;
            }
            // A player now, or one who came and went since the last look.
            let now = self.joins_of(service);
            let quiet = self.playing.held(service) == 0 && now == joins;
            idle = if quiet { idle + step } else { Duration::ZERO };
            joins = now;
        };
        let (stopped, end) = watch::channel(StopEnd::Running);
        let stopping = Stop {
            began: Instant::now(),
            end,
        };
        {
            let mut busy = self.lock();
            if busy.get(service).is_none_or(|(i, _)| *i != id) {
                return;
            }
            busy.insert(service.clone(), (id, Busy::Stopping));
            locked(&self.stops).insert(service.clone(), stopping.clone());
            self.set(service, HomeState::Asleep);
        }
        tracing::info!(
            service,
            "no player for {after:?}: running its sleep command"
        );
        // A little past STOP_WAIT: a command still running then is killed
        // (`run`) before the stop ends, never left beside a wake.
        let gone = tokio::select! {
            gone = self.stopped(&l, &cmd) => gone,
            _ = tokio::time::sleep(STOP_WAIT + Duration::from_secs(5)) => {
                tracing::warn!(
                    service,
                    "the service is not gone {STOP_WAIT:?} after its sleep command began: it counts as stopped"
                );
                false
            }
            _ = l.stop.cancelled() => return,
        };
        tracing::debug!(
            service,
            secs = stopping.began.elapsed().as_secs_f64(),
            gone,
            "stopped"
        );
        {
            let mut stops = locked(&self.stops);
            if stops
                .get(service)
                .is_some_and(|s| s.end.same_channel(&stopping.end))
            {
                stops.remove(service);
            }
        }
        let _ = stopped.send(if gone { StopEnd::Gone } else { StopEnd::Unsure });
        // Still up (a sleep command that failed): the look finds it, and
        // its timer starts again. Not for a service a reload forgot or
        // moved meanwhile: its next dial finds it.
        let known = locked(&self.found_at).contains_key(service);
        if self.end(service, id) && known {
            self.recheck(&l);
        }
    }
}
