//! Byte rates in a config (`max_rate`, `max_rate_per_player`): bytes per
//! second as an integer, or a string with a unit.
//!
//! The grammar, kept small so a value reads one way only:
//! `NUMBER [UNIT] ["/s"]`, a space allowed between. NUMBER may have a
//! decimal point. UNIT, its prefix letter in either case:
//! - `B` or none: bytes;
//! - `K`, `KB`, `M`, `MB`, `G`, `GB`: 1000, 1000², 1000³ bytes;
//! - `Ki`, `KiB`, `Mi`, `MiB`, `Gi`, `GiB`: 1024, 1024², 1024³ bytes;
//! - `bit`, `Kbit`, `Mbit`, `Gbit`: bits (an eighth of the byte units).
//!
//! `"8 Mb"` (bits or bytes?) is refused, as is anything else. 0 is no cap;
//! any other value is at least 1 KiB/s, so `max_rate = 8` meant as 8 Mbit/s
//! is caught rather than obeyed.

use serde::{Deserialize, Deserializer, de};
use std::fmt;

/// The least a cap may be (bytes/s), 0 aside.
pub const MIN: u64 = 1024;

/// A byte rate; 0: no cap.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Bandwidth(pub u64);

impl Bandwidth {
    pub fn bytes_per_sec(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Bandwidth {
    /// Bytes exactly, and bits for those who think in link speeds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mbit = (self.0 as f64 * 8.0 / 1e6 * 1000.0).round() / 1000.0;
        write!(f, "{} B/s ({mbit} Mbit/s)", self.0)
    }
}

pub fn parse(text: &str) -> Result<Bandwidth, String> {
    let bad = || {
        format!(
            "invalid rate {text:?}: expected bytes per second, e.g. 250000, \"500 KiB\", \
             \"2 MB\", \"10M\" or \"8 Mbit\""
        )
    };
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let per = unit_bytes(unit).ok_or_else(|| {
        if unit.ends_with('b') {
            format!("{}: write MB for bytes or Mbit for bits", bad())
        } else {
            bad()
        }
    })?;
    checked(n * per).map_err(|e| format!("rate {text:?} {e}"))
}

/// What one UNIT is in bytes.
fn unit_bytes(unit: &str) -> Option<f64> {
    let power = |p: &str| match p.to_ascii_lowercase().as_str() {
        "" => Some(0),
        "k" => Some(1),
        "m" => Some(2),
        "g" => Some(3),
        _ => None,
    };
    if let Some(p) = unit.strip_suffix("bit") {
        return power(p).map(|e| 1000f64.powi(e) / 8.0);
    }
    let p = unit.strip_suffix('B').unwrap_or(unit);
    if let Some(bin) = p.strip_suffix('i').or_else(|| p.strip_suffix('I')) {
        return power(bin).filter(|e| *e > 0).map(|e| 1024f64.powi(e));
    }
    // A lone "b", "kb", "Mb": bits or bytes? Refused.
    if p.ends_with('b') {
        return None;
    }
    power(p).map(|e| 1000f64.powi(e))
}

fn checked(bytes: f64) -> Result<Bandwidth, String> {
    // Only a true zero means no cap: "0.4 B" is a mistake, not "none".
    if bytes == 0.0 {
        return Ok(Bandwidth(0));
    }
    let n = bytes.round();
    if n < MIN as f64 {
        return Err(
            "is below the least cap, 1 KiB/s (1024); a unit left off? 0 means no cap".into(),
        );
    }
    if n > 1e15 {
        return Err("is beyond any link".into());
    }
    Ok(Bandwidth(n as u64))
}

impl<'de> Deserialize<'de> for Bandwidth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Bandwidth;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes per second, as an integer or a string like \"2 MB\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Bandwidth, E> {
                checked(n as f64).map_err(|e| E::custom(format!("rate {n} {e}")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Bandwidth, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("rate {n} is negative")))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Bandwidth, E> {
                parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_junk() {
        let ok = [
            ("250000", 250_000),
            ("500 KiB", 512_000),
            ("500KiB/s", 512_000),
            ("2 MB", 2_000_000),
            ("10M", 10_000_000),
            ("1.5 MiB", 1_572_864),
            ("8 Mbit", 1_000_000),
            ("8 mbit/s", 1_000_000),
            ("1 Gbit", 125_000_000),
            ("64 Ki", 65_536),
            ("2 kB", 2000),
            ("0", 0),
            ("0 MB", 0),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text), Ok(Bandwidth(want)), "{text}");
        }
        for junk in [
            "",
            "fast",
            "2 Mb",
            "8 b",
            "-5 MB",
            "1 TB",
            "5 MiBit",
            ".5M",
            "5.M",
            "2 MB/h",
            "100",
            "1e6",
            "2mb",
            "0.4 B",
            "0.0000000001 GB",
        ] {
            assert!(parse(junk).is_err(), "{junk:?} should be refused");
        }
        assert!(parse("2 Mb").unwrap_err().contains("Mbit"));
        assert!(parse("8").unwrap_err().contains("unit"));
    }

    #[test]
    fn integers_in_toml() {
        use figment::providers::Format;
        #[derive(Deserialize)]
        struct T {
            r: Bandwidth,
        }
        let read = |text: &str| {
            figment::Figment::from(figment::providers::Toml::string(text))
                .extract::<T>()
                .ok()
                .map(|t| t.r)
        };
        assert_eq!(read("r = 4096"), Some(Bandwidth(4096)));
        assert_eq!(read("r = \"2 MB\""), Some(Bandwidth(2_000_000)));
        for junk in ["r = -1", "r = 10", "r = 1.5", "r = true"] {
            assert_eq!(read(junk), None, "{junk}");
        }
    }
}
