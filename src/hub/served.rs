//! The services a hub serves right now, and the ports they listen on.
//!
//! A `Served` bundles one service's parts: its pool (`Service`), its player
//! door, its UDP door if it has UDP, and `cut`, which ends its players when
//! it is removed. Limits and pool sizes change in place on reload, so
//! addresses' counts, bans and flows carry over; a port is identified by the
//! service, the protocol and the address as configured, so a reload that
//! leaves a port's line alone leaves its socket alone (even port 0).

use super::{Shared, admission::Door, service::Service, udp::UdpDoor};
use crate::config::{
    hub::{HubSettings, ServiceSettings},
    ports::ServiceKind,
};
use anyhow::{Context, Result};
use std::{net::SocketAddr, sync::Arc};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub(crate) struct Served {
    pub svc: Arc<Service>,
    pub door: Arc<Door>,
    pub udp: Option<Arc<UdpDoor>>,
    pub kind: ServiceKind,
    /// Ends this service's players: cancelled `drain_timeout` after the
    /// service is removed (a child of the hub's hard stop).
    pub cut: CancellationToken,
}

/// What building a `Served` needs from the hub.
pub(crate) struct Parts<'a> {
    pub metrics: &'a crate::metrics::HubMetrics,
    pub cap: &'a Arc<super::admission::HubCap>,
    pub queued: &'a Arc<crate::datagram::Budget>,
    pub shutdown: &'a CancellationToken,
    pub hard_stop: &'a CancellationToken,
    pub tracker: &'a tokio_util::task::TaskTracker,
}

/// How long a channel ticket lives: the channel's TLS handshake, with
/// room (the channel door waits `handshake_timeout` for it).
pub fn ticket_ttl(t: &crate::config::hub::HubTiming) -> std::time::Duration {
    t.handshake_timeout * 2
}

impl Parts<'_> {
    pub fn build(&self, s: &ServiceSettings, hub: &HubSettings) -> Arc<Served> {
        let m = self.metrics;
        let t = hub.timing;
        let svc = Arc::new(Service::new(
            s.name.clone(),
            s.pool_size,
            t.idle_timeout,
            ticket_ttl(&t),
            self.shutdown.child_token(),
            self.tracker.clone(),
            m.pool_ready.get_or_create(&m.service(&s.name)).clone(),
        ));
        let meters = m.for_service(&s.name);
        let door = Door::new(s.limits.clone(), self.cap.clone(), meters.clone());
        let udp = s.kind.udp().then(|| self.udp_door(s, meters, &door));
        Arc::new(Served {
            svc,
            door,
            udp,
            kind: s.kind,
            cut: self.hard_stop.child_token(),
        })
    }

    pub fn udp_door(
        &self,
        s: &ServiceSettings,
        meters: crate::metrics::ServiceMeters,
        door: &Door,
    ) -> Arc<UdpDoor> {
        UdpDoor::new(
            s.name.clone(),
            s.limits.clone(),
            self.cap.clone(),
            self.metrics.udp.for_service(&s.name),
            meters,
            door.caps().clone(),
            self.queued.clone(),
        )
    }
}

/// One listening socket, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PortKey {
    pub service: String,
    pub udp: bool,
    /// The address as written (port 0 stays 0).
    pub addr: SocketAddr,
    pub offset: u16,
}

/// A bound socket not yet serving.
pub(crate) enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(u) => u.local_addr(),
        }
    }
}

/// A bound socket, shared: a reload may hand it from one service (or
/// offset) to another without closing it, so no player is refused and no
/// second bind can fail on the hub's own port.
#[derive(Clone)]
pub(crate) enum Socket {
    Tcp(Arc<TcpListener>),
    Udp(Arc<UdpSocket>),
}

impl From<Bound> for Socket {
    fn from(b: Bound) -> Self {
        match b {
            Bound::Tcp(l) => Socket::Tcp(Arc::new(l)),
            Bound::Udp(u) => Socket::Udp(Arc::new(u)),
        }
    }
}

impl Socket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Socket::Tcp(l) => l.local_addr(),
            Socket::Udp(u) => u.local_addr(),
        }
    }
}

/// A socket serving, and how to stop it.
pub(crate) struct Listening {
    /// Stops its accept or receive loop (and a UDP port's flows).
    pub stop: CancellationToken,
    pub bound: SocketAddr,
    pub socket: Socket,
}

/// Every port `s` needs.
pub(crate) fn keys(s: &ServiceSettings) -> Vec<PortKey> {
    let mut out = Vec::new();
    for offset in 0..s.bind.count {
        // A service routed by name on another's port listens on none itself.
        let tcp = s.kind.tcp() && s.shares_port_of.is_none();
        for (on, udp) in [(tcp, false), (s.kind.udp(), true)] {
            if on {
                out.push(PortKey {
                    service: s.name.clone(),
                    udp,
                    addr: s.bind.at(offset),
                    offset,
                });
            }
        }
    }
    out
}

