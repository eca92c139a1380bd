//! The ep: keeps a control session to the hub alive and opens channels on
//! request. Channels carrying players are independent of the control
//! session: they live on while it reconnects.

mod backoff;
mod channel;
mod dark;
mod hubs;
pub mod join;
mod login;
mod pace;
mod ready;
mod reload;
mod send_probe;
mod send_queue;
mod slots;
mod status;
mod udp;
mod udp_listener;
mod upstream;
mod wake;

pub use login::{Leg, LoginError, Tunnel, Welcome, login};

/// A bare TLS connection to a hub port with the ep's identity, for tests
/// that speak the protocol by hand (panics if it cannot connect).
#[doc(hidden)]
pub async fn connect_for_tests(settings: &EpSettings, addr: &str) -> Tunnel {
    let tls = login::load_tls(settings).expect("the ep's TLS files");
    let name = &settings.hubs[0].server_name;
    login::connect_tls(name, &tls.client, addr, Leg::Control)
        .await
        .expect("TLS connection to the hub")
}

/// A channel connection as the ep dials it, leaving from `from`, for tests
/// of where channels come from.
#[doc(hidden)]
pub async fn connect_channel_for_tests(
    settings: &EpSettings,
    addr: &str,
    from: Option<std::net::IpAddr>,
) -> Result<Tunnel, LoginError> {
    let tls = login::load_tls(settings)?;
    let name = &settings.hubs[0].server_name;
    login::connect_tls(name, &tls.client, addr, Leg::Channel { from }).await
}

use crate::config::ep::EpSettings;
use anyhow::Result;
use std::sync::Arc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub(crate) struct Ep {
    /// Swapped whole on reload; read with `settings()`.
    settings: crate::swap::Swap<EpSettings>,
    /// The TLS files `settings` names, as loaded (swapped with them).
    tls: crate::swap::Swap<crate::tls::EpTls>,
    /// Bumped when a reload changes the services offered, so every live
    /// session re-announces them.
    offered: tokio::sync::watch::Sender<u64>,
    /// Reloads applied since start.
    reloaded: tokio::sync::watch::Sender<u64>,
    /// Reloads refused since start.
    refused: tokio::sync::watch::Sender<u64>,
    /// `--ready-file`, rewritten after each reload (`ready::Ready`).
    ready: std::sync::Mutex<Option<ready::Ready>>,
    /// Followed too, so a refused reload is tried again once they change.
    refused_follows: crate::reload::RefusedFollows,
    /// Each hub served, in `EpSettings::hubs` order (fixed until a restart).
    hubs: Vec<Arc<hubs::HubLink>>,
    /// Whether the uplink guard is on (`uplink_guard`), for every player.
    uplink_guard: crate::uplink_guard::Switch,
    /// Players at once per service (`max_players`).
    players: Arc<slots::Slots>,
    /// How each service at home was last found; wakes and sleeps.
    homes: Arc<wake::Homes>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    pub metrics: crate::metrics::ep::EpMetrics,
    /// What the status page says of the services.
    pub state: status::State,
    /// The last hour per service (`/api/history`).
    pub history: crate::history::History,
    /// TCP players' TLS channels, watched for a path gone dark.
    dark: Arc<dark::Channels>,
}

/// Runs the ep until `shutdown`: logs in, serves, reconnects with backoff.
pub async fn run(settings: EpSettings, shutdown: CancellationToken) -> Result<()> {
    run_until(settings, shutdown, CancellationToken::new()).await
}

/// `run`, where `immediate` (a second Ctrl-C) cuts the drain short.
pub async fn run_until(
    settings: EpSettings,
    shutdown: CancellationToken,
    immediate: CancellationToken,
) -> Result<()> {
    bind(settings, shutdown, immediate).await?.run().await
}

/// An ep with its admin port (if any) bound, ready to `run`.
pub struct Bound {
    ep: Arc<Ep>,
    admin: Option<tokio::net::TcpListener>,
    immediate: CancellationToken,
}

/// What the ep runs from `settings`: the files it names read in
/// (`read_files`) and the TLS files loaded. At start, by `check` and on
/// every reload.
pub fn load(settings: EpSettings) -> Result<(EpSettings, crate::tls::EpTls)> {
    let settings = read_files(settings)?;
    let tls = crate::tls::EpTls::load(&settings)?;
    Ok((settings, tls))
}

