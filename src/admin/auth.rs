//! The admin token: stored as an Argon2 hash like the eps' tokens. A token
//! that verified once is remembered by its SHA-256 for the life of the
//! process, so a dashboard polling every second costs one Argon2 run, and
//! later checks are a constant-time comparison of digests.

use crate::secret::Secret;
use std::sync::{Arc, Mutex};

/// Verified tokens remembered; a new one beyond this replaces the oldest.
const REMEMBERED: usize = 16;

pub struct Auth {
    hash: String,
    verified: Mutex<Vec<[u8; 32]>>,
    /// One Argon2 run at a time: wrong tokens cannot pile up CPU work.
    argon2: Arc<tokio::sync::Semaphore>,
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares without an early exit, so timing says nothing of where two
/// digests differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(hash: String) -> Self {
        Auth {
            hash,
            verified: Mutex::new(Vec::new()),
            argon2: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Ok, or the HTTP status to answer: 401 (missing or wrong), 503 (busy).
    pub async fn check(&self, token: Option<&str>) -> Result<(), u16> {
        let token = token.filter(|t| !t.is_empty() && t.len() <= crate::token::MAX_TOKEN_LEN);
        let Some(token) = token else { return Err(401) };
        let d = digest(token);
        {
            let known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if known.iter().fold(false, |hit, k| hit | same(k, &d)) {
                return Ok(());
            }
        }
        let Ok(permit) = self.argon2.clone().try_acquire_owned() else {
            return Err(503);
        };
        let (secret, hash) = (Secret::new(token), self.hash.clone());
        let good = tokio::task::spawn_blocking(move || {
            let ok = crate::token::verify(&secret, &hash);
            drop(permit);
            ok
        })
        .await
        .unwrap_or(false);
        if !good {
            return Err(401);
        }
        let mut known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= REMEMBERED {
            known.remove(0);
        }
        known.push(d);
        Ok(())
    }
}
