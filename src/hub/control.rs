//! The control door: ep logins and their sessions.
//!
//! Order of checks, cheapest first: source in `ep_allowlist` → the gate
//! (penalties, caps on pending logins) → TLS with a client certificate →
//! this certificate's own penalty → hello → Argon2 (bounded concurrency) →
//! services. All but the first two run in the connection's own task under
//! one deadline. A failure before a valid certificate is charged to the
//! address; after it, to the ep's identity.

use super::offer::Offer;
use super::service::Tunnel;
use super::{Shared, gate::Turned, refusals::Reason};
use crate::{
    net,
    proto::{
        self, CloseKind, EpMsg, FrameError, FrameReader, HubMsg, MIN_PROTOCOL_VERSION,
        PROTOCOL_VERSION, RefusalKind,
    },
    token,
};
use std::{net::SocketAddr, os::fd::RawFd, sync::Arc, time::Duration};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::mpsc};
use tracing::Instrument;

/// Control messages queued for one ep; `Open` requests beyond this wait for
/// the next heartbeat tick rather than piling up.
pub(super) const CTRL_QUEUE: usize = 256;

pub(super) fn on_accept(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr) {
    let ip = addr.ip();
    if !shared.settings().allowlist.contains(ip) {
        shared
            .refusals
            .record(Reason::NotAllowlisted, ip, "closed before TLS");
        return;
    }
    let live = shared.sessions.has_ip(ip);
    let permit = match shared.logins.gate.enter(ip, live) {
        Ok(p) => p,
        Err(turned) => {
            shared
                .refusals
                .record(turned_reason(turned), ip, "closed before TLS");
            return;
        }
    };
    net::tune_control(&tcp);
    let span = tracing::info_span!("control", peer = %addr);
    shared.tracker.clone().spawn(
        async move {
            let login = handle_login(&shared, tcp, addr).await;
            drop(permit);
            if let Some(s) = login {
                session(shared, s).await;
            }
        }
        .instrument(span),
    );
}

/// The refusal a gate's verdict counts as.
pub(super) fn turned_reason(turned: Turned) -> Reason {
    match turned {
        Turned::Penalised => Reason::Penalised,
        Turned::TooManyPending => Reason::TooManyPending,
        Turned::TooManyFromSource => Reason::TooManyFromSource,
    }
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The same at the TCP door, the connection kept open until counted.
    #[error("TLS handshake failed: {}", .0.error)]
    TcpTls(super::trust::FailedTls),
    #[error("no hello: {0}")]
    Frame(#[from] FrameError),
    #[error("first message was not a hello")]
    NotHello,
    /// Refused after the certificate was verified: told to the ep once
    /// counted (`finish_login`), so whoever hears it sees it counted.
    #[error("ep {ep}: {why}")]
    Told {
        ep: String,
        kind: RefusalKind,
        why: String,
        tell: Box<Tell>,
    },
}

/// A refusal still to be said, on the connection it is said on.
pub(super) struct Tell {
    tls: Tunnel,
    msg: HubMsg,
}

impl std::fmt::Debug for Tell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tell").field("msg", &self.msg).finish()
    }
}

impl Tell {
    /// Says it and closes, by `until` (the login's deadline) or shutdown;
    /// whether the ep took it in time.
    async fn say(
        mut self,
        until: tokio::time::Instant,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let said = async {
            let _ = proto::write_msg(&mut self.tls, &self.msg).await;
            let _ = self.tls.shutdown().await;
            // Over QUIC the connection closes once the login is over,
            // which would discard the answer unless the ep has read it.
            if let Tunnel::Quic(q) = &mut self.tls {
                let _ = tokio::time::timeout(Duration::from_secs(1), q.send.stopped()).await;
            }
        };
        // Biased: a refusal said at once is taken, even by a login whose
        // verdict came as its deadline passed.
        tokio::select! {
            biased;
            _ = said => true,
            _ = tokio::time::sleep_until(until) => false,
            _ = shutdown.cancelled() => true,
        }
    }
}

impl Refusal {
    fn reason(&self) -> Reason {
        match self {
            Refusal::Tls(_) | Refusal::TcpTls(_) => Reason::TlsFailed,
            Refusal::Frame(_) | Refusal::NotHello => Reason::BadHello,
            Refusal::Told { kind, .. } => match kind {
                RefusalKind::WrongToken => Reason::WrongToken,
                RefusalKind::Busy => Reason::Argon2Busy,
                RefusalKind::Penalised => Reason::IdentityPenalised,
                _ => Reason::LoginRefused,
            },
        }
    }
}

/// A logged-in ep, ready for its session loop.
pub(super) struct LoggedIn {
    tls: Tunnel,
    guard: super::sessions::SessionGuard,
    ctrl_rx: mpsc::Receiver<HubMsg>,
    /// The ep negotiated features (it is newer than negotiation itself).
    modern: bool,
    /// It paces capped players to the caps it is told (feature `pace`).
    pace: bool,
}

impl LoggedIn {
    /// The session's QUIC connection, if it came through the QUIC door.
    pub fn link(&self) -> Option<crate::quic::Link> {
        self.guard.link.clone()
    }

    pub fn ep(&self) -> &str {
        &self.guard.ep
    }
}

