//! Typed settings, read from the environment only.
//!
//! Each variable is declared once in [`vars`] (name, default, range, help); each settings
//! section reads its own variables through a [`reader::Reader`]. This module sits at the bottom
//! of the crate: it imports only `domain` and the leaf `link_policy` (host patterns), so every
//! other module can depend on it.

mod auth;
mod job_queue;
mod read_side;
mod reader;
pub mod vars;
mod webhooks;

use std::{collections::HashMap, net::IpAddr, net::SocketAddr, time::Duration};

use secrecy::SecretString;
use url::{Host, Url};

pub use auth::{AuthSettings, JwtKeySource, JwtSettings, PublicKey, ServiceToken, TokenSpecError};
pub use job_queue::{JobQueueSettings, SqsSettings};
pub use read_side::ReadSideSettings;
pub use vars::{ALL as ENV_VARS, Var, env_help, list_env};
pub use webhooks::WebhookSettings;

use crate::{
    domain::Prefix,
    link_policy::{HostPattern, LinkPolicy},
};
use reader::{Reader, invalid};

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

/// How hard to try a Finpass call before giving up.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Hard bound on one Finpass call, retries included.
    pub deadline: Duration,
}

#[derive(Debug, Clone)]
pub struct FinpassSettings {
    pub base_url: Url,
    pub api_key: SecretString,
    pub api_secret: SecretString,
    pub attempt_timeout: Duration,
    pub retry: RetrySettings,
    pub client_id_mismatch: ClientIdMismatch,
}

/// What an answer whose `data.client_id` is not the client asked for gets
/// (`FINPASS_CLIENT_ID_MISMATCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIdMismatch {
    /// 502 `upstream_error`, nothing stored: the reports may be another customer's.
    Refuse,
    /// A warning (naming neither id: client ids are personal data), then stored under the
    /// client asked for. For a Finpass whose echo is known to be unreliable.
    Warn,
}

impl FinpassSettings {
    fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let base_url = r.parse::<Url>(&vars::FINPASS_BASE_URL)?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host_str().is_none() {
            return Err(invalid(&vars::FINPASS_BASE_URL, "must be an http(s) URL"));
        }
        // The API key and secret travel in headers: never in clear text across a network.
        if base_url.scheme() == "http" && !is_loopback(&base_url) {
            return Err(invalid(
                &vars::FINPASS_BASE_URL,
                "must be https (plain http only to a loopback address: the credentials travel in its headers)",
            ));
        }
        let max_attempts = u32::try_from(r.number(&vars::FINPASS_MAX_ATTEMPTS)?)
            .map_err(|e| invalid(&vars::FINPASS_MAX_ATTEMPTS, e))?;
        Ok(Self {
            base_url,
            api_key: r.secret(&vars::FINPASS_API_KEY)?,
            api_secret: r.secret(&vars::FINPASS_API_SECRET)?,
            attempt_timeout: r.millis(&vars::FINPASS_TIMEOUT_MS)?,
            retry: RetrySettings {
                max_attempts,
                base_delay: r.millis(&vars::FINPASS_RETRY_BASE_MS)?,
                max_delay: r.millis(&vars::FINPASS_RETRY_MAX_MS)?,
                deadline: r.millis(&vars::FINPASS_DEADLINE_MS)?,
            },
            client_id_mismatch: match r.string(&vars::FINPASS_CLIENT_ID_MISMATCH)?.as_str() {
                "refuse" => ClientIdMismatch::Refuse,
                "warn" => ClientIdMismatch::Warn,
                _ => {
                    return Err(invalid(
                        &vars::FINPASS_CLIENT_ID_MISMATCH,
                        "must be `refuse` or `warn`",
                    ));
                }
            },
        })
    }
}

/// Server-side encryption applied to every object written.
#[derive(Debug, Clone)]
pub enum Encryption {
    S3Managed,
    Kms { key_id: Option<String> },
}

