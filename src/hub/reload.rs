//! Reloading a running hub's configuration without dropping a player:
//! check the new file in full, bind every new port, and only then apply;
//! anything wrong (a syntax error, an unknown key, a port in use) keeps
//! the running state and says why. One line per reload says what changed.

use super::{
    ControlAddrs, Shared,
    players::Player,
    served::{self, Parts, PortKey},
};
use crate::{
    config::{
        hub::{HubConfig, HubSettings},
        plan::{Plan, Summary},
    },
    reload::Trigger,
};
use std::{collections::HashSet, net::SocketAddr, sync::Arc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What asks for a reload; called before the doors open, so that a save
/// in the first moments is seen.
pub(super) fn triggers(shared: &Arc<Shared>) -> mpsc::Receiver<Trigger> {
    let s = shared.settings();
    // The files of the settings running now: a reload that names another
    // token file is followed from then on.
    let sh = Arc::downgrade(shared);
    let files: crate::reload::Files = Box::new(move || {
        let Some(sh) = sh.upgrade() else {
            return Vec::new();
        };
        let s = sh.settings();
        let running = std::iter::once(s.file.clone()).chain(s.follows.iter().cloned());
        sh.refused_follows.with(running.collect())
    });
    crate::reload::triggers(files, s.watch_config, shared.shutdown.clone())
}

/// Reloads on every trigger (SIGHUP, the file saved) until shutdown.
pub(super) async fn watch(
    shared: Arc<Shared>,
    fixed: ControlAddrs,
    mut triggers: mpsc::Receiver<Trigger>,
) {
    while let Some(why) = triggers.recv().await {
        let began = crate::sdnotify::monotonic_us();
        crate::sdnotify::reloading();
        let outcome = reload(&shared, why).await;
        match &outcome {
            Ok(plan) => tracing::info!("configuration reloaded ({}): {plan}", why.as_str()),
            Err(e) => tracing::warn!(
                "configuration reload ({}) refused, the running configuration stays: {e}",
                why.as_str()
            ),
        }
        if why == Trigger::Signal {
            let mut s = shared.signalled.lock().unwrap_or_else(|p| p.into_inner());
            *s = (s.0 + 1, began);
        }
        shared.reloads.send_modify(|(n, last)| {
            *n += 1;
            *last = outcome;
        });
        // After the counts: `ferry hub reload` reads this one's there.
        write_ready(&shared, fixed);
        crate::sdnotify::ready();
    }
}

async fn reload(shared: &Arc<Shared>, _why: Trigger) -> Result<String, String> {
    // From reading enrolled.json to the swap: an enrolment in between
    // would be swapped away.
    let _update = shared.settings_update.lock().await;
    let old = shared.settings();
    // Reading files and parsing certificates: off the async threads.
    let (named, loaded) = tokio::task::spawn_blocking(move || {
        // The enrolled eps are read from the state folder the running
        // enrol door writes to: a moved `enrol.state` (or `tls.ca`, its
        // default) waits for a restart, as the door does, rather than
        // dropping every enrolled ep's credential now.
        let (named, read) = HubConfig::reload_naming(&old);
        let mut read = match read {
            Ok(read) => read,
            Err(e) => return (named, Err(e)),
        };
        let wanted = std::mem::replace(&mut read.enrol, old.enrol.clone());
        super::warn_ca_key(old.enrol.as_ref());
        let loaded = super::load(read).map(|(mut new, tls)| {
            new.enrol = wanted;
            (new, tls)
        });
        (named, loaded)
    })
    .await
    .map_err(|e| e.to_string())?;
    shared.refused_follows.set(named, &loaded);
    let new = loaded.map_err(|e| format!("{e:#}"))?;
    apply(shared, new).await
}

/// Reloads that changed what a drain's end cuts by: a cut made for an
/// earlier change gives way to a later change's own, so a change undone
/// and redone gives its players the last one's whole drain.
#[derive(Default)]
pub(crate) struct Changes {
    pub allowlist: std::sync::atomic::AtomicU64,
    pub grants: std::sync::atomic::AtomicU64,
}

/// Keys a running hub cannot change keep their running values.
fn keep_running(old: &HubSettings, mut new: HubSettings) -> HubSettings {
    new.control = old.control;
    new.channel = old.channel;
    new.quic = old.quic;
    new.admin = crate::config::admin::keep_running(old.admin.as_ref(), new.admin.take());
    new.enrol = old.enrol.clone();
    new.health = old.health;
    new.log_format = old.log_format;
    new.watch_config = old.watch_config;
    new.limits = old.limits;
    new
}

/// The TLS material and the QUIC door after a reload: a new CA, CRL or
/// certificate swapped in (the sessions a new CA did not issue closed),
/// or a new heartbeat timeout in the QUIC door's configuration.
fn tls_changed(
    shared: &Arc<Shared>,
    (old, old_tls): (&HubSettings, Arc<crate::tls::HubTls>),
    (new, new_tls): (&HubSettings, crate::tls::HubTls),
) {
    if old_tls.digest != new_tls.digest {
        let revoked = new_tls.crl.as_ref().map(|c| c.serials.clone());
        if let (Some(_), None) = (&old_tls.crl, &new_tls.crl) {
            let n = old_tls.crl.as_ref().map_or(0, |c| c.serials.len());
            tracing::warn!(
                "tls.crl removed: revocation is off, and the {n} certificate(s) it revoked are accepted again"
            );
        }
        // Loaded first: the CRL watcher builds on the material it finds.
        let (server, material) = (new_tls.server.clone(), new_tls.material.clone());
        shared.trust.loaded.set(new_tls);
        if !old_tls.material.same_ca(&material) {
            shared.sessions.close_unissued(|c| material.issued(c));
        }
        shared.set_tls(server);
        super::crl::apply_serials(shared, revoked.unwrap_or_default());
    } else if old.timing.heartbeat_timeout != new.timing.heartbeat_timeout {
        // QUIC's idle timeout is the heartbeat timeout, set in the QUIC
        // door's configuration: new connections take the new one.
        shared.set_tls(new_tls.server.clone());
    }
}

/// The new settings in place, their services built and handed to the eps
/// offering them: as one step against logins (`Shared::offers`).
fn swap_in(
    shared: &Arc<Shared>,
    (old, old_tls): (&HubSettings, Arc<crate::tls::HubTls>),
    (new, new_tls): (HubSettings, crate::tls::HubTls),
) -> Arc<HubSettings> {
    let _offers = shared.offers();
    shared.set_settings(new);
    let new = shared.settings();
    shared.cap.serve_tcp(super::serves_tcp(&new));
    tls_changed(shared, (old, old_tls), (&new, new_tls));
    if old.grants != new.grants {
        let grants = &shared.changes.grants;
        grants.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    services(shared, &new);
    new
}

/// Applies checked settings; the plan line, or why nothing changed.
async fn apply(
    shared: &Arc<Shared>,
    (new, new_tls): (HubSettings, crate::tls::HubTls),
) -> Result<String, String> {
    let (old, old_tls) = (shared.settings(), shared.trust.loaded.get());
    let plan = Plan::between(
        &Summary::of(&old, &old_tls.digest),
        &Summary::of(&new, &new_tls.digest),
    );
    let new = keep_running(&old, new);
    let wanted: Vec<PortKey> = new.services.iter().flat_map(served::keys).collect();
    let (have, bound_at): (HashSet<PortKey>, Vec<(PortKey, SocketAddr)>) = {
        let ports = shared.ports_lock();
        (
            ports.keys().cloned().collect(),
            ports.iter().map(|(k, l)| (k.clone(), l.bound)).collect(),
        )
    };
    let (handed, fresh) = hand_overs(&have, &bound_at, &wanted);
    // Every new port is bound before anything changes: a port in use
    // leaves the hub exactly as it was.
    let bound = served::bind_all(&fresh)
        .await
        .map_err(|e| format!("{e:#}{}; nothing changed", held_by_us(&fresh, &bound_at)))?;
    let new = swap_in(shared, (&old, old_tls), (new, new_tls));
    for (from, to) in handed {
        if let Some(one) = shared.served(&to.service) {
            shared.hand_over(&from, to, &one);
        }
    }
    for (key, b) in bound {
        if let Some(one) = shared.served(&key.service) {
            tracing::info!(service = %key.service, addr = %b.local_addr().map(|a| a.to_string()).unwrap_or_default(), udp = key.udp, "players welcome");
            shared.serve_port(key, b, &one);
        }
    }
    let wanted: HashSet<PortKey> = wanted.into_iter().collect();
    let mut ports = shared.ports_lock();
    let gone: Vec<PortKey> = ports
        .keys()
        .filter(|k| !wanted.contains(*k))
        .cloned()
        .collect();
    for k in gone {
        if let Some(l) = ports.remove(&k) {
            tracing::info!(service = %k.service, addr = %l.bound, udp = k.udp, "port closed");
            l.stop.cancel();
        }
    }
    drop(ports);
    let creds = (&old.credentials, &new.credentials);
    let players = shared.players.list();
    rotated_players_go(shared, (&players, creds), new.timing.drain_timeout);
    if old.allowlist != new.allowlist {
        denied_players_go(shared, new.timing.drain_timeout);
    }
    shared.sessions.close_where(
        |ep, _| creds.0.for_ep(ep) != creds.1.for_ep(ep),
        "this ep's token changed on the hub; it logs in again with its token",
    );
    shared.sessions.close_where(
        |_, ip| !new.allowlist.contains(ip),
        "the ep's address is no longer in ep_allowlist",
    );
    let mut line = plan.to_string();
    let gone = super::bans::gone_services(shared);
    if !gone.is_empty() {
        line += &format!("; {}", super::bans::gone_note(&gone));
    }
    Ok(line)
}

/// The players of an ep whose token changed go at the drain's end, also
/// those on channels of its sessions already gone (a TLS channel outlives
/// its control connection; closing the session open now reaches only
/// that one's).
fn rotated_players_go(
    shared: &Arc<Shared>,
    (players, (old, new)): (
        &[Arc<Player>],
        (
            &crate::config::hub::Credentials,
            &crate::config::hub::Credentials,
        ),
    ),
    drain: std::time::Duration,
) {
    let changed: HashSet<String> = players
        .iter()
        .filter_map(|p| p.ep().map(str::to_string))
        .filter(|ep| old.for_ep(ep) != new.for_ep(ep))
        .collect();
    if changed.is_empty() {
        return;
    }
    // Carried by its sessions up to now, which logged in with the old
    // token: not by one that logs in with the new token after this.
    let mark = shared.sessions.last_id();
    let doomed = move |p: &Player| {
        p.session().is_some_and(|s| s <= mark) && p.ep().is_some_and(|ep| changed.contains(ep))
    };
    shared.end_players_after(drain, doomed, "the ep's token changed on the hub");
}

/// The players on TLS channels from an address taken out of
/// `ep_allowlist` go at the drain's end, whether or not their ep is logged
/// in now (closing the sessions from there reaches only those logged in,
/// and a TLS channel outlives its control connection). Not those whose
/// address is allowed again by then, unless their ep was logged in from
/// it at this reload: that session is closed on purpose now, and its
/// players go with it (`control::ended`). A later change of the allowlist
/// makes its own cut, at its own drain's end, and this one gives way.
/// Players over QUIC are cut with their connection (`close_where`).
fn denied_players_go(shared: &Arc<Shared>, drain: std::time::Duration) {
    use std::sync::atomic::Ordering::Relaxed;
    let this = shared.changes.allowlist.fetch_add(1, Relaxed) + 1;
    let (now, sh) = (std::time::Instant::now(), Arc::downgrade(shared));
    let doomed = move |p: &Player| {
        let Some(sh) = sh.upgrade() else { return false };
        p.started <= now
            && sh.changes.allowlist.load(Relaxed) == this
            && p.from()
                .is_some_and(|ip| !sh.settings().allowlist.contains(ip))
    };
    shared.end_players_after(
        drain,
        doomed,
        "the ep's address is no longer in ep_allowlist",
    );
}

/// When a port to bind is one the hub itself holds on another address
/// (`0.0.0.0:25565` → `[::]:25565`), the "address in use" is the hub's
/// own socket: say so, and how to get there.
fn held_by_us(fresh: &[PortKey], bound_at: &[(PortKey, SocketAddr)]) -> String {
    fresh
        .iter()
        .filter(|k| k.addr.port() != 0)
        .find_map(|k| {
            bound_at
                .iter()
                .find(|(o, at)| o.udp == k.udp && at.port() == k.addr.port() && *at != k.addr)
                .map(|(_, at)| {
                    format!(
                        " (the hub itself holds port {} on {at}: moving a port to another \
                         address takes a restart, or two reloads through a free port)",
                        k.addr.port()
                    )
                })
        })
        .unwrap_or_default()
}

/// Which wanted ports the hub already holds under another name (a service
/// renamed, a port moved to another service, a range extended downwards
/// shifts the offsets), to be handed over rather than bound again; and
/// which must be bound. A port 0 is never the same port twice.
fn hand_overs(
    have: &HashSet<PortKey>,
    bound_at: &[(PortKey, SocketAddr)],
    wanted: &[PortKey],
) -> (Vec<(PortKey, PortKey)>, Vec<PortKey>) {
    let wanted_set: HashSet<&PortKey> = wanted.iter().collect();
    let mut free: Vec<&PortKey> = have.iter().filter(|k| !wanted_set.contains(k)).collect();
    let bound = |o: &PortKey| bound_at.iter().find(|(k, _)| k == o).map(|(_, a)| *a);
    let (mut handed, mut fresh) = (Vec::new(), Vec::new());
    for k in wanted.iter().filter(|k| !have.contains(*k)) {
        // As written, or as bound: a port 0 the kernel numbered, now
        // pinned in the file, is the same socket.
        let held = free.iter().position(|o| {
            k.addr.port() != 0 && o.udp == k.udp && (o.addr == k.addr || bound(o) == Some(k.addr))
        });
        match held {
            Some(i) => handed.push((free.swap_remove(i).clone(), k.clone())),
            None => fresh.push(k.clone()),
        }
    }
    (handed, fresh)
}

/// Services added, changed in place, or removed (their players finish,
/// within `drain_timeout`).
fn services(shared: &Arc<Shared>, new: &HubSettings) {
    let parts = Parts {
        metrics: &shared.metrics,
        cap: &shared.cap,
        queued: &shared.udp_queued,
        shutdown: &shared.shutdown,
        hard_stop: &shared.hard_stop,
        tracker: &shared.tracker,
    };
    let mut served = shared.served.write().unwrap_or_else(|p| p.into_inner());
    for s in &new.services {
        let Some(cur) = served.get(&s.name).cloned() else {
            let mut one = parts.build(s, new);
            if let Some(cut) = reprieve(shared, &s.name, new) {
                // Its players from before it was removed carry on under
                // the service again, cut with it if it goes again.
                if let Some(fresh) = Arc::get_mut(&mut one) {
                    fresh.cut = cut;
                }
            }
            served.insert(s.name.clone(), one);
            continue;
        };
        let t = new.timing;
        cur.svc
            .retune(s.pool_size, t.idle_timeout, served::ticket_ttl(&t));
        cur.door.set_limits(s.limits.clone());
        let udp = match (&cur.udp, s.kind.udp()) {
            (Some(u), true) => {
                u.set_limits(s.limits.clone());
                Some(u.clone())
            }
            (None, true) => Some(parts.udp_door(s, shared.metrics.for_service(&s.name), &cur.door)),
            (_, false) => None,
        };
        if cur.kind != s.kind {
            let one = served::Served {
                svc: cur.svc.clone(),
                door: cur.door.clone(),
                udp,
                kind: s.kind,
                cut: cur.cut.clone(),
            };
            served.insert(s.name.clone(), Arc::new(one));
        }
    }
    let gone: Vec<String> = served
        .keys()
        .filter(|n| new.service(n).is_none())
        .cloned()
        .collect();
    let mut removed = Vec::new();
    for name in gone {
        if let Some(one) = served.remove(&name) {
            removed.push(one);
        }
    }
    drop(served);
    reassign(shared, new);
    drain_removed(shared, removed, new.timing.drain_timeout);
}

/// A removed service whose players still drain.
pub(crate) struct Draining {
    cut: CancellationToken,
    /// Calls off the timer that would cancel `cut`.
    off: CancellationToken,
    /// The eps that carried its players.
    eps: Vec<String>,
    /// Which removal it is: a later removal of the same name replaces the
    /// entry, and this one's timer must not take that one away.
    id: u64,
}

/// Removed services' players finish, cut after `drain` unless a later
/// reload puts the service back (`reprieve`).
fn drain_removed(
    shared: &Arc<Shared>,
    removed: Vec<Arc<super::served::Served>>,
    drain: std::time::Duration,
) {
    for one in removed {
        one.svc.retire();
        let eps = shared.sessions.serving_eps(&one.svc);
        shared.sessions.forget(&one.svc);
        // Not on the tracker: a shutdown's drain (which waits for the
        // tracker) must not wait out this timer, which still cuts these
        // players at its time during that drain (`cut` is a child of the
        // hard stop, which cuts them at the drain's end in any case).
        let (cut, stop) = (one.cut.clone(), shared.hard_stop.clone());
        let off = CancellationToken::new();
        let name = one.svc.name.clone();
        static REMOVALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = REMOVALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = Draining {
            cut: cut.clone(),
            off: off.clone(),
            eps,
            id,
        };
        draining(shared).insert(name.clone(), entry);
        let sh = shared.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(drain) => {}
                _ = stop.cancelled() => return,
                _ = off.cancelled() => return,
            }
            // Under the lock a reprieve takes: it called this timer off
            // first, or it finds no entry and builds the service afresh.
            let mut d = draining(&sh);
            if !off.is_cancelled() {
                cut.cancel();
                // Its own entry only: removed, put back while an ep that
                // carried these players was no longer granted it (no
                // reprieve), and removed again, the name's entry is the
                // later removal's, which a put-back may still reprieve.
                if d.get(&name).is_some_and(|e| e.id == id) {
                    d.remove(&name);
                }
            }
        });
    }
}