/// Binds `wanted` ports; all or none (a failure drops what was bound).
/// A TCP and a UDP port of the same service and offset with port 0 get
/// the same number, as `tcp+udp` promises.
pub(crate) async fn bind_all(wanted: &[PortKey]) -> Result<Vec<(PortKey, Bound)>> {
    let mut out: Vec<(PortKey, Bound)> = Vec::new();
    for k in wanted.iter().filter(|k| !k.udp) {
        let l = TcpListener::bind(k.addr)
            .await
            .with_context(|| format!("cannot listen on {} (service {})", k.addr, k.service))?;
        out.push((k.clone(), Bound::Tcp(l)));
    }
    for k in wanted.iter().filter(|k| k.udp) {
        let twin = out
            .iter()
            .find(|(t, _)| !t.udp && t.service == k.service && t.offset == k.offset)
            .and_then(|(_, b)| b.local_addr().ok());
        let u = bind_udp(k, twin).await?;
        out.push((k.clone(), Bound::Udp(u)));
    }
    Ok(out)
}

async fn bind_udp(k: &PortKey, twin: Option<SocketAddr>) -> Result<UdpSocket> {
    let at = match twin {
        Some(t) if k.addr.port() == 0 => t,
        _ => k.addr,
    };
    let u = UdpSocket::bind(at)
        .await
        .with_context(|| format!("cannot listen on udp {at} (service {})", k.service))?;
    crate::net::tune_udp(&u);
    Ok(u)
}

impl Shared {
    /// Starts serving `socket` for `served`; recorded under `key`.
    pub(crate) fn serve_port(
        self: &Arc<Self>,
        key: PortKey,
        socket: impl Into<Socket>,
        served: &Arc<Served>,
    ) -> tokio::task::JoinHandle<()> {
        let socket = socket.into();
        let stop = self.shutdown.child_token();
        let addr = socket.local_addr().unwrap_or(key.addr);
        let span = tracing::info_span!("service", name = %key.service);
        let task = match socket.clone() {
            Socket::Tcp(listener) => {
                let (sh, served2, offset) = (self.clone(), served.clone(), key.offset);
                let accept = crate::net::accept_loop(listener, stop.clone(), move |tcp, peer| {
                    // A Minecraft port reads the first packet before it
                    // knows the service (the name typed picks it).
                    let name = &served2.svc.name;
                    let game = sh
                        .settings()
                        .service(name)
                        .and_then(|s| s.game.as_ref().map(|g| g.game));
                    if game == Some(crate::config::game::Game::Minecraft) {
                        return super::game::java::on_accept(
                            sh.clone(),
                            name.clone(),
                            offset,
                            tcp,
                            peer,
                        );
                    }
                    let parts = (&served2.svc, &served2.door, &served2.cut);
                    super::player::on_accept(sh.clone(), parts, tcp, peer, offset)
                });
                self.tracker.spawn(accept.instrument(span))
            }
            Socket::Udp(socket) => {
                let port = super::udp::UdpPort {
                    svc: served.svc.clone(),
                    door: served
                        .udp
                        .clone()
                        .expect("a UDP port belongs to a UDP service"),
                    socket,
                    offset: key.offset,
                    cut: served.cut.clone(),
                };
                self.tracker
                    .spawn(port.serve(self.clone(), stop.clone()).instrument(span))
            }
        };
        // Once the hub stops, nothing is held for a hand-over: the socket
        // closes with its loop, which returns at once.
        if !self.shutdown.is_cancelled() {
            self.ports_lock().insert(
                key,
                Listening {
                    stop,
                    bound: addr,
                    socket,
                },
            );
        }
        task
    }

    /// Moves the socket serving `from` to `to` (another service, or
    /// another offset of one): the old loop stops, and a UDP port's old
    /// flows end, since their datagrams now go to the new owner.
    pub(crate) fn hand_over(self: &Arc<Self>, from: &PortKey, to: PortKey, served: &Arc<Served>) {
        let Some(l) = self.ports_lock().remove(from) else {
            return;
        };
        l.stop.cancel();
        tracing::info!(
            from = %from.service,
            to = %to.service,
            addr = %l.bound,
            udp = to.udp,
            "port handed over"
        );
        self.serve_port(to, l.socket, served);
    }

    /// Where players of `service` connect now: its first port, TCP first.
    pub(crate) fn service_addr(&self, service: &str) -> Option<SocketAddr> {
        let ports = self.ports_lock();
        let first = |udp: bool| {
            ports
                .iter()
                .find(|(k, _)| k.service == service && k.offset == 0 && k.udp == udp)
                .map(|(_, l)| l.bound)
        };
        first(false).or_else(|| first(true))
    }
}
