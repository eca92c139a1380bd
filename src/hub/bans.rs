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
    time::{Duration, Instant, SystemTime},
};

/// How long a kick applied still closes a player seated after it who had
/// connected before it: well over a game door's wait for a handshake.
const KICKS_KEPT: Duration = Duration::from_secs(60);

/// How often the file's modification time is looked at: well under the
/// second a ban promises, and a stat is cheap.
pub const POLL: Duration = Duration::from_millis(250);

/// The file as read, with its bans indexed by the network each names: a
/// door looks up its address's network at each prefix length some ban
/// uses (a few), never at every ban (UDP asks per datagram, and a list may
/// hold `MAX_BANS`).
struct Listed {
    file: BanFile,
    by_net: HashMap<ipnet::IpNet, Vec<usize>>,
    /// The prefix lengths banned, IPv4 and IPv6.
    lens: (Vec<u8>, Vec<u8>),
}

impl Listed {
    fn of(file: BanFile) -> Listed {
        let mut by_net = HashMap::<ipnet::IpNet, Vec<usize>>::new();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (i, b) in file.bans.iter().enumerate() {
            let net = b.address.net();
            by_net.entry(net).or_default().push(i);
            match net {
                ipnet::IpNet::V4(n) => v4.push(n.prefix_len()),
                ipnet::IpNet::V6(n) => v6.push(n.prefix_len()),
            }
        }
        for lens in [&mut v4, &mut v6] {
            lens.sort_unstable();
            lens.dedup();
        }
        Listed {
            file,
            by_net,
            lens: (v4, v6),
        }
    }

    fn refuses(&self, service: &str, ip: IpAddr, now: u64) -> bool {
        let ip = ip.to_canonical();
        let lens = match ip {
            IpAddr::V4(_) => &self.lens.0,
            IpAddr::V6(_) => &self.lens.1,
        };
        lens.iter()
            .filter_map(|&len| ipnet::IpNet::new(ip, len).ok())
            .filter_map(|net| self.by_net.get(&net.trunc()))
            .flatten()
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
    /// The kicks applied lately, and when (`kicked`).
    kicks: std::sync::Mutex<Vec<(crate::bans::Kick, Instant)>>,
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
            kicks: Default::default(),
            reads: tokio::sync::watch::Sender::new(0),
            first,
        })
    }

    /// Whether a kick this hub applied after a player arrived (`since`,
    /// Unix seconds, and `arrived`) names `ip` on `service`: the sweep
    /// closed the players seated then, and this finds one that was still
    /// in a game door's handshake. The same rule as the sweep's: connected
    /// when the kick was written (a kick applied late, after the file was
    /// out of reach for a while, spares who came back since).
    fn kicked(&self, service: &str, ip: IpAddr, (since, arrived): (u64, Instant)) -> bool {
        let recent = self.kicks.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .any(|(k, at)| since <= k.at && arrived <= *at && k.applies(service, ip))
    }

    /// Remembers `kicks`, applied now, for `kicked`; those applied longer
    /// ago than any handshake lasts are forgotten.
    fn applying(&self, kicks: &[crate::bans::Kick]) {
        let now = Instant::now();
        let mut recent = self.kicks.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|(_, at)| now.duration_since(*at) < KICKS_KEPT);
        recent.extend(kicks.iter().map(|k| (k.clone(), now)));
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

