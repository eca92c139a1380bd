//! `ep.toml`: which hub to reach, how to prove who we are, what we serve.

use super::{
    ConfigError, Seconds, TlsFiles, check_err, check_range, check_service_name, join_host_port,
    ports::{LocalRange, ServiceKind},
    split_host_port,
};
use crate::secret::Secret;
use anyhow::Result;
use figment::value::magic::RelativePathBuf;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpConfig {
    /// The hub's control port, `host:port` (one hub; `[[hubs]]` for several).
    pub hub: Option<String>,
    /// The hub's channel port; default: same host, control port + 1.
    pub channel: Option<String>,
    /// "auto" (QUIC when the hub offers it and it works, else TLS over
    /// TCP), "quic" or "tls"; with `[[hubs]]`, the default for each.
    pub transport: Option<Transport>,
    /// The hub's QUIC port, `host:port`; default: what the hub says at
    /// login, or the host of `hub` with its port + 2.
    pub quic: Option<String>,
    /// Name checked against the hub's certificate; default: the host of `hub`.
    pub server_name: Option<String>,
    /// Several hubs, each served at once through its own session.
    #[serde(default)]
    pub hubs: Vec<HubConfig>,
    pub token: Option<Secret>,
    /// A file holding the token (first line), instead of `token`.
    pub token_file: Option<RelativePathBuf>,
    pub tls: TlsFiles,
    #[serde(default)]
    pub services: BTreeMap<String, EpServiceConfig>,
    /// Players (and UDP flows) at once per service: what the hub can make
    /// this machine open, whatever it asks.
    #[serde(default = "defaults::max_players")]
    pub max_players: usize,
    /// Deadline for reaching the hub (TCP, TLS and login) and the local service.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Seconds,
    /// First reconnect delay; doubles per failure up to `backoff_max`.
    #[serde(default = "defaults::backoff_min")]
    pub backoff_min: Seconds,
    #[serde(default = "defaults::backoff_max")]
    pub backoff_max: Seconds,
    /// With `transport = "auto"`, how long after QUIC failed the ep tries
    /// it again (a session over TLS moves to QUIC once it answers).
    #[serde(default = "defaults::quic_retry")]
    pub quic_retry: Seconds,
    /// On shutdown, active players get this long to finish.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Seconds,
    /// The admin door (metrics, status page); absent: none.
    pub admin: Option<super::admin::AdminConfig>,
    #[serde(default)]
    pub log_format: super::admin::LogFormat,
    /// Reload when the file changes (SIGHUP always reloads).
    #[serde(default = "defaults::watch_config")]
    pub watch_config: bool,
    /// Slow a player sending bulk from home while the path to the hub
    /// queues, so other players' packets do not wait behind it in the
    /// home router (`uplink_guard`); on unless set false.
    #[serde(default = "defaults::uplink_guard")]
    pub uplink_guard: bool,
    #[serde(skip)]
    pub flags: EpFlags,
}

/// One `[[hubs]]` table: the keys a single hub has at the top level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub hub: String,
    pub channel: Option<String>,
    pub transport: Option<Transport>,
    pub quic: Option<String>,
    pub server_name: Option<String>,
}

/// A hub the ep serves, checked: where its doors are and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct HubTarget {
    /// The control port as written; also the hub's name in logs, the
    /// status page and the metrics' `hub` label.
    pub hub: String,
    pub channel: String,
    pub transport: Transport,
    /// The hub's QUIC address if set (`quic`), else derived at login.
    pub quic: Option<String>,
    pub server_name: ServerName<'static>,
}

/// More hubs than this is a mistake, not a deployment: each is a session,
/// a socket and a share of every player's channels.
const MAX_HUBS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpServiceConfig {
    /// The real service at home, `host:port` or `host:first-last`.
    pub local: String,
    /// Repeats the hub's `type`; a mismatch is refused at login.
    #[serde(rename = "type")]
    pub kind: Option<ServiceKind>,
    /// Tell the service each player's real address with a PROXY header.
    pub proxy_protocol: Option<crate::proxy_header::Version>,
    /// For UDP services: the header on the `first` datagram of each flow
    /// (the default) or on `every` one.
    pub proxy_protocol_udp: Option<UdpHeaders>,
    /// Players (and UDP flows) at once on this service; overrides the
    /// top-level `max_players`.
    pub max_players: Option<usize>,
    /// A command (argv, no shell) that starts the service when a player
    /// finds it not answering: `["systemctl", "start", "minecraft"]`, or
    /// `["wakeonlan", "MAC"]` for a PC that is switched off.
    pub wake: Option<Vec<String>>,
    /// How long a woken service has to answer; players wait that long.
    pub wake_timeout: Option<Seconds>,
    /// A command that stops the service again after `sleep_after` with
    /// no player.
    pub sleep: Option<Vec<String>>,
    pub sleep_after: Option<Seconds>,
}

