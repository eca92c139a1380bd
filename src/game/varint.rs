//! Minecraft's VarInt: a 32-bit integer in 1 to 5 bytes, seven bits each,
//! least significant first, the top bit saying another byte follows.

/// The value and the bytes it took; `Ok(None)` if `buf` ends first.
pub fn read_varint(buf: &[u8]) -> Result<Option<(i32, usize)>, super::java::Junk> {
    let mut value: u32 = 0;
    for (i, b) in buf.iter().enumerate() {
        if i == 5 {
            return Err(super::java::Junk("a VarInt longer than 5 bytes"));
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i == 4 && *b > 0x0f {
                return Err(super::java::Junk("a VarInt beyond 32 bits"));
            }
            return Ok(Some((value as i32, i + 1)));
        }
    }
    if buf.len() >= 5 {
        return Err(super::java::Junk("a VarInt longer than 5 bytes"));
    }
    Ok(None)
}

pub fn write_varint(out: &mut Vec<u8>, v: i32) {
    let mut v = v as u32;
    loop {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_wiki_examples() {
        for (v, bytes) in [
            (0, &[0x00][..]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (255, &[0xff, 0x01]),
            (25565, &[0xdd, 0xc7, 0x01]),
            (2147483647, &[0xff, 0xff, 0xff, 0xff, 0x07]),
            (-1, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
            (-2147483648, &[0x80, 0x80, 0x80, 0x80, 0x08]),
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(read_varint(bytes).unwrap(), Some((v, bytes.len())));
        }
    }

    #[test]
    fn short_long_and_oversized_input() {
        assert_eq!(read_varint(&[]).unwrap(), None);
        assert_eq!(read_varint(&[0x80, 0x80]).unwrap(), None);
        assert!(read_varint(&[0x80; 6]).is_err());
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]).is_err());
    }
}
