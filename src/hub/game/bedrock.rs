//! Minecraft Bedrock: while home is away, the hub answers the server-list
//! ping (RakNet's Unconnected Ping) itself, so the list shows the offline
//! line instead of nothing. Any other datagram goes the usual way.

use super::{super::Shared, Words};
use crate::{
    config::game::Game,
    game::bedrock::{Pong, ping_time},
    hub::service::Service,
};
use tokio::time::Instant;

/// Pongs a port sends per second at most: a pong is three times a ping,
/// and a ping's source is easily forged, so the hub must not become a
/// reflector for a flood aimed at someone else.
const ANSWERS_PER_SEC: f64 = 100.0;

/// One UDP port's answers.
pub(in crate::hub) struct Answerer {
    guid: u64,
    tokens: f64,
    refilled: Instant,
}

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
        }
    }

    /// The pong for `datagram`, if it is a ping the hub answers itself.
    pub fn answer(
        &mut self,
        shared: &Shared,
        svc: &Service,
        port: u16,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        let time = ping_time(datagram)?;
        let settings = shared.settings();
        let game = settings.service(&svc.name)?.game.as_ref()?;
        if game.game != Game::Bedrock {
            return None;
        }
        let home = svc.home();
        let motd = Words(game).motd_for(home)?;
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * ANSWERS_PER_SEC;
        self.tokens = (self.tokens + refill).min(ANSWERS_PER_SEC);
        self.refilled = now;
        if self.tokens < 1.0 {
            return None;
        }
        self.tokens -= 1.0;
        let pong = Pong {
            motd: &motd,
            guid: self.guid,
            port,
        };
        Some(pong.answer(time))
    }
}