async fn handle_login(shared: &Arc<Shared>, tcp: TcpStream, addr: SocketAddr) -> Option<LoggedIn> {
    let (ctrl_tx, ctrl_rx) = mpsc::channel(CTRL_QUEUE);
    let named = Named::default();
    let login = async {
        let tls = shared
            .trust
            .accept_tls(tcp)
            .await
            .map_err(Refusal::TcpTls)?;
        let peer = Peer::of(tls.get_ref().1.peer_certificates());
        let resumed = shared.trust.check_resumed(&tls);
        let from = (addr, &named);
        authenticate(shared, Tunnel::Tls(tls), None, peer, resumed, from, ctrl_tx).await
    };
    finish_login(shared, addr, &named, login, ctrl_rx).await
}

/// Set once a login's certificate was verified: from then on a failure
/// is charged to the certificate's name (or to no one), never to the
/// address, where it would punish every ep behind it.
#[derive(Default)]
pub(super) struct Named(std::sync::atomic::AtomicBool);

impl Named {
    pub(super) fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A login's outcome, whichever door it came through: penalties charged
/// to the address or the ep's identity, refusals counted, or a session.
pub(super) async fn finish_login(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    named: &Named,
    login: impl std::future::Future<
        Output = Result<(Tunnel, super::sessions::SessionGuard, Vec<String>), Refusal>,
    >,
    ctrl_rx: mpsc::Receiver<HubMsg>,
) -> Option<LoggedIn> {
    let deadline = shared.settings().timing.handshake_timeout;
    let until = tokio::time::Instant::now() + deadline;
    let ip = addr.ip();
    let mut login = std::pin::pin!(login);
    let login = tokio::select! {
        biased;
        r = &mut login => Ok(r),
        // `login`, which holds the connection, is dropped (and closes it)
        // only after the refusal is counted.
        _ = tokio::time::sleep_until(until) => Err(()),
        _ = shared.shutdown.cancelled() => return None,
    };
    match login {
        Ok(Ok((tls, guard, features))) => {
            shared.logins.gate.proven(ip);
            Some(LoggedIn {
                tls,
                guard,
                ctrl_rx,
                modern: !features.is_empty(),
                pace: features.iter().any(|f| f == proto::feature::PACE),
            })
        }
        Ok(Err(e)) => {
            match &e {
                // A verified certificate failed: charge that identity.
                // A verified certificate with a wrong token: charge that
                // identity. Refusals after the token is proven (a service
                // not granted, taken, or shaped otherwise) are the hub's
                // configuration talking, not a guess: they charge no one.
                Refusal::Told { ep, kind, .. } => {
                    if *kind == RefusalKind::WrongToken {
                        shared.logins.identities().strike(ep);
                    }
                }
                // Silence or junk after a verified certificate: charged to
                // its name already (`Unproven`).
                _ if named.is_set() => {}
                _ => shared.logins.gate.strike(ip),
            }
            shared.refusals.record(e.reason(), ip, &e.to_string());
            match e {
                Refusal::TcpTls(failed) => failed.close(until, &shared.shutdown).await,
                // An ep that will not take its refusal (a QUIC peer giving
                // no stream credit) held its place to the deadline: charged
                // as silence is, to its name once one is proven (a resumed
                // session's is not), unless its verdict charged it already.
                Refusal::Told { ep, kind, tell, .. } => {
                    let took = tell.say(until, &shared.shutdown).await;
                    if !took && kind != RefusalKind::WrongToken {
                        match named.is_set() {
                            true => shared.logins.identities().strike(&ep),
                            false => shared.logins.gate.strike(ip),
                        }
                    }
                }
                _ => {}
            }
            None
        }
        Err(_) => {
            if !named.is_set() {
                shared.logins.gate.strike(ip);
            }
            let why = format!("login not completed within {deadline:?}");
            shared.refusals.record(Reason::LoginTimeout, ip, &why);
            None
        }
    }
}

/// Who the verified client certificate names.
pub(super) struct Peer {
    pub ep: String,
    pub serial: String,
    /// What it presented, its own certificate first (any intermediates
    /// after): every later check of the chain needs all of it.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Peer {
    pub fn of(certs: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> Peer {
        let chain = certs.map(<[_]>::to_vec).unwrap_or_default();
        let cert = chain.first();
        Peer {
            ep: cert
                .and_then(crate::tls::common_name)
                .unwrap_or_else(|| "?".into()),
            serial: cert.and_then(crate::tls::serial_hex).unwrap_or_default(),
            chain,
        }
    }
}

/// A refusal to tell the ep: its kind, the reason, and whether it should
/// come back soon (busy) rather than after its backoff.
struct Verdict {
    kind: RefusalKind,
    why: String,
    retry: bool,
}

impl Verdict {
    fn no(kind: RefusalKind, why: impl Into<String>) -> Verdict {
        Verdict {
            kind,
            why: why.into(),
            retry: false,
        }
    }
}

/// The login after the handshake: hello, token, services, session.
pub(super) async fn authenticate(
    shared: &Arc<Shared>,
    mut tls: Tunnel,
    quic: Option<crate::quic::Link>,
    peer: Peer,
    resumed: Result<(), &'static str>,
    (addr, named): (SocketAddr, &Named),
    ctrl: mpsc::Sender<HubMsg>,
) -> Result<(Tunnel, super::sessions::SessionGuard, Vec<String>), Refusal> {
    let ep = peer.ep.clone();
    if let Err(why) = resumed {
        let why = format!("this ep's {why} (resumed TLS session)");
        return Err(refuse(tls, &ep, RefusalKind::Other, why, false, false));
    }
    named.set();
    // Armed until the login has its verdict: the deadline passing while
    // the ep is silent, or while its token is checked, is charged to its
    // name (a refusal it will not take, by `finish_login`).
    let unproven = Unproven::new(shared, &ep);
    if let Some(why) = penalised(shared, &ep) {
        unproven.heard();
        return Err(refuse(tls, &ep, RefusalKind::Penalised, why, true, true));
    }
    // A certificate from our CA, not penalised: whatever junk came from
    // this address before, a real ep is behind it. (A penalised one
    // clears nothing others earned there.)
    shared.logins.gate.vouch(addr.ip());
    let EpMsg::Hello {
        version,
        token,
        services,
        features,
        software,
        shapes,
    } = proto::read_msg(&mut tls).await?
    else {
        return Err(Refusal::NotHello);
    };
    let modern = !features.is_empty();
    let spoken = features.clone();
    let hello = Hello {
        version,
        token,
        services,
        features,
        software,
        shapes,
    };
    let from = Arrival {
        peer: &peer,
        addr,
        quic,
        ctrl,
    };
    let (guard, welcome, skipped) = match log_in(shared, hello, from).await {
        Ok(done) => {
            unproven.heard();
            done
        }
        Err(v) => {
            let refused = refuse(tls, &ep, v.kind, v.why, v.retry, modern);
            // Its verdict charges it, or no one (`finish_login`).
            unproven.heard();
            return Err(refused);
        }
    };
    shared.logins.identities().clear(&ep);
    // Written directly, so it precedes the `Open`s registering just queued.
    proto::write_msg(&mut tls, &welcome).await?;
    // What it offered and does not serve, and why: in its log, not only
    // in the hub's.
    if modern && !skipped.is_empty() {
        let told = not_served(&guard, &welcome, skipped);
        proto::write_msg(&mut tls, &told).await?;
    }
    Ok((tls, guard, spoken))
}

/// What a session serves goes to another ep that offers it as the session
/// ends, however it ends: a welcome it never takes ends it too.
fn hand_off(shared: &Arc<Shared>) -> super::sessions::HandOff {
    let sh = Arc::downgrade(shared);
    Box::new(move |served| {
        if let Some(sh) = sh.upgrade() {
            let _offers = sh.offers();
            for svc in &served {
                sh.hand_to_offering(svc);
            }
        }
    })
}

/// Why `ep` is refused, if its certificate's name is penalised.
fn penalised(shared: &Shared, ep: &str) -> Option<String> {
    let left = shared.logins.identities().remaining(&ep.to_string())?;
    Some(format!(
        "too many failed logins with this ep's certificate; retry in {}s",
        left.as_secs() + 1
    ))
}

/// A verified certificate whose login has no verdict yet. Dropped before
/// `heard` (silence until the deadline, junk, a cut connection, a token
/// check outlasting the deadline), the failure is charged to
/// the certificate's name: charged to the address,
/// as before any certificate, the next good handshake from there would
/// clear it, and a certificate without its token could then hold its
/// address's login places for ever without a penalty.
pub(super) struct Unproven<'a> {
    shared: &'a Shared,
    ep: Option<&'a str>,
}

impl<'a> Unproven<'a> {
    pub(super) fn new(shared: &'a Shared, ep: &'a str) -> Self {
        Unproven {
            shared,
            ep: Some(ep),
        }
    }

