//! Logs on stderr, filtered by `RUST_LOG` (default `DEFAULT`): human-readable
//! by default, one JSON object a line with `log_format = "json"` (or
//! `FERRY_LOG_FORMAT=json`) for log collectors.

use crate::config::admin::LogFormat;
use tracing_subscriber::{EnvFilter, fmt};

/// `info`, but for what the QUIC and TLS libraries say of a peer's
/// packets at `warn` ("illegal packet", "discarding Initial with invalid
/// retry token", an alert received): a line per packet, which anyone on
/// an allowlisted address could send without end, past every rate limit
/// ferry puts on its own lines. ferry says what a failed handshake or a
/// closed connection means in its own (limited) lines.
const DEFAULT: &str = "info,quinn_proto=error,rustls=error";

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT));
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