/// Static S3 credentials (tests, the sandbox, S3-compatible servers); unset on AWS, where the
/// default chain (IRSA web identity) provides them.
#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

/// Where and how to reach S3. Unset fields fall back to the standard AWS chain.
#[derive(Debug, Clone, Default)]
pub struct S3Connection {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub credentials: Option<S3Credentials>,
    pub force_path_style: bool,
    /// Only send checksums when an operation requires them (Garage over plain HTTP).
    pub checksum_when_required: bool,
    /// Timeout of one request attempt (`S3_TIMEOUT_MS`); zero means the built-in default.
    pub attempt_timeout: Duration,
}

impl S3Connection {
    fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let credentials = match (
            r.optional(&vars::AWS_ACCESS_KEY_ID)?,
            r.optional(&vars::AWS_SECRET_ACCESS_KEY)?,
        ) {
            (None, None) => None,
            (Some(access_key_id), Some(secret)) => Some(S3Credentials {
                access_key_id,
                secret_access_key: SecretString::from(secret),
                session_token: r
                    .optional(&vars::AWS_SESSION_TOKEN)?
                    .map(SecretString::from),
            }),
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: vars::AWS_SECRET_ACCESS_KEY.name,
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: vars::AWS_ACCESS_KEY_ID.name,
                });
            }
        };
        let checksum_when_required = match r
            .string(&vars::AWS_REQUEST_CHECKSUM_CALCULATION)?
            .to_ascii_lowercase()
            .as_str()
        {
            "when_supported" => false,
            "when_required" => true,
            _ => {
                return Err(invalid(
                    &vars::AWS_REQUEST_CHECKSUM_CALCULATION,
                    "must be when_supported or when_required",
                ));
            }
        };
        Ok(Self {
            region: r.optional(&vars::AWS_REGION)?,
            endpoint_url: r.optional(&vars::AWS_ENDPOINT_URL_S3)?,
            credentials,
            force_path_style: r.bool(&vars::S3_FORCE_PATH_STYLE)?,
            checksum_when_required,
            attempt_timeout: r.millis(&vars::S3_TIMEOUT_MS)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub bucket: String,
    pub prefix: Prefix,
    pub staging_prefix: Prefix,
    /// Where purges leave their markers (see `storage::purge_marker`).
    pub purge_marker_prefix: Prefix,
    pub multipart_threshold: u64,
    pub part_size: usize,
    /// Parts of one multipart upload in flight at once.
    pub parts_in_flight: usize,
    /// Bytes of multipart part buffers the whole process may hold (`UPLOAD_BUFFER_BUDGET_BYTES`).
    pub upload_buffer_budget: usize,
    /// Bound on one data operation (a streamed PUT, a part, a copy, a completion): the call
    /// deadline, since a transfer never outlives its call by more than its cleanup.
    pub data_timeout: Duration,
    pub encryption: Option<Encryption>,
    /// Staging leftovers older than this are swept at start-up.
    pub staging_sweep_age: Duration,
    /// `REQUIRED_BUCKET_REGION`: the region S3 must place the statements and audit buckets in.
    pub required_region: Option<String>,
    /// Where the expiry index of `retain_until` lives (`RETENTION_INDEX_PREFIX`).
    pub retention_index_prefix: Prefix,
    /// `STATEMENT_RETENTION_DAYS`: the data life of a statement stored without `retain_until`;
    /// `None` keeps it until deleted.
    pub default_retention_days: Option<u64>,
    /// Where statement job records live (`JOBS_PREFIX`).
    pub jobs_prefix: Prefix,
}

impl StorageSettings {
    fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let encryption = match (
            r.string(&vars::S3_SSE)?.as_str(),
            r.optional(&vars::S3_SSE_KMS_KEY_ID)?,
        ) {
            ("", None) => None,
            ("AES256", None) => Some(Encryption::S3Managed),
            ("aws:kms", key_id) => Some(Encryption::Kms { key_id }),
            ("" | "AES256", Some(_)) => {
                return Err(invalid(
                    &vars::S3_SSE_KMS_KEY_ID,
                    "only applies with S3_SSE=aws:kms",
                ));
            }
            _ => return Err(invalid(&vars::S3_SSE, "must be AES256 or aws:kms")),
        };
        let prefix = r.prefix(&vars::STATEMENTS_PREFIX)?;
        let staging_prefix = r.prefix(&vars::STAGING_PREFIX)?;
        check_prefixes(&prefix, &staging_prefix)?;
        let purge_marker_prefix = r.prefix(&vars::PURGE_MARKER_PREFIX)?;
        let retention_index_prefix = r.prefix(&vars::RETENTION_INDEX_PREFIX)?;
        let jobs_prefix = r.prefix(&vars::JOBS_PREFIX)?;
        check_disjoint(&[
            (&vars::STATEMENTS_PREFIX, &prefix),
            (&vars::STAGING_PREFIX, &staging_prefix),
            (&vars::PURGE_MARKER_PREFIX, &purge_marker_prefix),
            (&vars::RETENTION_INDEX_PREFIX, &retention_index_prefix),
            (&vars::JOBS_PREFIX, &jobs_prefix),
        ])?;
        let part_size = r.count(&vars::MULTIPART_PART_BYTES)?;
        let upload_buffer_budget = r.count(&vars::UPLOAD_BUFFER_BUDGET_BYTES)?;
        if upload_buffer_budget < part_size {
            return Err(invalid(
                &vars::UPLOAD_BUFFER_BUDGET_BYTES,
                "must hold at least one part (MULTIPART_PART_BYTES)",
            ));
        }
        Ok(Self {
            bucket: r.string(&vars::STATEMENTS_BUCKET)?,
            prefix,
            staging_prefix,
            purge_marker_prefix,
            multipart_threshold: r.number(&vars::MULTIPART_THRESHOLD_BYTES)?,
            part_size,
            parts_in_flight: r.count(&vars::MULTIPART_CONCURRENCY)?,
            upload_buffer_budget,
            data_timeout: r.millis(&vars::CALL_DEADLINE_MS)?,
            encryption,
            staging_sweep_age: Duration::from_secs(r.number(&vars::STAGING_SWEEP_AGE_SECONDS)?),
            required_region: required_region(r)?,
            retention_index_prefix,
            default_retention_days: r.optional_number(&vars::STATEMENT_RETENTION_DAYS)?,
            jobs_prefix,
        })
    }
}

