//! The uplink guard: without any cap set, a player sending bulk from
//! home is slowed while the path's round trip grows, so the queue in the
//! home router (a FIFO of tens or hundreds of milliseconds) stays short
//! and other players' game packets do not wait behind the transfer.
//!
//! The ep cannot know its uplink's rate; it can see the queue that
//! sending faster than that rate builds: the round trip of the player's
//! own path to the hub grows above its least. While it is more than a
//! quarter of that least (at least `TARGET_FLOOR`), a heavy sender's
//! rate is set under what it just managed; while it is not, the rate
//! creeps up again, and is lifted once far above what the path took.
//! The guard backs off for queues it did not make too (another machine
//! at home uploading): it never holds a player under a quarter of the
//! most it sent in the last `MEMORY`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::Instant;

/// The least queueing delay that counts as a queue: below it, RTT noise.
pub const TARGET_FLOOR: Duration = Duration::from_millis(5);
/// A player sending less than this in an interval does not move its rate
/// down (a game, not a transfer).
pub const HEAVY: u64 = 128 * 1024;
/// Bytes a player sends before the guard watches it at all: an idle or
/// a game player costs nothing.
pub const WATCH_AFTER: u64 = 1 << 20;
/// The least a guarded player is held to, bytes/s.
const FLOOR: u64 = 32 * 1024;
/// How long the most a player sent is remembered (see the module doc).
const MEMORY: Duration = Duration::from_secs(10);
/// The shortest and longest intervals between two looks at the path.
const MIN_INTERVAL: Duration = Duration::from_millis(20);
const MAX_INTERVAL: Duration = Duration::from_secs(1);
/// How long a player held at its floor with the queue still there waits
/// before the guard gives up on that queue, and how long it then rests.
const GIVE_UP: Duration = Duration::from_secs(5);
const REST: Duration = Duration::from_secs(30);

/// Where the path's round trip is read.
#[derive(Clone)]
pub enum Signal {
    /// The player's own TLS channel: the kernel's smoothed RTT and its
    /// windowed least (`TCP_INFO`).
    Tcp(std::os::fd::RawFd),
    /// The ep's QUIC connection (all its players share it): quinn's
    /// smoothed RTT, and the least of it over the last minute or so,
    /// noted by the connection's heartbeats and its guards alike.
    Quic(quinn::Connection, Arc<Mutex<WindowedMin>>),
    /// A path whose round trip and least a test sets.
    #[cfg(test)]
    Fixed(Arc<Mutex<(Duration, Duration)>>),
}

/// Notes `rtt` towards the least in `least`; returns the least.
pub fn note(least: &Mutex<WindowedMin>, rtt: Duration) -> Duration {
    let now = Instant::now();
    least
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .note(rtt, now)
}

/// Round trip now and its least, if the path has a sample.
struct Rtts {
    now: Duration,
    least: Duration,
}

/// The least of a figure over a window of `WINDOW` to twice that: the
/// least of this window and of the one before.
#[derive(Debug, Clone, Copy)]
pub struct WindowedMin {
    this: Duration,
    last: Duration,
    since: Instant,
}

const WINDOW: Duration = Duration::from_secs(30);

impl Default for WindowedMin {
    fn default() -> Self {
        WindowedMin::new(Instant::now())
    }
}

impl WindowedMin {
    fn new(now: Instant) -> Self {
        WindowedMin {
            this: Duration::MAX,
            last: Duration::MAX,
            since: now,
        }
    }

    pub fn note(&mut self, v: Duration, now: Instant) -> Duration {
        if now.saturating_duration_since(self.since) >= WINDOW {
            self.last = self.this;
            self.this = Duration::MAX;
            self.since = now;
        }
        self.this = self.this.min(v);
        self.this.min(self.last)
    }
}

/// One player's guard: the rate it holds the player to (0: none), and
/// what it measures between looks.
pub struct Guard {
    signal: Signal,
    rate: u64,
    since: Instant,
    /// When to look at the path next: a round trip or two after the last
    /// look, so a cut shows in the round trip before the next.
    next_look: Instant,
    sent: u64,
    /// The most sent a second in an interval, and when; kept while the
    /// guard holds the player, so its floor does not sink with its cuts.
    best: (u64, Instant),
    /// Since when the player has been held at its floor with the queue
    /// still there.
    at_floor: Option<Instant>,
    /// Until when the guard cuts nothing (it gave up on a queue it did
    /// not make).
    resting: Option<Instant>,
}

impl Guard {
    pub fn new(signal: Signal) -> Self {
        let now = Instant::now();
        Guard {
            signal,
            rate: 0,
            since: now,
            next_look: now + MIN_INTERVAL,
            sent: 0,
            best: (0, now),
            at_floor: None,
            resting: None,
        }
    }

    /// `n` bytes passed.
    pub fn spent(&mut self, n: u64) {
        self.sent += n;
    }

