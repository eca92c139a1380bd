//! The services at "home": a UDP echo, and a sink that counts paced
//! datagrams and their jitter. Plain threads with blocking sockets, so
//! the load generator's scheduling cannot disturb them.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

fn tuned(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap();
    let r = socket2::SockRef::from(&s);
    let _ = r.set_recv_buffer_size(4 << 20);
    let _ = r.set_send_buffer_size(4 << 20);
    s
}

pub fn echo() -> SocketAddr {
    let s = tuned("127.0.0.1:0");
    let addr = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        loop {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    addr
}

#[derive(Default)]
struct Stats {
    got: u64,
    bytes: u64,
    /// RFC 3550's interarrival jitter, in seconds.
    jitter: f64,
    last_transit: Option<f64>,
}

pub struct Sink {
    pub addr: SocketAddr,
    stats: Arc<Mutex<Stats>>,
    epoch: Instant,
}

impl Sink {
    pub fn start() -> Sink {
        let s = tuned("127.0.0.1:0");
        let addr = s.local_addr().unwrap();
        let stats: Arc<Mutex<Stats>> = Arc::default();
        let epoch = Instant::now();
        let st = stats.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok(n) = s.recv(&mut buf) else { continue };
                let now = epoch.elapsed().as_secs_f64();
                let mut st = st.lock().unwrap();
                st.got += 1;
                st.bytes += n as u64;
                if n >= 8 {
                    let sent = u64::from_be_bytes(buf[..8].try_into().unwrap()) as f64 / 1e9;
                    let transit = now - sent;
                    if let Some(last) = st.last_transit {
                        st.jitter += ((transit - last).abs() - st.jitter) / 16.0;
                    }
                    st.last_transit = Some(transit);
                }
            }
        });
        Sink { addr, stats, epoch }
    }

    pub fn bytes(&self) -> u64 {
        self.stats.lock().unwrap().bytes
    }

    /// Sends 1,200-byte datagrams to `to` at `mbit` for `secs`, paced in
    /// 1 ms slices; (sent, received, jitter in ms).
    pub fn run(&self, to: SocketAddr, mbit: u64, secs: f64) -> (u64, u64, f64) {
        let s = tuned("127.0.0.1:0");
        let per_sec = mbit * 1_000_000 / 8 / 1200;
        let mut payload = vec![0u8; 1200];
        let start = Instant::now();
        // The flow's first datagram makes it; then the counts start.
        payload[..8].copy_from_slice(&0u64.to_be_bytes());
        s.send_to(&payload, to).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        {
            let mut st = self.stats.lock().unwrap();
            st.got = 0;
            st.jitter = 0.0;
            st.last_transit = None;
        }
        let begin = Instant::now();
        let mut sent = 0u64;
        while begin.elapsed().as_secs_f64() < secs {
            let due = (begin.elapsed().as_secs_f64() * per_sec as f64) as u64;
            while sent < due {
                let ns = self.epoch.elapsed().as_nanos() as u64;
                payload[..8].copy_from_slice(&ns.to_be_bytes());
                if s.send_to(&payload, to).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let _ = start;
        // Stragglers still in flight.
        std::thread::sleep(Duration::from_millis(300));
        let st = self.stats.lock().unwrap();
        (sent, st.got, st.jitter * 1e3)
    }
}
