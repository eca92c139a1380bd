//! When a QUIC connection's peer was last heard: the frames a living peer
//! sends (ACK, PING, STREAM, DATAGRAM, flow credit), as quinn counts them
//! once decrypted (a forged packet counts for nothing). A peer that vanished without a word (an ep killed,
//! its host's power cut) leaves a QUIC connection looking open until its
//! idle timeout, where a TCP connection gets a reset from the peer's
//! kernel at once: the hub probes a connection gone quiet, and one that
//! stays silent gets no new player stream (they wait for it, or for the
//! ep's next login, as they wait over TLS).

use std::time::{Duration, Instant};

/// A connection quiet this long is probed: an ack-eliciting frame, which
/// a living peer acknowledges within its ACK delay (25 ms). An idle ep
/// is otherwise heard every 5 s (its heartbeat, QUIC's keep-alive): the
/// probes add a small packet each way about every 1.5 s while it idles.
pub const PROBE_AFTER: Duration = Duration::from_millis(1500);

/// How often the hub looks: silences are known within this.
pub const LOOK_EVERY: Duration = Duration::from_millis(500);

/// A connection silent this long, with a round trip of `rtt`, gets no new
/// stream until it is heard again: probed and unanswered for three round
/// trips and the peer's ACK delay, and a second at least (a path slower
/// than that, a satellite hop or a home link filled by another upload,
/// must not look dead between an idle ep's probes).
pub fn silent_after(rtt: Duration) -> Duration {
    // At most 10 s: a peer can make its round trip look long (its ACK
    // delay is its to say).
    let answer = rtt
        .saturating_mul(3)
        .saturating_add(Duration::from_millis(25));
    PROBE_AFTER + answer.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// The count of frames received at the last look that saw it change.
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
    /// How long the peer has been silent, given the count of frames
    /// received now: from the last look that saw the count change (so
    /// looks every `LOOK_EVERY` keep it within that).
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
    fn a_slow_path_is_given_three_round_trips() {
        assert_eq!(
            silent_after(Duration::from_millis(20)),
            Duration::from_millis(2500)
        );
        assert_eq!(
            silent_after(Duration::from_secs(1)),
            Duration::from_millis(4525)
        );
        assert_eq!(
            silent_after(Duration::from_secs(60)),
            Duration::from_millis(11_500)
        );
    }

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
