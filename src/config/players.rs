//! Limits at the player door: who may connect to a service, how many at
//! once, how fast, and for how long a flooding address is banned. Set per
//! service, with hub-wide defaults in `[players]`.

use super::{Allowlist, Seconds, bandwidth::Bandwidth};
use serde::{Deserialize, Deserializer, de};
use std::{fmt, time::Duration};

/// `"30/min"`: `count` new connections per `per`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    let bad = || format!("invalid rate {text:?}: expected e.g. \"30/min\", \"5/s\" or \"600/h\"");
    let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" | "sec" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!("rate {text:?} admits nobody; the smallest is 1/h"));
    }
    Ok(Rate { count, per })
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_rate(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// The keys a service and `[players]` share; absent keys fall through
/// service → `[players]` → built-in default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayersConfig {
    pub allow: Option<Allowlist>,
    pub deny: Option<Allowlist>,
    pub max_players: Option<usize>,
    pub max_players_per_ip: Option<usize>,
    pub max_players_per_net: Option<usize>,
    pub player_rate_per_ip: Option<Rate>,
    pub ban_for: Option<Seconds>,
    pub player_idle_timeout: Option<Seconds>,
    pub max_udp_flows: Option<usize>,
    pub max_udp_flows_per_ip: Option<usize>,
    pub max_udp_flows_per_net: Option<usize>,
    pub udp_idle_timeout: Option<Seconds>,
    pub udp_oneshot_timeout: Option<Seconds>,
    pub max_rate: Option<Bandwidth>,
    pub max_rate_per_player: Option<Bandwidth>,
}

/// Built-in defaults. A LAN party of twenty friends behind one router,
/// each with a game, a voice connection and a browser tab on the server's
/// map, reconnecting a few times a minute, stays well below them; a single
/// address opening connections in a loop uses up its rate within a second
/// and is banned after twice its allowance.
pub const DEFAULT_PER_IP: usize = 64;
pub const DEFAULT_RATE: Rate = Rate {
    count: 120,
    per: Duration::from_secs(60),
};
pub const DEFAULT_BAN: Duration = Duration::from_secs(600);
/// A UDP flow is one player address on one port. A busy DNS service or a
/// game with a hundred players stays below 1,024; per address, as for TCP,
/// room for a LAN party or a carrier's NAT.
pub const DEFAULT_UDP_FLOWS: usize = 1024;
pub const DEFAULT_UDP_FLOWS_PER_IP: usize = 64;
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(60);
/// A network (IPv4 /24, IPv6 /48) holds this many addresses' worth of
/// flows: a forger who picks one victim's neighbourhood cannot fill the
/// table, a campus or a carrier's NAT pool still has room.
pub const DEFAULT_UDP_NETWORK_SHARE: usize = 4;
/// The same share for TCP players: one IPv6 household (a /56 or /48 holds
/// hundreds or thousands of /64s) cannot fill a service or the hub.
pub const DEFAULT_NETWORK_SHARE: usize = 4;
/// And at least this many, whatever `max_players_per_ip` is: an operator
/// who set one player per address (one per household) still admits a
/// campus, a carrier's NAT pool or a mobile network's /48 in numbers.
pub const DEFAULT_PER_NET: usize = 256;
/// A flow that is not a conversation (a DNS query, a server-list ping) is
/// over once the answer has had time to arrive.
pub const DEFAULT_UDP_ONESHOT: Duration = Duration::from_secs(5);

/// Limits on a service's UDP flows.
#[derive(Debug, Clone, Copy)]
pub struct UdpLimits {
    pub max_flows: usize,
    /// At once from one address (an IPv6 /64 counts as one).
    pub max_flows_per_ip: usize,
    /// At once from one network (an IPv4 /24, an IPv6 /48).
    pub max_flows_per_net: usize,
    /// No datagram either way for this long ends a conversation.
    pub idle_timeout: Duration,
    /// No datagram either way for this long ends a flow that is not a
    /// conversation. (Which flow gives its place to a newcomer at a cap is
    /// the UDP door's rule: a conversation only once it has had no two-way
    /// traffic for a second, see `hub::udp`.)
    pub oneshot_timeout: Duration,
}

