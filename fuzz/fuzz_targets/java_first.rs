//! A Minecraft Java port's first packet (`ferry::game::java::first`):
//! the Handshake (VarInt framing, the address typed, Forge's suffix) or
//! the legacy 0xFE ping, read from anyone before routing. Checked:
//!
//! - the answer is decided by a prefix and never changes as more bytes
//!   come (so the hub's read loop gives the same whatever the split), and
//!   is always decided by `MAX_FIRST` bytes (the loop's own "longer than
//!   8 KiB" refusal is unreachable), except the start of a legacy ping
//!   (`legacy_prefix`), which the loop decides by the silence after it;
//! - the bytes a handshake took are within the input and `MAX_FIRST`; the
//!   handshake encoded again reads back equal, and no longer;
//! - `read_varint`: bounded to 5 bytes, decided by a prefix, and
//!   `write_varint` of its value reads back equal (byte for byte when the
//!   input's encoding was the shortest);
//! - `normalise_host` yields a lowercase prefix of the name without its
//!   `\0` suffix, one trailing dot dropped at most (as proxies drop one).

#![no_main]

use ferry::game::{
    java::{First, Handshake, MAX_FIRST, Next, first, legacy_prefix, normalise_host},
    read_varint, write_varint,
};
use libfuzzer_sys::fuzz_target;

fn varint(data: &[u8]) {
    let whole = read_varint(data);
    for k in 0..data.len().min(6) {
        let part = read_varint(&data[..k]);
        assert!(part.is_ok_and(|p| p.is_none()) || part == whole, "cut {k}");
    }
    if let Ok(Some((v, n))) = whole {
        assert!(n <= 5 && n <= data.len());
        let mut w = Vec::new();
        write_varint(&mut w, v);
        assert_eq!(read_varint(&w), Ok(Some((v, w.len()))));
        assert!(w.len() <= n);
        if n == 1 || data[n - 1] != 0 {
            assert_eq!(w, data[..n], "the shortest encoding");
        }
    }
}

fn host(address: &str) {
    let h = normalise_host(address);
    assert!(!h.contains('\0'));
    assert!(!h.bytes().any(|b| b.is_ascii_uppercase()));
    assert!(address.to_ascii_lowercase().starts_with(&h));
    // One trailing dot goes, as a proxy at home takes one off: no more.
    let name = address.split('\0').next().unwrap_or_default();
    assert!(h.len() + 1 >= name.len(), "at most one dot dropped");
    if !h.ends_with('.') {
        assert_eq!(normalise_host(&format!("{h}.")), h, "a trailing dot");
    }
}

fn encode(h: &Handshake) -> Vec<u8> {
    let mut body = Vec::new();
    write_varint(&mut body, 0);
    write_varint(&mut body, h.protocol);
    write_varint(&mut body, h.address.len() as i32);
    body.extend_from_slice(h.address.as_bytes());
    body.extend_from_slice(&h.port.to_be_bytes());
    let next = match h.next {
        Next::Status => 1,
        Next::Login => 2,
        Next::Transfer => 3,
    };
    write_varint(&mut body, next);
    let mut out = Vec::new();
    write_varint(&mut out, body.len() as i32);
    out.extend_from_slice(&body);
    out
}

fuzz_target!(|data: &[u8]| {
    varint(data);
    host(&String::from_utf8_lossy(data));

    let whole = first(data);
    // Decided by a prefix, and then for good: the hub reads until it is.
    let mut decided = None;
    for k in 0..=data.len().min(MAX_FIRST + 8) {
        let part = first(&data[..k]);
        match (&part, decided) {
            (Ok(None), None) => {}
            (Ok(None), Some(at)) => panic!("undecided at {k} after deciding at {at}"),
            _ => {
                assert_eq!(part, whole, "cut at {k}");
                // A few more cuts after the first decided one (and the
                // whole input) keep a long input quick.
                if *decided.get_or_insert(k) + 16 < k {
                    break;
                }
            }
        }
    }
    if legacy_prefix(data) {
        assert_eq!(whole, Ok(None));
    }
    if data.len() >= MAX_FIRST {
        assert!(decided.is_some_and(|k| k <= MAX_FIRST), "{decided:?}");
    }
    match whole {
        Ok(Some((First::Legacy, used))) => assert_eq!((data[0], used), (0xfe, 0)),
        Ok(Some((First::Handshake(h), used))) => {
            assert!(used <= MAX_FIRST && used <= data.len());
            assert_eq!(decided, Some(used), "decided by its last byte");
            host(&h.address);
            let again = encode(&h);
            assert!(again.len() <= used);
            assert_eq!(first(&again), Ok(Some((First::Handshake(h), again.len()))));
        }
        Ok(None) => assert!(data.len() < MAX_FIRST),
        Err(_) => {}
    }
});