/// How the ep reaches the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Auto,
    Quic,
    Tls,
}

/// Where UDP flows carry the PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpHeaders {
    First,
    Every,
}

/// A service at home as the ep dials it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalService {
    pub addr: LocalRange,
    /// As written in ep.toml, if it was; the hub's `type` decides.
    pub kind: Option<ServiceKind>,
    pub proxy_protocol: Option<crate::proxy_header::Version>,
    pub proxy_protocol_udp: UdpHeaders,
    /// Players (and UDP flows) at once; more are refused here.
    pub max_players: usize,
    /// Starting the service on demand, and stopping it when idle.
    pub wake: Option<Wake>,
}

impl LocalService {
    /// Whether `self` is the same service at home as `was`: the same
    /// ports, spoken the same way. What was found of one (its last dial,
    /// whether it sleeps) says nothing of another.
    pub fn same_place(&self, was: &LocalService) -> bool {
        self.addr == was.addr && self.kind == was.kind
    }
}

/// `wake`, `wake_timeout`, `sleep` and `sleep_after` of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Wake {
    pub command: Vec<String>,
    pub timeout: Duration,
    /// The command that stops it and the idle time before it runs.
    pub sleep: Option<(Vec<String>, Duration)>,
}

mod defaults {
    use super::Seconds;
    /// Each player holds a socket at home and a channel (another socket
    /// over TLS): 8,192 per service is far above a game's or a home web
    /// app's players, and inside the open-file limit the ep raises itself
    /// to at start (the hard limit, commonly 524,288 or more).
    pub fn max_players() -> usize {
        8192
    }
    pub fn watch_config() -> bool {
        true
    }
    pub fn uplink_guard() -> bool {
        true
    }
    pub fn connect_timeout() -> Seconds {
        Seconds::secs(10)
    }
    pub fn backoff_min() -> Seconds {
        Seconds::millis(500)
    }
    pub fn backoff_max() -> Seconds {
        Seconds::secs(30)
    }
    pub fn quic_retry() -> Seconds {
        Seconds::secs(300)
    }
    pub fn drain_timeout() -> Seconds {
        Seconds::secs(10)
    }
}

/// Every key path `FERRY_…` / `FERRY_EP_…` variables may set.
const KEYS: &[&str] = &[
    "hub",
    "channel",
    "transport",
    "quic",
    "server_name",
    "token",
    "token_file",
    "tls.ca",
    "tls.cert",
    "tls.key",
    "services.*.local",
    "services.*.type",
    "services.*.proxy_protocol",
    "services.*.proxy_protocol_udp",
    "services.*.max_players",
    "services.*.wake",
    "services.*.wake_timeout",
    "services.*.sleep",
    "services.*.sleep_after",
    "max_players",
    "connect_timeout",
    "backoff_min",
    "backoff_max",
    "quic_retry",
    "drain_timeout",
    "admin.bind",
    "admin.token_hash",
    "admin.token_hash_file",
    "admin.hide_addresses",
    "log_format",
    "watch_config",
    "uplink_guard",
];

#[derive(Debug, Default, Clone, Serialize)]
pub struct EpFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct EpTiming {
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub quic_retry: Duration,
    pub drain_timeout: Duration,
}

/// A checked ep configuration.
#[derive(Clone)]
pub struct EpSettings {
    pub file: PathBuf,
    /// Every hub served, in the order written; never empty.
    pub hubs: Vec<HubTarget>,
    /// Empty until `ep::load` reads it, when it is kept in `token_file`.
    pub token: Secret,
    pub token_file: Option<PathBuf>,
    /// Said by `check` and logged at start, found while reading the files
    /// (`ep::read_files`).
    pub file_warnings: Vec<String>,
    /// The CA, certificate and key under `[tls]`, loaded by `tls::EpTls`.
    pub tls_files: super::TlsPaths,
    /// Service name → the service at home.
    pub services: BTreeMap<String, LocalService>,
    pub timing: EpTiming,
    pub admin: Option<super::admin::AdminSettings>,
    pub log_format: super::admin::LogFormat,
    pub watch_config: bool,
    /// Read as each player starts: a reload reaches players to come.
    pub uplink_guard: bool,
    /// The flags this was loaded with, re-applied on reload.
    pub flags: EpFlags,
}

