//! Every environment variable the gateway reads, declared once.
//!
//! A declaration is the variable's name, default, accepted range and help text. The parser
//! reads a variable through its constant ([`super::reader::Reader`] takes a `&Var`, never a
//! string), and `--help`, `--list-env`, the README test and the k8s check all read [`ALL`], so
//! the compiler keeps them in step: a variable cannot be parsed without being declared, and
//! the macro puts every declaration in [`ALL`].

/// One documented environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    pub name: &'static str,
    /// `None` means required (outside `--sandbox`); `Some("")` means optional and unset.
    pub default: Option<&'static str>,
    /// Inclusive bounds of a numeric variable, checked by the parser and shown by `--help`.
    pub range: Option<(u64, u64)>,
    pub help: &'static str,
}

macro_rules! declare {
    ($( $id:ident $(= $default:literal)? $(in [$lo:expr, $hi:expr])? : $help:literal; )*) => {
        $(
            pub const $id: Var = Var {
                name: stringify!($id),
                default: declare!(@default $($default)?),
                range: declare!(@range $($lo, $hi)?),
                help: $help,
            };
        )*
        /// Every variable, in the order `--help` and the README list them.
        pub const ALL: &[Var] = &[$($id),*];
    };
    (@default) => { None };
    (@default $d:literal) => { Some($d) };
    (@range) => { None };
    (@range $lo:expr, $hi:expr) => { Some(($lo, $hi)) };
}

const MIB: u64 = 1 << 20;

