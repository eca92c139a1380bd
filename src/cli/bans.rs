//! `ferry hub ban`, `unban` and `kick`: they change `bans.json` in the
//! hub's state folder (see `crate::bans`), which the running hub follows
//! within a second; nothing is sent to the hub, whose admin door stays
//! read-only. They work whether the hub runs or not.

use crate::{
    bans::{self, Ban, Kick, Net},
    config::hub::HubSettings,
};
use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub(super) struct BanArgs {
    /// An address (203.0.113.7, 2001:db8::7) or a network (203.0.113.0/24).
    #[arg(value_name = "ADDRESS|CIDR")]
    address: String,
    /// For how long ("30m", "1h", "72h"); without it, until `ferry hub
    /// unban`.
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// Only from this service; without it, from every service.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
}

#[derive(Args)]
pub(super) struct UnbanArgs {
    /// The address or network exactly as banned.
    #[arg(value_name = "ADDRESS|CIDR")]
    address: String,
    /// Only its ban from this service; without it, every ban of it.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
}

#[derive(Args)]
pub(super) struct KickArgs {
    /// The address (or network) whose players to close; they may come
    /// back (`ferry hub ban` keeps them out).
    #[arg(value_name = "ADDRESS|CIDR")]
    address: String,
    /// Only its players of this service.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
}

/// The address argument, parsed.
fn net(s: &str) -> Result<Net> {
    Net::parse(s).map_err(anyhow::Error::msg)
}

