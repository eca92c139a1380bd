//! The invite line `ferry1:HOST:PORT[,HOST…]/CA/ID.SECRET` (`ferry::enrol::Line`),
//! pasted by a person from wherever it was sent (a chat, a mail). The
//! input is the text. Checked:
//!
//! - a line read is printed back as a line that reads back equal;
//! - the same with whitespace around it (as pasted);
//! - its parts are what the line's shape promises: hex of the right
//!   lengths, lowercase, a door that splits into a host and a port, and
//!   further hubs that are hosts only (no port, no separator); every host
//!   a name or an address (no control character to print).

#![no_main]

use ferry::{config::split_host_port, enrol::Line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(line) = Line::parse(text) else {
        return;
    };
    let printed = line.to_string();
    assert_eq!(Line::parse(&printed).unwrap(), line, "{printed:?}");
    assert_eq!(Line::parse(&format!(" \t{printed}\r\n")).unwrap(), line);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert!(hex(&line.ca, 32) && hex(&line.id, 16) && hex(&line.secret, 32));
    let (door_host, _) = split_host_port(&line.door).unwrap();
    assert!(ferry::enrol::line_host(&door_host).is_some(), "{door_host:?}");
    for h in &line.more {
        assert_eq!(ferry::enrol::line_host(h).as_deref(), Some(h.as_str()));
        assert!(!h.contains(['/', ',', '"', '\\']), "{h:?}");
    }
});
