//! `ferry hub status` / `ferry ep status`: the local admin door's
//! `/api/status`, printed as a table.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::{io::Read, io::Write, net::SocketAddr, time::Duration};

/// The most of an answer read: `/api/players` lists every player, at
/// most ~450 bytes each, and a hub holds at most ~500,000 (half of the
/// 2^20 descriptors it may raise its limit to).
const MOST: u64 = 256 << 20;

/// GETs `path` from the admin door at `addr`.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<String> {
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| {
            format!("cannot reach the admin door at {addr} (is the process running with [admin]?)")
        })?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    // A door that never stops sending (not ferry's) must not take the
    // terminal's memory.
    (&mut tcp).take(MOST + 1).read_to_end(&mut reply)?;
    if reply.len() as u64 > MOST {
        bail!(
            "the admin door at {addr} sent more than {} MiB; stopped reading",
            MOST >> 20
        );
    }
    let reply = String::from_utf8(reply).with_context(|| {
        format!("the admin door at {addr} answered with bytes that are not text")
    })?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head.split(' ').nth(1).unwrap_or("");
    match status {
        "200" => Ok(body.to_string()),
        "401" => bail!("the admin door wants a token: --token or FERRY_ADMIN_TOKEN"),
        other => bail!("the admin door answered {other}: {}", body.trim()),
    }
}

/// A cell as the terminal shows it: text another process wrote (an ep's
/// version, a hub's reason) with no control characters to act on.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s
            .chars()
            .map(|c| if crate::proto::unshowable(c) { '?' } else { c })
            .collect(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A table of `rows` with `cols`, columns as wide as their widest cell.
fn table(rows: &[Value], cols: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| text(&r[*c])).collect())
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|r| r[i].len())
            .chain([cols[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..cols.len()).map(width).collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(cols.iter().map(|c| c.replace('_', " ")).collect()) + "\n";
    for r in cells {
        out += &(line(r) + "\n");
    }
    out
}

/// The status JSON as a person reads it.
pub fn render(status: &Value) -> String {
    let empty = Vec::new();
    let list = |k: &str| status[k].as_array().unwrap_or(&empty).clone();
    let mut out = format!(
        "ferry {} {}, up {}s\n\n",
        text(&status["role"]),
        text(&status["version"]),
        text(&status["uptime_s"])
    );
    let (first_key, first_cols, service_cols) =
        super::columns(status["role"].as_str().unwrap_or(""));
    out += &table(&list(first_key), first_cols);
    out += "\n";
    out += &table(&list("services"), service_cols);
    out
}

/// `/api/players` as a person reads it: latencies in ms, "-" where there
/// is none (a UDP flow's RTT, a figure not yet measured).
pub fn render_players(rows: &Value) -> String {
    let empty = Vec::new();
    let rows = rows.as_array().unwrap_or(&empty);
    let cols: Vec<&str> = super::page::PLAYER_COLUMNS
        .iter()
        .map(|(k, _)| *k)
        .collect();
    if rows.is_empty() {
        return "no players\n".into();
    }
    format!("{} players\n\n{}", rows.len(), table(rows, &cols))
}

/// Unix seconds as a UTC date and time a person reads.
pub fn utc(secs: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs.min(i64::MAX as u64) as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} (unix seconds)"),
    }
}

/// The hub's bans in force (`"bans"` of its status) as a table.
pub fn render_bans(status: &Value) -> String {
    let Some(bans) = status["bans"].as_array() else {
        return "this hub does not report bans (older than `ferry hub ban`)\n".into();
    };
    if bans.is_empty() {
        return "no bans\n".into();
    }
    let time = |v: &Value, none: &str| v.as_u64().map_or(none.to_string(), utc);
    let rows: Vec<Value> = bans
        .iter()
        .map(|b| {
            serde_json::json!({
                "address": b["address"],
                "service": super::page::ban_scope(b),
                "until": time(&b["until"], "permanent"),
                "since": time(&b["since"], "-"),
            })
        })
        .collect();
    table(&rows, &["address", "service", "until", "since"])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Something else on the admin door's port that never stops sending
    /// is cut off with a clear error, not read into memory for ever.
    #[test]
    fn an_endless_answer_is_refused() {
        let door = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = door.local_addr().unwrap();
        let talker = std::thread::spawn(move || {
            let (mut s, _) = door.accept().unwrap();
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            let chunk = vec![b'a'; 1 << 20];
            while s.write_all(&chunk).is_ok() {}
        });
        let e = get(addr, "/api/status", None).unwrap_err();
        assert!(e.to_string().contains("stopped reading"), "{e}");
        talker.join().unwrap();
    }
}
