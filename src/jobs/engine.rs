//! The job engine: takes due wake-ups from the [`JobQueue`], runs each job's step, schedules
//! its next wake-up, and marks the wake-up done.
//!
//! It runs on an actix arbiter of its own with a [`Pipeline`] of its own (awc is `!Send`), so
//! steps never take an HTTP worker's thread. Steps share the calls' bounds: a step holds one
//! of the `MAX_CONCURRENT_CALLS` slots while it runs (waiting for one rather than refusing), and
//! its transfers take the process's download permits as a call's do. Steps are tracked work:
//! SIGTERM's drain waits for the running ones, and the engine takes no new wake-up once the
//! process drains (another replica, or this one's restart, carries the jobs on).
//!
//! At start-up every unfinished job under `JOBS_PREFIX` is woken ([`Engine::resume`]): with
//! the in-process queue nothing survives a restart but the records.

use std::{rc::Rc, sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use super::{
    ladder::Ladder,
    queue::{JobQueue, Wake},
    record::JobId,
    step::{Next, StepParts, next_of, step},
    store::JobStore,
    webhook::{WebhookClient, Webhooks},
};
use crate::{audit::AuditLog, lifecycle::Lifecycle, metrics::Metrics, pipeline::Pipeline};

/// After a failed `next` (a queue outage), wait this long before asking again.
const QUEUE_RETRY: Duration = Duration::from_secs(1);

/// What the engine shares with the routes (cheap clones).
#[derive(Clone)]
pub struct Engine {
    pub queue: JobQueue,
    pub store: Arc<JobStore>,
    pub audit: AuditLog,
    /// `JOB_POLL_SCHEDULE`.
    pub polls: Arc<Ladder>,
    /// The process's call slots (`MAX_CONCURRENT_CALLS`), shared with synchronous calls.
    pub slots: Arc<Semaphore>,
    pub lifecycle: Arc<Lifecycle>,
    /// Jobs created, finished, polled (`metrics::Metrics::job_*`).
    pub metrics: Metrics,
    /// Webhook destinations and retries (`WEBHOOK_*`).
    pub webhooks: Arc<Webhooks>,
}

impl Engine {
    /// Wakes every unfinished job found under `JOBS_PREFIX` now. A record that cannot be read
    /// is logged and left; the listing failing is logged too (the jobs wait for a restart or
    /// for their next API touch).
    pub async fn resume(&self) {
        let ids = match self.store.ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "could not list job records; unfinished jobs are not resumed");
                return;
            }
        };
        let mut resumed = 0usize;
        for id in ids {
            match self.store.get(&id).await {
                Ok(Some(job)) if !job.finished() => {
                    let delay = match next_of(&job, super::record::now_ms()) {
                        Next::After(d) => d,
                        Next::Finished => continue,
                    };
                    if let Err(e) = self.queue.wake_after(id.as_str(), delay).await {
                        tracing::error!(error = %e, job_id = %id, "could not schedule a resumed job");
                    } else {
                        resumed += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, job_id = %id, "could not read a job record"),
            }
        }
        tracing::info!(resumed, "unfinished statement jobs resumed");
    }

    /// Runs until the process drains (on the current arbiter's thread: `pipeline` is its own).
    pub async fn run(self, pipeline: Arc<Pipeline>) {
        self.resume().await;
        // This thread's webhook client (awc is `!Send`), shared by its steps.
        let webhook_client = Rc::new(self.webhooks.client());
        let this = Rc::new(self);
        loop {
            let wakes = tokio::select! {
                biased;
                () = this.lifecycle.until_draining() => return,
                wakes = this.queue.next() => wakes,
            };
            let wakes = match wakes {
                Ok(wakes) => wakes,
                Err(e) => {
                    tracing::warn!(error = %e, "the job queue failed; asking again shortly");
                    tokio::select! {
                        () = this.lifecycle.until_draining() => return,
                        () = tokio::time::sleep(QUEUE_RETRY) => continue,
                    }
                }
            };
            for wake in wakes {
                let permit = tokio::select! {
                    biased;
                    // Not done: the wake-up comes back (another replica, or after a restart).
                    () = this.lifecycle.until_draining() => return,
                    permit = Arc::clone(&this.slots).acquire_owned() => permit,
                };
                let Ok(permit) = permit else { return };
                let work = this.lifecycle.work.track();
                let (engine, pipeline) = (Rc::clone(&this), Arc::clone(&pipeline));
                let client = Rc::clone(&webhook_client);
                actix_web::rt::spawn(async move {
                    engine.run_step(&pipeline, &client, wake).await;
                    drop(permit);
                    drop(work);
                });
            }
        }
    }

    async fn run_step(&self, pipeline: &Arc<Pipeline>, webhook_client: &WebhookClient, wake: Wake) {
        let Ok(id) = JobId::parse(wake.job_id.as_str()) else {
            tracing::warn!("a wake-up named an invalid job id; dropped");
            let _ = wake.done(&self.queue).await;
            return;
        };
        let parts = StepParts {
            pipeline,
            store: &self.store,
            audit: &self.audit,
            polls: &self.polls,
            webhooks: &self.webhooks,
            webhook_client,
        };
        // On SQS the wake-up's visibility is extended while the step runs, so no other replica
        // takes the job meanwhile; a killed process stops extending and the job reappears.
        match self.queue.hold(&wake, step(&parts, &id)).await {
            Ok(next) => {
                if let Next::After(delay) = next
                    && let Err(e) = self.queue.wake_after(id.as_str(), delay).await
                {
                    // Not done: the wake-up itself comes back and the step runs again.
                    tracing::warn!(error = %e, job_id = %id, "could not schedule the job's next step");
                    return;
                }
                if let Err(e) = wake.done(&self.queue).await {
                    tracing::warn!(error = %e, job_id = %id, "could not mark a wake-up done");
                }
            }
            // Not done: the queue hands the wake-up out again after its back-off.
            Err(e) => tracing::warn!(error = %e, job_id = %id, "job step failed; it is retried"),
        }
    }
}
