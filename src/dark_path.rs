//! A TCP connection's path that stopped answering, found by looking at
//! the kernel's `TCP_INFO` now and then (the hub's players table and the
//! ep's table of channels, every few seconds): what home's address
//! changing, or a router losing its mapping, does to the connections open
//! across it. The kernel itself would retry for ~15 minutes.
//!
//! A look finds a connection *waiting* when something it sent goes
//! unanswered past a retransmission timeout: data in flight sent again,
//! or a probe (zero-window or keepalive) not yet answered. A live peer
//! answers within a round trip even when it reads nothing (a zero
//! window's probes are answered), so waiting is brief on a live path,
//! except where one segment or probe was lost: then the kernel waits a
//! whole backed-off interval (up to two minutes for a probe) before it
//! tries again. So a path is dark only once the looks have seen, with no
//! acknowledgement at all in between: the connection waiting, the kernel
//! then trying again (its count of retries grew), that try too left
//! unanswered until a later look, and `after` passed since waiting was
//! first seen. The time is the looks' own, not the kernel's "last
//! acknowledgement" age, which counts quiet spells (and, on a connection
//! that only receives, everything since it last sent).

use std::{os::fd::RawFd, sync::Mutex, time::Duration};

/// What the looks so far have seen of one connection.
#[derive(Default)]
pub struct Dark(Mutex<Seen>);

#[derive(Default, Clone, Copy, Debug, PartialEq)]
struct Seen {
    /// Since when (ms on the looks' clock; 0: not waiting) it waits.
    since: u64,
    /// When it was last acknowledged, as of the first look that saw it
    /// waiting (ms on the looks' clock).
    acked_at: u64,
    /// The kernel's tries (retransmissions and probes) then.
    tries: u16,
    /// A later look saw more tries, still unanswered.
    retried: bool,
}

/// What one look read: how long since the last acknowledgement, and the
/// kernel's tries so far, while the connection waits.
#[derive(Clone, Copy)]
struct Waiting {
    age: u64,
    tries: u16,
}

/// How far apart two readings of the same last acknowledgement may fall
/// (the kernel counts in jiffies, the looks read a clock of their own).
/// An acknowledgement in between moves it by at least the earlier age,
/// which is a retransmission timeout or more (200 ms at least).
const SAME_ACK_MS: u64 = 100;

impl Dark {
    /// Looks at `fd` now: whether its path is dark. `fd` must be an open
    /// descriptor the caller keeps open for the call.
    pub fn look(&self, fd: RawFd, after: Duration) -> bool {
        let now = clock_ms();
        let waiting = crate::tcp_info::unanswered(fd).map(|(age, tries)| Waiting {
            age: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            tries,
        });
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        step(&mut seen, now, waiting, after)
    }
}

/// One look's judgement, updating what was seen.
fn step(seen: &mut Seen, now: u64, waiting: Option<Waiting>, after: Duration) -> bool {
    let Some(w) = waiting else {
        *seen = Seen::default();
        return false;
    };
    let acked_at = now.saturating_sub(w.age);
    let same_ack = seen.since != 0 && acked_at.abs_diff(seen.acked_at) <= SAME_ACK_MS;
    if !same_ack {
        *seen = Seen {
            since: now.max(1),
            acked_at,
            tries: w.tries,
            retried: false,
        };
        return false;
    }
    let waited = now.saturating_sub(seen.since);
    if seen.retried && u128::from(waited) >= after.as_millis() {
        return true;
    }
    // Judged from the next look on: this try may be answered any moment.
    seen.retried |= w.tries > seen.tries;
    false
}

/// Milliseconds on a monotonic clock, from the first call (so 0 is never
/// a look's time but "not waiting").
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(15);

    /// Looks every 5 s from `t0` (ms), each given what the kernel shows
    /// then; the looks that judged the path dark.
    fn looks(t0: u64, shown: &[Option<(u64, u16)>]) -> Vec<usize> {
        let mut seen = Seen::default();
        let mut dark = Vec::new();
        for (i, s) in shown.iter().enumerate() {
            let w = s.map(|(age, tries)| Waiting { age, tries });
            if step(&mut seen, t0 + 5_000 * i as u64, w, AFTER) {
                dark.push(i);
            }
        }
        dark
    }

    #[test]
    fn a_dead_path_is_dark_once_its_retries_went_unanswered_for_the_wait() {
        // Data sent into a dead path at t0 - 1 s: retransmissions at 0.2,
        // 0.6, 1.4, 3.0, 6.2, 12.6 s... ; nothing acknowledged since.
        let t0 = 100_000;
        let shown: Vec<_> = [1u16, 4, 5, 6, 6]
            .iter()
            .enumerate()
            .map(|(i, &tries)| Some((1_000 + 5_000 * i as u64, tries)))
            .collect();
        // Waiting seen at look 0; 15 s later (look 3) with a retry seen
        // unanswered: dark.
        assert_eq!(looks(t0, &shown), vec![3, 4]);
    }

    #[test]
    fn a_lost_keepalive_answered_on_its_retry_is_not_dark() {
        // Idle 15 s, a probe lost; the kernel's second probe 5 s later is
        // answered a round trip after it went out. Looks at the worst
        // moments: waiting, then the retry seen just before its answer.
        let t0 = 50_000;
        let shown = [Some((15_100, 1)), Some((20_099, 2)), None, None];
        assert!(looks(t0, &shown).is_empty());
    }

    #[test]
    fn a_lost_zero_window_probe_is_not_dark_however_long_the_kernel_waits() {
        // A player stopped reading a minute ago; one probe lost, the next
        // due two minutes later: waiting all along, no new try.
        let t0 = 200_000;
        let shown: Vec<_> = (0..24).map(|i| Some((40_000 + 5_000 * i, 1))).collect();
        assert!(looks(t0, &shown).is_empty());
    }

    #[test]
    fn a_connection_that_only_receives_is_judged_from_when_it_waits() {
        // The last acknowledgement an hour old (it only received), then a
        // keystroke into a 12 s blackout: retries at 0.2, 0.6, 1.4, 3, 6.2
        // s, then answered. Not dark: it waited less than `after`.
        let t0 = 10_000_000;
        let shown = [
            Some((3_600_000, 1)),
            Some((3_605_000, 5)),
            Some((3_610_000, 5)),
            None,
        ];
        assert!(looks(t0, &shown).is_empty());
    }

    #[test]
    fn an_acknowledgement_between_looks_starts_the_wait_again() {
        let t0 = 1_000_000;
        // Waiting, retried, then acknowledged just after a look and
        // waiting again: the clock starts again from there.
        let shown = [
            Some((1_000, 1)),
            Some((6_000, 2)),
            Some((4_000, 3)),
            Some((9_000, 4)),
            Some((14_000, 5)),
            Some((19_000, 6)),
        ];
        assert_eq!(looks(t0, &shown), vec![5]);
    }
}