fn draining(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Draining>> {
    shared.draining.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `cut` of the players of `name`, removed by an earlier reload and
/// still draining, with the timer that would cut them called off; unless
/// an ep that carried them is no longer granted the service in `new`
/// (then they go at the drain's end, as a grant withdrawn cuts them).
fn reprieve(shared: &Shared, name: &str, new: &HubSettings) -> Option<CancellationToken> {
    let mut d = draining(shared);
    let e = d.get(name)?;
    if !e.eps.iter().all(|ep| new.grants.may_serve(ep, name)) {
        return None;
    }
    let e = d.remove(name)?;
    e.off.cancel();
    Some(e.cut)
}

/// The players of `svc` carried by an ep it is not granted to now go at
/// the drain's end: whichever session or connection carries them, and
/// whether or not that ep is logged in or serving it now (a TLS channel
/// outlives its control connection; an ep may stop offering the service
/// and keep its players). Not those that arrive after this reload (a later
/// one has its own drain), nor any whose ep is granted it again by then;
/// and not at all once a later reload changes the grants (it makes its
/// own cut of those still not granted, at its own drain's end).
fn ungranted_players_go(
    shared: &Arc<Shared>,
    (svc, players): (
        &Arc<super::service::Service>,
        &[Arc<super::players::Player>],
    ),
    drain: std::time::Duration,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let (now, sessions, name) = (
        std::time::Instant::now(),
        shared.sessions.clone(),
        svc.name.clone(),
    );
    let (this, sh) = (shared.changes.grants.load(Relaxed), Arc::downgrade(shared));
    let doomed = move |p: &super::players::Player| {
        p.service() == name
            && p.started <= now
            && p.ep().is_some_and(|ep| !sessions.may_serve(ep, &name))
            && sh
                .upgrade()
                .is_some_and(|sh| sh.changes.grants.load(Relaxed) == this)
    };
    if players.iter().any(|p| doomed(p)) {
        shared.end_players_after(drain, doomed, "the ep is no longer granted this service");
    }
}

/// Grants changed outside a reload (an enrolment): each service's ep
/// checked against them. Not counted as a reload's change: an earlier
/// reload's cut (a grant withdrawn) keeps its own drain's end beside the
/// one this makes, rather than giving way to it.
pub(super) fn grants_changed(shared: &Arc<Shared>) {
    reassign(shared, &shared.settings());
}

/// Each service's ep checked against the new shape and grants (an ep no
/// longer granted one loses its players too, within the drain, as for a
/// removed service); an unserved one handed to an ep that offers it.
fn reassign(shared: &Arc<Shared>, new: &HubSettings) {
    // One look at the players for every service.
    let players = shared.players.list();
    let drain = new.timing.drain_timeout;
    for s in &new.services {
        if let Some(one) = shared.served(&s.name) {
            let fits = |offer: &super::offer::Offer| offer.fits(&s.name, s.kind, s.bind.count);
            // Reshaped, or its grant withdrawn, out of its ep's reach; an
            // ep no longer granted it loses its players too (within the
            // drain, as for a removed service).
            shared.sessions.recheck(&one.svc, fits);
            ungranted_players_go(shared, (&one.svc, &players), drain);
            // Unserved (new, let go, or newly granted): an ep already
            // logged in and offering it takes it now, not at its next login.
            if one.svc.served_by().is_none() {
                shared.hand_to_offering(&one.svc);
            }
        }
    }
}

fn write_ready(shared: &Shared, fixed: ControlAddrs) {
    let path = shared
        .ready_file
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(path) = path else { return };
    let services = super::ready::services_json(&shared.settings(), |n| shared.service_addr(n));
    let json = super::ready::ready_json(fixed, services, shared.reloads_json());
    if let Err(e) = super::ready::write_ready(&path, &json) {
        tracing::warn!("{e:#}");
    }
}