/// Closes `player`, just seated, if a ban in force names it, or a kick
/// written since it connected: one admitted at the door just before a new
/// list was swapped in may have been seated after that list's sweep, and a
/// game door's player is seated only after its handshake. True if it was
/// closed.
pub(super) fn seated(shared: &Shared, player: &Arc<Player>) -> bool {
    let (service, ip) = (player.service(), player.addr.ip());
    let why = if shared.bans.check(service, ip).is_err() {
        "banned"
    } else if shared
        .bans
        .kicked(service, ip, (player.since, player.started))
    {
        "kicked"
    } else {
        return false;
    };
    shared
        .players
        .end_where(|p| std::ptr::eq(p, &**player), why)
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

/// `admit`'s first half, for a connection read before it takes a place
/// (`Door::knock`).
pub(super) fn knock(
    shared: &Shared,
    service: &str,
    door: &Arc<super::admission::Door>,
    ip: IpAddr,
) -> Result<super::admission::Knocked, Reason> {
    shared.bans.check(service, ip)?;
    door.knock(ip)
}

/// `admit`'s second half: a ban written while the connection was read
/// still turns it away.
pub(super) fn seat(
    shared: &Shared,
    service: &str,
    (ip, knocked): (IpAddr, super::admission::Knocked),
    slot: Option<super::admission::CapSlot>,
) -> Result<super::admission::Admitted, Reason> {
    shared.bans.check(service, ip)?;
    knocked.seat(slot)
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

/// Follows the file found at start (`Bans::path`), through the drain too:
/// a ban or kick written while players finish still closes theirs. Ends
/// when the last of them has (or at the hard stop). Holds the hub weakly
/// between looks: a stopped hub frees its sockets at once.
pub(super) async fn watch(shared: Arc<Shared>) {
    let path: PathBuf = shared.bans.path.clone();
    // The folder as it was at start: the same path holding another folder
    // (a volume unmounted leaves its empty mount point) is not "no bans".
    let at_start = folder_id(folder_of(&path));
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
    let (hard_stop, tracker) = (shared.hard_stop.clone(), shared.tracker.clone());
    let weak = Arc::downgrade(&shared);
    drop(shared);
    // The last read's failure, logged once.
    let mut failed: Option<String> = None;
    // The file was missing at the last look.
    let mut missing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = hard_stop.cancelled() => return,
            // Closed at the start of the drain, empty once players are gone.
            _ = tracker.wait() => return,
        }
        let Some(shared) = weak.upgrade() else { return };
        let now = stamp(&path);
        if now == seen {
            missing = false;
            continue;
        }
        // Missing at one look is not yet removed: an editor's save (vim's,
        // emacs's) moves the file aside before it writes the new one, and
        // every ban would be lifted until the next look.
        if now.is_none() && !std::mem::replace(&mut missing, true) {
            shared.bans.reads.send_modify(|n| *n += 1);
            continue;
        }
        missing = false;
        match read(&path, now.is_none(), at_start) {
            Ok(file) => {
                // Read as empty with no stamp: the file is gone (one that
                // cannot be looked at fails to read instead).
                let lifted = shared.bans.list.get().file.bans.len();
                if now.is_none() && lifted > 0 {
                    tracing::warn!(file = %path.display(), lifted, "the ban list was removed: its bans are lifted");
                }
                (seen, failed) = (now, None);
                apply(&shared, file, &mut applied);
            }
            Err(e) => {
                let why = format!("{e:#}");
                if failed.as_ref() != Some(&why) {
                    tracing::error!("keeping the previous ban list: {why}");
                }
                if !read_again(&e) {
                    seen = now;
                }
                failed = Some(why);
            }
        }
        shared.bans.reads.send_modify(|n| *n += 1);
    }
}

/// The list at `path`, which may be `missing`. The state folder itself
/// gone or replaced (a volume unmounted, a folder moved) is not "no bans":
/// an error, looked at again at each poll, as a failed read is.
fn read(path: &Path, missing: bool, at_start: Option<(u64, u64)>) -> Result<BanFile> {
    let folder = folder_of(path);
    if missing && at_start.is_some() && folder_id(folder) != at_start {
        return Err(anyhow::anyhow!(std::io::Error::other(format!(
            "{} is not the folder the hub started with (gone, moved or unmounted)",
            folder.display()
        ))));
    }
    crate::bans::read(path)
}

/// The folder `path` is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Which folder is at `folder` now (its device and inode), if any.
fn folder_id(folder: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(folder).ok().filter(|m| m.is_dir())?;
    Some((m.dev(), m.ino()))
}

