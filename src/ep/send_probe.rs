//! Whether the ep's QUIC send buffer holds its own rate back.
//!
//! The buffer is sized from the rate it lets through (`send_queue`), and a
//! sent datagram leaves it only once the device is done with it. Where the
//! device takes long to be done (Wi-Fi frees a frame once its aggregate is
//! acknowledged, and a busy medium stretches that to tens of ms), a small
//! buffer keeps the rate small and so stays small. So now and then, while
//! the ep sends steadily, the buffer is doubled for a few steps, the rest
//! of the sizing held still meanwhile: if the doubled steps carried a
//! quarter more than the steps at the usual size before and after them
//! (which agree), the buffer was the limit, and from then on it is sized
//! twice as large. A rate that rose or fell for another reason (a download
//! starting or ending) makes the steps around the try disagree: no verdict.
//!
//! Only steps after the socket has filled to a new size (or drained to it)
//! are measured: what quinn hands over while the socket fills is not what
//! the device sends, and would look like a rise.
//!
//! Where a larger size was kept, tries alternate with a quarter of it, and
//! half is kept if a quarter carried as much: halving on a half that holds
//! would come back up at the next doubling, so the size may stay up to
//! four times what the device needs. On a wired link a try costs a few
//! steps of a queue twice as long, so tries that find nothing come ever
//! further apart: the first after 3 s of sending, then after 6, 12, 24,
//! 48 and then every 60 s of it.
//!
//! What the probe may ask is bounded by the caller (`send_queue`: what the
//! kernel's default would have granted): where a larger buffer wins the
//! sender a larger share of a queue it shares with other senders (another
//! socket, another host on the same Wi-Fi), tries keep finding a rise, and
//! the bound keeps that to what the ep had without any sizing.

/// Below this rate (bytes/s) the ep is not sending steadily: no try.
const BUSY: f64 = 256e3;
/// Busy steps before the first try, and after a try found nothing the
/// first time; doubled after each such try.
const FIRST_GAP: u32 = 30;
/// At most this many busy steps between tries.
const MAX_GAP: u32 = 600;
/// Busy steps before the next try once a try changed the size: the next
/// doubling (or halving) may pay too.
const AFTER_A_CHANGE: u32 = 5;
/// Quinn hands the socket up to ten datagrams at once, so a step's rate
/// moves in such batches.
const BATCH: f64 = 14_520.0;
/// Steps are measured in runs of at least this many batches, so one batch
/// more or less is no rise or fall (at least one step: on a wired link a
/// try costs a queue twice as long meanwhile).
const RUN: f64 = 20.0;
/// At most this many steps in a run.
const MOST_MEASURED: usize = 5;
/// A doubled buffer that carried this much more was holding the rate.
const RISE: f64 = 1.25;
/// An upward try asks at least this much more than the usual size.
const LEAST_ROOM: f64 = 0.25;
/// A quartered buffer that carried at least this share lost nothing.
const KEPT_SHARE: f64 = 0.9;
/// The size is at most this many times what the rate alone asks.
const MAX_SCALE: u32 = 32;
/// The steps before and after a try agree within this share.
const AGREE: f64 = 0.2;
/// At most this many steps of a try are left out as filling or draining.
const MOST_UNMEASURED: usize = 10;

/// Which way a try goes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Way {
    Up,
    Down,
}

/// What the caller may ask, at the kept scale.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// The size asked at the kept scale.
    pub usual: usize,
    /// How many times `usual` an upward try may ask (at most two counts).
    pub up: f64,
    /// Whether the kept scale asks more than the rate alone would, so a
    /// downward try can tell anything.
    pub down: bool,
}

/// How a try began.
#[derive(Clone, Copy, Debug)]
struct Start {
    /// The rate before it.
    before: f64,
    /// Steps left out after each change of size.
    skip: usize,
    /// Steps measured under the try's size; after it, at least two.
    span: usize,
    /// How many times the usual size an upward try asks (twice, or less
    /// where the bound is near).
    grows: f64,
}

#[derive(Debug)]
enum Phase {
    Waiting,
    /// The size is changed `way`; `rates` seen under it so far, the first
    /// few of them while the socket filled or drained.
    Trying {
        way: Way,
        at: Start,
        rates: Vec<f64>,
    },
    /// Back at the size; `rates` seen since.
    Settling {
        way: Way,
        at: Start,
        tried: f64,
        rates: Vec<f64>,
    },
}