/// An AWS region name (`ap-south-1`): what GetBucketLocation answers is compared with it.
fn required_region(r: &Reader<'_>) -> Result<Option<String>, ConfigError> {
    let region = r.optional(&vars::REQUIRED_BUCKET_REGION)?;
    if region.as_deref().is_some_and(|s| {
        s.len() > 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) {
        return Err(invalid(
            &vars::REQUIRED_BUCKET_REGION,
            "must be an AWS region name such as ap-south-1",
        ));
    }
    Ok(region)
}

/// Staging and statements must be told apart by key alone: the staging prefix gets a 1-day
/// expiry rule, which must never reach a stored statement, and neither may be the bucket root.
fn check_prefixes(statements: &Prefix, staging: &Prefix) -> Result<(), ConfigError> {
    let (a, b) = (statements.as_str(), staging.as_str());
    if a.is_empty() {
        return Err(invalid(&vars::STATEMENTS_PREFIX, "must not be empty"));
    }
    if b.is_empty() {
        return Err(invalid(&vars::STAGING_PREFIX, "must not be empty"));
    }
    // Both end with '/', so a string prefix is a folder prefix.
    if a.starts_with(b) || b.starts_with(a) {
        return Err(invalid(
            &vars::STAGING_PREFIX,
            "must not equal or nest with STATEMENTS_PREFIX (its lifecycle expiry would reach stored statements)",
        ));
    }
    Ok(())
}

/// Prefixes of one bucket that must be told apart by key alone (a purge, a sweep or a
/// lifecycle rule of one must never reach another): none empty, no two equal or nested. The
/// error names the later variable of the first pair that overlaps.
pub(crate) fn check_disjoint(prefixes: &[(&vars::Var, &Prefix)]) -> Result<(), ConfigError> {
    for (i, (var, prefix)) in prefixes.iter().enumerate() {
        let p = prefix.as_str();
        if p.is_empty() {
            return Err(invalid(var, "must not be empty"));
        }
        for (other, theirs) in &prefixes[..i] {
            let o = theirs.as_str();
            // Both end with '/', so a string prefix is a folder prefix.
            if p.starts_with(o) || o.starts_with(p) {
                return Err(invalid(
                    var,
                    format!("must not equal or nest with {}", other.name),
                ));
            }
        }
    }
    Ok(())
}

/// True for `localhost` and loopback IP literals: the only hosts plain http may reach.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Time bounds of one `POST /v1/statements`.
#[derive(Debug, Clone, Copy)]
pub struct CallSettings {
    /// Everything a call does, transfers included, ends by then (`CALL_DEADLINE_MS`).
    pub deadline: Duration,
    /// The largest `wait_seconds` accepted (`MAX_WAIT_SECONDS`).
    pub max_wait: Duration,
}

/// What a call needs after its wait: a Finpass answer and a transfer, and its cleanup.
pub const CALL_DEADLINE_MARGIN: Duration = Duration::from_secs(5);

impl CallSettings {
    fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let deadline = r.millis(&vars::CALL_DEADLINE_MS)?;
        let max_wait = Duration::from_secs(r.number(&vars::MAX_WAIT_SECONDS)?);
        if deadline <= max_wait + CALL_DEADLINE_MARGIN {
            return Err(invalid(
                &vars::CALL_DEADLINE_MS,
                format!(
                    "must exceed MAX_WAIT_SECONDS ({} s) plus {} s, or a call that waits would have no time left to store",
                    max_wait.as_secs(),
                    CALL_DEADLINE_MARGIN.as_secs()
                ),
            ));
        }
        Ok(Self { deadline, max_wait })
    }
}

