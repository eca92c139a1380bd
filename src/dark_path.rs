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
//! except where a segment or probe was lost, or the path went silent for
//! a while and came back: then the kernel waits a whole backed-off
//! interval (up to two minutes) before it tries again. So a path is dark
//! only once a try the kernel sent after the wait had lasted `after` has
//! itself gone unanswered until a later look, with nothing at all
//! answered in between (for a zero window's probes, the third). The time
//! is the looks' own, not the kernel's "last answer" age, which counts
//! quiet spells too. On a dead path that is within about twice `after`
//! and two looks with data in flight; behind a zero window, several probe
//! intervals (minutes).

use std::{os::fd::RawFd, sync::Mutex, time::Duration};

/// What the looks so far have seen of one connection.
#[derive(Default)]
pub struct Dark(Mutex<Seen>);

#[derive(Default, Clone, Copy, Debug, PartialEq)]
struct Seen {
    /// Since when (ms on the looks' clock; 0: not waiting) it waits.
    since: u64,
    /// When it was last answered, as of the first look that saw it
    /// waiting (ms on the looks' clock).
    acked_at: u64,
    /// The kernel's tries (retransmissions and probes) then, and at the
    /// last look, and that look's time.
    first_tries: u16,
    tries: u16,
    last_look: u64,
    /// The latest try the looks saw: sent after `sent_after` (the look
    /// before the one that saw it; 0: none yet), the count then.
    sent_after: u64,
    tries_then: u16,
}

/// What one look read: how long since the peer last answered, the
/// kernel's tries so far, and whether it only probes (no data in flight).
#[derive(Clone, Copy)]
struct Waiting {
    age: u64,
    tries: u16,
    probing: bool,
}

/// How far apart two readings of the same last answer may fall (the
/// kernel counts in jiffies, the looks read a clock of their own). An
/// answer in between moves it by at least the earlier age, which is a
/// retransmission timeout or more (200 ms at least).
const SAME_ACK_MS: u64 = 100;

impl Dark {
    /// Looks at `fd` now: whether its path is dark. `fd` must be an open
    /// descriptor the caller keeps open for the call.
    pub fn look(&self, fd: RawFd, after: Duration) -> bool {
        let now = clock_ms();
        let waiting = crate::tcp_info::unanswered(fd).map(|u| Waiting {
            age: u64::try_from(u.age.as_millis()).unwrap_or(u64::MAX),
            tries: u.tries,
            probing: u.probing,
        });
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        step(&mut seen, now, waiting, after)
    }
}

