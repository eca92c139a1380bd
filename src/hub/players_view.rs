//! The players table as the admin door shows it (`/api/players`, the
//! page, `ferry hub status --players`): one row per TCP player or UDP
//! flow, with the three latencies that say where lag comes from.

use super::Shared;
use serde_json::{Value, json};
use std::time::Duration;

fn ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| {
        json!((d.as_secs_f64() * 1e6).round() / 1e3)
    })
}

/// How many players there are, and the first `limit`, oldest first;
/// addresses masked with `hide`.
pub(super) fn rows(shared: &Shared, hide: bool, limit: usize) -> (usize, Vec<Value>) {
    let mut eps: std::collections::HashMap<String, Option<Duration>> = Default::default();
    let all = shared.players.list();
    let total = all.len();
    let rows = all
        .into_iter()
        .take(limit)
        .map(|p| {
            // By the ep's name: a TLS channel outlives its session, and
            // the ep's next session is the same path home.
            let ep_rtt = p.ep().and_then(|ep| {
                *eps.entry(ep.to_string())
                    .or_insert_with(|| shared.sessions.rtt_of_ep(ep))
            });
            json!({
                "service": p.service(),
                "player": crate::config::admin::shown_address(p.addr, hide),
                "protocol": if p.udp { "udp" } else { "tcp" },
                "transport": match p.session() {
                    None => "waiting",
                    Some(_) if p.over_quic() => "quic",
                    Some(_) => "tls",
                },
                "ep": p.ep(),
                "since": p.since,
                "connected_for_s": p.started.elapsed().as_secs(),
                "bytes_up": p.meter.up.get(),
                "bytes_down": p.meter.down.get(),
                "rate": p.rate(),
                // A UDP flow has no round trip the hub can measure: the
                // gap between a datagram and an answer is the game's.
                "player_hub_ms": ms(p.rtt()),
                "hub_ep_ms": ms(ep_rtt),
                "ep_service_ms": ms(p.dial()),
            })
        })
        .collect();
    (total, rows)
}
