//! The hub's ban list: `bans.json` in its state folder (where enrolment
//! keeps `invites.json`: `[enrol] state`, or the folder of `tls.ca`).
//! `ferry hub ban`, `unban` and `kick` write it; the running hub only
//! reads it, following it as it follows `crl.pem`, so banning needs no
//! write access to the hub through its admin door, which stays read-only.
//! Whoever may write the state folder may ban (SECURITY.md).
//!
//! A kick is not a state but an event, and the hub is not told of events:
//! it is written into the same file as an entry with a time and an id,
//! which the hub applies once, to the players connected by then, and which
//! later writes drop after `KICK_KEEP`. So a kick needs no second channel
//! into the hub, and a hub that was down when it was written does nothing
//! with it (it had no players then).
//!
//! Every change is a read, a change and a write under the file lock
//! `bans.lock` beside it, so two writers at once never lose an entry; the
//! file is replaced whole by a rename, so the hub never reads half of it.

use crate::config::hub::HubSettings;
use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

/// How long a written kick is kept for the hub to see: it applies it
/// within a second; the rest covers a hub busy or briefly stopped.
pub const KICK_KEEP: u64 = 60;
/// Kicks a file keeps: a script kicking an address after another cannot
/// grow it past what a hub reads (`MAX_BYTES`).
const MAX_KICKS: usize = 1_000;

/// The file's name in the state folder.
pub const FILE: &str = "bans.json";

/// An address or a network, as banned. IPv4-mapped IPv6 forms are kept as
/// IPv4 (players are matched in that form too), host bits are cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net(IpNet);

impl Net {
    pub fn parse(s: &str) -> Result<Net, String> {
        let t = s.trim();
        let net = t
            .parse::<IpNet>()
            .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                format!(
                    "{s:?} is not an address or CIDR network (e.g. \"203.0.113.7\", \
                     \"203.0.113.0/24\", \"2001:db8::/48\")"
                )
            })?;
        Ok(Net(crate::config::netlist::canonical(net).trunc()))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }

    /// The one address it names, if it is a single host.
    pub fn host(&self) -> Option<IpAddr> {
        (self.0.prefix_len() == self.0.max_prefix_len()).then(|| self.0.addr())
    }

    /// The network, canonical and with host bits cleared.
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// As a page with addresses hidden shows it: no narrower than an
    /// IPv4 /24 or an IPv6 /48 (a /40 of 6to4's, which holds an IPv4). A
    /// narrower ban says it is masked (`198.51.100.x`, as the players
    /// table shows an address), so it does not read as a ban of the whole
    /// network, which `unban` would not find.
    pub fn masked(&self) -> String {
        let widest = match self.0 {
            IpNet::V4(_) => 24,
            IpNet::V6(n) => crate::config::admin::shown_v6_prefix(n.addr()),
        };
        if self.0.prefix_len() <= widest {
            return self.0.trunc().to_string();
        }
        let shown = IpNet::new(self.0.addr(), widest).map(|n| n.trunc());
        match shown {
            Ok(IpNet::V4(n)) => {
                let [a, b, c, _] = n.addr().octets();
                format!("{a}.{b}.{c}.x")
            }
            Ok(n) => format!("{n} (narrower, masked)"),
            Err(_) => "?".into(),
        }
    }
}

impl fmt::Display for Net {
    /// A single host without its `/32` or `/128`, as the operator typed it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Net::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// One ban: players from `address` refused (and closed) on `service`, or
/// on every service, until `until` or for ever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    pub address: Net,
    /// None: every service.
    #[serde(default)]
    pub service: Option<String>,
    /// Unix seconds; None: until unbanned.
    #[serde(default)]
    pub until: Option<u64>,
    /// Unix seconds when it was written.
    pub since: u64,
}

impl Ban {
    /// Whether it turns `ip` away from `service` at `now` (unix seconds).
    pub fn applies(&self, service: &str, ip: IpAddr, now: u64) -> bool {
        self.until.is_none_or(|u| u > now)
            && self.service.as_deref().is_none_or(|s| s == service)
            && self.address.contains(ip)
    }
}

/// One kick: the players from `address` (on `service`, or every service)
/// connected at `at` are closed, once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kick {
    pub address: Net,
    #[serde(default)]
    pub service: Option<String>,
    /// Unix seconds when it was written.
    pub at: u64,
    /// Tells two kicks of one address in one second apart, so the hub
    /// applies each once.
    pub id: String,
}

impl Kick {
    pub fn applies(&self, service: &str, ip: IpAddr) -> bool {
        self.service.as_deref().is_none_or(|s| s == service) && self.address.contains(ip)
    }
}

/// The file as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanFile {
    #[serde(default)]
    pub bans: Vec<Ban>,
    #[serde(default)]
    pub kicks: Vec<Kick>,
}

impl BanFile {
    /// Whether some ban in force at `now` turns `ip` away from `service`.
    pub fn refuses(&self, service: &str, ip: IpAddr, now: u64) -> bool {
        self.bans.iter().any(|b| b.applies(service, ip, now))
    }

