//! The hub: three doors (service ports for players, the control port and the
//! channel port for eps) sharing one state.

mod admission;
mod bans;
mod channel;
mod control;
mod crl;
mod enrol;
mod enrol_work;
mod game;
mod gate;
mod handle;
mod logins;
mod offer;
mod pace;
mod player;
mod players;
mod players_view;
mod quic;
mod quic_socket;
mod ready;

pub use handle::HubHandle;
mod refusals;
mod reload;
mod sampler;
mod served;
mod service;
mod sessions;
mod stats;
mod status;
mod trust;
mod udp;

use crate::config::hub::HubSettings;
use anyhow::{Context, Result};
use service::Service;
use sessions::Sessions;
use std::{collections::HashMap, net::SocketAddr, sync::Arc};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub(crate) struct Shared {
    /// Swapped whole on reload; read with `settings()`.
    settings: crate::swap::Swap<HubSettings>,
    /// Held by whoever makes new settings from the running ones and swaps
    /// them in (a reload, an enrolment), so neither undoes the other's.
    pub settings_update: tokio::sync::Mutex<()>,
    /// Held while an ep's offer is matched against the services and its
    /// session records what it serves (a login, a re-announce, a
    /// session's services handed on), and while a reload or an enrolment
    /// changes the services, their shapes or the grants and hands them
    /// out: each sees the other whole. Without it a login that looked at
    /// the services before a reload added one, and registered after the
    /// reload handed it to the eps offering it, never got it (until the
    /// next reload or login): its port answered and every player waited.
    pub offers: std::sync::Mutex<()>,
    /// The TLS the doors present and check against.
    pub trust: trust::Trust,
    /// The QUIC door, whose configuration follows the TLS one.
    quic: quic::QuicDoor,
    /// Gates, identity penalties and Argon2 work of logins in progress.
    pub logins: logins::Logins,
    pub refusals: Arc<refusals::Refusals>,
    /// The services served now, by name (changed by reloads).
    served: std::sync::RwLock<HashMap<String, Arc<served::Served>>>,
    /// Every serving player port.
    ports: std::sync::Mutex<HashMap<served::PortKey, served::Listening>>,
    pub cap: Arc<admission::HubCap>,
    /// What every UDP flow's queue draws on (`datagram::Budget`).
    pub udp_queued: Arc<crate::datagram::Budget>,
    /// Services a reload removed whose players are still draining: each
    /// one's `cut`, and what calls off the timer that cancels it (a later
    /// reload that puts the service back keeps its players).
    pub draining: std::sync::Mutex<HashMap<String, reload::Draining>>,
    /// Followed too, so a refused reload is tried again once they change.
    pub refused_follows: crate::reload::RefusedFollows,
    /// Connections still sending their first packet to a game port
    /// (`game::readers_places`).
    pub game_readers: Arc<crate::places::Admission>,
    /// Enrolments in progress (the enrol door's cap).
    pub enrol_work: Arc<enrol_work::AtWork>,
    /// The invites as the enrol door last read them.
    pub enrol_seen: crate::enrol::seen::Seen,
    /// The enrol door's connections (see `enrol::PLACES`).
    pub enrol_places: Arc<crate::places::Admission>,
    /// The control, channel and admin addresses as bound.
    pub addrs: std::sync::OnceLock<ControlAddrs>,
    /// Rewritten with the bound addresses after each reload.
    ready_file: std::sync::Mutex<Option<std::path::PathBuf>>,
    pub sessions: Arc<Sessions>,
    /// Every player and UDP flow now (the players table, kicks, bans).
    pub players: Arc<players::Players>,
    /// `bans.json` as last read well.
    pub bans: bans::Bans,
    /// The last hour per service (`/api/history`).
    pub history: crate::history::History,
    pub tracker: TaskTracker,
    /// Stop accepting, end sessions and pooled channels.
    pub shutdown: CancellationToken,
    /// End relays still running when the drain time is over.
    pub hard_stop: CancellationToken,
    pub metrics: Arc<crate::metrics::HubMetrics>,
    pub started: tokio::time::Instant,
    /// Reloads that changed `ep_allowlist` or the grants (`reload::Changes`).
    pub changes: reload::Changes,
    /// Reloads done, with the last one's outcome.
    pub reloads: watch::Sender<(u64, Result<String, String>)>,
    /// Of those, the ones a SIGHUP asked for, and when the last began
    /// (`ferry hub reload` waits on them in `--ready-file`).
    pub signalled: std::sync::Mutex<(u64, u64)>,
}