#[derive(Debug, Clone)]
pub struct DownloadSettings {
    pub policy: LinkPolicy,
    /// Host → address pins for report links (like curl's `--resolve`).
    pub pinned_hosts: HashMap<String, IpAddr>,
    pub max_report_bytes: u64,
    pub report_concurrency: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_downloads: usize,
    pub max_reports_per_call: usize,
}

impl DownloadSettings {
    fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let allowed_hosts = r
            .list(&vars::REPORT_LINK_ALLOWED_HOSTS)?
            .iter()
            .map(|h| HostPattern::parse(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&vars::REPORT_LINK_ALLOWED_HOSTS, e))?;
        let pinned_hosts = r
            .list(&vars::REPORT_LINK_RESOLVE)?
            .iter()
            .map(|entry| {
                let (host, ip) = entry.split_once('=').ok_or_else(|| {
                    invalid(&vars::REPORT_LINK_RESOLVE, "entries must look like host=ip")
                })?;
                let ip = ip
                    .trim()
                    .parse::<IpAddr>()
                    .map_err(|e| invalid(&vars::REPORT_LINK_RESOLVE, e))?;
                Ok((host.trim().to_ascii_lowercase(), ip))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self {
            policy: LinkPolicy::new(allowed_hosts, r.bool(&vars::REPORT_LINK_ALLOW_HTTP)?),
            pinned_hosts,
            max_report_bytes: r.number(&vars::MAX_REPORT_BYTES)?,
            report_concurrency: r.count(&vars::REPORT_CONCURRENCY)?,
            connect_timeout: r.millis(&vars::DOWNLOAD_CONNECT_TIMEOUT_MS)?,
            read_timeout: r.millis(&vars::DOWNLOAD_READ_TIMEOUT_MS)?,
            max_downloads: r.count(&vars::MAX_CONCURRENT_DOWNLOADS)?,
            max_reports_per_call: r.count(&vars::MAX_REPORTS_PER_CALL)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    /// The frontend-only listener (`PUBLIC_LISTEN_ADDR`); set only with JWT keys.
    pub public_listen_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// HTTP worker threads; `None` is one per CPU.
    pub workers: Option<usize>,
    /// How long an idle keep-alive connection stays open (`HTTP_KEEP_ALIVE_SECONDS`). Above
    /// the idle timeout of whatever proxies to us: a proxy that reuses a connection we
    /// closed answers its caller 502.
    pub http_keep_alive: Duration,
    pub max_calls: usize,
    pub max_calls_per_caller: usize,
    pub call: CallSettings,
    pub log_format: LogFormat,
    pub cors_origins: Vec<String>,
    pub finpass: FinpassSettings,
    pub s3: S3Connection,
    pub storage: StorageSettings,
    pub download: DownloadSettings,
    pub auth: AuthSettings,
    pub read_side: ReadSideSettings,
    pub webhooks: WebhookSettings,
    pub job_queue: JobQueueSettings,
    /// `JOB_POLL_SCHEDULE` as written: parsed (and refused) at start-up by `jobs::ladder`,
    /// which `config` does not import.
    pub job_poll_schedule: String,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses settings from any name → value lookup (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let r = Reader::new(&lookup);
        let metrics_addr = match r.optional(&vars::METRICS_ADDR)? {
            None => None,
            Some(addr) => Some(addr.parse().map_err(|e| invalid(&vars::METRICS_ADDR, e))?),
        };
        let public_listen_addr = match r.optional(&vars::PUBLIC_LISTEN_ADDR)? {
            None => None,
            Some(addr) => Some(
                addr.parse()
                    .map_err(|e| invalid(&vars::PUBLIC_LISTEN_ADDR, e))?,
            ),
        };
        let auth = AuthSettings::read(&r)?;
        if public_listen_addr.is_some() && auth.jwt.is_none() {
            // It would refuse every call: service tokens never work there.
            return Err(invalid(
                &vars::PUBLIC_LISTEN_ADDR,
                "serves frontend users' JWTs only: set JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE too",
            ));
        }
        let workers = r
            .optional_number(&vars::WORKERS)?
            .map(|n| usize::try_from(n).map_err(|e| invalid(&vars::WORKERS, e)))
            .transpose()?;
        Ok(Self {
            listen_addr: r.parse(&vars::LISTEN_ADDR)?,
            public_listen_addr,
            metrics_addr,
            workers,
            http_keep_alive: Duration::from_secs(r.number(&vars::HTTP_KEEP_ALIVE_SECONDS)?),
            max_calls: r.count(&vars::MAX_CONCURRENT_CALLS)?,
            max_calls_per_caller: r.count(&vars::MAX_CALLS_PER_CALLER)?,
            call: CallSettings::read(&r)?,
            log_format: match r.string(&vars::LOG_FORMAT)?.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid(&vars::LOG_FORMAT, "must be `text` or `json`")),
            },
            cors_origins: cors_origins(&r)?,
            finpass: FinpassSettings::read(&r)?,
            s3: S3Connection::read(&r)?,
            storage: StorageSettings::read(&r)?,
            download: DownloadSettings::read(&r)?,
            auth,
            read_side: ReadSideSettings::read(&r)?,
            webhooks: WebhookSettings::read(&r)?,
            job_queue: JobQueueSettings::read(&r)?,
            job_poll_schedule: r.string(&vars::JOB_POLL_SCHEDULE)?,
        })
        .and_then(Self::audit_apart)
    }

    /// An audit trail in the statements bucket must lie outside everything a purge, the
    /// staging sweep or the purge markers delete: a purge of client `audit` under
    /// `statements/audit/`, say, would remove the trail. In a bucket of its own it cannot.
    fn audit_apart(self) -> Result<Self, ConfigError> {
        let shared = self
            .read_side
            .audit_bucket
            .as_ref()
            .is_none_or(|b| *b == self.storage.bucket);
        if shared {
            check_disjoint(&[
                (&vars::STATEMENTS_PREFIX, &self.storage.prefix),
                (&vars::STAGING_PREFIX, &self.storage.staging_prefix),
                (
                    &vars::PURGE_MARKER_PREFIX,
                    &self.storage.purge_marker_prefix,
                ),
                (&vars::JOBS_PREFIX, &self.storage.jobs_prefix),
                (&vars::AUDIT_PREFIX, &self.read_side.audit_prefix),
            ])?;
        }
        Ok(self)
    }
}

fn cors_origins(r: &Reader<'_>) -> Result<Vec<String>, ConfigError> {
    r.list(&vars::CORS_ALLOWED_ORIGINS)?
        .into_iter()
        .map(|o| match Url::parse(&o) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.path() == "/"
                    && !o.ends_with('/') =>
            {
                Ok(o)
            }
            _ => Err(invalid(
                &vars::CORS_ALLOWED_ORIGINS,
                "entries must be origins like https://app.example.com",
            )),
        })
        .collect()
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
    fn readme_documents_every_variable_with_its_default() {
        let readme = include_str!("../../README.md");
        for v in ENV_VARS {
            let default = match v.default {
                None => "required".to_owned(),
                Some("") => "unset".to_owned(),
                Some(d) => format!("`{d}`"),
            };
            let row = format!("| `{}` | {default} |", v.name);
            assert!(readme.contains(&row), "README lacks the row starting {row}");
        }
    }