    pub(super) fn heard(mut self) {
        self.ep = None;
    }
}

impl Drop for Unproven<'_> {
    fn drop(&mut self) {
        if let Some(ep) = self.ep {
            self.shared.logins.identities().strike(&ep.to_string());
        }
    }
}

/// An ep's `Hello`, field by field.
struct Hello {
    version: u32,
    token: crate::secret::Secret,
    services: Vec<String>,
    features: Vec<String>,
    software: Option<String>,
    shapes: std::collections::BTreeMap<String, proto::Shape>,
}

/// Who is logging in, from where, and what its session will carry.
struct Arrival<'a> {
    peer: &'a Peer,
    addr: SocketAddr,
    quic: Option<crate::quic::Link>,
    ctrl: mpsc::Sender<HubMsg>,
}

/// A session registered, its welcome, and what it offered but does not
/// serve, with why.
type Registered = (
    super::sessions::SessionGuard,
    HubMsg,
    std::collections::BTreeMap<String, String>,
);

/// Version, token and offer checked, then the session registered: the
/// guard, the welcome to send, and the services offered but not served
/// with why.
async fn log_in(
    shared: &Arc<Shared>,
    hello: Hello,
    from: Arrival<'_>,
) -> Result<Registered, Verdict> {
    let Hello {
        version,
        token,
        services,
        features,
        software,
        shapes,
    } = hello;
    let Arrival {
        peer,
        addr,
        quic,
        ctrl,
    } = from;
    let ep = &peer.ep;
    let modern = !features.is_empty();
    check_version(version)?;
    let hash = verify_token(shared, ep, token).await?;
    warn_if_expiring(peer);
    // Matched and registered as one step against a reload (`offers`).
    let offers = shared.offers();
    let (offer, mut matched) = match_offer(shared, ep, services, shapes, &features)?;
    let welcome = welcome(shared, modern, version, &features, &offer, &matched);
    let login = super::sessions::Login {
        ep,
        serial: &peer.serial,
        chain: &peer.chain,
        ip: addr.ip(),
        version: &software_label(software.as_deref()),
        modern,
        link: quic,
        hand_off: hand_off(shared),
    };
    let still_valid = || still_valid(shared, ep, &hash, addr.ip(), peer);
    let mut skipped = std::mem::take(&mut matched.unauthorised);
    skipped.append(&mut matched.refused);
    let offered = matched.services.clone();
    let guard = shared
        .sessions
        .register(login, offer, matched.services, ctrl, still_valid)
        .map_err(|(kind, why)| Verdict {
            // A credential that changed during the login: the ep may well
            // hold the new one, so it comes back soon (and no identity
            // penalty is charged).
            retry: kind == RefusalKind::Other,
            kind,
            why,
        })?;
    drop(offers);
    let serving = guard.services();
    for svc in offered
        .iter()
        .filter(|o| !serving.iter().any(|s| Arc::ptr_eq(s, o)))
    {
        let holder = svc.served_by().unwrap_or_default();
        let why = format!("served by ep {holder}; this ep takes it over when {holder} lets go");
        skipped.insert(svc.name.clone(), why);
    }
    Ok((guard, welcome, skipped))
}

