//! Reloading a running ep's configuration: services added, removed or
//! re-pointed are announced to the hub over the live control session (no
//! new login, no player dropped); a new token or certificate is used from
//! the next connection on. What needs a restart is named and kept.

use super::Ep;
use crate::{
    config::ep::{EpConfig, EpSettings, HubTarget},
    proto::{EpMsg, Shape},
    reload::Trigger,
};
use std::{collections::BTreeMap, sync::Arc};
use tokio::sync::mpsc;

/// The `Services` message for what `s` serves.
pub(super) fn offer(s: &EpSettings) -> EpMsg {
    let shapes: BTreeMap<String, Shape> = s
        .services
        .iter()
        .map(|(name, l)| {
            let shape = Shape {
                kind: l.kind,
                ports: l.addr.count,
            };
            (name.clone(), shape)
        })
        .collect();
    EpMsg::Services {
        services: s.services.keys().cloned().collect(),
        shapes,
    }
}

/// What asks for a reload; called before the session starts, so that a
/// save during the first login is seen.
pub(super) fn triggers(ep: &Arc<Ep>) -> mpsc::Receiver<Trigger> {
    let s = ep.settings();
    // ep.toml and the files it names, as running now: a certificate
    // renewed, or replaced by `ferry ep join --force` while the ep runs
    // (its old one then revoked), or a rotated token_file, is used from
    // the next login without a restart; an admin token hash file replaced
    // (a leaked token rotated) stops the old token at once.
    let weak = Arc::downgrade(ep);
    let files: crate::reload::Files = Box::new(move || {
        let Some(ep) = weak.upgrade() else {
            return Vec::new();
        };
        let s = ep.settings();
        let t = &s.tls_files;
        let mut files = vec![s.file.clone(), t.ca.clone(), t.cert.clone(), t.key.clone()];
        files.extend(s.token_file.clone());
        let admin = s.admin.as_ref().and_then(|a| a.token_hash_file.clone());
        files.extend(admin);
        ep.refused_follows.with(files)
    });
    crate::reload::triggers(files, s.watch_config, ep.shutdown.clone())
}

/// Reloads on every trigger until shutdown.
pub(super) async fn watch(ep: Arc<Ep>, mut triggers: mpsc::Receiver<Trigger>) {
    while let Some(why) = triggers.recv().await {
        let began = crate::sdnotify::monotonic_us();
        crate::sdnotify::reloading();
        let old = ep.settings();
        let loaded = tokio::task::spawn_blocking(move || {
            let (named, read) = EpConfig::reload_naming(&old);
            (named, read.and_then(super::load))
        })
        .await;
        match &loaded {
            Ok((named, read)) => ep.refused_follows.set(named.clone(), read),
            Err(_) => ep.refused_follows.clear(),
        }
        let outcome = match loaded.map(|(_, r)| r) {
            Ok(Ok(new)) => {
                let plan = apply(&ep, new);
                tracing::info!("configuration reloaded ({}): {plan}", why.as_str());
                ep.reloaded.send_modify(|n| *n += 1);
                Ok(plan)
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    "configuration reload ({}) refused, the running configuration stays: {e:#}",
                    why.as_str()
                );
                ep.refused.send_modify(|n| *n += 1);
                Err(format!("{e:#}"))
            }
            Err(e) => {
                tracing::warn!("configuration reload failed: {e}");
                Err(e.to_string())
            }
        };
        super::ready::Ready::reloaded(&ep, (why, began), outcome);
        crate::sdnotify::ready();
    }
}

/// Swaps in `new`, keeping what a running ep cannot change; the plan line.
fn apply(ep: &Ep, (mut new, new_tls): (EpSettings, crate::tls::EpTls)) -> String {
    let (old, old_tls) = (ep.settings(), ep.tls.get());
    let restart = keep_running(&old, &mut new);
    let (mut line, shapes_changed) = services_changed(&old, &new);
    if old.token.expose() != new.token.expose() {
        line += "; token changed (used from the next login)";
    }
    use crate::config::plan::token_digest;
    if token_digest(old.admin.as_ref()) != token_digest(new.admin.as_ref()) {
        line += "; admin token changed (the old one no longer opens the admin door)";
    }
    if old_tls.identity != new_tls.identity {
        line += &format!(
            "; the certificate names {} now, not {} (logging in again with it)",
            new_tls.identity, old_tls.identity
        );
    }
    if old.uplink_guard != new.uplink_guard {
        line += match new.uplink_guard {
            true => "; uplink guard on (for every player, connected or not)",
            false => {
                "; uplink guard off (a player it held is no longer slowed for the path within a second)"
            }
        };
    }
    if !restart.is_empty() {
        line += &format!(
            "; restart required for: {} (kept as running until then)",
            restart.join(", ")
        );
    }
    let relogin = old_tls.identity != new_tls.identity;
    // A login refused for a token or certificate that is fixed now need
    // not sit out the rest of a long backoff.
    let credentials = old.token.expose() != new.token.expose() || old_tls.digest != new_tls.digest;
    ep.uplink_guard.set(new.uplink_guard);
    ep.tls.set(new_tls);
    ep.settings.set(new);
    // After the swap: a dial begun from here on finds the new settings,
    // and one begun before acts on the wake settings in force.
    ep.homes
        .configure(Some(&old.services), &ep.settings().services);
    let look = (ep.settings().timing.connect_timeout, &ep.shutdown);
    ep.homes.first_look(&ep.settings().services, look);
    ep.state.configure(&old.services, &ep.settings().services);
    for link in &ep.hubs {
        if credentials {
            link.retry_now.notify_one();
        }
        if relogin {
            // Channels must carry the session's identity: log in with the
            // new one.
            link.relogin.notify_one();
        }
    }
    // A new login announces the services anyway.
    if !relogin && shapes_changed {
        ep.offered.send_modify(|n| *n += 1);
    }
    line
}

