//! The hub: three doors (service ports for players, the control port and the
//! channel port for eps) sharing one state.

mod admission;
mod channel;
mod control;
mod crl;
mod gate;
mod player;
mod refusals;
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
    pub settings: HubSettings,
    /// Swapped when the revocation list changes.
    tls: std::sync::RwLock<TlsAcceptor>,
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
    pub refusals: refusals::Refusals,
    pub argon2: Arc<tokio::sync::Semaphore>,
    pub argon2_stats: Arc<stats::InFlight>,
    pub services: HashMap<String, Arc<Service>>,
    /// Each service's player door.
    pub doors: HashMap<String, Arc<admission::Door>>,
    /// Each UDP service's flow table.
    pub udp_doors: HashMap<String, Arc<udp::UdpDoor>>,
    pub sessions: Arc<Sessions>,
    pub tracker: TaskTracker,
    /// Stop accepting, end sessions and pooled channels.
    pub shutdown: CancellationToken,
    /// End relays still running when the drain time is over.
    pub hard_stop: CancellationToken,
    pub metrics: Arc<crate::metrics::HubMetrics>,
    pub started: tokio::time::Instant,
}

/// A hub with all its ports bound, ready to `run`.
pub struct Hub {
    shared: Arc<Shared>,
    control: TcpListener,
    channel: TcpListener,
    players: Vec<PlayerPort>,
    udp_ports: Vec<udp::UdpPort>,
    cap: Arc<admission::HubCap>,
    admin: Option<TcpListener>,
}

/// One TCP port of a service.
struct PlayerPort {
    svc: Arc<Service>,
    door: Arc<admission::Door>,
    listener: TcpListener,
    /// Its place in the service's range.
    offset: u16,
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
        let metrics = Arc::new(crate::metrics::HubMetrics::new(
            settings.services.iter().map(|s| s.name.as_str()),
        ));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let t = settings.timing;
        let l = settings.limits;
        let reserve = 5 * l.max_pending_auth as u64 + 64 * settings.services.len() as u64 + 64;
        let cap = admission::HubCap::new(
            l.max_players_total
                .unwrap_or_else(|| crate::fdlimit::player_cap(crate::fdlimit::raise(), reserve)),
        );
        let mut services = HashMap::new();
        let mut doors = HashMap::new();
        let mut udp_doors = HashMap::new();
        let mut players = Vec::new();
        let mut udp_ports = Vec::new();
        for s in &settings.services {
            let label = metrics.service(&s.name);
            let svc = Arc::new(Service::new(
                s.name.clone(),
                s.pool_size,
                t.idle_timeout,
                t.handshake_timeout * 2,
                shutdown.child_token(),
                tracker.clone(),
                metrics.pool_ready.get_or_create(&label).clone(),
            ));
            services.insert(s.name.clone(), svc.clone());
            let meters = metrics.for_service(&s.name);
            let door = admission::Door::new(s.limits.clone(), cap.clone(), meters.clone());
            doors.insert(s.name.clone(), door.clone());
            let udp_door = s.kind.udp().then(|| {
                let d = udp::UdpDoor::new(
                    s.name.clone(),
                    s.limits.clone(),
                    cap.clone(),
                    metrics.udp.for_service(&s.name),
                    meters.clone(),
                );
                udp_doors.insert(s.name.clone(), d.clone());
                d
            });
            for offset in 0..s.bind.count {
                let (tcp, udp) = bind_port(s, offset).await?;
                if let Some(listener) = tcp {
                    players.push(PlayerPort {
                        svc: svc.clone(),
                        door: door.clone(),
                        listener,
                        offset,
                    });
                }
                if let (Some(socket), Some(door)) = (udp, &udp_door) {
                    udp_ports.push(udp::UdpPort {
                        svc: svc.clone(),
                        door: door.clone(),
                        socket: Arc::new(socket),
                        offset,
                    });
                }
            }
        }
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
                revoked: std::sync::RwLock::new(crl::initial(settings.crl.as_deref())),
                identities: std::sync::Mutex::new(gate::penalties::Penalties::new(penalties)),
                gate: Arc::new(gate),
                channel_gate: Arc::new(channel_gate),
                refusals: refusals::Refusals::new(
                    metrics.refusals.clone(),
                    metrics.player_refusals.clone(),
                ),
                argon2: Arc::new(tokio::sync::Semaphore::new(l.argon2_concurrency)),
                argon2_stats: Arc::default(),
                settings,
                services,
                doors,
                udp_doors,
                sessions: Arc::new(Sessions::new(shutdown.clone(), metrics.clone())),
                tracker,
                shutdown,
                hard_stop: CancellationToken::new(),
                metrics,
                started: tokio::time::Instant::now(),
            }),
            control,
            channel,
            players,
            udp_ports,
            cap,
            admin,
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
        let tcp = self
            .players
            .iter()
            .find(|p| p.svc.name == service && p.offset == 0);
        let udp = self
            .udp_ports
            .iter()
            .find(|p| p.svc.name == service && p.offset == 0);
        tcp.and_then(|p| p.listener.local_addr().ok())
            .or_else(|| udp.and_then(|p| p.socket.local_addr().ok()))
    }

    pub fn handle(&self) -> HubHandle {
        HubHandle {
            shared: self.shared.clone(),
        }
    }

    /// Every bound address as JSON, for `--ready-file`: tests and scripts
    /// learn the ports from it instead of from log lines.
    pub fn ready_json(&self) -> String {
        let services: serde_json::Map<String, serde_json::Value> = self
            .shared
            .settings
            .services
            .iter()
            .filter_map(|s| {
                Some((
                    s.name.clone(),
                    self.service_addr(&s.name)?.to_string().into(),
                ))
            })
            .collect();
        let admin = self
            .admin
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string());
        serde_json::json!({
            "control": self.control_addr().to_string(),
            "channel": self.channel_addr().to_string(),
            "services": services,
            "admin": admin,
        })
        .to_string()
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
        let shared = self.shared;
        let s = &shared.settings;
        tracing::info!(%control, %channel, players_at_most = self.cap.max(), "hub listening");
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
        if let Some(path) = shared.settings.crl.clone() {
            shared.tracker.spawn(crl::watch(shared.clone(), path));
        }
        if let (Some(listener), Some(a)) = (self.admin, &shared.settings.admin) {
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
        let sh = shared.clone();
        doors.push(shared.open_door(
            self.channel,
            tracing::info_span!("channel-door"),
            move |tcp, addr| channel::on_accept(sh.clone(), tcp, addr),
        ));
        for s in &shared.settings.services {
            tracing::info!(service = %s.name, kind = %s.kind, ports = %s.bind, limits = %s.limits, "players welcome");
        }
        for PlayerPort {
            svc,
            door,
            listener,
            offset,
        } in self.players
        {
            let sh = shared.clone();
            let span = tracing::info_span!("service", name = %svc.name);
            doors.push(shared.open_door(listener, span, move |tcp, addr| {
                player::on_accept(sh.clone(), svc.clone(), &door, tcp, addr, offset)
            }));
        }
        for port in self.udp_ports {
            let span = tracing::info_span!("service", name = %port.svc.name);
            doors.push(
                shared
                    .tracker
                    .spawn(port.serve(shared.clone()).instrument(span)),
            );
        }
        shutdown.cancelled().await;
        shared.shutdown.cancel();
        // Every listener is closed once its accept loop has returned.
        for door in doors {
            let _ = door.await;
        }
        let drain = shared.settings.timing.drain_timeout;
        tracing::info!("stopped accepting; active players may finish for up to {drain:?}");
        crate::shutdown::drain(&shared.tracker, &shared.hard_stop, drain, &immediate).await;
        tracing::info!(refusals = ?shared.refusals.totals(), "hub stopped");
        Ok(())
    }
}

