//! Command-line interface: parses arguments and calls the library.

use crate::{
    certgen::GenCert,
    config::{
        ep::{EpConfig, EpFlags, EpSettings},
        hub::{HubConfig, HubFlags, HubSettings},
    },
    secret::Secret,
    token,
};
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::{
    io::Read,
    net::IpAddr,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};
use tokio_util::sync::CancellationToken;

mod bans;
mod reload;

/// `ferry --version`: the release and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERRY_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "ferry",
    version = VERSION,
    about = "Self-hosted reverse tunnel: expose services at home through a hub over mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// The public side: serves players and eps.
    Hub(HubArgs),
    /// The home side: connects out to the hub and dials local services.
    Ep(EpArgs),
    /// Try ferry on this machine: certificates on first run, hub, ep and a
    /// demo web service from the shipped configs.
    Demo(DemoArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), generated from these definitions.
    Man,
}

#[derive(Args)]
struct HubArgs {
    #[command(subcommand)]
    cmd: Option<HubCmd>,
    #[command(flatten)]
    run: HubRun,
}

#[derive(Args, Clone)]
struct HubRun {
    /// Config file.
    #[arg(short, long, global = true, default_value = "config/hub.toml")]
    config: PathBuf,
    /// Overrides `control`.
    #[arg(long, global = true)]
    control: Option<SocketAddr>,
    /// Overrides `channel`.
    #[arg(long, global = true)]
    channel: Option<SocketAddr>,
    /// Once every port is bound, write them here as JSON
    /// ({"control", "channel", "services": {NAME: ADDR}}), for scripts and
    /// tests that bind port 0.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum HubCmd {
    /// Validate the config and print what would run (secrets masked).
    Check,
    /// Create the CA, the hub certificate and ep certificates.
    GenCert(GenCertArgs),
    /// Print a new random token and its Argon2id hash.
    Token,
    /// Read a token on stdin and print its Argon2id hash.
    HashToken,
    /// Revoke ep certificates: writes DIR/crl.pem for the hub's tls.crl.
    Revoke(RevokeArgs),
    /// Print the running hub's status from its admin door.
    Status(StatusArgs),
    /// Ban an address or network: the running hub closes its players and
    /// refuses it within a second (written to bans.json in the state
    /// folder; kept across restarts).
    Ban(bans::BanArgs),
    /// Lift a ban written by `ferry hub ban`.
    Unban(bans::UnbanArgs),
    /// Close an address's players now, without banning it.
    Kick(bans::KickArgs),
    /// Make a one-line invite for an ep (`ferry ep join LINE` at home);
    /// also list and revoke open invites.
    Invite(InviteArgs),
    /// Reload the running hub (SIGHUP) and wait until it has: fails with
    /// the reason when the new configuration is refused (systemd's
    /// ExecReload).
    Reload(reload::ReloadArgs),
}

#[derive(Args)]
struct InviteArgs {
    /// The ep's name (its certificate's name on the hub).
    #[arg(long, required_unless_present_any = ["list", "revoke"])]
    ep: Option<String>,
    /// How long the invite stays usable ("30m", "24h", up to "30d" as "720h").
    #[arg(long, default_value = "24h")]
    expires: String,
    /// Only from this network (repeatable), e.g. the home's address.
    #[arg(long = "from", value_name = "CIDR")]
    from: Vec<String>,
    /// The hub's host name in the line; default: the first name in the
    /// hub's certificate. Repeat it for several hubs (replicas sharing
    /// the CA, credentials and ports): the first is where the ep enrols,
    /// and `ferry ep join` serves every one.
    #[arg(long = "hub", value_name = "HOST")]
    hub: Vec<String>,
    /// A service the ep may serve (repeatable); without any, it may serve
    /// none until hub.toml grants some (`[eps.NAME] services = [..]`).
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
    /// List invites (open, used, revoked) instead.
    #[arg(long)]
    list: bool,
    /// Revoke the invite with this id.
    #[arg(long, value_name = "ID")]
    revoke: Option<String>,
}