/// The checked limits of one service.
#[derive(Debug, Clone)]
pub struct PlayerLimits {
    /// Empty: everyone (but `deny`).
    pub allow: Allowlist,
    /// Checked before `allow`.
    pub deny: Allowlist,
    /// At once on this service; None: only the hub-wide cap.
    pub max_players: Option<usize>,
    /// At once from one address (an IPv6 /64 counts as one).
    pub max_players_per_ip: usize,
    /// At once from one network (an IPv4 /24, an IPv6 /48): a household's
    /// IPv6 prefix holds thousands of /64s.
    pub max_players_per_net: usize,
    pub rate: Rate,
    /// Zero: never ban.
    pub ban_for: Duration,
    /// A player silent both ways this long is closed; None: never.
    pub idle_timeout: Option<Duration>,
    pub udp: UdpLimits,
    /// Bytes/s all players of the service share, each direction; 0: no cap.
    pub max_rate: u64,
    /// Bytes/s one player (a TCP connection, a UDP flow) may move, each
    /// direction; 0: no cap.
    pub max_rate_per_player: u64,
}

impl PlayerLimits {
    /// `svc` over `hub` over the defaults; `key` prefixes errors.
    pub fn merge(svc: PlayersConfig, hub: &PlayersConfig, key: &str) -> Result<Self, String> {
        let max_players_per_ip = svc
            .max_players_per_ip
            .or(hub.max_players_per_ip)
            .unwrap_or(DEFAULT_PER_IP);
        if max_players_per_ip == 0 {
            return Err(format!(
                "{key}max_players_per_ip = 0 admits nobody; at least 1"
            ));
        }
        let max_players_per_net = svc
            .max_players_per_net
            .or(hub.max_players_per_net)
            .unwrap_or(
                max_players_per_ip
                    .saturating_mul(DEFAULT_NETWORK_SHARE)
                    .max(DEFAULT_PER_NET),
            );
        if max_players_per_net < max_players_per_ip {
            return Err(format!(
                "{key}max_players_per_net = {max_players_per_net} is below max_players_per_ip = \
                 {max_players_per_ip}: one address could never have its share"
            ));
        }
        let max_players = svc.max_players.or(hub.max_players);
        if max_players == Some(0) {
            return Err(format!("{key}max_players = 0 admits nobody; at least 1"));
        }
        let ban_for = svc
            .ban_for
            .or(hub.ban_for)
            .map_or(DEFAULT_BAN, Seconds::get);
        super::check_range(
            &format!("{key}ban_for"),
            ban_for,
            Duration::ZERO,
            Duration::from_secs(7 * 86_400),
        )?;
        let idle = svc
            .player_idle_timeout
            .or(hub.player_idle_timeout)
            .map_or(Duration::ZERO, Seconds::get);
        if !idle.is_zero() {
            super::check_range(
                &format!("{key}player_idle_timeout"),
                idle,
                Duration::from_secs(1),
                Duration::from_secs(7 * 86_400),
            )?;
        }
        let udp = udp_limits(&svc, hub, key)?;
        Ok(PlayerLimits {
            allow: svc.allow.or_else(|| hub.allow.clone()).unwrap_or_default(),
            deny: svc.deny.or_else(|| hub.deny.clone()).unwrap_or_default(),
            max_players,
            max_players_per_ip,
            max_players_per_net,
            rate: svc
                .player_rate_per_ip
                .or(hub.player_rate_per_ip)
                .unwrap_or(DEFAULT_RATE),
            ban_for,
            idle_timeout: (!idle.is_zero()).then_some(idle),
            udp,
            max_rate: svc.max_rate.or(hub.max_rate).unwrap_or_default().0,
            max_rate_per_player: svc
                .max_rate_per_player
                .or(hub.max_rate_per_player)
                .unwrap_or_default()
                .0,
        })
    }
}