/// `--service`, checked against the services hub.toml names.
fn service(settings: &HubSettings, name: Option<&str>) -> Result<Option<String>> {
    let Some(name) = name else { return Ok(None) };
    if settings.service(name).is_some() {
        return Ok(Some(name.to_string()));
    }
    let known: Vec<&str> = settings.services.iter().map(|s| s.name.as_str()).collect();
    anyhow::bail!(
        "no service {name:?} in {}; its services: {}",
        settings.file.display(),
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

fn scope(service: Option<&str>) -> String {
    match service {
        Some(s) => format!("service {s}"),
        None => "every service".to_string(),
    }
}

pub(super) fn ban(settings: &HubSettings, a: BanArgs) -> Result<()> {
    let address = net(&a.address)?;
    let service = service(settings, a.service.as_deref())?;
    let length = match &a.duration {
        Some(d) => {
            let d = crate::config::parse_duration(d)
                .map_err(anyhow::Error::msg)
                .context("--for")?;
            anyhow::ensure!(
                d.as_secs() > 0,
                "--for {} is under a second; leave --for out to ban until unbanned",
                a.duration.as_deref().unwrap_or_default()
            );
            Some(d)
        }
        None => None,
    };
    let now = crate::history::unix_now();
    let ban = Ban {
        address,
        service: service.clone(),
        until: length.map(until),
        since: now,
    };
    let path = bans::path(settings);
    let same = |b: &Ban| b.address == ban.address && b.service == ban.service;
    let before = bans::change(&path, now, |f| {
        let before = f.in_force(now).find(|b| same(b)).map(|b| b.until);
        f.bans.retain(|b| !same(b));
        f.bans.push(ban.clone());
        before
    })?;
    let ends = |until: Option<u64>| match until {
        Some(u) => format!("until {}", crate::admin::client::utc(u)),
        None => "until `ferry hub unban`".to_string(),
    };
    let scope = scope(service.as_deref());
    match before {
        // The new length replaces the old one, shorter or longer: said,
        // so a permanent ban is not shortened unnoticed.
        Some(was) => println!(
            "banned {address} again from {scope}, {} (it was banned {})",
            ends(ban.until),
            ends(was)
        ),
        None => println!("banned {address} from {scope}, {}", ends(ban.until)),
    }
    println!(
        "wrote {}; a running hub closes its players and refuses it within a second",
        path.display()
    );
    followed_elsewhere(settings, &path);
    Ok(())
}

/// The whole second at which a ban of `length` from now ends: rounded
/// up, so it lasts at least that long (the hub counts whole seconds).
fn until(length: std::time::Duration) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let end = now + length;
    end.as_secs() + u64::from(end.subsec_nanos() > 0)
}

pub(super) fn unban(settings: &HubSettings, a: UnbanArgs) -> Result<()> {
    let address = net(&a.address)?;
    // A service since removed from hub.toml may still have a ban to lift.
    let only = a.service.clone();
    let path = bans::path(settings);
    let now = crate::history::unix_now();
    let (removed, covering) = bans::change(&path, now, |f| {
        let before = f.bans.len();
        f.bans.retain(|b| {
            b.address != address || only.as_ref().is_some_and(|s| b.service.as_ref() != Some(s))
        });
        let covering: Vec<String> = f
            .bans
            .iter()
            .filter(|b| b.address != address)
            .filter(|b| single(&address).is_some_and(|ip| b.address.contains(ip)))
            .map(|b| b.address.to_string())
            .collect();
        (before - f.bans.len(), covering)
    })?;
    if removed == 0 {
        println!(
            "no ban of {address}{} in {}",
            only.map(|s| format!(" from service {s}"))
                .unwrap_or_default(),
            path.display()
        );
    } else {
        println!(
            "lifted {removed} ban{} of {address}; wrote {}: a running hub lets it in within a second",
            if removed == 1 { "" } else { "s" },
            path.display()
        );
    }
    if !covering.is_empty() {
        println!(
            "note: it is still inside banned networks: {}",
            covering.join(", ")
        );
    }
    followed_elsewhere(settings, &path);
    Ok(())
}

/// The one address `net` is, if it is a host.
fn single(net: &Net) -> Option<std::net::IpAddr> {
    net.to_string().parse().ok()
}

pub(super) fn kick(settings: &HubSettings, a: KickArgs) -> Result<()> {
    let address = net(&a.address)?;
    let service = service(settings, a.service.as_deref())?;
    let now = crate::history::unix_now();
    let kick = Kick {
        address,
        service: service.clone(),
        at: now,
        id: crate::token::random_hex(6),
    };
    let path = bans::path(settings);
    bans::change(&path, now, |f| f.kicks.push(kick))?;
    println!(
        "kick of {address} from {} written to {}",
        scope(service.as_deref()),
        path.display()
    );
    println!(
        "a running hub closes the players it has from there now within a second; \
         they may come back (`ferry hub ban` keeps them out)"
    );
    followed_elsewhere(settings, &path);
    Ok(())
}

/// Warns when the running hub (asked on its admin door, if that is on
/// this machine and answers without a token) follows another file than
/// `wrote`: hub.toml moved the state folder since the hub started, and the
/// hub takes that only when restarted. No token is sent: a stale one would
/// earn this machine a penalty, and hub.toml may now name another door.
fn followed_elsewhere(settings: &HubSettings, wrote: &std::path::Path) {
    let Some(admin) = settings.admin.as_ref().filter(|a| a.bind.port() != 0) else {
        return;
    };
    let door = super::loopback(admin.bind);
    if !door.ip().is_loopback() {
        return;
    }
    let asked = crate::admin::client::get(door, "/api/status", None);
    let Some(status) = asked
        .ok()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
    else {
        return;
    };
    let Some(followed) = status["bans_file"].as_str().map(std::path::PathBuf::from) else {
        return;
    };
    let same = followed == wrote
        || matches!((followed.canonicalize(), wrote.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if !same {
        eprintln!(
            "warning: the running hub follows {}, not {}: hub.toml changed where the hub keeps \
             its state since it started. It takes this change only when restarted, and then \
             leaves the bans in {} behind",
            followed.display(),
            wrote.display(),
            followed.display()
        );
    }
}

/// `status --bans` of a hub whose admin door hides addresses: the file's
/// list, whole, as `unban` takes it. An error (the state folder not here:
/// not the hub's machine; the file unreadable or damaged) is said, and
/// the door asked.
pub(super) fn list_whole(settings: &HubSettings, json: bool) -> Result<()> {
    let path = bans::path(settings);
    // No file in a state folder that is there: no ban yet (the hub
    // writes none until the first). No folder: not the hub's machine.
    let folder = path.parent().map(std::fs::metadata);
    if !path.exists() && !matches!(folder, Some(Ok(m)) if m.is_dir()) {
        eprintln!(
            "no {} here: asking the admin door, whose list hides addresses",
            path.display()
        );
        anyhow::bail!("no bans file");
    }
    list(settings, json, "the admin door hides addresses").inspect_err(|e| {
        eprintln!("{e:#}: asking the admin door, whose list hides addresses");
    })
}

/// `status --bans` of a hub without an admin door (or one that hides
/// addresses): the bans in force as its file holds them (a running hub
/// follows the file within a second).
pub(super) fn list(settings: &HubSettings, json: bool, why: &str) -> Result<()> {
    let path = bans::path(settings);
    let now = crate::history::unix_now();
    let listed = bans::read(&path)?.listed_against(now, false, |s| settings.service(s).is_some());
    match json {
        true => println!("{listed}"),
        false => {
            println!("from {} ({why})", path.display());
            let status = serde_json::json!({ "bans": listed });
            print!("{}", crate::admin::client::render_bans(&status));
        }
    }
    Ok(())
}
