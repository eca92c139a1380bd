//! A home router the fairness bench can put between the ep and the hub:
//! a path with a round trip, and an uplink whose bottleneck is the
//! router's FIFO rather than this host's own queue. This kernel has no
//! `netem`, and a link shaped on the host itself (`tc` on the ep's egress)
//! is held short by the kernel's small-queue limit, which a real router
//! a hop away does not see; so the packets go through a tun device and
//! this process plays the router.
//!
//! Addresses (all in the bench's own network namespace): the ep's side
//! is 10.9.0.1 and dials the hub as 10.9.0.4; the hub binds 10.9.0.2 and
//! sees the ep as 10.9.0.3. Routes send .3 and .4 into the tun; each
//! packet read from it has its addresses rewritten to the real pair and
//! goes back in after its delay. The rewrite keeps the sum of the last
//! octets (1 + 4 = 3 + 2, 2 + 3 = 4 + 1), so no checksum changes.

use std::{
    collections::BinaryHeap,
    fs::File,
    io::{Read, Write},
    os::fd::AsRawFd,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

/// Where the hub's doors for the ep bind, and what the ep dials instead.
pub const HUB_BIND: &str = "10.9.0.2";
pub const HUB_DIALED: &str = "10.9.0.4";
/// The ep's address as the hub sees it (for the allowlist).
pub const EP_SEEN: &str = "10.9.0.3";
/// Home's own address, where its services listen when a player on the
/// hub's side (bound to `HUB_BIND`) is to reach them across the router
/// (as `EP_SEEN`).
pub const HOME: &str = "10.9.0.1";

/// The path the router makes.
#[derive(Clone, Copy)]
pub struct Path {
    /// The uplink's rate (ep → hub), bits per second.
    pub uplink_bps: u64,
    /// How much the router's FIFO holds before it drops, in bytes.
    pub buffer: usize,
    /// The round trip, half added each way.
    pub rtt: Duration,
}

impl Path {
    pub fn describe(&self) -> String {
        format!(
            "a {} Mbit/s uplink through a router's FIFO of {} KB ({} ms at the rate), {} ms round trip",
            self.uplink_bps / 1_000_000,
            self.buffer / 1000,
            self.buffer as u64 * 8 * 1000 / self.uplink_bps,
            self.rtt.as_millis()
        )
    }
}

/// Makes the tun device, its addresses and routes, and starts the router
/// on two threads of its own; it lives as long as the process.
pub fn start(path: Path) -> std::io::Result<()> {
    let tun = Arc::new(open_tun("ferrytun0")?);
    for cmd in [
        "ip link set ferrytun0 mtu 1500 up",
        "ip addr add 10.9.0.1/32 dev ferrytun0",
        "ip addr add 10.9.0.2/32 dev ferrytun0",
        "ip route add 10.9.0.4/32 dev ferrytun0 src 10.9.0.1",
        "ip route add 10.9.0.3/32 dev ferrytun0 src 10.9.0.2",
    ] {
        let ok = std::process::Command::new("sh")
            .args(["-c", cmd])
            .status()?
            .success();
        if !ok {
            return Err(std::io::Error::other(format!("`{cmd}` failed")));
        }
    }
    let (tx, rx) = mpsc::channel::<Due>();
    let reader = tun.clone();
    std::thread::spawn(move || route(&reader, path, tx));
    std::thread::spawn(move || deliver(&tun, rx));
    Ok(())
}

/// A packet and when it leaves the router.
struct Due {
    at: Instant,
    seq: u64,
    packet: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    // The earliest first out of a max-heap.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Reads what the host sends into the tun, rewrites its addresses, and
/// gives it a time to leave: uplink packets queue in the FIFO at the
/// uplink's rate (dropped when it is full), both ways take half the RTT.
fn route(tun: &File, path: Path, tx: mpsc::Sender<Due>) {
    let half = path.rtt / 2;
    // When the FIFO's last packet has finished leaving.
    let mut busy_until = Instant::now();
    let mut buf = vec![0u8; 65536];
    for seq in 0.. {
        let Ok(n) = (&*tun).read(&mut buf) else {
            return;
        };
        let mut packet = buf[..n].to_vec();
        if n < 20 || packet[0] >> 4 != 4 {
            continue;
        }
        let now = Instant::now();
        let at = match (packet[15], packet[19]) {
            (1, 4) => {
                (packet[15], packet[19]) = (3, 2);
                let start = busy_until.max(now);
                let queued = (start - now).as_secs_f64() * path.uplink_bps as f64 / 8.0;
                if queued as usize + n > path.buffer {
                    continue;
                }
                let wire = Duration::from_secs_f64(n as f64 * 8.0 / path.uplink_bps as f64);
                busy_until = start + wire;
                busy_until + half
            }
            (2, 3) => {
                (packet[15], packet[19]) = (4, 1);
                now + half
            }
            _ => continue,
        };
        if tx.send(Due { at, seq, packet }).is_err() {
            return;
        }
    }
}

/// Writes each packet back into the tun when it is due.
fn deliver(tun: &File, rx: mpsc::Receiver<Due>) {
    let mut heap = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|d: &Due| d.at);
        let got = match next {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match got {
            Ok(d) => heap.push(d),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        while heap.peek().is_some_and(|d| d.at <= Instant::now()) {
            let d = heap.pop().unwrap();
            let _ = (&*tun).write(&d.packet);
        }
    }
}

/// Opens `/dev/net/tun` as a new tun device `name` (no packet info).
fn open_tun(name: &str) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // struct ifreq: the name, then the flags, padded to 40 bytes.
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    const IFF_TUN: u16 = 0x0001;
    const IFF_NO_PI: u16 = 0x1000;
    ifr[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: the kernel reads and writes at most sizeof(struct ifreq),
    // 40 bytes, which `ifr` is, and keeps no pointer to it. An ioctl is
    // the only way to attach to a tun device.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}
