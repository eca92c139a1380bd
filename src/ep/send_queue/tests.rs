use super::*;
use std::collections::VecDeque;

#[test]
fn four_milliseconds_of_the_rate() {
    // 100 Mbit/s: 12.5 MB/s; four milliseconds are 50 kB.
    assert_eq!(rate_part(12_500_000.0, 0), 50_000);
    assert_eq!(rate_part(1e6, 0), FLOOR);
    // A fast link is capped.
    assert_eq!(rate_part(2e9, 0), CEILING);
}

#[test]
fn idle_asks_the_floor() {
    assert_eq!(Sizer::default().step(0.0), FLOOR);
}

#[test]
fn a_pause_halves_it_step_by_step() {
    let mut s = Sizer::default();
    assert_eq!(s.step(25e6), 100_000);
    assert_eq!(s.step(0.0), 50_000);
    assert_eq!(s.step(0.0), 25_000);
    for _ in 0..10 {
        s.step(0.0);
    }
    assert_eq!(s.step(0.0), FLOOR);
}

/// What the kernel grants by default, and so what the ep had before it
/// sized the buffer.
const DEFAULT: usize = KERNEL_DEFAULT;
/// Quinn hands the socket ten datagrams at a time.
const BATCH: f64 = 14_500.0;
/// The model's time step.
const TICK: f64 = 1e-4;
/// Data in what the kernel charges a socket: a datagram of 1,452 bytes
/// costs about 2.3 KiB once a GSO batch is cut into datagrams for a device
/// that cannot send it whole (as Wi-Fi's).
const SHARE: f64 = 0.6;

/// A socket, quinn filling it while it holds less than it was granted and,
/// once it is full, waiting until it holds half (as the kernel wakes a
/// sender); sized by a `Sizer`, or fixed when there is none.
struct Socket {
    sizer: Option<Sizer>,
    asked: usize,
    held: f64,
    blocked: bool,
    freed_at: VecDeque<(f64, f64)>,
    handed: f64,
}

/// Sockets on one device, which sends in order at `link` bytes/s and
/// frees each batch `round` after sending it (Wi-Fi: once its aggregate
/// is acknowledged); the link's speed varies ±5 % and the round ±20 %
/// from step to step.
struct Sim {
    link: f64,
    round: f64,
    wmem_max: usize,
    now: f64,
    busy_until: f64,
    seed: u32,
    sockets: Vec<Socket>,
}

impl Sim {
    fn new(link: f64, round_ms: f64, wmem_max: usize, sizers: Vec<Option<Sizer>>) -> Sim {
        let sockets = sizers
            .into_iter()
            .map(|sizer| Socket {
                asked: if sizer.is_some() { FLOOR } else { DEFAULT / 2 },
                sizer,
                held: 0.0,
                blocked: false,
                freed_at: VecDeque::new(),
                handed: 0.0,
            })
            .collect();
        Sim {
            link,
            round: round_ms / 1e3,
            wmem_max,
            now: 0.0,
            busy_until: 0.0,
            seed: 0x9e37_79b9,
            sockets,
        }
    }

    fn noise(&mut self, spread: f64) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        1.0 - spread + 2.0 * spread * f64::from(self.seed) / f64::from(u32::MAX)
    }

    /// One step; each socket's rate in it, each sizer then stepped.
    fn step(&mut self) -> Vec<f64> {
        let (speed, round) = (self.link * self.noise(0.05), self.round * self.noise(0.2));
        for _ in 0..(EVERY.as_secs_f64() / TICK) as usize {
            self.now += TICK;
            for s in &mut self.sockets {
                let room = 2.0 * s.asked.min(self.wmem_max) as f64 * SHARE;
                while s.freed_at.front().is_some_and(|f| f.0 <= self.now) {
                    s.held -= s.freed_at.pop_front().unwrap().1;
                }
                s.blocked &= s.held >= room / 2.0;
                while !s.blocked && s.held < room {
                    let start = self.busy_until.max(self.now);
                    self.busy_until = start + BATCH / speed;
                    s.freed_at.push_back((self.busy_until + round, BATCH));
                    s.held += BATCH;
                    s.handed += BATCH;
                }
                s.blocked = s.held >= room;
            }
        }
        let secs = EVERY.as_secs_f64();
        let rates: Vec<f64> = self
            .sockets
            .iter_mut()
            .map(|s| std::mem::take(&mut s.handed) / secs)
            .collect();
        for (s, rate) in self.sockets.iter_mut().zip(&rates) {
            if let Some(z) = &mut s.sizer {
                s.asked = z.step(*rate);
            }
        }
        rates
    }

    /// `steps` steps: the first socket's rates and sizes asked.
    fn run(&mut self, steps: usize) -> (Vec<f64>, Vec<usize>) {
        (0..steps)
            .map(|_| (self.step()[0], self.sockets[0].asked))
            .unzip()
    }

    fn scale(&self, socket: usize) -> u32 {
        self.sockets[socket].sizer.as_ref().unwrap().probe.scale()
    }
}

fn mean(r: &[f64]) -> f64 {
    r.iter().sum::<f64>() / r.len() as f64
}