/// `Services`: of the welcome's services, those the session serves, and
/// the ones `skipped` with why.
fn not_served(
    guard: &super::sessions::SessionGuard,
    welcome: &HubMsg,
    skipped: std::collections::BTreeMap<String, String>,
) -> HubMsg {
    let serving = guard.services();
    let HubMsg::Welcome { services, .. } = welcome else {
        unreachable!("a welcome")
    };
    let services = services
        .iter()
        .filter(|(name, _)| serving.iter().any(|s| &s.name == *name))
        .map(|(n, s)| (n.clone(), *s))
        .collect();
    HubMsg::Services {
        services,
        refused: told_refused(skipped),
    }
}

/// What an answer tells the ep of the services refused: as much as fits
/// in half a frame (the rest of the answer is the hub's own services). An
/// ep offering hundreds of names refused, each told the list of what it
/// may serve, would otherwise make an answer over the frame limit, and the
/// write's failure would end the session just welcomed, again at every
/// login. The hub's log has them all.
fn told_refused(
    refused: std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    const BUDGET: usize = proto::MAX_FRAME / 2;
    const MOST_WHY: usize = 240;
    let (mut told, mut used, mut left) = (std::collections::BTreeMap::new(), 0, 0);
    for (name, mut why) in refused {
        if why.len() > MOST_WHY {
            let mut end = MOST_WHY;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
            why.push('…');
        }
        // Each entry as JSON writes it (names come from the ep: escapes
        // can make one six times its length), a colon and a comma.
        let json = |t: &str| serde_json::to_string(t).map_or(usize::MAX / 4, |j| j.len());
        let cost = json(&name) + json(&why) + 2;
        if used + cost > BUDGET {
            left += 1;
            continue;
        }
        used += cost;
        told.insert(name, why);
    }
    if left > 0 {
        told.insert(
            format!("(and {left} more)"),
            "refused too; the hub's log says why".into(),
        );
    }
    told
}

/// What the login proved, against the settings and revocation list as
/// they are at registration: a token hash, allowlist or CRL changed while
/// Argon2 ran refuses the login (the reload's own sweep only sees
/// sessions already registered).
fn still_valid(
    shared: &Shared,
    ep: &str,
    hash: &str,
    ip: std::net::IpAddr,
    peer: &Peer,
) -> Result<(), (RefusalKind, String)> {
    let s = shared.settings();
    if s.credentials.for_ep(ep) != Some(hash) {
        let why =
            "this ep's token changed on the hub during the login; log in with the current one";
        return Err((RefusalKind::Other, why.into()));
    }
    if !s.allowlist.contains(ip) {
        let why = "the ep's address left ep_allowlist during the login";
        return Err((RefusalKind::Other, why.into()));
    }
    let revoked = shared
        .trust
        .revoked
        .read()
        .unwrap_or_else(|p| p.into_inner());
    if revoked.contains(&peer.serial) {
        return Err((RefusalKind::Other, "certificate revoked".into()));
    }
    drop(revoked);
    // A CA replaced during the login (the reload's sweep ran before this
    // session existed). Checked for every login: which CA the handshake
    // used cannot be known from here (a reload swaps the material before
    // the doors' acceptors, and a handshake may span both swaps; QUIC's
    // endpoint takes its configuration when the connection begins), and
    // one chain check per login is small beside its Argon2.
    let trust = shared.trust.loaded.get();
    if !peer.chain.is_empty() && !trust.material.issued(&peer.chain) {
        let why = "the hub's CA changed during the login and did not issue this certificate";
        return Err((RefusalKind::Other, why.into()));
    }
    Ok(())
}

fn check_version(version: u32) -> Result<(), Verdict> {
    if version < MIN_PROTOCOL_VERSION {
        let why = format!(
            "protocol version {version} is too old (this hub speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}); upgrade the ep"
        );
        return Err(Verdict::no(RefusalKind::Version, why));
    }
    Ok(())
}

