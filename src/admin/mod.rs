//! The admin door: `/metrics` (Prometheus text), `/api/status` (JSON), `/`
//! (a status page in one file, readable without scripts) and `/events`
//! (server-sent status snapshots for the page's live chart).
//!
//! Off unless configured; loopback by default. Bound elsewhere it requires
//! a token (`admin.token_hash`). Bounded like every door: at most
//! `MAX_CONNECTIONS` at once, a deadline on each request, small requests
//! only, so a flood of slow or junk requests cannot touch players. With a
//! token, and on the public health door, one source or network may hold
//! only a few connections not yet let in, and a full door lets a newcomer
//! in in place of the oldest of those (`admission`); a wrong token earns
//! its source a penalty (`auth`), so one stranger can hold neither every
//! connection nor the Argon2 check.

mod auth;
pub mod client;
// Public for the fuzz target (`fuzz/`), which drives its reader without a socket.
pub mod http;
pub(crate) mod page;

pub use auth::{Auth, Denied, read_hash_file};

use crate::places::{Admission, Ticket};
use std::{sync::Arc, time::Duration};
use tokio::{io::AsyncWriteExt, net::TcpListener, net::TcpStream, sync::Semaphore};
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};
use tracing::Instrument;

/// Connections at once on a door; when every one is taken, a newcomer
/// takes the place of the oldest still waiting for its request
/// (`admission`).
const MAX_CONNECTIONS: usize = 256;
/// Of those, live event streams (each holds a connection open).
const MAX_STREAMS: usize = 16;
/// Deadline for a request to arrive whole.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `/events` sends a snapshot.
pub const EVENT_EVERY: Duration = Duration::from_secs(1);

/// The two tables each role shows, by the status JSON's keys: the first
/// list's key, the first table's columns, the services' columns.
pub fn columns(
    role: &str,
) -> (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
) {
    if role == "hub" {
        (
            "eps",
            &[
                "name",
                "address",
                "version",
                "transport",
                "rtt",
                "connected_for",
            ],
            &[
                "name",
                "type",
                "served_by",
                "home",
                "players",
                "udp_flows",
                "players_total",
                "bytes_up",
                "bytes_down",
                "refusals",
                "pool_ready",
            ],
        )
    } else {
        (
            "hub",
            &["hub", "state", "transport", "rtt", "players", "since"],
            &[
                "name",
                "local",
                "players",
                "players_total",
                "bytes_up",
                "bytes_down",
                "local_reachable",
                "home",
            ],
        )
    }
}

/// What a role shows on its admin door.
pub trait Source: Send + Sync + 'static {
    /// "hub" or "ep".
    fn role(&self) -> &'static str;
    fn metrics(&self) -> String;
    fn status(&self) -> serde_json::Value;
    /// `/api/players`: how many players there are now and the first
    /// `limit` of them (the hub).
    fn players(&self, _limit: usize) -> Option<(usize, serde_json::Value)> {
        None
    }
    /// `/api/history`: the last hour per service.
    fn history(&self) -> Option<serde_json::Value> {
        None
    }
    /// The running configuration as a reload compares it (`/api/config`),
    /// for `check` to print a reload's plan; secrets only as digests.
    fn config(&self) -> Option<serde_json::Value> {
        None
    }
    /// Whether a page shared with others should hide addresses
    /// (`hide_addresses`).
    fn hides_addresses(&self) -> bool {
        false
    }
    /// The admin token's hash as the settings say now, so a rotated one
    /// applies without a restart (None: no token, or not followed).
    fn admin_token_hash(&self) -> Option<String> {
        None
    }
    /// `/health` (None: the process itself) and `/health/SERVICE`: whether
    /// a DNS health check should send players here.
    fn healthy(&self, service: Option<&str>) -> bool {
        service.is_none()
    }
}

/// An event's data, when it was made, and whether addresses were hidden
/// then (a reload turning `hide_addresses` on must not see it sent).
type LastEvent = (tokio::time::Instant, bool, Arc<str>);

