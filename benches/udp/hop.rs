//! The like-for-like baseline: a plain UDP relay process, one connected
//! socket per flow toward its target, no TLS, no framing. Two in a chain
//! have the shape of hub + ep.

use crate::common::{
    Args,
    hop::{self, Hop},
};
use std::{collections::HashMap, net::SocketAddr, sync::Arc};
use tokio::net::UdpSocket;

const MODE: &str = "--udp-hop";

/// Child mode (`--udp-hop TARGETS`): relay one socket per target.
pub fn serve_if_asked(args: &Args) {
    hop::serve_if_asked(args, MODE, |target| async move {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        println!("{}", front.local_addr().unwrap());
        tokio::spawn(async move {
            let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let ended: Arc<std::sync::Mutex<Vec<SocketAddr>>> = Arc::default();
            // Each flow's socket on a loopback address of its own turn,
            // so thousands of new flows a second do not run out of
            // ephemeral ports on one address.
            let mut next = 0u32;
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                for gone in ended.lock().unwrap().drain(..) {
                    flows.remove(&gone);
                }
                let back = match flows.get(&from) {
                    Some(b) => b.clone(),
                    None => {
                        next = next.wrapping_add(1);
                        let ip = [127, 201, (next >> 8) as u8, next as u8 | 1];
                        let Ok(b) = UdpSocket::bind(SocketAddr::from((ip, 0))).await else {
                            continue;
                        };
                        let b = Arc::new(b);
                        if b.connect(target).await.is_err() {
                            continue;
                        }
                        flows.insert(from, b.clone());
                        let (b2, f2) = (b.clone(), front.clone());
                        let gone = ended.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            // Silent answers for 2 s end the flow, as
                            // the bench's ferry service does.
                            let idle = std::time::Duration::from_secs(2);
                            while let Ok(Ok(n)) =
                                tokio::time::timeout(idle, b2.recv(&mut buf)).await
                            {
                                let _ = f2.send_to(&buf[..n], from).await;
                            }
                            gone.lock().unwrap().push(from);
                        });
                        b
                    }
                };
                let _ = back.send(&buf[..n]).await;
            }
        });
    })
}

pub fn spawn(targets: &[SocketAddr]) -> (Hop, Vec<SocketAddr>) {
    hop::spawn(MODE, targets)
}