/// The Argon2 check of `token` against `ep`'s hash. A few verifications
/// run at a time; more are told to come back rather than queued, so a
/// burst of logins cannot pile up Argon2 work.
async fn verify_token(
    shared: &Arc<Shared>,
    ep: &str,
    token: crate::secret::Secret,
) -> Result<String, Verdict> {
    let wrong = || Verdict::no(RefusalKind::WrongToken, "wrong token");
    let Some(hash) = shared.settings().credentials.for_ep(ep).map(str::to_owned) else {
        let why = format!("no token_hash for ep {ep:?} (add [eps.{ep}] or a top-level token_hash)");
        return Err(Verdict::no(RefusalKind::WrongToken, why));
    };
    if token.expose().len() > token::MAX_TOKEN_LEN {
        return Err(wrong());
    }
    if shared.logins.verified_before(ep, &hash, &token) {
        return Ok(hash);
    }
    let checks = &shared.metrics.argon2;
    let count = |o: crate::metrics::Outcome| checks.get_or_create(&o.label()).inc();
    let Ok(permit) = shared.logins.argon2.clone().try_acquire_owned() else {
        count(crate::metrics::Outcome::Busy);
        return Err(Verdict {
            kind: RefusalKind::Busy,
            why: "busy verifying other logins; retry shortly".into(),
            retry: true,
        });
    };
    let stats = shared.logins.argon2_stats.clone();
    let (hash_used, checked) = (hash.clone(), token.clone());
    let good = tokio::task::spawn_blocking(move || {
        let _running = stats.enter();
        let ok = token::verify(&token, &hash);
        drop(permit);
        ok
    })
    .await
    .unwrap_or(false);
    if good {
        count(crate::metrics::Outcome::Ok);
        shared.logins.remember(ep, &hash_used, &checked);
        Ok(hash_used)
    } else {
        count(crate::metrics::Outcome::Wrong);
        Err(wrong())
    }
}

/// The ep's offer against the hub's services: a contradicted shape or no
/// service at all refuses the login; services the hub lacks are skipped.
fn match_offer(
    shared: &Shared,
    ep: &str,
    names: Vec<String>,
    shapes: std::collections::BTreeMap<String, proto::Shape>,
    features: &[String],
) -> Result<(Offer, super::offer::Matched), Verdict> {
    let offer = Offer {
        names,
        shapes,
        udp: features.iter().any(|f| f == proto::feature::UDP),
    };
    let mut matched = offer.resolve(shared, ep);
    if let Some((_, why)) = std::mem::take(&mut matched.mismatch).into_iter().next() {
        return Err(Verdict::no(RefusalKind::ServiceMismatch, why));
    }
    // Skipped, never refusing what else it offers; a few lines a second
    // per ep (a verified ep logs in again without an Argon2 run).
    static UNGRANTED: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
    if !matched.unauthorised.is_empty()
        && let Some(unsaid) = UNGRANTED.now_within(ep, 3)
    {
        for (name, why) in matched.unauthorised.iter().take(8) {
            tracing::warn!(%ep, service = ?name, unsaid, "the ep offers a service it is not granted; skipped: {why}");
        }
    }
    // Granted nothing (yet), or offering nothing (enrolled with an invite
    // that granted nothing): logged in all the same, serving nothing, so a
    // grant a reload adds, or a service its ep.toml adds, reaches it at
    // once. Only an offer of nothing but names this hub does not serve
    // (a typo) is refused, with the name.
    if matched.services.is_empty()
        && matched.unauthorised.is_empty()
        && let Some((name, why)) = matched.refused.iter().next()
    {
        return Err(Verdict::no(
            RefusalKind::UnknownService,
            format!("unknown service {name:?}: {why}"),
        ));
    }
    // One line however many: an ep's offer may name thousands.
    if !matched.refused.is_empty() {
        let shown: Vec<String> = (matched.refused.iter().take(8))
            .map(|(name, why)| format!("{name:?} ({why})"))
            .collect();
        let more = matched.refused.len().saturating_sub(shown.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        tracing::warn!(
            %ep,
            unknown = matched.refused.len(),
            "the ep offers services this hub does not serve: {}{more}",
            shown.join(", ")
        );
    }
    Ok((offer, matched))
}

/// The welcome for an ep that speaks `version` with `features`.
fn welcome(
    shared: &Shared,
    modern: bool,
    version: u32,
    features: &[String],
    offer: &Offer,
    matched: &super::offer::Matched,
) -> HubMsg {
    let t = shared.settings().timing;
    HubMsg::Welcome {
        heartbeat_ms: millis(t.heartbeat_interval),
        heartbeat_timeout_ms: millis(t.heartbeat_timeout),
        idle_timeout_ms: millis(t.idle_timeout),
        // Only eps that negotiate accept fields beyond the three timings.
        version: modern.then_some(PROTOCOL_VERSION.min(version)),
        features: if modern { proto::features() } else { vec![] },
        services: if offer.udp {
            matched.shapes.clone()
        } else {
            Default::default()
        },
        quic: shared
            .quic_port()
            .filter(|_| features.iter().any(|f| f == proto::feature::QUIC)),
    }
}

/// The ep's ferry version as a metric label and a status-page line: what
/// an ep says is its own business, so only a short, plain string is kept
/// (labels are series; a label of any length and any content would let one
/// ep grow the hub's metrics without bound).
fn software_label(software: Option<&str>) -> String {
    const MAX: usize = 32;
    match software {
        Some(s)
            if !s.is_empty()
                && s.len() <= MAX
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c)) =>
        {
            s.to_string()
        }
        Some(_) => "other".into(),
        None => "unknown".into(),
    }
}

