//! `hub.toml`: what the hub listens on, whom it lets in, what it serves.

use super::{
    Allowlist, ConfigError, GivenHash, Seconds, TlsFiles, check_err, check_range,
    check_service_name,
    players::{PlayerLimits, PlayersConfig},
    ports::{BindRange, ServiceKind},
};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// TLS port for ep control connections.
    pub control: SocketAddr,
    /// TLS port for ep channel connections.
    pub channel: SocketAddr,
    /// UDP port for the QUIC transport; absent: QUIC is off.
    pub quic: Option<SocketAddr>,
    /// Source networks allowed on the control and channel ports.
    pub ep_allowlist: Allowlist,
    /// Argon2id PHC string of the eps' token (`ferry hub token`).
    pub token_hash: Option<String>,
    /// A file holding `token_hash` instead (what `ferry demo` writes).
    pub token_hash_file: Option<figment::value::magic::RelativePathBuf>,
    /// Per-ep credentials, keyed by the name in the ep's certificate; an ep
    /// without an entry uses the top-level `token_hash`.
    #[serde(default)]
    pub eps: BTreeMap<String, EpCredentialConfig>,
    pub tls: TlsFiles,
    #[serde(default)]
    pub services: BTreeMap<String, HubServiceConfig>,
    /// Ready channels kept per service so players skip the TLS handshake.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// An unused pooled channel is closed and replaced after this long.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Seconds,
    #[serde(default = "defaults::heartbeat_interval")]
    pub heartbeat_interval: Seconds,
    /// Silence on a control connection for this long ends the session.
    #[serde(default = "defaults::heartbeat_timeout")]
    pub heartbeat_timeout: Seconds,
    /// Deadline for an ep's TLS handshake plus its first message.
    #[serde(default = "defaults::handshake_timeout")]
    pub handshake_timeout: Seconds,
    /// How long an arriving player waits for a channel (or for the ep to
    /// come back) before the hub closes the connection.
    #[serde(default = "defaults::player_wait")]
    pub player_wait: Seconds,
    /// On shutdown, active players get this long to finish.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Seconds,
    /// Connections still authenticating on the control port, at most.
    #[serde(default = "defaults::max_pending_auth")]
    pub max_pending_auth: usize,
    /// Of those, at most this many from one source address.
    #[serde(default = "defaults::max_pending_per_source")]
    pub max_pending_per_source: usize,
    /// Argon2 verifications running at once; more logins are told to retry.
    #[serde(default = "defaults::argon2_concurrency")]
    pub argon2_concurrency: usize,
    /// First penalty for a failed login; doubles per failure.
    #[serde(default = "defaults::penalty_base")]
    pub penalty_base: Seconds,
    #[serde(default = "defaults::penalty_max")]
    pub penalty_max: Seconds,
    /// Players at once across all services; default: what the open-file
    /// limit allows after a reserve for the control and channel doors.
    pub max_players_total: Option<usize>,
    /// Player-door limits every service inherits.
    #[serde(default)]
    pub players: PlayersConfig,
    /// The admin door (metrics, status page); absent: none.
    pub admin: Option<super::admin::AdminConfig>,
    /// The enrol door for `ferry ep join`; absent: none.
    pub enrol: Option<super::enrol::EnrolConfig>,
    /// The health door (`/health/SERVICE` for DNS health checks); absent:
    /// none (the admin door answers `/health` too).
    pub health: Option<super::admin::HealthConfig>,
    #[serde(default)]
    pub log_format: super::admin::LogFormat,
    /// Reload when the file changes (SIGHUP always reloads).
    #[serde(default = "defaults::watch_config")]
    pub watch_config: bool,
    #[serde(skip)]
    pub flags: HubFlags,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpCredentialConfig {
    pub token_hash: Option<String>,
    pub token_hash_file: Option<figment::value::magic::RelativePathBuf>,
    /// The services this ep may serve (`grants`); absent: any service no
    /// other ep's list names.
    pub services: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubServiceConfig {
    /// Where players connect: `"ip:port"` or a range `"ip:first-last"`.
    pub bind: BindRange,
    /// `"tcp"` (the default), `"udp"` or `"tcp+udp"`.
    #[serde(default, rename = "type")]
    pub kind: ServiceKind,
    /// Overrides the hub-wide `pool_size` for this service.
    pub pool_size: Option<usize>,
    // The player-door keys, as in `[players]` (serde cannot flatten them
    // into a struct that refuses unknown keys).
    pub allow: Option<super::Allowlist>,
    pub deny: Option<super::Allowlist>,
    pub max_players: Option<usize>,
    pub max_players_per_ip: Option<usize>,
    pub max_players_per_net: Option<usize>,
    pub player_rate_per_ip: Option<super::players::Rate>,
    pub ban_for: Option<Seconds>,
    pub player_idle_timeout: Option<Seconds>,
    pub max_udp_flows: Option<usize>,
    pub max_udp_flows_per_ip: Option<usize>,
    pub max_udp_flows_per_net: Option<usize>,
    pub udp_idle_timeout: Option<Seconds>,
    pub udp_oneshot_timeout: Option<Seconds>,
    /// Bytes/s each way all its players share (`"2 MB"`, `"8 Mbit"`, see
    /// `bandwidth`); 0 or absent: no cap.
    pub max_rate: Option<super::bandwidth::Bandwidth>,
    /// Bytes/s each way one player may move.
    pub max_rate_per_player: Option<super::bandwidth::Bandwidth>,
    /// `"minecraft"` (Java) or `"bedrock"`: the hub answers the game's
    /// server-list ping while home is away, and routes Java players by name.
    pub game: Option<super::game::Game>,
    pub offline_motd: Option<String>,
    pub offline_message: Option<String>,
    pub starting_motd: Option<String>,
    pub offline_icon: Option<figment::value::magic::RelativePathBuf>,
    /// Names players type for this service (several services may then
    /// share one `bind`).
    pub hosts: Option<Vec<String>>,
    /// Players whose name matches no service's `hosts` go here.
    pub default_host: Option<bool>,
}

impl HubServiceConfig {
    fn game(&self) -> super::game::GameConfig {
        super::game::GameConfig {
            game: self.game,
            offline_motd: self.offline_motd.clone(),
            offline_message: self.offline_message.clone(),
            starting_motd: self.starting_motd.clone(),
            offline_icon: self.offline_icon.as_ref().map(|p| p.relative()),
            hosts: self.hosts.clone(),
            default_host: self.default_host,
        }
    }

    fn limits(&self) -> PlayersConfig {
        PlayersConfig {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            max_players: self.max_players,
            max_players_per_ip: self.max_players_per_ip,
            max_players_per_net: self.max_players_per_net,
            player_rate_per_ip: self.player_rate_per_ip,
            ban_for: self.ban_for,
            player_idle_timeout: self.player_idle_timeout,
            max_udp_flows: self.max_udp_flows,
            max_udp_flows_per_ip: self.max_udp_flows_per_ip,
            max_udp_flows_per_net: self.max_udp_flows_per_net,
            udp_idle_timeout: self.udp_idle_timeout,
            udp_oneshot_timeout: self.udp_oneshot_timeout,
            max_rate: self.max_rate,
            max_rate_per_player: self.max_rate_per_player,
        }
    }
}

mod defaults {
    use super::Seconds;
    pub fn watch_config() -> bool {
        true
    }
    pub fn pool_size() -> usize {
        4
    }
    pub fn idle_timeout() -> Seconds {
        Seconds::secs(60)
    }
    pub fn heartbeat_interval() -> Seconds {
        Seconds::secs(5)
    }
    pub fn heartbeat_timeout() -> Seconds {
        Seconds::secs(15)
    }
    pub fn handshake_timeout() -> Seconds {
        Seconds::secs(10)
    }
    pub fn player_wait() -> Seconds {
        Seconds::secs(10)
    }
    pub fn drain_timeout() -> Seconds {
        Seconds::secs(10)
    }
    pub fn max_pending_auth() -> usize {
        256
    }
    pub fn max_pending_per_source() -> usize {
        8
    }
    pub fn argon2_concurrency() -> usize {
        2
    }
    pub fn penalty_base() -> Seconds {
        Seconds::secs(2)
    }
    pub fn penalty_max() -> Seconds {
        Seconds::secs(600)
    }
}

/// Every key path `FERRY_…` / `FERRY_HUB_…` variables may set.
/// The longest `heartbeat_timeout` a hub takes (an ep's QUIC idle timeout
/// is this, so the hub's decides).
pub const MAX_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The most logins a hub holds pending, hub-wide or from one source.
const MAX_PENDING: usize = 65_536;
/// The most Argon2 checks at once (each holds its memory cost).
const MAX_ARGON2: usize = 1_024;

const KEYS: &[&str] = &[
    "control",
    "channel",
    "quic",
    "ep_allowlist",
    "token_hash",
    "token_hash_file",
    "eps.*.token_hash",
    "eps.*.token_hash_file",
    "eps.*.services",
    "tls.ca",
    "tls.cert",
    "tls.key",
    "tls.crl",
    "services.*.bind",
    "services.*.type",
    "services.*.max_udp_flows",
    "services.*.max_udp_flows_per_ip",
    "services.*.max_udp_flows_per_net",
    "services.*.udp_idle_timeout",
    "services.*.udp_oneshot_timeout",
    "services.*.pool_size",
    "services.*.allow",
    "services.*.deny",
    "services.*.max_players",
    "services.*.max_players_per_ip",
    "services.*.max_players_per_net",
    "services.*.player_rate_per_ip",
    "services.*.ban_for",
    "services.*.player_idle_timeout",
    "services.*.max_rate",
    "services.*.max_rate_per_player",
    "services.*.game",
    "services.*.offline_motd",
    "services.*.offline_message",
    "services.*.starting_motd",
    "services.*.offline_icon",
    "services.*.hosts",
    "services.*.default_host",
    "players.allow",
    "players.deny",
    "players.max_players",
    "players.max_players_per_ip",
    "players.max_players_per_net",
    "players.player_rate_per_ip",
    "players.ban_for",
    "players.player_idle_timeout",
    "players.max_rate",
    "players.max_rate_per_player",
    "players.max_udp_flows",
    "players.max_udp_flows_per_ip",
    "players.max_udp_flows_per_net",
    "players.udp_idle_timeout",
    "players.udp_oneshot_timeout",
    "max_players_total",
    "admin.bind",
    "admin.token_hash",
    "admin.token_hash_file",
    "admin.hide_addresses",
    "enrol.bind",
    "health.bind",
    "enrol.ca_key",
    "enrol.state",
    "log_format",
    "watch_config",
    "pool_size",
    "idle_timeout",
    "heartbeat_interval",
    "heartbeat_timeout",
    "handshake_timeout",
    "player_wait",
    "drain_timeout",
    "max_pending_auth",
    "max_pending_per_source",
    "argon2_concurrency",
    "penalty_base",
    "penalty_max",
];

/// Command-line overrides, the last layer (kept for reloads).
#[derive(Debug, Default, Clone, Serialize)]
pub struct HubFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<SocketAddr>,
}

