//! A statement job as the gateway keeps it: the API's job ([`JobView`], exactly what
//! `GET /v1/statement-jobs/{job_id}` answers and a webhook carries) plus what only the engine
//! needs (the owner, the idempotency key and body hash, the ladder position, the settled
//! results of earlier polls, the webhook outbox). One JSON object per job in S3 is the truth:
//! a wake-up only says which record to look at.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::{
    audit::{Actor, rfc3339},
    domain::{ClientId, Prefix},
    pipeline::{
        CallOutcomes,
        answer::{ReportDto, Summary, render},
    },
};

/// Longest job id accepted on the routes.
pub const MAX_JOB_ID_LEN: usize = 64;

/// A job's id: 1..=64 of `[A-Za-z0-9_-]` (safe in a key, a URL path and a log line).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to {MAX_JOB_ID_LEN} characters of A-Z, a-z, 0-9, '_' and '-'")]
pub struct JobIdError;

impl JobId {
    /// Parses an untrusted id.
    pub fn parse(raw: impl Into<String>) -> Result<Self, JobIdError> {
        let raw = raw.into();
        let valid = !raw.is_empty()
            && raw.len() <= MAX_JOB_ID_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(raw))
        } else {
            Err(JobIdError)
        }
    }

    /// A new job's id when the caller sent no `Idempotency-Key`.
    pub fn random() -> Self {
        Self(format!("job_{}", uuid::Uuid::new_v4().simple()))
    }

    /// The id of the job a caller's `Idempotency-Key` names: derived, so a repeat of the
    /// request finds the job by its key alone (no index to keep), and one caller's key never
    /// names another caller's job.
    pub fn for_idempotency_key(owner: &str, key: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(owner.as_bytes())
            .chain_update([0])
            .chain_update(key.as_bytes())
            .finalize();
        Self(format!("job_{}", &hex::encode(digest)[..32]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = JobIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is: `queued` → `running` → one terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = JobState)]
pub enum JobState {
    Queued,
    Running,
    /// Every report stored or failed.
    Completed,
    /// `deadline_at` passed with reports still PENDING (they stay `pending`; the stored ones
    /// stay stored).
    Expired,
    /// The job cannot go on (`error` says why).
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Expired | Self::Failed | Self::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The webhook event of reaching this state (terminal states only).
    pub fn terminal_event(self) -> Option<&'static str> {
        match self {
            Self::Completed => Some("statement_job.completed"),
            Self::Expired => Some("statement_job.expired"),
            Self::Failed => Some("statement_job.failed"),
            Self::Cancelled => Some("statement_job.cancelled"),
            Self::Queued | Self::Running => None,
        }
    }
}

/// Why a job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobErrorCode {
    /// Finpass does not know the client.
    ClientNotFound,
    /// Finpass refused the gateway's credentials.
    UpstreamUnauthorized,
    /// Finpass refused the request itself (a 4xx other than 404 and 429).
    UpstreamRejected,
    /// Finpass answered for another client than the one asked for.
    ClientMismatch,
}

/// Why a job failed, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = JobError)]
pub struct JobErrorDto {
    pub code: JobErrorCode,
    pub message: String,
}

/// What happened to a job's webhook deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = JobWebhook)]
pub struct WebhookDto {
    pub url: String,
    /// Events delivered (a 2xx answer).
    pub delivered: u32,
    /// Events given up on (retries exhausted, or the receiver answered 410).
    pub failed: u32,
    /// The HTTP status of the latest attempt (`null`: none yet, or no answer).
    pub last_status: Option<u16>,
}

/// A statement job, as `GET /v1/statement-jobs/{job_id}` answers it and a webhook carries it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    #[schema(
        pattern = "^[A-Za-z0-9_-]{1,64}$",
        example = "job_3f9c2a7d41e04b7e9a1c5d2e8f6b0a13"
    )]
    pub job_id: String,
    #[schema(example = "aa_demo_pending")]
    pub client_id: String,
    pub request_id: Option<String>,
    pub state: JobState,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Polling stops at this time; PENDING reports then leave the job `expired`.
    #[schema(format = DateTime)]
    pub deadline_at: String,
    /// When Finpass is asked next; `null` once the job is finished.
    #[schema(format = DateTime)]
    pub next_poll_at: Option<String>,
    /// Finpass calls made so far.
    pub polls: u32,
    /// Exactly as `POST /v1/statements` answers them.
    pub reports: Vec<ReportDto>,
    pub summary: Summary,
    pub error: Option<JobErrorDto>,
    pub webhook: Option<WebhookDto>,
}

