//! Prometheus metrics.
//!
//! Every family is prefixed `finpass_gateway_` and carries only bounded labels (routes are
//! match patterns, outcomes and codes are fixed enums): never a client id, key or URL, which
//! would both leak PII and blow up cardinality. Buckets follow the real ranges: milliseconds
//! to seconds for API calls, up to minutes for large transfers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::domain::{AuditAction, FailureCode, ReportStatus};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

const PREFIX: &str = "finpass_gateway";
/// 5 ms .. 60 s: API requests and Finpass calls.
const API_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Events per audit object: 1 when idle, more under load (group commit).
const AUDIT_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
/// 10 ms .. 10 min: downloads and uploads of reports up to hundreds of MiB.
const TRANSFER_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// 10 ms .. 20 s: webhook deliveries (a receiver has 15 s to answer).
const WEBHOOK_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0,
];
/// A job not seen for this long is no longer counted in the oldest job's age by this pod: it
/// finished, or another replica carries it (a running job is polled at least every 15 min).
const JOB_AGE_TTL: Duration = Duration::from_secs(30 * 60);

/// Cheap to clone; all clones feed one registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_in_flight: IntGauge,
    finpass_calls: IntCounterVec,
    finpass_duration: HistogramVec,
    finpass_retries: IntCounterVec,
    downloads: IntCounterVec,
    download_bytes: IntCounter,
    download_duration: HistogramVec,
    uploads: IntCounterVec,
    upload_bytes: IntCounter,
    upload_duration: HistogramVec,
    reports: IntCounterVec,
    dedup_hits: IntCounterVec,
    in_flight: IntGaugeVec,
    link_rejections: IntCounterVec,
    caller_requests: IntCounterVec,
    auth_failures: IntCounterVec,
    s3_requests: IntCounterVec,
    call_duration: HistogramVec,
    calls_in_flight: IntGauge,
    calls_capacity: IntGauge,
    dependency_up: IntGaugeVec,
    content_bytes: IntCounter,
    download_urls: IntCounter,
    statements_deleted: IntCounter,
    audit_events: IntCounterVec,
    audit_writes: IntCounterVec,
    audit_batch: prometheus::Histogram,
    jobs_created: IntCounter,
    jobs_finished: IntCounterVec,
    job_polls: IntCounterVec,
    webhook_deliveries: IntCounterVec,
    webhook_duration: HistogramVec,
    oldest_job_age: IntGauge,
    /// Unfinished jobs this pod worked on recently: job id → (created at, unix seconds; last
    /// seen). Only the age leaves the process, never an id.
    open_jobs: Mutex<HashMap<String, (u64, Instant)>>,
}

fn name(n: &str) -> String {
    format!("{PREFIX}_{n}")
}

/// Registration only fails for duplicate or malformed names, which are constants here.
fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    if let Err(e) = r.register(Box::new(c.clone())) {
        panic!("metric registration is static and cannot fail: {e}");
    }
    c
}

fn counter_vec(r: &Registry, n: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name(n), help), labels).expect("static metric"),
    )
}

fn histogram_vec(r: &Registry, n: &str, help: &str, labels: &[&str], b: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name(n), help).buckets(b.to_vec());
    register(r, HistogramVec::new(opts, labels).expect("static metric"))
}

