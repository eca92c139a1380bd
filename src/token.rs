//! Pre-shared ep tokens: generation, Argon2id hashing and verification.

use crate::secret::Secret;
use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use ring::rand::{SecureRandom, SystemRandom};

pub use crate::config::{MAX_TOKEN_LEN, token_too_long as too_long};

/// `n` random bytes from the operating system, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh token: 256 bits, hex.
pub fn generate() -> Secret {
    Secret::new(random_hex(32))
}

/// The Argon2id PHC string for `token`, with default (OWASP-level) costs.
pub fn hash(token: &Secret) -> Result<String, String> {
    too_long(token)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(token.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the token: {e}"))
}

/// Checks that `phc` is an Argon2 hash we can verify against (a question
/// of the configuration's form, so it lives there).
pub use crate::config::check_hash;

/// The token hash in the file `path` (`key`_file in the config, `key`
/// naming it in errors), held to the same form as one written inline.
pub fn read_hash_file(key: &str, path: &std::path::Path) -> Result<String, String> {
    let cannot =
        |e: &dyn std::fmt::Display| format!("cannot read {key}_file {}: {e}", path.display());
    let bytes =
        crate::files::read_regular(path, crate::files::MAX_NAMED).map_err(|e| cannot(&e))?;
    let hash = String::from_utf8(bytes)
        .map_err(|e| cannot(&e))?
        .trim()
        .to_string();
    check_hash(&hash).map_err(|e| format!("{key}: {e}"))?;
    Ok(hash)
}

/// Constant-time check of `token` against `phc`. Slow by design (tens of
/// milliseconds): call it off the async runtime, once per login.
/// A token's SHA-256, for remembering one that verified without keeping
/// the token (Argon2 once, then a comparison of digests).
pub fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares without an early exit, so timing says nothing of where two
/// digests differ.
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn verify(token: &Secret, phc: &str) -> bool {
    if token.expose().len() > MAX_TOKEN_LEN {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(token.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let t = generate();
        assert_eq!(t.expose().len(), 64);
        let h = hash(&t).unwrap();
        assert!(h.starts_with("$argon2id$"));
        check_hash(&h).unwrap();
        assert!(verify(&t, &h));
        assert!(!verify(&Secret::new("wrong"), &h));
        assert!(check_hash("plain").is_err());
    }
}