#[derive(Args)]
struct RevokeArgs {
    /// Folder with the CA (and the ep certificates); default: the folder
    /// of the config's `tls.ca` (`-c`), else `certs`.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Ep whose certificate to revoke (repeatable): DIR/ep-NAME.pem, or
    /// for an enrolled ep the serial in DIR/enrolled.json.
    #[arg(long = "ep")]
    eps: Vec<String>,
    /// Certificate serial number in hex (repeatable).
    #[arg(long = "serial")]
    serials: Vec<String>,
}

#[derive(Args)]
struct GenCertArgs {
    /// Output folder; default: the folder of the config's `tls.ca` (`-c`),
    /// else `certs`.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// DNS name eps use to reach the hub (repeatable).
    #[arg(long = "hub-name")]
    hub_names: Vec<String>,
    /// IP address eps use to reach the hub (repeatable).
    #[arg(long = "hub-ip")]
    hub_ips: Vec<IpAddr>,
    /// Issue a client certificate for this ep (repeatable).
    #[arg(long = "ep")]
    eps: Vec<String>,
    /// Replace existing hub/ep certificates.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct EpArgs {
    #[command(subcommand)]
    cmd: Option<EpCmd>,
    /// Config file.
    #[arg(short, long, global = true, default_value = "config/ep.toml")]
    config: PathBuf,
    /// Overrides `hub`.
    #[arg(long, global = true)]
    hub: Option<String>,
    /// Overrides `channel`.
    #[arg(long, global = true)]
    channel: Option<String>,
    /// Once the admin port (if any) is bound, write it here as JSON.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum EpCmd {
    /// Validate the config and print what would run (secrets masked).
    Check,
    /// Print the running ep's status from its admin door.
    Status(StatusArgs),
    /// Enrol this machine with an invite line from `ferry hub invite`:
    /// writes DIR/ep.toml and DIR/certs/ (the key is made here).
    Join(JoinArgs),
    /// Reload the running ep (SIGHUP) and wait until it has, as `ferry
    /// hub reload` does.
    Reload(reload::ReloadArgs),
}

#[derive(Args)]
struct JoinArgs {
    /// The line `ferry hub invite` printed; `-` or none: read from
    /// standard input, so it shows in neither `ps` nor the shell's history.
    line: Option<String>,
    /// Where to write ep.toml and certs/.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Replace an existing ep.toml and key.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct StatusArgs {
    /// The admin door's address, instead of the config's `admin.bind`.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The admin token, if the admin door asks for one.
    #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// (hub) Every player now, with where their lag comes from: player ↔
    /// hub, hub ↔ ep, ep → service.
    #[arg(long)]
    players: bool,
    /// (hub) The bans in force (`ferry hub ban`): address, service, until
    /// when, since when.
    #[arg(long)]
    bans: bool,
}

pub use crate::demo::DemoArgs;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The hub's config checked; the files it names are read by `hub::load`
/// (`Hub::bind` at start, `check`) or `hub::read_files`. Logging starts
/// in the file's format before the check, whose warnings (and those of
/// reading the files) would otherwise go nowhere.
fn check_hub(run: &HubRun) -> Result<HubSettings> {
    let flags = HubFlags {
        control: run.control,
        channel: run.channel,
    };
    let config = HubConfig::load(&run.config, flags)?;
    crate::logging::init(config.log_format);
    config.check(&run.config)
}

/// The hub's config checked and the files it names read, but for TLS: for
/// the commands that talk to a running hub or its state.
fn load_hub(run: &HubRun) -> Result<HubSettings> {
    crate::hub::read_files(check_hub(run)?)
}

/// The ep's config checked; the files it names are read by `ep::load`
/// (`ep::bind` at start, `check`) or `ep::read_files`. Logging starts as
/// for `check_hub`.
fn check_ep(args: &EpArgs) -> Result<EpSettings> {
    let flags = EpFlags {
        hub: args.hub.clone(),
        channel: args.channel.clone(),
    };
    let config = EpConfig::load(&args.config, flags)?;
    crate::logging::init(config.log_format);
    config.check(&args.config)
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.role {
        Role::Hub(args) => hub_cmd(args),
        Role::Ep(args) => ep_cmd(args),
        Role::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ferry", &mut std::io::stdout());
            Ok(())
        }
        Role::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("cannot write the manual page")
        }
        Role::Demo(args) => {
            crate::logging::init(Default::default());
            runtime()?.block_on(crate::demo::run(args))
        }
    }
}

