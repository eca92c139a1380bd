//! Who is logged in: one session per ep name, and the addresses the channel
//! port accepts (those of logged-in eps).

use super::{
    offer::Offer,
    service::{Attached, Service},
};
use crate::proto::{CloseKind, HubMsg, RefusalKind};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The services a session serves now; shared by its entry (which
/// reloads change) and its guard (which detaches them at the end).
type Serving = Arc<Mutex<Vec<Arc<Service>>>>;

struct Entry {
    session: u64,
    /// Its ep's name, shared with the players it carries.
    name: Arc<str>,
    serial: Arc<str>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    ip: IpAddr,
    version: String,
    since: tokio::time::Instant,
    end: Arc<EndSignal>,
    /// What the ep offered; a service the hub adds later is matched to it.
    offer: Offer,
    serving: Serving,
    ctrl: mpsc::Sender<HubMsg>,
    modern: bool,
    /// The session's QUIC connection, if it rides QUIC.
    link: Option<crate::quic::Link>,
    rtt: Rtt,
    homes: Homes,
}

/// What a session's ep last said of its services at home (`EpMsg::Home`,
/// the whole picture each time): a service it starts serving later (a
/// reload adding it back, a grant given) begins from it, not from nothing
/// (the ep says it again only when it changes).
pub(crate) type Homes = Arc<Mutex<std::collections::BTreeMap<String, crate::proto::HomeState>>>;

/// A session's round trip in µs as last measured (0: not yet).
pub(crate) type Rtt = Arc<std::sync::atomic::AtomicU64>;

fn rtt_of(rtt: &Rtt, link: Option<&crate::quic::Link>) -> Option<std::time::Duration> {
    if let Some(l) = link {
        return Some(l.conn.rtt());
    }
    let us = rtt.load(std::sync::atomic::Ordering::Relaxed);
    (us > 0).then(|| std::time::Duration::from_micros(us))
}

/// Who is logging in, as the control door verified it.
pub(crate) struct Login<'a> {
    pub ep: &'a str,
    pub serial: &'a str,
    /// The certificate chain it presented (for a later change of CA).
    pub chain: &'a [rustls::pki_types::CertificateDer<'static>],
    pub ip: IpAddr,
    /// The ep's ferry version.
    pub version: &'a str,
    /// It negotiates features.
    pub modern: bool,
    /// Its QUIC connection, if it came through the QUIC door.
    pub link: Option<crate::quic::Link>,
    /// Given what the session served as its guard drops, however it ends:
    /// at its loop's end, or a login dropped after it registered (a
    /// welcome the ep never took, the login's deadline). Run after the
    /// sessions' lock is let go; never while `Shared::offers` is held (no
    /// guard is dropped under it).
    pub hand_off: HandOff,
}

/// A logged-in ep, for the status page.
pub(crate) struct EpStatus {
    pub name: String,
    pub ip: IpAddr,
    pub version: String,
    pub since: tokio::time::Instant,
    pub rtt: Option<std::time::Duration>,
    pub over_quic: bool,
}

/// Ends a session from outside (a newer login, a revocation) with a reason.
/// Its token is a child of the hub's shutdown token, so shutting down ends
/// every session through the same signal.
pub(crate) struct EndSignal {
    token: CancellationToken,
    reason: Mutex<Option<(CloseKind, String)>>,
}

impl EndSignal {
    /// Ends with `stop` (the hub's shutdown) or its own `end`.
    fn under(stop: &CancellationToken) -> Arc<Self> {
        Arc::new(EndSignal {
            token: stop.child_token(),
            reason: Mutex::new(None),
        })
    }

    fn end(&self, kind: CloseKind, reason: &str) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some((kind, reason.to_string()));
        self.token.cancel();
    }
}

#[derive(Default)]
struct State {
    by_ep: HashMap<String, Entry>,
    ips: HashMap<IpAddr, usize>,
    next_id: u64,
    /// Who carried the sessions that ended lately: a player whose channel
    /// was taken just before its session ended still learns whose
    /// certificate carries it (a revocation, a reload's cut then reach it).
    gone: HashMap<u64, Carrier>,
    /// Their order, oldest first, so the oldest is forgotten first.
    gone_order: std::collections::VecDeque<u64>,
}