/// `settings` with what the files it names hold, other than TLS: the token
/// from `token_file` and the admin door's hash from
/// `admin.token_hash_file`. Errors name the config file and the key, as a
/// check's do. Enough for `status`, which needs no TLS.
pub fn read_files(mut settings: EpSettings) -> Result<EpSettings> {
    let file = settings.file.clone();
    let err = |m: String| anyhow::Error::new(crate::config::check_err(&file, m));
    if let Some(path) = &settings.token_file {
        settings.token = login::read_token_file(path).map_err(err)?;
    } else if let Some(w) = inline_token_readable(&file) {
        settings.file_warnings.push(w);
    }
    if let Some(a) = settings.admin.take() {
        settings.admin = Some(crate::admin::read_hash_file(a).map_err(err)?);
    }
    Ok(settings)
}

/// A token written in ep.toml is a secret in that file: a warning when
/// others on the machine may read it. (Not refused, as `token_file` is:
/// the file is the configuration too, and FERRY_TOKEN keeps it out.)
fn inline_token_readable(file: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode();
    if mode & 0o077 == 0 {
        return None;
    }
    use figment::providers::Format;
    let written = figment::Figment::from(figment::providers::Toml::file(file));
    written.find_value("token").is_ok().then(|| {
        format!(
            "{} holds the token and others on this machine may read it (mode {:o}): \
             move the token to token_file (mode 0600, owned by the ep's user), or make \
             this file the ep's user's and chmod 600 it (`chown ferry` first if it is root's, \
             or the ep can no longer read it)",
            file.display(),
            mode & 0o777
        )
    })
}

/// Loads the files `settings` names (`load`) and binds its admin port; a
/// bad certificate or a port in use fails here.
pub async fn bind(
    settings: EpSettings,
    shutdown: CancellationToken,
    immediate: CancellationToken,
) -> Result<Bound> {
    let (settings, tls) = load(settings)?;
    // Two files per player (its socket at home, its channel): what
    // `max_players` allows should not fail for want of descriptors.
    crate::fdlimit::raise();
    let admin = match &settings.admin {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a.bind)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {} (admin): {e}", a.bind))?,
        ),
        None => None,
    };
    let metrics = crate::metrics::ep::EpMetrics::new(
        settings.hubs.iter().map(|h| h.hub.as_str()),
        settings.services.keys().map(String::as_str),
    );
    let links = settings
        .hubs
        .iter()
        .enumerate()
        .map(|(i, h)| Arc::new(hubs::HubLink::new(i, &h.hub, &metrics)))
        .collect();
    let homes = Arc::new(wake::Homes::default());
    homes.configure(None, &settings.services);
    homes.first_look(
        &settings.services,
        (settings.timing.connect_timeout, &shutdown),
    );
    let ep = Arc::new(Ep {
        uplink_guard: crate::uplink_guard::Switch::new(settings.uplink_guard),
        settings: crate::swap::Swap::new(settings),
        tls: crate::swap::Swap::new(tls),
        offered: tokio::sync::watch::Sender::new(0),
        reloaded: tokio::sync::watch::Sender::new(0),
        refused: tokio::sync::watch::Sender::new(0),
        ready: Default::default(),
        refused_follows: Default::default(),
        hubs: links,
        players: Arc::default(),
        homes,
        tracker: TaskTracker::new(),
        shutdown,
        hard_stop: CancellationToken::new(),
        metrics,
        state: status::State::new(),
        history: Default::default(),
        dark: Arc::default(),
    });
    Ok(Bound {
        ep,
        admin,
        immediate,
    })
}

impl Ep {
    pub(crate) fn settings(&self) -> Arc<EpSettings> {
        self.settings.get()
    }
}

/// A running ep, for tests: a NAT re-mapping simulated by moving its (first
/// hub's) QUIC connection to a new UDP port.
#[doc(hidden)]
#[derive(Clone)]
pub struct Handle(Arc<Ep>);

