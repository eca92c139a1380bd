//! The harness every bench includes (`#[path = "../common/mod.rs"]`), so
//! the ferry processes, the services at "home", the measurements and the
//! report are set up one way in `tunnel`, `udp` and `quic` alike.

// Each bench uses its own part of the harness; the rest is not dead code.
#![allow(dead_code)]

pub mod cluster;
pub mod hop;
pub mod machine;
pub mod measure;
pub mod plainhop;
pub mod tcp;
pub mod udp;

// The tests' process harness: the same spawn, log and /proc reading.
#[path = "../../tests/common/procs.rs"]
pub mod ferryproc;

/// The flags every bench takes: `--smoke` for a quick pass that only
/// proves the bench still runs, `--json PATH` for where figures go.
pub struct Args {
    all: Vec<String>,
    pub smoke: bool,
    pub json: String,
}

impl Args {
    /// The JSON goes to `target/bench-NAME.json` unless `--json` says.
    pub fn parse(name: &str) -> Args {
        let all: Vec<String> = std::env::args().collect();
        let mut args = Args {
            smoke: all.iter().any(|a| a == "--smoke"),
            json: format!("target/bench-{name}.json"),
            all,
        };
        if let Some(path) = args.value("--json") {
            args.json = path.to_string();
        }
        args
    }

    pub fn has(&self, flag: &str) -> bool {
        self.all.iter().any(|a| a == flag)
    }

    /// The word after `flag`; also how a bench re-executed as one of its
    /// own relay processes learns its targets.
    pub fn value(&self, flag: &str) -> Option<&str> {
        let i = self.all.iter().position(|a| a == flag)?;
        self.all.get(i + 1).map(String::as_str)
    }
}

/// Prints a result line as soon as it is known, and keeps it for the summary.
macro_rules! say {
    ($out:expr, $($t:tt)*) => {{
        let line = format!($($t)*);
        println!("{line}");
        $out.push_str(&line);
        $out.push('\n');
    }};
}
pub(crate) use say;

pub type Json = serde_json::Map<String, serde_json::Value>;

/// The report's first line and the JSON's "machine": figures mean little
/// without the machine and the open-file limit they were taken under.
pub fn begin(title: &str, fd_limit: u64) -> (String, Json) {
    let (mut out, mut js) = (String::new(), Json::new());
    let m = machine::machine();
    say!(
        out,
        "ferry {title} benchmark — {m}; open-file limit {fd_limit}"
    );
    js.insert("machine".into(), serde_json::json!(m));
    (out, js)
}

pub fn write_json(path: &str, js: &Json) {
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(path, serde_json::to_string_pretty(js).unwrap()).unwrap();
    println!("JSON written to {path}");
}
