//! One step of a job: what a wake-up does.
//!
//! Read the record; if it is finished, nothing. If its deadline passed, it ends `expired`. If
//! a poll is due, one Finpass call through the same poll as `POST /v1/statements`
//! ([`Pipeline::poll_once`]: identity, immutability, one write per statement), the statements
//! it stored audited as stores with the job's id, the next poll put on the ladder (jittered;
//! Finpass's `Retry-After` wins when longer, never past the deadline). A transient Finpass
//! failure (5xx, 429, timeout, transport) is only a later poll; `client_not_found` and refused
//! credentials end the job `failed`. Then the record is written back under the job's lock,
//! unless it finished meanwhile (a cancel wins over a step in flight).
//!
//! Every step is idempotent: a duplicate or early wake-up finds nothing due and only says
//! when to look again; a repeated poll finds the settled results in the record, and a report
//! stored by a step whose record was never written is found in S3 by its identity (HEAD
//! before write), not stored twice.

use std::{rc::Rc, sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    ladder::{Ladder, jittered},
    record::{JobErrorCode, JobErrorDto, JobId, JobRecord, JobState, now_ms},
    store::{JobStore, JobStoreError},
    webhook::{WebhookClient, Webhooks, outbox},
};
use crate::{
    audit::{AuditError, AuditLog, Recorder},
    domain::{AuditAction, AuditOutcome, ClientId, RequestId, statement_id_of},
    finpass::FinpassError,
    metrics::JobPoll,
    pipeline::{Pipeline, PollContext, ReportResult},
    storage::StorageError,
};

/// Finpass calls one step may make to replace expired links (as a call does).
const MAX_LINK_REFRESHES: u32 = 2;