declare! {
    LISTEN_ADDR = "0.0.0.0:8080": "Address of the HTTP API (internal: every caller and route).";
    PUBLIC_LISTEN_ADDR = "": "If set, a second listener for frontend users only: user JWTs (service tokens 401), POST /v1/statements and the GET read routes; no probes, /metrics or deletes. Needs JWT keys.";
    METRICS_ADDR = "": "If set, serve /metrics on this address only (not on LISTEN_ADDR).";
    WORKERS = "" in [1, 64]: "HTTP worker threads (unset: one per CPU).";
    HTTP_KEEP_ALIVE_SECONDS = "75" in [1, 3600]: "How long the API keeps an idle client connection open; keep it above the idle timeout of the ingress or load balancer in front (nginx 60 s, AWS ALB 60 s).";
    FINPASS_BASE_URL = "https://api.finpass.ai": "Finpass API base URL.";
    FINPASS_API_KEY: "Finpass x-api-key (secret).";
    FINPASS_API_SECRET: "Finpass x-api-secret (secret).";
    FINPASS_TIMEOUT_MS = "10000" in [1, 600_000]: "Timeout of one Finpass call attempt.";
    FINPASS_MAX_ATTEMPTS = "4" in [1, 10]: "Attempts at one Finpass call (retries on 429, 5xx, timeouts).";
    FINPASS_RETRY_BASE_MS = "200" in [1, 60_000]: "First retry backoff (exponential, full jitter).";
    FINPASS_RETRY_MAX_MS = "5000" in [1, 60_000]: "Largest retry backoff.";
    FINPASS_DEADLINE_MS = "25000" in [1, 600_000]: "Bound on one Finpass call, retries included.";
    FINPASS_CLIENT_ID_MISMATCH = "refuse": "When Finpass's answer names another `data.client_id` than the client asked for: `refuse` (502 `upstream_error`, nothing stored) or `warn` (log that they differ, without either id, and store under the client asked for).";
    STATEMENTS_BUCKET: "S3 bucket that receives the PDFs.";
    STATEMENTS_PREFIX = "statements/": "Key prefix of stored statements.";
    STAGING_PREFIX = "_staging/finpass-gateway/": "Key prefix of in-progress uploads; give it a 1-day lifecycle expiry.";
    PURGE_MARKER_PREFIX = "_purges/finpass-gateway/": "Key prefix of purge markers (one small object per purge, named by a hash of the client id): how a purge wins over stores in flight on every replica.";
    RETENTION_INDEX_PREFIX = "_retention/finpass-gateway/": "Key prefix of the expiry index ({prefix}YYYY-MM-DD/{client_id}/{statement_id}, empty objects) that `sweep-retention` reads; no lifecycle rule on it.";
    STATEMENT_RETENTION_DAYS = "" in [1, 36_500]: "retain_until of a statement stored without one: this many days after the store (unset: kept until deleted).";
    STAGING_SWEEP_AGE_SECONDS = "86400" in [0, 31_536_000]: "At start-up, staging objects and multipart uploads older than this are deleted (crash leftovers).";
    S3_FORCE_PATH_STYLE = "false": "Path-style S3 addressing (S3-compatible servers).";
    AWS_REGION = "": "AWS region of the bucket (standard AWS variable; also read from the AWS config chain).";
    AWS_ENDPOINT_URL_S3 = "": "S3 endpoint of an S3-compatible server (standard AWS variable; unset on AWS).";
    AWS_ACCESS_KEY_ID = "": "Static S3 credentials (standard AWS variable; unset with IRSA).";
    AWS_SECRET_ACCESS_KEY = "": "Static S3 credentials (secret; standard AWS variable; unset with IRSA).";
    AWS_SESSION_TOKEN = "": "Session token of static S3 credentials (secret; standard AWS variable).";
    AWS_REQUEST_CHECKSUM_CALCULATION = "when_supported": "`when_supported` or `when_required` (Garage over plain HTTP needs the latter).";
    MULTIPART_THRESHOLD_BYTES = "5368709120" in [0, 5 * 1024 * MIB]: "Reports of known size up to this go in one streamed PUT; larger or unknown-size ones use multipart upload. Default: S3's single-PUT maximum, so multipart only for unknown sizes.";
    MULTIPART_PART_BYTES = "8388608" in [5 * MIB, 64 * MIB]: "Multipart part size.";
    MULTIPART_CONCURRENCY = "3" in [1, 16]: "Parts of one upload sent at once; memory per upload is (this + 1) parts.";
    UPLOAD_BUFFER_BUDGET_BYTES = "100663296" in [5 * MIB, 64 * 1024 * MIB]: "Process-wide budget for multipart part buffers; past it transfers wait for buffers (at least one part).";
    S3_TIMEOUT_MS = "5000" in [100, 600_000]: "Timeout of one S3 request attempt (metadata operations get two attempts' worth; uploads and copies are bounded by CALL_DEADLINE_MS).";
    REPORT_LINK_ALLOWED_HOSTS = "*.s3.amazonaws.com,*.s3.*.amazonaws.com": "Comma list of hosts report links may point at (leading `*.`: one or more labels; a `*` label elsewhere: exactly one; optional `:port`). Pin Finpass's bucket host in production.";
    REPORT_LINK_ALLOW_HTTP = "false": "Allow plain-http report links.";
    REPORT_LINK_RESOLVE = "": "Comma list of host=ip pins for report links, like curl's --resolve (still subject to the forbidden-address check).";
    MAX_REPORT_BYTES = "104857600" in [1, 5 * 1024 * MIB]: "Largest report accepted.";
    REPORT_CONCURRENCY = "4" in [1, 64]: "Reports of one call processed at once.";
    MAX_CONCURRENT_CALLS = "64" in [1, 100_000]: "Calls in progress per process; beyond it 503 + Retry-After.";
    MAX_CALLS_PER_CALLER = "8" in [1, 100_000]: "Calls in progress per caller (service name or user); beyond it 429 + Retry-After.";
    CALL_DEADLINE_MS = "120000" in [1_000, 3_600_000]: "Bound on one call, transfers included; must exceed MAX_WAIT_SECONDS by 5 s. The shutdown drain is this + 5 s.";
    MAX_WAIT_SECONDS = "60" in [0, 60]: "Largest wait_seconds a call may ask for.";
    MAX_CONCURRENT_DOWNLOADS = "32" in [1, 10_000]: "Report transfers in progress per process.";
    DOWNLOAD_CONNECT_TIMEOUT_MS = "5000" in [1, 600_000]: "Connect + response-head timeout of a link.";
    DOWNLOAD_READ_TIMEOUT_MS = "30000" in [1, 600_000]: "Longest silence while reading a report body.";
    MAX_REPORTS_PER_CALL = "50" in [1, 10_000]: "Reports processed per call; the rest are failed `report_limit`.";
    LOG_FORMAT = "text": "`text` or `json`.";
    CALLER_TOKENS = "": "Service callers: comma list of name:sha256hex(token)[:scopes], scopes from store, read, delete, jobs joined by + (none: store+read+jobs) (secret).";
    CALLER_TOKENS_FILE = "": "File with one name:sha256hex(token)[:scopes] per line (# comments).";
    JWT_JWKS_URL = "": "JWKS of the identity provider for frontend users' JWTs.";
    JWT_PUBLIC_KEY_FILE = "": "Static PEM public key (RSA or EC P-256) instead of a JWKS.";
    JWT_ISSUER = "": "Required `iss` of user JWTs (required with JWT keys).";
    JWT_AUDIENCE = "": "Required `aud` of user JWTs (required with JWT keys).";
    JWT_CLIENT_ID_CLAIM = "aa_client_id": "JWT claim that must equal the requested client_id.";
    JWT_MAX_LIFETIME_SECONDS = "3600" in [60, 86_400]: "Longest user JWT lifetime (exp - iat) accepted; tokens without iat are refused.";
    AUTH_DISABLED = "false": "Run without caller authentication (never in production).";
    RATE_LIMIT_PER_MINUTE = "600" in [1, 1_000_000]: "Requests per caller per minute; beyond it 429 + Retry-After.";
    AUTH_FAILURES_PER_MINUTE = "60" in [1, 1_000_000]: "Failed authentications per source address per minute (and burst); beyond it 429 + Retry-After before any token is checked.";
    CORS_ALLOWED_ORIGINS = "": "Comma list of frontend origins allowed by CORS (none by default).";
    S3_SSE = "": "Server-side encryption: `AES256` or `aws:kms` (unset: bucket default).";
    S3_SSE_KMS_KEY_ID = "": "KMS key for `S3_SSE=aws:kms` (unset: the AWS managed key).";
    DOWNLOAD_URL_TTL_SECONDS = "300" in [1, 3600]: "Lifetime of the pre-signed links of /download-url.";
    DELETE_CALLERS = "": "Comma list of service caller names given the delete scope on top of their entry's (the older way; users never).";
    AUDIT_BUCKET = "": "Bucket of the audit trail (unset: STATEMENTS_BUCKET); a separate bucket can carry Object Lock.";
    AUDIT_PREFIX = "audit/": "Key prefix of the audit trail: {prefix}YYYY/MM/DD/{uuid}.jsonl, append-only.";
    REQUIRED_BUCKET_REGION = "": "If set (e.g. `ap-south-1`), refuse to start (exit 2) unless S3 places STATEMENTS_BUCKET and AUDIT_BUCKET in this region (GetBucketLocation): data stays in region.";
    WEBHOOK_ENDPOINTS_FILE = "": "File of the destinations statement jobs may call back, one `{service caller} {URL prefix} {secret} [{second secret}]` a line (# comments); a secret is whsec_ + base64 of 24..64 random bytes, two are a rotation (both sign). Mount it from a secret. Unset: no job may ask for a webhook.";
    WEBHOOK_ALLOW_HTTP = "false": "Admit plain-http webhook destinations, on loopback only (tests, the sandbox).";
    WEBHOOK_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,14h,20h,24h": "Delays before each retry of a webhook event that was not delivered (units ms, s, m, h; ±20 % jitter); after the last the event counts as failed.";
    JOBS_QUEUE_URL = "": "Amazon SQS queue of statement-job wake-ups (https://sqs.{region}.amazonaws.com/{account}/{name}; same region and credentials chain as S3). Unset: an in-process scheduler, for one replica only: several replicas need the queue. Set-up: k8s/iam/README.md.";
    AWS_ENDPOINT_URL_SQS = "": "SQS endpoint of an SQS-compatible server (standard AWS variable; unset on AWS).";
    JOBS_PREFIX = "jobs/": "Key prefix of statement job records in STATEMENTS_BUCKET ({prefix}{job_id}.json, one object per job); must not overlap the statements, staging, purge-marker, retention-index or audit prefix.";
    JOB_POLL_SCHEDULE = "5s,15s,30s,1m,2m,5m,15m": "Delays between a statement job's Finpass polls (units ms, s, m, h; the last repeats; ±20 % jitter; Finpass's Retry-After wins when longer).";
    TRUSTED_PROXIES = "": "Comma list of IPs/CIDRs of reverse proxies: from these peers the first X-Forwarded-For hop is the source address audit events record (from anyone else, the peer).";
}