struct Door {
    source: Arc<dyn Source>,
    auth: Option<Arc<Auth>>,
    /// The health door: `/health` and `/health/SERVICE`, nothing else.
    health_only: bool,
    streams: Arc<Semaphore>,
    /// The last event's data and when it was made: one made each second
    /// serves every open stream (each would otherwise sort every player
    /// and read 500 sockets' TCP_INFO for itself, each second).
    last_event: std::sync::Mutex<Option<LastEvent>>,
    shutdown: CancellationToken,
}

/// Runs the admin door of `settings` on `listener` as a tracked task.
pub fn spawn(
    listener: TcpListener,
    source: Arc<dyn Source>,
    settings: &crate::config::admin::AdminSettings,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("admin page at http://{addr}/");
    }
    let auth = settings.token_hash.clone().map(|h| Arc::new(Auth::new(h)));
    tracker.spawn(
        serve(listener, source, auth, shutdown.clone(), tracker.clone())
            .instrument(tracing::info_span!("admin-door")),
    );
}

/// Runs the health door on `listener` as a tracked task: `/health` and
/// `/health/SERVICE` without a token, bounded as the admin door is.
pub fn spawn_health(
    listener: TcpListener,
    source: Arc<dyn Source>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("health checks at http://{addr}/health/SERVICE");
    }
    tracker.spawn(
        run(
            listener,
            source,
            None,
            true,
            shutdown.clone(),
            tracker.clone(),
        )
        .instrument(tracing::info_span!("health-door")),
    );
}

/// Serves `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Source>,
    auth: Option<Arc<Auth>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    run(listener, source, auth, false, shutdown, tracker).await
}

async fn run(
    listener: TcpListener,
    source: Arc<dyn Source>,
    auth: Option<Arc<Auth>>,
    health_only: bool,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // Strangers can reach a door with a token, and the health door; on a
    // loopback door without one everyone is 127.0.0.1.
    let admission = Admission::new(MAX_CONNECTIONS, auth.is_some() || health_only);
    let door = Arc::new(Door {
        source,
        auth,
        health_only,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        last_event: Default::default(),
        shutdown: shutdown.clone(),
    });
    crate::net::accept_loop(listener, shutdown, move |tcp, peer| {
        let Some(ticket) = admission.enter(peer.ip()) else {
            crate::net::abort_on_close(&tcp);
            return;
        };
        let door = door.clone();
        tracker.spawn(
            async move { door.handle(tcp, peer, ticket).await }
                .instrument(tracing::debug_span!("admin", %peer)),
        );
    })
    .await;
}