fn hub_cmd(args: HubArgs) -> Result<()> {
    match args.cmd {
        Some(HubCmd::Check) => hub_check(&args.run),
        Some(HubCmd::GenCert(g)) => gen_cert(g, &args.run),
        Some(HubCmd::Revoke(r)) => revoke(r, &args.run),
        Some(HubCmd::Status(st)) => {
            // Only the admin door's address is needed: not even the config
            // when `--admin` names it, never the secret files it names
            // (a user who may ask the door need not read the hub's keys).
            let settings = match st.admin {
                Some(_) => None,
                None => Some(check_hub(&args.run)?),
            };
            let bind = settings
                .as_ref()
                .and_then(|s| s.admin.as_ref().map(|a| a.bind));
            match settings {
                // No admin door to ask, or one that masks addresses (which
                // `unban` would not match): the list is the file's.
                Some(s) if st.bans && bind.is_none() => {
                    bans::list(&s, st.json, "no admin door to ask")
                }
                Some(s) if st.bans && s.admin.as_ref().is_some_and(|a| a.hide_addresses) => {
                    bans::list_whole(&s, st.json).or_else(|_| status(bind, &st, "hub"))
                }
                _ => status(bind, &st, "hub"),
            }
        }
        Some(HubCmd::Ban(b)) => bans::ban(&check_hub(&args.run)?, b),
        Some(HubCmd::Unban(u)) => bans::unban(&check_hub(&args.run)?, u),
        Some(HubCmd::Kick(k)) => bans::kick(&check_hub(&args.run)?, k),
        Some(HubCmd::Invite(inv)) => invite(&load_hub(&args.run)?, inv),
        Some(HubCmd::Token) => new_token(),
        Some(HubCmd::HashToken) => hash_token(),
        Some(HubCmd::Reload(r)) => reload::run(&r, "hub"),
        None => run_hub(&args.run),
    }
}

fn ep_cmd(args: EpArgs) -> Result<()> {
    match &args.cmd {
        Some(EpCmd::Check) => ep_check(&args),
        Some(EpCmd::Join(j)) => join(j),
        Some(EpCmd::Reload(r)) => reload::run(r, "ep"),
        Some(EpCmd::Status(st)) => {
            // As for the hub's: the door's address, nothing secret.
            let bind = match st.admin {
                Some(_) => None,
                None => check_ep(&args)?.admin.map(|a| a.bind),
            };
            status(bind, st, "ep")
        }
        None => run_ep(&args),
    }
}

fn hub_check(run: &HubRun) -> Result<()> {
    let (settings, tls) = crate::hub::load_to_start(check_hub(run)?)?;
    print!("{settings}");
    let certs = tls.describe();
    if !certs.is_empty() {
        println!("{certs}");
    }
    // The hub would not start with a damaged one.
    let bans = crate::bans::path(&settings);
    let in_force = crate::bans::read(&bans)?
        .in_force(crate::history::unix_now())
        .count();
    println!("  bans      {in_force} in force ({})", bans.display());
    println!("ok");
    print_plan(&settings, &tls.digest);
    Ok(())
}

/// The CA's folder: `--dir`, else the folder of the `tls.ca` the hub's
/// config at `-c` names (when that file exists), else `certs`. Made in
/// the folder the shell is in, a certificate from a CA of its own would
/// be one no hub accepts, and a list one no hub reads.
fn ca_dir(given: Option<PathBuf>, run: &HubRun) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    if !run.config.exists() {
        return Ok(PathBuf::from("certs"));
    }
    let config = HubConfig::load(&run.config, HubFlags::default()).with_context(|| {
        format!(
            "reading {} for its CA's folder (or name the folder with --dir)",
            run.config.display()
        )
    })?;
    let ca = config.tls.paths().ca;
    // gen-cert's CA is DIR/ca.pem beside DIR/ca.key: a tls.ca of another
    // name (another tool's CA) has no key here, and a new CA would be made.
    anyhow::ensure!(
        ca.file_name().is_some_and(|n| n == "ca.pem"),
        "{} names tls.ca {}, not a ca.pem made by gen-cert: name the CA's folder with --dir",
        run.config.display(),
        ca.display()
    );
    Ok(ca.parent().map(PathBuf::from).unwrap_or_default())
}

