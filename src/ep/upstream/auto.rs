//! `transport = "auto"`: QUIC where the hub offers it and it answers, TLS
//! over TCP where it does not, and back to QUIC once it answers again.
//!
//! QUIC is marked failed only when TLS then logs in (a hub that is down
//! answers neither, and marking it would leave the ep on TLS after the hub
//! comes back); an address that does not resolve is a failure like any
//! other (else every login over TLS would end at once to move to a QUIC
//! door it cannot reach, without a pause). A session on TLS tries a QUIC
//! login beside itself once `quic_retry` has passed, and moves to it.

use super::{End, QUIC_TRY, Up, login};
use crate::{
    config::ep::{EpSettings, HubTarget, Transport},
    ep::{LoginError, Welcome},
    proto::CloseKind,
};
use std::{future::Future, pin::Pin, sync::Arc};
use tokio::time::Instant;

/// A QUIC login made while a TLS session served: the next session, with
/// what its hello was built from.
pub(super) struct Ready {
    pub tls: login::Path,
    pub welcome: Welcome,
    pub offered: u64,
    pub identity: String,
}

/// How one QUIC login went, when it did not.
enum Tried {
    /// Refused for who the ep is: TLS would be refused alike.
    Permanent(LoginError),
    Failed(String),
}

type Login<'a> = Pin<Box<dyn Future<Output = Result<Ready, String>> + Send + 'a>>;

/// A TLS session's way back to QUIC: a login tried when QUIC may be tried
/// again, beside the session.
pub(super) struct Upgrade<'a> {
    at: Option<Instant>,
    trying: Option<Login<'a>>,
}

impl<'a> Upgrade<'a> {
    /// The next QUIC login; `None` after one that failed (marked, and the
    /// next due a `quic_retry` later). Cancel-safe: a login under way
    /// carries on at the next call. A reload that made this hub's
    /// `transport` another than auto ends the tries.
    pub async fn next(&mut self, up: &'a Up) -> Option<Box<Ready>> {
        if self.trying.is_none() {
            match self.at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
            let h = up.target(&up.ep.settings());
            if h.transport != Transport::Auto {
                self.at = None;
                return None;
            }
            self.trying = Some(Box::pin(async move { up.upgrade_login(&h).await }));
        }
        let tried = self.trying.as_mut()?.await;
        self.trying = None;
        match tried {
            Ok(ready) => Some(Box::new(ready)),
            Err(why) => {
                // Said once when QUIC first failed; again only in detail.
                up.link.quic_lock().failed = Some(Instant::now());
                tracing::debug!("{why}; still over TLS");
                self.at = Some(Instant::now() + up.ep.settings().timing.quic_retry);
                None
            }
        }
    }

    /// The TLS session `end`ed with a QUIC login under way: the hub ends
    /// the session a new login replaces, so that end is the login's
    /// success, not another ep with this certificate. Waits for it. One
    /// that fails then marks nothing (the TLS session is gone too: the hub
    /// may be down); the session it replaced (the hub had it, its welcome
    /// was lost) logs in again at once, not at the longest wait a second
    /// ep with this certificate gets.
    pub async fn settle(mut self, up: &Up, mut end: End) -> End {
        let Some(trying) = self.trying.take() else {
            return end;
        };
        if end.switch {
            return end;
        }
        let tried = tokio::select! {
            r = trying => r,
            _ = up.ep.shutdown.cancelled() => return end,
        };
        match tried {
            Ok(ready) => return switched(Box::new(ready)),
            Err(why) => tracing::debug!("{why}"),
        }
        if end.kind == Some(CloseKind::Replaced) {
            end.kind = None;
            end.reason =
                "the hub moved the session to a QUIC login of this ep that then failed".into();
        }
        end
    }
}

/// The session ends to go on over the QUIC login `ready`.
pub(super) fn switched(ready: Box<Ready>) -> End {
    End {
        reason: "QUIC answers again; the session moves to it (players on TLS channels keep them)"
            .into(),
        kind: None,
        switch: true,
        put_down: false,
        next: Some(ready),
    }
}