impl EpConfig {
    pub fn load(path: &Path, flags: EpFlags) -> Result<Self, ConfigError> {
        let mut c: EpConfig = super::load(path, KEYS, "FERRY_EP_", flags.clone())?;
        c.flags = flags;
        Ok(c)
    }

    /// Loads and checks `s.file` again with the flags `s` was loaded with;
    /// and the files the new configuration names besides itself (none if
    /// it does not parse): a reload refused for one of them (not there
    /// yet) is tried again when it changes.
    pub fn reload_naming(s: &EpSettings) -> (Vec<PathBuf>, Result<EpSettings>) {
        match EpConfig::load(&s.file, s.flags.clone()) {
            Ok(c) => (c.named(), c.check(&s.file)),
            Err(e) => (Vec::new(), Err(e.into())),
        }
    }

    /// The files this configuration names.
    fn named(&self) -> Vec<PathBuf> {
        let t = self.tls.paths();
        let mut files = vec![t.ca, t.cert, t.key];
        files.extend(self.token_file.as_ref().map(|f| f.relative()));
        let admin = self.admin.as_ref().and_then(|a| a.token_hash_file.as_ref());
        files.extend(admin.map(|f| f.relative()));
        files
    }

    pub fn check(mut self, file: &Path) -> Result<EpSettings> {
        let err = checker(file);
        let hubs = self.hub_targets(file)?;
        let (token, token_file) = self.token(file)?;
        let services = self.local_services(file)?;
        if self.tls.crl.is_some() {
            return Err(err(
                "tls.crl is a hub setting; the ep does not read it".into()
            ));
        }
        let tls_files = self.tls.paths();
        self.check_timings(file)?;
        let admin = match self.admin.take() {
            Some(a) => Some(a.check().map_err(err)?),
            None => None,
        };
        Ok(EpSettings {
            file: file.to_path_buf(),
            timing: self.timing(),
            hubs,
            token,
            token_file,
            file_warnings: Vec::new(),
            tls_files,
            services,
            admin,
            log_format: self.log_format,
            watch_config: self.watch_config,
            uplink_guard: self.uplink_guard,
            flags: self.flags,
        })
    }

    /// The hubs: the top-level keys (one hub) or `[[hubs]]` (several),
    /// not both.
    fn hub_targets(&mut self, file: &Path) -> Result<Vec<HubTarget>> {
        let err = checker(file);
        let default = self.transport.unwrap_or_default();
        if self.hubs.is_empty() {
            let Some(hub) = self.hub.take() else {
                return Err(err(
                    "no hub: set hub = \"host:port\" (or FERRY_HUB), or a [[hubs]] table per hub"
                        .into(),
                ));
            };
            let one = HubConfig {
                hub,
                channel: self.channel.take(),
                transport: self.transport,
                quic: self.quic.take(),
                server_name: self.server_name.take(),
            };
            return Ok(vec![hub_target(one, default, "").map_err(err)?]);
        }
        let top = [
            ("hub", self.hub.is_some()),
            ("channel", self.channel.is_some()),
            ("quic", self.quic.is_some()),
            ("server_name", self.server_name.is_some()),
        ];
        if let Some((key, _)) = top.iter().find(|(_, set)| *set) {
            return Err(err(format!(
                "{key} is set at the top level (in the file, a FERRY_ variable or a flag) and [[hubs]] is there too: with several hubs, give {key} inside each [[hubs]] table"
            )));
        }
        if self.hubs.len() > MAX_HUBS {
            return Err(err(format!(
                "{} [[hubs]]: at most {MAX_HUBS}",
                self.hubs.len()
            )));
        }
        let mut targets: Vec<HubTarget> = Vec::new();
        for (i, h) in std::mem::take(&mut self.hubs).into_iter().enumerate() {
            let t = hub_target(h, default, &format!("hubs[{i}].")).map_err(err)?;
            if targets.iter().any(|o| same_place(&o.hub, &t.hub)) {
                return Err(err(format!(
                    "hubs[{i}].hub = {:?} is named twice; each hub once",
                    t.hub
                )));
            }
            targets.push(t);
        }
        Ok(targets)
    }

    /// The token written here, or the `token_file` it is kept in (read
    /// when the settings are loaded, by `ep::load`); exactly one, and a
    /// token written here not empty.
    fn token(&mut self, file: &Path) -> Result<(Secret, Option<PathBuf>)> {
        let err = checker(file);
        let token = match (self.token.take(), self.token_file.take()) {
            (Some(t), None) => t,
            (None, Some(path)) => return Ok((Secret::new(""), Some(path.relative()))),
            (Some(_), Some(_)) => return Err(err("set token or token_file, not both".into())),
            (None, None) => {
                return Err(err(
                    "no token: set token, token_file or FERRY_TOKEN (from `ferry hub token`)"
                        .into(),
                ));
            }
        };
        if token.is_empty() {
            return Err(err("the token is empty".into()));
        }
        super::token_too_long(&token).map_err(|e| err(format!("token: {e}")))?;
        Ok((token, None))
    }

