//! Logs on stderr, filtered by `RUST_LOG` (default `info`): human-readable
//! by default, one JSON object a line with `log_format = "json"` (or
//! `FERRY_LOG_FORMAT=json`) for log collectors.

use crate::config::admin::LogFormat;
use tracing_subscriber::{EnvFilter, fmt};

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
