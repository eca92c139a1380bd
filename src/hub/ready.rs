//! `--ready-file`: every bound address as JSON, written once every port
//! listens and again after each reload, so scripts and tests learn the
//! ports from a file rather than from log lines.

use super::ControlAddrs;
use crate::config::hub::HubSettings;
use anyhow::{Context, Result};
use std::net::SocketAddr;

/// Each service's first address, as `--ready-file` lists them.
pub(super) fn services_json(
    settings: &HubSettings,
    addr: impl Fn(&str) -> Option<SocketAddr>,
) -> serde_json::Map<String, serde_json::Value> {
    settings
        .services
        .iter()
        .filter_map(|s| Some((s.name.clone(), addr(&s.name)?.to_string().into())))
        .collect()
}

pub(super) fn ready_json(
    a: ControlAddrs,
    services: serde_json::Map<String, serde_json::Value>,
    reloads: serde_json::Value,
) -> String {
    serde_json::json!({
        "control": a.control.to_string(),
        "channel": a.channel.to_string(),
        "services": services,
        "admin": a.admin.map(|a| a.to_string()),
        "enrol": a.enrol.map(|a| a.to_string()),
        "quic": a.quic.map(|a| a.to_string()),
        "reloads": reloads,
    })
    .to_string()
}

/// The reloads a SIGHUP asked for that are done (`signalled`, the last of
/// them begun at `began_us` on the system's monotonic clock), and how the
/// last reload went: what `ferry hub reload` waits on and reports.
pub fn reloads_json(
    (signalled, began_us): (u64, u64),
    last: &(u64, Result<String, String>),
) -> serde_json::Value {
    let (ok, said) = match &last.1 {
        Ok(line) => (true, line.as_str()),
        Err(e) => (false, e.as_str()),
    };
    serde_json::json!({
        "signalled": signalled, "began_us": began_us, "done": last.0, "ok": ok, "said": said,
    })
}

pub(super) fn write_ready(path: &std::path::Path, json: &str) -> Result<()> {
    // The owner's only: a refused reload's reason may quote the file.
    crate::files::write_file(path, json.as_bytes(), 0o600, true)
        .with_context(|| format!("--ready-file {}", path.display()))
}
