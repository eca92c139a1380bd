//! Token buckets for byte rates: a service's `max_rate` (one budget all its
//! players share) and `max_rate_per_player`, each direction on its own,
//! enforced where the hub reads, so a capped download is never read off the
//! channel faster than the cap and the home uplink is spared.
//!
//! A bucket holds a quarter second of its rate, at least 64 KiB: a short
//! burst (a page, a chunk of a map) passes at once, a transfer settles at
//! the rate.

use crate::uplink_guard::{Guard, Signal, Switch};
use std::{
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

/// The least a bucket holds when full.
pub const MIN_BURST: u64 = 64 * 1024;

/// What a full bucket of `rate` bytes/s holds.
pub fn burst(rate: u64) -> u64 {
    (rate / 4).max(MIN_BURST)
}

/// Bytes a reader that ran dry waits for before it reads again: about a
/// hundredth of a second of rate, so a capped transfer wakes at most ~100
/// times a second, in reads of 1 to 32 KiB. (Steps of a millisecond on
/// the ep's side gave no lower delay for other players on a thin uplink
/// while the ep's QUIC socket held 17 ms of queue; since it holds ~4 ms
/// they do over QUIC: `short_step`. Over TLS the kernel paces instead.)
fn step(rate: u64) -> u64 {
    (rate / 100).clamp(1024, 32 * 1024)
}

/// Steps for a direction whose writer sends what it is given at once, in
/// bursts (a QUIC stream: quinn sends ten packets or more at a time):
/// 8 KiB from 819 kB/s, a millisecond of the rate from 8.2 MB/s, the
/// usual step below and from 32.8 MB/s. So what a step puts in a thin
/// uplink's queue ahead of other players' packets drains in about a
/// millisecond (tokio's timer adds up to one more), for at most 1,000
/// wake-ups a second, at most four times the usual steps' (3.3–8.2 MB/s).
fn short_step(rate: u64) -> u64 {
    step(rate).min((rate / 1000).max(8 * 1024))
}

/// The least a woken reader reads rather than wait for a whole step.
const FLOOR: u64 = 1024;

/// One direction's bucket. `rate` 0 is no cap. Tokens may go below zero:
/// readers sharing a bucket check, read, then pay, and a debt is waited
/// off like any other shortfall.
#[derive(Debug)]
pub struct Bucket {
    rate: u64,
    tokens: f64,
    at: Instant,
    /// 0: holds a quarter second of its rate (`burst`). Else this many
    /// steps of it (at least 16 KiB): the uplink guard's, which lets no
    /// burst into the queue it keeps short (two while it holds a player,
    /// four while it follows a cap; see `Limiter::poll_budget`).
    steps: u64,
}

impl Bucket {
    /// Full, so a new player's first burst passes at once.
    pub fn new(rate: u64) -> Self {
        Bucket {
            rate,
            tokens: burst(rate) as f64,
            at: Instant::now(),
            steps: 0,
        }
    }

    /// An uplink guard's bucket, no rate yet (see `steps`).
    fn short() -> Self {
        Bucket {
            steps: 2,
            ..Bucket::new(0)
        }
    }

    fn burst(&self, rate: u64) -> u64 {
        // Steps, not a share of the rate: a reader woken late (a loaded
        // CPU) must still find more than the step it waited for, or the
        // time it was late is lost for good.
        match self.steps {
            0 => burst(rate),
            n => (step(rate) * n).max(16 * 1024),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// A new rate from now on; what was saved stays, up to the new burst.
    pub fn set_rate(&mut self, rate: u64) {
        if rate == self.rate {
            return;
        }
        self.refill(Instant::now());
        if self.rate == 0 {
            self.tokens = self.burst(rate) as f64;
        }
        self.rate = rate;
        self.tokens = self.tokens.min(self.burst(rate) as f64);
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst(self.rate) as f64);
        self.at = now;
    }

    /// Bytes that may pass now; no cap: all of them.
    pub fn available(&mut self, now: Instant) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        self.refill(now);
        self.tokens.max(0.0) as u64
    }

    pub fn spend(&mut self, n: u64) {
        if self.rate != 0 {
            self.tokens -= n as f64;
        }
    }

    /// How long after the last refill until `n` bytes may pass.
    fn wait_for(&self, n: u64) -> Duration {
        if self.rate == 0 || self.tokens >= n as f64 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((n as f64 - self.tokens) / self.rate as f64)
    }
}

/// Which way bytes go: `Up` from the player towards home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Up,
    Down,
}

