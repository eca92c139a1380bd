//! The uplink guard: a player sending bulk from home (capped or not: a
//! cap can be above what the uplink takes) is slowed while the path's
//! round trip grows, so the queue in the
//! home router (a FIFO of tens or hundreds of milliseconds) stays short
//! and other players' game packets do not wait behind the transfer.
//!
//! The ep cannot know its uplink's rate; it can see the queue that
//! sending faster than that rate builds: the round trip of the player's
//! own path to the hub grows above its least. While it is more than a
//! quarter of that least (at least `TARGET_FLOOR`), a heavy sender's
//! rate is set under what it just managed (over TLS, what the path
//! carried, not what the socket's buffer took); while it is not, the rate
//! creeps up again, and is lifted once far above what the path took.
//! The guard backs off for queues it did not make too (another machine
//! at home uploading): it never holds a player under a quarter of the
//! most it sent over a second lately, and gives up on a queue that
//! holding the player near there does not shorten (`Guard::give_up`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// The least queueing delay that counts as a queue: below it, RTT noise.
const TARGET_FLOOR: Duration = Duration::from_millis(5);
/// A player sending less than this in an interval does not move its rate
/// down (a game, not a transfer).
const HEAVY: u64 = 128 * 1024;
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
    /// The same, and the bytes it has carried (as a TCP channel tells).
    #[cfg(test)]
    Carrying(Arc<Mutex<(Duration, Duration, u64)>>),
}

/// Whether the guard is on (`uplink_guard`), shared by every player of an
/// ep so that a reload turns it on or off for players already connected
/// too: each guard reads it at its next look.
#[derive(Clone)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn new(on: bool) -> Self {
        Switch(Arc::new(AtomicBool::new(on)))
    }

    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Notes `rtt` towards the least in `least`; returns the least.
pub fn note(least: &Mutex<WindowedMin>, rtt: Duration) -> Duration {
    let now = Instant::now();
    least
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .note(rtt, now)
}

/// Round trip now and its least, if the path has a sample, and what the
/// path has carried so far where the signal knows (a TCP channel: bytes
/// acknowledged), and whether bytes written wait to be sent (ditto).
struct Rtts {
    now: Duration,
    least: Duration,
    carried: Option<u64>,
    waiting: bool,
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
    switch: Switch,
    rate: u64,
    since: Instant,
    /// When to look at the path next: a round trip or two after the last
    /// look, so a cut shows in the round trip before the next.
    next_look: Instant,
    sent: u64,
    /// What the path had carried at the last look, where the signal
    /// tells (`Rtts::carried`).
    carried: Option<u64>,
    /// What moved (`moved`) since `.0`, for `best`: over a second or
    /// more, so a burst into the buffers between here and the path (a
    /// socket's send buffer, a QUIC stream's window) counts for what it
    /// is over that second, not as a rate the path took.
    window: (Instant, u64),
    /// The most sent a second over a window, and when; kept while the
    /// guard holds the player, so its floor does not sink with its cuts.
    best: (u64, Instant),
    /// While the player is held well under its best: since when, looks,
    /// and how many of them saw the queue.
    low: Option<(Instant, u32, u32)>,
    /// Until when the guard cuts nothing (it gave up on a queue it did
    /// not make).
    resting: Option<Instant>,
    /// The most the player sent while the looks last saw the queue (an
    /// unbroken run of them), and whether the last look saw it: the rate
    /// a climb back after the cuts heads for quickly (see `rate`).
    queued_at: (u64, bool),
    /// When a look last saw the queue: the slow climb near `queued_at`
    /// holds for `MEMORY` after it (a path with room for that long has
    /// more than it had then).
    queued_when: Instant,
    /// Since a standing queue (over four times the target: a burst made
    /// it, so what the player sent meanwhile says little of the path),
    /// until a queue is seen afresh: the climb back is steep.
    steep: bool,
}

/// The span `best` is measured over.
const WINDOW_FOR_BEST: Duration = Duration::from_secs(1);