/// Timings the hub's tasks follow.
#[derive(Debug, Clone, Copy)]
pub struct HubTiming {
    pub idle_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub handshake_timeout: Duration,
    pub player_wait: Duration,
    pub drain_timeout: Duration,
}

/// Bounds on what unauthenticated peers can consume.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    pub max_pending_auth: usize,
    pub max_pending_per_source: usize,
    pub argon2_concurrency: usize,
    pub penalty_base: Duration,
    pub penalty_max: Duration,
    /// Players at once across services (None: from the open-file limit).
    pub max_players_total: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub name: String,
    pub bind: BindRange,
    pub kind: ServiceKind,
    pub pool_size: usize,
    pub limits: PlayerLimits,
    pub game: Option<super::game::GameSettings>,
    /// Routed by name on the TCP port of this (earlier) service, which
    /// listens for the whole group: several `game = "minecraft"` services
    /// with `hosts` on one `bind`.
    pub shares_port_of: Option<String>,
}

/// Token hashes: one per named ep, and the one for every other ep.
#[derive(Clone, Default)]
pub struct Credentials {
    pub default: Option<String>,
    pub per_ep: HashMap<String, String>,
    /// Hashes kept in files (`token_hash_file`, `eps.NAME.token_hash_file`),
    /// each with the ep it is for (none: the shared one). Read into
    /// `default` and `per_ep` when the settings are loaded (`hub::load`).
    pub files: Vec<(Option<String>, PathBuf)>,
}