/// One service's caps, changed in place on reload: its shared buckets
/// (rate `max_rate`) and the rate each player's own buckets follow.
#[derive(Debug)]
pub struct Caps {
    per_player: AtomicU64,
    up: Mutex<Bucket>,
    down: Mutex<Bucket>,
}

impl Caps {
    pub fn new(max_rate: u64, per_player: u64) -> Arc<Self> {
        Arc::new(Caps {
            per_player: AtomicU64::new(per_player),
            up: Mutex::new(Bucket::new(max_rate)),
            down: Mutex::new(Bucket::new(max_rate)),
        })
    }

    /// New values for players already capped and for those to come.
    pub fn set(&self, max_rate: u64, per_player: u64) {
        self.per_player.store(per_player, Ordering::Relaxed);
        self.shared(Dir::Up).set_rate(max_rate);
        self.shared(Dir::Down).set_rate(max_rate);
    }

    /// The caps as set now.
    pub fn rates(&self) -> crate::proto::Rates {
        crate::proto::Rates {
            max_rate: self.shared(Dir::Up).rate(),
            max_rate_per_player: self.per_player(),
        }
    }

    /// Either cap set.
    pub fn any(&self) -> bool {
        self.per_player() != 0 || self.shared(Dir::Up).rate() != 0
    }

    fn per_player(&self) -> u64 {
        self.per_player.load(Ordering::Relaxed)
    }

    fn shared(&self, dir: Dir) -> MutexGuard<'_, Bucket> {
        let m = match dir {
            Dir::Up => &self.up,
            Dir::Down => &self.down,
        };
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new player's limiters, or None when no cap is set: an uncapped
    /// player's relay has nothing to check (and a cap set later by a
    /// reload reaches only players who come after it).
    pub fn relay_limits(self: &Arc<Self>) -> Option<Box<RelayLimits>> {
        self.any().then(|| {
            Box::new(RelayLimits {
                up: Some(Limiter::new(self.clone(), Dir::Up)),
                down: Some(Limiter::new(self.clone(), Dir::Down)),
            })
        })
    }

    /// The ep's side of a capped player: only what goes home → hub is
    /// paced (the hub already paces the other way at its reads). Made
    /// whether or not a cap is set now, as the hub's own limiter was, so
    /// it follows the caps a reload sets.
    pub fn pacing_limits(self: &Arc<Self>) -> Box<RelayLimits> {
        Box::new(RelayLimits {
            up: None,
            down: Some(Limiter::new(self.clone(), Dir::Down)),
        })
    }

    /// A new UDP flow's buckets, or None when no cap is set.
    pub fn datagram_limits(self: &Arc<Self>) -> Option<Datagrams> {
        self.any().then(|| {
            let rate = self.per_player();
            Datagrams {
                caps: self.clone(),
                up: Mutex::new(Bucket::new(rate)),
                down: Mutex::new(Bucket::new(rate)),
            }
        })
    }
}

/// A TCP player's two directions (None: that way is not capped).
pub struct RelayLimits {
    pub up: Option<Limiter>,
    pub down: Option<Limiter>,
}

impl RelayLimits {
    /// How `dir`'s steps leave, where they cross a thin link: a TCP
    /// socket (`Some(fd)`, a TLS channel) is paced by the kernel while
    /// the transfer is steady at its cap (`crate::tcp_pacing`); a writer
    /// with no socket of its own (`None`, a QUIC stream) gets shorter
    /// steps instead (`short_step`). The socket must stay open while
    /// these limits live: the relay that holds them borrows its stream.
    pub fn smooth(&mut self, dir: Dir, socket: Option<std::os::fd::RawFd>) {
        let l = match dir {
            Dir::Up => self.up.as_mut(),
            Dir::Down => self.down.as_mut(),
        };
        if let Some(l) = l {
            l.smooth = match socket {
                Some(fd) => Smooth::Kernel(KernelPace { fd, applied: 0 }),
                None => Smooth::ShortSteps,
            };
        }
    }

    /// The uplink guard watches what home sends (`Dir::Down`) from now
    /// on. A player with no cap gets limits for it (none before, so an
    /// idle or a game player's relay checks nothing), its steps leaving
    /// as `smooth` says for the path; a capped one's limiter takes the
    /// guard beside its caps, which matter when a cap is above what the
    /// uplink takes (a service's `max_rate` set for a faster line, or
    /// shared by few players). What the caps save while the guard holds
    /// a player under them leaves no faster than the guard's short
    /// bucket lets it (`Limiter::poll_budget`).
    pub fn guard(limits: &mut Option<Box<RelayLimits>>, signal: Signal, switch: Switch) {
        let socket = match &signal {
            Signal::Tcp(fd) => Some(*fd),
            _ => None,
        };
        let guard = Some(Box::new((Guard::new(signal, switch), Bucket::short())));
        if let Some(r) = limits {
            if let Some(down) = r.down.as_mut() {
                down.guard = guard;
            }
            return;
        }
        let mut down = Limiter::new(Caps::new(0, 0), Dir::Down);
        down.guard = guard;
        let mut r = Box::new(RelayLimits {
            up: None,
            down: Some(down),
        });
        r.smooth(Dir::Down, socket);
        *limits = Some(r);
    }