impl Handle {
    /// Reloads applied since start, updated as they land.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.reloaded.subscribe()
    }

    /// Reloads refused since start, updated as they are.
    pub fn refused_reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.refused.subscribe()
    }

    /// What the status page shows (`/api/status`).
    pub fn status(&self) -> serde_json::Value {
        crate::admin::Source::status(&*self.0)
    }

    /// What `/metrics` shows.
    pub fn metrics(&self) -> String {
        self.0.metrics.encode()
    }

    pub fn rebind_quic(&self) -> std::io::Result<()> {
        self.0.rebind_quic(None)
    }

    /// The same, onto a socket bound to `addr` (another address).
    pub fn rebind_quic_to(&self, addr: std::net::SocketAddr) -> std::io::Result<()> {
        self.0.rebind_quic(Some(addr))
    }

    /// Where the first hub's QUIC connection leaves from, if it has one.
    pub fn quic_local_addr(&self) -> Option<std::net::SocketAddr> {
        let q = self.0.hubs[0].quic_lock();
        q.endpoint.as_ref()?.local_addr().ok()
    }
}

/// One QUIC login attempt to `hub`, for tests of the QUIC door's refusals.
#[doc(hidden)]
pub async fn login_quic_once(
    settings: &EpSettings,
    hub: std::net::SocketAddr,
) -> Result<(), LoginError> {
    let client = login::load_tls(settings)?.client;
    let (endpoint, _) = login::quic_endpoint(hub)?;
    let deadline = settings.timing.connect_timeout;
    let h = &settings.hubs[0];
    let login = login::login_quic(settings, h, &client, &endpoint, hub);
    match tokio::time::timeout(deadline, login).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(LoginError::Timeout {
            addr: hub.to_string(),
            after: deadline,
        }),
    }
}

impl Bound {
    pub fn handle(&self) -> Handle {
        Handle(self.ep.clone())
    }

    /// Where the admin door listens, if it is on.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Writes the admin door's address to `path` as JSON now, and again
    /// after each reload with how it went (`ferry ep reload` waits on it).
    pub fn set_ready_file(&self, path: std::path::PathBuf) -> Result<()> {
        ready::Ready::start(&self.ep, path, self.admin_addr())
    }

    pub async fn run(self) -> Result<()> {
        let Bound {
            ep,
            admin,
            immediate,
        } = self;
        let s = ep.settings();
        for w in s.hash_warnings() {
            tracing::warn!("{w}");
        }
        if let (Some(listener), Some(a)) = (admin, &s.admin) {
            let source: Arc<dyn crate::admin::Source> = ep.clone();
            crate::admin::spawn(listener, source, a, &ep.shutdown, &ep.tracker);
        }
        let e = ep.clone();
        ep.tracker.spawn(async move {
            crate::history::keep(&e.history, &e.shutdown, || e.samples()).await
        });
        let weak = Arc::downgrade(&ep.dark);
        tokio::spawn(dark::keep(weak, ep.hard_stop.clone()));
        let triggers = reload::triggers(&ep);
        ep.tracker.spawn(reload::watch(ep.clone(), triggers));
        crate::sdnotify::ready();
        // One session per hub, each on its own; they end at shutdown.
        let sessions: Vec<_> = ep
            .hubs
            .iter()
            .map(|link| tokio::spawn(upstream::run(ep.clone(), link.clone())))
            .collect();
        for s in sessions {
            if let Err(e) = s.await {
                tracing::error!("a hub session stopped: {e}");
            }
        }
        crate::sdnotify::stopping();
        let drain = ep.settings().timing.drain_timeout;
        crate::shutdown::drain(&ep.tracker, &ep.hard_stop, drain, &immediate).await;
        tracing::info!("ep stopped");
        Ok(())
    }
}

impl Ep {
    /// Moves the first hub's QUIC connection to a fresh UDP port, as a NAT
    /// re-mapping would (a test hook for migration).
    pub(crate) fn rebind_quic(&self, to: Option<std::net::SocketAddr>) -> std::io::Result<()> {
        let q = self.hubs[0].quic_lock();
        let Some(endpoint) = &q.endpoint else {
            return Err(std::io::Error::other("no QUIC endpoint"));
        };
        let family = endpoint.local_addr()?;
        let any: std::net::SocketAddr = if family.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = crate::quic::client_socket(to.unwrap_or(any))?;
        let handle = socket.try_clone()?;
        endpoint.rebind(socket)?;
        if let Some(queue) = &q.queue {
            send_queue::moved(queue, handle);
        }
        Ok(())
    }
}
