//! The admin token: stored as an Argon2 hash like the eps' tokens. A token
//! that verified once is remembered by its SHA-256 for the life of the
//! process, so a dashboard polling every second costs one Argon2 run, and
//! later checks are a constant-time comparison of digests.
//!
//! A wrong token costs its source (an IPv4 address, an IPv6 /64) a growing
//! penalty, during which that source's unknown tokens are refused before
//! any Argon2 run: otherwise one stranger sending wrong tokens in a loop
//! keeps the one Argon2 slot busy and the operator is told "busy" for ever.
//!
//! Strangers with many sources (an IPv6 /48 holds 65,536 /64s) can still
//! keep the slot busy, one unknown token per source each penalty. So an
//! unknown token waits its turn for the slot (in order, a while at most)
//! rather than being told "busy" at once: the operator's first login after
//! a restart waits behind the strangers' tokens already waiting, which the
//! door's per-source and per-network caps on waiting connections bound,
//! instead of being told "busy", struck, and then held off as a guesser.
//! A source has one unknown token waiting or checked at a time.

use crate::{
    penalties::{Penalties, PenaltyRange},
    secret::Secret,
};
use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

/// `settings` with its token hash read from `admin.token_hash_file`, if
/// that is where it is kept: at start, by `check` and on every reload.
pub fn read_hash_file(
    mut settings: crate::config::admin::AdminSettings,
) -> Result<crate::config::admin::AdminSettings, String> {
    if let Some(path) = &settings.token_hash_file {
        settings.token_hash = Some(crate::token::read_hash_file("admin.token_hash", path)?);
    }
    Ok(settings)
}

/// Verified tokens remembered; a new one beyond this replaces the oldest.
const REMEMBERED: usize = 16;
/// A source's first wrong token holds it off this long; each further one
/// doubles it, up to `max` (strikes are forgotten after `max` of quiet).
const PENALTY: PenaltyRange = PenaltyRange {
    base: Duration::from_secs(2),
    max: Duration::from_secs(300),
};

/// The longest an unknown token waits for the Argon2 slot before it is
/// told "busy" (the door's 256 waiting connections, at tens of
/// milliseconds a check, take seconds).
const ARGON2_WAIT: Duration = Duration::from_secs(15);

/// Wrong tokens a penalised source may send in one penalty (each checked
/// against the remembered ones only, no Argon2 run) before even a
/// remembered one is refused until the penalty ends.
const PENALISED_MISSES: u32 = 4;

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, or a wrong one (401).
    Unauthorized,
    /// This source sent a wrong token lately; retry after this (429).
    Penalised(Duration),
    /// Another token is being checked (503).
    Busy,
}

pub struct Auth {
    /// The hash tokens are checked against; `follow` replaces it.
    hash: Mutex<String>,
    verified: Mutex<Vec<[u8; 32]>>,
    /// One Argon2 run at a time: wrong tokens cannot pile up CPU work.
    argon2: Arc<tokio::sync::Semaphore>,
    /// Sources whose last token was wrong, by `sources::source_key`.
    penalties: Mutex<Penalties<IpAddr>>,
    /// Sources with an unknown token waiting for or in the Argon2 slot.
    checking: Arc<Mutex<std::collections::HashSet<IpAddr>>>,
}

/// A source's one unknown token in line for the Argon2 slot; the place is
/// given up when dropped (checked, refused, or the connection gone).
struct InLine {
    checking: Arc<Mutex<std::collections::HashSet<IpAddr>>>,
    source: IpAddr,
}

impl InLine {
    /// None if `source` has a token in line already.
    fn take(
        checking: &Arc<Mutex<std::collections::HashSet<IpAddr>>>,
        source: IpAddr,
    ) -> Option<InLine> {
        let fresh = checking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source);
        fresh.then(|| InLine {
            checking: checking.clone(),
            source,
        })
    }
}

impl Drop for InLine {
    fn drop(&mut self) {
        let mut checking = self.checking.lock().unwrap_or_else(|p| p.into_inner());
        checking.remove(&self.source);
    }
}

impl Auth {
    pub fn new(hash: String) -> Self {
        Auth {
            hash: Mutex::new(hash),
            verified: Mutex::new(Vec::new()),
            argon2: Arc::new(tokio::sync::Semaphore::new(1)),
            penalties: Mutex::new(Penalties::new(PENALTY)),
            checking: Arc::default(),
        }
    }