/// The UDP keys of `svc` over `hub` over the defaults; `key` prefixes
/// errors.
fn udp_limits(svc: &PlayersConfig, hub: &PlayersConfig, key: &str) -> Result<UdpLimits, String> {
    let max_flows_per_ip = svc
        .max_udp_flows_per_ip
        .or(hub.max_udp_flows_per_ip)
        .unwrap_or(DEFAULT_UDP_FLOWS_PER_IP);
    let idle_timeout = svc
        .udp_idle_timeout
        .or(hub.udp_idle_timeout)
        .map_or(DEFAULT_UDP_IDLE, Seconds::get);
    let oneshot = svc.udp_oneshot_timeout.or(hub.udp_oneshot_timeout);
    let udp = UdpLimits {
        max_flows: svc
            .max_udp_flows
            .or(hub.max_udp_flows)
            .unwrap_or(DEFAULT_UDP_FLOWS),
        max_flows_per_ip,
        max_flows_per_net: svc
            .max_udp_flows_per_net
            .or(hub.max_udp_flows_per_net)
            .unwrap_or(max_flows_per_ip.saturating_mul(DEFAULT_UDP_NETWORK_SHARE)),
        idle_timeout,
        // The default never outlives a short idle timeout.
        oneshot_timeout: oneshot.map_or(DEFAULT_UDP_ONESHOT.min(idle_timeout), Seconds::get),
    };
    if udp.max_flows == 0 || udp.max_flows_per_ip == 0 {
        return Err(format!(
            "{key}max_udp_flows and max_udp_flows_per_ip admit nobody at 0; at least 1"
        ));
    }
    if udp.max_flows_per_net < udp.max_flows_per_ip {
        return Err(format!(
            "{key}max_udp_flows_per_net = {} is below max_udp_flows_per_ip = {}: \
             a network holds at least one address",
            udp.max_flows_per_net, udp.max_flows_per_ip
        ));
    }
    super::check_range(
        &format!("{key}udp_idle_timeout"),
        udp.idle_timeout,
        Duration::from_secs(1),
        Duration::from_secs(86_400),
    )?;
    super::check_range(
        &format!("{key}udp_oneshot_timeout"),
        udp.oneshot_timeout,
        Duration::from_millis(100),
        udp.idle_timeout,
    )
    .map_err(|e| format!("{e} (at most udp_idle_timeout)"))?;
    Ok(udp)
}

impl fmt::Display for PlayerLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |l: &Allowlist| {
            l.nets()
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.allow.is_empty() {
            write!(f, "allow {}; ", list(&self.allow))?;
        }
        if !self.deny.is_empty() {
            write!(f, "deny {}; ", list(&self.deny))?;
        }
        if let Some(n) = self.max_players {
            write!(f, "at most {n} players; ")?;
        }
        write!(
            f,
            "{} per address, {} per network, {:?} per address",
            self.max_players_per_ip, self.max_players_per_net, self.rate
        )?;
        if !self.ban_for.is_zero() {
            write!(f, ", ban {:?}", Seconds(self.ban_for))?;
        }
        if let Some(idle) = self.idle_timeout {
            write!(f, ", idle players closed after {:?}", Seconds(idle))?;
        }
        if self.max_rate != 0 {
            write!(f, "; at most {:?} for all", Bandwidth(self.max_rate))?;
        }
        if self.max_rate_per_player != 0 {
            write!(
                f,
                "; at most {:?} per player",
                Bandwidth(self.max_rate_per_player)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("30/min").unwrap(),
            Rate {
                count: 30,
                per: Duration::from_secs(60)
            }
        );
        assert!(parse_rate("5/s").is_ok());
        assert!(parse_rate("0/min").is_err());
        assert!(parse_rate("lots").is_err());
    }
}
