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

pub fn render(role: &str, status: &Value) -> String {
    let empty = Vec::new();
    let list = |k: &str| status[k].as_array().unwrap_or(&empty).clone();
    let (first, second) = match role {
        "hub" => (
            table(
                &list("eps"),
                "name",
                &["name", "address", "version", "connected_for"],
            ),
            table(
                &list("services"),
                "name",
                &[
                    "name",
                    "players",
                    "players_total",
                    "bytes_up",
                    "bytes_down",
                    "refusals",
                    "pool_ready",
                ],
            ),
        ),
        _ => (
            table(&list("hub"), "hub", &["hub", "state", "transport", "since"]),
            table(
                &list("services"),
                "name",
                &[
                    "name",
                    "local",
                    "players",
                    "players_total",
                    "bytes_up",
                    "bytes_down",
                    "local_reachable",
                ],
            ),
        ),
    };
    TEMPLATE
        .replace("{{ROLE}}", role)
        .replace("{{VERSION}}", &cell(&status["version"]))
        .replace("{{FIRST}}", &first)
        .replace("{{SECOND}}", &second)
        // JSON inside <script> is not HTML-decoded; only `<` could end it.
        .replace("{{STATUS}}", &status.to_string().replace('<', "\\u003c"))
}
