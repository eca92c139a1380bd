//! Minecraft Bedrock: while home is away, the hub answers the server-list
//! ping (RakNet's Unconnected Ping) itself, so the list shows the offline
//! line instead of nothing. Any other datagram goes the usual way.

use super::{super::Shared, Words};
use crate::{
    config::game::Game,
    game::bedrock::{Pong, ping_time},
    hub::service::{Home, Service},
    proto::HomeState,
};
use tokio::time::Instant;

/// Pongs a port sends per second at most: a pong is up to five times a
/// ping (171 bytes with the longest MOTD kept, against 33),
/// and a ping's source is easily forged, so the hub must not become a
/// reflector for a flood aimed at someone else.
const ANSWERS_PER_SEC: f64 = 100.0;

/// What to do with a datagram on a Bedrock port.
pub(in crate::hub) enum Ping {
    /// Not a ping the hub answers: on to its flow.
    Pass,
    /// The hub's pong.
    Pong(Vec<u8>),
    /// A ping beyond this second's budget while home is away: dropped
    /// (home is not there to answer it either).
    Drop,
}

/// One UDP port's answers.
pub(in crate::hub) struct Answerer {
    guid: u64,
    tokens: f64,
    refilled: Instant,
    /// When a ping last went home while the ep found the server down: one
    /// every `PROBE_EVERY` does, so a server started again (by hand, or by
    /// a restart) is seen without waiting for a join.
    probed: Option<Instant>,
}

/// How often a ping goes home to a server the ep found down.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Answerer {
    pub fn new(service: &str, port: u16) -> Self {
        // Stable across restarts, different per service and port: the
        // client lists a server by it.
        let mut guid: u64 = 0xcbf2_9ce4_8422_2325;
        for b in service.bytes().chain(port.to_be_bytes()) {
            guid = (guid ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Answerer {
            guid,
            tokens: ANSWERS_PER_SEC,
            refilled: Instant::now(),
            probed: None,
        }
    }

    /// What to do with `datagram`: a ping the hub answers itself while
    /// home is away, or anything else.
    pub fn answer(&mut self, shared: &Shared, svc: &Service, port: u16, datagram: &[u8]) -> Ping {
        let Some(time) = ping_time(datagram) else {
            return Ping::Pass;
        };
        let settings = shared.settings();
        let Some(game) = settings.service(&svc.name).and_then(|s| s.game.as_ref()) else {
            return Ping::Pass;
        };
        if game.game != Game::Bedrock {
            return Ping::Pass;
        }
        let home = svc.home();
        let Some(motd) = Words(game).motd_for(home) else {
            return Ping::Pass;
        };
        if matches!(home, Home::Reported(HomeState::Down | HomeState::Asleep))
            && self.probed.is_none_or(|t| t.elapsed() >= PROBE_EVERY)
        {
            self.probed = Some(Instant::now());
            return Ping::Pass;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * ANSWERS_PER_SEC;
        self.tokens = (self.tokens + refill).min(ANSWERS_PER_SEC);
        self.refilled = now;
        if self.tokens < 1.0 {
            return Ping::Drop;
        }
        self.tokens -= 1.0;
        let pong = Pong {
            motd: &motd,
            guid: self.guid,
            port,
        };
        Ping::Pong(pong.answer(time))
    }
}