#[derive(Debug)]
pub struct Probe {
    /// Seconds between steps.
    step: f64,
    scale: u32,
    phase: Phase,
    /// Busy steps since the last try ended.
    busy: u32,
    gap: u32,
    /// The last steps' rates, the latest last.
    recent: [f64; MOST_MEASURED],
    next: Way,
}

impl Probe {
    /// A probe stepped every `step`.
    pub fn new(step: std::time::Duration) -> Probe {
        Probe {
            step: step.as_secs_f64(),
            scale: 1,
            phase: Phase::Waiting,
            busy: 0,
            gap: FIRST_GAP,
            recent: [0.0; MOST_MEASURED],
            next: Way::Up,
        }
    }
}

fn mean(rates: &[f64]) -> f64 {
    rates.iter().sum::<f64>() / rates.len().max(1) as f64
}

/// Steps a try leaves out after each change of size, the socket holding
/// `usual` bytes asked at `rate`: the kernel grants twice the asked, and
/// wakes a blocked sender only once the socket holds half of what it
/// grants, so going from twice the usual back to it drains about three
/// times the usual, at the device's rate (at least the rate before). A
/// quarter's drain is less; filling takes quinn a moment.
fn unmeasured(usual: usize, rate: f64, step: f64) -> usize {
    let secs = 3.0 * usual as f64 / rate.max(BUSY);
    ((secs / step).ceil() as usize).clamp(1, MOST_UNMEASURED)
}

/// Steps measured under a try's size at `rate`: a run's worth.
fn measured(rate: f64, step: f64) -> usize {
    ((RUN * BATCH / (rate.max(BUSY) * step)).ceil() as usize).clamp(1, MOST_MEASURED)
}

impl Probe {
    /// How many times what the rate alone asks the buffer holds from now
    /// on (kept by earlier tries).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// Whether a try is under way: the rest of the sizing holds still, so
    /// the steps after it are at the size before it.
    pub fn trying(&self) -> bool {
        !matches!(self.phase, Phase::Waiting)
    }

    /// The socket was replaced: it holds nothing, so a try under way
    /// would measure its filling.
    pub fn moved(&mut self) {
        self.phase = Phase::Waiting;
        self.busy = 0;
    }

    /// Takes the last step's send rate (bytes/s) and the sizes the caller
    /// may ask; returns how many times what the rate alone asks to size
    /// the buffer for the next step.
    pub fn step(&mut self, rate: f64, sizes: Sizes) -> f64 {
        self.recent.rotate_left(1);
        self.recent[MOST_MEASURED - 1] = rate;
        let phase = std::mem::replace(&mut self.phase, Phase::Waiting);
        self.phase = match phase {
            Phase::Waiting => self.wait(rate, sizes),
            Phase::Trying { at, ref rates, .. } | Phase::Settling { at, ref rates, .. }
                if rates.len() >= at.skip && rate < BUSY =>
            {
                // The sender slowed: too little to judge by. Not at once
                // again (the gap grows), but no verdict either way.
                self.busy = 0;
                self.gap = (self.gap * 2).clamp(FIRST_GAP, MAX_GAP);
                Phase::Waiting
            }
            Phase::Trying { way, at, mut rates } => {
                rates.push(rate);
                if rates.len() < at.skip + at.span {
                    Phase::Trying { way, at, rates }
                } else {
                    Phase::Settling {
                        way,
                        at,
                        tried: mean(&rates[at.skip..]),
                        rates: Vec::new(),
                    }
                }
            }
            Phase::Settling {
                way,
                at,
                tried,
                mut rates,
            } => {
                rates.push(rate);
                if rates.len() < at.skip + at.span.max(2) {
                    Phase::Settling {
                        way,
                        at,
                        tried,
                        rates,
                    }
                } else {
                    self.judge(way, at, tried, mean(&rates[at.skip..]));
                    Phase::Waiting
                }
            }
        };
        let scale = f64::from(self.scale);
        match &self.phase {
            Phase::Trying {
                way: Way::Up, at, ..
            } => scale * at.grows,
            Phase::Trying { way: Way::Down, .. } => scale / 4.0,
            _ => scale,
        }
    }

    fn wait(&mut self, rate: f64, sizes: Sizes) -> Phase {
        if rate < BUSY {
            return Phase::Waiting;
        }
        self.busy = self.busy.saturating_add(1);
        let span = measured(rate, self.step);
        let run = &self.recent[MOST_MEASURED - span.max(2)..];
        if self.busy < self.gap || run.iter().any(|r| *r < BUSY) {
            return Phase::Waiting;
        }
        let up = sizes.up >= 1.0 + LEAST_ROOM && self.scale < MAX_SCALE;
        let way = match (up, sizes.down) {
            (false, false) => return Phase::Waiting,
            (true, false) => Way::Up,
            (false, true) => Way::Down,
            (true, true) => self.next,
        };
        let before = mean(run);
        let at = Start {
            before,
            skip: unmeasured(sizes.usual, before, self.step),
            span,
            grows: sizes.up.min(2.0),
        };
        Phase::Trying {
            way,
            at,
            rates: Vec::new(),
        }
    }