fn warn_if_expiring(peer: &Peer) {
    if let Some(days) = peer.chain.first().and_then(crate::tls::days_left)
        && days < 30
    {
        let ep = &peer.ep;
        tracing::warn!(ep = %ep, "this ep's certificate expires in {days} days; issue a new one with `ferry hub gen-cert --ep {ep} --force`");
    }
}

/// The refusal to tell the ep (its operator needs the reason), then close.
fn refuse(
    tls: Tunnel,
    ep: &str,
    kind: RefusalKind,
    why: String,
    retry: bool,
    modern: bool,
) -> Refusal {
    let msg = HubMsg::Refused {
        reason: why.clone(),
        retry,
        kind: modern.then_some(kind),
    };
    Refusal::Told {
        ep: ep.to_string(),
        kind,
        why,
        tell: Box::new(Tell { tls, msg }),
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Who ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The hub, on purpose (revoked, replaced, a token or grant changed).
    Hub,
    /// The ep closed its control connection itself.
    Ep,
    /// The hub found it failing (silence, junk, an ep that reads nothing).
    Failed,
}

pub(super) async fn session(shared: Arc<Shared>, s: LoggedIn) -> Ended {
    let LoggedIn {
        tls,
        guard,
        mut ctrl_rx,
        modern,
        pace,
    } = s;
    let t = shared.settings().timing;
    let names: Vec<String> = guard.services().iter().map(|s| s.name.clone()).collect();
    tracing::info!(ep = %guard.ep, session = guard.id, services = ?names, "ep logged in");
    let fd = super::service::tcp_fd(&tls);
    let (rd, mut wr) = tokio::io::split(tls);
    let mut rd = FrameReader::new(rd);
    let mut tick = tokio::time::interval(t.heartbeat_interval);
    let mut silence = Box::pin(tokio::time::sleep(t.heartbeat_timeout));
    let (mut pongs, said) = (Pongs::default(), crate::log_rate::Once::new());
    let (mut paced, mut reloads) = (super::pace::Paced::new(pace), shared.reloads.subscribe());
    let mut told = Told::default();
    // A write cut short by the session's end may have left half a frame:
    // nothing more is written after it. `ep_left`: the ep closed its
    // control connection itself (its drain on SIGTERM), no failure found.
    let (mut cut, mut ep_left) = (false, false);
    let (reason, told) = loop {
        let out = tokio::select! {
            msg = rd.read::<EpMsg>() => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        ep_left = matches!(e, proto::FrameError::Closed);
                        break (format!("control connection: {e}"), None);
                    }
                };
                silence.as_mut().reset(tokio::time::Instant::now() + t.heartbeat_timeout);
                told.heard(&shared, &guard, &msg);
                if !pongs.answer(&msg, t.heartbeat_interval) {
                    continue;
                }
                match heard(&shared, &guard, msg, &said) {
                    Ok(Some(answer)) => answer,
                    Ok(None) => continue,
                    Err(why) => break (why, None),
                }
            }
            _ = silence.as_mut() => break (format!("no heartbeat for {:?}", t.heartbeat_timeout), None),
            Some(m) = ctrl_rx.recv() => m,
            _ = tick.tick() => beat(&shared, &guard, fd, told.fresh(t.heartbeat_interval), &mut paced),
            Ok(()) = reloads.changed(), if paced.on() => match paced.due(&shared, &guard) {
                Some(m) => m,
                None => continue,
            },
            (kind, why) = guard.ended() => break (why, Some(kind)),
        };
        // An ep that stops reading must not hold the session (and its
        // services) past a revocation or a replacement, nor for ever.
        // Biased: an end interrupts only a write that waits, not its goodbye.
        let wrote = tokio::select! {
            biased;
            r = tokio::time::timeout(t.heartbeat_timeout, proto::write_msg(&mut wr, &out)) => r,
            (kind, why) = guard.ended() => {
                cut = true;
                break (why, Some(kind));
            }
        };
        if let Some((why, left)) = unsent(wrote, t.heartbeat_timeout) {
            ep_left = left;
            break (why, None);
        }
    };
    if let Some(kind) = told.filter(|_| !cut) {
        goodbye(&mut wr, &reason, modern.then_some(kind)).await;
    }
    ended(&shared, guard, &reason, told);
    match (told, ep_left) {
        (Some(_), _) => Ended::Hub,
        (None, true) => Ended::Ep,
        (None, false) => Ended::Failed,
    }
}

/// Why a write on the session failed, if it did, and whether that is the
/// ep leaving: an ep that leaves puts its control stream down, and over
/// QUIC a write can learn that before the read sees the stream's end.
fn unsent(
    wrote: Result<Result<(), proto::FrameError>, tokio::time::error::Elapsed>,
    within: Duration,
) -> Option<(String, bool)> {
    match wrote {
        Ok(Ok(())) => None,
        // Logged as the read would have said it: one leaving, one line.
        Ok(Err(proto::FrameError::Io(io))) if crate::quic::put_down(&io) => Some((
            format!("control connection: {}", proto::FrameError::Closed),
            true,
        )),
        Ok(Err(e)) => Some((format!("control connection: {e}"), false)),
        Err(_) => Some((unread(within), false)),
    }
}

fn unread(within: Duration) -> String {
    format!("the ep read nothing for {within:?}")
}