fn sized() -> Option<Sizer> {
    Some(Sizer::new(DEFAULT))
}

/// The rate the kernel's default buffer lets through, and the rate the
/// buffer sized from the rate alone does (no probe).
fn without_the_probe(link: f64, round_ms: f64) -> (f64, f64) {
    let mut fixed = Sim::new(link, round_ms, 4 << 20, vec![None]);
    let default = mean(&fixed.run(300).0[100..]);
    let mut followed = Sim::new(link, round_ms, 4 << 20, vec![None]);
    let mut rates = Vec::new();
    for _ in 0..300 {
        let rate = followed.step()[0];
        let before = followed.sockets[0].asked;
        followed.sockets[0].asked = rate_part(rate, before);
        rates.push(rate);
    }
    (default, mean(&rates[100..]))
}

/// Rounds under which a buffer sized from the rate alone holds the rate
/// far below what the kernel's default buffer lets through are found by
/// the probe's tries: within seconds the ep sends at least as fast as it
/// did with the default, and keeps that.
#[test]
fn long_device_rounds_are_no_slower_than_with_the_default() {
    let link = 25e6; // 200 Mbit/s
    for round_ms in [0.2, 2.0, 5.0, 10.0, 20.0, 50.0] {
        let (default, followed) = without_the_probe(link, round_ms);
        let mut sim = Sim::new(link, round_ms, 4 << 20, vec![sized()]);
        let (rates, _) = sim.run(1200);
        let first = rates.iter().position(|r| *r >= 0.9 * default);
        let late = mean(&rates[600..]);
        assert!(
            first.is_some_and(|f| f <= 150) && late >= 0.95 * default,
            "{round_ms} ms: {late:.0} late, first at {first:?}; \
             {default:.0} with the default, {followed:.0} following the rate"
        );
    }
}

/// The risk the probe is for: with 10 ms rounds, sizing from the rate
/// alone holds the ep to a fraction of what the default let through.
#[test]
fn following_the_rate_alone_would_hold_a_slow_device_back() {
    let (default, followed) = without_the_probe(25e6, 10.0);
    assert!(followed < 0.5 * default, "{followed:.0} / {default:.0}");
}

/// Where the link is the limit, tries find nothing: the queue stays four
/// milliseconds of the rate, a try's doubling a few steps in a thousand.
#[test]
fn a_wired_link_keeps_its_short_queue() {
    let link = 12.5e6; // 100 Mbit/s
    let mut sim = Sim::new(link, 0.2, 4 << 20, vec![sized()]);
    let (rates, sizes) = sim.run(6000);
    assert_eq!(sim.scale(0), 1);
    let doubled = sizes.iter().filter(|b| **b > 75_000).count();
    assert!(doubled <= 60, "{doubled} of 6000 steps over 75 kB");
    assert!(mean(&rates[100..]) >= 0.95 * link);
}

/// A device that got faster (the medium quiet again) gets its short queue
/// back within minutes, a slow link after a fast one too.
#[test]
fn a_device_that_got_faster_gets_its_short_queue_back() {
    for (link, after) in [(12.5e6, 12.5e6), (25e6, 1e6)] {
        let mut sim = Sim::new(link, 20.0, 4 << 20, vec![sized()]);
        sim.run(600);
        assert!(sim.scale(0) >= 4, "scale {}", sim.scale(0));
        (sim.round, sim.link) = (0.2e-3, after);
        let (rates, _) = sim.run(3000);
        assert_eq!(sim.scale(0), 1, "at {after}");
        assert!(mean(&rates) >= 0.9 * after);
    }
}

/// A socket beside another sender on one queue (another program, or a
/// second hub's socket): each doubling wins the ep a larger share of the
/// queue, which tries take for a held rate. What the kernel's default
/// grants bounds it, so the other keeps about its half.
#[test]
fn beside_another_sender_no_more_than_the_default() {
    for (round_ms, other) in [(0.2, None), (5.0, sized())] {
        let link = 12.5e6;
        let mut sim = Sim::new(link, round_ms, 4 << 20, vec![sized(), other]);
        let mut late = [0.0; 2];
        for n in 0..3000 {
            let rates = sim.step();
            for s in &sim.sockets {
                assert!(s.asked <= DEFAULT / 2, "{} asked", s.asked);
            }
            if n >= 1000 {
                late[0] += rates[0] / 2000.0;
                late[1] += rates[1] / 2000.0;
            }
        }
        assert!(late[0] + late[1] >= 0.95 * link, "{late:?}");
        assert!(late[1] >= 0.4 * link, "{round_ms} ms: {late:?}");
    }
}

/// On a thin link a step holds a few of quinn's batches: tries measure
/// runs of steps, so a batch more or less is not taken for a rise.
#[test]
fn a_thin_link_keeps_its_short_queue() {
    for link in [300e3, 1e6] {
        let mut sim = Sim::new(link, 0.2, 4 << 20, vec![sized()]);
        sim.run(6000);
        assert_eq!(sim.scale(0), 1, "at {link}");
    }
}