impl Door {
    async fn handle(&self, mut tcp: TcpStream, peer: std::net::SocketAddr, mut ticket: Ticket) {
        let evicted = ticket.evicted();
        let Some(req) = self.request(&mut tcp, evicted).await else {
            return;
        };
        // Health answers need no token and say nothing but up or down, so
        // a DNS server's checker can ask without a secret.
        if let Some(service) = health_path(&req.path) {
            let up = self.source.healthy(service);
            let (status, body) = if up { (200, "up\n") } else { (503, "down\n") };
            let _ = http::respond(&mut tcp, status, "text/plain", &[], body.as_bytes()).await;
            return;
        }
        if self.health_only {
            let _ = http::respond(&mut tcp, 404, "text/plain", &[], b"not found\n").await;
            return;
        }
        if req.cross_site {
            // Before the token is looked at: no strike for the operator's
            // address, and nothing read for the page.
            let why = b"this door does not answer requests from other sites' pages\n";
            let _ = http::respond(&mut tcp, 403, "text/plain", &[], why).await;
            return;
        }
        if let Some(auth) = &self.auth {
            let hash = self.source.admin_token_hash();
            // An unknown token may wait its turn for Argon2: a hub that
            // stops, or a newer connection that takes this one's place,
            // does not wait for it.
            let checked = tokio::select! {
                c = auth.check(req.token.as_deref(), peer.ip(), hash) => c,
                _ = self.shutdown.cancelled() => return,
                _ = ticket.evicted() => {
                    crate::net::abort_on_close(&tcp);
                    return;
                }
            };
            if let Err(denied) = checked {
                refuse(&mut tcp, denied).await;
                return;
            }
        }
        if self.auth.is_none() && !req.names_an_address() {
            // DNS rebinding: without a token, only a request that names
            // the door by its address (as a browser on this machine does)
            // may read who plays.
            let why = b"ask by address (http://127.0.0.1:PORT/), not by a name\n";
            let _ = http::respond(&mut tcp, 403, "text/plain", &[], why).await;
            return;
        }
        // Past the token check: an event stream it opens is not waiting.
        if !ticket.served() {
            crate::net::abort_on_close(&tcp);
            return;
        }
        // An answer still being written when the hub stops is cut off: the
        // hub's stop waits for the door's connections.
        tokio::select! {
            _ = self.route(tcp, &req.path) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// A GET request that arrived whole in time; anything else is answered
    /// (or dropped) here.
    async fn request(
        &self,
        tcp: &mut TcpStream,
        evicted: WaitForCancellationFutureOwned,
    ) -> Option<http::Request> {
        let req = tokio::select! {
            r = tokio::time::timeout(REQUEST_TIMEOUT, http::read_request(tcp)) => r,
            _ = self.shutdown.cancelled() => return None,
            _ = evicted => {
                crate::net::abort_on_close(tcp);
                return None;
            }
        };
        let req = match req {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = http::respond(tcp, 400, "text/plain", &[], e.as_bytes()).await;
                return None;
            }
            Err(_) => return None,
        };
        if req.method != "GET" {
            let _ = http::respond(tcp, 405, "text/plain", &[], b"GET only\n").await;
            return None;
        }
        Some(req)
    }

    /// Answers an authorised request for `path`.
    async fn route(&self, mut tcp: TcpStream, path: &str) {
        let s = &self.source;
        match path {
            "/metrics" => {
                let body = s.metrics();
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                let _ = http::respond(&mut tcp, 200, ct, &[], body.as_bytes()).await;
            }
            "/api/status" => {
                let body = s.status().to_string();
                let _ =
                    http::respond(&mut tcp, 200, "application/json", &[], body.as_bytes()).await;
            }
            "/api/config" if !from_here(&tcp) && s.hides_addresses() => {
                // `ferry hub check` asks from the hub's own machine; the
                // allowlist and deny lists name homes and players.
                let why = b"the running configuration is shown only on this machine while hide_addresses is on\n";
                let _ = http::respond(&mut tcp, 403, "text/plain", &[], why).await;
            }
            "/api/config" => json_or_404(&mut tcp, s.config()).await,
            "/api/players" => json_or_404(&mut tcp, s.players(usize::MAX).map(|(_, v)| v)).await,
            "/api/history" => json_or_404(&mut tcp, s.history()).await,
            "/" | "/index.html" => {
                let players = s.players(page::MAX_PLAYER_ROWS).map(|(_, v)| v);
                let history = s.history();
                let status = page::for_page(s.status());
                let body = page::render(s.role(), &status, players.as_ref(), history.as_ref());
                let ct = "text/html; charset=utf-8";
                let _ = http::respond(&mut tcp, 200, ct, &[], body.as_bytes()).await;
            }
            "/events" => self.events(tcp).await,
            // Browsers ask for it; an empty answer keeps their console clean.
            "/favicon.ico" => {
                let _ = http::respond(&mut tcp, 204, "image/x-icon", &[], b"").await;
            }
            _ => {
                let _ = http::respond(&mut tcp, 404, "text/plain", &[], b"not found\n").await;
            }
        }
    }

    /// The status with the first players (the page's table), for `/events`.
    fn snapshot(&self) -> serde_json::Value {
        let mut v = page::for_page(self.source.status());
        if let Some((total, players)) = self.source.players(page::MAX_PLAYER_ROWS) {
            v["players_total"] = total.into();
            v["players"] = players;
        }
        v
    }

    /// An event's data: the last one made, if it is fresh enough for a
    /// stream that sends each `EVENT_EVERY`, else a new one.
    fn event(&self) -> Arc<str> {
        let fresh = EVENT_EVERY.mul_f32(0.9);
        let hide = self.source.hides_addresses();
        let last = self.last_event.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, hid, data)) = &*last
            && at.elapsed() < fresh
            && *hid == hide
        {
            return data.clone();
        }
        drop(last);
        let data: Arc<str> = format!("data: {}\n\n", self.snapshot()).into();
        let now = tokio::time::Instant::now();
        let made = Some((now, hide, data.clone()));
        *self.last_event.lock().unwrap_or_else(|p| p.into_inner()) = made;
        data
    }

    async fn events(&self, mut tcp: TcpStream) {
        let Ok(_stream) = self.streams.clone().try_acquire_owned() else {
            let _ = http::respond(
                &mut tcp,
                503,
                "text/plain",
                &[],
                b"too many event streams\n",
            )
            .await;
            return;
        };
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";
        if tcp.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(EVENT_EVERY);
        // Opened with the token as it was: a rotation ends the stream, as
        // it refuses the old token's next request.
        let opened_with = self.source.admin_token_hash();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            if self.auth.is_some() && self.source.admin_token_hash() != opened_with {
                return;
            }
            let event = self.event();
            // A reader that stops reading is dropped rather than buffered for.
            match tokio::time::timeout(REQUEST_TIMEOUT, tcp.write_all(event.as_bytes())).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

async fn json_or_404(tcp: &mut TcpStream, v: Option<serde_json::Value>) {
    let _ = match v {
        Some(v) => {
            let body = v.to_string();
            http::respond(tcp, 200, "application/json", &[], body.as_bytes()).await
        }
        None => http::respond(tcp, 404, "text/plain", &[], b"not found\n").await,
    };
}

/// Whether `tcp` comes from this machine: from loopback, or from the
/// address it reached (a door bound to a public address, asked by a
/// command on the same host).
fn from_here(tcp: &TcpStream) -> bool {
    match (tcp.peer_addr(), tcp.local_addr()) {
        (Ok(peer), Ok(local)) => is_local(peer.ip(), local.ip()),
        _ => false,
    }
}

fn is_local(peer: std::net::IpAddr, local: std::net::IpAddr) -> bool {
    let peer = peer.to_canonical();
    peer.is_loopback() || peer == local.to_canonical()
}

/// `/health` → `Some(None)`, `/health/NAME` → `Some(Some(NAME))`.
fn health_path(path: &str) -> Option<Option<&str>> {
    let path = path.split('?').next().unwrap_or_default();
    match path.strip_prefix("/health")? {
        "" | "/" => Some(None),
        rest => rest
            .strip_prefix('/')
            .filter(|n| !n.contains('/'))
            .map(Some),
    }
}

/// Tells a client whose token the door did not take why, and when to retry.
async fn refuse(tcp: &mut TcpStream, denied: Denied) {
    let (status, body, retry) = match denied {
        Denied::Unauthorized => (
            401,
            "a valid admin token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)\n"
                .to_string(),
            None,
        ),
        Denied::Penalised(left) => {
            let secs = left.as_secs() + 1;
            let why =
                format!("a wrong admin token came from this address lately; retry in {secs} s\n");
            (429, why, Some(secs.to_string()))
        }
        Denied::Busy => (503, "busy checking other tokens; retry\n".to_string(), None),
    };
    let mut headers = vec![("WWW-Authenticate", "Bearer")];
    if let Some(secs) = &retry {
        headers.push(("Retry-After", secs.as_str()));
    }
    let _ = http::respond(tcp, status, "text/plain", &headers, body.as_bytes()).await;
}

pub use crate::net::is_loopback;

#[cfg(test)]
mod tests {
    #[test]
    fn only_this_machine_is_local() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let public = ip("203.0.113.5");
        assert!(super::is_local(ip("127.0.0.1"), public));
        assert!(super::is_local(ip("::1"), public));
        assert!(
            super::is_local(ip("::ffff:203.0.113.5"), public),
            "its own address"
        );
        assert!(!super::is_local(ip("198.51.100.9"), public));
        assert!(!super::is_local(ip("203.0.113.6"), public));
    }
}
