//! Moves bytes between a player-side and a service-side stream.
//!
//! Like `tokio::io::copy_bidirectional`, but a direction holds heap memory
//! only while the writer is behind: reads land in a stack buffer and are
//! written straight on. An idle player therefore costs no copy buffers at
//! all, which is what lets a small hub hold thousands of them.

use crate::rate::{Limiter, RelayLimits};
use std::future::Future;
use std::{
    future::poll_fn,
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read per call: two full TLS records, so a bulk transfer writes
/// large records and few syscalls.
const CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, Default)]
pub struct RelayStats {
    /// Bytes from the first stream to the second.
    pub up: u64,
    /// Bytes from the second stream to the first.
    pub down: u64,
    pub elapsed: Duration,
    /// Ended by the idle limit after the second stream's side had ended
    /// (see `idle_over`): a clean end the first stream did not make.
    pub idle_after_end: bool,
}

/// One direction of the relay.
#[derive(Default)]
struct Pipe {
    /// Bytes read but not yet accepted by the writer; empty (unallocated)
    /// whenever the writer keeps up.
    pending: Vec<u8>,
    pos: usize,
    unflushed: bool,
    read_done: bool,
    done: bool,
    total: u64,
}

impl Pipe {
    /// Writes what an earlier read left over, then gives its memory back.
    fn poll_drain<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<()>> {
        while self.pos < self.pending.len() {
            let n = ready!(w.as_mut().poll_write(cx, &self.pending[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
            self.total += n as u64;
            self.unflushed = true;
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.pos = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// How much the next read may take: a chunk, or under a cap no more
    /// than the budget (what is not read stays with the sender, held back
    /// by TCP or QUIC flow control). Out of budget, what was written is
    /// flushed and the limiter's timer wakes the relay.
    fn read_budget<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        w: Pin<&mut W>,
        limit: Option<&mut Limiter>,
    ) -> Poll<io::Result<usize>> {
        let Some(l) = limit else {
            return Poll::Ready(Ok(CHUNK));
        };
        match l.poll_budget(cx, CHUNK) {
            Poll::Ready(n) => Poll::Ready(Ok(n)),
            Poll::Pending => {
                if self.unflushed {
                    ready!(w.poll_flush(cx))?;
                    self.unflushed = false;
                }
                Poll::Pending
            }
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
        mut limit: Option<&mut Limiter>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.poll_drain(cx, w.as_mut()))?;
            if self.read_done {
                // A FIN read on one side becomes a shutdown of the other's
                // write half (close_notify + FIN on a TLS leg).
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let max = ready!(self.read_budget(cx, w.as_mut(), limit.as_deref_mut()))?;
            let mut stack = [const { MaybeUninit::<u8>::uninit() }; CHUNK];
            let mut buf = ReadBuf::uninit(&mut stack[..max]);
            match r.as_mut().poll_read(cx, &mut buf) {
                Poll::Pending => {
                    if self.unflushed {
                        ready!(w.as_mut().poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let data = buf.filled();
            if data.is_empty() {
                self.read_done = true;
                continue;
            }
            if let Some(l) = limit.as_deref_mut() {
                l.spend(data.len());
            }
            let mut off = 0;
            while off < data.len() {
                match w.as_mut().poll_write(cx, &data[off..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        off += n;
                        self.total += n as u64;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // The writer is behind: keep the rest until it drains.
                        self.pending = data[off..].to_vec();
                        self.pos = 0;
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

/// Copies both ways until both directions end. The opposite direction keeps
/// flowing after one side's FIN. Memory is bounded by one chunk per
/// direction, and only while a writer is slower than its reader.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> (RelayStats, Option<io::Error>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    relay_watched(a, b, Watch::default()).await
}

/// Byte counters a relay adds to as it goes, so traffic shows while a
/// long session is still running.
#[derive(Clone, Default)]
pub struct Meter {
    pub up: prometheus_client::metrics::counter::Counter,
    pub down: prometheus_client::metrics::counter::Counter,
}

/// What a relay watches besides the bytes.
#[derive(Default)]
pub struct Watch {
    /// End with a `TimedOut` error once no byte has moved either way this
    /// long (a player-door limit).
    pub idle: Option<Duration>,
    /// Counters the bytes are added to as they move.
    pub meter: Option<Meter>,
    /// Observes the time from this instant to the first byte from the
    /// second stream (home → player).
    pub first_down: Option<(Instant, prometheus_client::metrics::histogram::Histogram)>,
    /// The player's own counters (the players table), besides `meter`.
    pub player: Option<Meter>,
    /// Byte-rate caps, each direction (boxed: an uncapped player's relay
    /// carries one pointer's worth for them).
    pub rate: Option<Box<RelayLimits>>,
    /// Where the uplink guard reads the path, for a relay whose second
    /// stream is home (the ep's), and whether it is on: it watches the
    /// player once home has sent `uplink_guard::WATCH_AFTER` with the
    /// guard on (`RelayLimits::guard`).
    pub guard: Option<(crate::uplink_guard::Signal, crate::uplink_guard::Switch)>,
}

impl Watch {
    /// Bytes moved before the relay (a game door's opening, home's first
    /// answer), counted as the relay counts its own: the service's and
    /// the player's figures, and the first byte home sent.
    pub fn count(&mut self, up: u64, down: u64) {
        for m in [&self.meter, &self.player].into_iter().flatten() {
            m.up.inc_by(up);
            m.down.inc_by(down);
        }
        if down > 0
            && let Some((since, h)) = self.first_down.take()
        {
            h.observe(since.elapsed().as_secs_f64());
        }
    }
}

/// The idle limit and its timer.
type Quiet = Option<(Duration, Pin<Box<tokio::time::Sleep>>)>;

/// `Some` once no byte has moved for the idle limit since `last_moved`:
/// `TimedOut`, or a clean end when the second stream's side (home's)
/// already ended and was passed on, since what the kernel still holds for
/// a slow reader then goes out before the FIN, and a reset would throw
/// that tail away.
fn idle_over(
    quiet: &mut Quiet,
    last_moved: tokio::time::Instant,
    home_done: bool,
    cx: &mut Context<'_>,
) -> Option<io::Result<()>> {
    let (limit, sleep) = quiet.as_mut()?;
    while sleep.as_mut().poll(cx).is_ready() {
        let due = last_moved + *limit;
        if due <= tokio::time::Instant::now() {
            return Some(match home_done {
                true => Ok(()),
                false => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no traffic either way for {limit:?} (player_idle_timeout)"),
                )),
            });
        }
        sleep.as_mut().reset(due);
    }
    None
}

/// `relay`, with the extras of `watch`.
pub async fn relay_watched<A, B>(
    a: &mut A,
    b: &mut B,
    watch: Watch,
) -> (RelayStats, Option<io::Error>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let Watch {
        idle,
        meter,
        mut first_down,
        player,
        mut rate,
        mut guard,
    } = watch;
    let start = Instant::now();
    let (mut up, mut down) = (Pipe::default(), Pipe::default());
    let (mut counted_up, mut counted_down) = (0u64, 0u64);
    // The idle deadline is re-armed lazily, when it fires, from the time
    // bytes last moved: no timer work per chunk on the forwarding path.
    let mut quiet: Quiet = idle.map(|d| (d, Box::pin(tokio::time::sleep(d))));
    let mut last_moved = tokio::time::Instant::now();
    let mut idle_after_end = false;
    let result = poll_fn(|cx| {
        let (lu, ld) = match rate.as_deref_mut() {
            Some(r) => (r.up.as_mut(), r.down.as_mut()),
            None => (None, None),
        };
        let u = up.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b), lu);
        let d = down.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a), ld);
        if up.total != counted_up || down.total != counted_down {
            for m in [&meter, &player].into_iter().flatten() {
                m.up.inc_by(up.total - counted_up);
                m.down.inc_by(down.total - counted_down);
            }
            if down.total > 0
                && let Some((since, h)) = first_down.take()
            {
                h.observe(since.elapsed().as_secs_f64());
            }
            if quiet.is_some() {
                last_moved = tokio::time::Instant::now();
            }
            (counted_up, counted_down) = (up.total, down.total);
            if down.total >= crate::uplink_guard::WATCH_AFTER
                && guard.as_ref().is_some_and(|(_, on)| on.is_on())
                && let Some((signal, switch)) = guard.take()
            {
                RelayLimits::guard(&mut rate, signal, switch);
            }
        }
        let (u, d) = (u?, d?);
        if let (Poll::Ready(()), Poll::Ready(())) = (u, d) {
            return Poll::Ready(Ok(()));
        }
        match idle_over(&mut quiet, last_moved, down.done, cx) {
            Some(end) => {
                idle_after_end = end.is_ok();
                Poll::Ready(end)
            }
            None => Poll::Pending,
        }
    })
    .await;
    let stats = RelayStats {
        up: up.total,
        down: down.total,
        elapsed: start.elapsed(),
        idle_after_end,
    };
    (stats, result.err())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn copies_both_ways_through_a_slow_writer_and_half_closes() {
        // Tiny duplex buffers force the pending (writer-behind) path.
        let (mut a_out, mut a) = duplex(64);
        let (mut b, mut b_out) = duplex(64);
        let relay = tokio::spawn(async move { relay(&mut a, &mut b).await });
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a_out.write_all(&sent).await.unwrap();
            a_out.shutdown().await.unwrap();
            let mut back = Vec::new();
            a_out.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        b_out.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        b_out.write_all(b"reply after FIN").await.unwrap();
        b_out.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after FIN");
        let (stats, err) = relay.await.unwrap();
        assert!(err.is_none());
        assert_eq!((stats.up, stats.down), (200_000, 15));
    }

    /// Bytes a second `from` reads over `secs` seconds of (paused) time.
    async fn rate_over(from: &mut tokio::io::DuplexStream, secs: f64) -> f64 {
        let (start, mut n) = (tokio::time::Instant::now(), 0usize);
        let mut buf = vec![0u8; 64 * 1024];
        while start.elapsed().as_secs_f64() < secs {
            n += from.read(&mut buf).await.unwrap();
        }
        n as f64 / start.elapsed().as_secs_f64()
    }

    use crate::uplink_guard::{Signal, Switch};
    use std::sync::{Arc, Mutex};
    const MS: Duration = Duration::from_millis(1);

    /// Home sending 10 MB/s through a relay the uplink guard watches
    /// (reading `path`, on while `switch` is); the hub's end.
    fn guarded_download(
        path: &Arc<Mutex<(Duration, Duration)>>,
        switch: Switch,
    ) -> tokio::io::DuplexStream {
        let (hub, mut a) = duplex(64 * 1024);
        let (mut b, mut home) = duplex(64 * 1024);
        let watch = Watch {
            guard: Some((Signal::Fixed(path.clone()), switch)),
            ..Default::default()
        };
        tokio::spawn(async move { relay_watched(&mut a, &mut b, watch).await });
        tokio::spawn(async move {
            // 20 kB each 2 ms (tokio's timer counts whole milliseconds).
            let chunk = vec![7u8; 20_000];
            while home.write_all(&chunk).await.is_ok() {
                tokio::time::sleep(2 * MS).await;
            }
        });
        hub
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_turning_the_uplink_guard_on_or_off_reaches_players_already_connected() {
        // The path queues 40 ms above its least throughout.
        let path = Arc::new(Mutex::new((60 * MS, 20 * MS)));
        let switch = Switch::new(false);
        let mut hub = guarded_download(&path, switch.clone());
        let off = rate_over(&mut hub, 1.0).await;
        assert!(off > 9e6, "the guard off: the full 10 MB/s, got {off}");
        switch.set(true);
        rate_over(&mut hub, 0.5).await;
        let on = rate_over(&mut hub, 1.0).await;
        assert!(on < 6e6, "turned on: held under half, got {on}");
        switch.set(false);
        rate_over(&mut hub, 1.0).await;
        let off_again = rate_over(&mut hub, 1.0).await;
        assert!(
            off_again > 9e6,
            "turned off again: the player goes free, got {off_again}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_uplink_guard_slows_home_while_its_path_queues_and_gives_up_on_a_queue_not_its_own()
    {
        let path = Arc::new(Mutex::new((20 * MS, 20 * MS)));
        let mut hub = guarded_download(&path, Switch::new(true));
        let queue = |on: bool| *path.lock().unwrap() = (if on { 60 } else { 20 } * MS, 20 * MS);
        let free = rate_over(&mut hub, 1.0).await;
        assert!(free > 9e6, "no queue: the full 10 MB/s, got {free}");
        queue(true);
        rate_over(&mut hub, 0.5).await;
        let queued = rate_over(&mut hub, 1.0).await;
        assert!(
            (2e6..6e6).contains(&queued),
            "a queue of 40 ms: under half, not far under a quarter, got {queued}"
        );
        queue(false);
        rate_over(&mut hub, 2.0).await;
        let after = rate_over(&mut hub, 1.0).await;
        assert!(after > 9e6, "the queue gone: back to 10 MB/s, got {after}");
        // A queue that holding the player at a quarter does not shorten
        // is someone else's: given up on within seconds.
        queue(true);
        rate_over(&mut hub, 6.0).await;
        let theirs = rate_over(&mut hub, 1.0).await;
        assert!(theirs > 9e6, "given up: back to 10 MB/s, got {theirs}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_end_after_home_ended_is_a_clean_end_said_as_such() {
        let idle = || Watch {
            idle: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let (_player, mut a) = duplex(1024);
        let (mut home, mut b) = duplex(1024);
        home.write_all(b"reply").await.unwrap();
        home.shutdown().await.unwrap();
        let (stats, err) = relay_watched(&mut a, &mut b, idle()).await;
        assert!(err.is_none(), "{err:?}");
        assert!(stats.idle_after_end);
        // Silent while home is still there: a timeout, not a clean end.
        let (_player, mut a) = duplex(1024);
        let (_home, mut b) = duplex(1024);
        let (stats, err) = relay_watched(&mut a, &mut b, idle()).await;
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        assert!(!stats.idle_after_end);
    }
}