/// One webhook event waiting to be delivered (the head of the outbox first: in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Fixed when the event is created, the same on every retry, and the same for the same
    /// event made twice (see [`JobRecord::push_event`]).
    pub webhook_id: String,
    pub event_type: String,
    /// The exact JSON POSTed: `{"type","timestamp","data": <the job>}`.
    pub body: String,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt_at: u64,
}

/// The stored job. Times are unix milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: JobId,
    /// Validated when the job was created.
    pub client_id: String,
    pub request_id: Option<String>,
    pub state: JobState,
    pub created_at: u64,
    pub updated_at: u64,
    pub deadline_at: u64,
    pub next_poll_at: Option<u64>,
    pub polls: u32,
    /// Every report's outcome so far, settled ones remembered (never re-fetched).
    pub outcomes: CallOutcomes,
    pub error: Option<JobErrorDto>,
    pub webhook: Option<WebhookDto>,
    /// Who created it (`service:{name}`, `user:{client}`, `anonymous`): an idempotency key is
    /// this caller's only.
    pub owner: String,
    /// Whom the job's audit events name.
    pub actor: Actor,
    pub idempotency_key: Option<String>,
    /// SHA-256 (hex) of the request as parsed: a repeat with another body is refused.
    pub body_sha256: String,
    /// Polls made on the ladder (its position).
    pub ladder_step: u32,
    /// Webhook events not delivered yet, oldest first.
    #[serde(default)]
    pub outbox: Vec<OutboxEvent>,
}

impl JobRecord {
    /// Finished for the engine: terminal, and every event delivered or given up on.
    pub fn finished(&self) -> bool {
        self.state.is_terminal() && self.outbox.is_empty()
    }

    /// The job as the API shows it. `statements` is `STATEMENTS_PREFIX` (a report's
    /// `statement_id` is read from its key).
    pub fn view(&self, statements: &Prefix) -> JobView {
        let (reports, summary) = match ClientId::parse(self.client_id.as_str()) {
            Ok(client) => {
                let answer = render(
                    &client,
                    statements,
                    self.request_id.clone(),
                    self.outcomes.iter().cloned().collect(),
                );
                (answer.reports, answer.summary)
            }
            // Validated at creation; a record edited by hand shows no reports.
            Err(_) => (Vec::new(), Summary::default()),
        };
        JobView {
            job_id: self.job_id.to_string(),
            client_id: self.client_id.clone(),
            request_id: self.request_id.clone(),
            state: self.state,
            created_at: at(self.created_at),
            updated_at: at(self.updated_at),
            deadline_at: at(self.deadline_at),
            next_poll_at: self.next_poll_at.map(at),
            polls: self.polls,
            reports,
            summary,
            error: self.error.clone(),
            webhook: self.webhook.clone(),
        }
    }

    /// Queues the webhook event `event_type` with the job as it is now (nothing without a
    /// webhook). Its `webhook-id` is derived, not random: a step run twice (a duplicate SQS
    /// message on another replica, a retried step after a lost write) makes the same event with
    /// the same id, so receivers deduplicate it. Every terminal event of a job shares one id
    /// (there is one terminal event per job, whichever state two racing steps reached), and an
    /// `updated` event is named by how many reports were stored when it was made.
    pub fn push_event(&mut self, event_type: &str, statements: &Prefix, now_ms: u64) {
        if self.webhook.is_none() {
            return;
        }
        let view = self.view(statements);
        let webhook_id = event_id(&self.job_id, event_type, view.summary.stored);
        let body = serde_json::json!({
            "type": event_type,
            "timestamp": at(now_ms),
            "data": view,
        });
        self.outbox.push(OutboxEvent {
            webhook_id,
            event_type: event_type.to_owned(),
            body: body.to_string(),
            attempts: 0,
            next_attempt_at: now_ms / 1000,
        });
    }

    /// Ends the job in `state` (terminal) now, with its terminal event queued.
    /// The label of a final state in `jobs_finished_total` (`None` while queued or running).
    pub fn metric_end(state: JobState) -> Option<crate::metrics::JobEnd> {
        use crate::metrics::JobEnd;
        match state {
            JobState::Queued | JobState::Running => None,
            JobState::Completed => Some(JobEnd::Completed),
            JobState::Expired => Some(JobEnd::Expired),
            JobState::Failed => Some(JobEnd::Failed),
            JobState::Cancelled => Some(JobEnd::Cancelled),
        }
    }