impl State {
    fn remember_gone(&mut self, session: u64, e: &Entry) {
        let carrier = Carrier {
            ep: Some(e.name.clone()),
            serial: Some(e.serial.clone()),
        };
        if self.gone.len() >= GONE_KEPT
            && let Some(oldest) = self.gone_order.pop_front()
        {
            self.gone.remove(&oldest);
        }
        if self.gone.insert(session, carrier).is_none() {
            self.gone_order.push_back(session);
        }
    }
}

/// Who carries a session's players: its ep and its certificate's serial
/// (neither known for a session ended too long ago).
#[derive(Clone, Default)]
pub(crate) struct Carrier {
    pub ep: Option<Arc<str>>,
    pub serial: Option<Arc<str>>,
}

/// Ended sessions' carriers remembered (the window is a channel's hand-over,
/// milliseconds); past this many the oldest is forgotten.
const GONE_KEPT: usize = 4096;

pub(crate) struct Sessions {
    state: Mutex<State>,
    /// Which ep may serve which service, as the settings say now.
    grants: crate::swap::Swap<crate::config::grants::Grants>,
    shutdown: CancellationToken,
    metrics: Arc<crate::metrics::HubMetrics>,
    count: watch::Sender<usize>,
    logins: watch::Sender<u64>,
}

/// A registered session; dropping it detaches its services and forgets it.
pub(crate) struct SessionGuard {
    sessions: Arc<Sessions>,
    pub id: u64,
    pub ep: String,
    pub ip: IpAddr,
    /// The session's QUIC connection, if it rides QUIC.
    pub link: Option<crate::quic::Link>,
    /// Set by the session loop over TLS (the control connection's RTT).
    pub rtt: Rtt,
    serving: Serving,
    end: Arc<EndSignal>,
    homes: Homes,
    /// `Login::hand_off`, taken as the guard drops.
    hand_off: Option<HandOff>,
}

/// Given the services a session served as it ended.
pub(crate) type HandOff = Box<dyn FnOnce(Vec<Arc<Service>>) + Send + Sync>;

