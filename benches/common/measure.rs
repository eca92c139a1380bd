//! One TCP measurement each: throughput, ping-pong latency, connect to
//! first byte, connection rate, idle players; and the statistics the
//! reports take of them.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// A new connection that has had one byte echoed: a player served.
async fn echo_one(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr).await;
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    s
}

/// Sends `bytes` to a sink through `addr`; returns MB/s (10^6 bytes).
pub async fn throughput(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = connect(addr).await;
    let chunk = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = chunk.len().min((bytes - sent) as usize);
        s.write_all(&chunk[..n]).await.unwrap();
        sent += n as u64;
    }
    s.shutdown().await.unwrap();
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await.unwrap();
    assert_eq!(u64::from_be_bytes(count), bytes, "sink received every byte");
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// `streams` parallel senders of `bytes` each; aggregate MB/s.
pub async fn throughput_parallel(addr: SocketAddr, streams: usize, bytes: u64) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| tokio::spawn(throughput(addr, bytes)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (streams as u64 * bytes) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Round-trip times of `size`-byte messages on one echo connection.
pub async fn ping_pong(addr: SocketAddr, size: usize, rounds: usize) -> Vec<Duration> {
    ping_pong_on(connect(addr).await, size, rounds).await
}

/// `ping_pong` over a connection the caller made (one bound to a given
/// address, say).
pub async fn ping_pong_on(mut s: TcpStream, size: usize, rounds: usize) -> Vec<Duration> {
    s.set_nodelay(true).unwrap();
    let msg = vec![7u8; size];
    let mut back = vec![0u8; size];
    // Warm-up: the first exchange also carries the channel's start.
    s.write_all(&msg).await.unwrap();
    s.read_exact(&mut back).await.unwrap();
    let mut rtts = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
        rtts.push(t.elapsed());
    }
    rtts
}

/// Time from connect() to the first echoed byte, per new connection.
pub async fn first_byte(addr: SocketAddr, samples: usize, gap: Duration) -> Vec<Duration> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let s = echo_one(addr).await;
        out.push(t.elapsed());
        drop(s);
        // Players do not arrive back to back; give the pool its chance.
        tokio::time::sleep(gap).await;
    }
    out
}

/// Completed connect → 1-byte echo → close cycles per second, `workers`
/// at a time for `dur`.
pub async fn connection_rate(addr: SocketAddr, workers: usize, dur: Duration) -> f64 {
    let end = Instant::now() + dur;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    let _s = echo_one(addr).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / dur.as_secs_f64()
}

/// Opens `n` players that each echo one byte and then stay idle; returns
/// how many failed.
pub async fn idle_players(addr: SocketAddr, n: usize, into: &mut Vec<TcpStream>) -> usize {
    let (mut opened, mut failed) = (0, 0);
    while opened < n {
        let batch = (n - opened).min(200);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                tokio::spawn(async move {
                    let mut s = TcpStream::connect(addr).await?;
                    s.write_all(b"x").await?;
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await?;
                    Ok::<_, std::io::Error>(s)
                })
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Ok(s) => into.push(s),
                Err(_) => failed += 1,
            }
        }
        opened += batch;
    }
    failed
}

pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i.min(samples.len() - 1)]
}

// A total order, so a NaN (a run that measured nothing) cannot panic the
// report; finite figures sort as before.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
