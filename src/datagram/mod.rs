//! Datagrams carried over a byte stream (a TLS channel): each one framed
//! as a two-byte big-endian length and its bytes, so boundaries survive and
//! every size UDP allows (65,507 bytes over IPv4) fits. The flow logic on
//! both ends sees only whole datagrams, so another carrier (QUIC
//! datagrams) can replace the framing without touching it.

mod queue;
pub mod socket;

pub use queue::{Budget, Held, MAX_BYTES as QUEUE_BYTES, MAX_ITEMS as QUEUE_ITEMS, Queue};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest datagram a frame holds; larger than any UDP payload.
pub const MAX: usize = u16::MAX as usize;

/// Receive buffer for one datagram of any size.
pub const RECV_BUF: usize = MAX + 1;

/// What a flow's write buffer keeps between bursts: a few game datagrams.
/// A burst of large ones (up to a queue's 256 KiB) is given back after
/// its write, so an idle flow holds no buffer of its busiest moment.
pub const KEEP_BYTES: usize = 16 * 1024;

/// Empties `out` after a write, giving back what a burst grew it to (all
/// of it: a shrunk copy would be a new allocation kept for the flow's
/// life, wedged between the burst's freed ones).
pub fn written(out: &mut Vec<u8>) {
    if out.capacity() > KEEP_BYTES {
        *out = Vec::new();
    } else {
        out.clear();
    }
}

/// Appends `d` to `out` as one frame. `d` is at most `MAX` bytes (a UDP
/// payload always is).
pub fn encode(out: &mut Vec<u8>, d: &[u8]) {
    debug_assert!(d.len() <= MAX);
    out.extend_from_slice(&(d.len() as u16).to_be_bytes());
    out.extend_from_slice(d);
}

/// What a datagram's buffer starts with: a game's datagram fits, a
/// larger one grows as it arrives.
const FIRST_ALLOC: usize = 2048;

/// The next datagram; `None` when the stream ends between frames.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    // Allocated per datagram (an idle flow holds no buffer), and grown as
    // its bytes come, not at the length the peer declares: a peer that
    // sends lengths alone would have each flow hold 64 KiB.
    let len = u16::from_be_bytes(len) as usize;
    let mut d = vec![0u8; len.min(FIRST_ALLOC)];
    r.read_exact(&mut d).await?;
    // One allocation for a game's datagram; a larger one doubles, to its
    // length at most, as its bytes come.
    while d.len() < len {
        let at = d.len();
        d.resize((at * 2).min(len), 0);
        r.read_exact(&mut d[at..]).await?;
    }
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn a_burst_buffer_is_given_back() {
        let mut out = Vec::new();
        for _ in 0..4 {
            encode(&mut out, &[0u8; 65_000]);
        }
        written(&mut out);
        assert!(out.is_empty() && out.capacity() <= KEEP_BYTES);
    }

    #[tokio::test]
    async fn boundaries_and_sizes_survive() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let sizes = [0usize, 1, 1472, 8192, 65_507, MAX];
        let mut out = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            encode(&mut out, &vec![i as u8; *n]);
        }
        a.write_all(&out).await.unwrap();
        drop(a);
        for (i, n) in sizes.iter().enumerate() {
            assert_eq!(read(&mut b).await.unwrap().unwrap(), vec![i as u8; *n]);
        }
        assert!(read(&mut b).await.unwrap().is_none());
    }
}