impl Credentials {
    /// The hash `ep`'s token must match, if it may log in at all.
    pub fn for_ep(&self, ep: &str) -> Option<&str> {
        self.per_ep
            .get(ep)
            .or(self.default.as_ref())
            .map(String::as_str)
    }
}

pub use super::TlsPaths;

/// A checked hub configuration: the file parsed and every value checked.
/// Data only: the TLS files it names are loaded by `tls::HubTls`, the other
/// files (token hashes, icons, the CA key) read by `hub::read_files`, and
/// eps enrolled with `ferry ep join` are merged in by
/// `enrol::merge_enrolled`; `hub::load` does all three.
#[derive(Clone)]
pub struct HubSettings {
    pub file: PathBuf,
    pub control: SocketAddr,
    pub channel: SocketAddr,
    pub quic: Option<SocketAddr>,
    pub allowlist: Allowlist,
    pub credentials: Credentials,
    /// Which ep may serve which service.
    pub grants: super::grants::Grants,
    /// The CA, certificate and key under `[tls]`.
    pub tls_files: TlsPaths,
    pub services: Vec<ServiceSettings>,
    pub timing: HubTiming,
    pub limits: HubLimits,
    /// Revoked ep certificates, re-read when the file changes.
    pub crl: Option<PathBuf>,
    pub admin: Option<super::admin::AdminSettings>,
    pub enrol: Option<super::enrol::EnrolSettings>,
    /// The health door's address (`[health] bind`).
    pub health: Option<SocketAddr>,
    /// Files besides this one that the settings are made from (TLS files,
    /// token hash files, enrolled.json): a change to any reloads, so
    /// syncing one across hubs (rsync, Ansible) is enough.
    pub follows: Vec<PathBuf>,
    /// Eps enrolled with `ferry ep join` (none until
    /// `enrol::merge_enrolled`): their credentials merged in, or, for one
    /// `ferry hub revoke` marked, none (the name stays an enrolled ep's).
    pub enrolled: Vec<String>,
    /// Those of `enrolled` whose records `ferry hub revoke` marked: shown
    /// as such, so `hub check` never lists a shut-out ep as a live one.
    pub revoked: Vec<String>,
    pub log_format: super::admin::LogFormat,
    pub watch_config: bool,
    /// The flags this was loaded with, re-applied on reload.
    pub flags: HubFlags,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// One address as a range of one port, to compare with services' binds.
fn single(a: SocketAddr) -> BindRange {
    BindRange {
        ip: a.ip(),
        first: a.port(),
        count: 1,
    }
}

/// Turns a check's message into the error naming `file`.
fn checker(file: &Path) -> impl Fn(String) -> anyhow::Error + Copy + '_ {
    move |m| anyhow::Error::new(check_err(file, m))
}

