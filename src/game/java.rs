//! Minecraft Java: the Handshake a client sends first (and the legacy
//! 0xFE server-list ping of clients before 1.7), and the few packets the
//! hub writes when it answers for a server that is away: the status
//! response and pong, and the login Disconnect. Facts from wiki.vg's
//! Handshake, Server List Ping and Login pages.

use super::{read_varint, write_varint};

/// Input that is not what a Minecraft client sends first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Junk(pub &'static str);

/// The most the hub reads before it knows where a player goes. A
/// client's own handshake is under 300 bytes (a 255-character name and a
/// few numbers), but a BungeeCord proxy in front (`ip_forward`) appends
/// the player's address, UUID and signed skin properties to the name:
/// about 1.1 KiB with a skin, more with a cape and other properties.
pub const MAX_FIRST: usize = 8 * 1024;

/// Longest server address a handshake may carry (the protocol's limit is
/// 255 characters; Forge and BungeeCord append to it after a `\0`).
const MAX_ADDRESS_BYTES: usize = MAX_FIRST - 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum First {
    Handshake(Handshake),
    /// A client before 1.7 pinging for the server list (first byte 0xFE).
    Legacy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Status,
    Login,
    /// 1.20.5's transfer from another server: a login.
    Transfer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub protocol: i32,
    /// As sent: may carry Forge's `\0FML…\0` or a proxy's forwarding data.
    pub address: String,
    pub port: u16,
    pub next: Next,
}

impl Handshake {
    /// The name the player typed, as the hub compares it.
    pub fn host(&self) -> String {
        normalise_host(&self.address)
    }

    pub fn is_login(&self) -> bool {
        self.next != Next::Status
    }
}

/// A server address as configured or as sent, compared case-insensitively,
/// without Forge's (or a proxy's) `\0…` suffix or DNS's trailing dot.
/// One dot, as BungeeCord and Velocity take one off: `name..` must not
/// pass a service's `allow` here and reach another server behind a proxy
/// at home.
pub fn normalise_host(address: &str) -> String {
    let name = address.split('\0').next().unwrap_or_default();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// A packet's id, its body, and the bytes it took with its length.
pub type Packet<'a> = (i32, &'a [u8], usize);

/// One whole packet at the start of `buf`, at most `max` bytes with its
/// length prefix: its id, its body and the bytes it took; `Ok(None)` if
/// more bytes are needed. Uncompressed framing (every packet before login
/// succeeds is).
pub fn packet(buf: &[u8], max: usize) -> Result<Option<Packet<'_>>, Junk> {
    let Some((len, n)) = read_varint(buf)? else {
        return Ok(None);
    };
    let len = usize::try_from(len).map_err(|_| Junk("a negative packet length"))?;
    if len == 0 {
        return Err(Junk("an empty packet"));
    }
    if n + len > max {
        return Err(Junk("a packet longer than the hub reads before routing"));
    }
    let Some(frame) = buf.get(n..n + len) else {
        return Ok(None);
    };
    let Some((id, m)) = read_varint(frame)? else {
        return Err(Junk("a packet id cut short"));
    };
    Ok(Some((id, &frame[m..], n + len)))
}

/// What a client sent first, and the bytes it took (a legacy ping takes
/// none: it is answered or passed on whole); `Ok(None)` if more is needed.
///
/// A legacy ping starts 0xFE, but so does a modern packet 254, 382, …
/// bytes long (its length's first VarInt byte), and 254's is `FE 01`, as
/// the 1.4–1.6 pings begin. The third byte tells them apart (0xFA after a
/// 1.6 ping's `FE 01`, a packet id 0 after a handshake's length); before
/// it comes, `legacy_prefix` says whether silence means a legacy ping.
pub fn first(buf: &[u8]) -> Result<Option<(First, usize)>, Junk> {
    if legacy_prefix(buf) {
        return Ok(None);
    }
    if buf.starts_with(&[0xfe, 0x01, 0xfa]) {
        return Ok(Some((First::Legacy, 0)));
    }
    let Some((id, body, used)) = packet(buf, MAX_FIRST)? else {
        return Ok(None);
    };
    if id != 0 {
        return Err(Junk("a first packet that is not a handshake"));
    }
    Ok(Some((First::Handshake(handshake(body)?), used)))
}

/// Whether `buf` is all an older client's legacy ping sends before it
/// waits for the answer (pre-1.4: `FE`; 1.4 and 1.5: `FE 01`) and may
/// still be the start of a longer modern packet: with nothing more after
/// a moment, it is a legacy ping (as the vanilla server decides on what
/// has arrived).
pub fn legacy_prefix(buf: &[u8]) -> bool {
    buf == [0xfe] || buf == [0xfe, 0x01]
}

