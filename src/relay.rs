//! Moves bytes between a player-side and a service-side stream.

use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// Large enough to fill a TLS record (16 KiB) in one write.
const BUF: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct RelayStats {
    /// Bytes from the first stream to the second.
    pub up: u64,
    /// Bytes from the second stream to the first.
    pub down: u64,
    pub elapsed: Duration,
}

/// Copies both ways until both directions end. A FIN on one side becomes a
/// shutdown of the other side's write half (a TLS close_notify plus FIN on
/// tunnel legs); the opposite direction keeps flowing until it ends too.
/// Memory is bounded by the two buffers.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> (RelayStats, Option<std::io::Error>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let start = Instant::now();
    match tokio::io::copy_bidirectional_with_sizes(a, b, BUF, BUF).await {
        Ok((up, down)) => (
            RelayStats {
                up,
                down,
                elapsed: start.elapsed(),
            },
            None,
        ),
        Err(e) => (
            RelayStats {
                up: 0,
                down: 0,
                elapsed: start.elapsed(),
            },
            Some(e),
        ),
    }
}
