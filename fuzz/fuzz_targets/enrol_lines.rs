//! The enrol door's plain lines before TLS (`ferry::enrol::lines`): the
//! `ferry-enrol/1 ID` line the hub reads from anyone on the internet, and
//! the `ca HEX` / `no REASON` answer the ep reads from whoever answers on
//! the door's port. The input is the bytes sent. Checked, for both:
//!
//! - the answer is decided by a prefix and never changes as more bytes
//!   come (so the readers, a byte or a chunk at a time, give the same
//!   whatever the split), always by the cap, and the line taken is within
//!   the cap and ends at its `\n`;
//! - what was read, written again as its sender writes it, reads back
//!   equal; `unhex` and `hex` agree.

#![no_main]

use ferry::enrol::{
    HELLO, hex,
    lines::{Answer, MAX_ANSWER, MAX_HELLO, answer, hello},
    unhex,
};
use libfuzzer_sys::fuzz_target;
use std::fmt::Debug;

/// `parse` over prefixes of `data`: undecided, then decided for good,
/// and decided by `cap` bytes. Every prefix of the first 512 bytes, then
/// every 61st (every one of a 64 KiB line is slow) and the cap's, then
/// 16 after the first decided one.
fn prefixes<T: PartialEq + Debug, E: PartialEq + Debug>(
    data: &[u8],
    cap: usize,
    parse: impl Fn(&[u8]) -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let whole = parse(data);
    let end = data.len().min(cap + 4);
    let mut cuts: Vec<usize> = (0..=end.min(512)).chain((512..=end).step_by(61)).collect();
    cuts.extend([cap - 1, cap, cap + 1].into_iter().filter(|k| *k <= end));
    cuts.sort_unstable();
    cuts.dedup();
    let mut decided = None;
    for k in cuts {
        let part = parse(&data[..k]);
        if part.as_ref().is_ok_and(Option::is_none) {
            assert!(decided.is_none(), "undecided at {k} after {decided:?}");
            continue;
        }
        assert_eq!(part, whole, "cut at {k}");
        if decided.is_none() {
            decided = Some(k);
            for k in k..=(k + 16).min(data.len()) {
                assert_eq!(parse(&data[..k]), whole, "cut at {k}");
            }
        }
    }
    if data.len() >= cap {
        assert!(decided.is_some_and(|k| k <= cap), "undecided at the cap");
    }
    whole
}

fn the_hub_side(data: &[u8]) {
    let got = prefixes(data, MAX_HELLO, hello);
    if let Ok(Some((id, used))) = got {
        assert!(used <= MAX_HELLO && data[used - 1] == b'\n');
        assert!(!data[..used - 1].contains(&b'\n'));
        assert_eq!(id, id.trim());
        let line = format!("{HELLO} {id}\n");
        if line.len() <= MAX_HELLO {
            assert_eq!(hello(line.as_bytes()), Ok(Some((id, line.len()))));
        }
    }
}

fn the_ep_side(data: &[u8]) {
    let got = prefixes(data, MAX_ANSWER + 1, answer);
    if let Ok(Some((a, used))) = got {
        assert!(used <= MAX_ANSWER + 1 && data[used - 1] == b'\n');
        let line = match &a {
            Answer::Ca(der) => format!("ca {}\n", hex(der)),
            Answer::No(why) => format!("no {why}\n"),
        };
        if line.len() <= MAX_ANSWER + 1 {
            assert_eq!(answer(line.as_bytes()), Ok(Some((a, line.len()))));
        }
    }
}

fn hex_codec(data: &[u8]) {
    assert_eq!(unhex(&hex(data)).as_deref(), Some(data));
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(bytes) = unhex(s)
    {
        assert_eq!(hex(&bytes), s.to_ascii_lowercase());
    }
}

fuzz_target!(|data: &[u8]| {
    the_hub_side(data);
    the_ep_side(data);
    hex_codec(data);
});