fn revoke(mut r: RevokeArgs, run: &HubRun) -> Result<()> {
    anyhow::ensure!(
        !r.eps.is_empty() || !r.serials.is_empty(),
        "name --ep NAME or --serial HEX to revoke"
    );
    let dir = ca_dir(r.dir.take(), run)?;
    // An enrolled ep's certificate never came to the hub: its serial is in
    // the enrolment record.
    let (mut eps, mut serials) = (Vec::new(), r.serials.clone());
    // Enrolled eps whose records are marked revoked once the list is
    // written: (name, serial).
    let mut records = Vec::new();
    let store = crate::enrol::invites::Store::new(&dir);
    for name in &r.eps {
        let made_here = dir.join(format!("ep-{name}.pem")).exists();
        if made_here {
            eps.push(name.clone());
        }
        // Every certificate the name has had: made here, and enrolled.
        // Ends asking again with its invites too (`Store::revoking`).
        match store.revoking(name)? {
            Some(serial) => {
                println!("ep {name} is enrolled: revoking its serial {serial}");
                records.push((name.clone(), serial.clone()));
                serials.push(serial);
            }
            None if made_here => {}
            None => anyhow::bail!(
                "no {} and no enrolled ep {name:?} in {}; if enrol.state is elsewhere, \
                 pass --dir that folder, or --serial HEX",
                dir.join(format!("ep-{name}.pem")).display(),
                dir.join("enrolled.json").display()
            ),
        }
    }
    for serial in &r.serials {
        // The revocation is written whatever happens here: a hub that
        // records an ask again reads the list itself.
        match store.revoking_serial(serial) {
            Ok(Some(ep)) => {
                println!("serial {serial} is enrolled ep {ep}'s certificate");
                records.push((ep, serial.clone()));
            }
            Ok(None) => {}
            Err(err) => eprintln!(
                "warning: could not end asking again for the ep of serial {serial} \
                 (enrolment state in {}): {err:#}",
                dir.display()
            ),
        }
    }
    let (path, added) = crate::certgen::revoke(&dir, &eps, &serials)?;
    for a in added {
        println!("revoked {a}");
    }
    mark_enrolled(run, &store, &records);
    println!(
        "wrote {}; a hub with tls.crl = \"{}\" applies it within seconds",
        path.display(),
        path.display()
    );
    crl_unfollowed(run, &path);
    Ok(())
}

/// Marks the revoked enrolled eps' records in enrolled.json, after the
/// list is written: a running hub that follows the file drops their
/// tokens, addresses and grants at once, with or without `tls.crl`.
fn mark_enrolled(run: &HubRun, store: &crate::enrol::invites::Store, records: &[(String, String)]) {
    let settings = run.config.is_file().then(|| check_hub(run).ok()).flatten();
    let mut marked = false;
    // `--ep NAME --serial` of its own serial names one record twice.
    let mut seen = std::collections::HashSet::new();
    for (ep, serial) in records.iter().filter(|r| seen.insert((*r).clone())) {
        match store.mark_revoked(ep, serial) {
            Ok(true) => {
                marked = true;
                println!(
                    "ep {ep}'s token, address and services no longer count ({} marks it revoked)",
                    store.enrolled_path().display()
                )
            }
            Ok(false) => {}
            Err(err) => eprintln!(
                "warning: ep {ep} is not marked revoked in {} (its certificate is): {err:#}",
                store.enrolled_path().display()
            ),
        }
        let Some(s) = &settings else { continue };
        let own = s.credentials.per_ep.contains_key(ep.as_str())
            || (s.credentials.files.iter()).any(|(n, _)| n.as_deref() == Some(ep.as_str()));
        if own {
            eprintln!(
                "warning: [eps.{ep}] in {} gives ep {ep} a token of its own, which still logs \
                 it in where the hub does not follow the revocation list: remove it",
                run.config.display()
            );
        }
    }
    if let Some(s) = settings.filter(|s| marked && !s.watch_config) {
        println!(
            "{} has watch_config = false: reload the hub (systemctl reload ferry-hub, \
             or kill -HUP) to apply it",
            s.file.display()
        );
    }
}