impl HubSettings {
    pub fn service(&self, name: &str) -> Option<&ServiceSettings> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Several eps without a services list may each serve any service no
    /// list names, and stand by to take one over: said at check and start.
    pub fn unlisted_warning(&self) -> Option<String> {
        let mut unlisted: Vec<&String> = self
            .credentials
            .per_ep
            .keys()
            .filter(|ep| !self.grants.listed(ep))
            .collect();
        unlisted.sort();
        let shared = self.credentials.default.is_some();
        if unlisted.len() + usize::from(shared) < 2 || unlisted.is_empty() {
            return None;
        }
        let mut who: Vec<String> = unlisted.iter().map(|s| s.to_string()).collect();
        if shared {
            who.push("any ep on the shared token_hash".into());
        }
        Some(format!(
            "eps without a services list ({}) may each serve any service no list names, \
             and take one over when its ep is away: give each its list under [eps.NAME] services",
            who.join(", ")
        ))
    }

    /// A line per token hash weaker than `ferry hub token` makes, naming
    /// its key: printed by `check`, logged at start.
    pub fn hash_warnings(&self) -> Vec<String> {
        let mut named: Vec<(&String, &String)> = self.credentials.per_ep.iter().collect();
        named.sort();
        let hashes = self
            .credentials
            .default
            .iter()
            .map(|h| ("token_hash".to_string(), h))
            .chain(
                named
                    .into_iter()
                    .map(|(ep, h)| (format!("eps.{ep}.token_hash"), h)),
            )
            .chain(
                self.admin
                    .iter()
                    .filter_map(|a| a.token_hash.as_ref())
                    .map(|h| ("admin.token_hash".to_string(), h)),
            );
        hashes
            .filter_map(|(key, h)| super::hash_weakness(h).map(|w| format!("{key} is {w}")))
            .collect()
    }
}

impl HubConfig {
    pub fn load(path: &Path, flags: HubFlags) -> Result<Self, ConfigError> {
        let mut c: HubConfig = super::load(path, KEYS, "FERRY_HUB_", flags.clone())?;
        c.flags = flags;
        Ok(c)
    }

    /// Validates everything that can be checked without binding a port.
    pub fn check(mut self, file: &Path) -> Result<HubSettings> {
        let err = checker(file);
        if self.ep_allowlist.is_empty() {
            return Err(err("ep_allowlist is empty: no ep could connect. List the \
                 addresses your eps connect from (\"0.0.0.0/0\" admits everyone)"
                .into()));
        }
        let follows = self.follows();
        let (credentials, grants) = self.credentials(file)?;
        self.check_timings(file)?;
        self.check_login_limits(file)?;
        self.check_doors(file)?;
        let services = self.check_services(file)?;
        let admin = match self.admin.take() {
            Some(a) => Some(a.check().map_err(err)?),
            None => None,
        };
        let tls_files = self.tls.paths();
        let crl = self.tls.crl.as_ref().map(|c| c.relative());
        let enrol = self.enrol.take().map(|e| e.check(&tls_files.ca));
        Ok(HubSettings {
            file: file.to_path_buf(),
            control: self.control,
            channel: self.channel,
            quic: self.quic,
            timing: self.timing(),
            limits: self.limits(),
            allowlist: self.ep_allowlist,
            credentials,
            grants,
            tls_files,
            services,
            crl,
            admin,
            enrol,
            health: self.health.as_ref().map(|h| h.bind),
            follows,
            enrolled: Vec::new(),
            revoked: Vec::new(),
            log_format: self.log_format,
            watch_config: self.watch_config,
            flags: self.flags,
        })
    }

