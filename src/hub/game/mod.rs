//! The game door: for a service with `game` set, the hub speaks just
//! enough of the game to answer for a server that is away (its server-list
//! entry, a Disconnect for a join) and, for Minecraft Java, to send each
//! player to the service named by the address they typed. Every other
//! service stays a byte pipe.

pub(super) mod bedrock;
pub(super) mod java;
mod readers;

pub(super) use readers::places as readers_places;

use super::service::Home;
use crate::{
    config::{game::GameSettings, hub::HubSettings},
    proto::HomeState,
};
use std::{path::Path, sync::Arc};

/// Each game service's `offline_icon` read into the settings: at start, by
/// `check` and on every reload, so a missing or wrong file is refused
/// before anything is served. Errors name the key, not yet the config file.
pub(super) fn read_icons(settings: &mut HubSettings) -> Result<(), String> {
    for s in &mut settings.services {
        let Some(g) = &mut s.game else { continue };
        if let Some(path) = &g.icon_file {
            let name = &s.name;
            g.icon = Some(icon(path).map_err(|e| format!("services.{name}.offline_icon: {e}"))?);
        }
    }
    Ok(())
}

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

/// Minecraft shows a 64×64 PNG; the client refuses a status string over
/// 32,767 characters, which the icon's base64 (4/3 of it) must fit in.
const MAX_ICON: u64 = 20 * 1024;

fn icon(path: &Path) -> Result<Arc<str>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_ICON {
        return Err(format!(
            "{} is {} bytes; a server icon is a 64×64 PNG (at most {MAX_ICON} bytes)",
            path.display(),
            meta.len()
        ));
    }
    let data = crate::files::read_regular(path, MAX_ICON)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(format!("{} is not a PNG file", path.display()));
    }
    Ok(format!("data:image/png;base64,{}", crate::game::base64(&data)).into())
}