    /// Every declared range is one the parser enforces, naming the variable: the range in
    /// `--help` cannot drift from the check.
    #[test]
    fn every_declared_range_is_enforced() {
        for v in ENV_VARS {
            let Some((lo, hi)) = v.range else { continue };
            for bad in [hi.saturating_add(1), lo.saturating_sub(1)] {
                if (lo..=hi).contains(&bad) {
                    continue;
                }
                let mut pairs = REQUIRED.to_vec();
                let value = bad.to_string();
                pairs.push((v.name, &value));
                let err = Settings::from_lookup(lookup(&pairs)).expect_err(v.name);
                assert_eq!(
                    err.to_string(),
                    format!("{} is invalid: must be between {lo} and {hi}", v.name)
                );
            }
        }
    }

    #[test]
    fn list_env_prints_defaults_and_marks_required() {
        let listed = list_env();
        assert!(listed.lines().any(|l| l == "LISTEN_ADDR=0.0.0.0:8080"));
        assert!(listed.lines().any(|l| l == "STATEMENTS_BUCKET"));
        assert_eq!(listed.lines().count(), ENV_VARS.len());
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

    /// Looks the settings up with `extra` on top of [`REQUIRED`].
    fn with(extra: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut pairs = REQUIRED.to_vec();
        pairs.extend_from_slice(extra);
        Settings::from_lookup(lookup(&pairs))
    }

    fn refused(extra: &[(&str, &str)], var: &str) {
        match with(extra) {
            Ok(_) => panic!("{extra:?} was accepted; {var} must be refused"),
            Err(e) => assert!(
                e.to_string().starts_with(&format!("{var} is ")),
                "{extra:?}: {e} (expected the error to name {var})"
            ),
        }
    }

    #[test]
    fn auth_disabled_together_with_caller_authentication_is_refused() {
        let entry = format!("loans:{}", "ab".repeat(32));
        for setting in [
            ("CALLER_TOKENS", entry.as_str()),
            ("CALLER_TOKENS_FILE", "/nonexistent/tokens"),
            ("JWT_JWKS_URL", "https://idp.example.com/jwks.json"),
            ("JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem"),
            ("JWT_ISSUER", "https://idp.example.com"),
            ("JWT_AUDIENCE", "finpass-gateway"),
        ] {
            // REQUIRED has AUTH_DISABLED=true.
            refused(&[setting], "AUTH_DISABLED");
        }
        let s = with(&[("AUTH_DISABLED", "false"), ("CALLER_TOKENS", &entry)]).expect("valid");
        assert!(!s.auth.disabled);
    }

    #[test]
    fn finpass_over_plain_http_only_to_a_loopback_address() {
        for url in [
            "http://api.finpass.ai",
            "http://10.0.0.5:8080",
            "http://127.0.0.1.nip.io",
            "http://[fd00::1]",
        ] {
            refused(&[("FINPASS_BASE_URL", url)], "FINPASS_BASE_URL");
        }
        for url in [
            "https://api.finpass.ai",
            "http://127.0.0.1:9000",
            "http://[::1]:9000",
            "http://localhost:9000",
        ] {
            with(&[("FINPASS_BASE_URL", url)]).expect(url);
        }
    }

    #[test]
    fn jwks_over_plain_http_only_to_a_loopback_address() {
        let jwt = |url: &'static str| {
            [
                ("AUTH_DISABLED", "false"),
                ("JWT_JWKS_URL", url),
                ("JWT_ISSUER", "https://idp.example.com"),
                ("JWT_AUDIENCE", "finpass-gateway"),
            ]
        };
        refused(&jwt("http://idp.example.com/jwks.json"), "JWT_JWKS_URL");
        refused(&jwt("ftp://idp.example.com/jwks.json"), "JWT_JWKS_URL");
        with(&jwt("https://idp.example.com/jwks.json")).expect("https");
        // Tests serve a JWKS on loopback.
        with(&jwt("http://127.0.0.1:8081/jwks.json")).expect("loopback");
    }