/// A hub with all its ports bound, ready to `run`.
pub struct Hub {
    shared: Arc<Shared>,
    control: TcpListener,
    channel: TcpListener,
    /// Player ports bound, served once `run` starts.
    ports: Vec<(served::PortKey, served::Bound)>,
    admin: Option<TcpListener>,
    enrol: Option<TcpListener>,
    health: Option<TcpListener>,
}

/// What the hub runs from `settings`: the files it names read in
/// (`read_files`), the eps enrolled with `ferry ep join` merged in, and the
/// TLS files loaded. At start, by `check` and on every reload.
pub fn load(settings: HubSettings) -> Result<(HubSettings, crate::tls::HubTls)> {
    let settings = read_files(settings)?;
    let settings = crate::enrol::merge_enrolled(settings)?;
    let tls = crate::tls::HubTls::load(&settings)?;
    Ok((settings, tls))
}

/// `settings` with what the files it names hold, other than TLS: the token
/// hashes kept in files, each game service's icon, the admin door's hash,
/// and the CA key's mode checked. Errors name the config file and the key,
/// as a check's do. Enough for `status` and `invite`, which need no TLS.
pub fn read_files(mut settings: HubSettings) -> Result<HubSettings> {
    let file = settings.file.clone();
    let err = |m: String| anyhow::Error::new(crate::config::check_err(&file, m));
    let c = &mut settings.credentials;
    for (ep, path) in &c.files {
        let key = match ep {
            Some(name) => format!("eps.{name}.token_hash"),
            None => "token_hash".to_string(),
        };
        let hash = crate::token::read_hash_file(&key, path).map_err(err)?;
        match ep {
            Some(name) => c.per_ep.insert(name.clone(), hash),
            None => c.default.replace(hash),
        };
    }
    game::read_icons(&mut settings).map_err(err)?;
    if let Some(a) = settings.admin.take() {
        settings.admin = Some(crate::admin::read_hash_file(a).map_err(err)?);
    }
    if let Some(e) = &settings.enrol {
        enrol::check_ca_key(e).map_err(err)?;
    }
    Ok(settings)
}

/// `load`, and what stops a start (and `check`) but not a reload: the
/// enrol door's CA key held to its CA (see `enrol::ca_key_matches`).
pub fn load_to_start(settings: HubSettings) -> Result<(HubSettings, crate::tls::HubTls)> {
    let (settings, tls) = load(settings)?;
    if let Some(e) = &settings.enrol {
        enrol::ca_key_matches(e)
            .map_err(|m| anyhow::Error::new(crate::config::check_err(&settings.file, m)))?;
    }
    Ok((settings, tls))
}

/// On reload, the enrol door's CA key that does not match its CA is said,
/// not refused: the rest of the reload goes ahead.
fn warn_ca_key(e: Option<&crate::config::enrol::EnrolSettings>) {
    if let Some(Err(w)) = e.map(enrol::ca_key_matches) {
        tracing::warn!("{w}; the enrol door cannot sign certificates until it matches");
    }
}

/// The players the hub holds at most: the configured cap, or what the
/// open-file limit allows once the doors' reserve is set aside.
fn player_cap(settings: &HubSettings) -> Arc<admission::HubCap> {
    let l = settings.limits;
    let reserve = 5 * l.max_pending_auth as u64 + 64 * settings.services.len() as u64 + 64;
    let cap = admission::HubCap::new(
        l.max_players_total
            .unwrap_or_else(|| crate::fdlimit::player_cap(crate::fdlimit::raise(), reserve)),
    );
    cap.serve_tcp(serves_tcp(settings));
    cap
}

/// Whether some service takes TCP players.
pub(crate) fn serves_tcp(settings: &HubSettings) -> bool {
    (settings.services.iter()).any(|s| s.kind != crate::config::ports::ServiceKind::Udp)
}

