//! A loopback TCP proxy that can pass, black-hole, delay or reset traffic
//! on command, for putting between an ep and its hub.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Forward nothing, close nothing: a silently dead path.
    BlackHole,
    /// Forward nothing until the mode changes, then all of it: a path
    /// silent for a while (TCP's retransmissions, once it is back).
    Hold,
    /// Forward everything after this delay.
    Delay(Duration),
    /// Close each new connection at once, as a hub that refuses it would.
    Refuse,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    resets: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    accepted_watch: watch::Sender<u64>,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mode = watch::Sender::new(Mode::Pass);
        let resets = watch::Sender::new(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let accepted_watch = watch::Sender::new(0u64);
        let (m, r, a, aw) = (
            mode.subscribe(),
            resets.subscribe(),
            accepted.clone(),
            accepted_watch.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let n = a.fetch_add(1, Ordering::Relaxed) + 1;
                aw.send_replace(n);
                if *m.borrow() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                let (m, r) = (m.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    proxy(client, server, m, r).await;
                });
            }
        });
        FaultProxy {
            addr,
            mode,
            resets,
            accepted,
            accepted_watch,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Resets (RST) every connection open now; later ones are unaffected.
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Waits until more than `n` connections have been accepted.
    pub async fn wait_accepted_over(&self, n: u64) {
        let mut rx = self.accepted_watch.subscribe();
        tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|c| *c > n))
            .await
            .expect("no new connection through the proxy")
            .unwrap();
    }
}

async fn proxy(
    client: TcpStream,
    server: TcpStream,
    mode: watch::Receiver<Mode>,
    mut resets: watch::Receiver<u64>,
) {
    resets.mark_unchanged();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, mode.clone());
    let down = pump(sr, cw, mode);
    tokio::select! {
        (a, b) = async { tokio::join!(up, down) } => {
            // Normal end: nothing more to do.
            let _ = (a, b);
        }
        _ = resets.changed() => {
            // Dropping the halves after SO_LINGER 0 sends RST both ways;
            // the halves were moved into the pumps, which are dropped here.
        }
    }
}

/// Copies one direction, obeying the mode. On reset the caller drops us;
/// the linger setting on the write half makes that a reset.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let _ = socket2::SockRef::from(w.as_ref()).set_linger(Some(Duration::ZERO));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While black-holed, neither read nor write: data piles up unacked
        // in the peers' buffers, as on a dead path.
        while matches!(*mode.borrow(), Mode::BlackHole | Mode::Hold) {
            if mode.changed().await.is_err() {
                return;
            }
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = socket2::SockRef::from(w.as_ref()).set_linger(None);
                let _ = w.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let m = *mode.borrow();
        match m {
            Mode::BlackHole => {
                // Swallow what arrived after the switch, like a lost packet.
                continue;
            }
            Mode::Hold => {
                if mode.wait_for(|m| *m != Mode::Hold).await.is_err() {
                    return;
                }
            }
            Mode::Delay(d) => tokio::time::sleep(d).await,
            Mode::Pass | Mode::Refuse => {}
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
