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
    auth::{AuthSettings, JwtKeySource, JwtSettings, ServiceToken},
    domain::{Prefix, PrefixError},
    link_policy::{HostPattern, HostPatternError, LinkPolicy},
    storage::Encryption,
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
        "MULTIPART_CONCURRENCY",
        Some("3"),
        "Parts of one upload sent at once (1..=16); memory per upload is (this + 1) parts.",
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
    var(
        "MAX_REPORTS_PER_CALL",
        Some("50"),
        "Reports processed per call; the rest are failed `report_limit`.",
    ),
    var("LOG_FORMAT", Some("text"), "`text` or `json`."),
    var(
        "CALLER_TOKENS",
        Some(""),
        "Service callers: comma list of name:sha256hex(token) (secret).",
    ),
    var(
        "CALLER_TOKENS_FILE",
        Some(""),
        "File with one name:sha256hex(token) per line (# comments).",
    ),
    var(
        "JWT_JWKS_URL",
        Some(""),
        "JWKS of the identity provider for frontend users' JWTs.",
    ),
    var(
        "JWT_PUBLIC_KEY_FILE",
        Some(""),
        "Static PEM public key (RSA or EC P-256) instead of a JWKS.",
    ),
    var(
        "JWT_ISSUER",
        Some(""),
        "Required `iss` of user JWTs (required with JWT keys).",
    ),
    var(
        "JWT_AUDIENCE",
        Some(""),
        "Required `aud` of user JWTs (required with JWT keys).",
    ),
    var(
        "JWT_CLIENT_ID_CLAIM",
        Some("aa_client_id"),
        "JWT claim that must equal the requested client_id.",
    ),
    var(
        "AUTH_DISABLED",
        Some("false"),
        "Run without caller authentication (never in production).",
    ),
    var(
        "RATE_LIMIT_PER_MINUTE",
        Some("600"),
        "Requests per caller per minute; beyond it 429 + Retry-After.",
    ),
    var(
        "CORS_ALLOWED_ORIGINS",
        Some(""),
        "Comma list of frontend origins allowed by CORS (none by default).",
    ),
    var(
        "S3_SSE",
        Some(""),
        "Server-side encryption: `AES256` or `aws:kms` (unset: bucket default).",
    ),
    var(
        "S3_SSE_KMS_KEY_ID",
        Some(""),
        "KMS key for `S3_SSE=aws:kms` (unset: the AWS managed key).",
    ),
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
    /// Parts of one multipart upload in flight at once.
    pub parts_in_flight: usize,
    pub encryption: Option<Encryption>,
}