/// The S3 connection variables: standard AWS names, which the sandbox sets itself and never
/// takes from the developer's shell (a stray `AWS_ACCESS_KEY_ID` would break its S3 login).
pub const S3_CONNECTION: &[Var] = &[
    AWS_REGION,
    AWS_ENDPOINT_URL_S3,
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN,
    AWS_REQUEST_CHECKSUM_CALCULATION,
];

/// One line per variable for `--list-env`: `NAME=DEFAULT`, or `NAME` when it is required.
/// `.ci/k8s_check.py` reads this to check the manifests against the binary.
pub fn list_env() -> String {
    ALL.iter()
        .map(|v| match v.default {
            Some(d) => format!("{}={d}\n", v.name),
            None => format!("{}\n", v.name),
        })
        .collect()
}

/// The variable table for `--help`.
pub fn env_help() -> String {
    let mut out =
        String::from("Environment (the standard AWS chain also applies: IRSA, profiles, IMDS):\n");
    for v in ALL {
        let mut note = match v.default {
            None => "required".to_owned(),
            Some("") => "optional".to_owned(),
            Some(d) => format!("default {d}"),
        };
        if let Some((lo, hi)) = v.range {
            note.push_str(&format!(", {lo}..={hi}"));
        }
        out.push_str(&format!("  {:<34} {} [{note}]\n", v.name, v.help));
    }
    out
}
