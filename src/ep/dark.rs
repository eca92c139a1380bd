//! The ep's end of a TCP player's TLS channel whose path went dark: what
//! the ep sent on it (home's bytes to the player) has gone unacknowledged
//! for the hub's heartbeat timeout, as when home's address changes or the
//! router loses its mapping. The kernel would retry for ~15 minutes while
//! the service at home keeps a ghost player; the channel is shut instead,
//! so its relay ends and home's connection is reset. The hub does the
//! same for its end (`hub::players`). A QUIC connection moves or times out
//! by itself, a UDP flow's channel gives up by `TCP_USER_TIMEOUT`, and an
//! idle channel is found by keepalive.

use super::login::Path;
use std::{
    collections::HashMap,
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// How often the channels are looked at: a ghost at home is reset within
/// about twice the heartbeat timeout and two of these (`dark_path`; a
/// system call per TLS player, ~1 µs).
pub(super) const EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Channels {
    next: AtomicU64,
    all: Mutex<HashMap<u64, Arc<Watching>>>,
}

struct Watching {
    /// The channel's socket until its guard drops, which is before the
    /// channel closes: under this lock the descriptor is never another's.
    fd: Mutex<Option<RawFd>>,
    after: Duration,
    dark: crate::dark_path::Dark,
}

/// A player's channel and its watch: the watch is the field before the
/// channel, so it drops first however the player's task ends (locals of a
/// task dropped while suspended keep no order one can rely on), and the
/// descriptor is never looked at once closed.
pub(super) struct Carried {
    _watched: Option<Watched>,
    pub path: Path,
}

/// A channel watched until dropped.
struct Watched {
    channels: Arc<Channels>,
    id: u64,
}

impl Drop for Watched {
    fn drop(&mut self) {
        let gone = lock(&self.channels.all).remove(&self.id);
        // Waits for a look at it in progress.
        if let Some(w) = gone {
            *lock(&w.fd) = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Channels {
    /// Watches `path` (if a TLS channel) for as long as it is carried;
    /// the path is dark once what was sent, and the kernel's next try, go
    /// unanswered for `after` (`dark_path`). Not over QUIC.
    pub fn watch(self: &Arc<Self>, path: Path, after: Duration) -> Carried {
        let fd = match &path {
            Path::Tls(tls) => tls.get_ref().0.as_raw_fd(),
            Path::Quic(_) => {
                return Carried {
                    _watched: None,
                    path,
                };
            }
        };
        let w = Arc::new(Watching {
            fd: Mutex::new(Some(fd)),
            after,
            dark: Default::default(),
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.all).insert(id, w);
        let watched = Watched {
            channels: self.clone(),
            id,
        };
        Carried {
            _watched: Some(watched),
            path,
        }
    }

    /// Shuts every channel whose path is dark: its relay reads an end
    /// without TLS's close, a break, and resets home. How many. A system
    /// call per channel, outside the table's lock.
    pub fn shut_dark(&self) -> usize {
        let all: Vec<Arc<Watching>> = lock(&self.all).values().cloned().collect();
        let mut shut = 0;
        for w in all {
            let mut held = lock(&w.fd);
            if let Some(fd) = *held
                && w.dark.look(fd, w.after)
            {
                // SAFETY: `fd` is the channel's open socket: its guard
                // clears it under this lock before the channel closes.
                // Why not a safe borrow: the relay owns the stream for the
                // player's life; a duplicate descriptor per channel was
                // tried and cost one more descriptor per player (at the
                // memory bench's limit of 20,000, 3,326 of 10,000 idle
                // players could not connect instead of 768).
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                // Once: its relay ends as soon as it next reads or writes.
                *held = None;
                shut += 1;
            }
        }
        shut
    }
}

/// Looks every `EVERY` for as long as the ep has players, its drain
/// included (so not on the tracker, which the drain waits for): until the
/// hard stop, or the ep is gone.
pub(super) async fn keep(
    channels: std::sync::Weak<Channels>,
    hard_stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hard_stop.cancelled() => return,
        }
        let Some(c) = channels.upgrade() else { return };
        if let Ok(n @ 1..) = tokio::task::spawn_blocking(move || c.shut_dark()).await {
            tracing::info!(
                players = n,
                "player channel(s) shut: the path to the hub stopped answering"
            );
        }
    }
}