fn handshake(body: &[u8]) -> Result<Handshake, Junk> {
    let cut = Junk("a handshake cut short");
    let (protocol, a) = read_varint(body)?.ok_or(cut)?;
    let (len, b) = read_varint(&body[a..])?.ok_or(cut)?;
    let len = usize::try_from(len).map_err(|_| Junk("a negative address length"))?;
    if len > MAX_ADDRESS_BYTES {
        return Err(Junk("a server address too long"));
    }
    let at = a + b;
    let raw = body.get(at..at + len).ok_or(cut)?;
    let address = std::str::from_utf8(raw)
        .map_err(|_| Junk("a server address that is not UTF-8"))?
        .to_string();
    let port = body.get(at + len..at + len + 2).ok_or(cut)?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    let (next, c) = read_varint(&body[at + len + 2..])?.ok_or(cut)?;
    if at + len + 2 + c != body.len() {
        return Err(Junk("bytes after the handshake's fields"));
    }
    let next = match next {
        1 => Next::Status,
        2 => Next::Login,
        3 => Next::Transfer,
        _ => return Err(Junk("a handshake asking for an unknown state")),
    };
    Ok(Handshake {
        protocol,
        address,
        port,
        next,
    })
}

fn frame(id: i32, body: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(body.len() + 5);
    write_varint(&mut inner, id);
    inner.extend_from_slice(body);
    let mut out = Vec::with_capacity(inner.len() + 5);
    write_varint(&mut out, inner.len() as i32);
    out.extend_from_slice(&inner);
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 5);
    write_varint(&mut out, s.len() as i32);
    out.extend_from_slice(s.as_bytes());
    out
}

/// What a server list shows for a server the hub answers for.
pub struct Status<'a> {
    pub motd: &'a str,
    /// The version's name, shown only when the protocol does not match.
    pub version: &'a str,
    /// The client's own protocol number, so the entry is not "outdated".
    pub protocol: i32,
    /// `data:image/png;base64,…`
    pub favicon: Option<&'a str>,
}

impl Status<'_> {
    pub fn json(&self) -> String {
        let mut v = serde_json::json!({
            "version": { "name": self.version, "protocol": self.protocol },
            "players": { "max": 0, "online": 0 },
            "description": { "text": self.motd },
        });
        if let Some(f) = self.favicon {
            v["favicon"] = f.into();
        }
        v.to_string()
    }

    /// The status response packet (id 0x00 in the status state).
    pub fn response(&self) -> Vec<u8> {
        frame(0, &string(&self.json()))
    }

    /// The legacy (pre-1.7) answer: 0xFF, then the fields in UTF-16BE.
    pub fn legacy(&self) -> Vec<u8> {
        // Only the first line: the legacy list has no room for more.
        let motd = self.motd.lines().next().unwrap_or_default();
        let text = format!("§1\0127\0{}\0{motd}\00\00", self.version);
        let units: Vec<u16> = text.encode_utf16().collect();
        let mut out = vec![0xff];
        out.extend_from_slice(&(units.len() as u16).to_be_bytes());
        for u in units {
            out.extend_from_slice(&u.to_be_bytes());
        }
        out
    }
}

/// The status state's pong (id 0x01), echoing the client's payload.
pub fn pong(payload: &[u8]) -> Result<Vec<u8>, Junk> {
    if payload.len() != 8 {
        return Err(Junk("a ping whose payload is not 8 bytes"));
    }
    Ok(frame(1, payload))
}

