//! The hub: three doors (service ports for players, the control port and the
//! channel port for eps) sharing one state.

mod admission;
mod channel;
mod control;
mod crl;
mod enrol;
pub(crate) mod gate;
mod offer;
mod player;
mod quic;
mod quic_socket;
mod refusals;
mod reload;
mod served;
mod service;
mod sessions;
mod stats;
mod status;
mod udp;

use crate::config::hub::HubSettings;
use anyhow::{Context, Result};
use service::Service;
use sessions::Sessions;
use std::{collections::HashMap, net::SocketAddr, sync::Arc};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub(crate) struct Shared {
    /// Swapped whole on reload; read with `settings()`.
    settings: crate::swap::Swap<HubSettings>,
    /// Held by whoever makes new settings from the running ones and swaps
    /// them in (a reload, an enrolment), so neither undoes the other's.
    pub settings_update: tokio::sync::Mutex<()>,
    /// Swapped when the revocation list changes.
    tls: std::sync::RwLock<TlsAcceptor>,
    /// The QUIC door, whose configuration follows the TLS one.
    quic: Option<quinn::Endpoint>,
    /// The sources the QUIC door's socket hears (follows `ep_allowlist`).
    quic_allowed: Arc<quic_socket::Allowed>,
    /// Seals the QUIC door's retry tokens for the hub's whole life.
    quic_token_key: quic::TokenKey,
    /// Serials in the revocation list, for resumed sessions (which skip
    /// certificate verification).
    pub revoked: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Failed logins charged to the ep certificate that failed, not to its
    /// address (see `gate`).
    pub identities: std::sync::Mutex<gate::penalties::Penalties<String>>,
    /// Strangers on the control port.
    pub gate: Arc<gate::Gate>,
    /// Channel connections from logged-in eps' addresses.
    pub channel_gate: Arc<gate::Gate>,
    pub refusals: Arc<refusals::Refusals>,
    pub argon2: Arc<tokio::sync::Semaphore>,
    pub argon2_stats: Arc<stats::InFlight>,
    /// The services served now, by name (changed by reloads).
    served: std::sync::RwLock<HashMap<String, Arc<served::Served>>>,
    /// Every serving player port.
    ports: std::sync::Mutex<HashMap<served::PortKey, served::Listening>>,
    pub cap: Arc<admission::HubCap>,
    /// Enrolments in progress (the enrol door's cap).
    pub enrol_slots: Arc<tokio::sync::Semaphore>,
    pub enrol_sources: Arc<enrol::Sources>,
    /// The control, channel and admin addresses as bound.
    pub addrs: std::sync::OnceLock<ControlAddrs>,
    /// Rewritten with the bound addresses after each reload.
    ready_file: std::sync::Mutex<Option<std::path::PathBuf>>,
    pub sessions: Arc<Sessions>,
    pub tracker: TaskTracker,
    /// Stop accepting, end sessions and pooled channels.
    pub shutdown: CancellationToken,
    /// End relays still running when the drain time is over.
    pub hard_stop: CancellationToken,
    pub metrics: Arc<crate::metrics::HubMetrics>,
    pub started: tokio::time::Instant,
    /// Reloads done, with the last one's outcome.
    pub reloads: watch::Sender<(u64, Result<String, String>)>,
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
}

