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
    let (first_key, first_cols, service_cols) = super::columns(role);
    let list = |k: &str| status[k].as_array().unwrap_or(&empty).clone();
    let first = table(&list(first_key), first_cols[0], first_cols);
    let second = table(&list("services"), "name", service_cols);
    let heads = serde_json::json!([first_key, first_cols, service_cols]);
    TEMPLATE
        .replace("{{ROLE}}", role)
        .replace("{{VERSION}}", &cell(&status["version"]))
        .replace("{{FIRST}}", &first)
        .replace("{{SECOND}}", &second)
        .replace("{{HEADS}}", &heads.to_string())
        // JSON inside <script> is not HTML-decoded; only `<` could end it.
        .replace("{{STATUS}}", &status.to_string().replace('<', "\\u003c"))
}
