//! Who is playing now: one entry per TCP player and per UDP flow, for the
//! players table (`/api/players`), kicks and bans. An entry holds only
//! what the table shows and a token to end the player; its bytes are
//! counted by the relay as it goes.

use super::sessions::Carrier;
use crate::relay::Meter;
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    os::fd::RawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio_util::sync::CancellationToken;

/// "None yet" in the atomics below.
const UNSET: u64 = u64::MAX;

pub(crate) struct Player {
    /// Its service (shared, so a player costs no copy of the name).
    svc: Arc<super::service::Service>,
    pub addr: SocketAddr,
    pub udp: bool,
    /// Unix seconds at its connection.
    pub since: u64,
    /// Its connection, for how long it has played (the wall clock may
    /// step).
    pub started: std::time::Instant,
    /// Bytes each way, added to by the relay.
    pub meter: Meter,
    /// The session that carries it (`UNSET` while it waits for a channel).
    session: AtomicU64,
    /// The ep of that session (it may log in again meanwhile).
    ep: std::sync::OnceLock<Arc<str>>,
    /// The serial of that ep's certificate, so a revocation finds every
    /// player it carries, on this session or an earlier one.
    serial: std::sync::OnceLock<Arc<str>>,
    over_quic: AtomicBool,
    /// See `from`.
    from: Mutex<Option<IpAddr>>,
    /// The ep's dial of the service at home, in µs, as the ep reported.
    dial_us: AtomicU64,
    /// Bytes/s both ways over the last tick, and the totals it came from.
    rate: AtomicU64,
    counted: AtomicU64,
    /// The player's TCP socket while it is open, for `TCP_INFO`.
    fd: Mutex<Option<RawFd>>,
    /// Its TLS channel's TCP socket while it is open, to find a path to
    /// the ep that stopped answering (`Players::cut_dark`), and what the
    /// last look found.
    channel: Mutex<Option<RawFd>>,
    dark: crate::dark_path::Dark,
    /// The service's token (removal, the hard stop): a clone, not a child,
    /// so a player costs no node in the token's tree.
    cut: CancellationToken,
    /// Why it was ended from outside (a kick, a ban), once it is; and the
    /// wake-up for a relay waiting on `ended`.
    why: std::sync::OnceLock<&'static str>,
    kicked: tokio::sync::Notify,
}

impl Player {
    /// Resolves when the player is to be cut off: its service's token,
    /// or a kick or ban (`ended_by` says which).
    pub async fn ended(&self) {
        let kicked = async {
            loop {
                let woken = self.kicked.notified();
                tokio::pin!(woken);
                // Registered before the look, so a kick in between wakes it.
                woken.as_mut().enable();
                if self.why.get().is_some() {
                    return;
                }
                woken.await;
            }
        };
        tokio::select! {
            _ = self.cut.cancelled() => {}
            _ = kicked => {}
        }
    }

    /// Why it was ended from outside (a kick or a ban), if it was.
    pub fn ended_by(&self) -> Option<&'static str> {
        self.why.get().copied()
    }

    /// Carried by `session` from now, over a TLS channel from `from`, if
    /// it is one.
    pub fn carried_by(
        &self,
        session: u64,
        (carrier, from): (Carrier, Option<IpAddr>),
        over_quic: bool,
    ) {
        self.over_quic.store(over_quic, Ordering::Relaxed);
        if let Some(ep) = carrier.ep {
            let _ = self.ep.set(ep);
        }
        if let Some(serial) = carrier.serial {
            let _ = self.serial.set(serial);
        }
        *lock(&self.from) = from;
        self.session.store(session, Ordering::Relaxed);
    }

    /// The address its TLS channel comes from, so a reload that takes that
    /// address out of `ep_allowlist` finds it though the channel outlived
    /// its session. None over QUIC: a stream lives and dies with its
    /// connection, which the reload closes if its address (as it is now,
    /// after any migration) is taken out.
    pub fn from(&self) -> Option<IpAddr> {
        *lock(&self.from)
    }

    /// The serial of the certificate of the ep that carries it.
    pub fn serial(&self) -> Option<&str> {
        self.serial.get().map(|s| &**s)
    }

    /// Ends it from outside, saying `why` (as a kick does).
    pub fn cut_off(&self, why: &'static str) {
        self.end(why);
    }

    pub fn service(&self) -> &str {
        &self.svc.name
    }

    pub fn ep(&self) -> Option<&str> {
        self.ep.get().map(|e| &**e)
    }

    pub fn session(&self) -> Option<u64> {
        Some(self.session.load(Ordering::Relaxed)).filter(|s| *s != UNSET)
    }

    pub fn over_quic(&self) -> bool {
        self.over_quic.load(Ordering::Relaxed)
    }

    pub fn dial(&self) -> Option<Duration> {
        let us = self.dial_us.load(Ordering::Relaxed);
        (us != UNSET).then(|| Duration::from_micros(us))
    }

    /// Bytes/s both ways, as of the last tick.
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// The kernel's smoothed RTT to the player (TCP players only).
    pub fn rtt(&self) -> Option<Duration> {
        // Held while reading: the guard clears it (under this lock) before
        // the socket closes, so the descriptor is never another's.
        let fd = self.fd.lock().unwrap_or_else(|p| p.into_inner());
        fd.and_then(crate::tcp_info::rtt)
    }

    /// Its channel is the TLS connection `fd` until the guard drops:
    /// declare the guard after the channel, so it drops first and the
    /// descriptor is never read once it may be another's.
    pub fn on_channel(&self, fd: Option<RawFd>) -> ChannelGuard<'_> {
        *lock(&self.channel) = fd;
        ChannelGuard(self)
    }

    /// Whether its TLS channel's path stopped answering for `for_at_least`.
    fn dark(&self, for_at_least: Duration) -> bool {
        let fd = lock(&self.channel);
        fd.is_some_and(|fd| self.dark.look(fd, for_at_least))
    }

    fn end(&self, why: &'static str) {
        let _ = self.why.set(why);
        self.kicked.notify_waiters();
    }
}