    /// Checks tokens against `hash` from now on (a reload rotated it): the
    /// tokens verified against the old one are forgotten.
    fn follow(&self, hash: String) {
        let mut now = self.hash.lock().unwrap_or_else(|p| p.into_inner());
        if *now != hash {
            *now = hash;
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    }

    fn hash(&self) -> String {
        self.hash.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `token`, sent from `from`, lets the request in, checked
    /// against `current`, the hash the settings hold now (if it changed).
    /// A token verified before passes while its source is penalised (the
    /// operator's dashboard behind the same address as a stranger), unless
    /// that source sent a few wrong ones during the penalty.
    pub async fn check(
        self: &Arc<Self>,
        token: Option<&str>,
        from: IpAddr,
        current: Option<String>,
    ) -> Result<(), Denied> {
        if let Some(hash) = current {
            self.follow(hash);
        }
        let token = token.filter(|t| !t.is_empty() && t.len() <= crate::token::MAX_TOKEN_LEN);
        let Some(token) = token else {
            return Err(Denied::Unauthorized);
        };
        let d = crate::token::digest(token);
        let remembered = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .fold(false, |hit, k| hit | crate::token::same(k, &d));
        let source = crate::sources::source_key(from);
        {
            let mut penalties = self.penalties_lock();
            if let Some(left) = penalties.remaining(&source) {
                // A remembered token passes (the operator's page behind
                // the same address as a stranger), until the source has
                // missed a few times in this penalty: from then on every
                // token gets the same answer and wait, so a guesser cannot
                // test guesses against the remembered tokens at the speed
                // it connects.
                if penalties.spent(&source, PENALISED_MISSES) {
                    return Err(Denied::Penalised(left));
                }
                if remembered {
                    return Ok(());
                }
                penalties.missed(&source);
                return Err(Denied::Penalised(left));
            }
        }
        if remembered {
            return Ok(());
        }
        self.verify(token, d, source).await
    }

    /// An unknown token from `source`, in line for the Argon2 slot, then
    /// verified. A miss told "busy" counts as a wrong token: else a
    /// guesser whose other addresses keep Argon2 busy tests its guesses
    /// against the remembered tokens unchecked (or, with tokens in line at
    /// once, has many checked per penalty).
    async fn verify(
        self: &Arc<Self>,
        token: &str,
        d: [u8; 32],
        source: IpAddr,
    ) -> Result<(), Denied> {
        let Some(in_line) = InLine::take(&self.checking, source) else {
            self.penalties_lock().strike(&source);
            return Err(Denied::Busy);
        };
        let waited = tokio::time::timeout(ARGON2_WAIT, self.argon2.clone().acquire_owned());
        let Ok(Ok(permit)) = waited.await else {
            self.penalties_lock().strike(&source);
            return Err(Denied::Busy);
        };
        // Run, and its outcome kept (a strike, or the token remembered),
        // on a task of its own: a request cut off meanwhile (its place at
        // the door taken by a newer connection, the hub stopping) leaves
        // Argon2 to finish all the same, and must neither cost nothing (or
        // one address evicting its own checks keeps Argon2 busy without a
        // penalty) nor cost an operator whose right token was cut off.
        let (auth, secret) = (self.clone(), Secret::new(token));
        let run = tokio::spawn(async move {
            let _in_line = in_line;
            let checked = auth.hash();
            let hash = checked.clone();
            let good = tokio::task::spawn_blocking(move || crate::token::verify(&secret, &hash))
                .await
                .unwrap_or(false);
            // Argon2's slot is given back once the outcome is kept: a
            // request that waited for it then finds the token remembered
            // rather than running Argon2 on it again.
            let settled = auth.settle(good, d, source, &checked);
            drop(permit);
            settled
        });
        run.await.unwrap_or(Err(Denied::Unauthorized))
    }

    /// Keeps what a verification found: a wrong token struck, a right one
    /// remembered (unless the hash was rotated while it was checked).
    fn settle(&self, good: bool, d: [u8; 32], source: IpAddr, checked: &str) -> Result<(), Denied> {
        if !good {
            self.penalties_lock().strike(&source);
            return Err(Denied::Unauthorized);
        }
        self.penalties_lock().clear(&source);
        // Held while remembering, so a rotation cannot land in between.
        let hash = self.hash.lock().unwrap_or_else(|p| p.into_inner());
        if *hash != checked {
            // Rotated while this token was checked: it proved the old one.
            return Err(Denied::Unauthorized);
        }
        let mut known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= REMEMBERED {
            known.remove(0);
        }
        known.push(d);
        Ok(())
    }

    fn penalties_lock(&self) -> std::sync::MutexGuard<'_, Penalties<IpAddr>> {
        self.penalties.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash slow enough (seconds) that a check is cut off mid-run.
    fn slow_hash(token: &str) -> String {
        use argon2::{
            Algorithm, Argon2, Params, PasswordHasher, Version, password_hash::SaltString,
        };
        let params = Params::new(64 * 1024, 40, 1, None).unwrap();
        let salt = SaltString::encode_b64(b"ferry-admin-test").unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(token.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    /// Waits until no Argon2 run holds the slot.
    async fn runs_over(auth: &Auth) {
        while auth.argon2.available_permits() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A check cut off while Argon2 runs (its connection's place taken by
    /// a newer connection) keeps its outcome: a wrong token costs its
    /// source, a right one is remembered. Before, nothing was
    /// charged, and one address evicting its own checks kept Argon2 busy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_cut_off_mid_run_keeps_its_outcome() {
        let auth = Arc::new(Auth::new(slow_hash("right")));
        let quick = |t: &'static str, ip: IpAddr| {
            let a = auth.clone();
            async move { tokio::time::timeout(Duration::from_secs(1), a.check(Some(t), ip, None)).await }
        };
        for (token, ip) in [("wrong", "192.0.2.7"), ("right", "198.51.100.7")] {
            let ip: IpAddr = ip.parse().unwrap();
            let a = auth.clone();
            let cut = tokio::spawn(async move { a.check(Some(token), ip, None).await });
            while auth.argon2.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
            cut.abort();
            runs_over(&auth).await;
        }
        let wrong = quick("wrong again", "192.0.2.7".parse().unwrap()).await;
        assert!(matches!(wrong, Ok(Err(Denied::Penalised(_)))), "{wrong:?}");
        let right = quick("right", "203.0.113.7".parse().unwrap()).await;
        assert!(matches!(right, Ok(Ok(()))), "remembered: {right:?}");
    }
}