    /// Every file the settings are read from, other than this one.
    fn follows(&self) -> Vec<PathBuf> {
        let t = self.tls.paths();
        let mut files = vec![t.ca.clone(), t.cert, t.key];
        // Followed by a watcher of its own too, which checks it against
        // the CA running; a new CA whose list arrives after it (files
        // copied one by one) is taken only by a reload of the whole.
        files.extend(self.tls.crl.as_ref().map(|c| c.relative()));
        let hash_files = self
            .token_hash_file
            .iter()
            .chain(self.eps.values().filter_map(|e| e.token_hash_file.as_ref()))
            .chain(self.admin.as_ref().and_then(|a| a.token_hash_file.as_ref()));
        files.extend(hash_files.map(|p| p.relative()));
        if let Some(e) = &self.enrol {
            let ca_dir = t.ca.parent().map(PathBuf::from).unwrap_or_default();
            let dir = e.state.as_ref().map(|p| p.relative());
            files.push(dir.unwrap_or_else(|| ca_dir.clone()).join("enrolled.json"));
            // Held to tls.ca at each reload: a CA replaced file by file
            // is taken once its key arrives too.
            let key = e.ca_key.as_ref().map(|p| p.relative());
            files.push(key.unwrap_or_else(|| ca_dir.join("ca.key")));
        }
        files
    }

    /// The default token hash and each named ep's own (at least one), and
    /// the services each `[eps.NAME]` may serve.
    fn credentials(&mut self, file: &Path) -> Result<(Credentials, super::grants::Grants)> {
        let err = checker(file);
        let mut credentials = Credentials::default();
        match super::token_hash(
            "token_hash",
            self.token_hash.take(),
            self.token_hash_file.as_ref(),
        )
        .map_err(err)?
        {
            Some(GivenHash::Inline(h)) => credentials.default = Some(h),
            Some(GivenHash::File(path)) => credentials.files.push((None, path)),
            None => {}
        }
        let mut grants = super::grants::Grants::default();
        for (name, c) in std::mem::take(&mut self.eps) {
            check_service_name(&name).map_err(|_| {
                err(format!(
                    "eps.{name}: an ep name is 1-64 letters, digits, '-' or '_'"
                ))
            })?;
            if let Some(list) = c.services {
                for svc in &list {
                    if !self.services.contains_key(svc) {
                        return Err(err(format!(
                            "eps.{name}.services names {svc:?}, which is not a [services.{svc}]"
                        )));
                    }
                }
                grants.set(&name, list);
            }
            let key = format!("eps.{name}.token_hash");
            match super::token_hash(&key, c.token_hash, c.token_hash_file.as_ref()).map_err(err)? {
                Some(GivenHash::Inline(h)) => {
                    credentials.per_ep.insert(name, h);
                }
                Some(GivenHash::File(path)) => credentials.files.push((Some(name), path)),
                // Only a grant: the ep logs in with the shared hash (or
                // the one its enrolment made).
                None if grants.listed(&name) => {}
                None => {
                    return Err(err(format!(
                        "{key}: set token_hash or token_hash_file (or services, to grant only)"
                    )));
                }
            };
        }
        if credentials.default.is_none()
            && credentials.per_ep.is_empty()
            && credentials.files.is_empty()
        {
            return Err(err(
                "no token_hash: make one with `ferry hub token` (or give each ep its own under [eps.NAME])"
                    .into(),
            ));
        }
        Ok((credentials, grants))
    }

