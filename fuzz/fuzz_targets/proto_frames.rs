//! The control and channel doors' frames (`ferry::proto`): a u32 length
//! and a JSON message, read by `FrameReader` (control) and `read_msg`
//! (a channel's ticket line, `Start`, logins, the enrol exchange). The
//! input is the byte stream a peer sends. Checked:
//!
//! - `FrameReader` yields the same messages and the same error whatever
//!   the split of the bytes (whole, a byte at a time, every single cut of
//!   a short input, random chunks);
//! - `read_msg` called frame after frame yields the same (unknown message
//!   types included, which `FrameReader` skips), and takes exactly each
//!   frame's bytes, never one beyond: a channel's next bytes are a player's;
//! - a length over `MAX_FRAME` is refused after its four bytes, and no
//!   allocation grows with the length a peer claims;
//! - every message decoded re-encodes to a message equal to it, and that
//!   encoding is canonical (encoding it again gives the same bytes).

#![no_main]

use ferry::{
    enrol::{Reply, Request},
    proto::{EpMsg, FrameError, FrameReader, HubMsg, MAX_FRAME, Message, read_msg, write_msg},
};
use ferry_fuzz::{Chunks, Largest, Split, run, splits};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;

/// What a read gave, errors by their text (the length refused, the JSON
/// error and its position).
type Outcome<T> = Result<T, String>;

/// Reads until the stream ends or a frame is refused; a malformed frame
/// is consumed whole, so reading goes on past it (up to a bound).
fn with_reader<T: Message>(data: &[u8], split: Split) -> Vec<Outcome<T>> {
    let mut rd = FrameReader::new(Chunks::new(data, split));
    let mut out = Vec::new();
    while out.len() < 4096 {
        match run(rd.read::<T>()) {
            Ok(m) => out.push(Ok(m)),
            Err(e @ FrameError::Malformed(_)) => out.push(Err(e.to_string())),
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    out
}

/// The same with `read_msg`, checking what each read took.
fn with_read_msg<T: Message>(data: &[u8], split: Split) -> Vec<Outcome<T>> {
    let mut rd = Chunks::new(data, split);
    let mut out = Vec::new();
    while out.len() < 4096 {
        let before = rd.taken;
        let got = run(read_msg::<_, T>(&mut rd));
        let took = rd.taken - before;
        let claimed = data
            .get(before..before + 4)
            .map(|l| u32::from_be_bytes(l.try_into().unwrap()) as usize);
        match (&got, claimed) {
            (Err(FrameError::Closed), _) => assert_eq!(rd.taken, data.len()),
            (Err(FrameError::TooLarge(n)), Some(c)) => {
                assert_eq!((*n, took), (c, 4), "refused after the length only")
            }
            (_, Some(c)) => assert_eq!(took, 4 + c, "read_msg took one frame"),
            (_, None) => panic!("a frame without its length: {:?}", got.is_ok()),
        }
        let end = !matches!(got, Ok(_) | Err(FrameError::Malformed(_)));
        out.push(got.map_err(|e| e.to_string()));
        if end {
            break;
        }
    }
    out
}

fn check<T>(data: &[u8])
where
    T: Message + Serialize + PartialEq + Debug,
{
    Largest::reset();
    let whole = with_reader::<T>(data, Split::Whole);
    // A claimed length never sizes an allocation: a frame is at most
    // MAX_FRAME and its message is decoded from it (serde's buffering of
    // an internally tagged enum costs a few times the frame, not more).
    assert!(
        Largest::get() <= 64 * MAX_FRAME,
        "allocated {} bytes",
        Largest::get()
    );
    for split in splits(data, 128) {
        assert_eq!(
            with_reader::<T>(data, split),
            whole,
            "FrameReader split {split:?}"
        );
    }
    for split in [Split::Whole, Split::Every(1)] {
        let mut by_msg = with_read_msg::<T>(data, split);
        by_msg.retain(|m| !m.as_ref().is_ok_and(T::is_unknown));
        assert_eq!(by_msg, whole, "read_msg split {split:?}");
    }
    for m in whole.iter().flatten() {
        round_trip(m);
    }
}

/// `m` encoded by ferry's own writer decodes to `m`, and encodes again to
/// the same bytes.
fn round_trip<T>(m: &T)
where
    T: Message + Serialize + PartialEq + Debug,
{
    let mut frame = Vec::new();
    match run(write_msg(&mut frame, m)) {
        Ok(()) => {}
        // A message may grow when re-encoded (an IPv4-mapped address is
        // written longer than it may be sent); the writer refuses it.
        Err(FrameError::TooLarge(n)) => {
            assert!(n > MAX_FRAME);
            return;
        }
        Err(e) => panic!("cannot encode {m:?}: {e}"),
    }
    let again: T = run(read_msg(&mut Chunks::new(&frame, Split::Whole))).unwrap();
    assert_eq!(&again, m);
    let mut second = Vec::new();
    run(write_msg(&mut second, &again)).unwrap();
    assert_eq!(second, frame, "the encoding is canonical");
}

/// The enrol exchange's messages (no `PartialEq`: compared as JSON).
fn check_json<T: DeserializeOwned + Serialize>(data: &[u8]) {
    if let Ok(m) = run(read_msg::<_, T>(&mut Chunks::new(data, Split::Whole))) {
        let v = serde_json::to_value(&m).unwrap();
        let again: T = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), v);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<EpMsg>(data);
    check::<HubMsg>(data);
    check_json::<Request>(data);
    check_json::<Reply>(data);
});