/// The keys of `new` a running ep cannot change, put back as `old` has
/// them; their names, for the restart they wait for.
fn keep_running(old: &EpSettings, new: &mut EpSettings) -> Vec<&'static str> {
    let mut restart = Vec::new();
    let mut keep = |key: &'static str, same: bool| {
        if !same {
            restart.push(key);
        }
    };
    // A session per hub runs from start: which hubs, and where each one's
    // doors are, wait for a restart; a hub's transport is read at its
    // next login.
    let same_hubs = old.hubs.len() == new.hubs.len()
        && old.hubs.iter().zip(&new.hubs).all(|(a, b)| {
            a.hub == b.hub && a.channel == b.channel && a.server_name == b.server_name
        });
    keep("hub", same_hubs);
    use crate::config::admin::listening;
    keep(
        "admin",
        listening(old.admin.as_ref()) == listening(new.admin.as_ref()),
    );
    keep("log_format", old.log_format == new.log_format);
    keep("watch_config", old.watch_config == new.watch_config);
    if !same_hubs {
        // The hubs and their doors as running; each one's transport as the
        // file says now, matched by its `hub` (its name), so a transport
        // changed in the same save as another hub's door still applies.
        new.hubs = old
            .hubs
            .iter()
            .map(|o| match new.hubs.iter().find(|n| n.hub == o.hub) {
                Some(n) => HubTarget {
                    transport: n.transport,
                    quic: n.quic.clone(),
                    ..o.clone()
                },
                None => o.clone(),
            })
            .collect();
    }
    new.admin = crate::config::admin::keep_running(old.admin.as_ref(), new.admin.take());
    new.log_format = old.log_format;
    new.watch_config = old.watch_config;
    restart
}

/// The services added, removed and changed, as the plan line begins; and
/// whether what the hub was told of them (names, types, port counts)
/// changed.
fn services_changed(old: &EpSettings, new: &EpSettings) -> (String, bool) {
    let added: Vec<&String> = new
        .services
        .keys()
        .filter(|k| !old.services.contains_key(*k))
        .collect();
    let removed: Vec<&String> = old
        .services
        .keys()
        .filter(|k| !new.services.contains_key(*k))
        .collect();
    let changed: Vec<&String> = new
        .services
        .iter()
        .filter(|(k, v)| old.services.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k)
        .collect();
    let shapes_changed = added.len() + removed.len() > 0
        || new.services.iter().any(|(k, v)| {
            old.services
                .get(k)
                .is_some_and(|o| o.kind != v.kind || o.addr.count != v.addr.count)
        });
    let line = format!(
        "services added: {}; removed: {}; changed: {}",
        names(&added),
        names(&removed),
        names(&changed)
    );
    (line, shapes_changed)
}

fn names(v: &[&String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ep::Transport;

    fn settings(text: &str) -> EpSettings {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ep.toml");
        std::fs::write(&file, text).unwrap();
        EpConfig::load(&file, Default::default())
            .unwrap()
            .check(&file)
            .unwrap()
    }

    /// One save that moves one hub's door (which waits for a restart) and
    /// changes another's transport (which applies at its next login): the
    /// transport is kept. Before, every hub was put back as it ran.
    #[test]
    fn a_transport_changed_beside_another_hub_s_door_still_applies() {
        let file = |door_b: u16, transport_a: &str| {
            format!(
                "token = \"t\"\n[tls]\nca = \"ca.pem\"\ncert = \"ep.pem\"\nkey = \"ep.key\"\n\
                 [[hubs]]\nhub = \"a.example:7000\"\nchannel = \"a.example:7001\"\n\
                 transport = \"{transport_a}\"\n\
                 [[hubs]]\nhub = \"b.example:{door_b}\"\nchannel = \"b.example:7001\"\n\
                 [services.game]\nlocal = \"127.0.0.1:25565\"\n"
            )
        };
        let old = settings(&file(7000, "tls"));
        let mut new = settings(&file(7100, "quic"));
        assert_eq!(keep_running(&old, &mut new), ["hub"]);
        assert_eq!(new.hubs[1].hub, "b.example:7000");
        assert_eq!(new.hubs[0].transport, Transport::Quic);
    }
}