    fn check_timings(&self, file: &Path) -> Result<()> {
        let err = checker(file);
        // Zero or absurd timings pass parsing but break the runtime (a zero
        // heartbeat panics the timer; a zero idle timeout churns handshakes).
        let ranges = [
            (
                "heartbeat_interval",
                self.heartbeat_interval,
                ms(100),
                secs(600),
            ),
            (
                "heartbeat_timeout",
                self.heartbeat_timeout,
                ms(200),
                MAX_HEARTBEAT_TIMEOUT,
            ),
            ("idle_timeout", self.idle_timeout, secs(1), secs(86_400)),
            (
                "handshake_timeout",
                self.handshake_timeout,
                ms(100),
                secs(300),
            ),
            ("player_wait", self.player_wait, ms(100), secs(600)),
            ("drain_timeout", self.drain_timeout, ms(0), secs(3600)),
            ("penalty_base", self.penalty_base, ms(0), secs(86_400)),
            ("penalty_max", self.penalty_max, ms(0), secs(86_400)),
        ];
        for (key, value, min, max) in ranges {
            check_range(key, value.get(), min, max).map_err(err)?;
        }
        if self.heartbeat_timeout.get() <= self.heartbeat_interval.get() {
            return Err(err(
                "heartbeat_timeout must be longer than heartbeat_interval".into(),
            ));
        }
        if self.penalty_base.get() > self.penalty_max.get() {
            return Err(err(format!(
                "penalty_base = {:?} is out of range: allowed 0ms to penalty_max ({:?})",
                self.penalty_base, self.penalty_max
            )));
        }
        Ok(())
    }

    fn check_login_limits(&self, file: &Path) -> Result<()> {
        let err = checker(file);
        if self.max_pending_auth == 0
            || self.max_pending_per_source == 0
            || self.argon2_concurrency == 0
        {
            return Err(err(
                "max_pending_auth, max_pending_per_source and argon2_concurrency must be at least 1".into(),
            ));
        }
        // Beyond these a value is a typo, and past them the hub would fail
        // at start (a semaphore's limit, four times the logins pending for
        // the channel door): said here, by `ferry hub check` too.
        let most = [
            ("max_pending_auth", self.max_pending_auth, MAX_PENDING),
            (
                "max_pending_per_source",
                self.max_pending_per_source,
                MAX_PENDING,
            ),
            ("argon2_concurrency", self.argon2_concurrency, MAX_ARGON2),
        ];
        for (key, value, max) in most {
            if value > max {
                return Err(err(format!(
                    "{key} = {value} is more than the {max} allowed"
                )));
            }
        }
        Ok(())
    }

    /// The hub-wide player total, the pool size and the hub's own doors.
    fn check_doors(&self, file: &Path) -> Result<()> {
        let err = checker(file);
        if self.max_players_total == Some(0) {
            return Err(err("max_players_total = 0 admits nobody; at least 1".into()));
        }
        if self.pool_size > 64 {
            return Err(err("pool_size is at most 64".into()));
        }
        if self.control == self.channel && self.control.port() != 0 {
            return Err(err("control and channel must be different addresses".into()));
        }
        // The TCP doors among themselves (QUIC, the one UDP door, has no
        // other UDP door to meet): caught here, not as "address in use".
        let tcp = self.tcp_doors();
        for (i, (name, bind)) in tcp.iter().enumerate() {
            if let Some((other, _)) = tcp[..i].iter().find(|(_, b)| b.overlaps(bind)) {
                return Err(err(format!(
                    "{name} {bind} is the same TCP port as {other}; give one of them another port"
                )));
            }
        }
        Ok(())
    }

    /// The hub's TCP doors with their keys: control, channel, and the
    /// admin and enrol doors if configured.
    fn tcp_doors(&self) -> Vec<(String, BindRange)> {
        let mut doors = vec![
            ("control".to_string(), single(self.control)),
            ("channel".to_string(), single(self.channel)),
        ];
        if let Some(a) = &self.admin {
            doors.push(("admin.bind".into(), single(a.bind)));
        }
        if let Some(e) = &self.enrol {
            doors.push(("enrol.bind".into(), single(e.bind)));
        }
        if let Some(h) = &self.health {
            doors.push(("health.bind".into(), single(h.bind)));
        }
        doors
    }

