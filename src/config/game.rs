//! A hub service's `game` keys: what the hub says for a game server that
//! is away (issue: sleeping game servers) and which names route to it when
//! several Minecraft servers share one port.

use serde::Deserialize;
use std::{path::PathBuf, sync::Arc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Game {
    /// Java edition, on TCP.
    Minecraft,
    /// Bedrock edition, on UDP (RakNet).
    Bedrock,
}

impl std::fmt::Display for Game {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Game::Minecraft => "minecraft",
            Game::Bedrock => "bedrock",
        })
    }
}

/// The keys as written.
#[derive(Debug, Default)]
pub struct GameConfig {
    pub game: Option<Game>,
    pub offline_motd: Option<String>,
    pub offline_message: Option<String>,
    pub starting_motd: Option<String>,
    pub offline_icon: Option<std::path::PathBuf>,
    pub hosts: Option<Vec<String>>,
    pub default_host: Option<bool>,
}

/// A game service's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GameSettings {
    pub game: Game,
    /// None: the hub's words for the state it sees (asleep or offline).
    pub offline_motd: Option<String>,
    pub offline_message: Option<String>,
    pub starting_motd: Option<String>,
    /// `data:image/png;base64,…`, read from `icon_file` when the settings
    /// are loaded (by the game door).
    pub icon: Option<Arc<str>>,
    /// `offline_icon`: a PNG file.
    pub icon_file: Option<PathBuf>,
    /// Lower case, one trailing dot taken off (and none left: a name
    /// ending in two is refused).
    pub hosts: Vec<String>,
    pub default_host: bool,
}

/// A server-list line or a kick reason; longer is not shown anyway, and
/// a Bedrock pong must not grow into a reflector's payload.
const MAX_TEXT: usize = 256;

impl GameConfig {
    /// `prefix` is `services.NAME.`; `tcp`/`udp` say what the service has.
    pub fn check(self, prefix: &str, tcp: bool, udp: bool) -> Result<Option<GameSettings>, String> {
        let Some(game) = self.game else {
            let stray = [
                ("offline_motd", self.offline_motd.is_some()),
                ("offline_message", self.offline_message.is_some()),
                ("starting_motd", self.starting_motd.is_some()),
                ("offline_icon", self.offline_icon.is_some()),
                ("hosts", self.hosts.is_some()),
                ("default_host", self.default_host.is_some()),
            ];
            if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{prefix}{key} needs {prefix}game = \"minecraft\" (or \"bedrock\")"
                ));
            }
            return Ok(None);
        };
        match game {
            Game::Minecraft if !tcp => {
                return Err(format!(
                    "{prefix}game = \"minecraft\" (Java) needs a TCP service; Bedrock is game = \"bedrock\""
                ));
            }
            Game::Bedrock if !udp => {
                return Err(format!(
                    "{prefix}game = \"bedrock\" needs type = \"udp\" (Bedrock speaks RakNet over UDP)"
                ));
            }
            _ => {}
        }
        if game == Game::Bedrock {
            for (key, set) in [
                ("offline_message", self.offline_message.is_some()),
                ("starting_motd", self.starting_motd.is_some()),
                ("offline_icon", self.offline_icon.is_some()),
                ("hosts", self.hosts.is_some()),
                ("default_host", self.default_host.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "{prefix}{key} is for game = \"minecraft\" (Java) only"
                    ));
                }
            }
        }
        for (key, text) in [
            ("offline_motd", &self.offline_motd),
            ("offline_message", &self.offline_message),
            ("starting_motd", &self.starting_motd),
        ] {
            if text.as_ref().is_some_and(|t| t.chars().count() > MAX_TEXT) {
                return Err(format!(
                    "{prefix}{key} is longer than {MAX_TEXT} characters"
                ));
            }
        }
        let hosts = checked_hosts(prefix, self.hosts.unwrap_or_default())?;
        Ok(Some(GameSettings {
            game,
            offline_motd: self.offline_motd,
            offline_message: self.offline_message,
            starting_motd: self.starting_motd,
            icon: None,
            icon_file: self.offline_icon,
            hosts,
            default_host: self.default_host.unwrap_or(false),
        }))
    }
}

/// `hosts` as the hub compares them: normalised, a port dropped, none
/// twice.
fn checked_hosts(prefix: &str, given: Vec<String>) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for h in given {
        let n = crate::game::java::normalise_host(&h);
        let bad = n.is_empty() || n.len() > 255 || n.ends_with('.');
        if bad || n.contains(|c: char| c.is_whitespace()) {
            return Err(format!("{prefix}hosts: {h:?} is not a host name"));
        }
        // A client sends the name alone, never `name:port`: such an
        // entry is taken for its name (refusing it would stop a hub that
        // ran with it before, every service with it).
        let n = match n.split_once(':') {
            Some((name, port)) if !port.contains(':') && port.parse::<u16>().is_ok() => {
                name.to_string()
            }
            _ => n,
        };
        if hosts.contains(&n) {
            return Err(format!("{prefix}hosts names {n} twice"));
        }
        hosts.push(n);
    }
    Ok(hosts)
}
