//! When a QUIC connection's peer was last heard: any packet it sent, as
//! quinn counts them. A peer that vanished without a word (an ep killed,
//! its host's power cut) leaves a QUIC connection looking open until its
//! idle timeout, where a TCP connection gets a reset from the peer's
//! kernel at once: the hub probes a connection gone quiet, and one that
//! stays silent gets no new player stream (they wait for it, or for the
//! ep's next login, as they wait over TLS).

use std::time::{Duration, Instant};

/// A connection quiet this long is probed: an ack-eliciting frame, which
/// a living peer acknowledges within its ACK delay (25 ms).
pub const PROBE_AFTER: Duration = Duration::from_secs(1);

/// A connection silent this long (probed twice or more, unanswered) gets
/// no new stream until it is heard again.
pub const SILENT: Duration = Duration::from_secs(2);

/// The count of datagrams received at the last look that saw it change.
pub struct Heard {
    last: std::sync::Mutex<(u64, Instant)>,
}

impl Default for Heard {
    fn default() -> Heard {
        Heard {
            last: std::sync::Mutex::new((0, Instant::now())),
        }
    }
}

impl Heard {
    /// How long the peer has been silent, given the count of datagrams
    /// received now: from the last look that saw the count change (so
    /// looks at least every `PROBE_AFTER / 4` keep it within that).
    pub fn silent_for(&self, received: u64, now: Instant) -> Duration {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if received != last.0 {
            *last = (received, now);
        }
        now.saturating_duration_since(last.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_from_the_last_look_that_saw_a_change() {
        let h = Heard::default();
        let t0 = Instant::now();
        assert_eq!(h.silent_for(5, t0), Duration::ZERO);
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(h.silent_for(5, t1), Duration::from_secs(3));
        assert_eq!(h.silent_for(6, t1), Duration::ZERO);
        let t2 = t1 + Duration::from_millis(500);
        assert_eq!(h.silent_for(6, t2), Duration::from_millis(500));
    }
}
