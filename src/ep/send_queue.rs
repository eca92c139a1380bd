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
//! once its aggregate is acknowledged, a few, and on a busy medium tens).
//! The buffer follows the send rate, four milliseconds of it, as Linux
//! gives TCP over Wi-Fi: while a device round is shorter than the data in
//! what the kernel then grants (twice the asked; ~7 ms where 90 % of what
//! it charges is data, ~4 ms where a GSO batch is cut into datagrams for
//! the device, as for Wi-Fi), a buffer that holds the rate back lets
//! through more than it is sized for, and grows step by step. Where
//! rounds are longer, it would hold the rate back for good: `send_probe`
//! finds that out and sizes it larger, up to what the kernel's default
//! would have granted.

use super::send_probe::{Probe, Sizes};
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
/// What the kernel grants a socket unasked on a stock host
/// (`net.core.wmem_default`), where that cannot be read.
const KERNEL_DEFAULT: usize = 212_992;
/// Asked: the send rate over this share of a second (4 ms).
const HOLD_PER_SEC: f64 = 250.0;

/// What the send rate asks at `rate` bytes/s, given what it asked the step
/// before. A pause halves it step by step, so a stream that stalls for a
/// moment does not start again at the floor.
fn rate_part(rate: f64, before: usize) -> usize {
    let want = (rate / HOLD_PER_SEC) as usize;
    want.max(before / 2).clamp(FLOOR, CEILING)
}

/// The size to ask step by step: what the rate asks, times what the probe
/// found the device needs (the floor too: a device that holds the rate
/// back at the floor needs more than the floor).
pub struct Sizer {
    /// What the rate alone asked; held still while the probe tries.
    base: usize,
    probe: Probe,
    /// The probe's scale asks at most this (what the kernel's default
    /// grants), unless the rate alone asks more: the worst a scale kept
    /// in error can do is what the ep did before it sized the buffer.
    most: usize,
}

impl Default for Sizer {
    fn default() -> Sizer {
        Sizer::new(KERNEL_DEFAULT)
    }
}

impl Sizer {
    /// `granted`: the send buffer the kernel gives a socket by default
    /// (`net.core.wmem_default`).
    pub fn new(granted: usize) -> Sizer {
        Sizer {
            base: 0,
            probe: Probe::new(EVERY),
            most: granted / 2,
        }
    }

    fn sized(&self, times: f64) -> usize {
        let scaled = (self.base as f64 * times) as usize;
        scaled.min(self.base.max(self.most)).clamp(FLOOR, CEILING)
    }

    /// Takes the last step's send rate (bytes/s); returns the size to ask.
    pub fn step(&mut self, rate: f64) -> usize {
        if !self.probe.trying() {
            self.base = rate_part(rate, self.base);
        }
        let scale = f64::from(self.probe.scale());
        let usual = self.sized(scale);
        let sizes = Sizes {
            usual,
            up: self.sized(scale * 2.0) as f64 / usual as f64,
            down: usual > self.sized(1.0),
        };
        let times = self.probe.step(rate, sizes);
        if f64::from(self.probe.scale()) != scale {
            tracing::debug!(
                "the QUIC socket's send buffer is now {} times the rate's four milliseconds \
                 (at most the kernel's default; was {scale}): a try found the device {} with it",
                self.probe.scale(),
                if f64::from(self.probe.scale()) > scale {
                    "held back"
                } else {
                    "as fast"
                }
            );
        }
        self.sized(times)
    }
}

/// One endpoint's socket and its connections (a new login's beside an
/// old one's that still drains its players), each with the bytes it had
/// sent at the last step.
pub struct Queue {
    socket: Arc<socket2::Socket>,
    conns: HashMap<usize, (quinn::Connection, u64)>,
    sizer: Sizer,
    /// When the socket was last sized: once a step, whichever connection's
    /// timer comes first, all of them read at the same moment.
    sized_at: Option<Instant>,
}

pub type Shared = Arc<Mutex<Queue>>;

/// The queue of the endpoint built on `socket` (a handle of its own: the
/// endpoint takes the socket).
pub fn new(socket: &std::net::UdpSocket) -> std::io::Result<Shared> {
    Ok(Arc::new(Mutex::new(Queue {
        socket: Arc::new(socket.try_clone()?.into()),
        conns: HashMap::new(),
        sizer: Sizer::new(kernel_default()),
        sized_at: None,
    })))
}

/// The send buffer the kernel gives a socket unasked.
fn kernel_default() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/wmem_default")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(KERNEL_DEFAULT)
}

/// The endpoint moved (a rebind) to the socket `handle` is a handle of:
/// sized at the next step.
pub fn moved(queue: &Shared, handle: std::net::UdpSocket) {
    let mut q = lock(queue);
    q.socket = Arc::new(handle.into());
    q.sizer.probe.moved();
}

fn lock(q: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    /// Reads what every connection sent since the last step and sizes the
    /// socket for it, at most once a step.
    fn step(&mut self, now: Instant) {
        let Some(since) = self.sized_at.map(|t| now.duration_since(t)) else {
            self.sized_at = Some(now);
            return;
        };
        if since < EVERY * 9 / 10 {
            return;
        }
        self.sized_at = Some(now);
        let mut sent = 0;
        for (conn, last) in self.conns.values_mut() {
            let bytes = conn.stats().udp_tx.bytes;
            sent += bytes.saturating_sub(*last);
            *last = bytes;
        }
        let rate = sent as f64 / since.as_secs_f64();
        let want = self.sizer.step(rate);
        // Each step, not only on a change: a rebound socket starts at the
        // kernel's default.
        if let Err(e) = self.socket.set_send_buffer_size(want) {
            tracing::debug!("could not size the QUIC socket's send buffer: {e}");
        }
    }
}

/// Counts `conn` in its endpoint's `queue` until it ends, sizing the
/// socket each step to all of the endpoint's connections together.
pub(super) async fn follow(conn: quinn::Connection, queue: Shared) {
    let id = conn.stable_id();
    let sent = conn.stats().udp_tx.bytes;
    lock(&queue).conns.insert(id, (conn.clone(), sent));
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => lock(&queue).step(Instant::now()),
            _ = conn.closed() => break,
        }
    }
    lock(&queue).conns.remove(&id);
}

#[cfg(test)]
mod tests;