/// Warns when the hub configuration here has no `tls.crl` naming the file
/// `revoke` wrote: that hub never sees the revocation, and an ep made by
/// `gen-cert` logs in as before (an enrolled one is shut out by its record,
/// marked revoked in enrolled.json). Silent where no
/// hub configuration is (a CA kept on another machine).
fn crl_unfollowed(run: &HubRun, wrote: &Path) {
    if !run.config.is_file() {
        return;
    }
    let Ok(settings) = check_hub(run) else { return };
    let same = |p: &Path| {
        let real = |p: &Path| std::fs::canonicalize(p).ok();
        real(p).is_some() && real(p) == real(wrote)
    };
    if !settings.crl.as_deref().is_some_and(same) {
        eprintln!(
            "warning: {} has no tls.crl = \"{}\": the hub it configures does not read \
             this list, so an ep made by gen-cert logs in as before (an enrolled one is \
             shut out by its record, marked revoked in enrolled.json). Add it under [tls] \
             (a reload applies it, and the hub follows the file from then on)",
            run.config.display(),
            wrote.display()
        );
    }
}

fn new_token() -> Result<()> {
    let t = token::generate();
    println!("token: {}", t.expose());
    println!(
        "token_hash = \"{}\"",
        token::hash(&t).map_err(anyhow::Error::msg)?
    );
    eprintln!("Put token_hash in hub.toml and the token in the ep's config (or FERRY_TOKEN).");
    Ok(())
}

fn hash_token() -> Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read stdin")?;
    let t = Secret::new(input.trim());
    anyhow::ensure!(!t.is_empty(), "no token on stdin");
    println!("{}", token::hash(&t).map_err(anyhow::Error::msg)?);
    Ok(())
}

fn run_hub(run: &HubRun) -> Result<()> {
    let settings = check_hub(run)?;
    crate::logging::init(settings.log_format);
    runtime()?.block_on(async {
        let (shutdown, immediate) = (CancellationToken::new(), CancellationToken::new());
        crate::shutdown::on_signal(shutdown.clone(), immediate.clone());
        let hub = crate::hub::Hub::bind(settings).await?;
        if let Some(path) = &run.ready_file {
            hub.set_ready_file(path.clone())?;
        }
        hub.run_until(shutdown, immediate).await
    })
}

fn ep_check(args: &EpArgs) -> Result<()> {
    let (settings, tls) = crate::ep::load(check_ep(args)?)?;
    print!("{settings}");
    println!("  identity  {} (from the client certificate)", tls.identity);
    println!("ok");
    Ok(())
}

fn join(j: &JoinArgs) -> Result<()> {
    let line = match j.line.as_deref() {
        None | Some("-") => line_from_stdin()?,
        Some(line) => line.to_string(),
    };
    let joined = runtime()?.block_on(crate::ep::join::join(&line, &j.dir, j.force))?;
    println!(
        "enrolled as ep {}; wrote {} and its certs/",
        joined.ep,
        joined.config.display()
    );
    if !joined.services.is_empty() {
        println!("once it runs, it serves (the hub chose these; edit `local` where one is wrong):");
        for s in &joined.services {
            println!("  {s}");
        }
    }
    println!(
        "check the services' local addresses in it, then run: ferry ep -c {}",
        joined.config.display()
    );
    Ok(())
}