/// Whether a failed read is tried again at the next look rather than at
/// the file's next version. A damaged file waits for its next version; a
/// read that failed (the file's mode, a full descriptor table) is tried
/// again, since what fixes it may leave the file's stamp as it was
/// (`chmod`), and the new list must not wait for an unrelated write.
fn read_again(e: &anyhow::Error) -> bool {
    e.root_cause().is::<std::io::Error>()
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
    let listed: HashSet<&str> = file.kicks.iter().map(|k| k.id.as_str()).collect();
    applied.retain(|id| listed.contains(id.as_str()));
    applied.extend(kicks.iter().map(|k| k.id.clone()));
    let count = file.in_force(now).count();
    shared.bans.applying(&kicks);
    // The list first, then the sweep: a player admitted in between is
    // caught when seated (`seated`), one seated before is swept.
    shared.bans.set(file);
    let list = shared.bans.list.get();
    let closed = shared
        .players
        .end_where(|p| list.refuses(p.service(), p.addr.ip(), now), "banned");
    tracing::info!(bans = count, players_closed = closed, "ban list reloaded");
    let gone = gone_services(shared);
    if !gone.is_empty() {
        tracing::warn!("{}", gone_note(&gone));
    }
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

/// The services bans in force name that hub.toml does not have (now).
pub(super) fn gone_services(shared: &Shared) -> Vec<String> {
    let settings = shared.settings();
    let list = shared.bans.list.get();
    list.file.services_gone(crate::history::unix_now(), |s| {
        settings.service(s).is_some()
    })
}

/// What bans of services no longer in hub.toml mean, for a log line.
pub(super) fn gone_note(gone: &[String]) -> String {
    format!(
        "bans name services hub.toml no longer has ({}): they keep nobody out (a renamed \
         service's bans do not follow it: ban again with its new name, `ferry hub unban` the old)",
        gone.join(", ")
    )
}

/// The bans in force, for `/api/status`; one naming a service hub.toml
/// no longer has (renamed, removed) is marked `service_gone`: it keeps
/// nobody out until a service of that name is added again.
pub(super) fn status(shared: &Shared) -> serde_json::Value {
    let settings = shared.settings();
    let hide = settings.admin.as_ref().is_some_and(|a| a.hide_addresses);
    let list = shared.bans.list.get();
    let now = crate::history::unix_now();
    list.file
        .listed_against(now, hide, |s| settings.service(s).is_some())
}

#[cfg(test)]
mod tests {
    use crate::bans::{Ban, BanFile, Net};

    fn ban(address: &str, service: Option<&str>, until: Option<u64>) -> Ban {
        Ban {
            address: Net::parse(address).unwrap(),
            service: service.map(String::from),
            until,
            since: 0,
        }
    }

    /// The index answers as a look at every ban does.
    #[test]
    fn the_indexed_list_refuses_exactly_whom_the_file_does() {
        let file = BanFile {
            bans: vec![
                ban("192.0.2.7", None, None),
                ban("198.51.100.0/24", Some("game"), None),
                ban("203.0.113.0/25", None, Some(100)),
                ban("::ffff:10.1.2.0/120", None, None),
                ban("2001:db8:1::/48", None, None),
                ban("2001:db8:2::5", Some("web"), None),
            ],
            kicks: vec![],
        };
        let listed = super::Listed::of(file.clone());
        let addresses = [
            "192.0.2.7",
            "192.0.2.8",
            "::ffff:192.0.2.7",
            "198.51.100.200",
            "203.0.113.1",
            "203.0.113.200",
            "10.1.2.3",
            "10.1.3.3",
            "2001:db8:1:ffff::1",
            "2001:db8:2::5",
            "2001:db8:2::6",
        ];
        for ip in addresses {
            let ip = ip.parse().unwrap();
            for service in ["game", "web"] {
                for now in [50, 150] {
                    assert_eq!(
                        listed.refuses(service, ip, now),
                        file.refuses(service, ip, now),
                        "{ip} {service} at {now}"
                    );
                }
            }
        }
        let everyone = super::Listed::of(BanFile {
            bans: vec![ban("0.0.0.0/0", None, None)],
            kicks: vec![],
        });
        assert!(everyone.refuses("game", "203.0.113.9".parse().unwrap(), 0));
        assert!(!everyone.refuses("game", "2001:db8::1".parse().unwrap(), 0));
    }

    #[test]
    fn a_failed_read_is_tried_again_and_a_damaged_file_waits_for_its_next_version() {
        let dir = std::env::temp_dir().join(format!("ferry-bans-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bans.json")).unwrap();
        // A folder where the file should be fails to read, as a file the
        // hub may not read does (as root, modes cannot make one here).
        let unreadable = crate::bans::read(&dir.join("bans.json")).unwrap_err();
        assert!(super::read_again(&unreadable), "{unreadable:#}");
        std::fs::write(dir.join("damaged.json"), b"{\"bans\": [").unwrap();
        let damaged = crate::bans::read(&dir.join("damaged.json")).unwrap_err();
        assert!(!super::read_again(&damaged), "{damaged:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