impl Up {
    /// Logs in as `transport = "auto"` does: over QUIC where the hub's
    /// QUIC door is known and QUIC has not failed lately, else over TLS.
    pub(super) async fn connect_auto(
        &self,
        s: &EpSettings,
        h: &HubTarget,
        client: &Arc<rustls::ClientConfig>,
    ) -> Result<(login::Path, Welcome), LoginError> {
        let known = h.quic.is_some() || self.link.quic_lock().port.is_some();
        if !known || !self.quic_allowed() {
            return login::login_with(s, h, client).await;
        }
        let why = match self.try_quic(s, h, client, QUIC_TRY).await {
            Ok(x) => return Ok(x),
            Err(Tried::Permanent(e)) => return Err(e),
            Err(Tried::Failed(why)) => why,
        };
        let tls = login::login_with(s, h, client).await;
        match &tls {
            Ok(_) => self.quic_failed(&why),
            Err(_) => tracing::warn!("{why}; TLS over TCP did not log in either"),
        }
        tls
    }

    /// One QUIC login, `within` (and the address looked up first).
    async fn try_quic(
        &self,
        s: &EpSettings,
        h: &HubTarget,
        client: &Arc<rustls::ClientConfig>,
        within: std::time::Duration,
    ) -> Result<(login::Path, Welcome), Tried> {
        let Some(hub) = self.quic_target(h, false).await else {
            let at = h.quic.as_deref().unwrap_or(&h.hub);
            return Err(Tried::Failed(format!(
                "QUIC to {at}: cannot resolve the hub's QUIC address"
            )));
        };
        match tokio::time::timeout(within, self.login_quic(s, h, client, hub)).await {
            Ok(Ok(x)) => Ok(x),
            Ok(Err(e)) if e.is_permanent() => Err(Tried::Permanent(e)),
            Ok(Err(e)) => Err(Tried::Failed(format!("QUIC to {hub}: {e}"))),
            Err(_) => Err(Tried::Failed(format!(
                "QUIC to {hub}: no QUIC login within {within:?}"
            ))),
        }
    }

    /// A QUIC login beside the TLS session, with the settings and TLS
    /// material as they are now. Nothing waits for it: it has the whole
    /// `connect_timeout` (a welcome lost and sent again on a lossy path
    /// would miss `QUIC_TRY`, after the hub had moved the session to it).
    async fn upgrade_login(&self, h: &HubTarget) -> Result<Ready, String> {
        let ep = &self.ep;
        let offered = *ep.offered.borrow();
        let material = ep.tls.get();
        let s = ep.settings();
        let within = s.timing.connect_timeout.max(QUIC_TRY);
        match self.try_quic(&s, h, &material.client, within).await {
            Ok((tls, welcome)) => Ok(Ready {
                tls,
                welcome,
                offered,
                identity: material.identity.clone(),
            }),
            Err(Tried::Permanent(e)) => Err(format!("QUIC login refused: {e}")),
            Err(Tried::Failed(why)) => Err(why),
        }
    }

    /// QUIC failed while TLS serves: not tried again for `quic_retry`.
    pub(super) fn quic_failed(&self, why: &str) {
        self.link.quic_lock().failed = Some(Instant::now());
        let retry = self.ep.settings().timing.quic_retry;
        tracing::warn!("{why}; serving over TLS over TCP, trying QUIC again in {retry:?}");
    }

    /// QUIC has not failed lately at this hub.
    pub(super) fn quic_allowed(&self) -> bool {
        let retry = self.ep.settings().timing.quic_retry;
        self.link
            .quic_lock()
            .failed
            .is_none_or(|t| t.elapsed() >= retry)
    }

    /// Over TLS with a hub that offers QUIC: the session ends to log in
    /// over QUIC now (players already on TLS channels keep them).
    pub(super) fn quic_instead(&self, h: &HubTarget, w: &Welcome) -> Option<End> {
        (h.transport == Transport::Auto
            && w.link.is_none()
            && w.quic_port.is_some()
            && self.quic_allowed())
        .then(|| End {
            switch: true,
            ..super::end("the hub offers QUIC; logging in over it".into())
        })
    }

    /// A TLS session under `auto` with a hub that offers QUIC, which
    /// failed lately: when to try it again beside the session.
    pub(super) fn upgrade<'a>(&self, h: &HubTarget, w: &Welcome) -> Upgrade<'a> {
        let due = h.transport == Transport::Auto && w.link.is_none() && w.quic_port.is_some();
        let retry = self.ep.settings().timing.quic_retry;
        let failed = self.link.quic_lock().failed;
        Upgrade {
            at: due.then(|| failed.map_or_else(Instant::now, |t| t + retry)),
            trying: None,
        }
    }
}
