//! The like-for-like baseline: two plain-TCP forwarding processes in a
//! chain, the same shape as hub + ep but with no TLS, no pool and no
//! protocol. What ferry costs beyond this is the price of its security.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
};
use tokio::net::{TcpListener, TcpStream};

/// Child mode: forward one listener per target; print the listeners.
pub fn serve(targets: &str) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for t in targets.split(',') {
            let target: SocketAddr = t.parse().unwrap();
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
        }
        std::future::pending::<()>().await
    });
    unreachable!()
}

pub struct Hop(std::process::Child);

impl Drop for Hop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a forwarder process for `targets`; returns it and its addresses.
pub fn spawn(targets: &[SocketAddr]) -> (Hop, Vec<SocketAddr>) {
    spawn_mode("--plain-hop", targets)
}

/// This bench binary re-executed with `flag` (its relay mode) for
/// `targets`; it prints one address per target.
pub fn spawn_mode(flag: &str, targets: &[SocketAddr]) -> (Hop, Vec<SocketAddr>) {
    let list: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(flag)
        .arg(list.join(","))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addrs = targets
        .iter()
        .map(|_| lines.next().unwrap().unwrap().parse().unwrap())
        .collect();
    (Hop(child), addrs)
}