    /// The caps its limiters follow, as set now.
    pub fn rates(&self) -> Option<crate::proto::Rates> {
        let l = self.down.as_ref().or(self.up.as_ref())?;
        Some(l.caps.rates())
    }
}

/// What one relay direction obeys: the player's own bucket and the
/// service's shared one, with one timer for when it runs dry.
pub struct Limiter {
    caps: Arc<Caps>,
    dir: Dir,
    own: Bucket,
    timer: Pin<Box<Sleep>>,
    smooth: Smooth,
    /// The uplink guard's rate and bucket, once it watches the player.
    guard: Option<Box<(Guard, Bucket)>>,
}

/// How a direction's steps are spread out (`RelayLimits::smooth`).
enum Smooth {
    /// Steps of a hundredth of a second of the rate, sent as the writer
    /// takes them: the hub's downloads (read off the channel, sent to
    /// the player) and its uploads over QUIC (home's downlink is rarely
    /// the thin side, and the hub wakes for thousands of players).
    No,
    /// `short_step`s: the ep's capped players over QUIC.
    ShortSteps,
    /// The kernel paces the TLS channel the steps are written to.
    Kernel(KernelPace),
}

/// The socket a limiter's bytes are written to, and the pacing rate last
/// set on it (0: none).
struct KernelPace {
    fd: std::os::fd::RawFd,
    applied: u64,
}

impl KernelPace {
    fn set(&mut self, rate: u64) {
        if rate != self.applied {
            crate::tcp_pacing::set(self.fd, rate);
            self.applied = rate;
        }
    }

    /// Paced at `slowest` (the binding cap) while the transfer is steady;
    /// lifted while the bucket holds half a burst saved, so a burst after
    /// a pause still passes at once (within a round trip, see
    /// `tcp_pacing::set`), and when no cap is left. Steady: the reader ran
    /// dry (`dry`), or was already paced and is not bursting. Under a
    /// shared `max_rate` each player's socket is paced at the whole rate
    /// (its share is not known here): smoother than unpaced, less so the
    /// more players share it.
    fn follow(&mut self, slowest: Option<u64>, have: u64, dry: bool) {
        let rate = match slowest {
            Some(r) if dry || (self.applied != 0 && have < burst(r) / 2) => {
                crate::tcp_pacing::paced(r)
            }
            _ => 0,
        };
        self.set(rate);
    }
}

impl Limiter {
    fn new(caps: Arc<Caps>, dir: Dir) -> Self {
        let own = Bucket::new(caps.per_player());
        Limiter {
            caps,
            dir,
            own,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            smooth: Smooth::No,
            guard: None,
        }
    }