    /// `tried`: the mean rate under the changed size; `at.before`/`after`:
    /// at the usual size on either side of it.
    fn judge(&mut self, way: Way, at: Start, tried: f64, after: f64) {
        self.busy = 0;
        let before = at.before;
        if (after - before).abs() > AGREE * before {
            // The rate moved for another reason: no verdict, and the next
            // try a little later (a rate that keeps moving would otherwise
            // have a try every few seconds).
            self.gap = (self.gap * 3 / 2).clamp(FIRST_GAP, MAX_GAP);
            return;
        }
        let usual = before.max(after);
        // A try that could not double (the bound near) looks for less.
        let rise = 1.0 + (RISE - 1.0) * (at.grows - 1.0);
        let changed = match way {
            Way::Up => tried >= rise * usual,
            Way::Down => tried >= KEPT_SHARE * usual,
        };
        if changed {
            self.scale = match way {
                Way::Up => self.scale * 2,
                Way::Down => self.scale / 2,
            };
            self.gap = AFTER_A_CHANGE;
            self.next = way;
        } else {
            self.gap = if self.gap < FIRST_GAP {
                FIRST_GAP
            } else {
                (self.gap * 2).min(MAX_GAP)
            };
            self.next = match way {
                Way::Up => Way::Down,
                Way::Down => Way::Up,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Megabytes a second: rates at which a step holds a run's batches and
    /// a small socket fills and drains within a step.
    const M: f64 = 4e6;

    fn probe() -> Probe {
        Probe::new(std::time::Duration::from_millis(100))
    }

    fn sizes(up: f64, down: bool) -> Sizes {
        Sizes {
            usual: 16_384,
            up,
            down,
        }
    }

    /// A step where the caller may double and the kept scale counts.
    fn st(p: &mut Probe, rate: f64) -> f64 {
        let down = p.scale > 1;
        p.step(rate, sizes(2.0, down))
    }

    /// Steps until a try starts, feeding `rate`; the multiplier it asks.
    fn until_a_try(p: &mut Probe, rate: f64) -> (u32, f64) {
        for n in 1..10_000 {
            let m = st(p, rate);
            if m != f64::from(p.scale) {
                return (n, m);
            }
        }
        panic!("no try");
    }

    /// Feeds a try's steps: `tried` under its size, `after` once back (a
    /// step left out each time, one measured, then two).
    fn a_try(p: &mut Probe, tried: f64, after: f64) {
        for r in [tried, tried, after, after, after] {
            assert!(p.trying());
            st(p, r);
        }
        assert!(!p.trying());
    }

    #[test]
    fn the_first_try_doubles_after_three_seconds_of_sending() {
        let mut p = probe();
        let (n, m) = until_a_try(&mut p, M);
        assert_eq!((n, m), (FIRST_GAP, 2.0));
        assert!(p.trying());
    }

    #[test]
    fn no_try_while_idle_or_slow() {
        let mut p = probe();
        for _ in 0..10_000 {
            assert_eq!(st(&mut p, 100e3), 1.0);
        }
    }

    #[test]
    fn a_rise_under_the_doubled_buffer_alone_is_kept() {
        let mut p = probe();
        until_a_try(&mut p, M);
        a_try(&mut p, 2.0 * M, M);
        assert_eq!(p.scale(), 2);
        // The next try comes soon and doubles again.
        let (n, m) = until_a_try(&mut p, M);
        assert_eq!((n, m), (AFTER_A_CHANGE, 4.0));
    }

    /// The first step under a new size is what the socket's filling took,
    /// not what the device sent: measured, it would be a rise.
    #[test]
    fn the_step_that_fills_the_socket_is_not_measured() {
        let mut p = probe();
        until_a_try(&mut p, M);
        for r in [3.0 * M, M, M, M, M] {
            st(&mut p, r);
        }
        assert!(!p.trying());
        assert_eq!(p.scale(), 1);
    }

    #[test]
    fn no_verdict_where_the_rate_moved_for_another_reason() {
        let mut p = probe();
        until_a_try(&mut p, M);
        // A download began with the try: after the try the rate is half
        // as high again as before, which with the rise would keep it.
        a_try(&mut p, 2.0 * M, 1.5 * M);
        assert_eq!(p.scale(), 1);
        // The next try a little later.
        let (n, _) = until_a_try(&mut p, 1.5 * M);
        assert_eq!(n, FIRST_GAP * 3 / 2);
    }

    /// At a slow rate a step holds a few of quinn's batches; one more is
    /// no rise: the try measures a run of steps.
    #[test]
    fn a_batch_more_is_no_rise() {
        let mut p = probe();
        let slow = 300e3;
        until_a_try(&mut p, slow);
        let span = measured(slow, 0.1);
        assert_eq!(span, MOST_MEASURED);
        let skip = unmeasured(16_384, slow, 0.1);
        // The steps left out, then the run, one with a batch more.
        for _ in 0..skip {
            st(&mut p, slow);
        }
        st(&mut p, slow + BATCH / 0.1);
        for _ in 1..span + skip + span {
            st(&mut p, slow);
        }
        assert!(!p.trying());
        assert_eq!(p.scale(), 1);
    }

    #[test]
    fn tries_that_find_nothing_come_ever_further_apart() {
        let mut p = probe();
        let mut gaps = Vec::new();
        for _ in 0..8 {
            let (n, _) = until_a_try(&mut p, M);
            gaps.push(n);
            a_try(&mut p, M, M);
        }
        assert_eq!(p.scale(), 1);
        assert_eq!(gaps, [30, 60, 120, 240, 480, 600, 600, 600]);
    }

    #[test]
    fn a_try_the_sender_slowed_in_finds_nothing_and_backs_off() {
        let mut p = probe();
        until_a_try(&mut p, M);
        // The step that fills is not looked at; the next is.
        st(&mut p, M);
        assert_eq!(st(&mut p, 0.0), 1.0);
        assert!(!p.trying());
        let (n, _) = until_a_try(&mut p, 3.0 * M);
        assert_eq!(n, 2 * FIRST_GAP);
        assert_eq!(p.scale(), 1);
    }

    #[test]
    fn a_size_a_quarter_of_carries_as_much_is_halved_and_others_kept() {
        let mut p = Probe {
            scale: 4,
            next: Way::Down,
            ..probe()
        };
        let (_, m) = until_a_try(&mut p, M);
        assert_eq!(m, 1.0);
        a_try(&mut p, M, M);
        assert_eq!(p.scale(), 2);
        let (_, m) = until_a_try(&mut p, M);
        assert_eq!(m, 0.5);
        a_try(&mut p, 0.5 * M, M);
        assert_eq!(p.scale(), 2);
        // Then it tries up again.
        let (_, m) = until_a_try(&mut p, M);
        assert_eq!(m, 4.0);
    }

    #[test]
    fn at_the_most_it_tries_down() {
        let mut p = Probe {
            scale: MAX_SCALE,
            next: Way::Up,
            ..probe()
        };
        let (_, m) = until_a_try(&mut p, M);
        assert_eq!(m, f64::from(MAX_SCALE) / 4.0);
    }

    #[test]
    fn only_tries_where_it_can_tell() {
        let mut p = probe();
        // No room to double, and no kept scale that counts: no try.
        for _ in 0..10_000 {
            assert_eq!(p.step(M, sizes(1.0, false)), 1.0);
        }
        p.scale = 4;
        for _ in 0..10_000 {
            assert_eq!(p.step(M, sizes(1.0, false)), 4.0);
        }
        // The kept scale counts: only down.
        let m = (0..100)
            .map(|_| p.step(M, sizes(1.0, true)))
            .find(|m| *m != 4.0);
        assert_eq!(m, Some(1.0));
    }

    /// A try leaves out the steps its socket takes to fill or drain: more
    /// where the usual size holds much of a step's bytes.
    #[test]
    fn the_steps_left_out_follow_the_bytes_moved() {
        assert_eq!(unmeasured(16_384, 1e6, 0.1), 1);
        assert_eq!(unmeasured(50_000, 12.5e6, 0.1), 1);
        assert_eq!(unmeasured(400_000, 2e6, 0.1), 6);
        assert_eq!(unmeasured(4 << 20, 1e6, 0.1), MOST_UNMEASURED);
    }

    #[test]
    fn a_replaced_socket_ends_a_try_unjudged() {
        let mut p = probe();
        until_a_try(&mut p, M);
        p.moved();
        assert!(!p.trying());
        assert_eq!(st(&mut p, 5.0 * M), 1.0);
        assert_eq!(p.scale(), 1);
    }
}