    #[test]
    fn prefixes_must_be_distinct_and_not_nested() {
        refused(
            &[("STATEMENTS_PREFIX", "s/"), ("STAGING_PREFIX", "s/")],
            "STAGING_PREFIX",
        );
        refused(
            &[
                ("STATEMENTS_PREFIX", "statements/"),
                ("STAGING_PREFIX", "statements/_staging/"),
            ],
            "STAGING_PREFIX",
        );
        refused(
            &[
                ("STATEMENTS_PREFIX", "data/statements/"),
                ("STAGING_PREFIX", "data/"),
            ],
            "STAGING_PREFIX",
        );
        // A blank value is unset: the default applies, never the bucket root.
        let s = with(&[("STATEMENTS_PREFIX", " "), ("STAGING_PREFIX", "")]).expect("defaults");
        assert_eq!(s.storage.prefix.as_str(), "statements/");
        assert_eq!(
            s.storage.staging_prefix.as_str(),
            "_staging/finpass-gateway/"
        );
        // Siblings sharing a leading string are not nested.
        with(&[("STATEMENTS_PREFIX", "st/"), ("STAGING_PREFIX", "sta/")]).expect("siblings");
    }

    #[test]
    fn the_jobs_prefix_overlaps_no_other_prefix() {
        assert_eq!(
            with(&[]).expect("defaults").storage.jobs_prefix.as_str(),
            "jobs/"
        );
        for (var, value) in [
            ("STATEMENTS_PREFIX", "jobs/statements/"),
            ("STAGING_PREFIX", "jobs/"),
            ("PURGE_MARKER_PREFIX", "jobs/_purges/"),
            ("RETENTION_INDEX_PREFIX", "jobs/"),
        ] {
            refused(&[(var, value)], "JOBS_PREFIX");
        }
        refused(&[("JOBS_PREFIX", "statements/jobs/")], "JOBS_PREFIX");
        // The audit trail in the same bucket: the later variable is named.
        refused(&[("AUDIT_PREFIX", "jobs/audit/")], "AUDIT_PREFIX");
        with(&[
            ("AUDIT_PREFIX", "jobs/audit/"),
            ("AUDIT_BUCKET", "elsewhere"),
        ])
        .expect("another bucket");
        with(&[("JOBS_PREFIX", "_jobs/finpass-gateway/")]).expect("apart");
    }