impl Guard {
    pub fn new(signal: Signal, switch: Switch) -> Self {
        let now = Instant::now();
        Guard {
            signal,
            switch,
            rate: 0,
            since: now,
            next_look: now + MIN_INTERVAL,
            sent: 0,
            carried: None,
            window: (now, 0),
            best: (0, now),
            low: None,
            resting: None,
            queued_at: (0, false),
            queued_when: now,
            steep: false,
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
        if !self.switch.is_on() {
            // Turned off by a reload: the player goes free now, and is
            // watched afresh if the guard is turned on again.
            *self = Guard::new(self.signal.clone(), self.switch.clone());
            self.next_look = now + MAX_INTERVAL;
            return 0;
        }
        let Some(rtts) = self.rtts() else {
            self.next_look = now + MIN_INTERVAL;
            return self.rate;
        };
        let Some(moved) = self.moved(rtts.carried) else {
            // The first reading of what the path carried: a base.
            self.since = now;
            self.sent = 0;
            self.window = (now, 0);
            self.next_look = now + MIN_INTERVAL;
            return self.rate;
        };
        let dt = now.saturating_duration_since(self.since).max(MIN_INTERVAL);
        let sending = (moved as f64 / dt.as_secs_f64()) as u64;
        let best = self.note_best(now, moved);
        let queued = rtts.now.saturating_sub(rtts.least);
        let target = (rtts.least / 4).max(TARGET_FLOOR);
        let floor = (best / 4).max(FLOOR);
        let resting = self.resting.is_some_and(|until| now < until);
        let seen = queued > target;
        let step = self.climb_step(now, sending, seen, queued > target * 4, best);
        let next = if resting {
            0
        } else {
            // Bytes waiting in the socket: not quiet, whatever a stalled
            // look carried (a loss's recovery holds the acknowledgements).
            let lift = !rtts.waiting;
            match next_rate(self.rate, sending, queued, target, floor, step, lift) {
                // Cut deep before `best` was known: up to the floor now.
                r if r != 0 => r.max(floor),
                r => r,
            }
        };
        self.rate = self.give_up(next, best, seen, now);
        self.since = now;
        self.sent = 0;
        self.next_look = now + (rtts.least * 2).clamp(MIN_INTERVAL, MAX_INTERVAL);
        self.rate
    }

    /// How much the rate may rise this look without a queue, noting what
    /// this look saw (`seen`: a queue over the target; `standing`: over
    /// four times it). Far under where the queue last appeared (a
    /// standing queue at a transfer's start, a cap's burst, cut the
    /// player to its floor): an eighth of the way back each look, so it
    /// is near there again within a second; after a standing queue a
    /// free player made (a burst before the guard held it), a sixteenth
    /// more each look until the queue shows again (what the player sent
    /// while it stood may be far under what the path takes); else the
    /// small step, so the queue comes back slowly, and within an eighth
    /// of where it last appeared (in the last `MEMORY`) a quarter of that.
    ///
    /// Why not steep after the guard's own overshoot, and slow near the
    /// last queue: the round trip read answers a change a look or more
    /// late (the queue's own delay, the kernel's and quinn's averaging),
    /// so the most sent while the queue showed is above what the path
    /// takes. Climbing back there at full speed, and steeply after the
    /// cut that followed, made the queue stand again every second or so
    /// (`on_a_path_whose_queue_answers_late_...`).
    fn climb_step(
        &mut self,
        now: Instant,
        sending: u64,
        seen: bool,
        standing: bool,
        best: u64,
    ) -> u64 {
        if seen && sending >= HEAVY {
            self.steep = (standing && self.rate == 0) || (self.steep && self.queued_at.1);
        }
        // What it sent counts up to what it was held to (a burst into a
        // stream's window is not the path's), and only a heavy look's (a
        // look in a loss's stall carried little; the run goes on).
        let counted = match self.rate {
            _ if sending < HEAVY => 0,
            0 => sending,
            r => sending.min(r),
        };
        self.queued_at = match self.queued_at {
            (most, true) if seen => (most.max(counted), true),
            _ if seen => (counted, true),
            (most, _) => (most, false),
        };
        let back = self.queued_at.0.saturating_sub(self.rate) / 8;
        let steep = if self.steep { self.rate / 16 } else { 0 };
        if seen {
            self.queued_when = now;
        }
        let recent = now.saturating_duration_since(self.queued_when) <= MEMORY;
        let n = self.queued_at.0;
        let near = recent && n != 0 && (n - n / 8..=n + n / 8).contains(&self.rate);
        let small = if near { best / 128 } else { best / 32 };
        small.max(back).max(steep).max(8 * 1024)
    }

    /// What went since the last look: what the path carried, where the
    /// signal tells (a TLS channel's send buffer takes megabytes at once
    /// after a pause, or at a transfer's start, and would pass for a rate
    /// the path took), else what was sent. None on the first reading of
    /// what the path carried.
    fn moved(&mut self, carried: Option<u64>) -> Option<u64> {
        let Some(c) = carried else {
            return Some(self.sent);
        };
        let last = self.carried.replace(c)?;
        Some(c.saturating_sub(last))
    }

    /// Counts this look's bytes (`moved`) towards the window, and the window's
    /// rate towards `best` once it spans `WINDOW_FOR_BEST`. Returns the
    /// best to go by: until a first window has passed, the rate since the
    /// guard began (a burst into the buffers weighs less with each look,
    /// so the floor falls under the path's rate within a fraction of a
    /// second, and early cuts do not go deeper than a quarter of it).
    fn note_best(&mut self, now: Instant, moved: u64) -> u64 {
        self.window.1 += moved;
        let span = now.saturating_duration_since(self.window.0);
        let rate = (self.window.1 as f64 / span.as_secs_f64().max(1e-3)) as u64;
        if span < WINDOW_FOR_BEST {
            return if self.best.0 == 0 { rate } else { self.best.0 };
        }
        self.window = (now, 0);
        let forgotten = now.saturating_duration_since(self.best.1) > MEMORY;
        if rate >= self.best.0 || (forgotten && self.rate == 0) {
            self.best = (rate, now);
        }
        self.best.0
    }

    /// `next`, or 0 when the player has been held well under its `best`
    /// (at most five eighths of it) for `GIVE_UP` and at least half the
    /// looks saw the queue: it is someone else's (a backup at home, a
    /// path whose round trip grew, a jittery radio link), which holding
    /// this player back does not shorten; the guard then rests for
    /// `REST`. Its own queue it keeps short at about what the path takes,
    /// which is `best`.
    fn give_up(&mut self, next: u64, best: u64, queue: bool, now: Instant) -> u64 {
        if next == 0 || next > best / 2 + best / 8 {
            self.low = None;
            return next;
        }
        let (since, looks, queued) = self.low.get_or_insert((now, 0, 0));
        *looks += 1;
        *queued += u32::from(queue);
        if now.saturating_duration_since(*since) < GIVE_UP || *queued * 2 < *looks {
            return next;
        }
        self.low = None;
        self.resting = Some(now + REST);
        0
    }

    fn rtts(&self) -> Option<Rtts> {
        match &self.signal {
            Signal::Tcp(fd) => {
                let p = crate::tcp_info::path(*fd)?;
                Some(Rtts {
                    now: p.rtt,
                    least: p.least,
                    carried: Some(p.acked),
                    waiting: p.unsent > 0,
                })
            }
            Signal::Quic(conn, least) => {
                let rtt = conn.rtt();
                let least = note(least, rtt);
                Some(Rtts {
                    now: rtt,
                    least,
                    carried: None,
                    waiting: false,
                })
            }
            #[cfg(test)]
            Signal::Fixed(f) => {
                let (now, least) = *f.lock().unwrap();
                Some(Rtts {
                    now,
                    least,
                    carried: None,
                    waiting: false,
                })
            }
            #[cfg(test)]
            Signal::Carrying(f) => {
                let (now, least, carried) = *f.lock().unwrap();
                Some(Rtts {
                    now,
                    least,
                    carried: Some(carried),
                    waiting: false,
                })
            }
        }
    }
}

/// The guard's law. `rate`: what the player is held to now (0: none);
/// `sending`: what it sent a second over the last interval; `queued`:
/// how far the round trip is above its least; `floor`: the least it may
/// be held to; `step`: how much it may rise in a look without a queue
/// (`Guard::climb_step`: a share of the player's own best, so two
/// guarded transfers keep roughly the shares they had, not equal ones);
/// `lift`: whether it may be lifted when it sends far less than allowed.
fn next_rate(
    rate: u64,
    sending: u64,
    queued: Duration,
    target: Duration,
    floor: u64,
    step: u64,
    lift: bool,
) -> u64 {
    if queued > target {
        if sending < HEAVY {
            // A game's packets in the queue did not make it.
            return rate;
        }
        // A standing queue (a transfer's start filled the router): drain
        // it fast; a queue over the target: ease off, the less the
        // nearer it is.
        let cut = |x: u64| {
            if queued > target * 4 {
                x / 2
            } else if queued > target * 2 {
                x - x / 8
            } else {
                x - x / 16
            }
        };
        let under = match rate {
            0 => cut(sending),
            r => cut(sending.min(r)),
        };
        return under.max(floor);
    }
    if rate == 0 {
        return 0;
    }
    // No queue: creep up; lifted once far above what the player sends
    // (the path took more, or it went quiet).
    let up = rate + step;
    if lift && up > sending.saturating_mul(4).max(FLOOR * 4) && sending < rate / 2 {
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
        assert_eq!(
            next_rate(0, 10_000_000, MS, t, FLOOR, 8192, true),
            0,
            "no queue"
        );
        assert_eq!(
            next_rate(0, 10_000_000, 8 * MS, t, FLOOR, 8192, true),
            9_375_000,
            "a queue just over the target: a sixteenth under"
        );
        assert_eq!(
            next_rate(0, 10_000_000, 15 * MS, t, FLOOR, 8192, true),
            8_750_000,
            "over twice the target: an eighth under"
        );
        assert_eq!(
            next_rate(0, 10_000_000, 80 * MS, t, FLOOR, 8192, true),
            5_000_000,
            "a standing queue: half"
        );
        assert_eq!(
            next_rate(0, 100_000, 80 * MS, t, FLOOR, 8192, true),
            0,
            "a game's sending is not slowed"
        );
        assert_eq!(
            next_rate(4_000_000, 3_200_000, 8 * MS, t, FLOOR, 8192, true),
            3_000_000,
            "held under what it sent"
        );
        assert_eq!(
            next_rate(4_000_000, 5_000_000, 15 * MS, t, FLOOR, 8192, true),
            3_500_000,
            "and under what it was held to"
        );
        assert_eq!(
            next_rate(4_000_000, 4_000_000, 80 * MS, t, 3_000_000, 8192, true),
            3_000_000,
            "never under the floor"
        );
    }

    #[test]
    fn without_a_queue_the_rate_creeps_up_and_is_lifted_when_unused() {
        let t = 5 * MS;
        let step = 100_000;
        assert_eq!(
            next_rate(1_600_000, 1_600_000, MS, t, FLOOR, step, true),
            1_700_000
        );
        assert_eq!(
            next_rate(1_600_000, 1_000_000, MS, t, FLOOR, step, true),
            1_700_000,
            "still used: kept"
        );
        assert_eq!(
            next_rate(1_600_000, 100_000, MS, t, FLOOR, step, true),
            0,
            "quiet: lifted"
        );
        assert_eq!(
            next_rate(1_600_000, 100_000, MS, t, FLOOR, step, false),
            1_700_000,
            "little carried while bytes wait in the socket (a loss's stall): kept"
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

    #[tokio::test(start_paused = true)]
    async fn a_burst_into_the_buffers_does_not_hold_the_floor_above_the_path() {
        // A stream window's worth leaves at once, then the path takes
        // 2.5 MB/s, queueing 40 ms above its least of 20.
        let mut g = Guard::new(
            Signal::Fixed(Arc::new(Mutex::new((60 * MS, 20 * MS)))),
            Switch::new(true),
        );
        g.spent(1_250_000);
        let mut rate = 0;
        for _ in 0..50 {
            tokio::time::advance(40 * MS).await;
            rate = g.rate(Instant::now());
            g.spent(100_000);
        }
        assert!(
            (1..2_500_000).contains(&rate),
            "held under the path's 2.5 MB/s, got {rate}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_send_buffer_does_not_pass_for_the_path_and_the_guard_keeps_the_queue_short() {
        // A TLS channel on a 2.5 MB/s uplink: its send buffer (up to 4 MB)
        // takes what home sends at once; the router queues while more
        // than a look's worth waits behind the path. Home pauses for a
        // second (the buffer drains), then sends again.
        const PATH: u64 = 2_500_000;
        const SNDBUF: u64 = 4_000_000;
        let path = Arc::new(Mutex::new((20 * MS, 20 * MS, 0u64)));
        let mut g = Guard::new(Signal::Carrying(path.clone()), Switch::new(true));
        let (mut rate, mut buffered, mut carried) = (0u64, 0u64, 0u64);
        let (mut queued_looks, mut looks) = (0, 0);
        for look in 0..500 {
            let allowed = match rate {
                _ if (100..125).contains(&look) => 0,
                0 => u64::MAX,
                r => r / 25,
            };
            let sent = allowed.min(SNDBUF - buffered);
            g.spent(sent);
            buffered += sent;
            let out = buffered.min(PATH / 25);
            (buffered, carried) = (buffered - out, carried + out);
            let queue = buffered > PATH / 25;
            *path.lock().unwrap() = (if queue { 60 } else { 21 } * MS, 20 * MS, carried);
            tokio::time::advance(40 * MS).await;
            rate = g.rate(Instant::now());
            if look >= 175 {
                looks += 1;
                queued_looks += u32::from(queue);
            }
        }
        assert!(
            queued_looks * 4 < looks,
            "the queue on {queued_looks} of the last {looks} looks (held at {rate})"
        );
    }

    /// Looks of 40 ms until a standing queue (80 ms over a least of 20)
    /// has cut a player that sends up to 10 MB/s (`first` a second while
    /// the queue stands) deep, then until the rate is back over 8 MB/s
    /// once the queue drained; the looks that took.
    async fn looks_to_climb_back(first: u64) -> u32 {
        let path = Arc::new(Mutex::new((100 * MS, 20 * MS)));
        let mut g = Guard::new(Signal::Fixed(path.clone()), Switch::new(true));
        let mut rate = 0u64;
        let sends = |rate: u64| {
            if rate == 0 {
                10_000_000
            } else {
                rate.min(10_000_000)
            }
        };
        for _ in 0..100 {
            g.spent(sends(rate).min(first) / 25);
            tokio::time::advance(40 * MS).await;
            rate = g.rate(Instant::now());
            if (1..1_000_000).contains(&rate) {
                break;
            }
        }
        assert!((1..1_000_000).contains(&rate), "cut deep: {rate}");
        *path.lock().unwrap() = (21 * MS, 20 * MS);
        for look in 1..200 {
            g.spent(sends(rate) / 25);
            tokio::time::advance(40 * MS).await;
            rate = g.rate(Instant::now());
            if rate == 0 || rate >= 8_000_000 {
                return look;
            }
        }
        panic!("held at {rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_standing_queue_at_the_start_the_rate_is_soon_back() {
        // Sending 10 MB/s as the queue stood: back there within a second.
        let looks = looks_to_climb_back(10_000_000).await;
        assert!(looks <= 25, "{looks} looks");
        // The burst that filled the router left before the guard began,
        // and the player sent 2 MB/s as the queue stood, which says
        // nothing of the path: within two seconds.
        let looks = looks_to_climb_back(2_000_000).await;
        assert!(looks <= 50, "{looks} looks");
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_on_every_other_look_that_holds_a_player_at_half_is_given_up_on() {
        // A radio link's jitter: the round trip 8 ms above its least on
        // every other look, whatever the player sends.
        let path = Arc::new(Mutex::new((20 * MS, 20 * MS)));
        let mut g = Guard::new(Signal::Fixed(path.clone()), Switch::new(true));
        let mut rate = 0u64;
        // (Held where a sixteenth cut on every other look meets the
        // step up on the others: about half its best.)
        for look in 0..400u32 {
            let jitter = look >= 40 && look % 2 == 0;
            *path.lock().unwrap() = (if jitter { 28 } else { 20 } * MS, 20 * MS);
            // 10 MB/s, or what the guard allows.
            let allowed = if rate == 0 {
                10_000_000
            } else {
                rate.min(10_000_000)
            };
            g.spent(allowed / 25);
            tokio::time::advance(40 * MS).await;
            rate = g.rate(Instant::now());
            if look > 40 && rate == 0 {
                assert!(look > 100, "not at once: look {look}");
                return;
            }
        }
        panic!("never given up: held at {rate}");
    }

    /// A bulk sender behind a home router: its own congestion control
    /// (slow start, then halving on a drop at most once a round trip,
    /// else growing a 50th of the path a second), a FIFO of 100 ms at
    /// `path` bytes/s that drops when full, and a round trip read as the
    /// kernel and quinn keep it: a sample per acknowledgement (one for
    /// two segments), each known a round trip after its packet left
    /// (and `late` more: acknowledgements a Wi-Fi link or a busy hub
    /// holds back), averaged an eighth at a time. `carried`: the guard
    /// counts what the path carried (TLS), else what was sent (QUIC). In
    /// 5 ms ticks for 60 s; returns the queue (ms) of each tick and the
    /// share of the path used, both after the first 10 s.
    async fn behind_a_router(
        carried: bool,
        least: Duration,
        path: u64,
        late: Duration,
    ) -> (Vec<u64>, f64) {
        let tick = 5 * MS;
        let per_tick = |r: u64| r / 200;
        let reading = Arc::new(Mutex::new((least, least, 0u64)));
        let written = Arc::new(Mutex::new((least, least)));
        let signal = match carried {
            true => Signal::Carrying(reading.clone()),
            false => Signal::Fixed(written.clone()),
        };
        let mut g = Guard::new(signal, Switch::new(true));
        let (mut rate, mut queue, mut total) = (0u64, 0u64, 0u64);
        let (mut cc, mut slow, mut last_drop) = (200_000f64, true, 0u64);
        let mut srtt = least.as_secs_f64();
        // (tick it is known at, round trip) and (tick, bytes carried).
        let mut samples = std::collections::VecDeque::new();
        let mut acked = std::collections::VecDeque::new();
        let (mut queues, mut out_after) = (Vec::new(), 0u64);
        for t in 0..12_000u64 {
            let allowed = match rate {
                0 => cc as u64,
                r => r.min(cc as u64),
            };
            g.spent(per_tick(allowed));
            queue += per_tick(allowed);
            let out = queue.min(per_tick(path));
            queue -= out;
            let dropped = queue > path / 10;
            queue = queue.min(path / 10);
            let rtt = least.as_secs_f64() + queue as f64 / path as f64;
            let rtt_ticks = rtt / tick.as_secs_f64();
            if dropped {
                if t > last_drop + rtt_ticks as u64 {
                    (cc, slow, last_drop) = (cc / 2.0, false, t);
                }
            } else if slow {
                // (Up to a receive window's worth.)
                cc = (cc * (1.0 + 1.0 / rtt_ticks)).min(4.0 * path as f64);
            } else if allowed as f64 >= cc * 0.9 {
                cc += path as f64 / 50.0 / 200.0;
            }
            // An acknowledgement for every two segments, each a sample.
            let acks = (out / 2896).max(1) as i32;
            let known = rtt_ticks.round() as u64 + (late.as_millis() / 5) as u64;
            samples.push_back((t + known, rtt, acks));
            let back = (least.as_secs_f64() / tick.as_secs_f64()).round() as u64;
            acked.push_back((t + back, out));
            while let Some((_, r, n)) = samples.front().filter(|(at, ..)| *at <= t) {
                srtt += (r - srtt) * (1.0 - (7.0f64 / 8.0).powi(*n));
                samples.pop_front();
            }
            while let Some((_, n)) = acked.front().filter(|(at, _)| *at <= t) {
                total += n;
                acked.pop_front();
            }
            let srtt = Duration::from_secs_f64(srtt);
            *reading.lock().unwrap() = (srtt, least, total);
            *written.lock().unwrap() = (srtt, least);
            tokio::time::advance(tick).await;
            rate = g.rate(Instant::now());
            if t >= 2_000 {
                queues.push(queue * 1000 / path);
                out_after += out;
            }
        }
        let used = out_after as f64 / (per_tick(path) * 10_000) as f64;
        (queues, used)
    }

    #[tokio::test(start_paused = true)]
    async fn the_slow_climb_near_the_last_queue_is_forgotten_after_a_while_without_one() {
        let mut g = Guard::new(
            Signal::Fixed(Arc::new(Mutex::new((20 * MS, 20 * MS)))),
            Switch::new(true),
        );
        let best = 4_000_000;
        let step = |g: &mut Guard| g.climb_step(Instant::now(), 3_800_000, false, false, best);
        // The queue last stood at 4 MB/s; the player is held just under.
        g.queued_at = (4_000_000, false);
        g.queued_when = Instant::now();
        g.rate = 3_800_000;
        assert_eq!(step(&mut g), best / 128, "near the last queue: slow");
        // Ten seconds and more without a queue (a satellite path's looks
        // are a second apart: the band would take half a minute).
        tokio::time::advance(MEMORY + MS).await;
        assert_eq!(
            step(&mut g),
            best / 32,
            "the path has had room: the usual step"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_path_whose_queue_answers_late_the_guard_keeps_it_short_and_the_path_full() {
        // Before: a standing queue the guard's own climb made armed the
        // steep climb again, and the climb ran at its usual step up to
        // where the queue had last stood (which a late answer puts above
        // the path). Mean queue (what was sent / what was carried) then
        // 2.5 / 2.1 ms at 20 ms, 9.6 / 5.9 ms at 60 ms; now 1.5 / 0.8 and
        // 5.3 / 2.9 ms, the path as full. With acknowledgements 40 ms late
        // and only the climb slowed near the last queue: 5.8 / 3.6 ms, the
        // path a quarter idle (the steep climb re-armed every second or
        // so); now 1.9 / 1.3 ms.
        let cases = [
            (20 * MS, 12_500_000, Duration::ZERO, 1.75),
            (60 * MS, 2_500_000, Duration::ZERO, 5.5),
            (20 * MS, 12_500_000, 40 * MS, 2.5),
        ];
        for (least, path, late, mean_at_most) in cases {
            for carried in [false, true] {
                let (mut queues, used) = behind_a_router(carried, least, path, late).await;
                queues.sort_unstable();
                let mean = queues.iter().sum::<u64>() as f64 / queues.len() as f64;
                let p99 = queues[queues.len() * 99 / 100];
                let what = format!("least {least:?}, {path} B/s, {late:?} late, carried {carried}");
                assert!(mean <= mean_at_most, "{what}: mean queue {mean:.2} ms");
                assert!(p99 as u128 <= least.as_millis() / 2, "{what}: p99 {p99} ms");
                assert!(used >= 0.95, "{what}: the path {used:.3} used");
            }
        }
    }
}