    pub fn finish(&mut self, state: JobState, statements: &Prefix, now_ms: u64) {
        self.state = state;
        self.next_poll_at = None;
        self.updated_at = now_ms;
        if let Some(event) = state.terminal_event() {
            self.push_event(event, statements, now_ms);
        }
    }
}

/// `msg_` + 32 hex digits of SHA-256 over the job, the kind of event and the stored count.
fn event_id(job: &JobId, event_type: &str, stored: usize) -> String {
    let kind = if event_type == "statement_job.updated" {
        format!("updated.{stored}")
    } else {
        "terminal".to_owned()
    };
    let digest = Sha256::digest(format!("{job}.{kind}").as_bytes());
    format!("msg_{}", &hex::encode(digest)[..32])
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 of unix milliseconds.
fn at(ms: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_validated() {
        assert!(JobId::parse("job_1-A").is_ok());
        assert!(JobId::parse("a".repeat(64)).is_ok());
        for bad in ["", "a/b", "a.b", "é", &"a".repeat(65)] {
            assert_eq!(JobId::parse(bad), Err(JobIdError), "{bad:?}");
        }
        assert!(JobId::parse(JobId::random().to_string()).is_ok());
    }

    #[test]
    fn an_idempotency_key_names_one_job_per_caller() {
        let a = JobId::for_idempotency_key("service:a", "k1");
        assert_eq!(a, JobId::for_idempotency_key("service:a", "k1"));
        assert_ne!(a, JobId::for_idempotency_key("service:b", "k1"));
        assert_ne!(a, JobId::for_idempotency_key("service:a", "k2"));
        assert!(JobId::parse(a.to_string()).is_ok());
    }

    fn record_with_webhook() -> JobRecord {
        JobRecord {
            job_id: JobId::parse("job_dup").expect("id"),
            client_id: "aa_demo_pending".into(),
            request_id: None,
            state: JobState::Running,
            created_at: 1,
            updated_at: 1,
            deadline_at: 10_000,
            next_poll_at: Some(1),
            polls: 1,
            outcomes: CallOutcomes::default(),
            error: None,
            webhook: Some(WebhookDto {
                url: "https://hooks.example.com/x".into(),
                delivered: 0,
                failed: 0,
                last_status: None,
            }),
            owner: "anonymous".into(),
            actor: Actor {
                caller: "anonymous".into(),
                sub: None,
                jti: None,
                source_address: String::new(),
            },
            idempotency_key: None,
            body_sha256: String::new(),
            ladder_step: 1,
            outbox: Vec::new(),
        }
    }

    /// Two replicas stepping the same job at once (a duplicate SQS message) both end it: the
    /// terminal events they make carry one webhook-id, whatever state each reached, so the
    /// receiver's deduplication sees one terminal event. Random ids made two.
    #[test]
    fn the_same_event_made_twice_has_one_webhook_id() {
        let statements = Prefix::parse("statements/").expect("prefix");
        let (mut a, mut b) = (record_with_webhook(), record_with_webhook());
        a.finish(JobState::Completed, &statements, 5);
        b.finish(JobState::Completed, &statements, 7);
        assert_eq!(a.outbox[0].webhook_id, b.outbox[0].webhook_id);
        let mut c = record_with_webhook();
        c.finish(JobState::Cancelled, &statements, 6);
        assert_eq!(a.outbox[0].webhook_id, c.outbox[0].webhook_id);
        let mut d = record_with_webhook();
        d.push_event("statement_job.updated", &statements, 5);
        assert_ne!(a.outbox[0].webhook_id, d.outbox[0].webhook_id);
        let mut other = record_with_webhook();
        other.job_id = JobId::parse("job_other").expect("id");
        other.finish(JobState::Completed, &statements, 5);
        assert_ne!(a.outbox[0].webhook_id, other.outbox[0].webhook_id);
    }

    #[test]
    fn terminal_states_have_one_event_each() {
        for s in [
            JobState::Completed,
            JobState::Expired,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            assert!(s.is_terminal());
            assert_eq!(
                s.terminal_event(),
                Some(format!("statement_job.{}", s.as_str()).as_str())
            );
        }
        assert!(!JobState::Running.is_terminal() && JobState::Queued.terminal_event().is_none());
    }
}