    /// The bans in force at `now`, in the order written.
    pub fn in_force(&self, now: u64) -> impl Iterator<Item = &Ban> {
        self.bans
            .iter()
            .filter(move |b| b.until.is_none_or(|u| u > now))
    }

    /// The bans in force at `now` as `/api/status` lists them, addresses
    /// masked with `hide`.
    pub fn listed(&self, now: u64, hide: bool) -> serde_json::Value {
        self.in_force(now)
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

    /// `listed`, with each ban naming a service `has` does not know
    /// marked `service_gone`: renamed or removed from hub.toml, it keeps
    /// nobody out until a service of that name is added again.
    pub fn listed_against(
        &self,
        now: u64,
        hide: bool,
        has: impl Fn(&str) -> bool,
    ) -> serde_json::Value {
        let gone = self.services_gone(now, has);
        let mut listed = self.listed(now, hide);
        for b in listed.as_array_mut().into_iter().flatten() {
            if b["service"]
                .as_str()
                .is_some_and(|s| gone.iter().any(|g| g == s))
            {
                b["service_gone"] = true.into();
            }
        }
        listed
    }

    /// The services that bans in force at `now` name and `has` does not
    /// know, sorted, each once.
    pub fn services_gone(&self, now: u64, has: impl Fn(&str) -> bool) -> Vec<String> {
        let mut gone: Vec<String> = self
            .in_force(now)
            .filter_map(|b| b.service.clone())
            .filter(|s| !has(s))
            .collect();
        gone.sort();
        gone.dedup();
        gone
    }

    /// Expired bans and kicks older than `KICK_KEEP` dropped, and past
    /// `MAX_KICKS` the oldest kicks (a running hub applied them within a
    /// second of their writing).
    fn prune(&mut self, now: u64) {
        self.bans.retain(|b| b.until.is_none_or(|u| u > now));
        self.kicks.retain(|k| k.at.saturating_add(KICK_KEEP) > now);
        let over = self.kicks.len().saturating_sub(MAX_KICKS);
        self.kicks.drain(..over);
    }
}

/// Where the hub of `settings` keeps its bans: the enrolment state folder,
/// which is the folder of `tls.ca` unless `[enrol] state` says otherwise.
pub fn path(settings: &HubSettings) -> PathBuf {
    let dir = match &settings.enrol {
        Some(e) => e.state.clone(),
        None => settings
            .tls_files
            .ca
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    dir.join(FILE)
}

/// The file at `path`; none there is an empty list. Damage is an error
/// naming the file.
pub fn read(path: &Path) -> Result<BanFile> {
    let file = read_any(path)?;
    anyhow::ensure!(
        file.bans.len() <= MAX_BANS,
        "{} holds {} bans, more than the {MAX_BANS} a hub takes",
        path.display(),
        file.bans.len()
    );
    Ok(file)
}

/// `read`, however many bans the file holds.
fn read_any(path: &Path) -> Result<BanFile> {
    let bytes = match crate::files::read_regular(path, MAX_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BanFile::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: BanFile = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is damaged (not the JSON `ferry hub ban` writes); fix it or remove it",
            path.display()
        )
    })?;
    Ok(file)
}

/// Bans a file may hold (the hub indexes them by network: a door's check
/// costs a lookup per prefix length banned, not one per ban).
pub const MAX_BANS: usize = 10_000;
/// Bytes a file may have (10,000 bans take about 1.3 MB).
const MAX_BYTES: u64 = 4 << 20;

