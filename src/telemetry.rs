//! Structured logging: human-readable by default, JSON (one object per line, with the span
//! context such as the request id) when `LOG_FORMAT=json`, as log collectors expect.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the default level. A second call
/// (tests build many apps in one process) is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Json => fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .try_init(),
        LogFormat::Text => fmt().with_env_filter(filter).try_init(),
    };
    drop(result);
}
