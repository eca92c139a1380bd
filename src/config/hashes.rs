//! Token hashes in a config (`token_hash`, `eps.NAME.token_hash`,
//! `admin.token_hash`, or their `_file` forms): held to Argon2id, and
//! judged against what `ferry hub token` makes. A hash in a file is read
//! by the role that uses it (`token::read_hash_file`), not here.
//!
//! A hash file is not treated as a secret (`crate::secret_file`): what it
//! holds is a salted Argon2id hash of a random 256-bit token, which no one
//! can turn back into the token.

use argon2::{Algorithm, Params, PasswordHash, Version};
use std::path::PathBuf;

/// What to run for a hash ferry accepts.
const FIX: &str = "make one with `ferry hub token` (a new token and its hash) \
                   or `ferry hub hash-token` (the hash of a token on stdin)";

/// A token hash as the config gives it.
pub(crate) enum GivenHash {
    /// Written in the config, and checked.
    Inline(String),
    /// The path of a file holding it, read and checked when the settings
    /// are loaded.
    File(PathBuf),
}

/// A token hash given inline or in a file, at most one; `key` names it in
/// errors.
pub(crate) fn token_hash(
    key: &str,
    inline: Option<String>,
    file: Option<&figment::value::magic::RelativePathBuf>,
) -> Result<Option<GivenHash>, String> {
    match (inline, file) {
        (Some(hash), None) => {
            check_hash(&hash).map_err(|e| format!("{key}: {e}"))?;
            Ok(Some(GivenHash::Inline(hash)))
        }
        (None, Some(path)) => Ok(Some(GivenHash::File(path.relative()))),
        (Some(_), Some(_)) => Err(format!("set {key} or {key}_file, not both")),
        (None, None) => Ok(None),
    }
}

/// Checks that `phc` is an Argon2id hash ferry can verify a token against.
/// Argon2i and Argon2d are refused: `check` promises Argon2id, and each
/// lacks half of its defence (Argon2d against side channels, Argon2i
/// against GPU cracking).
pub fn check_hash(phc: &str) -> Result<(), String> {
    let parsed =
        PasswordHash::new(phc).map_err(|e| format!("not a PHC hash string ({e}); {FIX}"))?;
    match Algorithm::try_from(parsed.algorithm) {
        Ok(Algorithm::Argon2id) => {}
        Ok(other) => {
            return Err(format!(
                "algorithm {other} is not argon2id, the only one ferry accepts; {FIX}"
            ));
        }
        Err(_) => {
            return Err(format!(
                "algorithm {} is not Argon2id; {FIX}",
                parsed.algorithm
            ));
        }
    }
    if let Some(v) = parsed.version {
        Version::try_from(v).map_err(|_| format!("Argon2 version {v} is unknown; {FIX}"))?;
    }
    let params = Params::try_from(&parsed)
        .map_err(|e| format!("its parameters are not usable ({e}); {FIX}"))?;
    bounded(&params)?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(format!("it has no salt or no hash part; {FIX}"));
    }
    Ok(())
}

/// Costs a hash may ask at most. Every token a stranger offers is checked
/// against the hash (an admin request, an ep's login), so its memory cost
/// is spent per check: unbounded, one edited hash could make each request
/// take the host's memory. Thirteen times the memory and thirty-two
/// times the passes `ferry hub token` uses (passes cost time, not memory:
/// a slow hash is a choice some make).
const MOST_KIB: u32 = 256 * 1024;
const MOST_PASSES: u32 = 64;
const MOST_LANES: u32 = 16;

fn bounded(p: &Params) -> Result<(), String> {
    if p.m_cost() > MOST_KIB {
        return Err(format!(
            "its memory cost m={} KiB is more than ferry checks a token with (at most m={MOST_KIB}, \
             256 MiB): each check would take that much; {FIX}",
            p.m_cost()
        ));
    }
    if p.t_cost() > MOST_PASSES || p.p_cost() > MOST_LANES {
        return Err(format!(
            "its passes t={} or lanes p={} are more than ferry checks a token with \
             (at most t={MOST_PASSES}, p={MOST_LANES}); {FIX}",
            p.t_cost(),
            p.p_cost()
        ));
    }
    Ok(())
}

