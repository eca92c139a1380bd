//! A UDP relay to put between an ep's QUIC endpoint and the hub: it can
//! lose every datagram for a while (a silent path), or hold the client's
//! datagrams once the server has sent some (a handshake begun, not
//! finished) until released.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};
use tokio::{net::UdpSocket, sync::watch};

pub struct UdpRelay {
    pub addr: SocketAddr,
    /// While set, every datagram is lost, both ways.
    pub silent: Arc<AtomicBool>,
    /// The server has sent the `hold_after` bytes.
    pub spoke: watch::Receiver<bool>,
    /// Set, the held datagrams go on, and all after them.
    pub release: watch::Sender<bool>,
}

impl UdpRelay {
    /// Relays one client to `to`; with `hold_after`, the client's
    /// datagrams wait once the server has sent that many bytes (more than
    /// a stateless retry: its handshake flight).
    pub async fn start(to: SocketAddr, hold_after: Option<usize>) -> UdpRelay {
        let outer = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let inner = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        inner.connect(to).await.unwrap();
        let addr = outer.local_addr().unwrap();
        let silent = Arc::new(AtomicBool::new(false));
        let (spoke_tx, spoke) = watch::channel(false);
        let (release, mut released) = watch::channel(false);
        let client = Arc::new(OnceLock::new());
        let (o, i, c, s) = (outer.clone(), inner.clone(), client.clone(), silent.clone());
        tokio::spawn(async move {
            let (mut buf, mut sent) = (vec![0u8; 65536], 0);
            while let Ok(n) = i.recv(&mut buf).await {
                sent += n;
                if hold_after.is_some_and(|h| sent >= h) {
                    spoke_tx.send_replace(true);
                }
                if let (Some(c), false) = (c.get(), s.load(Ordering::SeqCst)) {
                    let _ = o.send_to(&buf[..n], c).await;
                }
            }
        });
        let (s, spoke_seen) = (silent.clone(), spoke.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = outer.recv_from(&mut buf).await {
                let _ = client.set(from);
                if *spoke_seen.borrow() {
                    let _ = released.wait_for(|r| *r).await;
                }
                if !s.load(Ordering::SeqCst) {
                    let _ = inner.send(&buf[..n]).await;
                }
            }
        });
        UdpRelay {
            addr,
            silent,
            spoke,
            release,
        }
    }
}
