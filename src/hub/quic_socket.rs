//! The QUIC door's UDP socket: datagrams from outside `ep_allowlist` are
//! dropped before quinn sees them.
//!
//! Checking only a connection's first packet is not enough on UDP: with
//! migration on, a session can move to any address after its handshake,
//! and a reload that removes an address would otherwise need to chase the
//! path each connection is on now. Filtering every datagram by its source
//! makes both hold by construction: a path to an address that is not
//! allowed never carries a packet, so quinn never migrates to it and the
//! connection ends by its idle timeout if its old path is gone too. The
//! check is a few CIDR comparisons per received batch, under a read lock.

use super::refusals::{Reason, Refusals};
use crate::config::Allowlist;
use quinn::{AsyncUdpSocket, UdpPoller, udp::RecvMeta, udp::Transmit};
use std::{
    fmt, io,
    io::IoSliceMut,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll, ready},
};

/// The sources the door hears, as the settings say now.
pub(crate) struct Allowed {
    list: RwLock<Allowlist>,
    refusals: Arc<Refusals>,
}

impl Allowed {
    pub fn new(list: Allowlist, refusals: Arc<Refusals>) -> Arc<Allowed> {
        Arc::new(Allowed {
            list: RwLock::new(list),
            refusals,
        })
    }

    /// A reload's new allowlist, for every datagram from now on.
    pub fn set(&self, list: Allowlist) {
        *self.list.write().unwrap_or_else(|p| p.into_inner()) = list;
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(ip)
    }

    /// Whether a datagram from `from` starting with `first` may pass. A
    /// refused connection attempt (a long-header Initial) is counted; other
    /// datagrams from strangers are dropped without a word.
    fn admits(&self, from: SocketAddr, first: Option<u8>) -> bool {
        if self.contains(from.ip()) {
            return true;
        }
        if first.is_some_and(|b| b & 0xf0 == 0xc0) {
            let why = "ignored before the QUIC handshake";
            self.refusals.record(Reason::NotAllowlisted, from.ip(), why);
        }
        false
    }
}

/// A UDP socket that hands quinn only the datagrams `allowed` admits.
pub(crate) struct Filtered {
    inner: Arc<dyn AsyncUdpSocket>,
    allowed: Arc<Allowed>,
}

impl Filtered {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, allowed: Arc<Allowed>) -> Arc<Filtered> {
        Arc::new(Filtered { inner, allowed })
    }
}

impl fmt::Debug for Filtered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Filtered({:?})", self.inner)
    }
}

impl AsyncUdpSocket for Filtered {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let kept = keep(bufs, meta, n, |m, b| {
                self.allowed.admits(m.addr, b.first().copied())
            });
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // All dropped: poll again, which registers the waker when the
            // socket has nothing more.
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Moves the first `n` received batches that `admit` keeps to the front of
/// `bufs`/`meta` (in order); how many were kept.
fn keep(
    bufs: &mut [IoSliceMut<'_>],
    meta: &mut [RecvMeta],
    n: usize,
    admit: impl Fn(&RecvMeta, &[u8]) -> bool,
) -> usize {
    let mut kept = 0;
    for i in 0..n {
        let len = meta[i].len;
        if !admit(&meta[i], &bufs[i][..len]) {
            continue;
        }
        if kept != i {
            meta[kept] = meta[i];
            let (front, back) = bufs.split_at_mut(i);
            front[kept][..len].copy_from_slice(&back[0][..len]);
        }
        kept += 1;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_admitted_batches_in_order_and_moves_their_bytes() {
        let mut raw = [[0u8; 4]; 4];
        for (i, r) in raw.iter_mut().enumerate() {
            *r = [i as u8; 4];
        }
        let [a, b, c, d] = &mut raw;
        let mut bufs = [
            IoSliceMut::new(a),
            IoSliceMut::new(b),
            IoSliceMut::new(c),
            IoSliceMut::new(d),
        ];
        let mut meta = [RecvMeta::default(); 4];
        for (i, m) in meta.iter_mut().enumerate() {
            m.len = 3;
            m.stride = 3;
            m.addr = SocketAddr::from(([127, 0, 0, i as u8 + 1], 9));
        }
        // Keep the second and fourth.
        let kept = keep(&mut bufs, &mut meta, 4, |_, b| b[0] % 2 == 1);
        assert_eq!(kept, 2);
        assert_eq!(&bufs[0][..3], &[1, 1, 1]);
        assert_eq!(&bufs[1][..3], &[3, 3, 3]);
        assert_eq!(meta[0].addr.ip(), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(meta[1].addr.ip(), IpAddr::from([127, 0, 0, 4]));
    }
}