/// Ended on purpose: say why, so the ep's operator can act on it.
async fn goodbye<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    reason: &str,
    kind: Option<CloseKind>,
) {
    let bye = HubMsg::Closing {
        reason: reason.to_string(),
        kind,
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), proto::write_msg(wr, &bye)).await;
}

/// A heartbeat's work: pools topped up, the round trip measured, and
/// what goes to the ep (caps that changed, or a heartbeat).
fn beat(
    shared: &Shared,
    guard: &super::sessions::SessionGuard,
    fd: Option<RawFd>,
    told: bool,
    paced: &mut super::pace::Paced,
) -> HubMsg {
    guard.services().iter().for_each(|s| s.top_up());
    measure_rtt(shared, guard, fd, told);
    paced.due(shared, guard).unwrap_or(HubMsg::Heartbeat)
}

/// The session's round trip, for the players table and the ep's gauge:
/// the control connection's TCP RTT over TLS (`fd`, open while the
/// session loop runs), the path's RTT over QUIC.
/// While the ep has lately `told` its own figure (its ping's round trip
/// over TLS, truer than TCP's for a connection this quiet), that is kept.
fn measure_rtt(
    shared: &Shared,
    guard: &super::sessions::SessionGuard,
    fd: Option<RawFd>,
    told: bool,
) {
    let rtt = match (&guard.link, fd) {
        (None, _) if told => None,
        (Some(link), _) => Some(link.conn.rtt()),
        (None, Some(fd)) => crate::tcp_info::rtt(fd),
        (None, None) => None,
    };
    if let Some(rtt) = rtt {
        set_rtt(shared, guard, rtt);
    }
}

/// When the ep last told its round trip (over TLS).
#[derive(Default)]
struct Told(Option<tokio::time::Instant>);

impl Told {
    fn heard(&mut self, shared: &Shared, guard: &super::sessions::SessionGuard, msg: &EpMsg) {
        if told_rtt(shared, guard, msg) {
            self.0 = Some(tokio::time::Instant::now());
        }
    }

    /// Told within three heartbeats: TCP's figure is not needed.
    fn fresh(&self, interval: Duration) -> bool {
        self.0.is_some_and(|at| at.elapsed() < interval * 3)
    }
}

/// The round trip an ep's ping tells (over TLS), if it tells one.
fn told_rtt(shared: &Shared, guard: &super::sessions::SessionGuard, msg: &EpMsg) -> bool {
    let EpMsg::Ping {
        rtt_us: Some(us), ..
    } = msg
    else {
        return false;
    };
    if guard.link.is_some() {
        return false;
    }
    // A minute at most: more is a broken clock or a lie.
    set_rtt(shared, guard, Duration::from_micros((*us).min(60_000_000)));
    true
}

fn set_rtt(shared: &Shared, guard: &super::sessions::SessionGuard, rtt: Duration) {
    let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
    guard.rtt.store(us, std::sync::atomic::Ordering::Relaxed);
    let label = crate::metrics::EpNameLabel {
        ep: guard.ep.clone(),
    };
    shared
        .metrics
        .ep_rtt
        .get_or_create(&label)
        .set(rtt.as_secs_f64());
}

/// Pings answered at most four times a heartbeat interval (an honest ep
/// sends one): an ep that floods them (and stops reading) gets no stream
/// of answers to fill its connection with.
#[derive(Default)]
struct Pongs(Option<tokio::time::Instant>);

impl Pongs {
    /// Whether `msg` is to be handled (a ping too soon after the last one
    /// answered counts as a heartbeat only).
    fn answer(&mut self, msg: &EpMsg, interval: Duration) -> bool {
        if !matches!(msg, EpMsg::Ping { .. }) {
            return true;
        }
        if self.0.is_some_and(|at| at.elapsed() < interval / 4) {
            return false;
        }
        self.0 = Some(tokio::time::Instant::now());
        true
    }
}

/// One message from the ep in a session: the answer to send, if any, or
/// why the session ends (a message that has no place in one).
fn heard(
    shared: &Shared,
    guard: &super::sessions::SessionGuard,
    msg: EpMsg,
    said: &crate::log_rate::Once,
) -> Result<Option<HubMsg>, String> {
    match msg {
        EpMsg::Heartbeat => Ok(None),
        EpMsg::Ping { n, .. } => Ok(Some(HubMsg::Pong { n })),
        EpMsg::Dialed {
            service,
            player,
            us,
        } => {
            if let Some(took) = shared.players.dialed(guard.id, &service, player, us) {
                let label = shared.metrics.service(&service);
                let h = shared.metrics.local_dial.get_or_create(&label);
                h.observe(took.as_secs_f64());
            }
            Ok(None)
        }
        EpMsg::ChannelFailed {
            service,
            ticket,
            reason,
        } => {
            if let Some(svc) = guard.services().iter().find(|s| s.name == service)
                && svc.channel_failed(&ticket, guard.id)
            {
                // An ep can fail every ticket, and have new ones at once by
                // offering the service again: a few lines a second.
                static SAID: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
                if let Some(unsaid) = SAID.now_within(&service, 3) {
                    let reason = crate::proto::shown(&reason);
                    tracing::warn!(ep = %guard.ep, service, unsaid, "the ep could not open a channel: {reason}");
                }
            }
            Ok(None)
        }
        EpMsg::Home { services } => {
            // The whole picture: a service left out is one the ep knows
            // nothing of (any more).
            guard.homes_said(services);
            Ok(None)
        }
        EpMsg::Services { services, shapes } => {
            Ok(Some(reannounced(shared, guard, services, shapes, said)))
        }
        other => Err(format!("unexpected message {:?}", kind(&other))),
    }
}

