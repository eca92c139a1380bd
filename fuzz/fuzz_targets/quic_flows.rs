//! A QUIC connection's UDP flows (`ferry::quic::flows`): the datagrams a
//! peer sends (an ep to its hub, a hub to its ep) tagged with a flow id,
//! delivered to the flow's sink or held early until the flow opens. The
//! input is a list of operations: datagrams for a few flows or for any of
//! thousands, short or bare datagrams, flows opening (their early
//! datagrams delivered first, in one turn where `Link::register` may take
//! a few) and closing, time passing.
//! Checked after every operation:
//!
//! - what is held early is counted right (the total the bounds are judged
//!   by equals the bytes held), within the bounds in all and per flow, and
//!   what a flow's opening takes leaves the total by exactly its bytes;
//! - a flow's datagrams reach its sink in the order they were sent, early
//!   ones before live ones, a live one at once; none reaches a flow that
//!   is not open;
//! - no allocation beyond one datagram of the largest size.

#![no_main]

use ferry::quic::flows::{self, Flows, Sink};
use ferry_fuzz::Largest;
use libfuzzer_sys::fuzz_target;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Per flow, the last sequence number its sink was given.
type Seen = Arc<Mutex<HashMap<u32, u64>>>;

/// A datagram for flow `id` carrying sequence number `seq` in its first
/// eight payload bytes, `len` payload bytes in all (shorter: no number).
fn datagram(id: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut d = id.to_be_bytes().to_vec();
    let mut payload = seq.to_be_bytes().to_vec();
    payload.resize(len, 0x5a);
    d.extend_from_slice(&payload[..len]);
    d
}

fn sink(id: u32, seen: &Seen) -> Sink {
    let seen = seen.clone();
    Arc::new(move |p: &[u8]| {
        let Some(seq) = p
            .get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
        else {
            return;
        };
        let mut seen = seen.lock().unwrap();
        let last = seen.entry(id).or_insert(0);
        assert!(seq > *last, "flow {id}: {seq} after {last}");
        *last = seq;
    })
}

fn check(f: &Flows) {
    let (mut flows, mut counted, mut held) = (0, 0, 0);
    for (n, c, h) in f.early_held() {
        assert_eq!(c, h, "a flow's bytes miscounted");
        assert!(n <= flows::EARLY_PER_FLOW && h <= flows::EARLY_BYTES_PER_FLOW);
        (flows, counted, held) = (flows + 1, counted + c, held + h);
    }
    assert_eq!(f.early_bytes(), counted, "the total miscounted");
    assert!(held <= flows::EARLY_BYTES && flows <= flows::EARLY_FLOWS);
}

fuzz_target!(|data: &[u8]| {
    Largest::reset();
    let (mut f, seen): (Flows, Seen) = Default::default();
    // Each open flow's sink, to close it as its registration does.
    let mut opened: HashMap<u32, Sink> = HashMap::new();
    let start = Instant::now();
    let (mut now, mut seq) = (start, 0u64);
    let mut bytes = data.iter().copied();
    while let (Some(op), Some(b)) = (bytes.next(), bytes.next()) {
        let wide = || u32::from(b) << 8 | u32::from(op);
        let (id, d) = match op % 6 {
            0 | 1 => {
                let id = if op % 6 == 0 {
                    u32::from(b % 8)
                } else {
                    wide()
                };
                let len =
                    u16::from_be_bytes([bytes.next().unwrap_or(0), bytes.next().unwrap_or(8)]);
                seq += 1;
                (id, datagram(id, seq, usize::from(len)))
            }
            2 => {
                let id = u32::from(b % 8);
                let s = sink(id, &seen);
                let held = f.early_bytes();
                let early = f.take_early(id);
                let taken: usize = early.iter().map(Vec::len).sum();
                assert_eq!(f.early_bytes(), held - taken, "taken, not counted");
                f.open(id, s.clone());
                opened.insert(id, s.clone());
                early.iter().for_each(|d| s(d));
                check(&f);
                continue;
            }
            3 => {
                let id = u32::from(b % 8);
                if let Some(s) = opened.remove(&id) {
                    f.close_if(id, &s);
                }
                continue;
            }
            4 => {
                now += Duration::from_millis(u64::from(b) * 50);
                continue;
            }
            _ => (u32::MAX, bytes.by_ref().take(usize::from(b % 8)).collect()),
        };
        let before = seen.lock().unwrap().get(&id).copied();
        let live = f.arrived(&d, || now);
        assert_eq!(live.is_some(), flows::id(&d).is_some_and(|i| f.is_open(i)));
        match live {
            Some(s) => {
                s(flows::payload(&d));
                if flows::payload(&d).len() >= 8 {
                    assert_eq!(seen.lock().unwrap().get(&id), Some(&seq), "not at once");
                }
            }
            None => assert_eq!(seen.lock().unwrap().get(&id).copied(), before),
        }
        check(&f);
    }
    // One datagram (4 + 65,535 bytes) is the largest; the next is the
    // early map at 256 flows (up to 1,024 buckets of 56 bytes after churn,
    // ~58 KB): a larger `Early` would need this bound restated.
    assert!(
        Largest::get() <= 65_535 + 4 + 64,
        "allocated {}",
        Largest::get()
    );
});