    #[test]
    fn max_report_bytes_is_between_one_byte_and_5_gib() {
        refused(&[("MAX_REPORT_BYTES", "0")], "MAX_REPORT_BYTES");
        refused(&[("MAX_REPORT_BYTES", "5368709121")], "MAX_REPORT_BYTES");
        let s = with(&[("MAX_REPORT_BYTES", "5368709120")]).expect("5 GiB");
        assert_eq!(s.download.max_report_bytes, 5 << 30);
    }

    #[test]
    fn call_deadline_must_exceed_the_longest_wait_plus_a_margin() {
        let s = with(&[]).expect("defaults");
        assert_eq!(s.call.deadline, Duration::from_secs(120));
        assert_eq!(s.call.max_wait, Duration::from_secs(60));
        refused(&[("CALL_DEADLINE_MS", "65000")], "CALL_DEADLINE_MS");
        with(&[("CALL_DEADLINE_MS", "65001")]).expect("60 s + 5 s + 1 ms");
        refused(
            &[("CALL_DEADLINE_MS", "5000"), ("MAX_WAIT_SECONDS", "0")],
            "CALL_DEADLINE_MS",
        );
        let s = with(&[("CALL_DEADLINE_MS", "6000"), ("MAX_WAIT_SECONDS", "0")]).expect("short");
        assert_eq!(s.call.deadline, Duration::from_secs(6));
        assert_eq!(s.call.max_wait, Duration::ZERO);
        refused(&[("MAX_WAIT_SECONDS", "61")], "MAX_WAIT_SECONDS");
    }