/// Binds port `offset` of `s`: TCP, UDP or both on the same number. For
/// port 0 (tests) both protocols get the number the first bind chose,
/// retried if UDP has it taken.
async fn bind_port(
    s: &crate::config::hub::ServiceSettings,
    offset: u16,
) -> Result<(Option<TcpListener>, Option<tokio::net::UdpSocket>)> {
    let what = format!("service {}", s.name);
    let addr = s.bind.at(offset);
    let mut tries = 0;
    loop {
        let tcp = match s.kind.tcp() {
            true => Some(bind(addr, &what).await?),
            false => None,
        };
        if !s.kind.udp() {
            return Ok((tcp, None));
        }
        let at = match &tcp {
            Some(l) => l.local_addr()?,
            None => addr,
        };
        match tokio::net::UdpSocket::bind(at).await {
            Ok(u) => {
                crate::net::tune_udp(&u);
                return Ok((tcp, Some(u)));
            }
            Err(e) if addr.port() == 0 && tries < 16 => {
                tries += 1;
                tracing::debug!("udp port {} taken ({e}); trying another", at.port());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on udp {at} ({what})")),
        }
    }
}

impl Shared {
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

    fn set_acceptor(&self, acceptor: TlsAcceptor) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
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
        self.shared.services.get(service).map(|s| s.watch_ready())
    }

    /// UDP flows of `service` now.
    pub fn udp_flows(&self, service: &str) -> Option<usize> {
        self.shared.udp_doors.get(service).map(|d| d.flows())
    }

    /// Players on `service` now (admitted by its door).
    pub fn players(&self, service: &str) -> Option<usize> {
        self.shared.doors.get(service).map(|d| d.players())
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
