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

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD};

    use super::*;
    use crate::jobs::{
        record::{JobState, OutboxEvent, WebhookDto},
        webhook::Endpoints,
    };

    const NOW: u64 = 1_800_000_000;

    fn webhooks(retries: &str) -> Webhooks {
        let secret = format!("whsec_{}", STANDARD.encode([5; 32]));
        let endpoints =
            Endpoints::parse(&format!("loans https://hooks.example.com/ {secret}"), false).unwrap();
        Webhooks {
            endpoints,
            retries: retries.parse().unwrap(),
            allow_http: false,
            timeout: Duration::from_secs(1),
        }
    }

    fn event(id: &str, at: u64) -> OutboxEvent {
        OutboxEvent {
            webhook_id: id.to_owned(),
            event_type: "statement_job.updated".to_owned(),
            body: "{}".to_owned(),
            attempts: 0,
            next_attempt_at: at,
        }
    }

    fn job(owner: &str, url: &str, events: &[&str]) -> JobRecord {
        JobRecord {
            job_id: JobId::parse("job_1").unwrap(),
            client_id: "aa_demo_ready".to_owned(),
            request_id: None,
            state: JobState::Completed,
            created_at: 0,
            updated_at: 0,
            deadline_at: 0,
            next_poll_at: None,
            polls: 1,
            outcomes: Default::default(),
            error: None,
            webhook: Some(WebhookDto {
                url: url.to_owned(),
                delivered: 0,
                failed: 0,
                last_status: None,
            }),
            owner: owner.to_owned(),
            actor: crate::audit::Actor {
                caller: owner.to_owned(),
                sub: None,
                jti: None,
                source_address: String::new(),
            },
            idempotency_key: None,
            body_sha256: String::new(),
            ladder_step: 1,
            outbox: events.iter().map(|id| event(id, NOW)).collect(),
        }
    }

    fn hook(job: &JobRecord) -> &WebhookDto {
        job.webhook.as_ref().unwrap()
    }

    #[test]
    fn only_the_head_is_due_and_only_when_its_time_has_come() {
        let w = webhooks("1s");
        let mut j = job(
            "service:loans",
            "https://hooks.example.com/a",
            &["msg_1", "msg_2"],
        );
        let (changed, due) = take_due(&mut j, &w, NOW);
        assert!(!changed);
        assert_eq!(due.unwrap().webhook_id, "msg_1");
        j.outbox[0].next_attempt_at = NOW + 5;
        assert!(take_due(&mut j, &w, NOW).1.is_none());
    }

    #[test]
    fn a_retry_follows_the_ladder_and_a_longer_retry_after_wins_then_the_event_fails() {
        let w = webhooks("10s,20s");
        let mut j = job(
            "service:loans",
            "https://hooks.example.com/a",
            &["msg_1", "msg_2"],
        );
        let retry = |after: Option<u64>| Attempt::Retry {
            status: Some(503),
            retry_after: after.map(Duration::from_secs),
        };
        assert!(record_attempt(
            &mut j,
            "msg_1",
            retry(None),
            &w.retries,
            NOW
        ));
        let wait = j.outbox[0].next_attempt_at - NOW;
        assert!((8..=12).contains(&wait), "10 s ±20 %: {wait}");
        assert!(record_attempt(
            &mut j,
            "msg_1",
            retry(Some(3600)),
            &w.retries,
            NOW
        ));
        assert_eq!(j.outbox[0].next_attempt_at, NOW + 3600);
        assert_eq!(j.outbox[0].attempts, 2);
        // The ladder has two steps: the third failure gives the event up.
        assert!(record_attempt(
            &mut j,
            "msg_1",
            retry(None),
            &w.retries,
            NOW
        ));
        assert_eq!(j.outbox.len(), 1);
        assert_eq!(j.outbox[0].webhook_id, "msg_2");
        assert_eq!((hook(&j).failed, hook(&j).last_status), (1, Some(503)));
        assert_eq!(j.state, JobState::Completed);
    }

    #[test]
    fn a_result_for_an_event_that_is_no_longer_the_head_changes_nothing() {
        let w = webhooks("1s");
        let mut j = job("service:loans", "https://hooks.example.com/a", &["msg_2"]);
        let delivered = Attempt::Delivered { status: 200 };
        assert!(!record_attempt(&mut j, "msg_1", delivered, &w.retries, NOW));
        assert_eq!(hook(&j).delivered, 0);
        assert!(record_attempt(&mut j, "msg_2", delivered, &w.retries, NOW));
        assert_eq!((hook(&j).delivered, j.outbox.len()), (1, 0));
    }

    #[test]
    fn after_a_410_nothing_more_is_sent() {
        let w = webhooks("1s");
        let mut j = job(
            "service:loans",
            "https://hooks.example.com/a",
            &["msg_1", "msg_2"],
        );
        assert!(record_attempt(
            &mut j,
            "msg_1",
            Attempt::Gone,
            &w.retries,
            NOW
        ));
        assert_eq!((hook(&j).failed, j.outbox.len()), (2, 0));
        // A later event (a cancel's, say) is given up on without an attempt.
        j.outbox.push(event("msg_3", NOW));
        let (changed, due) = take_due(&mut j, &w, NOW);
        assert!(changed && due.is_none());
        assert_eq!((hook(&j).failed, hook(&j).last_status), (3, Some(410)));
    }

    #[test]
    fn an_event_without_an_allowed_destination_is_given_up_on() {
        let w = webhooks("1s");
        for (owner, url) in [
            ("service:other", "https://hooks.example.com/a"),
            ("service:loans", "https://elsewhere.example.com/a"),
            ("user:aa_demo_ready", "https://hooks.example.com/a"),
        ] {
            let mut j = job(owner, url, &["msg_1"]);
            let (changed, due) = take_due(&mut j, &w, NOW);
            assert!(changed && due.is_none(), "{owner} {url}");
            assert_eq!(hook(&j).failed, 1);
        }
        assert_eq!(endpoint_caller("anonymous"), Some("anonymous"));
    }
}
