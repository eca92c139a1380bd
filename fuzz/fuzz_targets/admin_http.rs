//! The admin door's HTTP request reader (`ferry::admin::http::parse`),
//! open to anyone who can reach the admin port (`admin.bind` need not be
//! loopback) before the token is checked. The input is the bytes sent.
//! Checked:
//!
//! - the answer is decided by a prefix and never changes as more bytes
//!   come, so the door's read loop gives the same whatever the split;
//!   it is always decided by `MAX_REQUEST` bytes, and no byte past them
//!   counts;
//! - the method, path and token read, written again as a client writes
//!   them (the token escaped in the query, as the page's script sends it),
//!   read back equal;
//! - a request that names the door by an address (which a door without a
//!   token answers: a page that rebinds its own DNS name sends that name)
//!   carries no Host, or `localhost`, or an address's characters only,
//!   with at most a port in digits.

#![no_main]

use ferry::admin::http::{MAX_REQUEST, Request, parse};
use ferry_fuzz::by_prefixes;
use libfuzzer_sys::fuzz_target;

/// Comparable without `Debug` on `Request` (it holds the token).
type Seen = Result<Option<(String, String, Option<String>)>, String>;

fn seen(r: Result<Option<Request>, String>) -> Seen {
    r.map(|o| o.map(|r| (r.method, r.path, r.token)))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(r)) = parse(data)
        && r.names_an_address()
        && let Some(h) = &r.host
    {
        let h = h.to_ascii_lowercase();
        // Any `:digits` at the end is the port.
        let name = match h.rsplit_once(':') {
            Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => h.as_str(),
        };
        assert!(
            name == "localhost"
                || name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b":.[]".contains(&b)),
            "{h:?}"
        );
    }
    // Nothing past MAX_REQUEST counts.
    let whole = seen(parse(data));
    assert_eq!(seen(parse(&data[..data.len().min(MAX_REQUEST)])), whole);
    // The door reads until `parse` decides.
    let whole = by_prefixes(data, MAX_REQUEST, |d| seen(parse(d)), |r| *r == Ok(None));
    let Ok(Some((method, path, token))) = whole else {
        return;
    };
    assert!(!method.contains(' ') && !path.contains(' ') && !path.contains('?'));
    // Written again, with the token in the query as the page's script
    // sends it to its event stream (`encodeURIComponent`).
    let query = match &token {
        Some(t) => format!("?token={}", uri_component(t)),
        None => String::new(),
    };
    let again = format!("{method} {path}{query} HTTP/1.1\r\nHost: x\r\n\r\n");
    if again.len() <= MAX_REQUEST {
        let r = seen(parse(again.as_bytes())).unwrap().unwrap();
        assert_eq!((&r.0, &r.1), (&method, &path), "{again:?}");
        if !query.is_empty() {
            assert_eq!(r.2, token);
        }
    }
});

/// `t` as `encodeURIComponent` writes it (every byte but the unreserved
/// ones escaped; it also keeps `!'()*`, which mean nothing to the door).
fn uri_component(t: &str) -> String {
    t.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