    /// The services at home, each with a valid address. None is allowed
    /// (an ep enrolled with an invite that granted nothing yet): it logs
    /// in and serves nothing until a service is added, which a reload
    /// announces; start-up warns.
    fn local_services(&mut self, file: &Path) -> Result<BTreeMap<String, LocalService>> {
        let err = checker(file);
        if self.services.is_empty() {
            tracing::warn!(
                file = %file.display(),
                "no [services.NAME] with local = \"host:port\": the ep logs in and serves \
                 nothing until one is added (the file is followed)"
            );
        }
        let mut services = BTreeMap::new();
        for (name, svc) in std::mem::take(&mut self.services) {
            check_service_name(&name).map_err(err)?;
            let addr = LocalRange::parse(&svc.local)
                .map_err(|e| err(format!("services.{name}.local: {e}")))?;
            let wake = wake(&name, &svc).map_err(&err)?;
            let max_players = svc.max_players.unwrap_or(self.max_players);
            if max_players == 0 {
                return Err(err(format!(
                    "services.{name}: max_players = 0 admits nobody; at least 1"
                )));
            }
            services.insert(
                name,
                LocalService {
                    addr,
                    kind: svc.kind,
                    proxy_protocol: svc.proxy_protocol,
                    proxy_protocol_udp: svc.proxy_protocol_udp.unwrap_or(UdpHeaders::First),
                    max_players,
                    wake,
                },
            );
        }
        Ok(services)
    }

    fn check_timings(&self, file: &Path) -> Result<()> {
        let err = checker(file);
        let (ms, secs) = (Duration::from_millis, Duration::from_secs);
        let ranges = [
            ("connect_timeout", self.connect_timeout, ms(100), secs(300)),
            ("backoff_min", self.backoff_min, ms(10), secs(3600)),
            ("backoff_max", self.backoff_max, ms(10), secs(3600)),
            ("quic_retry", self.quic_retry, secs(1), secs(86400)),
            ("drain_timeout", self.drain_timeout, ms(0), secs(3600)),
        ];
        for (key, value, min, max) in ranges {
            check_range(key, value.get(), min, max).map_err(err)?;
        }
        if self.backoff_max.get() < self.backoff_min.get() {
            return Err(err(format!(
                "backoff_max = {:?} is out of range: allowed backoff_min ({:?}) to 1h",
                self.backoff_max, self.backoff_min
            )));
        }
        Ok(())
    }

    fn timing(&self) -> EpTiming {
        EpTiming {
            connect_timeout: self.connect_timeout.get(),
            backoff_min: self.backoff_min.get(),
            backoff_max: self.backoff_max.get(),
            quic_retry: self.quic_retry.get(),
            drain_timeout: self.drain_timeout.get(),
        }
    }
}

impl EpSettings {
    /// A line for an admin token hash weaker than `ferry hub token` makes,
    /// and for what reading the files found: printed by `check`, logged at
    /// start.
    pub fn hash_warnings(&self) -> Vec<String> {
        self.admin
            .iter()
            .filter_map(|a| a.token_hash.as_deref())
            .filter_map(super::hash_weakness)
            .map(|w| format!("admin.token_hash is {w}"))
            .chain(self.file_warnings.iter().cloned())
            .collect()
    }
}

/// Whether two `host:port` name one place: names compared without case,
/// addresses by value (`[2001:db8::1]` and `[2001:0db8::1]` alike).
fn same_place(a: &str, b: &str) -> bool {
    let key = |s: &str| {
        split_host_port(s).ok().map(|(host, port)| {
            let host = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => host.to_ascii_lowercase(),
            };
            (host, port)
        })
    };
    key(a).is_some() && key(a) == key(b)
}

