//! Datagrams over a channel (`ferry::datagram`): a u16 length and the
//! bytes, read by `datagram::read` on both ends of a UDP flow. Checked,
//! with the input as the stream a peer sends:
//!
//! - the same datagrams and the same end whatever the split of the bytes;
//! - the datagrams read, encoded again, are exactly the bytes taken (the
//!   framing is canonical), and a read takes nothing past its frame;
//! - no allocation beyond one datagram of the largest size (`MAX`);
//!
//! and with the input cut into a list of datagrams (sizes up to `MAX`):
//! `read` of `encode` gives the list back, whatever the split.

#![no_main]

use ferry::datagram::{self, MAX};
use ferry_fuzz::{Chunks, Largest, Split, run, splits};
use libfuzzer_sys::fuzz_target;

/// Datagrams until the stream ends (or ends inside a frame: an error).
fn read_all(data: &[u8], split: Split) -> (Vec<Vec<u8>>, Option<std::io::ErrorKind>, usize) {
    let mut rd = Chunks::new(data, split);
    let mut got = Vec::new();
    loop {
        let before = rd.taken;
        match run(datagram::read(&mut rd)) {
            Ok(Some(d)) => {
                assert_eq!(rd.taken - before, 2 + d.len(), "one frame taken");
                got.push(d);
            }
            Ok(None) => return (got, None, rd.taken),
            Err(e) => return (got, Some(e.kind()), rd.taken),
        }
    }
}

/// The input as a list of datagrams: a byte gives each one's size
/// (255: the next two bytes do, up to `MAX`), its bytes follow (repeated
/// when the input runs short, so every size is reachable).
fn list(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() && out.len() < 64 {
        let mut n = data[i] as usize;
        i += 1;
        if n == 255 && i + 2 <= data.len() {
            n = u16::from_be_bytes([data[i], data[i + 1]]) as usize;
            i += 2;
        }
        let rest = &data[i..];
        let d: Vec<u8> = if rest.is_empty() {
            vec![0xa5; n]
        } else {
            rest.iter().copied().cycle().take(n).collect()
        };
        i += n.min(rest.len());
        out.push(d);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    Largest::reset();
    let whole = read_all(data, Split::Whole);
    // A frame claiming 64 KiB is allocated at its size before its bytes
    // come (by design: one datagram of any UDP size), never more.
    assert!(Largest::get() <= MAX, "allocated {}", Largest::get());
    let (got, end, taken) = &whole;
    if end.is_some() {
        assert_eq!(*end, Some(std::io::ErrorKind::UnexpectedEof));
    }
    let mut again = Vec::new();
    for d in got {
        datagram::encode(&mut again, d);
    }
    assert_eq!(again, data[..again.len()], "canonical framing");
    assert_eq!(*taken, data.len());
    for split in splits(data, 64) {
        assert_eq!(read_all(data, split), whole, "split {split:?}");
    }

    let sent = list(data);
    let mut stream = Vec::new();
    for d in &sent {
        datagram::encode(&mut stream, d);
    }
    // A byte at a time only while that stays quick.
    let small = if stream.len() <= 1 << 16 { 1 } else { 997 };
    for split in [Split::Whole, Split::Every(small), Split::Every(1500)] {
        let (back, end, _) = read_all(&stream, split);
        assert_eq!((back.len(), end), (sent.len(), None), "split {split:?}");
        assert!(back == sent, "the datagrams changed, split {split:?}");
    }
});