/// The login state's Disconnect (id 0x00): the client shows `text`.
pub fn disconnect(text: &str) -> Vec<u8> {
    let json = serde_json::json!({ "text": text }).to_string();
    frame(0, &string(&json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake_bytes(address: &str, next: i32) -> Vec<u8> {
        let mut body = Vec::new();
        write_varint(&mut body, 763);
        body.extend(string(address));
        body.extend(25565u16.to_be_bytes());
        write_varint(&mut body, next);
        frame(0, &body)
    }

    #[test]
    fn reads_a_handshake_and_what_follows() {
        let mut b = handshake_bytes("Survival.Example.com.\0FML3\0", 2);
        let len = b.len();
        b.extend(frame(0, &string("steve")));
        let (first, used) = first(&b).unwrap().unwrap();
        assert_eq!(used, len);
        let First::Handshake(h) = first else { panic!() };
        assert_eq!(h.host(), "survival.example.com");
        assert_eq!((h.protocol, h.port, h.next), (763, 25565, Next::Login));
        assert!(h.is_login());
    }

    #[test]
    fn one_trailing_dot_is_taken_off_as_a_proxy_at_home_does() {
        assert_eq!(normalise_host("A.test."), "a.test");
        // Not the name `a.test` for a proxy trimming one dot either.
        assert_eq!(normalise_host("a.test.."), "a.test.");
    }

    #[test]
    fn waits_for_more_at_every_cut() {
        let b = handshake_bytes("a.test", 1);
        for cut in 0..b.len() {
            assert_eq!(first(&b[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn refuses_junk() {
        // 'G' reads as a 71-byte packet whose id ('E') is no handshake.
        assert_eq!(first(b"GET / HTTP/1.1\r\n").unwrap(), None);
        assert!(
            first(&[b"GET / HTTP/1.1\r\nHost: x\r\n".as_slice(), &[b' '; 60]].concat()).is_err()
        );
        assert!(first(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(first(&[0x00]).is_err());
        assert!(first(&handshake_bytes("a.test", 7)).is_err());
        // A length of 16,383: past what the hub reads before routing.
        let mut long = vec![0xff, 0x7f];
        long.resize(2000, 0);
        assert!(first(&long).is_err());
        let mut bad_utf8 = handshake_bytes("abc", 1);
        bad_utf8[4] = 0xff;
        assert!(first(&bad_utf8).is_err());
    }

    #[test]
    fn legacy_ping_is_recognised() {
        // 1.6's ping is decided by its third byte; 1.4's and earlier
        // ones by the silence after them (the read loop's part).
        assert_eq!(
            first(&[0xfe, 0x01, 0xfa, 0x00]).unwrap(),
            Some((First::Legacy, 0))
        );
        for older in [&[0xfe][..], &[0xfe, 0x01]] {
            assert_eq!(first(older).unwrap(), None);
            assert!(legacy_prefix(older));
        }
        let s = Status {
            motd: "Sleeping",
            version: "ferry",
            protocol: 5,
            favicon: None,
        };
        let l = s.legacy();
        assert_eq!(l[0], 0xff);
        let n = u16::from_be_bytes([l[1], l[2]]) as usize;
        assert_eq!(l.len(), 3 + 2 * n);
    }

    /// Handshakes whose length's VarInt begins 0xFE (254 and 382 bytes,
    /// a long name with Forge's suffix) and a BungeeCord-forwarded one of
    /// ~1.6 KiB are handshakes, not legacy pings or junk.
    #[test]
    fn long_handshakes_are_handshakes() {
        for len in [254usize, 382, 1600] {
            let bytes = handshake_with_length(len);
            assert_eq!(bytes[0], if len == 1600 { 0xc0 } else { 0xfe });
            let (got, used) = first(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            let First::Handshake(h) = got else {
                panic!("{len}: {got:?}")
            };
            assert_eq!(h.host(), "mc.example.com", "{len}");
        }
    }

    /// A login handshake whose packet (after its length) is `len` bytes:
    /// the name with a forwarding suffix padded to fit.
    fn handshake_with_length(len: usize) -> Vec<u8> {
        // id, protocol (2 bytes), address length (2 bytes), port, next.
        let address_len = len - 1 - 2 - 2 - 2 - 1;
        let mut address = String::from("mc.example.com\0");
        address.extend(std::iter::repeat_n('x', address_len - address.len()));
        let mut body = vec![0x00];
        write_varint(&mut body, 763);
        write_varint(&mut body, address.len() as i32);
        body.extend_from_slice(address.as_bytes());
        body.extend_from_slice(&25565u16.to_be_bytes());
        body.push(2);
        assert_eq!(body.len(), len);
        let mut out = Vec::new();
        write_varint(&mut out, len as i32);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn answers_are_framed() {
        let s = Status {
            motd: "Sleeping \"quoted\"",
            version: "ferry",
            protocol: 763,
            favicon: Some("data:image/png;base64,AAAA"),
        };
        let r = s.response();
        let (id, body, used) = packet(&r, usize::MAX).unwrap().unwrap();
        assert_eq!((id, used), (0, r.len()));
        let (n, k) = read_varint(body).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body[k..k + n as usize]).unwrap();
        assert_eq!(v["description"]["text"], "Sleeping \"quoted\"");
        assert_eq!(v["version"]["protocol"], 763);
        assert_eq!(pong(&[1; 8]).unwrap(), [9, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        assert!(pong(&[1; 3]).is_err());
        let d = disconnect("away");
        assert_eq!(packet(&d, usize::MAX).unwrap().unwrap().0, 0);
    }
}