fn counter(r: &Registry, n: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name(n), help).expect("static metric"))
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        if let Err(e) = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            panic!("process collector registration is static and cannot fail: {e}");
        }
        let build_info = register(
            &r,
            IntGaugeVec::new(
                Opts::new(name("build_info"), "Build information; always 1."),
                &["version"],
            )
            .expect("static metric"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let inner = Inner {
            http_requests: counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests served.",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                &r,
                "http_request_duration_seconds",
                "HTTP request latency.",
                &["route", "method", "status"],
                API_BUCKETS,
            ),
            http_in_flight: register(
                &r,
                IntGauge::new(
                    name("http_requests_in_flight"),
                    "HTTP requests being served.",
                )
                .expect("static metric"),
            ),
            finpass_calls: counter_vec(
                &r,
                "finpass_requests_total",
                "Finpass call attempts by outcome.",
                &["outcome"],
            ),
            finpass_duration: histogram_vec(
                &r,
                "finpass_request_duration_seconds",
                "Finpass call attempt latency.",
                &["outcome"],
                API_BUCKETS,
            ),
            finpass_retries: counter_vec(
                &r,
                "finpass_retries_total",
                "Finpass call retries, by the outcome that caused them.",
                &["reason"],
            ),
            downloads: counter_vec(
                &r,
                "report_downloads_total",
                "Report downloads by outcome.",
                &["outcome"],
            ),
            download_bytes: counter(
                &r,
                "report_download_bytes_total",
                "Bytes downloaded from report links.",
            ),
            download_duration: histogram_vec(
                &r,
                "report_download_duration_seconds",
                "Report download (and upload) duration.",
                &["outcome"],
                TRANSFER_BUCKETS,
            ),
            uploads: counter_vec(
                &r,
                "s3_uploads_total",
                "S3 uploads by outcome.",
                &["outcome"],
            ),
            upload_bytes: counter(&r, "s3_upload_bytes_total", "Bytes stored in S3."),
            upload_duration: histogram_vec(
                &r,
                "s3_upload_duration_seconds",
                "S3 upload duration.",
                &["outcome"],
                TRANSFER_BUCKETS,
            ),
            reports: counter_vec(
                &r,
                "reports_total",
                "Reports by final status and failure code.",
                &["status", "code"],
            ),
            dedup_hits: counter_vec(
                &r,
                "dedup_hits_total",
                "Reports not downloaded because already stored or in flight.",
                &["kind"],
            ),
            in_flight: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(name("in_flight"), "Work in progress by kind."),
                    &["kind"],
                )
                .expect("static metric"),
            ),
            link_rejections: counter_vec(
                &r,
                "link_rejections_total",
                "Report links refused by the link policy.",
                &["reason"],
            ),
            caller_requests: counter_vec(
                &r,
                "caller_requests_total",
                "Authenticated API requests by caller name.",
                &["caller"],
            ),
            auth_failures: counter_vec(
                &r,
                "auth_failures_total",
                "Refused authentications by reason (never a caller, source or token).",
                &["reason"],
            ),
            s3_requests: counter_vec(
                &r,
                "s3_requests_total",
                "S3 API requests by operation (attempts the SDK retries count once).",
                &["operation"],
            ),
            call_duration: histogram_vec(
                &r,
                "call_duration_seconds",
                "Duration of POST /v1/statements calls answered 200, by whether the caller asked to wait for PENDING reports (the latency SLI counts wait=\"false\").",
                &["wait"],
                API_BUCKETS,
            ),
            calls_in_flight: register(
                &r,
                IntGauge::new(
                    name("calls_in_flight"),
                    "POST /v1/statements calls in progress (admitted, holding a call slot); autoscaling reads it against calls_capacity.",
                )
                .expect("static metric"),
            ),
            calls_capacity: register(
                &r,
                IntGauge::new(
                    name("calls_capacity"),
                    "Call slots of this process (MAX_CONCURRENT_CALLS).",
                )
                .expect("static metric"),
            ),
            dependency_up: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        name("dependency_up"),
                        "1 when the dependency answered this pod's last probe (S3: HeadBucket every 10 s).",
                    ),
                    &["dependency"],
                )
                .expect("static metric"),
            ),
            content_bytes: counter(
                &r,
                "statement_content_bytes_total",
                "Statement bytes streamed to callers by the content route.",
            ),
            download_urls: counter(
                &r,
                "download_urls_total",
                "Pre-signed download links issued.",
            ),
            statements_deleted: counter(
                &r,
                "statements_deleted_total",
                "Statements purged (every version) by delete calls.",
            ),
            audit_events: counter_vec(
                &r,
                "audit_events_total",
                "Audit events made durable, by action.",
                &["action"],
            ),
            audit_writes: counter_vec(
                &r,
                "audit_writes_total",
                "Audit objects written (one per group commit), by outcome; an error answers 503 audit_unavailable to every call in the batch.",
                &["outcome"],
            ),
            audit_batch: register(
                &r,
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        name("audit_batch_events"),
                        "Events per audit object (group commit).",
                    )
                    .buckets(AUDIT_BATCH_BUCKETS.to_vec()),
                )
                .expect("static metric"),
            ),
            jobs_created: counter(
                &r,
                "jobs_created_total",
                "Statement jobs created (POST /v1/statement-jobs answered 202 with a new job).",
            ),
            jobs_finished: counter_vec(
                &r,
                "jobs_finished_total",
                "Statement jobs that reached a final state, by state.",
                &["state"],
            ),
            job_polls: counter_vec(
                &r,
                "job_polls_total",
                "Finpass polls made by statement jobs, by outcome (reports still pending, all settled, or a transient error retried on the ladder).",
                &["outcome"],
            ),
            webhook_deliveries: counter_vec(
                &r,
                "webhook_deliveries_total",
                "Webhook delivery attempts, by outcome: delivered (2xx), failed (retried), gone (410).",
                &["outcome"],
            ),
            webhook_duration: histogram_vec(
                &r,
                "webhook_delivery_duration_seconds",
                "Duration of one webhook delivery attempt, until the answer or the timeout.",
                &["outcome"],
                WEBHOOK_BUCKETS,
            ),
            oldest_job_age: register(
                &r,
                IntGauge::new(
                    name("jobs_oldest_unfinished_age_seconds"),
                    "Age of the oldest queued or running statement job this pod worked on in the last 30 minutes (0 if none).",
                )
                .expect("static metric"),
            ),
            open_jobs: Mutex::new(HashMap::new()),
            registry: r,
        };
        inner.initialize_known_labels();
        Self(Arc::new(inner))
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.0.http_requests.with_label_values(&labels).inc();
        self.0
            .http_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn http_in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(self.0.http_in_flight.clone())
    }

    pub fn finpass_call(&self, outcome: &str, elapsed: Duration) {
        self.0.finpass_calls.with_label_values(&[outcome]).inc();
        self.0
            .finpass_duration
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }

    pub fn finpass_retry(&self, reason: &str) {
        self.0.finpass_retries.with_label_values(&[reason]).inc();
    }

    /// `failure` is `None` for a successful download.
    pub fn download(&self, failure: Option<FailureCode>, bytes: u64, elapsed: Duration) {
        let outcome = failure.map_or("success", FailureCode::as_str);
        self.0.downloads.with_label_values(&[outcome]).inc();
        self.0.download_bytes.inc_by(bytes);
        self.0
            .download_duration
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }

    pub fn upload(&self, outcome: UploadOutcome, bytes: u64, elapsed: Duration) {
        let outcome = outcome.as_str();
        self.0.uploads.with_label_values(&[outcome]).inc();
        if outcome == UploadOutcome::Success.as_str() {
            self.0.upload_bytes.inc_by(bytes);
        }
        self.0
            .upload_duration
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }

    /// A report's final status; `code` is `None` unless it failed (the label is then empty).
    pub fn report(&self, status: ReportStatus, code: Option<FailureCode>) {
        let code = code.map_or("", FailureCode::as_str);
        self.0
            .reports
            .with_label_values(&[status.as_str(), code])
            .inc();
    }

    pub fn dedup_hit(&self, kind: DedupKind) {
        self.0.dedup_hits.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn in_flight(&self, kind: InFlightKind) -> GaugeGuard {
        GaugeGuard::new(self.0.in_flight.with_label_values(&[kind.as_str()]))
    }

    pub fn link_rejected(&self, reason: &str) {
        self.0.link_rejections.with_label_values(&[reason]).inc();
    }

    /// One admitted call, for as long as the guard lives.
    pub fn call_in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(self.0.calls_in_flight.clone())
    }

    pub fn set_calls_capacity(&self, slots: usize) {
        self.0
            .calls_capacity
            .set(i64::try_from(slots).unwrap_or(i64::MAX));
    }

    /// Records whether `dependency` (a fixed name such as `s3`) answered.
    pub fn dependency_up(&self, dependency: Dependency, up: bool) {
        self.0
            .dependency_up
            .with_label_values(&[dependency.as_str()])
            .set(i64::from(up));
    }

    /// A `POST /v1/statements` call answered 200; `waited` when it asked for `wait_seconds`.
    pub fn call_answered(&self, waited: bool, elapsed: Duration) {
        let wait = if waited { "true" } else { "false" };
        self.0
            .call_duration
            .with_label_values(&[wait])
            .observe(elapsed.as_secs_f64());
    }

    pub fn s3_request(&self, op: S3Op) {
        self.0.s3_requests.with_label_values(&[op.as_str()]).inc();
    }

    pub fn caller_request(&self, caller: &str) {
        self.0.caller_requests.with_label_values(&[caller]).inc();
    }

    pub fn auth_failure(&self, reason: AuthFailure) {
        self.0
            .auth_failures
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Bytes of a statement streamed to a caller.
    pub fn content_bytes(&self, bytes: u64) {
        self.0.content_bytes.inc_by(bytes);
    }

    pub fn download_url_issued(&self) {
        self.0.download_urls.inc();
    }

    pub fn statements_deleted(&self, n: usize) {
        self.0.statements_deleted.inc_by(n as u64);
    }

    /// One audit object written (or not), holding `events` events.
    pub fn audit_write(&self, outcome: AuditWriteOutcome, events: &[AuditAction]) {
        self.0
            .audit_writes
            .with_label_values(&[outcome.as_str()])
            .inc();
        if outcome == AuditWriteOutcome::Success {
            self.0.audit_batch.observe(events.len() as f64);
            for a in events {
                self.0.audit_events.with_label_values(&[a.as_str()]).inc();
            }
        }
    }

    /// A statement job was created.
    pub fn job_created(&self) {
        self.0.jobs_created.inc();
    }

    /// A job is queued or running (at creation and after each step that leaves it so), created
    /// at `created_at` (unix seconds): it counts towards the oldest unfinished job's age.
    pub fn job_open(&self, job_id: &str, created_at: u64) {
        self.0
            .open_jobs_lock()
            .insert(job_id.to_owned(), (created_at, Instant::now()));
    }

    /// A job reached its final state. Call it on the step that wrote the state, once per job:
    /// a duplicate wake-up that finds the job already final does not call it again.
    pub fn job_finished(&self, job_id: &str, state: JobEnd) {
        self.0
            .jobs_finished
            .with_label_values(&[state.as_str()])
            .inc();
        self.0.open_jobs_lock().remove(job_id);
    }

    pub fn job_poll(&self, outcome: JobPoll) {
        self.0
            .job_polls
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// One webhook delivery attempt and how long it took.
    pub fn webhook_delivery(&self, outcome: WebhookOutcome, elapsed: Duration) {
        self.0
            .webhook_deliveries
            .with_label_values(&[outcome.as_str()])
            .inc();
        self.0
            .webhook_duration
            .with_label_values(&[outcome.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        self.0.update_oldest_job_age();
        let mut buf = Vec::new();
        let families = self.0.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Every label value the code can produce, so series exist (at 0) from the first scrape:
/// `rate()` and alerts then see 0 instead of an absent series, and a dashboard panel never
/// silently shows "no data" because an outcome has not happened yet.
pub const FINPASS_OUTCOMES: &[&str] = &crate::domain::FinpassOutcome::LABELS;
pub const RETRY_REASONS: &[&str] = &crate::domain::FinpassOutcome::RETRY_LABELS;

/// Declares a label enum with its `ALL` list and `as_str`, so a metric's label values have one
/// home and initialisation cannot miss one.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $label),+ }
            }
        }
    };
}

label_enum!(
    /// How an S3 upload ended.
    UploadOutcome {
        Success => "success",
        Error => "error",
        SourceFailed => "source_failed",
    }
);
label_enum!(
    /// How writing one audit object ended.
    AuditWriteOutcome {
        Success => "success",
        Error => "error",
    }
);
label_enum!(
    /// Why an authentication was refused.
    AuthFailure {
        MissingToken => "missing_token",
        InvalidToken => "invalid_token",
        InvalidJwt => "invalid_jwt",
        WrongListener => "wrong_listener",
        RateLimited => "rate_limited",
    }
);
label_enum!(
    /// Why a report was not downloaded.
    DedupKind {
        AlreadyStored => "already_stored",
        InFlight => "in_flight",
    }
);
label_enum!(
    /// S3 API operations, counted per request so the cost of a report is visible.
    S3Op {
        HeadBucket => "HeadBucket",
        HeadObject => "HeadObject",
        GetObject => "GetObject",
        PutObject => "PutObject",
        CopyObject => "CopyObject",
        DeleteObject => "DeleteObject",
        CreateMultipartUpload => "CreateMultipartUpload",
        UploadPart => "UploadPart",
        CompleteMultipartUpload => "CompleteMultipartUpload",
        AbortMultipartUpload => "AbortMultipartUpload",
        ListObjectsV2 => "ListObjectsV2",
        ListObjectVersions => "ListObjectVersions",
        DeleteObjects => "DeleteObjects",
        ListMultipartUploads => "ListMultipartUploads",
        GetBucketLocation => "GetBucketLocation",
    }
);
label_enum!(
    /// What the pod depends on, probed in the background.
    Dependency {
        S3 => "s3",
    }
);
label_enum!(
    /// The final state of a statement job.
    JobEnd {
        Completed => "completed",
        Expired => "expired",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);
label_enum!(
    /// What one poll of a statement job found.
    JobPoll {
        Pending => "pending",
        Settled => "settled",
        Error => "error",
    }
);
label_enum!(
    /// How one webhook delivery attempt ended.
    WebhookOutcome {
        Delivered => "delivered",
        Failed => "failed",
        Gone => "gone",
    }
);
label_enum!(
    /// Work in progress.
    InFlightKind {
        Download => "download",
        S3Upload => "s3_upload",
    }
);

pub const LINK_REJECTIONS: &[&str] = &crate::link_policy::LinkRejection::LABELS;

impl Inner {
    fn open_jobs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        // Every mutation is one insert or remove: a panic elsewhere leaves the map usable.
        self.open_jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets jobs not seen for [`JOB_AGE_TTL`] and sets the gauge from the rest.
    fn update_oldest_job_age(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut open = self.open_jobs_lock();
        open.retain(|_, (_, seen)| seen.elapsed() < JOB_AGE_TTL);
        let oldest = open
            .values()
            .map(|(created, _)| now.saturating_sub(*created))
            .max()
            .unwrap_or(0);
        self.oldest_job_age
            .set(i64::try_from(oldest).unwrap_or(i64::MAX));
    }

    fn initialize_known_labels(&self) {
        for o in FINPASS_OUTCOMES {
            self.finpass_calls.with_label_values(&[o]);
            self.finpass_duration.with_label_values(&[o]);
        }
        for r in RETRY_REASONS {
            self.finpass_retries.with_label_values(&[r]);
        }
        let download_outcomes =
            std::iter::once("success").chain(FailureCode::ALL.iter().map(|c| c.as_str()));
        for o in download_outcomes {
            self.downloads.with_label_values(&[o]);
            self.download_duration.with_label_values(&[o]);
        }
        for o in UploadOutcome::ALL {
            self.uploads.with_label_values(&[o.as_str()]);
            self.upload_duration.with_label_values(&[o.as_str()]);
        }
        for status in ReportStatus::ALL {
            match status {
                ReportStatus::Failed => {
                    for c in FailureCode::ALL {
                        self.reports
                            .with_label_values(&[status.as_str(), c.as_str()]);
                    }
                }
                _ => {
                    self.reports.with_label_values(&[status.as_str(), ""]);
                }
            }
        }
        for k in DedupKind::ALL {
            self.dedup_hits.with_label_values(&[k.as_str()]);
        }
        for r in AuthFailure::ALL {
            self.auth_failures.with_label_values(&[r.as_str()]);
        }
        for d in Dependency::ALL {
            self.dependency_up.with_label_values(&[d.as_str()]);
        }
        for wait in ["true", "false"] {
            self.call_duration.with_label_values(&[wait]);
        }
        for op in S3Op::ALL {
            self.s3_requests.with_label_values(&[op.as_str()]);
        }
        for k in InFlightKind::ALL {
            self.in_flight.with_label_values(&[k.as_str()]);
        }
        for r in LINK_REJECTIONS {
            self.link_rejections.with_label_values(&[r]);
        }
        for a in AuditAction::ALL {
            self.audit_events.with_label_values(&[a.as_str()]);
        }
        for o in AuditWriteOutcome::ALL {
            self.audit_writes.with_label_values(&[o.as_str()]);
        }
        for s in JobEnd::ALL {
            self.jobs_finished.with_label_values(&[s.as_str()]);
        }
        for o in JobPoll::ALL {
            self.job_polls.with_label_values(&[o.as_str()]);
        }
        for o in WebhookOutcome::ALL {
            self.webhook_deliveries.with_label_values(&[o.as_str()]);
            self.webhook_duration.with_label_values(&[o.as_str()]);
        }
    }
}

/// Increments a gauge now and decrements it when dropped, so early returns and cancellations
/// cannot leave an in-flight gauge stuck.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(g: IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn job_series_exist_at_zero_before_any_job() {
        let text = Metrics::new().render();
        for series in [
            "finpass_gateway_jobs_created_total",
            "finpass_gateway_jobs_finished_total{state=\"expired\"}",
            "finpass_gateway_job_polls_total{outcome=\"error\"}",
            "finpass_gateway_webhook_deliveries_total{outcome=\"failed\"}",
            "finpass_gateway_webhook_delivery_duration_seconds_count{outcome=\"delivered\"}",
            "finpass_gateway_jobs_oldest_unfinished_age_seconds",
        ] {
            assert_eq!(sample(&text, series), Some(0.0), "{series}");
        }
    }

    #[test]
    fn the_oldest_unfinished_job_age_follows_open_and_finished_jobs_without_their_ids() {
        let m = Metrics::new();
        let now = unix_now();
        m.job_created();
        m.job_open("job_old_secret_id", now - 7200);
        m.job_open("job_new", now - 60);
        let text = m.render();
        let age = sample(&text, "finpass_gateway_jobs_oldest_unfinished_age_seconds").unwrap();
        assert!((7200.0..7300.0).contains(&age), "{age}");
        assert!(
            !text.contains("job_old_secret_id"),
            "a job id in the metrics"
        );

        m.job_finished("job_old_secret_id", JobEnd::Completed);
        let text = m.render();
        let age = sample(&text, "finpass_gateway_jobs_oldest_unfinished_age_seconds").unwrap();
        assert!((60.0..160.0).contains(&age), "{age}");
        assert_eq!(
            sample(
                &text,
                "finpass_gateway_jobs_finished_total{state=\"completed\"}"
            ),
            Some(1.0)
        );
        m.job_finished("job_new", JobEnd::Expired);
        let text = m.render();
        assert_eq!(
            sample(&text, "finpass_gateway_jobs_oldest_unfinished_age_seconds"),
            Some(0.0)
        );
    }

    #[test]
    fn webhook_attempts_count_by_outcome_with_their_duration() {
        let m = Metrics::new();
        m.webhook_delivery(WebhookOutcome::Delivered, Duration::from_millis(40));
        m.webhook_delivery(WebhookOutcome::Failed, Duration::from_secs(15));
        m.job_poll(JobPoll::Pending);
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                "finpass_gateway_webhook_deliveries_total{outcome=\"failed\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "finpass_gateway_webhook_delivery_duration_seconds_bucket{outcome=\"delivered\",le=\"0.05\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "finpass_gateway_job_polls_total{outcome=\"pending\"}"
            ),
            Some(1.0)
        );
    }
}