    #[test]
    fn the_upload_buffer_budget_holds_at_least_one_part() {
        let s = with(&[]).expect("defaults");
        assert_eq!(s.storage.upload_buffer_budget, 96 << 20);
        refused(
            &[
                ("UPLOAD_BUFFER_BUDGET_BYTES", "8388607"),
                ("MULTIPART_PART_BYTES", "8388608"),
            ],
            "UPLOAD_BUFFER_BUDGET_BYTES",
        );
        with(&[("UPLOAD_BUFFER_BUDGET_BYTES", "8388608")]).expect("one part");
    }

    #[test]
    fn per_caller_call_cap_defaults_to_eight() {
        assert_eq!(with(&[]).expect("defaults").max_calls_per_caller, 8);
        refused(&[("MAX_CALLS_PER_CALLER", "0")], "MAX_CALLS_PER_CALLER");
    }

    /// The default admits S3 endpoints only, not every host under amazonaws.com (load
    /// balancers, API gateways, CloudFront and anyone's EC2 name are all there).
    #[test]
    fn default_report_link_hosts_are_s3_endpoints_only() {
        use crate::link_policy::RawLink;
        let policy = with(&[]).expect("defaults").download.policy;
        let allowed = |host: &str| {
            policy
                .check(&RawLink::new(format!("https://{host}/r/statement.pdf")))
                .is_ok()
        };
        for host in [
            "finpass-reports.s3.amazonaws.com",
            "finpass.reports.s3.amazonaws.com",
            "finpass-reports.s3.ap-south-1.amazonaws.com",
            "finpass-reports.s3.us-east-1.amazonaws.com",
        ] {
            assert!(allowed(host), "{host}");
        }
        for host in [
            "s3.amazonaws.com",
            "evil-123.ap-south-1.elb.amazonaws.com",
            "abc.execute-api.ap-south-1.amazonaws.com",
            "ec2-1-2-3-4.ap-south-1.compute.amazonaws.com",
            "x.s3.ap-south-1.amazonaws.com.evil.com",
            "s3.ap-south-1.amazonaws.com",
            "x.s3-website.ap-south-1.amazonaws.com",
        ] {
            assert!(!allowed(host), "{host}");
        }
    }
}
