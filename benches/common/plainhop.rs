//! The like-for-like baseline: two plain-TCP forwarding processes in a
//! chain, the same shape as hub + ep but with no TLS, no pool and no
//! protocol. What ferry costs beyond this is the price of its security.

use crate::common::{
    Args,
    hop::{self, Hop},
};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

const MODE: &str = "--plain-hop";

/// Child mode (`--plain-hop TARGETS`): forward one listener per target.
pub fn serve_if_asked(args: &Args) {
    hop::serve_if_asked(args, MODE, |target| async move {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut a, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = a.set_nodelay(true);
                    let Ok(mut b) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = b.set_nodelay(true);
                    let _ = ferry::relay::relay(&mut a, &mut b).await;
                });
            }
        });
    })
}

/// Starts a forwarder process for `targets`; returns it and its addresses.
pub fn spawn(targets: &[SocketAddr]) -> (Hop, Vec<SocketAddr>) {
    hop::spawn(MODE, targets)
}
