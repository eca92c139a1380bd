//! Reconnect delays: exponential, capped, with jitter so many eps cut off at
//! once do not return in lockstep.

use std::time::Duration;

pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// New bounds (a reload changed `backoff_min`/`backoff_max`): the next
    /// delay kept within them.
    pub fn bound(&mut self, min: Duration, max: Duration) {
        (self.min, self.max) = (min, max.max(min));
        self.next = self.next.clamp(self.min, self.max);
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay before the next attempt, somewhere in [d/2, d]. A refusal
    /// that retrying cannot fix (bad token, unknown CA) jumps to the cap.
    pub fn next(&mut self, permanent: bool) -> Duration {
        if permanent {
            self.next = self.max;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(unit_random())
    }
}

fn unit_random() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b) as f64 / u32::MAX as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_bounds_apply_to_the_next_delay() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
        assert!(b.next(true) >= Duration::from_secs(1800));
        // backoff_max lowered by a reload: the next wait is within it.
        b.bound(Duration::from_millis(100), Duration::from_secs(2));
        assert!(b.next(false) <= Duration::from_secs(2));
        b.bound(Duration::from_secs(5), Duration::from_secs(1));
        assert!(b.next(false) >= Duration::from_millis(2500), "min wins");
    }

    #[test]
    fn grows_to_the_cap_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut b = Backoff::new(min, max);
        let first = b.next(false);
        assert!(first >= min / 2 && first <= min);
        for _ in 0..10 {
            assert!(b.next(false) <= max);
        }
        assert!(b.next(false) >= max / 2);
        b.reset();
        assert!(b.next(false) <= min);
        assert!(b.next(true) >= max / 2);
    }
}
