//! What follows a Minecraft Java handshake when the hub answers itself:
//! the status request and the ping (read by the hub's game door with
//! `ferry::game::java::packet` and a 64-byte cap), then the pong it
//! writes. The input is the bytes after the handshake. Checked, for the
//! hub's cap, `MAX_FIRST` and no cap:
//!
//! - each packet is within the cap and the input; framed again, it reads
//!   back the same id and body, in no more bytes;
//! - read as the hub reads (64-byte chunks into a buffer it drains), and a
//!   byte at a time, the packets are the same as from the whole input,
//!   and the buffer never holds more than the cap and one chunk;
//! - a ping's pong is the payload echoed, and only for 8 bytes.

#![no_main]

use ferry::game::{
    java::{Junk, MAX_FIRST, packet, pong},
    read_varint, write_varint,
};
use libfuzzer_sys::fuzz_target;

/// The hub's cap for the status request and the ping.
const STATUS: usize = 64;

type Got = Result<(i32, Vec<u8>), Junk>;

/// Packets from the whole input, then the reason it stopped (`None`: the
/// input ended inside a packet, or between two).
fn whole(data: &[u8], max: usize) -> Vec<Got> {
    let (mut at, mut out) = (0, Vec::new());
    loop {
        match packet(&data[at..], max) {
            Ok(Some((id, body, used))) => {
                assert!(used <= max && used <= data.len() - at);
                check(id, body, used);
                out.push(Ok((id, body.to_vec())));
                at += used;
            }
            Ok(None) => return out,
            Err(j) => {
                out.push(Err(j));
                return out;
            }
        }
    }
}

/// As the hub's conversation reads: `chunk` bytes at a time into a
/// buffer, each whole packet drained from its front.
fn chunked(data: &[u8], max: usize, chunk: usize) -> Vec<Got> {
    let (mut buf, mut fed, mut out) = (Vec::new(), 0, Vec::new());
    loop {
        match packet(&buf, max) {
            Ok(Some((id, body, used))) => {
                out.push(Ok((id, body.to_vec())));
                buf.drain(..used);
            }
            Ok(None) if fed == data.len() => return out,
            Ok(None) => {
                let n = chunk.min(data.len() - fed);
                buf.extend_from_slice(&data[fed..fed + n]);
                fed += n;
                assert!(buf.len() < max.saturating_add(chunk), "{} held", buf.len());
            }
            Err(j) => {
                out.push(Err(j));
                return out;
            }
        }
    }
}

fn check(id: i32, body: &[u8], used: usize) {
    let mut inner = Vec::new();
    write_varint(&mut inner, id);
    inner.extend_from_slice(body);
    let mut framed = Vec::new();
    write_varint(&mut framed, inner.len() as i32);
    framed.extend_from_slice(&inner);
    assert!(framed.len() <= used);
    let (id2, body2, used2) = packet(&framed, usize::MAX).unwrap().unwrap();
    assert_eq!((id2, body2, used2), (id, body, framed.len()));
    if id == 1 {
        match pong(body) {
            Ok(p) => {
                assert_eq!(body.len(), 8);
                assert_eq!(packet(&p, STATUS), Ok(Some((1, body, p.len()))));
            }
            Err(_) => assert_ne!(body.len(), 8),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The length prefix is a VarInt: its own checks are in java_first.
    let _ = read_varint(data);
    for max in [STATUS, MAX_FIRST, usize::MAX] {
        let all = whole(data, max);
        for chunk in [64, 1, 5] {
            assert_eq!(chunked(data, max, chunk), all, "max {max}, chunk {chunk}");
        }
    }
});
