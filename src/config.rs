//! Typed settings, read from the environment only.
//!
//! Every variable the binary reads is listed in [`ENV_VARS`]; `--help` prints that table and CI
//! checks the k8s manifests against it, so documentation cannot drift from the code. Parsing
//! goes through a lookup function rather than `std::env` directly so tests and the sandbox can
//! build settings without mutating the (process-global) environment.

use std::{net::SocketAddr, time::Duration};

use secrecy::SecretString;
use url::Url;

use crate::{
    domain::{Prefix, PrefixError},
    link_policy::{HostPattern, HostPatternError, LinkPolicy},
};

/// One documented environment variable.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    pub name: &'static str,
    /// `None` means required (outside `--sandbox`).
    pub default: Option<&'static str>,
    pub help: &'static str,
}

const fn var(name: &'static str, default: Option<&'static str>, help: &'static str) -> EnvVar {
    EnvVar {
        name,
        default,
        help,
    }
}

/// Everything the gateway reads from its environment (besides the standard AWS chain).
pub const ENV_VARS: &[EnvVar] = &[
    var(
        "LISTEN_ADDR",
        Some("0.0.0.0:8080"),
        "Address of the HTTP API.",
    ),
    var(
        "METRICS_ADDR",
        Some(""),
        "If set, serve /metrics on this address only (not on LISTEN_ADDR).",
    ),
    var(
        "FINPASS_BASE_URL",
        Some("https://api.finpass.ai"),
        "Finpass API base URL.",
    ),
    var("FINPASS_API_KEY", None, "Finpass x-api-key (secret)."),
    var("FINPASS_API_SECRET", None, "Finpass x-api-secret (secret)."),
    var(
        "FINPASS_TIMEOUT_MS",
        Some("10000"),
        "Timeout of one Finpass call attempt.",
    ),
    var(
        "STATEMENTS_BUCKET",
        None,
        "S3 bucket that receives the PDFs.",
    ),
    var(
        "STATEMENTS_PREFIX",
        Some("statements/"),
        "Key prefix of stored statements.",
    ),
    var(
        "STAGING_PREFIX",
        Some("_staging/finpass-gateway/"),
        "Key prefix of in-progress uploads; give it a 1-day lifecycle expiry.",
    ),
    var(
        "S3_FORCE_PATH_STYLE",
        Some("false"),
        "Path-style S3 addressing (S3-compatible servers).",
    ),
    var(
        "MULTIPART_THRESHOLD_BYTES",
        Some("67108864"),
        "Reports larger than this (or of unknown size) use multipart upload.",
    ),
    var(
        "MULTIPART_PART_BYTES",
        Some("8388608"),
        "Multipart part size (5 MiB..=64 MiB).",
    ),
    var(
        "REPORT_LINK_ALLOWED_HOSTS",
        Some("*.amazonaws.com"),
        "Comma list of hosts report links may point at (`*.` wildcards, optional `:port`).",
    ),
    var(
        "REPORT_LINK_ALLOW_HTTP",
        Some("false"),
        "Allow plain-http report links.",
    ),
    var(
        "MAX_REPORT_BYTES",
        Some("104857600"),
        "Largest report accepted.",
    ),
    var(
        "REPORT_CONCURRENCY",
        Some("4"),
        "Reports of one call processed at once.",
    ),
    var(
        "MAX_CONCURRENT_CALLS",
        Some("64"),
        "Calls in progress per process; beyond it 503 + Retry-After.",
    ),
    var(
        "MAX_CONCURRENT_DOWNLOADS",
        Some("32"),
        "Report transfers in progress per process.",
    ),
    var(
        "DOWNLOAD_CONNECT_TIMEOUT_MS",
        Some("5000"),
        "Connect + response-head timeout of a link.",
    ),
    var(
        "DOWNLOAD_READ_TIMEOUT_MS",
        Some("30000"),
        "Longest silence while reading a report body.",
    ),
    var("LOG_FORMAT", Some("text"), "`text` or `json`."),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required but not set")]
    Missing { var: &'static str },
    /// The value itself is never echoed: it may be a secret pasted into the wrong variable.
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct FinpassSettings {
    pub base_url: Url,
    pub api_key: SecretString,
    pub api_secret: SecretString,
    pub attempt_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub bucket: String,
    pub prefix: Prefix,
    pub staging_prefix: Prefix,
    pub force_path_style: bool,
    pub multipart_threshold: u64,
    pub part_size: usize,
}

#[derive(Debug, Clone)]
pub struct DownloadSettings {
    pub policy: LinkPolicy,
    pub max_report_bytes: u64,
    pub report_concurrency: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_downloads: usize,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub max_calls: usize,
    pub finpass: FinpassSettings,
    pub storage: StorageSettings,
    pub download: DownloadSettings,
    pub log_format: LogFormat,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses settings from any name → value lookup (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let r = Reader { lookup: &lookup };
        let part_size: usize = r.parse("MULTIPART_PART_BYTES")?;
        if !(5 << 20..=64 << 20).contains(&part_size) {
            return Err(invalid(
                "MULTIPART_PART_BYTES",
                "must be between 5 MiB and 64 MiB",
            ));
        }
        let report_concurrency: usize = r.parse("REPORT_CONCURRENCY")?;
        if !(1..=64).contains(&report_concurrency) {
            return Err(invalid("REPORT_CONCURRENCY", "must be between 1 and 64"));
        }
        let allowed_hosts = r
            .string("REPORT_LINK_ALLOWED_HOSTS")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(HostPattern::parse)
            .collect::<Result<Vec<_>, HostPatternError>>()
            .map_err(|e| invalid("REPORT_LINK_ALLOWED_HOSTS", e))?;
        let base_url = r.parse::<Url>("FINPASS_BASE_URL")?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host_str().is_none() {
            return Err(invalid("FINPASS_BASE_URL", "must be an http(s) URL"));
        }
        let metrics_addr = match r.string("METRICS_ADDR")?.as_str() {
            "" => None,
            addr => Some(addr.parse().map_err(|e| invalid("METRICS_ADDR", e))?),
        };
        Ok(Self {
            listen_addr: r.parse("LISTEN_ADDR")?,
            metrics_addr,
            max_calls: r.positive("MAX_CONCURRENT_CALLS")?,
            finpass: FinpassSettings {
                base_url,
                api_key: r.secret("FINPASS_API_KEY")?,
                api_secret: r.secret("FINPASS_API_SECRET")?,
                attempt_timeout: r.millis("FINPASS_TIMEOUT_MS")?,
            },
            storage: StorageSettings {
                bucket: r.string("STATEMENTS_BUCKET")?,
                prefix: r.prefix("STATEMENTS_PREFIX")?,
                staging_prefix: r.prefix("STAGING_PREFIX")?,
                force_path_style: r.bool("S3_FORCE_PATH_STYLE")?,
                multipart_threshold: r.parse("MULTIPART_THRESHOLD_BYTES")?,
                part_size,
            },
            download: DownloadSettings {
                policy: LinkPolicy::new(allowed_hosts, r.bool("REPORT_LINK_ALLOW_HTTP")?),
                max_report_bytes: r.parse("MAX_REPORT_BYTES")?,
                report_concurrency,
                connect_timeout: r.millis("DOWNLOAD_CONNECT_TIMEOUT_MS")?,
                read_timeout: r.millis("DOWNLOAD_READ_TIMEOUT_MS")?,
                max_downloads: r.positive("MAX_CONCURRENT_DOWNLOADS")?,
            },
            log_format: match r.string("LOG_FORMAT")?.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid("LOG_FORMAT", "must be `text` or `json`")),
            },
        })
    }
}