/// The TCP doors every hub has (control, channel) and may have (admin,
/// enrol), bound before anything is served.
struct Doors {
    control: TcpListener,
    channel: TcpListener,
    admin: Option<TcpListener>,
    enrol: Option<TcpListener>,
    health: Option<TcpListener>,
}

impl Doors {
    async fn bind(settings: &HubSettings) -> Result<Doors> {
        Ok(Doors {
            control: bind(settings.control, "control").await?,
            channel: bind(settings.channel, "channel").await?,
            admin: match &settings.admin {
                Some(a) => Some(bind(a.bind, "admin").await?),
                None => None,
            },
            enrol: match &settings.enrol {
                Some(e) => Some(bind(e.bind, "enrol").await?),
                None => None,
            },
            health: match settings.health {
                Some(h) => Some(bind(h, "health").await?),
                None => None,
            },
        })
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

impl Hub {
    /// Loads the files `settings` names and merges enrolled eps in
    /// (`load`), then binds every port; a bad certificate, a missing hash
    /// file or a port in use fails here, before anything is served.
    pub async fn bind(settings: HubSettings) -> Result<Hub> {
        let (settings, loaded_tls, bans, crl_first) = tokio::task::spawn_blocking(move || {
            // Before the read: a list replaced during it is read again.
            let crl_first = settings.crl.as_deref().and_then(crl::stamp);
            let (settings, tls) = load_to_start(settings)?;
            let bans = bans::Bans::load(&settings)?;
            anyhow::Ok((settings, tls, bans, crl_first))
        })
        .await
        .context("loading the TLS files")??;
        let doors = Doors::bind(&settings).await?;
        let (metrics, refusals) = counters(&settings);
        let quic = quic::QuicDoor::bind(&loaded_tls.server, &settings, refusals.clone())?;
        let (shutdown, hard_stop) = (CancellationToken::new(), CancellationToken::new());
        let tracker = TaskTracker::new();
        let (cap, udp_queued) = (player_cap(&settings), crate::datagram::Budget::for_hub());
        let parts = served::Parts {
            metrics: &metrics,
            cap: &cap,
            queued: &udp_queued,
            shutdown: &shutdown,
            hard_stop: &hard_stop,
            tracker: &tracker,
        };
        let (mut served, mut wanted) = (HashMap::new(), Vec::new());
        for s in &settings.services {
            served.insert(s.name.clone(), parts.build(s, &settings));
            wanted.extend(served::keys(s));
        }
        let ports = served::bind_all(&wanted).await?;
        let grants = settings.grants.clone();
        let shared = Shared {
            trust: {
                let revoked = crl::initial(&loaded_tls);
                trust::Trust::new(loaded_tls, revoked, crl_first)
            },
            quic,
            logins: logins::Logins::new(&settings.limits),
            refusals,
            settings: crate::swap::Swap::new(settings),
            settings_update: tokio::sync::Mutex::new(()),
            offers: std::sync::Mutex::new(()),
            served: std::sync::RwLock::new(served),
            ports: std::sync::Mutex::default(),
            game_readers: game::readers_places(&cap),
            draining: std::sync::Mutex::default(),
            refused_follows: Default::default(),
            cap,
            udp_queued,
            ready_file: std::sync::Mutex::default(),
            enrol_work: Arc::default(),
            enrol_seen: Default::default(),
            enrol_places: crate::places::Admission::new(enrol::PLACES, true),
            addrs: std::sync::OnceLock::new(),
            sessions: Arc::new(Sessions::new(shutdown.clone(), metrics.clone(), grants)),
            players: Arc::default(),
            bans,
            history: Default::default(),
            tracker,
            shutdown,
            hard_stop,
            metrics,
            started: tokio::time::Instant::now(),
            changes: Default::default(),
            reloads: watch::Sender::new((0, Ok(String::new()))),
            signalled: Default::default(),
        };
        Ok(Hub {
            shared: Arc::new(shared),
            control: doors.control,
            channel: doors.channel,
            ports,
            admin: doors.admin,
            enrol: doors.enrol,
            health: doors.health,
        })
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn channel_addr(&self) -> SocketAddr {
        self.channel
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Where players of `service` connect (its first port; a `tcp+udp`
    /// service has the same number for both).
    pub fn service_addr(&self, service: &str) -> Option<SocketAddr> {
        let first = |udp: bool| {
            self.ports
                .iter()
                .find(|(k, _)| k.service == service && k.offset == 0 && k.udp == udp)
                .and_then(|(_, b)| b.local_addr().ok())
        };
        first(false).or_else(|| first(true))
    }

    pub fn handle(&self) -> HubHandle {
        HubHandle {
            shared: self.shared.clone(),
        }
    }

    /// Every bound address as JSON, for `--ready-file`: tests and scripts
    /// learn the ports from it instead of from log lines.
    pub fn ready_json(&self) -> String {
        let services = ready::services_json(&self.shared.settings(), |n| self.service_addr(n));
        let fixed = ControlAddrs {
            control: self.control_addr(),
            channel: self.channel_addr(),
            admin: self.admin_addr(),
            enrol: self.enrol.as_ref().and_then(|l| l.local_addr().ok()),
            quic: self
                .shared
                .quic
                .endpoint
                .as_ref()
                .and_then(|e| e.local_addr().ok()),
        };
        ready::ready_json(fixed, services, self.shared.reloads_json())
    }

    /// Writes `ready_json` to `path` now and again after every reload.
    pub fn set_ready_file(&self, path: std::path::PathBuf) -> Result<()> {
        ready::write_ready(&path, &self.ready_json())?;
        *self
            .shared
            .ready_file
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(path);
        Ok(())
    }

    /// Where the admin door listens, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the health door listens, if it is on.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown`, then stops accepting, ends ep sessions, lets
    /// active players finish for `drain_timeout` and closes the rest.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        self.run_until(shutdown, CancellationToken::new()).await
    }

    /// `run`, where `immediate` (a second Ctrl-C) cuts the drain short.
    pub async fn run_until(
        self,
        shutdown: CancellationToken,
        immediate: CancellationToken,
    ) -> Result<()> {
        let (control, channel) = (self.control_addr(), self.channel_addr());
        let admin_addr = self.admin_addr();
        let shared = self.shared;
        let s = shared.settings();
        let cap = shared.cap.max();
        tracing::info!(%control, %channel, players_at_most = cap, "hub listening");
        shared.warn_at_start();
        // Also without one at start: a reload may add `tls.crl`.
        shared.tracker.spawn(crl::watch(shared.clone()));
        shared.tracker.spawn(sampler::run(shared.clone()));
        let weak = Arc::downgrade(&shared);
        tokio::spawn(sampler::dark(weak, shared.hard_stop.clone()));
        if let (Some(listener), Some(a)) = (self.admin, &s.admin) {
            let source: Arc<dyn crate::admin::Source> = shared.clone();
            crate::admin::spawn(listener, source, a, &shared.shutdown, &shared.tracker);
        }
        if let Some(listener) = self.health {
            let source: Arc<dyn crate::admin::Source> = shared.clone();
            crate::admin::spawn_health(listener, source, &shared.shutdown, &shared.tracker);
        }
        let fixed = ControlAddrs {
            control,
            channel,
            admin: admin_addr,
            enrol: self.enrol.as_ref().and_then(|l| l.local_addr().ok()),
            quic: shared
                .quic
                .endpoint
                .as_ref()
                .and_then(|e| e.local_addr().ok()),
        };
        let _ = shared.addrs.set(fixed);
        let triggers = reload::triggers(&shared);
        let mut doors = shared.open_ep_doors(self.control, self.channel, self.enrol)?;
        // Not on the tracker (so after the last step that can fail): it
        // follows the file through the drain, and ends when the tracker's
        // tasks have.
        tokio::spawn(bans::watch(shared.clone()));
        for svc in &s.services {
            tracing::info!(service = %svc.name, kind = %svc.kind, ports = %svc.bind, limits = %svc.limits, "players welcome");
        }
        for (key, bound) in self.ports {
            let Some(one) = shared.served(&key.service) else {
                continue;
            };
            doors.push(shared.serve_port(key, bound, &one));
        }
        shared
            .tracker
            .spawn(reload::watch(shared.clone(), fixed, triggers));
        crate::sdnotify::ready();
        shutdown.cancelled().await;
        crate::sdnotify::stopping();
        shared.shutdown.cancel();
        // A reload in flight finishes first (it may have bound ports),
        // then the hub lets go of every socket it holds for a reload to
        // hand over: each closes once its loop has returned too.
        {
            let _update = shared.settings_update.lock().await;
            shared.ports_lock().clear();
        }
        for door in doors {
            let _ = door.await;
        }
        let drain = shared.settings().timing.drain_timeout;
        tracing::info!("stopped accepting; active players may finish for up to {drain:?}");
        crate::shutdown::drain(&shared.tracker, &shared.hard_stop, drain, &immediate).await;
        tracing::info!(refusals = ?shared.refusals.totals(), "hub stopped");
        Ok(())
    }
}

/// The addresses that never change while the hub runs.
#[derive(Clone, Copy)]
pub(crate) struct ControlAddrs {
    pub control: SocketAddr,
    pub channel: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub enrol: Option<SocketAddr>,
    pub quic: Option<SocketAddr>,
}

/// Why a revoked ep's players were cut.
pub(crate) const REVOKED: &str = "the ep's certificate was revoked";

impl Shared {
    pub(crate) fn settings(&self) -> Arc<HubSettings> {
        self.settings.get()
    }

    /// Replaces the settings (a reload, an enrolment); the QUIC door's
    /// socket hears the new allowlist from its next datagram on.
    pub(crate) fn set_settings(&self, new: HubSettings) {
        self.quic.allowed.set(new.allowlist.clone());
        self.sessions.set_grants(new.grants.clone());
        self.settings.set(new);
    }

    /// Ends the players `doomed` picks once `after` has passed (at once
    /// for zero), unless the hub stops first: what an ep the hub no longer
    /// trusts with them (revoked, its token or address no longer valid, a
    /// grant withdrawn) still carries. Over TLS each player has a channel
    /// of its own that outlives the session; nothing else would end them.
    pub(crate) fn end_players_after(
        &self,
        after: std::time::Duration,
        doomed: impl Fn(&players::Player) -> bool + Send + 'static,
        why: &'static str,
    ) {
        if after.is_zero() {
            self.players.end_where(doomed, why);
            return;
        }
        // Not on the tracker: a shutdown's drain (which waits for the
        // tracker) must not wait for this timer; its own end cuts them.
        let (players, stop) = (self.players.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => {
                    players.end_where(doomed, why);
                }
                _ = stop.cancelled() => {}
            }
        });
    }

    /// `seat` is carried by `session` from now: which ep and certificate
    /// carry it are noted, and if that certificate is revoked already (a
    /// revocation that landed while its channel was handed over) it is cut
    /// at once. The revocation's own sweep (`crl::apply_serials`) finds
    /// every player noted before it.
    /// Whether it may go on (false: cut, nothing more is sent on its
    /// channel).
    pub(crate) fn carried(&self, seat: &players::Player, ch: &service::Channel) -> bool {
        let carrier = (self.sessions.carrier(ch.session), ch.peer_ip());
        // Noted first, then the list read: a revocation written after the
        // read sweeps this player (its serial is there to find).
        seat.carried_by(ch.session, carrier, ch.opened_by_hub());
        let revoked = seat.serial().is_some_and(|s| {
            self.trust
                .revoked
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(s)
        });
        if revoked {
            seat.cut_off(REVOKED);
        }
        !revoked
    }

    /// `svc` lost its ep (it let go, its session ended, a reload took it
    /// away): another logged-in ep that offers it, may serve it and fits
    /// its shape takes it. Not a service a reload removed meanwhile.
    /// Held while offers and services meet (see the field).
    pub(crate) fn offers(&self) -> std::sync::MutexGuard<'_, ()> {
        self.offers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller holds `offers`.
    pub(crate) fn hand_to_offering(&self, svc: &Arc<service::Service>) {
        let current = self
            .service(&svc.name)
            .is_some_and(|cur| Arc::ptr_eq(&cur, svc));
        let settings = self.settings();
        if let Some(s) = settings.service(&svc.name).filter(|_| current) {
            let (kind, ports) = (s.kind, s.bind.count);
            self.sessions
                .adopt(svc, |offer| offer.fits(&svc.name, kind, ports));
        }
    }

    pub(crate) fn served(&self, name: &str) -> Option<Arc<served::Served>> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The QUIC door's port, if it is open.
    pub(crate) fn quic_port(&self) -> Option<u16> {
        self.quic
            .endpoint
            .as_ref()?
            .local_addr()
            .ok()
            .map(|a| a.port())
    }

    pub(crate) fn service(&self, name: &str) -> Option<Arc<Service>> {
        self.served(name).map(|s| s.svc.clone())
    }

    fn ports_lock(&self) -> std::sync::MutexGuard<'_, HashMap<served::PortKey, served::Listening>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one door's accept loop as a tracked task; its handle resolves
    /// once the listener is closed.
    fn open_door(
        &self,
        listener: TcpListener,
        span: tracing::Span,
        on_conn: impl FnMut(tokio::net::TcpStream, SocketAddr) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let accept = crate::net::accept_loop(listener, self.shutdown.clone(), on_conn);
        self.tracker.spawn(accept.instrument(span))
    }

    /// What an operator should hear at start-up about the configuration.
    fn warn_at_start(&self) {
        for w in self.settings().hash_warnings() {
            tracing::warn!("{w}");
        }
        if let Some(w) = self.settings().unlisted_warning() {
            tracing::warn!("{w}");
        }
        if self.settings().allowlist.is_wide_open() {
            tracing::warn!(
                "ep_allowlist admits every address; list your eps' addresses to keep scanners off the TLS ports"
            );
        }
        if let Some(days) = self.trust.loaded.get().days_left
            && days < 30
        {
            tracing::warn!(
                "the hub certificate or its CA expires in {days} days; renew the hub's with `ferry hub gen-cert --force` (the same names), a CA by starting a new one (eps need new certificates)"
            );
        }
    }

    /// Opens the doors eps use (control, QUIC, enrol, channel); their
    /// handles resolve once each is closed.
    fn open_ep_doors(
        self: &Arc<Self>,
        control: TcpListener,
        channel: TcpListener,
        enrol: Option<TcpListener>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut doors = Vec::new();
        let sh = self.clone();
        doors.push(self.open_door(
            control,
            tracing::info_span!("control-door"),
            move |tcp, addr| control::on_accept(sh.clone(), tcp, addr),
        ));
        if let Some(endpoint) = self.quic.endpoint.clone() {
            tracing::info!(addr = %endpoint.local_addr()?, "QUIC door open");
            let stop = self.shutdown.child_token();
            let door = quic::serve(self.clone(), endpoint, stop);
            doors.push(
                self.tracker
                    .spawn(door.instrument(tracing::info_span!("quic-door"))),
            );
        }
        if let Some(listener) = enrol {
            tracing::info!(addr = %listener.local_addr()?, "enrol door open (ferry ep join)");
            let sh = self.clone();
            doors.push(self.open_door(
                listener,
                tracing::info_span!("enrol-door"),
                move |tcp, addr| enrol::on_accept(sh.clone(), tcp, addr),
            ));
        }
        let sh = self.clone();
        doors.push(self.open_door(
            channel,
            tracing::info_span!("channel-door"),
            move |tcp, addr| channel::on_accept(sh.clone(), tcp, addr),
        ));
        Ok(doors)
    }

    /// New handshakes on the control, channel and QUIC doors use `config`.
    fn set_tls(&self, config: Arc<rustls::ServerConfig>) {
        // A door closed by the shutdown stays closed: a reload or CRL
        // change in the same instant must not reopen it to nobody.
        if !self.shutdown.is_cancelled() {
            self.quic.set_tls(&config, &self.settings());
        }
        self.trust.set_acceptor(config);
    }
}

impl Shared {
    /// For `--ready-file`: see `ready::reloads_json`.
    fn reloads_json(&self) -> serde_json::Value {
        let signalled = *self.signalled.lock().unwrap_or_else(|p| p.into_inner());
        ready::reloads_json(signalled, &self.reloads.borrow())
    }
}

/// The hub's metrics, and its refusals counted in them.
fn counters(settings: &HubSettings) -> (Arc<crate::metrics::HubMetrics>, Arc<refusals::Refusals>) {
    let metrics = Arc::new(crate::metrics::HubMetrics::new(
        settings.services.iter().map(|s| s.name.as_str()),
    ));
    let refusals = Arc::new(refusals::Refusals::new(
        metrics.refusals.clone(),
        metrics.player_refusals.clone(),
    ));
    (metrics, refusals)
}
