//! Structured logging: human-readable by default, JSON (one object per line, with the span
//! context such as the request id) when `LOG_FORMAT=json`, as log collectors expect.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// The default filter of a deployed gateway.
pub const DEFAULT_FILTER: &str = "info";

/// The default filter of `--sandbox`: the embedded S3 server (s3s) logs every error answer
/// it gives as `ERROR` with a debug dump, including the 404 of every dedup HEAD and the 501
/// of operations s3s-fs lacks. Those are answers the gateway expects and handles (and logs
/// itself when they matter), not errors a newcomer should see; `RUST_LOG=info,s3s=debug`
/// brings them back.
pub const SANDBOX_FILTER: &str = "info,s3s=off,s3s_fs=warn";

/// Installs the global subscriber with [`DEFAULT_FILTER`]; see [`init_with`].
pub fn init(format: LogFormat) {
    init_with(format, DEFAULT_FILTER);
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`. A second call
/// (tests build many apps in one process) is a no-op.
pub fn init_with(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
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
