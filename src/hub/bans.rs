//! Follows `bans.json` (see `crate::bans`) live: a new ban closes the
//! players it names at once and refuses them at every player door; a new
//! kick closes the players it names once. The hub never writes the file.
//!
//! The file is looked at every `POLL` (a stat; read only when it changed),
//! so a ban takes effect well within a second. At start a damaged file
//! stops the hub with its name, as a damaged CRL does: starting without
//! the bans would let in everyone the operator shut out. Damaged later
//! (an editor's half-save), the previous list stays and the error is
//! logged once per change.

use super::{Shared, players::Player, refusals::Reason};
use crate::bans::BanFile;
use anyhow::Result;
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

/// How often the file's modification time is looked at: well under the
/// second a ban promises, and a stat is cheap.
pub const POLL: Duration = Duration::from_millis(250);

/// The file as read, with its bans indexed: a door looks at its
/// address's own bans and at the networks, not at every ban (UDP asks per
/// datagram).
struct Listed {
    file: BanFile,
    hosts: HashMap<IpAddr, Vec<usize>>,
    nets: Vec<usize>,
}

impl Listed {
    fn of(file: BanFile) -> Listed {
        let (mut hosts, mut nets) = (HashMap::<IpAddr, Vec<usize>>::new(), Vec::new());
        for (i, b) in file.bans.iter().enumerate() {
            match b.address.host() {
                Some(ip) => hosts.entry(ip).or_default().push(i),
                None => nets.push(i),
            }
        }
        Listed { file, hosts, nets }
    }

    fn refuses(&self, service: &str, ip: IpAddr, now: u64) -> bool {
        let ip = ip.to_canonical();
        let own = self.hosts.get(&ip).into_iter().flatten();
        own.chain(&self.nets)
            .any(|&i| self.file.bans[i].applies(service, ip, now))
    }
}

/// The bans in force and the file's reads.
pub(crate) struct Bans {
    list: crate::swap::Swap<Listed>,
    /// The file followed: where it was at start (a reload that moves the
    /// state folder takes a restart to move it).
    pub path: std::path::PathBuf,
    /// No ban at all: the doors' check is one atomic load (UDP asks per
    /// datagram).
    none: AtomicBool,
    /// Files read since start, good or bad (tests wait on it).
    pub reads: tokio::sync::watch::Sender<u64>,
    /// The file's stamp as it was read at start (taken before the read,
    /// so a change during it is read again).
    first: Option<Stamp>,
}

impl Bans {
    /// The file named by `settings`, read at start; damage is an error.
    pub fn load(settings: &crate::config::hub::HubSettings) -> Result<Bans> {
        let path = crate::bans::path(settings);
        let first = stamp(&path);
        let file = crate::bans::read(&path)?;
        Ok(Bans {
            none: AtomicBool::new(file.bans.is_empty()),
            list: crate::swap::Swap::new(Listed::of(file)),
            path,
            reads: tokio::sync::watch::Sender::new(0),
            first,
        })
    }

    /// `Err(Banned)` if a ban in force turns `ip` away from `service`.
    pub fn check(&self, service: &str, ip: IpAddr) -> Result<(), Reason> {
        if self.none.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = crate::history::unix_now();
        match self.list.get().refuses(service, ip, now) {
            true => Err(Reason::Banned),
            false => Ok(()),
        }
    }

    fn set(&self, file: BanFile) {
        // The list before the flag: a door that sees "some" reads the new
        // list.
        let none = file.bans.is_empty();
        self.list.set(Listed::of(file));
        self.none.store(none, Ordering::Release);
    }
}

/// Closes `player`, just seated, if a ban in force names it: one admitted
/// at the door just before a new list was swapped in may have been seated
/// after that list's sweep. True if it was closed.
pub(super) fn seated(shared: &Shared, player: &Arc<Player>) -> bool {
    if shared
        .bans
        .check(player.service(), player.addr.ip())
        .is_ok()
    {
        return false;
    }
    shared
        .players
        .end_where(|p| std::ptr::eq(p, &**player), "banned")
        > 0
}

/// A player door's admission with the bans before its limits, so a
/// banned address spends none of the door's allowances.
pub(super) fn admit(
    shared: &Shared,
    service: &str,
    door: &Arc<super::admission::Door>,
    ip: IpAddr,
) -> Result<super::admission::Admitted, Reason> {
    shared.bans.check(service, ip)?;
    door.admit(ip)
}

/// What tells one version of the file from the next. Every write is a new
/// file renamed in, and the kernel's clock for file times is coarse (a
/// few ms): two quick writes of one length differ by their inode.
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    Some((m.modified().ok()?, m.len(), ino))
}

/// Follows the file the running settings name (a reload may move the
/// state folder).
pub(super) async fn watch(shared: Arc<Shared>) {
    let path: PathBuf = shared.bans.path.clone();
    // Read at start (`Bans::load`); kicks already there were written
    // before any of this hub's players arrived.
    let mut seen = shared.bans.first;
    let mut applied: HashSet<String> = shared
        .bans
        .list
        .get()
        .file
        .kicks
        .iter()
        .map(|k| k.id.clone())
        .collect();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        if now.is_none() {
            let lifted = shared.bans.list.get().file.bans.len();
            if lifted > 0 {
                tracing::warn!(file = %path.display(), lifted, "the ban list was removed: its bans are lifted");
            }
        }
        seen = now;
        match crate::bans::read(&path) {
            Ok(file) => apply(&shared, file, &mut applied),
            Err(e) => tracing::error!("keeping the previous ban list: {e:#}"),
        }
        shared.bans.reads.send_modify(|n| *n += 1);
    }
}

/// Takes `file` as the ban list: closes the players its bans name and,
/// once each, those its new kicks name.
fn apply(shared: &Shared, file: BanFile, applied: &mut HashSet<String>) {
    let now = crate::history::unix_now();
    let kicks: Vec<crate::bans::Kick> = file
        .kicks
        .iter()
        .filter(|k| !applied.contains(&k.id))
        .cloned()
        .collect();
    applied.retain(|id| file.kicks.iter().any(|k| &k.id == id));
    applied.extend(kicks.iter().map(|k| k.id.clone()));
    let count = file.in_force(now).count();
    // The list first, then the sweep: a player admitted in between is
    // caught when seated (`seated`), one seated before is swept.
    shared.bans.set(file.clone());
    let closed = shared
        .players
        .end_where(|p| file.refuses(p.service(), p.addr.ip(), now), "banned");
    tracing::info!(bans = count, players_closed = closed, "ban list reloaded");
    for k in kicks {
        // Those connected when it was written: one who came back since
        // (a kick is not a ban) stays.
        let kicked = shared.players.end_where(
            |p| p.since <= k.at && k.applies(p.service(), p.addr.ip()),
            "kicked",
        );
        tracing::info!(address = %k.address, service = k.service.as_deref().unwrap_or("all"), players_closed = kicked, "kick applied");
    }
}

/// The bans in force, for `/api/status`.
pub(super) fn status(shared: &Shared) -> serde_json::Value {
    let now = crate::history::unix_now();
    let list = shared.bans.list.get();
    let hide = shared
        .settings()
        .admin
        .as_ref()
        .is_some_and(|a| a.hide_addresses);
    list.file
        .in_force(now)
        .map(|b| {
            serde_json::json!({
                "address": if hide { b.address.masked() } else { b.address.to_string() },
                "service": b.service,
                "until": b.until,
                "since": b.since,
            })
        })
        .collect()
}