/// After a session: the address proven from now, what it served handed to
/// another ep that offers it (as the guard drops), and the end logged.
fn ended(
    shared: &Shared,
    guard: super::sessions::SessionGuard,
    reason: &str,
    told: Option<CloseKind>,
) {
    // Proven for a day after the session ends, not after it began.
    shared.logins.gate.session_ended(guard.ip);
    // What it served goes to another ep that offers it, if one does, as
    // the guard drops (`Login::hand_off`).
    let (ep, id) = (guard.ep.clone(), guard.id);
    drop(guard);
    if shared.sessions.over_quic(&ep).is_none() {
        let label = crate::metrics::EpNameLabel { ep: ep.clone() };
        shared.metrics.ep_rtt.remove(&label);
    }
    // Closed by the hub on purpose (a token or an address no longer
    // valid, a re-enrolment): its players finish as a removed service's
    // do, within the drain. A revoked certificate's players are cut by
    // the revocation's own sweep (`crl::apply_serials`, by serial); an ep
    // that merely went away (or logged in again) keeps its players on
    // their own channels.
    if told == Some(CloseKind::Other) {
        let drain = shared.settings().timing.drain_timeout;
        let why = "the hub closed the ep's session";
        // Its earlier sessions' players too: a TLS channel outlives the
        // control connection it was opened for (a reconnect after a blip).
        let whose = ep.clone();
        let doomed = move |p: &super::players::Player| match p.ep() {
            Some(ep) => ep == &*whose && p.session().is_some_and(|s| s <= id),
            // Its channel taken just as the session left: by the session.
            None => p.session() == Some(id),
        };
        shared.end_players_after(drain, doomed, why);
    }
    if told == Some(CloseKind::ShuttingDown) {
        tracing::debug!(ep = %ep, session = id, "ep session ended: {reason}");
    } else {
        tracing::info!(ep = %ep, session = id, "ep session ended: {reason}");
    }
}

/// The ep's services changed (its configuration was reloaded): serve what
/// it offers now, and tell it what that is. Logged at most once a second
/// (`said`): an honest ep re-announces at its reloads, and each line names
/// every service it offered and why each was refused.
fn reannounced(
    shared: &Shared,
    guard: &super::sessions::SessionGuard,
    names: Vec<String>,
    shapes: std::collections::BTreeMap<String, proto::Shape>,
    said: &crate::log_rate::Once,
) -> HubMsg {
    let offer = Offer {
        names,
        shapes,
        udp: true,
    };
    let offers = shared.offers();
    let mut matched = offer.resolve(shared, &guard.ep);
    // A contradicted shape refuses that service, not the session; so does
    // one this ep is not granted.
    matched.refused.append(&mut matched.mismatch);
    matched.refused.append(&mut matched.unauthorised);
    let (taken, released) = shared
        .sessions
        .reoffer(guard.id, offer, matched.services.clone());
    // A service this ep let go goes to another ep that offered it (an ep
    // whose reload offering it landed before this one's dropping it).
    for svc in released {
        shared.hand_to_offering(&svc);
    }
    drop(offers);
    for (name, why) in taken {
        matched.shapes.remove(&name);
        matched.refused.insert(name, why);
    }
    let now: Vec<&String> = matched.shapes.keys().collect();
    match said.now() {
        Some(unsaid) => {
            tracing::info!(ep = %guard.ep, session = guard.id, services = ?now, refused = ?matched.refused, unsaid, "the ep re-announced its services")
        }
        None => {
            tracing::debug!(ep = %guard.ep, session = guard.id, services = ?now, refused = ?matched.refused, "the ep re-announced its services")
        }
    }
    HubMsg::Services {
        services: matched.shapes,
        refused: told_refused(matched.refused),
    }
}

fn kind(m: &EpMsg) -> &'static str {
    match m {
        EpMsg::Hello { .. } => "hello",
        EpMsg::Heartbeat => "heartbeat",
        EpMsg::Channel { .. } => "channel",
        EpMsg::ChannelFailed { .. } => "channel_failed",
        EpMsg::Services { .. } => "services",
        EpMsg::Home { .. } => "home",
        EpMsg::Ping { .. } => "ping",
        EpMsg::Dialed { .. } => "dialed",
        EpMsg::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many services an ep offered that the hub refuses, and
    /// however long each reason, the answer fits in a frame.
    #[test]
    fn the_refusals_told_fit_in_a_frame() {
        let grants = "a-granted-service, ".repeat(200);
        // Names as a compromised ep may send them: control characters,
        // each escaped to six bytes.
        let junk = "\u{1}".repeat(60);
        let refused = (0..2000)
            .map(|i| {
                (
                    format!("{junk}{i:04}"),
                    format!("not granted (it may serve: {grants})"),
                )
            })
            .collect();
        let told = told_refused(refused);
        assert!(told.keys().any(|k| k.starts_with("(and ")), "{told:?}");
        let answer = HubMsg::Services {
            services: Default::default(),
            refused: told,
        };
        let body = serde_json::to_vec(&answer).unwrap();
        assert!(body.len() <= proto::MAX_FRAME / 2 + 512, "{}", body.len());
    }
}