impl Sessions {
    pub fn new(
        shutdown: CancellationToken,
        metrics: Arc<crate::metrics::HubMetrics>,
        grants: crate::config::grants::Grants,
    ) -> Self {
        Sessions {
            state: Mutex::default(),
            grants: crate::swap::Swap::new(grants),
            shutdown,
            metrics,
            count: watch::Sender::new(0),
            logins: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_grants(&self, grants: crate::config::grants::Grants) {
        self.grants.set(grants);
    }

    /// The id of the latest session to log in (0: none yet); every later
    /// one has a larger id.
    pub fn last_id(&self) -> u64 {
        self.lock().next_id
    }

    /// Whether `ep` may serve `service` under the grants in force now.
    pub fn may_serve(&self, ep: &str, service: &str) -> bool {
        self.grants.get().may_serve(ep, service)
    }

    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.lock().ips.contains_key(&ip.to_canonical())
    }

    pub fn watch_count(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    pub fn watch_logins(&self) -> watch::Receiver<u64> {
        self.logins.subscribe()
    }

    /// Registers `ep` as serving `services`. An earlier session of the same
    /// ep is replaced. A service another ep holds stays with it if that ep
    /// may serve it (this one takes it over when it lets go), and is taken
    /// back from it if it may not (its grant was withdrawn).
    /// `still_valid` re-checks the login's credential against the settings
    /// current now, under the same lock a reload's or a CRL's sweep takes:
    /// a rotation either finds this session to close or refuses it here,
    /// never neither.
    pub fn register(
        self: &Arc<Self>,
        login: Login<'_>,
        offer: Offer,
        services: Vec<Arc<Service>>,
        ctrl: mpsc::Sender<HubMsg>,
        still_valid: impl FnOnce() -> Result<(), (RefusalKind, String)>,
    ) -> Result<SessionGuard, (RefusalKind, String)> {
        let Login {
            ep,
            serial,
            chain,
            ip,
            version,
            modern,
            link,
            hand_off,
        } = login;
        let (ip, mut st) = (ip.to_canonical(), self.lock());
        still_valid()?;
        let services = self.claim(&mut st, services, ep);
        st.next_id += 1;
        let id = st.next_id;
        let end = EndSignal::under(&self.shutdown);
        let serving: Serving = Arc::new(Mutex::new(services.clone()));
        let (homes, rtt) = (Homes::default(), Rtt::default());
        let entry = Entry {
            session: id,
            name: ep.into(),
            serial: serial.into(),
            chain: chain.to_vec(),
            ip,
            version: version.to_string(),
            since: tokio::time::Instant::now(),
            end: end.clone(),
            offer,
            serving: serving.clone(),
            ctrl: ctrl.clone(),
            modern,
            link: link.clone(),
            rtt: rtt.clone(),
            homes: homes.clone(),
        };
        self.mark_connected(ep, version);
        if let Some(old) = st.by_ep.insert(ep.to_string(), entry) {
            // Its guard will find the new session in its place: the old
            // one's serial is remembered here.
            st.remember_gone(old.session, &old);
            self.replaced(ep, version, old);
        }
        *st.ips.entry(ip).or_default() += 1;
        let attached = |svc: &Arc<Service>| {
            svc.attach(Attached {
                session: id,
                ep: ep.to_string(),
                ip,
                ctrl: ctrl.clone(),
                modern,
                link: link.clone(),
            })
        };
        // One a reload removed since it was claimed is not served; one
        // removed from here on is forgotten (under this lock) after.
        lock(&serving).retain(attached);
        // Logins first: whoever sees the session count sees its login too.
        self.logins.send_modify(|n| *n += 1);
        self.count.send_replace(st.by_ep.len());
        Ok(SessionGuard {
            sessions: self.clone(),
            id,
            ep: ep.to_string(),
            ip,
            link,
            rtt,
            serving,
            end,
            homes,
            hand_off: Some(hand_off),
        })
    }

    /// `ep`'s earlier session `old`, replaced by a login with `version`:
    /// ended, and its version's gauge cleared if it differs.
    fn replaced(&self, ep: &str, version: &str, old: Entry) {
        if old.version != version {
            self.mark_gone(ep, &old.version);
        }
        tracing::info!(
            ep,
            old_session = old.session,
            "new login replaces the ep's earlier session"
        );
        old.end.end(
            CloseKind::Replaced,
            "replaced by a newer login of the same ep (are two eps running with one certificate?)",
        );
    }

    /// Of `services`, those `ep` serves now: free ones, its own, and those
    /// held by an ep no longer granted them (detached from it here).
    fn claim(&self, st: &mut State, services: Vec<Arc<Service>>, ep: &str) -> Vec<Arc<Service>> {
        let grants = self.grants.get();
        let mut out = Vec::new();
        // Its own grants again, as they are now: a reload may have
        // withdrawn one since the offer was matched (one it removed,
        // `attach` refuses).
        for svc in services
            .into_iter()
            .filter(|s| grants.may_serve(ep, &s.name))
        {
            match svc.served_by() {
                Some(holder) if holder != ep && grants.may_serve(&holder, &svc.name) => {
                    // At each login of the standby ep: a few a second.
                    static SAID: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
                    if let Some(unsaid) = SAID.now_within(&svc.name, 3) {
                        tracing::warn!(
                            ep,
                            service = %svc.name,
                            unsaid,
                            "already served by ep {holder}; this ep takes it over when {holder} lets go"
                        );
                    }
                }
                Some(holder) if holder != ep => {
                    if let Some(e) = st.by_ep.get(&holder) {
                        lock(&e.serving).retain(|s| !Arc::ptr_eq(s, &svc));
                        svc.detach(e.session);
                    }
                    tracing::warn!(ep, service = %svc.name, "taken back from ep {holder}, which is not granted it");
                    out.push(svc);
                }
                _ => out.push(svc),
            }
        }
        out
    }

    fn mark_connected(&self, ep: &str, version: &str) {
        let label = crate::metrics::EpLabel {
            ep: ep.to_string(),
            version: version.to_string(),
        };
        self.metrics.ep_connected.get_or_create(&label).set(1);
    }

    /// An ep (or its version) is gone: its series goes too, so eps come
    /// and go without the hub's metrics growing.
    fn mark_gone(&self, ep: &str, version: &str) {
        self.metrics.ep_connected.remove(&crate::metrics::EpLabel {
            ep: ep.to_string(),
            version: version.to_string(),
        });
    }

    /// Whether `ep`'s session rides QUIC, if it is logged in.
    pub fn over_quic(&self, ep: &str) -> Option<bool> {
        self.lock().by_ep.get(ep).map(|e| e.link.is_some())
    }

    /// Who carries `session`, live or lately ended (its ep's name shared).
    /// One look under the lock, per player handed a channel.
    pub fn carrier(&self, session: u64) -> Carrier {
        let st = self.lock();
        match st.by_ep.values().find(|e| e.session == session) {
            Some(e) => Carrier {
                ep: Some(e.name.clone()),
                serial: Some(e.serial.clone()),
            },
            None => st.gone.get(&session).cloned().unwrap_or_default(),
        }
    }

    /// The round trip to `ep`, if it is logged in and measured.
    pub fn rtt_of_ep(&self, ep: &str) -> Option<std::time::Duration> {
        let st = self.lock();
        let e = st.by_ep.get(ep)?;
        rtt_of(&e.rtt, e.link.as_ref())
    }

    /// Logged-in eps, by name.
    pub fn list(&self) -> Vec<EpStatus> {
        let st = self.lock();
        let mut out: Vec<EpStatus> = st
            .by_ep
            .iter()
            .map(|(name, e)| EpStatus {
                name: name.clone(),
                ip: e.ip,
                version: e.version.clone(),
                since: e.since,
                rtt: rtt_of(&e.rtt, e.link.as_ref()),
                over_quic: e.link.is_some(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A service the hub just added: the session whose ep offered it
    /// starts serving it, if the ep can (`fits`).
    pub fn adopt(&self, svc: &Arc<Service>, fits: impl Fn(&Offer) -> Result<(), String>) {
        let st = self.lock();
        let grants = self.grants.get();
        for (ep, e) in &st.by_ep {
            // A session being closed would take the service down with it.
            if !e.offer.names.contains(&svc.name)
                || e.end.token.is_cancelled()
                || !grants.may_serve(ep, &svc.name)
            {
                continue;
            }
            // An ep can offer again as fast as it sends: a few lines a
            // second per service.
            static SAID: crate::log_rate::PerKey = crate::log_rate::PerKey::new();
            if let Err(why) = fits(&e.offer) {
                if let Some(unsaid) = SAID.now_within(&svc.name, 3) {
                    tracing::warn!(ep, service = %svc.name, unsaid, "the ep cannot serve the service it offered: {why}");
                }
                continue;
            }
            // Two eps offering it: the first keeps it, as at login.
            if let Some(holder) = svc.served_by() {
                if let Some(unsaid) = SAID.now_within(&svc.name, 3) {
                    tracing::warn!(ep, service = %svc.name, unsaid, "the service it offered is already served by ep {holder}");
                }
                continue;
            }
            attach(svc, e, ep);
            tracing::info!(ep, service = %svc.name, "the ep serves the service it offered");
        }
    }

    /// The eps whose latest offer names `service`.
    pub fn offering(&self, service: &str) -> Vec<String> {
        let st = self.lock();
        let mut eps: Vec<String> = st
            .by_ep
            .iter()
            .filter(|(_, e)| e.offer.names.iter().any(|n| n == service))
            .map(|(ep, _)| ep.clone())
            .collect();
        eps.sort();
        eps
    }

    /// A service whose type or ports a reload may have changed: the
    /// session serving it keeps it only if its ep still fits the shape
    /// (`fits`) and is still granted it; otherwise it lets go, and its
    /// other services stay.
    /// Returns the sessions that lost it because their grant was withdrawn.
    pub fn recheck(
        &self,
        svc: &Arc<Service>,
        fits: impl Fn(&Offer) -> Result<(), String>,
    ) -> Vec<u64> {
        let st = self.lock();
        let grants = self.grants.get();
        let mut ungranted = Vec::new();
        for (ep, e) in &st.by_ep {
            let mut serving = lock(&e.serving);
            if !serving.iter().any(|s| Arc::ptr_eq(s, svc)) {
                continue;
            }
            let granted = if grants.may_serve(ep, &svc.name) {
                Ok(())
            } else {
                ungranted.push(e.session);
                Err(grants.why_not(ep, &svc.name))
            };
            if let Err(why) = granted.and_then(|()| fits(&e.offer)) {
                tracing::warn!(ep, service = %svc.name, "the ep no longer serves the changed service: {why}");
                serving.retain(|s| !Arc::ptr_eq(s, svc));
                svc.detach(e.session);
            }
        }
        ungranted
    }

    /// A service the hub removed: no session serves it any more.
    /// The eps that serve `svc`.
    pub fn serving_eps(&self, svc: &Arc<Service>) -> Vec<String> {
        let st = self.lock();
        st.by_ep
            .iter()
            .filter(|(_, e)| lock(&e.serving).iter().any(|s| Arc::ptr_eq(s, svc)))
            .map(|(ep, _)| ep.clone())
            .collect()
    }

    pub fn forget(&self, svc: &Arc<Service>) {
        let st = self.lock();
        for e in st.by_ep.values() {
            lock(&e.serving).retain(|s| !Arc::ptr_eq(s, svc));
        }
    }

    /// The ep of `session` re-announced: it serves `services` from now on.
    /// Services taken by another ep stay with it; they are returned as
    /// refused with the reason. Services this ep let go are returned too,
    /// for another ep that offers them to take over (`adopt`).
    pub fn reoffer(
        &self,
        session: u64,
        offer: Offer,
        services: Vec<Arc<Service>>,
    ) -> (Vec<(String, String)>, Vec<Arc<Service>>) {
        let mut st = self.lock();
        let Some((ep, e)) = st.by_ep.iter_mut().find(|(_, e)| e.session == session) else {
            return (Vec::new(), Vec::new());
        };
        e.offer = offer;
        let grants = self.grants.get();
        let mut refused = Vec::new();
        let mut released = Vec::new();
        let (services, ungranted): (Vec<_>, Vec<_>) = services
            .into_iter()
            .partition(|s| grants.may_serve(ep, &s.name));
        for svc in ungranted {
            refused.push((svc.name.clone(), grants.why_not(ep, &svc.name)));
        }
        let old = std::mem::take(&mut *lock(&e.serving));
        for svc in &old {
            if !services.iter().any(|s| Arc::ptr_eq(s, svc)) {
                svc.detach(session);
                released.push(svc.clone());
            }
        }
        for svc in services {
            match svc.served_by() {
                Some(holder) if holder != *ep => {
                    let why = format!("already served by ep {holder}");
                    refused.push((svc.name.clone(), why));
                }
                _ if old.iter().any(|s| Arc::ptr_eq(s, &svc)) => lock(&e.serving).push(svc),
                _ => attach(&svc, e, ep),
            }
        }
        (refused, released)
    }

    /// Ends the sessions `doomed` picks (by ep name and address: for a
    /// QUIC session the address its connection is on now, which migration
    /// may have moved), saying why; how many.
    pub fn close_where(&self, doomed: impl Fn(&str, IpAddr) -> bool, reason: &str) -> usize {
        let st = self.lock();
        let mut n = 0;
        for (ep, e) in &st.by_ep {
            let ip = e
                .link
                .as_ref()
                .map_or(e.ip, |l| l.conn.remote_address().ip());
            if doomed(ep, ip) {
                tracing::warn!(ep, "closing the ep's session: {reason}");
                e.end.end(CloseKind::Other, reason);
                n += 1;
            }
        }
        n
    }

    /// Ends the sessions whose certificate `issued` no longer accepts (the
    /// hub's CA was replaced): over TLS they could open no channel, and
    /// would look served while every player waited in vain.
    pub fn close_unissued(
        &self,
        issued: impl Fn(&[rustls::pki_types::CertificateDer<'static>]) -> bool,
    ) -> usize {
        let st = self.lock();
        let mut n = 0;
        for (ep, e) in &st.by_ep {
            if !e.chain.is_empty() && !issued(&e.chain) {
                let reason = "its certificate is not from the hub's CA (tls.ca changed)";
                tracing::warn!(ep, "closing the ep's session: {reason}");
                e.end.end(CloseKind::Other, reason);
                n += 1;
            }
        }
        n
    }

    /// Ends the sessions of eps whose certificate serial is in `revoked`.
    pub fn revoke(&self, revoked: &std::collections::HashSet<String>) -> usize {
        let st = self.lock();
        let mut n = 0;
        for (ep, e) in &st.by_ep {
            if revoked.contains(&*e.serial) {
                tracing::warn!(ep, "ep certificate revoked; closing its session");
                e.end.end(CloseKind::Revoked, "certificate revoked");
                n += 1;
            }
        }
        n
    }
}

fn lock(serving: &Serving) -> MutexGuard<'_, Vec<Arc<Service>>> {
    serving.lock().unwrap_or_else(|p| p.into_inner())
}

/// `svc` starts being served by entry `e` of `ep`.
fn attach(svc: &Arc<Service>, e: &Entry, ep: &str) {
    let attached = svc.attach(Attached {
        session: e.session,
        ep: ep.to_string(),
        ip: e.ip,
        ctrl: e.ctrl.clone(),
        modern: e.modern,
        link: e.link.clone(),
    });
    // Not a service a reload removed since it was found free.
    if attached {
        // Under the picture's lock, as `homes_said` sets it: a picture
        // that comes meanwhile reaches this service too.
        let home = e.homes.lock().unwrap_or_else(|p| p.into_inner());
        svc.set_home(e.session, home.get(&svc.name).copied());
        lock(&e.serving).push(svc.clone());
    }
}

impl SessionGuard {
    /// What the ep says of its services at home now: set on those it
    /// serves, kept for those it comes to serve.
    pub fn homes_said(&self, said: std::collections::BTreeMap<String, crate::proto::HomeState>) {
        let mut homes = self.homes.lock().unwrap_or_else(|p| p.into_inner());
        *homes = said;
        for svc in self.services().iter() {
            svc.set_home(self.id, homes.get(&svc.name).copied());
        }
    }

    /// The services this session serves now.
    pub fn services(&self) -> Vec<Arc<Service>> {
        lock(&self.serving).clone()
    }

    /// Resolves when the session is ended from outside (or the hub shuts
    /// down), with the reason.
    pub async fn ended(&self) -> (CloseKind, String) {
        self.end.token.cancelled().await;
        self.end
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or((CloseKind::ShuttingDown, "hub shutting down".into()))
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut st = self.sessions.lock();
        if st.by_ep.get(&self.ep).is_some_and(|e| e.session == self.id)
            && let Some(e) = st.by_ep.remove(&self.ep)
        {
            self.sessions.mark_gone(&self.ep, &e.version);
            st.remember_gone(self.id, &e);
        }
        if let Some(n) = st.ips.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.ips.remove(&self.ip);
            }
        }
        let served = lock(&self.serving).clone();
        for svc in &served {
            svc.detach(self.id);
        }
        self.sessions.count.send_replace(st.by_ep.len());
        drop(st);
        if let Some(f) = self.hand_off.take() {
            f(served);
        }
    }
}