/// The invite line from standard input: its first line, asked for when
/// a person types it.
fn line_from_stdin() -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprint!("paste the line `ferry hub invite` printed, then Enter: ");
    }
    let mut line = String::new();
    // Bounded: a line is under 200 bytes; this is not where to take a file.
    std::io::stdin()
        .lock()
        .take(4096)
        .read_line(&mut line)
        .context("cannot read the invite line from standard input")?;
    let line = line.trim();
    anyhow::ensure!(
        !line.is_empty(),
        "no invite line: pass it as an argument, or on standard input"
    );
    Ok(line.to_string())
}

fn run_ep(args: &EpArgs) -> Result<()> {
    let settings = check_ep(args)?;
    crate::logging::init(settings.log_format);
    runtime()?.block_on(async {
        let (shutdown, immediate) = (CancellationToken::new(), CancellationToken::new());
        crate::shutdown::on_signal(shutdown.clone(), immediate.clone());
        let ep = crate::ep::bind(settings, shutdown, immediate).await?;
        if let Some(path) = &args.ready_file {
            ep.set_ready_file(path.clone())?;
        }
        ep.run().await
    })
}

/// What reloading `settings` would change in a hub running with its admin
/// door: the same plan the hub logs when it reloads, applied nowhere.
fn print_plan(settings: &HubSettings, tls_digest: &str) {
    use crate::config::plan::{Plan, Summary};
    let Some(addr) = settings.admin.as_ref().map(|a| loopback(a.bind)) else {
        println!("reload plan: not shown (no [admin] door to ask the running hub)");
        return;
    };
    let token = std::env::var("FERRY_ADMIN_TOKEN").ok();
    let running = crate::admin::client::get(addr, "/api/config", token.as_deref())
        .ok()
        .and_then(|body| serde_json::from_str::<Summary>(&body).ok());
    match running {
        Some(running) => {
            let plan = Plan::between(&running, &Summary::of(settings, tls_digest));
            println!("reload plan against the hub running at {addr}: {plan}");
        }
        None => println!("reload plan: no running hub answered at {addr}"),
    }
}