/// What the engine does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Look at the job again after this long.
    After(Duration),
    /// Nothing left to do for this job.
    Finished,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] JobStoreError),
    #[error("the client's purge markers could not be read: {0}")]
    Purges(StorageError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What a step works with (the engine's, on its own arbiter).
pub struct StepParts<'a> {
    pub pipeline: &'a Arc<Pipeline>,
    pub store: &'a JobStore,
    pub audit: &'a AuditLog,
    pub polls: &'a Ladder,
    /// The endpoints file and the retry ladder (`WEBHOOK_RETRY_SCHEDULE`).
    pub webhooks: &'a Webhooks,
    /// This thread's delivery client.
    pub webhook_client: &'a WebhookClient,
}

/// Runs one step of job `id`. An error leaves the record as it was: the wake-up is retried.
#[tracing::instrument(name = "jobs.step", skip_all, fields(job_id = %id))]
pub async fn step(parts: &StepParts<'_>, id: &JobId) -> Result<Next, StepError> {
    if poll_step(parts, id).await? == Next::Finished {
        return Ok(Next::Finished);
    }
    // Then the outbox's due events, head first (a poll may just have queued one). Delivery
    // touches only the outbox and the `webhook` summary, never the job's state.
    let job = outbox::deliver_due(
        parts.store,
        parts.webhooks,
        parts.webhook_client,
        &parts.pipeline.metrics,
        id,
    )
    .await?;
    Ok(job.map_or(Next::Finished, |job| next_of(&job, now_ms())))
}

/// The polling part of a step: expiry, or one due poll.
async fn poll_step(parts: &StepParts<'_>, id: &JobId) -> Result<Next, StepError> {
    let Some(mut job) = parts.store.get(id).await? else {
        // A wake-up for a record that is gone (or not yet visible): nothing to do.
        return Ok(Next::Finished);
    };
    if job.state.is_terminal() {
        return Ok(next_of(&job, now_ms()));
    }
    let now = now_ms();
    let statements = parts.store.storage().prefix().clone();
    if now >= job.deadline_at {
        job.finish(JobState::Expired, &statements, now);
        return save(parts, job).await;
    }
    if let Some(at) = job.next_poll_at
        && at > now
    {
        return Ok(Next::After(Duration::from_millis(at - now)));
    }
    poll(parts, &mut job).await?;
    save(parts, job).await
}

/// One poll (and up to [`MAX_LINK_REFRESHES`] more for expired links), recorded in `job`.
async fn poll(parts: &StepParts<'_>, job: &mut JobRecord) -> Result<(), StepError> {
    let statements = parts.store.storage().prefix().clone();
    let (Ok(client_id), Ok(request_id)) = (
        ClientId::parse(job.client_id.as_str()),
        job.request_id.clone().map(RequestId::parse).transpose(),
    ) else {
        // Validated at creation: a record edited by hand.
        job.error = Some(JobErrorDto {
            code: JobErrorCode::UpstreamRejected,
            message: "the job's client_id or request_id is not valid".to_owned(),
        });
        job.finish(JobState::Failed, &statements, now_ms());
        return Ok(());
    };
    let storage = parts.store.storage();
    let purges = storage
        .watch_purges(&client_id)
        .await
        .map_err(StepError::Purges)?;
    let ctx = Rc::new(PollContext {
        client_id: client_id.clone(),
        request_id,
        purges,
        retain_until: storage.default_retain_until(std::time::SystemTime::now()),
    });
    let deadline = Instant::now() + parts.pipeline.limits.call_deadline;
    let stored_before = stored_ids(job, &client_id, &statements);
    let mut outcomes = job.outcomes.clone();
    let mut refreshes = 0;
    let result = loop {
        job.polls = job.polls.saturating_add(1);
        let result = parts
            .pipeline
            .poll_once(&ctx, &mut outcomes, deadline)
            .await;
        if result.is_ok()
            && outcomes.needs_fresh_links()
            && refreshes < MAX_LINK_REFRESHES
            && Instant::now() < deadline
        {
            refreshes += 1;
            continue;
        }
        break result;
    };
    job.outcomes = outcomes;
    parts.pipeline.metrics.job_poll(match &result {
        Err(_) => JobPoll::Error,
        Ok(()) if job.outcomes.pending() || job.outcomes.needs_fresh_links() => JobPoll::Pending,
        Ok(()) => JobPoll::Settled,
    });
    let now = now_ms();
    job.updated_at = now;
    job.ladder_step = job.ladder_step.saturating_add(1);
    let mut delay = jittered(parts.polls.repeating(job.ladder_step - 1));
    match result {
        Ok(()) => {
            let new: Vec<String> = stored_ids(job, &client_id, &statements)
                .into_iter()
                .filter(|id| !stored_before.contains(id))
                .collect();
            if !new.is_empty() {
                // Durable before the record says they are stored (fail closed, as a call).
                Recorder::new(
                    parts.audit,
                    AuditAction::Store,
                    job.actor.clone(),
                    &client_id,
                    job.job_id.to_string(),
                )
                .record(AuditOutcome::Ok, new.clone())
                .await?;
            }
            if !job.outcomes.pending() && !job.outcomes.needs_fresh_links() {
                job.finish(JobState::Completed, &statements, now);
                return Ok(());
            }
            job.state = JobState::Running;
            if !new.is_empty() {
                job.push_event("statement_job.updated", &statements, now);
            }
        }
        Err(e) => match terminal(&e) {
            Some(code) => {
                tracing::warn!(error = %e, "Finpass refused the job; it failed");
                job.error = Some(JobErrorDto {
                    code,
                    message: e.to_string(),
                });
                job.finish(JobState::Failed, &statements, now);
                return Ok(());
            }
            None => {
                tracing::info!(error = %e, "Finpass poll failed; the job polls again later");
                if let FinpassError::RateLimited {
                    retry_after: Some(wait),
                } = e
                {
                    delay = delay.max(wait);
                }
                job.state = JobState::Running;
            }
        },
    }
    let at = now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
    // The last poll is at the deadline at the latest; past it the job expires.
    job.next_poll_at = Some(at.min(job.deadline_at));
    Ok(())
}

/// The Finpass failures a job cannot get past; every other one is retried on the ladder.
fn terminal(e: &FinpassError) -> Option<JobErrorCode> {
    match e {
        FinpassError::ClientNotFound => Some(JobErrorCode::ClientNotFound),
        FinpassError::Unauthorized => Some(JobErrorCode::UpstreamUnauthorized),
        FinpassError::Rejected { .. } => Some(JobErrorCode::UpstreamRejected),
        FinpassError::ClientMismatch => Some(JobErrorCode::ClientMismatch),
        FinpassError::EndpointNotFound
        | FinpassError::RateLimited { .. }
        | FinpassError::Server { .. }
        | FinpassError::Timeout
        | FinpassError::Transport(_)
        | FinpassError::InvalidResponse => None,
    }
}

fn stored_ids(
    job: &JobRecord,
    client: &ClientId,
    statements: &crate::domain::Prefix,
) -> Vec<String> {
    job.outcomes
        .iter()
        .filter_map(|o| match &o.result {
            ReportResult::Stored(s) => statement_id_of(&s.key, statements, client),
            _ => None,
        })
        .map(|id| id.to_string())
        .collect()
}

/// Writes the step's record under the job's lock, unless the stored one finished meanwhile
/// (a cancel): then that one stands. The step that writes a final state counts it.
async fn save(parts: &StepParts<'_>, job: JobRecord) -> Result<Next, StepError> {
    let store = parts.store;
    let _lock = store.lock(&job.job_id).await;
    if let Some(current) = store.get(&job.job_id).await?
        && current.state.is_terminal()
    {
        return Ok(next_of(&current, now_ms()));
    }
    store.put(&job).await?;
    let metrics = &parts.pipeline.metrics;
    match JobRecord::metric_end(job.state) {
        Some(end) => metrics.job_finished(job.job_id.as_str(), end),
        None => metrics.job_open(job.job_id.as_str(), job.created_at / 1000),
    }
    Ok(next_of(&job, now_ms()))
}

/// When the engine looks at the job next: its next poll or its next webhook attempt.
pub fn next_of(job: &JobRecord, now: u64) -> Next {
    if job.finished() {
        return Next::Finished;
    }
    let poll = job.next_poll_at.filter(|_| !job.state.is_terminal());
    let delivery = job
        .outbox
        .first()
        .map(|e| e.next_attempt_at.saturating_mul(1000));
    match poll.into_iter().chain(delivery).min() {
        Some(at) => Next::After(Duration::from_millis(at.saturating_sub(now))),
        // Not terminal and nothing scheduled: a new job, poll now.
        None => Next::After(Duration::ZERO),
    }
}
