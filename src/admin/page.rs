//! The status page: one HTML file in the binary, filled in on the server
//! so it reads without scripts, then kept live by its script from
//! `/events` (no build step, no external resources).

use serde_json::Value;

const TEMPLATE: &str = include_str!("page.html");

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        // The page's placeholders are `{{…}}`: a name cannot make one.
        .replace('{', "&#123;")
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => esc(s),
        Value::Null => "—".into(),
        other => esc(&other.to_string()),
    }
}

/// Rows of `items` with the `keys` as columns, each cell tagged so the
/// script can update it in place.
fn table(items: &[Value], id_key: &str, keys: &[&str]) -> String {
    let mut out = String::new();
    for item in items {
        let id = item[id_key].as_str().unwrap_or("");
        out += &format!("<tr data-id=\"{}\">", esc(id));
        for k in keys {
            out += &format!("<td data-k=\"{k}\">{}</td>", cell(&item[*k]));
        }
        out += "</tr>\n";
    }
    out
}

/// The players table's columns (keys of `/api/players` rows) and heads.
pub const PLAYER_COLUMNS: &[(&str, &str)] = &[
    ("service", "service"),
    ("player", "player"),
    ("protocol", "protocol"),
    ("transport", "transport"),
    ("ep", "ep"),
    ("connected_for_s", "connected"),
    ("bytes_up", "bytes up"),
    ("bytes_down", "bytes down"),
    ("rate", "rate"),
    ("player_hub_ms", "player ↔ hub"),
    ("hub_ep_ms", "hub ↔ ep"),
    ("ep_service_ms", "ep → service"),
];

/// Rows the page shows at most; the count says how many there are.
pub const MAX_PLAYER_ROWS: usize = 500;

fn player_rows(players: &[Value]) -> String {
    let mut out = String::new();
    for p in players.iter().take(MAX_PLAYER_ROWS) {
        out += "<tr>";
        for (k, _) in PLAYER_COLUMNS {
            let v = &p[*k];
            let unit = match *k {
                _ if v.is_null() => "",
                k if k.ends_with("_ms") => " ms",
                "connected_for_s" => " s",
                "rate" => " B/s",
                _ => "",
            };
            out += &format!("<td data-k=\"{k}\">{}{unit}</td>", cell(v));
        }
        out += "</tr>\n";
    }
    out
}

/// Whom a ban (a row of `"bans"`) applies to: "all", or its service,
/// said gone when hub.toml no longer has it (the ban keeps nobody out).
pub fn ban_scope(b: &Value) -> String {
    match b["service"].as_str() {
        None => "all".into(),
        Some(s) if b["service_gone"] == true => format!("{s} (not in hub.toml)"),
        Some(s) => s.into(),
    }
}

/// Bans a page (and each of its live updates) lists: a list can hold
/// 10,000, and a page sent whole each second would cost the hub and the
/// browser a megabyte a second. `ferry hub status --bans` lists them all.
pub const MAX_BAN_ROWS: usize = 200;

/// `status` for a page: its bans cut to the last `MAX_BAN_ROWS` (the
/// newest: a ban is added at the end), with how many there are in
/// `bans_total`.
pub fn for_page(mut status: Value) -> Value {
    let Some(o) = status.as_object_mut() else {
        return status;
    };
    if let Some(bans) = o.get_mut("bans").and_then(Value::as_array_mut) {
        let total = bans.len();
        bans.drain(..total.saturating_sub(MAX_BAN_ROWS));
        o.insert("bans_total".into(), total.into());
    }
    status
}

fn ban_rows(bans: &[Value], total: usize) -> String {
    let mut out = String::new();
    if total > bans.len() {
        out += &format!(
            "<tr><td colspan=\"4\">the last {} of {total}: <code>ferry hub status --bans</code> lists them all</td></tr>\n",
            bans.len()
        );
    }
    for b in bans {
        let when = |k: &str, none: &str| match b[k].as_u64() {
            Some(t) => format!("{t} (unix)"),
            None => none.into(),
        };
        out += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            cell(&b["address"]),
            esc(&ban_scope(b)),
            when("until", "permanent"),
            when("since", "—"),
        );
    }
    out
}

/// The page: `status`, and on the hub `players`; `history` seeds the charts.
pub fn render(
    role: &str,
    status: &Value,
    players: Option<&Value>,
    history: Option<&Value>,
) -> String {
    let empty = Vec::new();
    let (first_key, first_cols, service_cols) = super::columns(role);
    let list = |k: &str| status[k].as_array().unwrap_or(&empty).clone();
    let first = table(&list(first_key), first_cols[0], first_cols);
    let second = table(&list("services"), "name", service_cols);
    let heads = serde_json::json!([first_key, first_cols, service_cols]);
    let mut page = TEMPLATE.to_string();
    if role != "hub" {
        // The players and bans tables are the hub's.
        if let (Some(a), Some(b)) = (page.find("<!--hub-->"), page.find("<!--/hub-->")) {
            page.replace_range(a..b + "<!--/hub-->".len(), "");
        }
    }
    let players = players.and_then(|p| p.as_array()).unwrap_or(&empty);
    let player_heads: String = PLAYER_COLUMNS
        .iter()
        .map(|(_, h)| format!("<th>{h}</th>"))
        .collect();
    let cols: Vec<&str> = PLAYER_COLUMNS.iter().map(|(k, _)| *k).collect();
    let script = |v: &Value| v.to_string().replace('<', "\\u003c");
    let bans = list("bans");
    let bans_total = status["bans_total"]
        .as_u64()
        .map_or(bans.len(), |n| n as usize);
    page.replace("{{ROLE}}", role)
        .replace("{{VERSION}}", &cell(&status["version"]))
        .replace("{{FIRST}}", &first)
        .replace("{{SECOND}}", &second)
        .replace("{{PLAYER_HEADS}}", &player_heads)
        .replace("{{PLAYERS}}", &player_rows(players))
        .replace("{{BANS}}", &ban_rows(&bans, bans_total))
        .replace("{{HEADS}}", &heads.to_string())
        .replace("{{PLAYER_COLS}}", &serde_json::json!(cols).to_string())
        // JSON inside <script> is not HTML-decoded; only `<` could end it.
        .replace("{{HISTORY}}", &script(history.unwrap_or(&Value::Null)))
        .replace("{{STATUS}}", &script(status))
}
