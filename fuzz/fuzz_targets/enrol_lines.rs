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
use ferry_fuzz::by_prefixes;
use libfuzzer_sys::fuzz_target;

fn undecided<T, E>(r: &Result<Option<T>, E>) -> bool {
    matches!(r, Ok(None))
}

fn the_hub_side(data: &[u8]) {
    let got = by_prefixes(data, MAX_HELLO, hello, undecided);
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
    let got = by_prefixes(data, MAX_ANSWER + 1, answer, undecided);
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