#[derive(Debug, Clone)]
pub struct DownloadSettings {
    pub policy: LinkPolicy,
    pub max_report_bytes: u64,
    pub report_concurrency: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_downloads: usize,
    pub max_reports_per_call: usize,
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
    pub auth: AuthSettings,
    pub cors_origins: Vec<String>,
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
        let parts_in_flight: usize = r.parse("MULTIPART_CONCURRENCY")?;
        if !(1..=16).contains(&parts_in_flight) {
            return Err(invalid("MULTIPART_CONCURRENCY", "must be between 1 and 16"));
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
                parts_in_flight,
                encryption: match (
                    r.string("S3_SSE")?.as_str(),
                    r.optional("S3_SSE_KMS_KEY_ID")?,
                ) {
                    ("", None) => None,
                    ("AES256", None) => Some(Encryption::S3Managed),
                    ("aws:kms", key_id) => Some(Encryption::Kms { key_id }),
                    ("", Some(_)) | ("AES256", Some(_)) => {
                        return Err(invalid(
                            "S3_SSE_KMS_KEY_ID",
                            "only applies with S3_SSE=aws:kms",
                        ));
                    }
                    _ => return Err(invalid("S3_SSE", "must be AES256 or aws:kms")),
                },
            },
            download: DownloadSettings {
                policy: LinkPolicy::new(allowed_hosts, r.bool("REPORT_LINK_ALLOW_HTTP")?),
                max_report_bytes: r.parse("MAX_REPORT_BYTES")?,
                report_concurrency,
                connect_timeout: r.millis("DOWNLOAD_CONNECT_TIMEOUT_MS")?,
                read_timeout: r.millis("DOWNLOAD_READ_TIMEOUT_MS")?,
                max_downloads: r.positive("MAX_CONCURRENT_DOWNLOADS")?,
                max_reports_per_call: r.positive("MAX_REPORTS_PER_CALL")?,
            },
            log_format: match r.string("LOG_FORMAT")?.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid("LOG_FORMAT", "must be `text` or `json`")),
            },
            auth: auth_settings(&r)?,
            cors_origins: r
                .string("CORS_ALLOWED_ORIGINS")?
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(|o| match Url::parse(o) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.path() == "/"
                            && !o.ends_with('/') =>
                    {
                        Ok(o.to_owned())
                    }
                    _ => Err(invalid(
                        "CORS_ALLOWED_ORIGINS",
                        "entries must be origins like https://app.example.com",
                    )),
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

fn auth_settings(r: &Reader<'_>) -> Result<AuthSettings, ConfigError> {
    let mut tokens = Vec::new();
    for entry in r
        .string("CALLER_TOKENS")?
        .split(',')
        .filter(|e| !e.trim().is_empty())
    {
        tokens.push(ServiceToken::parse(entry).map_err(|e| invalid("CALLER_TOKENS", e))?);
    }
    if let Some(path) = r.optional("CALLER_TOKENS_FILE")? {
        let text = std::fs::read_to_string(&path).map_err(|e| invalid("CALLER_TOKENS_FILE", e))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            tokens.push(ServiceToken::parse(line).map_err(|e| invalid("CALLER_TOKENS_FILE", e))?);
        }
    }
    let source = match (
        r.optional("JWT_JWKS_URL")?,
        r.optional("JWT_PUBLIC_KEY_FILE")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "JWT_JWKS_URL",
                "set JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE, not both",
            ));
        }
        (Some(url), None) => Some(JwtKeySource::JwksUrl(
            url.parse().map_err(|e| invalid("JWT_JWKS_URL", e))?,
        )),
        (None, Some(path)) => Some(JwtKeySource::Pem(
            std::fs::read(&path).map_err(|e| invalid("JWT_PUBLIC_KEY_FILE", e))?,
        )),
        (None, None) => None,
    };
    let jwt = match source {
        None => None,
        Some(source) => Some(JwtSettings {
            source,
            issuer: r
                .optional("JWT_ISSUER")?
                .ok_or(ConfigError::Missing { var: "JWT_ISSUER" })?,
            audience: r.optional("JWT_AUDIENCE")?.ok_or(ConfigError::Missing {
                var: "JWT_AUDIENCE",
            })?,
            client_id_claim: r.string("JWT_CLIENT_ID_CLAIM")?,
        }),
    };
    let settings = AuthSettings {
        tokens,
        jwt,
        disabled: r.bool("AUTH_DISABLED")?,
        rate_limit_per_minute: r.parse("RATE_LIMIT_PER_MINUTE")?,
    };
    if !settings.configured() && !settings.disabled {
        return Err(invalid(
            "CALLER_TOKENS",
            "no caller authentication is configured: set CALLER_TOKENS, CALLER_TOKENS_FILE or JWT_JWKS_URL/JWT_PUBLIC_KEY_FILE (or AUTH_DISABLED=true, never in production)",
        ));
    }
    Ok(settings)
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

    /// An optional variable: `None` when unset or empty.
    fn optional(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        Ok(Some(self.string(name)?).filter(|v| !v.is_empty()))
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
        ("AUTH_DISABLED", "true"),
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
    fn refuses_to_start_without_caller_authentication() {
        let pairs: Vec<_> = REQUIRED
            .iter()
            .copied()
            .filter(|(k, _)| *k != "AUTH_DISABLED")
            .collect();
        let err = Settings::from_lookup(lookup(&pairs)).expect_err("must fail");
        assert!(
            err.to_string()
                .starts_with("CALLER_TOKENS is invalid: no caller authentication"),
            "{err}"
        );
        let mut with_token = pairs.clone();
        let entry = format!("loans:{}", "ab".repeat(32));
        with_token.push(("CALLER_TOKENS", &entry));
        let s = Settings::from_lookup(lookup(&with_token)).expect("valid");
        assert_eq!(s.auth.tokens.len(), 1);
        let mut jwt = pairs.clone();
        jwt.push(("JWT_JWKS_URL", "https://idp.example.com/jwks.json"));
        let err = Settings::from_lookup(lookup(&jwt)).expect_err("issuer required");
        assert_eq!(err.to_string(), "JWT_ISSUER is required but not set");
    }

    #[test]
    fn encryption_and_cors_settings() {
        let mut pairs = REQUIRED.to_vec();
        pairs.extend([
            ("S3_SSE", "aws:kms"),
            ("S3_SSE_KMS_KEY_ID", "alias/statements"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://app.example.com, http://localhost:3000",
            ),
        ]);
        let s = Settings::from_lookup(lookup(&pairs)).expect("valid");
        assert!(
            matches!(s.storage.encryption, Some(Encryption::Kms { key_id: Some(ref k) }) if k == "alias/statements")
        );
        assert_eq!(
            s.cors_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        for (var, value) in [
            ("S3_SSE", "des"),
            ("CORS_ALLOWED_ORIGINS", "*"),
            ("CORS_ALLOWED_ORIGINS", "https://a.com/path"),
        ] {
            let mut bad = REQUIRED.to_vec();
            bad.push((var, value));
            assert!(
                Settings::from_lookup(lookup(&bad)).is_err(),
                "{var}={value}"
            );
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