/// See `Player::on_channel`.
pub(crate) struct ChannelGuard<'a>(&'a Player);

impl Drop for ChannelGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.0.channel) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a player whose channel's path went dark was cut.
const DARK: &str = "the path to its ep stopped answering";

#[derive(Default)]
pub(crate) struct Players {
    next: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    all: HashMap<u64, Arc<Player>>,
    /// TCP players by address, so an ep's report finds its player at once
    /// (two at one address at once cannot be: the newest is kept).
    tcp: HashMap<SocketAddr, u64>,
}

/// A player's place in the table; dropping it removes the player. Drop it
/// before the player's socket (declare it after).
pub(crate) struct PlayerGuard {
    players: Arc<Players>,
    id: u64,
    pub player: Arc<Player>,
}

impl Drop for PlayerGuard {
    fn drop(&mut self) {
        *self.player.fd.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut st = self.players.lock();
        st.all.remove(&self.id);
        if st.tcp.get(&self.player.addr) == Some(&self.id) {
            st.tcp.remove(&self.player.addr);
        }
    }
}

/// Who a player is, at admission.
pub(crate) struct Arrival<'a> {
    pub svc: &'a Arc<super::service::Service>,
    pub addr: SocketAddr,
    pub udp: bool,
    pub fd: Option<RawFd>,
    /// When it connected: a game door's handshake comes before its seat.
    pub arrived: std::time::Instant,
    /// The service's token (removal, the hard stop).
    pub cut: &'a CancellationToken,
}

impl Players {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(self: &Arc<Self>, a: Arrival<'_>, meter: Meter) -> PlayerGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let player = Arc::new(Player {
            svc: a.svc.clone(),
            addr: a.addr,
            udp: a.udp,
            // The second it arrived in (a kick written in that second
            // names it), not now less whole seconds, which can be the next.
            since: std::time::SystemTime::now()
                .checked_sub(a.arrived.elapsed())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(crate::history::unix_now, |d| d.as_secs()),
            started: a.arrived,
            meter,
            session: AtomicU64::new(UNSET),
            ep: std::sync::OnceLock::new(),
            serial: std::sync::OnceLock::new(),
            over_quic: AtomicBool::new(false),
            dial_us: AtomicU64::new(UNSET),
            rate: AtomicU64::new(0),
            counted: AtomicU64::new(0),
            fd: Mutex::new(a.fd),
            channel: Mutex::new(None),
            from: Mutex::new(None),
            dark: Default::default(),
            cut: a.cut.clone(),
            why: std::sync::OnceLock::new(),
            kicked: tokio::sync::Notify::new(),
        });
        let mut st = self.lock();
        st.all.insert(id, player.clone());
        if !a.udp {
            st.tcp.insert(a.addr, id);
        }
        drop(st);
        PlayerGuard {
            players: self.clone(),
            id,
            player,
        }
    }

    /// Everyone, oldest first.
    pub fn list(&self) -> Vec<Arc<Player>> {
        let mut all: Vec<(u64, Arc<Player>)> = self
            .lock()
            .all
            .iter()
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, p)| p).collect()
    }

    /// Ends every player `doomed` picks, saying `why`; how many.
    pub fn end_where(&self, doomed: impl Fn(&Player) -> bool, why: &'static str) -> usize {
        let picked: Vec<Arc<Player>> = self
            .lock()
            .all
            .values()
            .filter(|p| doomed(p))
            .cloned()
            .collect();
        for p in &picked {
            p.end(why);
        }
        picked.len()
    }

    /// The ep's report of how long it took to dial home for `player` of
    /// `service`; only a player carried by the reporting `session` takes it,
    /// so one ep cannot write another's figures. The duration, if taken.
    pub fn dialed(
        &self,
        session: u64,
        service: &str,
        player: SocketAddr,
        us: u64,
    ) -> Option<Duration> {
        let st = self.lock();
        let p = st.all.get(st.tcp.get(&player)?)?;
        if p.service() != service || p.session() != Some(session) {
            return None;
        }
        // An hour at most: a figure past that is a broken clock or a lie.
        let us = us.min(3_600_000_000);
        // One report per player: a second is not news, or not honest.
        p.dial_us
            .compare_exchange(UNSET, us, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(Duration::from_micros(us))
    }

    /// Cuts every player whose TLS channel left what it sent, and the
    /// kernel's next try, unanswered for `for_at_least` (the hub's
    /// heartbeat timeout; `dark_path`): the ep's path is gone (a new home address, a
    /// router's lost mapping) and the kernel would retry for ~15 minutes
    /// while the player waits. A QUIC player's connection moves or times
    /// out by itself. A system call per TLS player, outside the table's
    /// lock.
    pub fn cut_dark(&self, for_at_least: Duration) {
        let all: Vec<Arc<Player>> = self.lock().all.values().cloned().collect();
        for p in all.iter().filter(|p| p.dark(for_at_least)) {
            p.end(DARK);
        }
    }

    /// Updates every player's rate from its byte totals, over `secs`.
    pub fn tick(&self, secs: f64) {
        for p in self.lock().all.values() {
            let total = p.meter.up.get() + p.meter.down.get();
            let before = p.counted.swap(total, Ordering::Relaxed);
            let rate = (total.saturating_sub(before) as f64 / secs.max(0.001)) as u64;
            p.rate.store(rate, Ordering::Relaxed);
        }
    }
}