/// Reads the file at `path`, lets `change` alter it (expired entries
/// dropped first) and writes it back, all under the lock: what `change`
/// returns.
pub fn change<T>(path: &Path, now: u64, change: impl FnOnce(&mut BanFile) -> T) -> Result<T> {
    let lock = path.with_file_name("bans.lock");
    let _held = crate::files::lock(&lock)?;
    // A file over the count a hub takes (edited by hand) can still be
    // brought towards it here: a change that removes bans is written.
    let mut file = read_any(path)?;
    file.prune(now);
    let before = file.bans.len();
    let out = change(&mut file);
    let after = file.bans.len();
    anyhow::ensure!(
        after <= MAX_BANS || after < before,
        "{} would hold {after} bans, more than the {MAX_BANS} a hub takes: ban a network, or unban some",
        path.display(),
    );
    let bytes = serde_json::to_vec_pretty(&file)?;
    // Not secret (addresses, times), and readable by a hub running as
    // another user than the one who banned; who may *write* it is the
    // folder's business.
    crate::files::write_file(path, &bytes, 0o644, true)?;
    // Written, but a hub still will not take it: said as an error, since
    // the hub goes on with the list it had (and the change is not in it).
    anyhow::ensure!(
        after <= MAX_BANS,
        "wrote {}, but it still holds {after} bans, more than the {MAX_BANS} a hub takes: \
         a running hub keeps the list it had until {} more are unbanned",
        path.display(),
        after - MAX_BANS
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nets_are_canonical_and_match_mapped_players() {
        let n = Net::parse("::ffff:203.0.113.7").unwrap();
        assert_eq!(n.to_string(), "203.0.113.7");
        assert!(n.contains(ip("203.0.113.7")));
        assert!(n.contains(ip("::ffff:203.0.113.7")));
        assert!(!n.contains(ip("203.0.113.8")));
        let n = Net::parse("203.0.113.9/24").unwrap();
        assert_eq!(n.to_string(), "203.0.113.0/24");
        assert!(n.contains(ip("::ffff:203.0.113.200")));
        let v6 = Net::parse("2001:db8::1").unwrap();
        assert!(v6.contains(ip("2001:db8::1")));
        assert!(!v6.contains(ip("2001:db8::2")));
        assert!(
            Net::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db8:1::5"))
        );
        assert!(Net::parse("nope").unwrap_err().contains("\"nope\""));
        assert!(Net::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn bans_expire_and_limit_to_a_service() {
        let f = BanFile {
            bans: vec![
                Ban {
                    address: Net::parse("10.0.0.1").unwrap(),
                    service: Some("web".into()),
                    until: Some(100),
                    since: 0,
                },
                Ban {
                    address: Net::parse("10.0.1.0/24").unwrap(),
                    service: None,
                    until: None,
                    since: 0,
                },
            ],
            kicks: vec![],
        };
        assert!(f.refuses("web", ip("10.0.0.1"), 99));
        assert!(!f.refuses("web", ip("10.0.0.1"), 100));
        assert!(!f.refuses("game", ip("10.0.0.1"), 99));
        assert!(f.refuses("game", ip("10.0.1.9"), u64::MAX - 1));
        assert_eq!(f.in_force(100).count(), 1);
    }

    #[test]
    fn a_fifo_or_a_huge_file_in_its_place_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        if made.is_ok_and(|s| s.success()) {
            let e = format!("{:#}", read(&path).unwrap_err());
            assert!(e.contains("not a regular file"), "{e}");
            std::fs::remove_file(&path).unwrap();
        }
        std::fs::write(&path, vec![b' '; (MAX_BYTES + 1) as usize]).unwrap();
        let e = format!("{:#}", read(&path).unwrap_err());
        assert!(e.contains("more than"), "{e}");
    }

    /// A file over the count a hub takes (edited by hand) can be brought
    /// under it with `unban`, which used to refuse to read it; a ban is
    /// still refused.
    #[test]
    fn a_file_over_the_count_can_be_unbanned_back_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let ban = |i: usize| Ban {
            address: Net::parse(&format!("10.{}.{}.1", i / 256, i % 256)).unwrap(),
            service: None,
            until: None,
            since: 1,
        };
        let over = BanFile {
            bans: (0..MAX_BANS + 2).map(ban).collect(),
            ..Default::default()
        };
        std::fs::write(&path, serde_json::to_vec(&over).unwrap()).unwrap();
        assert!(read(&path).is_err(), "a hub does not take it");
        let more = change(&path, 10, |f| f.bans.push(ban(MAX_BANS + 5)));
        assert!(format!("{:#}", more.unwrap_err()).contains("more than"));
        let same = change(&path, 10, |f| f.bans[0].until = Some(99));
        assert!(format!("{:#}", same.unwrap_err()).contains("more than"));
        let still = change(&path, 10, |f| f.bans.truncate(MAX_BANS + 1));
        let e = format!("{:#}", still.unwrap_err());
        assert!(e.contains("keeps the list it had until 1 more"), "{e}");
        change(&path, 10, |f| f.bans.truncate(MAX_BANS - 1)).unwrap();
        assert_eq!(read(&path).unwrap().bans.len(), MAX_BANS - 1);
    }

    #[test]
    fn masked_networks_are_no_narrower_than_a_24_or_a_48() {
        let m = |s: &str| Net::parse(s).unwrap().masked();
        // Narrower than shown: said masked, not shown as a ban of the
        // network (`unban 203.0.113.0/24` would find nothing).
        assert_eq!(m("203.0.113.7"), "203.0.113.x");
        assert_eq!(m("203.0.113.0/28"), "203.0.113.x");
        assert_eq!(m("203.0.113.0/24"), "203.0.113.0/24");
        assert_eq!(m("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(m("2001:db8:1:2::9"), "2001:db8:1::/48 (narrower, masked)");
        assert_eq!(m("2001:db8::/32"), "2001:db8::/32");
    }

    #[test]
    fn damage_is_named_and_writers_keep_each_other_s_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert_eq!(read(&path).unwrap(), BanFile::default());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    change(&path, 1, |f| {
                        f.bans.push(Ban {
                            address: Net::parse(&format!("10.0.0.{i}")).unwrap(),
                            service: None,
                            until: None,
                            since: 1,
                        })
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(read(&path).unwrap().bans.len(), 8);
        std::fs::write(&path, "{ not json").unwrap();
        let e = format!("{:#}", read(&path).unwrap_err());
        assert!(e.contains(&path.display().to_string()), "{e}");
        std::fs::write(&path, r#"{"bans":[{"address":"x","since":1}]}"#).unwrap();
        let e = format!("{:#}", read(&path).unwrap_err());
        assert!(e.contains("\"x\" is not an address"), "{e}");
    }
}