/// One hub's addresses checked: the channel address (given or derived from
/// `hub`) and the name the hub's certificate must carry; `quic` is only
/// checked for form. `at` prefixes keys in messages (`hubs[1].`).
fn hub_target(
    h: HubConfig,
    default: Transport,
    at: &str,
) -> std::result::Result<HubTarget, String> {
    let (host, port) = split_host_port(&h.hub).map_err(|e| format!("{at}hub: {e}"))?;
    let channel = match h.channel {
        Some(c) => {
            split_host_port(&c).map_err(|e| format!("{at}channel: {e}"))?;
            c
        }
        None => join_host_port(
            &host,
            port.checked_add(1).ok_or_else(|| {
                format!("{at}hub port 65535 leaves no room for channel = port + 1")
            })?,
        ),
    };
    if let Some(q) = &h.quic {
        split_host_port(q).map_err(|e| format!("{at}quic: {e}"))?;
    }
    let name = h.server_name.unwrap_or(host);
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| format!("{at}server_name {name:?} is not a DNS name or IP address"))?;
    Ok(HubTarget {
        hub: h.hub,
        channel,
        transport: h.transport.unwrap_or(default),
        quic: h.quic,
        server_name,
    })
}

/// Turns a check's message into the error naming `file`.
fn checker(file: &Path) -> impl Fn(String) -> anyhow::Error + Copy + '_ {
    move |m| anyhow::Error::new(check_err(file, m))
}

impl std::fmt::Display for EpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ep config {}", self.file.display())?;
        for h in &self.hubs {
            writeln!(
                f,
                "  hub       {} (certificate must name {:?})",
                h.hub,
                h.server_name.to_str()
            )?;
            writeln!(f, "  channel   {}", h.channel)?;
            writeln!(
                f,
                "  transport {:?}{}",
                h.transport,
                h.quic
                    .as_ref()
                    .map(|q| format!(" (QUIC at {q})"))
                    .unwrap_or_default()
            )?;
        }
        writeln!(f, "  token     {}", self.token)?;
        if !self.uplink_guard {
            writeln!(
                f,
                "  uplink guard off: a player's bulk transfer may fill the home router's queue"
            )?;
        }
        if let Some(a) = &self.admin {
            writeln!(f, "  admin     {a}")?;
        }
        for w in self.hash_warnings() {
            writeln!(f, "  warning: {w}")?;
        }
        for (name, local) in &self.services {
            let proxy = match local.proxy_protocol {
                Some(v) => format!(" (PROXY protocol {v:?}, player addresses passed on)"),
                None => String::new(),
            };
            let kind = local.kind.map(|k| format!(" ({k})")).unwrap_or_default();
            writeln!(f, "  service {name:<12} → {}{kind}{proxy}", local.addr)?;
            if let Some(w) = &local.wake {
                writeln!(
                    f,
                    "               wake: {:?}, players wait up to {:?}",
                    w.command,
                    Seconds(w.timeout)
                )?;
                if let Some((cmd, after)) = &w.sleep {
                    writeln!(
                        f,
                        "               sleep: {cmd:?} after {:?} with no player",
                        Seconds(*after)
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// A service's wake and sleep keys, checked together.
fn wake(name: &str, svc: &EpServiceConfig) -> std::result::Result<Option<Wake>, String> {
    let argv = |key: &str, v: &Option<Vec<String>>| match v {
        Some(a) if a.is_empty() || a[0].is_empty() => Err(format!(
            "services.{name}.{key} is empty; give the command as a list, e.g. [\"systemctl\", \"start\", \"{name}\"]"
        )),
        Some(a) => Ok(Some(a.clone())),
        None => Ok(None),
    };
    let command = argv("wake", &svc.wake)?;
    let sleep = argv("sleep", &svc.sleep)?;
    let Some(command) = command else {
        for (key, set) in [
            ("wake_timeout", svc.wake_timeout.is_some()),
            ("sleep", sleep.is_some()),
            ("sleep_after", svc.sleep_after.is_some()),
        ] {
            if set {
                return Err(format!(
                    "services.{name}.{key} needs services.{name}.wake (the command that starts the service)"
                ));
            }
        }
        return Ok(None);
    };
    let timeout = svc
        .wake_timeout
        .map_or(Duration::from_secs(180), Seconds::get);
    if timeout.is_zero() {
        return Err(format!("services.{name}.wake_timeout must be more than 0"));
    }
    let sleep = match (sleep, svc.sleep_after) {
        (Some(cmd), Some(after)) if !after.get().is_zero() => Some((cmd, after.get())),
        (Some(_), Some(_)) => {
            return Err(format!("services.{name}.sleep_after must be more than 0"));
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(format!(
                "services.{name}.sleep needs sleep_after (how long without a player, e.g. \"15m\")"
            ));
        }
        (None, Some(_)) => {
            return Err(format!(
                "services.{name}.sleep_after needs sleep (the command that stops the service)"
            ));
        }
    };
    Ok(Some(Wake {
        command,
        timeout,
        sleep,
    }))
}