    /// The rate to hold the player to now (0: none), looking at the path
    /// again when it is time.
    pub fn rate(&mut self, now: Instant) -> u64 {
        if now < self.next_look {
            return self.rate;
        }
        let Some(rtts) = self.rtts() else {
            self.next_look = now + MIN_INTERVAL;
            return self.rate;
        };
        let dt = now.saturating_duration_since(self.since).max(MIN_INTERVAL);
        let sending = (self.sent as f64 / dt.as_secs_f64()) as u64;
        let forgotten = now.saturating_duration_since(self.best.1) > MEMORY;
        if sending >= self.best.0 || (forgotten && self.rate == 0) {
            self.best = (sending, now);
        }
        let queued = rtts.now.saturating_sub(rtts.least);
        let target = (rtts.least / 4).max(TARGET_FLOOR);
        let floor = (self.best.0 / 4).max(FLOOR);
        let resting = self.resting.is_some_and(|until| now < until);
        let next = if resting {
            0
        } else {
            let step = (self.best.0 / 64).max(8 * 1024);
            next_rate(self.rate, sending, queued, target, floor, step)
        };
        self.rate = self.give_up(next, floor, queued > target, now);
        self.since = now;
        self.sent = 0;
        self.next_look = now + (rtts.least * 2).clamp(MIN_INTERVAL, MAX_INTERVAL);
        self.rate
    }

    /// `next`, or 0 when the player has been held at its `floor` for
    /// `GIVE_UP` and the queue is still there: it is someone else's (a
    /// backup at home, a path whose round trip grew), which holding this
    /// player back does not shorten; the guard then rests for `REST`.
    fn give_up(&mut self, next: u64, floor: u64, queue: bool, now: Instant) -> u64 {
        if !(queue && next == floor && self.rate == floor) {
            self.at_floor = None;
            return next;
        }
        let since = *self.at_floor.get_or_insert(now);
        if now.saturating_duration_since(since) < GIVE_UP {
            return next;
        }
        self.at_floor = None;
        self.resting = Some(now + REST);
        0
    }

    fn rtts(&self) -> Option<Rtts> {
        match &self.signal {
            Signal::Tcp(fd) => {
                let (now, least) = crate::tcp_info::rtt_and_least(*fd)?;
                Some(Rtts { now, least })
            }
            Signal::Quic(conn, least) => {
                let rtt = conn.rtt();
                let least = note(least, rtt);
                Some(Rtts { now: rtt, least })
            }
            #[cfg(test)]
            Signal::Fixed(f) => {
                let (now, least) = *f.lock().unwrap();
                Some(Rtts { now, least })
            }
        }
    }
}

/// The guard's law. `rate`: what the player is held to now (0: none);
/// `sending`: what it sent a second over the last interval; `queued`:
/// how far the round trip is above its least; `floor`: the least it may
/// be held to; `step`: how much it may rise in a look without a queue
/// (a constant, so two guarded transfers drift towards equal shares).
fn next_rate(
    rate: u64,
    sending: u64,
    queued: Duration,
    target: Duration,
    floor: u64,
    step: u64,
) -> u64 {
    if queued > target {
        if sending < HEAVY {
            // A game's packets in the queue did not make it.
            return rate;
        }
        // A standing queue (a transfer's start filled the router): drain
        // it fast; a queue just over the target: ease off.
        let under = if queued > target * 4 {
            sending / 2
        } else {
            sending - sending / 8
        };
        let under = match rate {
            0 => under,
            r => under.min(r - r / 8),
        };
        return under.max(floor);
    }
    if rate == 0 {
        return 0;
    }
    // No queue: creep up; lifted once far above what the player sends
    // (the path took more, or it went quiet).
    let up = rate + step;
    if up > sending.saturating_mul(4).max(FLOOR * 4) && sending < rate / 2 {
        return 0;
    }
    up
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_queue_slows_a_heavy_sender_under_what_it_managed_and_not_a_game() {
        let t = 5 * MS;
        assert_eq!(next_rate(0, 10_000_000, MS, t, FLOOR, 8192), 0, "no queue");
        assert_eq!(
            next_rate(0, 10_000_000, 8 * MS, t, FLOOR, 8192),
            8_750_000,
            "a queue just over the target: an eighth under"
        );
        assert_eq!(
            next_rate(0, 10_000_000, 80 * MS, t, FLOOR, 8192),
            5_000_000,
            "a standing queue: half"
        );
        assert_eq!(
            next_rate(0, 100_000, 80 * MS, t, FLOOR, 8192),
            0,
            "a game's sending is not slowed"
        );
        assert_eq!(
            next_rate(4_000_000, 3_000_000, 8 * MS, t, FLOOR, 8192),
            2_625_000,
            "held under what it sent"
        );
        assert_eq!(
            next_rate(4_000_000, 4_000_000, 8 * MS, t, FLOOR, 8192),
            3_500_000,
            "and under what it was held to"
        );
        assert_eq!(
            next_rate(4_000_000, 4_000_000, 80 * MS, t, 3_000_000, 8192),
            3_000_000,
            "never under the floor"
        );
    }

    #[test]
    fn without_a_queue_the_rate_creeps_up_and_is_lifted_when_unused() {
        let t = 5 * MS;
        let step = 100_000;
        assert_eq!(
            next_rate(1_600_000, 1_600_000, MS, t, FLOOR, step),
            1_700_000
        );
        assert_eq!(
            next_rate(1_600_000, 1_000_000, MS, t, FLOOR, step),
            1_700_000,
            "still used: kept"
        );
        assert_eq!(
            next_rate(1_600_000, 100_000, MS, t, FLOOR, step),
            0,
            "quiet: lifted"
        );
    }

    #[test]
    fn the_least_round_trip_forgets_after_one_to_two_windows() {
        let t0 = Instant::now();
        let mut m = WindowedMin::new(t0);
        assert_eq!(m.note(10 * MS, t0), 10 * MS);
        assert_eq!(m.note(30 * MS, t0 + WINDOW), 10 * MS, "the last window's");
        assert_eq!(m.note(30 * MS, t0 + WINDOW * 2), 30 * MS, "forgotten");
    }
}
