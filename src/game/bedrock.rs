//! Minecraft Bedrock's server-list ping: RakNet's Unconnected Ping and the
//! Unconnected Pong that carries the `MCPE;…` description.

/// RakNet's "offline message" magic, in every unconnected packet.
pub const MAGIC: [u8; 16] = [
    0x00, 0xff, 0xff, 0x00, 0xfe, 0xfe, 0xfe, 0xfe, 0xfd, 0xfd, 0xfd, 0xfd, 0x12, 0x34, 0x56, 0x78,
];

/// A ping's time field, echoed in the pong.
pub fn ping_time(datagram: &[u8]) -> Option<[u8; 8]> {
    // 0x01 Unconnected Ping, 0x02 the same "open connections only":
    // id, time (8), magic (16), client GUID (8).
    let [0x01 | 0x02, rest @ ..] = datagram else {
        return None;
    };
    if rest.len() < 32 || rest[8..24] != MAGIC {
        return None;
    }
    rest[..8].try_into().ok()
}

/// An Unconnected Ping from `guid`: how the ep asks a server it woke
/// whether it is up.
pub fn ping(guid: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(33);
    p.push(0x01);
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&guid.to_be_bytes());
    p
}

/// An Unconnected Pong: id, time (8), server GUID (8), magic (16), text.
pub fn is_pong(datagram: &[u8]) -> bool {
    matches!(datagram, [0x1c, rest @ ..] if rest.len() >= 32 && rest[16..32] == MAGIC)
}

/// A RakNet server's answer to a client that is not connected yet: a
/// pong, or an Open Connection Reply (1 or 2). What a Bedrock server
/// sends, and a UDP game of another kind does not.
pub fn is_raknet_answer(datagram: &[u8]) -> bool {
    is_pong(datagram)
        || matches!(datagram, [0x06 | 0x08, rest @ ..] if rest.len() >= 16 && rest[..16] == MAGIC)
}

/// RakNet's Open Connection Request 1: a client starting to join (what
/// wakes a sleeping server; a list ping or stray datagram does not).
pub fn is_join(datagram: &[u8]) -> bool {
    matches!(datagram, [0x05, rest @ ..] if rest.len() >= 16 && rest[..16] == MAGIC)
}

/// Bytes of the MOTD a pong carries at most: the answer stays a small
/// multiple of the (forgeable) ping it answers.
const MAX_MOTD_BYTES: usize = 64;

/// What the hub says about a Bedrock server that is away.
pub struct Pong<'a> {
    pub motd: &'a str,
    pub guid: u64,
    pub port: u16,
}

impl Pong<'_> {
    /// The Unconnected Pong answering a ping sent at `time`.
    pub fn answer(&self, time: [u8; 8]) -> Vec<u8> {
        // `;` separates fields: a MOTD containing one would shift them.
        let mut motd = self
            .motd
            .lines()
            .next()
            .unwrap_or_default()
            .replace(';', ",");
        if motd.len() > MAX_MOTD_BYTES {
            let mut cut = MAX_MOTD_BYTES;
            while !motd.is_char_boundary(cut) {
                cut -= 1;
            }
            motd.truncate(cut);
        }
        // Protocol and version are the client's concern once home is up;
        // while away, any current pair shows the entry.
        let text = format!(
            "MCPE;{motd};748;1.21.40;0;0;{};ferry;Survival;1;{};{};",
            self.guid, self.port, self.port
        );
        let mut out = Vec::with_capacity(35 + text.len());
        out.push(0x1c);
        out.extend_from_slice(&time);
        out.extend_from_slice(&self.guid.to_be_bytes());
        out.extend_from_slice(&MAGIC);
        let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_ping_with_its_time() {
        let mut ping = vec![0x01];
        ping.extend(7u64.to_be_bytes());
        ping.extend(MAGIC);
        ping.extend(9u64.to_be_bytes());
        let t = ping_time(&ping).unwrap();
        let p = Pong {
            motd: "Sleeping; join",
            guid: 5,
            port: 19132,
        }
        .answer(t);
        assert_eq!(p[0], 0x1c);
        assert_eq!(&p[1..9], &7u64.to_be_bytes());
        assert_eq!(&p[17..33], &MAGIC);
        let n = u16::from_be_bytes([p[33], p[34]]) as usize;
        let s = std::str::from_utf8(&p[35..35 + n]).unwrap();
        assert!(s.starts_with("MCPE;Sleeping, join;"), "{s}");
    }

    #[test]
    fn a_long_motd_is_cut_on_a_character_boundary() {
        let p = Pong {
            motd: &"é".repeat(100),
            guid: 1,
            port: 1,
        }
        .answer([0; 8]);
        let n = u16::from_be_bytes([p[33], p[34]]) as usize;
        let s = std::str::from_utf8(&p[35..35 + n]).unwrap();
        assert!(s.starts_with(&format!("MCPE;{};", "é".repeat(32))), "{s}");
        assert!(p.len() < 160);
    }

    #[test]
    fn only_an_open_connection_request_is_a_join() {
        let mut j = vec![0x05];
        j.extend(MAGIC);
        j.extend([0u8; 10]);
        assert!(is_join(&j));
        assert!(!is_join(&[0x05; 3]));
        assert!(!is_join(&[0x01; 40]));
    }

    #[test]
    fn ignores_what_is_not_a_ping() {
        assert_eq!(ping_time(&[]), None);
        assert_eq!(ping_time(&[0x01; 33]), None);
        assert_eq!(ping_time(&[0x05; 40]), None);
    }
}