/// One look's judgement, updating what was seen. Dark: a try the kernel
/// sent once the wait had lasted `after`, seen by an earlier look, still
/// unanswered now (a try sent early in the wait says nothing of a path
/// that has come back since: the kernel's next one may be a minute off);
/// while it only probes a zero window, the third probe unanswered at
/// least (probes stay minutes apart on a live path, so two lost in a row
/// would otherwise do).
fn step(seen: &mut Seen, now: u64, waiting: Option<Waiting>, after: Duration) -> bool {
    let Some(w) = waiting else {
        *seen = Seen::default();
        return false;
    };
    let now = now.max(1);
    let acked_at = now.saturating_sub(w.age);
    let same_ack = seen.since != 0 && acked_at.abs_diff(seen.acked_at) <= SAME_ACK_MS;
    if !same_ack {
        *seen = Seen {
            since: now,
            acked_at,
            first_tries: w.tries,
            tries: w.tries,
            last_look: now,
            ..Seen::default()
        };
        return false;
    }
    let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    let late = seen.sent_after != 0 && seen.sent_after >= seen.since.saturating_add(after);
    let enough = !w.probing || seen.tries_then >= seen.first_tries.saturating_add(2);
    if w.tries > seen.tries {
        seen.sent_after = seen.last_look;
        seen.tries_then = w.tries;
    }
    seen.tries = w.tries;
    seen.last_look = now;
    late && enough
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
    /// then (age of the last answer, tries, only probing); the looks that
    /// judged the path dark.
    fn looks(t0: u64, shown: &[Option<(u64, u16, bool)>]) -> Vec<usize> {
        let mut seen = Seen::default();
        let mut dark = Vec::new();
        for (i, s) in shown.iter().enumerate() {
            let w = s.map(|(age, tries, probing)| Waiting {
                age,
                tries,
                probing,
            });
            if step(&mut seen, t0 + 5_000 * i as u64, w, AFTER) {
                dark.push(i);
            }
        }
        dark
    }

    /// Data sent at `sent` (ms before the first look) into a path silent
    /// until `back` (ms after it, or never), retransmission timeout 200
    /// ms doubling: what `n` looks see.
    fn resending(sent: u64, back: Option<u64>, n: usize) -> Vec<Option<(u64, u16, bool)>> {
        let tries_at = |t: u64| {
            let mut at = 200;
            let mut tries = 0u16;
            while at <= t + sent {
                tries += 1;
                at = at * 2 + 200;
            }
            tries
        };
        (0..n as u64)
            .map(|i| {
                let t = 5_000 * i;
                // The path back: the next try is answered.
                let answered = back.is_some_and(|b| {
                    let mut at = 200;
                    while at < b + sent {
                        at = at * 2 + 200;
                    }
                    t + sent >= at
                });
                let tries = tries_at(t);
                (!answered && tries > 0).then_some((t + sent, tries, false))
            })
            .collect()
    }

    #[test]
    fn a_dead_path_is_dark_once_a_late_try_goes_unanswered() {
        // Tries at 0.2, 0.6, 1.4, 3.0, 6.2, 12.6, 25.4 s after sending.
        let shown = resending(1_000, None, 9);
        let dark = looks(100_000, &shown);
        assert_eq!(dark.first(), Some(&6), "{shown:?}");
    }

    #[test]
    fn a_blackout_shorter_than_the_wait_is_not_dark_though_the_next_try_is_late() {
        // Back after 13 s; the kernel's next try, at 25.4 s, is answered.
        for sent in [300, 1_000, 2_500, 4_000] {
            let shown = resending(sent, Some(13_000), 8);
            assert!(looks(50_000, &shown).is_empty(), "{shown:?}");
        }
    }

    #[test]
    fn a_lost_keepalive_answered_on_its_retry_is_not_dark() {
        // Idle 15 s, a probe lost; the kernel's second probe 5 s later is
        // answered a round trip after it went out. Looks at the worst
        // moments: waiting, then the retry seen just before its answer.
        let shown = [Some((15_100, 1, true)), Some((20_099, 2, true)), None, None];
        assert!(looks(50_000, &shown).is_empty());
    }

    #[test]
    fn lost_zero_window_probes_are_not_dark_until_a_third_goes_unanswered() {
        // A player stopped reading a while ago; probes two minutes apart.
        // One lost, then the next lost too: still a live path maybe.
        let mut shown: Vec<_> = (0..24)
            .map(|i| Some((40_000 + 5_000 * i, 1, true)))
            .collect();
        shown.extend((24..48).map(|i| Some((40_000 + 5_000 * i, 2, true))));
        assert!(looks(200_000, &shown).is_empty());
        // The third unanswered too: dark at the next look.
        shown.extend((48..50).map(|i| Some((40_000 + 5_000 * i, 3, true))));
        assert_eq!(looks(200_000, &shown), vec![49]);
    }

    #[test]
    fn a_connection_that_only_receives_is_judged_from_when_it_waits() {
        // Its last answer an hour old (it only received, on the fast
        // path), then a keystroke into a 12 s blackout.
        let t0 = 10_000_000;
        let shown = [
            Some((3_600_000, 1, false)),
            Some((3_605_000, 5, false)),
            Some((3_610_000, 5, false)),
            None,
        ];
        assert!(looks(t0, &shown).is_empty());
    }

    #[test]
    fn an_answer_between_looks_starts_the_wait_again() {
        // Waiting and retrying, then answered just after look 2 and
        // waiting again: judged from look 2 on.
        let mut shown = vec![Some((1_000, 1, false)), Some((6_000, 2, false))];
        shown.extend(resending(4_000, None, 9));
        let dark = looks(1_000_000, &shown);
        let alone = looks(0, &resending(4_000, None, 9));
        assert_eq!(dark, alone.iter().map(|i| i + 2).collect::<Vec<_>>());
        assert!(!dark.is_empty());
    }
}