/// Why `phc` is weaker than the hashes `ferry hub token` makes, if it is:
/// less memory, fewer passes, or the old Argon2 version. Weak is allowed
/// (the operator chose it), but said at `check` and at start.
pub fn weakness(phc: &str) -> Option<String> {
    let parsed = PasswordHash::new(phc).ok()?;
    let params = Params::try_from(&parsed).ok()?;
    let ours = Params::default();
    let mut weak = Vec::new();
    if params.m_cost() < ours.m_cost() {
        weak.push(format!(
            "memory m={} KiB (ferry makes m={})",
            params.m_cost(),
            ours.m_cost()
        ));
    }
    if params.t_cost() < ours.t_cost() {
        weak.push(format!(
            "passes t={} (ferry makes t={})",
            params.t_cost(),
            ours.t_cost()
        ));
    }
    let version = parsed.version.and_then(|v| Version::try_from(v).ok());
    if version == Some(Version::V0x10) {
        weak.push("version 16 (ferry makes 19)".into());
    }
    (!weak.is_empty()).then(|| {
        format!(
            "weaker than `ferry hub token` makes: {}; {FIX}",
            weak.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "c29tZXNhbHRzb21lc2FsdA";
    const OUT: &str = "Fm8yLZzLkbhOqhKWeuE2yEUkPDPmsHvRUDoTZhJ6qXA";

    fn phc(alg: &str, v: u32, m: u32, t: u32) -> String {
        format!("${alg}$v={v}$m={m},t={t},p=1${SALT}${OUT}")
    }

    #[test]
    fn only_argon2id_is_accepted() {
        check_hash(&phc("argon2id", 19, 19456, 2)).unwrap();
        for alg in ["argon2i", "argon2d"] {
            let e = check_hash(&phc(alg, 19, 19456, 2)).unwrap_err();
            assert!(e.contains(alg) && e.contains("ferry hub token"), "{e}");
        }
        assert!(check_hash("plain").is_err());
        assert!(
            check_hash(&phc("argon2id", 19, 1, 2)).is_err(),
            "m too small"
        );
        assert!(check_hash(&format!("$argon2id$v=19$m=19456,t=2,p=1${SALT}")).is_err());
    }

    /// A hash is checked against every token a stranger offers: one that
    /// would take gigabytes per check is refused at load, naming why.
    #[test]
    fn costs_beyond_what_a_check_may_take_are_refused() {
        check_hash(&phc("argon2id", 19, 262_144, 64)).unwrap();
        let e = check_hash(&phc("argon2id", 19, 4 << 20, 2)).unwrap_err();
        assert!(e.contains("m=4194304 KiB") && e.contains("256 MiB"), "{e}");
        let e = check_hash(&phc("argon2id", 19, 19456, 1000)).unwrap_err();
        assert!(e.contains("t=1000"), "{e}");
        let lanes = format!("$argon2id$v=19$m=19456,t=2,p=64${SALT}${OUT}");
        assert!(check_hash(&lanes).unwrap_err().contains("p=64"));
    }

    #[test]
    fn weaker_parameters_than_ours_are_named() {
        assert_eq!(weakness(&phc("argon2id", 19, 19456, 2)), None);
        assert_eq!(weakness(&phc("argon2id", 19, 65536, 3)), None);
        let w = weakness(&phc("argon2id", 19, 8, 1)).unwrap();
        assert!(w.contains("m=8 KiB") && w.contains("t=1"), "{w}");
        let w = weakness(&phc("argon2id", 16, 19456, 2)).unwrap();
        assert!(w.contains("version 16"), "{w}");
    }
}