/// Read-only view of a running hub, for tests and status.
#[derive(Clone)]
pub struct HubHandle {
    shared: Arc<Shared>,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

impl Hub {
    /// Binds every port named in `settings`; a port in use fails here,
    /// before anything is served.
    pub async fn bind(settings: HubSettings) -> Result<Hub> {
        let control = bind(settings.control, "control").await?;
        let channel = bind(settings.channel, "channel").await?;
        let admin = match &settings.admin {
            Some(a) => Some(bind(a.bind, "admin").await?),
            None => None,
        };
        let enrol = match &settings.enrol {
            Some(e) => Some(bind(e.bind, "enrol").await?),
            None => None,
        };
        let metrics = Arc::new(crate::metrics::HubMetrics::new(
            settings.services.iter().map(|s| s.name.as_str()),
        ));
        let refusals = Arc::new(refusals::Refusals::new(
            metrics.refusals.clone(),
            metrics.player_refusals.clone(),
        ));
        let quic_allowed = quic_socket::Allowed::new(settings.allowlist.clone(), refusals.clone());
        let quic_token_key = quic::token_key()?;
        let quic = match settings.quic {
            Some(addr) => Some(quic::bind(
                &settings,
                addr,
                quic_allowed.clone(),
                &quic_token_key,
            )?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let l = settings.limits;
        let reserve = 5 * l.max_pending_auth as u64 + 64 * settings.services.len() as u64 + 64;
        let cap = admission::HubCap::new(
            l.max_players_total
                .unwrap_or_else(|| crate::fdlimit::player_cap(crate::fdlimit::raise(), reserve)),
        );
        let hard_stop = CancellationToken::new();
        let mut served = HashMap::new();
        let mut wanted = Vec::new();
        let parts = served::Parts {
            metrics: &metrics,
            cap: &cap,
            shutdown: &shutdown,
            hard_stop: &hard_stop,
            tracker: &tracker,
        };
        for s in &settings.services {
            served.insert(s.name.clone(), parts.build(s, &settings));
            wanted.extend(served::keys(s));
        }
        let ports = served::bind_all(&wanted).await?;
        let acceptor = TlsAcceptor::from(settings.tls.clone());
        let penalties = gate::PenaltyRange {
            base: l.penalty_base,
            max: l.penalty_max,
        };
        let gate = gate::Gate::new(
            gate::PendingCaps {
                max_pending: l.max_pending_auth,
                per_source: l.max_pending_per_source,
            },
            penalties,
        );
        // A logged-in ep opens many channels at once; its address gets a
        // roomier gate of its own, so strangers cannot crowd it out.
        let channel_gate = gate::Gate::new(
            gate::PendingCaps {
                max_pending: 4 * l.max_pending_auth,
                per_source: 4 * l.max_pending_auth,
            },
            penalties,
        );
        Ok(Hub {
            shared: Arc::new(Shared {
                tls: std::sync::RwLock::new(acceptor),
                quic,
                quic_allowed,
                quic_token_key,
                revoked: std::sync::RwLock::new(crl::initial(settings.crl.as_deref())),
                identities: std::sync::Mutex::new(gate::penalties::Penalties::new(penalties)),
                gate: Arc::new(gate),
                channel_gate: Arc::new(channel_gate),
                refusals,
                argon2: Arc::new(tokio::sync::Semaphore::new(l.argon2_concurrency)),
                argon2_stats: Arc::default(),
                settings: crate::swap::Swap::new(settings),
                settings_update: tokio::sync::Mutex::new(()),
                served: std::sync::RwLock::new(served),
                ports: std::sync::Mutex::default(),
                cap,
                ready_file: std::sync::Mutex::default(),
                enrol_slots: Arc::new(tokio::sync::Semaphore::new(enrol::SLOTS)),
                enrol_sources: Arc::default(),
                addrs: std::sync::OnceLock::new(),
                sessions: Arc::new(Sessions::new(shutdown.clone(), metrics.clone())),
                tracker,
                shutdown,
                hard_stop,
                metrics,
                started: tokio::time::Instant::now(),
                reloads: watch::Sender::new((0, Ok(String::new()))),
            }),
            control,
            channel,
            ports,
            admin,
            enrol,
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
        let services = services_json(&self.shared.settings(), |n| self.service_addr(n));
        let fixed = ControlAddrs {
            control: self.control_addr(),
            channel: self.channel_addr(),
            admin: self.admin_addr(),
            enrol: self.enrol.as_ref().and_then(|l| l.local_addr().ok()),
            quic: self.shared.quic.as_ref().and_then(|e| e.local_addr().ok()),
        };
        ready_json(fixed, services)
    }

    /// Writes `ready_json` to `path` now and again after every reload.
    pub fn set_ready_file(&self, path: std::path::PathBuf) -> Result<()> {
        write_ready(&path, &self.ready_json())?;
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
        if s.allowlist.is_wide_open() {
            tracing::warn!(
                "ep_allowlist admits every address; list your eps' addresses to keep scanners off the TLS ports"
            );
        }
        if let Some(days) = s.cert_days_left
            && days < 30
        {
            tracing::warn!(
                "the hub certificate or its CA expires in {days} days; re-issue with `ferry hub gen-cert --force`"
            );
        }
        if s.crl.is_some() {
            shared.tracker.spawn(crl::watch(shared.clone()));
        }
        if let (Some(listener), Some(a)) = (self.admin, &s.admin) {
            let source: Arc<dyn crate::admin::Source> = shared.clone();
            crate::admin::spawn(listener, source, a, &shared.shutdown, &shared.tracker);
        }
        let mut doors = Vec::new();
        let sh = shared.clone();
        doors.push(shared.open_door(
            self.control,
            tracing::info_span!("control-door"),
            move |tcp, addr| control::on_accept(sh.clone(), tcp, addr),
        ));
        let fixed = ControlAddrs {
            control,
            channel,
            admin: admin_addr,
            enrol: self.enrol.as_ref().and_then(|l| l.local_addr().ok()),
            quic: shared.quic.as_ref().and_then(|e| e.local_addr().ok()),
        };
        let _ = shared.addrs.set(fixed);
        if let Some(endpoint) = shared.quic.clone() {
            tracing::info!(addr = %endpoint.local_addr()?, "QUIC door open");
            let stop = shared.shutdown.child_token();
            doors.push(
                shared.tracker.spawn(
                    quic::serve(shared.clone(), endpoint, stop)
                        .instrument(tracing::info_span!("quic-door")),
                ),
            );
        }
        if let Some(listener) = self.enrol {
            tracing::info!(addr = %listener.local_addr()?, "enrol door open (ferry ep join)");
            let sh = shared.clone();
            doors.push(shared.open_door(
                listener,
                tracing::info_span!("enrol-door"),
                move |tcp, addr| enrol::on_accept(sh.clone(), tcp, addr),
            ));
        }
        let sh = shared.clone();
        doors.push(shared.open_door(
            self.channel,
            tracing::info_span!("channel-door"),
            move |tcp, addr| channel::on_accept(sh.clone(), tcp, addr),
        ));
        for svc in &s.services {
            tracing::info!(service = %svc.name, kind = %svc.kind, ports = %svc.bind, limits = %svc.limits, "players welcome");
        }
        for (key, bound) in self.ports {
            let Some(one) = shared.served(&key.service) else {
                continue;
            };
            doors.push(shared.serve_port(key, bound, &one));
        }
        shared.tracker.spawn(reload::watch(shared.clone(), fixed));
        crate::sdnotify::ready();
        shutdown.cancelled().await;
        crate::sdnotify::stopping();
        shared.shutdown.cancel();
        // Every listener is closed once its accept loop has returned.
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

/// Each service's first address, as `--ready-file` lists them.
fn services_json(
    settings: &HubSettings,
    addr: impl Fn(&str) -> Option<SocketAddr>,
) -> serde_json::Map<String, serde_json::Value> {
    settings
        .services
        .iter()
        .filter_map(|s| Some((s.name.clone(), addr(&s.name)?.to_string().into())))
        .collect()
}

fn ready_json(a: ControlAddrs, services: serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::json!({
        "control": a.control.to_string(),
        "channel": a.channel.to_string(),
        "services": services,
        "admin": a.admin.map(|a| a.to_string()),
        "enrol": a.enrol.map(|a| a.to_string()),
        "quic": a.quic.map(|a| a.to_string()),
    })
    .to_string()
}

fn write_ready(path: &std::path::Path, json: &str) -> Result<()> {
    crate::certgen::write_file(path, json.as_bytes(), 0o644, true)
        .with_context(|| format!("--ready-file {}", path.display()))
}

impl Shared {
    pub(crate) fn settings(&self) -> Arc<HubSettings> {
        self.settings.get()
    }

    /// Replaces the settings (a reload, an enrolment); the QUIC door's
    /// socket hears the new allowlist from its next datagram on.
    pub(crate) fn set_settings(&self, new: HubSettings) {
        self.quic_allowed.set(new.allowlist.clone());
        self.settings.set(new);
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
        self.quic.as_ref()?.local_addr().ok().map(|a| a.port())
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

    /// The TLS handshake of the control and channel doors. On failure the
    /// connection is closed so that the peer reads the alert saying why.
    pub async fn accept_tls(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        let acceptor = self.tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        let tls = match acceptor.accept(tcp).into_fallible().await {
            Ok(tls) => tls,
            Err((e, tcp)) => {
                crate::net::linger_close(tcp).await;
                return Err(e);
            }
        };
        Ok(tls)
    }

    /// A resumed TLS session skips certificate verification (rustls
    /// restores the client certificate from the session), so check what
    /// verification would have: the validity window and the CRL.
    pub fn check_resumed<S>(
        &self,
        tls: &tokio_rustls::server::TlsStream<S>,
    ) -> Result<(), &'static str> {
        let conn = tls.get_ref().1;
        if conn.handshake_kind() != Some(rustls::HandshakeKind::Resumed) {
            return Ok(());
        }
        let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
            return Err("no client certificate");
        };
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        crate::tls::check_resumed(cert, &revoked)
    }

    fn identities_lock(&self) -> std::sync::MutexGuard<'_, gate::penalties::Penalties<String>> {
        self.identities.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New handshakes on the control, channel and QUIC doors use `config`.
    fn set_tls(&self, config: Arc<rustls::ServerConfig>) {
        // A door closed by the shutdown stays closed: a reload or CRL
        // change in the same instant must not reopen it to nobody.
        if let Some(endpoint) = self.quic.as_ref().filter(|_| !self.shutdown.is_cancelled()) {
            match quic::server_config(&config, &self.settings(), &self.quic_token_key) {
                Ok(q) => endpoint.set_server_config(Some(q)),
                Err(e) => tracing::warn!("QUIC keeps its TLS configuration: {e:#}"),
            }
        }
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = TlsAcceptor::from(config);
    }
}

impl HubHandle {
    /// Control-port connections authenticating right now.
    pub fn pending_logins(&self) -> usize {
        self.shared.gate.pending()
    }

    /// The most control-port connections ever authenticating at once.
    pub fn peak_pending_logins(&self) -> usize {
        self.shared.gate.peak()
    }

    /// The most Argon2 verifications ever running at once, and their total.
    pub fn argon2_runs(&self) -> (usize, u64) {
        (
            self.shared.argon2_stats.peak(),
            self.shared.argon2_stats.total(),
        )
    }

    /// Refusals since start, by kind.
    pub fn refusals(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.shared.refusals.totals()
    }

    /// Ready channels of `service`, updated as they come and go.
    pub fn pool_ready(&self, service: &str) -> Option<watch::Receiver<usize>> {
        self.shared.service(service).map(|s| s.watch_ready())
    }

    /// The ep serving `service` now, if any.
    pub fn served_by(&self, service: &str) -> Option<String> {
        self.shared.service(service)?.served_by()
    }

    /// Whether `ep`'s session rides QUIC (None: not logged in).
    pub fn over_quic(&self, ep: &str) -> Option<bool> {
        self.shared.sessions.over_quic(ep)
    }

    /// Where the QUIC door listens, if it is on.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.shared.quic.as_ref().and_then(|e| e.local_addr().ok())
    }

    /// QUIC connections open now (logged in, logging in, or draining).
    pub fn quic_connections(&self) -> usize {
        self.shared
            .quic
            .as_ref()
            .map_or(0, |e| e.open_connections())
    }

    /// Eps enrolled with an invite since start.
    pub fn enrolments(&self) -> u64 {
        self.shared.metrics.enrolments.get()
    }

    /// Where `ferry ep join` connects, if enrolment is on.
    pub fn enrol_addr(&self) -> Option<SocketAddr> {
        self.shared.addrs.get()?.enrol
    }

    /// UDP flows of `service` now.
    pub fn udp_flows(&self, service: &str) -> Option<usize> {
        self.shared.served(service)?.udp.as_ref().map(|d| d.flows())
    }

    /// Players on `service` now (admitted by its door).
    pub fn players(&self, service: &str) -> Option<usize> {
        self.shared.served(service).map(|s| s.door.players())
    }

    /// Where players of `service` connect now (it may have been added or
    /// moved by a reload).
    pub fn service_addr(&self, service: &str) -> Option<SocketAddr> {
        self.shared.service_addr(service)
    }

    /// Reloads finished since start (applied or refused), and the last
    /// outcome: the plan line, or why the new configuration was refused.
    pub fn reloads(&self) -> watch::Receiver<(u64, Result<String, String>)> {
        self.shared.reloads.subscribe()
    }

    /// Number of logged-in eps, updated as they come and go.
    pub fn sessions(&self) -> watch::Receiver<usize> {
        self.shared.sessions.watch_count()
    }

    /// Successful ep logins since start.
    pub fn logins(&self) -> watch::Receiver<u64> {
        self.shared.sessions.watch_logins()
    }
}
