//! What the ep's QUIC socket may hold: a few milliseconds of what it
//! sends, as TCP's small-queue limit does for a TLS channel.
//!
//! Where home's uplink is the narrowest link, whatever the socket may hold
//! waits in the uplink's queue ahead of every player's next packet: with
//! the kernel's 208 KiB a game reply beside a download waited ~19 ms on a
//! 100 Mbit/s uplink (BENCHMARKS.md, "The ep's QUIC send queue"). QUIC
//! never sees a loss there (the socket blocks before the queue overflows),
//! so its window does not shrink either. Held small, the queue stays in
//! quinn, which builds packets as the socket takes them and sends the
//! streams of one priority round-robin, so a reply waits behind what the
//! socket holds and at most one batch quinn has built. Only a queue on
//! the ep's own machine (its qdisc, its network card or Wi-Fi) is
//! shortened: behind a home router whose uplink is narrower than the
//! ep's link, the queue is the router's.
//!
//! A sent datagram leaves the buffer only once the device is done with it,
//! so the buffer also bounds the rate: at most what it holds per device
//! round (wired, a fraction of a millisecond; Wi-Fi, which frees a frame
//! once its aggregate is acknowledged, a few). The buffer follows the send
//! rate, four milliseconds of it, as Linux gives TCP over Wi-Fi: while a
//! device round is shorter than what the kernel then grants (twice the
//! asked, ~7 ms of data), a buffer that holds the rate back lets through
//! more than it is sized for, and grows step by step.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How often the send rate is read.
const EVERY: Duration = Duration::from_millis(100);
/// Asked of the kernel at least (it grants twice): two GSO batches of ten
/// datagrams, so the device is not idle while quinn builds the next.
const FLOOR: usize = 16 * 1024;
/// Asked at most (the kernel also caps it at `net.core.wmem_max`).
const CEILING: usize = 4 << 20;
/// Asked: the send rate over this share of a second (4 ms).
const HOLD_PER_SEC: f64 = 250.0;

/// The send buffer to ask for at `rate` bytes/s, given what was asked the
/// step before. A pause halves it step by step, so a stream that stalls
/// for a moment does not start again at the floor.
pub fn buffer_for(rate: f64, before: usize) -> usize {
    let want = (rate / HOLD_PER_SEC) as usize;
    want.max(before / 2).clamp(FLOOR, CEILING)
}

/// One endpoint's socket and the send rates of its connections (a new
/// login's beside an old one's that still drains its players).
pub struct Queue {
    socket: Arc<socket2::Socket>,
    rates: HashMap<usize, f64>,
    asked: usize,
    /// When the socket was last sized: with several connections, once a
    /// step, so a pause halves the buffer once a step, not once each.
    sized_at: Option<Instant>,
}

pub type Shared = Arc<Mutex<Queue>>;

/// The queue of the endpoint built on `socket` (a handle of its own: the
/// endpoint takes the socket).
pub fn new(socket: &std::net::UdpSocket) -> std::io::Result<Shared> {
    Ok(Arc::new(Mutex::new(Queue {
        socket: Arc::new(socket.try_clone()?.into()),
        rates: HashMap::new(),
        asked: 0,
        sized_at: None,
    })))
}

/// The endpoint moved (a rebind) to the socket `handle` is a handle of:
/// sized at the next step.
pub fn moved(queue: &Shared, handle: std::net::UdpSocket) {
    lock(queue).socket = Arc::new(handle.into());
}

fn lock(q: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts `conn`'s send rate in its endpoint's `queue` until it ends,
/// sizing the socket each step to all of its connections together.
pub(super) async fn follow(conn: quinn::Connection, queue: Shared) {
    let id = conn.stable_id();
    let mut last = (Instant::now(), conn.stats().udp_tx.bytes);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = conn.closed() => break,
        }
        let now = (Instant::now(), conn.stats().udp_tx.bytes);
        let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
        let rate = now.1.saturating_sub(last.1) as f64 / secs;
        last = now;
        let mut q = lock(&queue);
        q.rates.insert(id, rate);
        if q.sized_at
            .is_some_and(|t| now.0.duration_since(t) < EVERY * 9 / 10)
        {
            continue;
        }
        q.sized_at = Some(now.0);
        let want = buffer_for(q.rates.values().sum(), q.asked);
        q.asked = want;
        // Each step, not only on a change: a rebound socket starts at the
        // kernel's default.
        if let Err(e) = q.socket.set_send_buffer_size(want) {
            tracing::debug!("could not size the QUIC socket's send buffer: {e}");
        }
    }
    lock(&queue).rates.remove(&id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_asks_the_floor() {
        assert_eq!(buffer_for(0.0, 0), FLOOR);
    }

    #[test]
    fn four_milliseconds_of_the_rate() {
        // 100 Mbit/s: 12.5 MB/s; four milliseconds are 50 kB.
        assert_eq!(buffer_for(12_500_000.0, FLOOR), 50_000);
        // A fast link is capped.
        assert_eq!(buffer_for(2e9, FLOOR), CEILING);
    }

    #[test]
    fn a_pause_halves_it_step_by_step() {
        let b = buffer_for(25_000_000.0, FLOOR);
        assert_eq!(b, 100_000);
        assert_eq!(buffer_for(0.0, b), 50_000);
        assert_eq!(buffer_for(0.0, 50_000), 25_000);
        let mut b = 25_000;
        for _ in 0..10 {
            b = buffer_for(0.0, b);
        }
        assert_eq!(b, FLOOR);
    }

    /// A buffer that holds the rate back lets through what the kernel
    /// grants (twice the asked, ~90 % of it data) per device round: with
    /// rounds up to ~7 ms it grows from the floor to what the link takes.
    #[test]
    fn a_buffer_that_holds_the_rate_back_grows() {
        let link = 50e6; // 400 Mbit/s
        for round_ms in [0.2, 1.0, 3.0, 5.0] {
            let mut asked = FLOOR;
            let mut steps = 0;
            loop {
                let held = 2.0 * asked as f64 * 0.9 + 14_500.0;
                let rate = (held / (round_ms / 1000.0)).min(link);
                let next = buffer_for(rate, asked);
                steps += 1;
                if rate >= link || steps > 50 {
                    break;
                }
                assert!(next > asked, "stuck at {asked} with {round_ms} ms rounds");
                asked = next;
            }
            assert!(steps <= 20, "{steps} steps with {round_ms} ms rounds");
        }
    }
}