/// A door listening on every address is reached on loopback.
fn loopback(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

fn status(bind: Option<SocketAddr>, st: &StatusArgs, role: &str) -> Result<()> {
    let Some(mut addr) = st.admin.or(bind) else {
        anyhow::bail!(
            "the {role} config has no [admin] bind = \"127.0.0.1:…\": no admin door to ask"
        );
    };
    anyhow::ensure!(
        addr.port() != 0,
        "admin.bind has port 0 (chosen at start): pass --admin ADDR"
    );
    addr = loopback(addr);
    if st.players {
        let body = crate::admin::client::get(addr, "/api/players", st.token.as_deref())?;
        if st.json {
            println!("{body}");
        } else {
            let v: serde_json::Value =
                serde_json::from_str(&body).context("the admin door sent no JSON")?;
            print!("{}", crate::admin::client::render_players(&v));
        }
        return Ok(());
    }
    let body = crate::admin::client::get(addr, "/api/status", st.token.as_deref())?;
    if st.bans {
        let v: serde_json::Value =
            serde_json::from_str(&body).context("the admin door sent no JSON")?;
        match st.json {
            true => println!("{}", v["bans"]),
            false => print!("{}", crate::admin::client::render_bans(&v)),
        }
        return Ok(());
    }
    if st.json {
        println!("{body}");
    } else {
        let v: serde_json::Value =
            serde_json::from_str(&body).context("the admin door sent no JSON")?;
        print!("{}", crate::admin::client::render(&v));
    }
    Ok(())
}

fn invite(settings: &HubSettings, a: InviteArgs) -> Result<()> {
    use crate::enrol::invites::{Store, now};
    let store = || {
        settings
            .enrol
            .as_ref()
            .map(|e| Store::new(&e.state))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "enrolment is off: add [enrol] bind = \"0.0.0.0:7003\" to {}",
                    settings.file.display()
                )
            })
    };
    if a.list {
        let now = now();
        for i in store()?.invites()? {
            let state = match i.state {
                crate::enrol::invites::State::Open if i.expires <= now => "expired".to_string(),
                s => format!("{s:?}").to_lowercase(),
            };
            let left = i.expires.saturating_sub(now);
            println!(
                "{}  ep {:<16} {state:<8} {}h{:02}m left",
                i.id,
                i.ep,
                left / 3600,
                left % 3600 / 60
            );
        }
        return Ok(());
    }
    if let Some(id) = &a.revoke {
        match store()?.revoke(id)? {
            (i, false) => println!("revoked invite {} for ep {}", i.id, i.ep),
            (i, true) => println!(
                "invite {} was already used: ep {} enrolled with it; its machine may no longer \
                 ask again with it. To cut that machine off, `ferry hub revoke --dir STATE --ep {}`",
                i.id, i.ep, i.ep
            ),
        }
        return Ok(());
    }
    let ep = a.ep.as_deref().unwrap_or_default();
    let ttl = crate::config::parse_duration(&a.expires).map_err(anyhow::Error::msg)?;
    let from = if a.from.is_empty() {
        None
    } else {
        Some(serde_json::from_value(serde_json::json!(a.from)).context("--from")?)
    };
    let issued = crate::enrol::invite(settings, ep, ttl, from, &a.hub, &a.services)?;
    println!(
        "invite {} for ep {}, usable once within {} (secret stored only as a hash)",
        issued.line.id, issued.ep, a.expires
    );
    if a.services.is_empty() {
        println!(
            "it grants no service: pass --service NAME, or grant later with \
             [eps.{ep}] services = [..] in {}",
            settings.file.display()
        );
    } else {
        println!("it grants: {}", a.services.join(", "));
        for svc in a.services.iter().filter(|s| !settings.grants.claimed(s)) {
            println!(
                "note: {svc} is now granted by a list, so eps without one (your own ep on the \
                 shared token, say) may no longer serve it: list them under [eps.NAME] services"
            );
        }
    }
    invite_notes(&store()?, &issued.line.id, ep)?;
    println!("at home, run:\n\n  ferry ep join {}\n", issued.line);
    // The line is a secret until used: as an argument it shows in `ps`
    // and stays in the shell's history.
    println!(
        "(or run `ferry ep join` alone and paste the line when it asks: it then stays out \
         of `ps` and the shell's history)"
    );
    Ok(())
}

/// What using the new invite `id` for `ep` will do to what exists: other
/// open invites for the name are revoked when one is used, and a machine
/// enrolled under it is replaced.
fn invite_notes(store: &crate::enrol::invites::Store, id: &str, ep: &str) -> Result<()> {
    use crate::enrol::invites::{State, now};
    let now = now();
    let open: Vec<String> = store
        .invites()?
        .into_iter()
        .filter(|i| i.ep == ep && i.id != id && i.state == State::Open && i.expires > now)
        .map(|i| i.id)
        .collect();
    if !open.is_empty() {
        println!(
            "note: invite {} for ep {ep} is still open; the first of these used revokes the others",
            open.join(", ")
        );
    }
    match store.enrolled()?.eps.get(ep).map(|e| e.revoked) {
        Some(false) => println!(
            "note: ep {ep} is enrolled; a machine joining with this invite replaces it \
             (its certificate is revoked)"
        ),
        Some(true) => {
            println!("note: ep {ep} was revoked; a machine joining with this invite takes the name")
        }
        None => {}
    }
    Ok(())
}

fn gen_cert(g: GenCertArgs, run: &HubRun) -> Result<()> {
    let report = GenCert {
        dir: ca_dir(g.dir, run)?,
        hub_names: g.hub_names,
        hub_ips: g.hub_ips,
        eps: g.eps,
        force: g.force,
    }
    .run()?;
    if report.written.is_empty() {
        println!(
            "nothing to do: the CA and hub certificate exist (add --ep NAME for an ep certificate)"
        );
    }
    for f in report.written {
        println!("wrote {}", f.display());
    }
    for r in report.revoked {
        println!(
            "revoked the replaced certificate of {r} in crl.pem: a hub whose tls.crl follows it refuses that certificate within seconds"
        );
    }
    Ok(())
}
