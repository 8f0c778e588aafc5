//! Delivering a job's webhook outbox: only the head is attempted, so one job's events arrive in
//! order; an event keeps its `webhook-id` on every retry (fixed when it was queued), so a
//! receiver deduplicates on it and a duplicate wake-up never sends an event under a new id.
//!
//! An attempt is made without the job's lock (it may take [`super::DELIVERY_TIMEOUT`]); its
//! result is written under the lock to the record as it is then, and only if the head is still
//! the event attempted. Only the outbox and the `webhook` summary change: a failed delivery
//! never changes the job's state.

use std::time::{Duration, Instant};

use url::Url;

use super::{Attempt, Secret, WebhookClient, Webhooks};
use crate::jobs::{
    ladder::{Ladder, jittered},
    record::{JobId, JobRecord},
    store::{JobStore, JobStoreError},
};
use crate::metrics::{Metrics, WebhookOutcome};

/// The status a 410 leaves in `webhook.last_status`: from then on the job sends nothing.
const GONE: u16 = 410;

/// Events one step may deliver back to back (the rest wait for the next wake-up).
const MAX_EVENTS_PER_STEP: usize = 16;

/// The caller name `WEBHOOK_ENDPOINTS_FILE` keys destinations by, from a job's owner
/// (`service:{name}` or `anonymous`); users (`user:…`) have none.
pub fn endpoint_caller(owner: &str) -> Option<&str> {
    match owner.split_once(':') {
        Some(("service", name)) => Some(name),
        None if owner == "anonymous" => Some("anonymous"),
        _ => None,
    }
}

/// The head event, ready to send.
#[derive(Debug)]
pub struct Due {
    pub webhook_id: String,
    pub url: Url,
    pub secrets: Vec<Secret>,
    pub body: String,
}

/// Looks at the head of `job`'s outbox at `now` (unix seconds): returns it when it is due and
/// can be sent. Events that can never be sent are given up on here (counted `failed`): every
/// event after a 410, and an event whose destination is no longer in the endpoints file (no
/// secret to sign with). Returns whether `job` changed.
pub fn take_due(job: &mut JobRecord, webhooks: &Webhooks, now: u64) -> (bool, Option<Due>) {
    let mut changed = false;
    loop {
        let Some(head) = job.outbox.first() else {
            return (changed, None);
        };
        let Some(hook) = job.webhook.as_mut() else {
            // No webhook: nothing to deliver to (events are not queued without one).
            job.outbox.clear();
            return (true, None);
        };
        let secrets = Url::parse(&hook.url).ok().and_then(|url| {
            let secrets = endpoint_caller(&job.owner)
                .and_then(|caller| webhooks.endpoints.secrets_for(caller, &url))?;
            Some((url, secrets.to_vec()))
        });
        match secrets {
            Some((url, secrets)) if hook.last_status != Some(GONE) => {
                if head.next_attempt_at > now {
                    return (changed, None);
                }
                let due = Due {
                    webhook_id: head.webhook_id.clone(),
                    url,
                    secrets,
                    body: head.body.clone(),
                };
                return (changed, Some(due));
            }
            _ => {
                if hook.last_status != Some(GONE) {
                    tracing::warn!(
                        job_id = %job.job_id,
                        "the job's webhook_url is no longer an allowed destination; its event is dropped"
                    );
                }
                hook.failed = hook.failed.saturating_add(1);
                job.outbox.remove(0);
                changed = true;
            }
        }
    }
}

/// Writes what an attempt of event `webhook_id` came to into `job`, if that event is still the
/// head (a concurrent step may have delivered it). Returns whether `job` changed.
pub fn record_attempt(
    job: &mut JobRecord,
    webhook_id: &str,
    attempt: Attempt,
    retries: &Ladder,
    now: u64,
) -> bool {
    let is_head = job
        .outbox
        .first()
        .is_some_and(|e| e.webhook_id == webhook_id);
    let Some(hook) = job.webhook.as_mut().filter(|_| is_head) else {
        return false;
    };
    hook.last_status = attempt.status();
    match attempt {
        Attempt::Delivered { .. } => {
            hook.delivered = hook.delivered.saturating_add(1);
            job.outbox.remove(0);
        }
        Attempt::Gone => {
            // The receiver wants no more: this event and every queued one are given up on.
            let dropped = u32::try_from(job.outbox.len()).unwrap_or(u32::MAX);
            hook.failed = hook.failed.saturating_add(dropped);
            job.outbox.clear();
        }
        Attempt::Retry { retry_after, .. } => {
            let head = &mut job.outbox[0];
            head.attempts = head.attempts.saturating_add(1);
            match retries.step(head.attempts - 1) {
                Some(step) => {
                    // The receiver's Retry-After wins when it asks for longer than the ladder.
                    let wait = jittered(step).max(retry_after.unwrap_or(Duration::ZERO));
                    head.next_attempt_at = now.saturating_add(wait.as_secs_f64().ceil() as u64);
                }
                None => {
                    hook.failed = hook.failed.saturating_add(1);
                    job.outbox.remove(0);
                }
            }
        }
    }
    true
}

/// Delivers job `id`'s due events, head first, until one is not delivered or none is due.
/// Returns the record as it is afterwards (`None`: it is gone).
pub async fn deliver_due(
    store: &JobStore,
    webhooks: &Webhooks,
    client: &WebhookClient,
    metrics: &Metrics,
    id: &JobId,
) -> Result<Option<JobRecord>, JobStoreError> {
    let mut last = None;
    for _ in 0..MAX_EVENTS_PER_STEP {
        let due = {
            let _lock = store.lock(id).await;
            let Some(mut job) = store.get(id).await? else {
                return Ok(None);
            };
            let (changed, due) = take_due(&mut job, webhooks, unix_now());
            if changed {
                store.put(&job).await?;
            }
            last = Some(job);
            due
        };
        let Some(due) = due else { break };
        let started = Instant::now();
        let attempt = client
            .deliver(
                &due.url,
                &due.secrets,
                &due.webhook_id,
                due.body.as_bytes(),
                webhooks.timeout,
            )
            .await;
        metrics.webhook_delivery(
            match attempt {
                Attempt::Delivered { .. } => WebhookOutcome::Delivered,
                Attempt::Gone => WebhookOutcome::Gone,
                Attempt::Retry { .. } => WebhookOutcome::Failed,
            },
            started.elapsed(),
        );
        tracing::info!(
            job_id = %id,
            webhook_id = %due.webhook_id,
            outcome = ?attempt,
            "webhook attempt"
        );
        let _lock = store.lock(id).await;
        let Some(mut job) = store.get(id).await? else {
            return Ok(None);
        };
        if record_attempt(
            &mut job,
            &due.webhook_id,
            attempt,
            &webhooks.retries,
            unix_now(),
        ) {
            store.put(&job).await?;
        }
        last = Some(job);
        if !matches!(attempt, Attempt::Delivered { .. } | Attempt::Gone) {
            break;
        }
    }
    Ok(last)
}

fn unix_now() -> u64 {
    crate::jobs::record::now_ms() / 1000
}