    /// Bytes this direction may read now, at most `max`; or Pending, with
    /// the timer set for when a step's worth will be there.
    pub fn poll_budget(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<usize> {
        loop {
            let now = Instant::now();
            self.own.set_rate(self.caps.per_player());
            let mut shared = self.caps.shared(self.dir);
            let mut rates = [self.own.rate(), shared.rate(), 0];
            let cap = rates[..2].iter().copied().filter(|r| *r != 0).min();
            let guarded = self.guard.as_deref_mut().map(|(g, b)| {
                // A capped player the guard watches keeps its short bucket
                // at the cap when the guard lets go, holding four steps
                // (fewer, and a late wake-up under a loaded CPU cost the
                // cap 10 %): what the caps' buckets saved while
                // the guard held it under them (a quarter second of the
                // cap) would otherwise leave at once, into the queue the
                // guard kept short (QUIC round trips beside a capped
                // download on the thin uplink, p99 6.9 ms against 2.1 ms).
                let (rate, steps) = match (g.rate(now), cap) {
                    (0, c) => (c.unwrap_or(0), 4),
                    (r, Some(c)) if r >= c => (c, 4),
                    (r, _) => (r, 2),
                };
                b.steps = steps;
                b.set_rate(rate);
                b
            });
            let mut have = self.own.available(now).min(shared.available(now));
            if let Some(b) = guarded {
                have = have.min(b.available(now));
                rates[2] = b.rate();
            }
            let slowest = rates.into_iter().filter(|r| *r != 0).min();
            let Some(slowest) = slowest else {
                if let Smooth::Kernel(k) = &mut self.smooth {
                    k.follow(None, have, false);
                }
                return Poll::Ready(max);
            };
            let want = match self.smooth {
                Smooth::ShortSteps => short_step(slowest),
                _ => step(slowest),
            };
            let want = want.min(max as u64);
            // A reader woken with less than a step still reads what there
            // is past a small floor: UDP datagrams spending the same shared
            // budget a few hundred bytes at a time would otherwise keep it
            // from ever holding a step.
            let ready = have >= want || have >= FLOOR.min(max as u64);
            if let Smooth::Kernel(k) = &mut self.smooth {
                k.follow(Some(slowest), have, !ready);
            }
            if ready {
                return Poll::Ready(have.min(max as u64) as usize);
            }
            let mut wait = self.own.wait_for(want).max(shared.wait_for(want));
            if let Some((_, b)) = self.guard.as_deref() {
                wait = wait.max(b.wait_for(want));
            }
            drop(shared);
            self.timer.as_mut().reset(now + wait);
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// `n` bytes were read.
    pub fn spend(&mut self, n: usize) {
        self.own.spend(n as u64);
        self.caps.shared(self.dir).spend(n as u64);
        if let Some((g, b)) = self.guard.as_deref_mut() {
            g.spent(n as u64);
            b.spend(n as u64);
        }
    }
}

/// A UDP flow's own buckets, both directions, and its service's caps.
pub struct Datagrams {
    caps: Arc<Caps>,
    up: Mutex<Bucket>,
    down: Mutex<Bucket>,
}

impl Datagrams {
    /// Whether a datagram of `len` bytes fits both budgets now; if it
    /// does, it is paid for. One that does not is for the caller to drop.
    pub fn pass(&self, dir: Dir, len: usize) -> bool {
        self.check(dir, len, true)
    }

    /// Whether a datagram of `len` bytes would pass now, paying nothing:
    /// a new flow's first datagram is weighed before the door's caps and
    /// paid for only once they admit it, so datagrams the door refuses
    /// spend none of the budget the service's players share.
    pub fn fits(&self, dir: Dir, len: usize) -> bool {
        self.check(dir, len, false)
    }

    fn check(&self, dir: Dir, len: usize, pay: bool) -> bool {
        let own = match dir {
            Dir::Up => &self.up,
            Dir::Down => &self.down,
        };
        let mut own = own.lock().unwrap_or_else(|p| p.into_inner());
        own.set_rate(self.caps.per_player());
        let mut shared = self.caps.shared(dir);
        let now = Instant::now();
        let n = len as u64;
        if own.available(now) < n || shared.available(now) < n {
            return false;
        }
        if pay {
            own.spend(n);
            shared.spend(n);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let mut b = Bucket::new(1_000_000);
        let now = Instant::now();
        assert_eq!(b.available(now), 250_000);
        b.spend(250_000);
        assert_eq!(b.available(now), 0);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(b.available(Instant::now()), 100_000);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.available(Instant::now()), 250_000);
        assert_eq!(Bucket::new(1000).available(now), MIN_BURST);
        assert_eq!(Bucket::new(0).available(now), u64::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn datagrams_over_either_budget_do_not_pass() {
        let caps = Caps::new(0, 10_000);
        let d = caps.datagram_limits().unwrap();
        let mut passed = 0;
        while d.pass(Dir::Down, 1000) {
            passed += 1;
        }
        assert_eq!(passed, MIN_BURST / 1000);
        assert!(d.pass(Dir::Up, 1000), "each direction has its own budget");
        caps.set(0, 0);
        assert!(
            d.pass(Dir::Down, 1000),
            "a reload lifting the cap applies at once"
        );
        assert!(Caps::new(0, 0).datagram_limits().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dry_limiter_waits_for_a_step() {
        let caps = Caps::new(100_000, 0);
        let RelayLimits { up, down } = *caps.relay_limits().unwrap();
        let (mut up, mut down) = (up.unwrap(), down.unwrap());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert_eq!(down.poll_budget(&mut cx, 32 * 1024), Poll::Ready(32 * 1024));
        down.spend(MIN_BURST as usize);
        assert!(down.poll_budget(&mut cx, 32 * 1024).is_pending());
        assert!(up.poll_budget(&mut cx, 32 * 1024).is_ready());
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(down.poll_budget(&mut cx, 32 * 1024), Poll::Ready(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_without_a_socket_gets_steps_of_a_millisecond() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut dry_wait = |rate: u64, short: bool| {
            let caps = Caps::new(0, rate);
            let mut limits = caps.relay_limits().unwrap();
            if short {
                limits.smooth(Dir::Down, None);
            }
            let mut down = limits.down.take().unwrap();
            while let Poll::Ready(n) = down.poll_budget(&mut cx, 32 * 1024) {
                down.spend(n);
            }
            (down.timer.deadline() - Instant::now()).as_secs_f64() * 1e6
        };
        let (usual, short) = (dry_wait(10_000_000, false), dry_wait(10_000_000, true));
        assert!(
            (usual - 3276.8).abs() < 1.0,
            "32 KiB at 10 MB/s: {usual} µs"
        );
        assert!((short - 1000.0).abs() < 1.0, "10 kB at 10 MB/s: {short} µs");
        let (usual, short) = (dry_wait(200_000, false), dry_wait(200_000, true));
        assert!(
            (short - 10_000.0).abs() < 1.0,
            "2 kB at 200 kB/s: {short} µs"
        );
        assert!((usual - short).abs() < 1.0, "the same step either way");
        let short = dry_wait(2_000_000, true);
        assert!((short - 4096.0).abs() < 1.0, "8 KiB at 2 MB/s: {short} µs");
        let (usual, short) = (dry_wait(100_000_000, false), dry_wait(100_000_000, true));
        assert!(
            (short - 327.68).abs() < 1.0,
            "32 KiB at 100 MB/s: {short} µs"
        );
        assert!((usual - short).abs() < 1.0, "the same step at 100 MB/s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_capped_transfer_is_paced_by_the_kernel_and_a_burst_is_not() {
        use crate::tcp_pacing::get;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = socket.as_raw_fd();
        let caps = Caps::new(0, 1_000_000);
        let mut limits = caps.relay_limits().unwrap();
        limits.smooth(Dir::Down, Some(fd));
        let mut down = limits.down.take().unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = || {
            let p = down.poll_budget(&mut cx, 32 * 1024);
            if let Poll::Ready(n) = p {
                down.spend(n);
            }
            (p.is_ready(), get(fd).unwrap())
        };
        assert_eq!(
            poll(),
            (true, u64::MAX),
            "a full bucket's burst passes at once"
        );
        while poll().0 {}
        assert_eq!(
            poll(),
            (false, 1_125_000),
            "dry: paced a little above the cap"
        );
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(poll(), (true, 1_125_000), "steady: still paced");
        caps.set(0, 500_000);
        assert_eq!(poll().1, 562_500, "a reload's new cap is followed");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(poll(), (true, u64::MAX), "a pause saved a burst: unpaced");
        while poll().0 {}
        caps.set(0, 0);
        assert_eq!(poll(), (true, u64::MAX), "a lifted cap lifts the pacing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_capped_player_held_under_its_cap_by_the_guard_saves_no_burst_nor_robs_the_others() {
        // A 1 MB/s cap per player and 2 MB/s for the service, on a path
        // that queues 40 ms above its least while the guarded player
        // sends; another player of the service is not guarded.
        let path = Arc::new(Mutex::new((
            Duration::from_millis(60),
            Duration::from_millis(20),
        )));
        let caps = Caps::new(2_000_000, 1_000_000);
        let mut limits = Some(caps.pacing_limits());
        RelayLimits::guard(&mut limits, Signal::Fixed(path.clone()), Switch::new(true));
        let mut down = limits.unwrap().down.take().unwrap();
        let mut other = caps.pacing_limits().down.take().unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut drain = |l: &mut Limiter| {
            let mut n = 0;
            while let Poll::Ready(k) = l.poll_budget(&mut cx, 32 * 1024) {
                l.spend(k);
                n += k;
            }
            n
        };
        let (mut sent, mut others) = (0, 0);
        for _ in 0..300 {
            sent += drain(&mut down);
            others += drain(&mut other);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let held = down
            .guard
            .as_deref()
            .expect("a capped player is guarded")
            .1
            .rate();
        assert!(
            (1..1_000_000).contains(&held) && sent < 3_000_000 / 2,
            "held under its cap: {held} B/s, {sent} B in 3 s"
        );
        assert!(
            others > 2_700_000,
            "the service's other player got its own cap: {others} B in 3 s"
        );
        // Home pauses for two seconds; the queue drains. What passes at
        // once when it sends again (the guard lets go of a quiet player)
        // is four steps of the cap, not what the caps saved.
        *path.lock().unwrap() = (Duration::from_millis(20), Duration::from_millis(20));
        tokio::time::advance(Duration::from_secs(2)).await;
        let burst = drain(&mut down);
        assert!(
            burst <= 4 * 10_000,
            "{burst} B at once after the pause, over four steps of the cap"
        );
    }
}
