//! A Minecraft Bedrock port's datagrams while home is away: the hub
//! answers RakNet's Unconnected Ping (`ferry::game::bedrock::ping_time`)
//! with a pong; any datagram on a public UDP port reaches it, from any
//! (forgeable) source. The input is one datagram. Checked:
//!
//! - `ping_time` answers exactly for an Unconnected Ping (id 0x01 or
//!   0x02, at least 33 bytes, the offline magic at 9..25), with the
//!   datagram's own time field, and reads nothing else;
//! - the pong carries that time and the magic, and its string length
//!   matches what follows it;
//! - the pong is bounded whatever the datagram (no amplification beyond
//!   the MOTD the hub is configured with).

#![no_main]

use ferry::game::bedrock::{MAGIC, Pong, ping_time};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let is_ping = data.len() >= 33 && matches!(data[0], 1 | 2) && data[9..25] == MAGIC;
    let time = ping_time(data);
    assert_eq!(time.is_some(), is_ping);
    let Some(time) = time else { return };
    assert_eq!(time, data[1..9]);
    // The same answer whatever follows the fields (RakNet pads pings).
    assert_eq!(ping_time(&data[..33]), Some(time));

    // The MOTD is the operator's, not the player's: any text from the
    // input stands in for it.
    let motd = String::from_utf8_lossy(&data[33..]);
    let pong = Pong {
        motd: &motd,
        guid: u64::from_be_bytes(data[25..33].try_into().unwrap()),
        port: 19132,
    }
    .answer(time);
    assert_eq!(pong[0], 0x1c);
    assert_eq!(pong[1..9], time);
    assert_eq!(pong[17..33], MAGIC);
    let n = u16::from_be_bytes([pong[33], pong[34]]) as usize;
    assert_eq!(pong.len(), 35 + n);
    let text = std::str::from_utf8(&pong[35..]).unwrap();
    let fields: Vec<&str> = text.split(';').collect();
    assert_eq!(fields[0], "MCPE");
    // A MOTD's `;` would shift the fields, and a second line has no place.
    assert_eq!(fields.len(), 13, "{text:?}");
    assert!(!fields[1].contains('\n'));
    assert!(pong.len() <= 35 + motd.len() + 128);
});
