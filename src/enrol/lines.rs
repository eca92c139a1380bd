//! The two plain-text lines before the enrol door's TLS: the ep's
//! `ferry-enrol/1 ID\n`, which the hub reads from anyone, and the door's
//! `ca HEX\n` or `no REASON\n`, which the ep reads from whoever answers on
//! that port. Pure functions over the bytes read so far, so the socket
//! code, the tests and the fuzz targets (`fuzz/`) share one parser.

use super::{HELLO, unhex};

/// The most the hub reads of the ep's line, its `\n` included: the prefix
/// and a 16-hex-digit id are 31 bytes.
pub const MAX_HELLO: usize = 64;

/// The invite id in the ep's first line and the bytes the line took;
/// `Ok(None)` until its `\n` arrives. Only the first `MAX_HELLO` bytes
/// count, so a reader stops there.
pub fn hello(buf: &[u8]) -> Result<Option<(String, usize)>, &'static str> {
    let Some(end) = buf.iter().take(MAX_HELLO).position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_HELLO {
            Err("first line too long")
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| "not text")?;
    let id = line
        .strip_prefix(HELLO)
        .map(str::trim)
        .ok_or("not an enrolment request")?;
    Ok(Some((id.to_string(), end + 1)))
}

/// The door's answer is one certificate (a few kilobytes in hex) or a
/// reason. It comes before anything is authenticated, so whoever answers
/// on that port could otherwise send one endless line into the ep's
/// memory: the line may hold this many bytes before its `\n`.
pub const MAX_ANSWER: usize = 64 * 1024;

/// What the door said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `ca HEX`: the hub's CA certificate (DER), to check against the line.
    Ca(Vec<u8>),
    /// `no REASON`: the invite is refused.
    No(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAnswer {
    /// No `\n` within `MAX_ANSWER + 1` bytes.
    TooLong,
    NotText,
    /// Text, but neither `ca HEX` nor `no REASON`.
    Nonsense,
}

/// The door's answer and the bytes its line took; `Ok(None)` until its
/// `\n` arrives. Only the first `MAX_ANSWER + 1` bytes count.
pub fn answer(buf: &[u8]) -> Result<Option<(Answer, usize)>, BadAnswer> {
    let Some(end) = buf.iter().take(MAX_ANSWER + 1).position(|&b| b == b'\n') else {
        return if buf.len() > MAX_ANSWER {
            Err(BadAnswer::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| BadAnswer::NotText)?
        .trim();
    let answer = match line.strip_prefix("no ") {
        Some(why) => Answer::No(why.to_string()),
        None => Answer::Ca(
            line.strip_prefix("ca ")
                .and_then(unhex)
                .ok_or(BadAnswer::Nonsense)?,
        ),
    };
    Ok(Some((answer, end + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_line_waits_for_its_end_and_stops_at_the_cap() {
        let line = b"ferry-enrol/1 0011223344556677\n";
        for cut in 0..line.len() {
            assert_eq!(hello(&line[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            hello(line),
            Ok(Some(("0011223344556677".into(), line.len())))
        );
        assert_eq!(hello(&[b'a'; MAX_HELLO]), Err("first line too long"));
        let mut last = vec![b'a'; MAX_HELLO - 1];
        last.push(b'\n');
        assert_eq!(hello(&last), Err("not an enrolment request"));
        assert_eq!(hello(b"ferry-enrol/1 \xff\n"), Err("not text"));
    }

    #[test]
    fn the_answer_line() {
        assert_eq!(
            answer(b"ca 00ff\n"),
            Ok(Some((Answer::Ca(vec![0, 0xff]), 8)))
        );
        assert_eq!(
            answer(b"no used \r\nrest"),
            Ok(Some((Answer::No("used".into()), 10)))
        );
        assert_eq!(answer(b"ca 0\n"), Err(BadAnswer::Nonsense));
        assert_eq!(answer(b"\xc3\n"), Err(BadAnswer::NotText));
        // A line of exactly MAX_ANSWER bytes is read; one more is not.
        let mut long = b"no ".to_vec();
        long.resize(MAX_ANSWER, b'x');
        assert_eq!(answer(&long), Ok(None));
        long.push(b'x');
        assert_eq!(answer(&long), Err(BadAnswer::TooLong));
        long.pop();
        long.push(b'\n');
        assert!(matches!(answer(&long), Ok(Some((Answer::No(_), n))) if n == MAX_ANSWER + 1));
    }
}