/// Renders the variable table for `--help`.
pub fn env_help() -> String {
    let mut out = String::from(
        "Environment (plus the standard AWS chain: AWS_REGION, AWS_ENDPOINT_URL_S3, credentials, AWS_REQUEST_CHECKSUM_CALCULATION):\n",
    );
    for v in ENV_VARS {
        let default = v
            .default
            .map_or_else(|| "required".to_owned(), |d| format!("default {d}"));
        out.push_str(&format!("  {:<28} {} [{}]\n", v.name, v.help, default));
    }
    out
}

fn invalid(var: &'static str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.to_string(),
    }
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    fn string(&self, name: &'static str) -> Result<String, ConfigError> {
        let doc = ENV_VARS.iter().find(|v| v.name == name);
        debug_assert!(doc.is_some(), "{name} is missing from ENV_VARS");
        match (self.lookup)(name)
            .filter(|v| !v.trim().is_empty() || doc.and_then(|d| d.default) == Some(""))
        {
            Some(v) => Ok(v.trim().to_owned()),
            None => doc
                .and_then(|d| d.default)
                .map(str::to_owned)
                .ok_or(ConfigError::Missing { var: name }),
        }
    }

    fn secret(&self, name: &'static str) -> Result<SecretString, ConfigError> {
        Ok(SecretString::from(self.string(name)?))
    }

    fn parse<T: std::str::FromStr>(&self, name: &'static str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.string(name)?
            .parse()
            .map_err(|e: T::Err| invalid(name, e))
    }

    fn positive(&self, name: &'static str) -> Result<usize, ConfigError> {
        match self.parse(name)? {
            0 => Err(invalid(name, "must be greater than zero")),
            n => Ok(n),
        }
    }

    fn millis(&self, name: &'static str) -> Result<Duration, ConfigError> {
        let ms: u64 = self.parse(name)?;
        if ms == 0 {
            return Err(invalid(name, "must be greater than zero"));
        }
        Ok(Duration::from_millis(ms))
    }

    fn bool(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.string(name)?.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(invalid(name, "must be true or false")),
        }
    }

    fn prefix(&self, name: &'static str) -> Result<Prefix, ConfigError> {
        Prefix::parse(&self.string(name)?).map_err(|e: PrefixError| invalid(name, e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const REQUIRED: &[(&str, &str)] = &[
        ("FINPASS_API_KEY", "key-value-123"),
        ("FINPASS_API_SECRET", "secret-value-456"),
        ("STATEMENTS_BUCKET", "bucket"),
    ];

    #[test]
    fn defaults_apply() {
        let s = Settings::from_lookup(lookup(REQUIRED)).expect("valid");
        assert_eq!(s.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.storage.prefix.as_str(), "statements/");
        assert_eq!(s.finpass.api_secret.expose_secret(), "secret-value-456");
        assert_eq!(s.download.max_report_bytes, 100 << 20);
    }

    #[test]
    fn missing_variables_are_named() {
        for var in ["FINPASS_API_KEY", "FINPASS_API_SECRET", "STATEMENTS_BUCKET"] {
            let pairs: Vec<_> = REQUIRED
                .iter()
                .copied()
                .filter(|(k, _)| *k != var)
                .collect();
            let err = Settings::from_lookup(lookup(&pairs)).expect_err("must fail");
            assert_eq!(err.to_string(), format!("{var} is required but not set"));
        }
    }

    #[test]
    fn readme_documents_every_variable() {
        let readme = include_str!("../README.md");
        for v in ENV_VARS {
            assert!(
                readme.contains(&format!("| `{}` |", v.name)),
                "README lacks {}",
                v.name
            );
        }
    }

    #[test]
    fn errors_and_debug_never_show_secret_values() {
        let s = Settings::from_lookup(lookup(REQUIRED)).expect("valid");
        let debug = format!("{s:?}");
        assert!(!debug.contains("key-value-123") && !debug.contains("secret-value-456"));

        let mut pairs = REQUIRED.to_vec();
        pairs.push(("LISTEN_ADDR", "secret-value-456"));
        let err = Settings::from_lookup(lookup(&pairs)).expect_err("must fail");
        assert!(err.to_string().starts_with("LISTEN_ADDR is invalid"));
        assert!(!err.to_string().contains("secret-value-456"));
    }
}
