//! The game door: for a service with `game` set, the hub speaks just
//! enough of the game to answer for a server that is away (its server-list
//! entry, a Disconnect for a join) and, for Minecraft Java, to send each
//! player to the service named by the address they typed. Every other
//! service stays a byte pipe.

pub(super) mod bedrock;
pub(super) mod java;

use super::service::Home;
use crate::{config::game::GameSettings, proto::HomeState};

/// What the hub says for a service, in the state it sees home in.
pub(super) struct Words<'a>(pub &'a GameSettings);

impl Words<'_> {
    pub fn offline_motd(&self, home: Home) -> String {
        if let Some(m) = &self.0.offline_motd {
            return m.clone();
        }
        match home {
            Home::Reported(HomeState::Asleep) => "Sleeping \u{2014} join to wake it".into(),
            _ => "Offline \u{2014} the server is not running".into(),
        }
    }

    pub fn starting_motd(&self) -> String {
        self.0
            .starting_motd
            .clone()
            .unwrap_or_else(|| "Starting \u{2014} join again in a moment".into())
    }

    pub fn offline_message(&self) -> String {
        self.0
            .offline_message
            .clone()
            .unwrap_or_else(|| "The server is offline. Try again later.".into())
    }

    /// A join held while the server starts, for longer than a client waits.
    pub fn still_starting(&self) -> String {
        "The server is starting. Join again in a moment.".into()
    }

    /// The server-list line for `home`, if the hub answers itself.
    pub fn motd_for(&self, home: Home) -> Option<String> {
        match home {
            Home::Away | Home::Reported(HomeState::Down) | Home::Reported(HomeState::Asleep) => {
                Some(self.offline_motd(home))
            }
            Home::Reported(HomeState::Waking) => Some(self.starting_motd()),
            Home::Unknown | Home::Reported(HomeState::Up | HomeState::Unknown) => None,
        }
    }
}
