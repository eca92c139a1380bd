//! The baselines' relay processes: the bench binary re-executed in a
//! relay mode, so a plain relay pays for a process hop as hub and ep do.

use super::Args;
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
};

/// A relay process, killed on drop.
pub struct Hop(std::process::Child);

impl Drop for Hop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This bench binary re-executed with `flag` (its relay mode) for
/// `targets`; it prints one address per target.
pub fn spawn(flag: &str, targets: &[SocketAddr]) -> (Hop, Vec<SocketAddr>) {
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

/// Child mode, when the command line says `flag TARGETS`: `front(target)`
/// for each of the comma-separated targets in turn binds a front, prints
/// its address and spawns its forwarding; one at a time, so the addresses
/// come out in the targets' order. Never returns then.
pub fn serve_if_asked<F, Fut>(args: &Args, flag: &str, mut front: F)
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(targets) = args.value(flag) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for t in targets.split(',') {
            front(t.parse().unwrap()).await;
        }
        std::future::pending::<()>().await
    });
    unreachable!()
}