    /// Each service with its ports, pool and player limits settled.
    fn check_services(&mut self, file: &Path) -> Result<Vec<ServiceSettings>> {
        let err = checker(file);
        // TCP ports in use so far, and UDP ports: a `tcp+udp` service may
        // share its numbers with nothing else of either protocol. The
        // hub's own doors come first: a service on the QUIC port (UDP) or
        // the admin or enrol port (TCP) would fail to bind at start, or,
        // added by a reload, never open.
        let mut tcp_binds = self.tcp_doors();
        let mut udp_binds: Vec<(String, BindRange)> = self
            .quic
            .map(|q| ("quic".to_string(), single(q)))
            .into_iter()
            .collect();
        let mut services = Vec::new();
        // Services that listen for a group routed by name.
        let mut routed: Vec<(String, BindRange)> = Vec::new();
        for (name, svc) in std::mem::take(&mut self.services) {
            check_service_name(&name).map_err(err)?;
            let mut shares = None;
            for (on, proto, taken) in [
                (svc.kind.tcp(), "TCP", &mut tcp_binds),
                (svc.kind.udp(), "UDP", &mut udp_binds),
            ] {
                if !on {
                    continue;
                }
                if let Some((other, b)) = taken.iter().find(|(_, b)| b.overlaps(&svc.bind)) {
                    if proto == "TCP"
                        && let Some(owner) = routed
                            .iter()
                            .find(|(o, _)| format!("services.{o}") == *other)
                        && routable(&svc)
                        && *b == svc.bind
                    {
                        shares = Some(owner.0.clone());
                        continue;
                    }
                    return Err(err(format!(
                        "services.{name}.bind {} overlaps {other} ({proto} {b}); \
                         give one of them another port{}",
                        svc.bind,
                        if svc.game == Some(super::game::Game::Minecraft) {
                            " (Minecraft services share a port only with the same bind, \
                             type = \"tcp\", and hosts = [...] or default_host = true on each)"
                        } else {
                            ""
                        }
                    )));
                }
                taken.push((format!("services.{name}"), svc.bind));
            }
            if shares.is_none() && routable(&svc) {
                routed.push((name.clone(), svc.bind));
            }
            let mut one = self.check_service(file, name, svc)?;
            one.shares_port_of = shares;
            services.push(one);
        }
        check_groups(&services).map_err(err)?;
        Ok(services)
    }

    /// One service's pool size and player limits, over the hub-wide ones.
    fn check_service(
        &self,
        file: &Path,
        name: String,
        svc: HubServiceConfig,
    ) -> Result<ServiceSettings> {
        let pool_size = svc.pool_size.unwrap_or(self.pool_size);
        if pool_size > 64 {
            bail!(
                "{}: services.{name}.pool_size is at most 64",
                file.display()
            );
        }
        let prefix = format!("services.{name}.");
        let limits =
            PlayerLimits::merge(svc.limits(), &self.players, &prefix).map_err(checker(file))?;
        let game = svc
            .game()
            .check(&prefix, svc.kind.tcp(), svc.kind.udp())
            .map_err(checker(file))?;
        // Home's state is known per service, not per port of a range.
        if game.is_some() && svc.bind.count > 1 {
            bail!(
                "{}: services.{name}: a game service has one port, not a range ({})",
                file.display(),
                svc.bind
            );
        }
        Ok(ServiceSettings {
            name,
            bind: svc.bind,
            kind: svc.kind,
            pool_size,
            limits,
            game,
            shares_port_of: None,
        })
    }

    fn timing(&self) -> HubTiming {
        HubTiming {
            idle_timeout: self.idle_timeout.get(),
            heartbeat_interval: self.heartbeat_interval.get(),
            heartbeat_timeout: self.heartbeat_timeout.get(),
            handshake_timeout: self.handshake_timeout.get(),
            player_wait: self.player_wait.get(),
            drain_timeout: self.drain_timeout.get(),
        }
    }

    fn limits(&self) -> HubLimits {
        HubLimits {
            max_pending_auth: self.max_pending_auth,
            max_pending_per_source: self.max_pending_per_source,
            argon2_concurrency: self.argon2_concurrency,
            penalty_base: self.penalty_base.get(),
            penalty_max: self.penalty_max.get(),
            max_players_total: self.max_players_total,
        }
    }

    /// Loads and checks `file` again with the flags `s` was loaded with;
    /// and the files the new configuration names besides itself (none if
    /// it does not parse): a reload refused for one of them (not there
    /// yet) is tried again when it changes.
    pub fn reload_naming(s: &HubSettings) -> (Vec<PathBuf>, Result<HubSettings>) {
        match HubConfig::load(&s.file, s.flags.clone()) {
            Ok(c) => (c.follows(), c.check(&s.file)),
            Err(e) => (Vec::new(), Err(e.into())),
        }
    }
}

impl std::fmt::Display for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "hub config {}", self.file.display())?;
        writeln!(
            f,
            "  control  {} (TLS 1.3, client certificate)",
            self.control
        )?;
        writeln!(
            f,
            "  channel  {} (TLS 1.3, client certificate)",
            self.channel
        )?;
        if let Some(q) = self.quic {
            writeln!(f, "  quic     {q} (UDP; TLS 1.3, client certificate)")?;
        }
        self.write_access(f)?;
        let t = &self.timing;
        writeln!(
            f,
            "  heartbeat every {:?}, timeout {:?}; idle channels closed after {:?}; players wait up to {:?}",
            t.heartbeat_interval, t.heartbeat_timeout, t.idle_timeout, t.player_wait
        )?;
        for s in &self.services {
            write_service(f, s)?;
        }
        Ok(())
    }
}

impl HubSettings {
    /// Who may come in and how: the allowlist, token hashes, grants, the
    /// admin, health and enrol doors, with their warnings.
    fn write_access(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nets: Vec<String> = self
            .allowlist
            .nets()
            .iter()
            .map(|n| n.to_string())
            .collect();
        writeln!(f, "  ep_allowlist {}", nets.join(", "))?;
        if self.allowlist.is_wide_open() {
            writeln!(
                f,
                "  warning: ep_allowlist admits every address; list your eps' addresses"
            )?;
        }
        if self.credentials.default.is_some() {
            writeln!(f, "  token_hash argon2id (hash set, token not stored)")?;
        }
        let mut named: Vec<&String> = self.credentials.per_ep.keys().collect();
        named.sort();
        for ep in named {
            writeln!(f, "  ep {ep:<15} own token_hash (argon2id)")?;
        }
        for line in self.grants.lines() {
            writeln!(f, "  grants   {line}")?;
        }
        if let Some(w) = self.unlisted_warning() {
            writeln!(f, "  warning: {w}")?;
        }
        if let Some(a) = &self.admin {
            writeln!(f, "  admin    {a}")?;
        }
        if let Some(h) = self.health {
            writeln!(
                f,
                "  health   http://{h}/health/SERVICE (200 up / 503 down, no token; nothing else)"
            )?;
        }
        for w in self.hash_warnings() {
            writeln!(f, "  warning: {w}")?;
        }
        if let Some(e) = &self.enrol {
            writeln!(
                f,
                "  enrol    {} (ferry ep join; invites in {}); enrolled eps: {}",
                e.bind,
                e.state.display(),
                if self.enrolled.is_empty() {
                    "none".into()
                } else {
                    self.enrolled
                        .iter()
                        .map(|n| match self.revoked.contains(n) {
                            true => format!("{n} (revoked)"),
                            false => n.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )?;
        }
        Ok(())
    }
}

/// A service's line, and its game and UDP lines if it has them.
fn write_service(f: &mut std::fmt::Formatter<'_>, s: &ServiceSettings) -> std::fmt::Result {
    writeln!(
        f,
        "  service {:<12} {} players on {} (pool {}); {}",
        s.name, s.kind, s.bind, s.pool_size, s.limits
    )?;
    if let Some(g) = &s.game {
        let route = match (&s.shares_port_of, g.hosts.is_empty(), g.default_host) {
            (_, true, false) => String::new(),
            (owner, _, default) => format!(
                "; players who typed {}{}{}",
                if g.hosts.is_empty() {
                    "-".into()
                } else {
                    g.hosts.join(", ")
                },
                if default { " or any other name" } else { "" },
                owner
                    .as_ref()
                    .map(|o| format!(" (port shared with {o})"))
                    .unwrap_or_default()
            ),
        };
        writeln!(
            f,
            "               game {}: the hub answers while home is away{route}",
            g.game
        )?;
    }
    if s.kind.udp() {
        let u = &s.limits.udp;
        writeln!(
            f,
            "               udp: at most {} flows, {} per address, idle flows end after {:?}",
            u.max_flows,
            u.max_flows_per_ip,
            super::Seconds(u.idle_timeout)
        )?;
    }
    Ok(())
}

/// A service that may share its TCP port with others, routed by the name
/// a Minecraft player typed.
fn routable(svc: &HubServiceConfig) -> bool {
    svc.game == Some(super::game::Game::Minecraft)
        && svc.kind == ServiceKind::Tcp
        && (svc.hosts.as_ref().is_some_and(|h| !h.is_empty()) || svc.default_host == Some(true))
}

/// Services sharing a port: one name goes to one service, and at most one
/// takes the names nobody claims.
fn check_groups(services: &[ServiceSettings]) -> std::result::Result<(), String> {
    for owner in services.iter().filter(|s| s.shares_port_of.is_none()) {
        let group: Vec<&ServiceSettings> = services
            .iter()
            .filter(|s| s.name == owner.name || s.shares_port_of.as_deref() == Some(&owner.name))
            .collect();
        if group.len() < 2 {
            continue;
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        let mut default: Option<&str> = None;
        for s in &group {
            let g = s.game.as_ref().expect("a routed service has game settings");
            for h in &g.hosts {
                if let Some(other) = seen.insert(h, &s.name) {
                    return Err(format!(
                        "services.{}.hosts and services.{other}.hosts both name {h}, on the same port {}",
                        s.name, owner.bind
                    ));
                }
            }
            if g.default_host {
                if let Some(other) = default {
                    return Err(format!(
                        "services.{} and services.{other} both have default_host = true on port {}; one at most",
                        s.name, owner.bind
                    ));
                }
                default = Some(&s.name);
            }
        }
    }
    Ok(())
}
