//! Durable wake-ups, "look at job X after a delay", shared by replicas.
//!
//! The job record in S3 is the truth; a wake-up only says which record to look at. A duplicate
//! or early wake-up is therefore harmless: the step finds nothing due and schedules its own next
//! wake-up from the record. That is what lets the queue be at-least-once (SQS) and lets the
//! in-process queue be forgotten at a restart (start-up re-wakes every unfinished job).
//!
//! A step that fails (S3 down, a panic) does not call [`Wake::done`]: SQS re-delivers the message
//! after its visibility timeout, and the local queue re-schedules it after a short back-off.
//!
//! [`JobQueue`] is an enum rather than a trait object: two implementations, no `async-trait`.

pub mod local;
pub mod sqs;

use std::{future::Future, time::Duration};

pub use local::LocalQueue;
pub use sqs::SqsQueue;

use crate::config::{JobQueueSettings, S3Connection};

/// The most wake-ups one [`JobQueue::next`] returns: SQS's ReceiveMessage maximum, so the
/// engine sees batches of the same size whichever queue runs.
pub const MAX_BATCH: usize = 10;

/// Where job wake-ups are kept.
#[derive(Debug, Clone)]
pub enum JobQueue {
    /// In memory, one process (the embedded default and the sandbox).
    Local(LocalQueue),
    /// Amazon SQS (`JOBS_QUEUE_URL`): several replicas share it.
    Sqs(SqsQueue),
}

/// The queue could not take or give a wake-up.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue service refused or could not be reached; `detail` never holds credentials.
    #[error("job queue {operation} failed: {detail}")]
    Unavailable {
        operation: &'static str,
        detail: String,
    },
}

impl JobQueue {
    /// An in-process queue with the default retry back-off.
    pub fn local() -> Self {
        Self::Local(LocalQueue::new())
    }

    /// The queue the settings name: SQS when `JOBS_QUEUE_URL` is set (checked by reading its
    /// attributes, so a wrong URL or a missing permission stops the start), else in process.
    pub async fn from_settings(
        settings: &JobQueueSettings,
        conn: &S3Connection,
    ) -> Result<Self, QueueError> {
        Ok(match &settings.sqs {
            Some(sqs) => Self::Sqs(SqsQueue::connect(sqs, conn).await?),
            None => Self::local(),
        })
    }

    /// Runs `work` (one step of the job `wake` names) while keeping the wake-up held: on SQS
    /// its visibility timeout is pushed out every half timeout, so a slow step is not handed to
    /// a second worker meanwhile; a failed extension is logged, and the step carries on (at
    /// worst a duplicate wake-up, which steps tolerate).
    pub async fn hold<F: Future>(&self, wake: &Wake, work: F) -> F::Output {
        let Self::Sqs(q) = self else {
            return work.await;
        };
        let visibility = q.visibility_timeout();
        let every = (visibility / 2).max(Duration::from_secs(1));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticks.tick() => {
                    if let Err(e) = wake.extend(self, visibility).await {
                        tracing::warn!(error = %e, "could not extend a held job wake-up");
                    }
                }
            }
        }
    }

    /// Asks for `job_id` to be looked at after `delay` (zero: as soon as a worker is free).
    pub async fn wake_after(&self, job_id: &str, delay: Duration) -> Result<(), QueueError> {
        match self {
            Self::Local(q) => {
                q.wake_after(job_id, delay);
                Ok(())
            }
            Self::Sqs(q) => q.wake_after(job_id, delay).await,
        }
    }

    /// Waits for due wake-ups and returns between 1 and [`MAX_BATCH`] of them. Each is held by the
    /// caller until [`Wake::done`] (or, when dropped without it, handed out again later).
    pub async fn next(&self) -> Result<Vec<Wake>, QueueError> {
        match self {
            Self::Local(q) => Ok(q.next().await),
            Self::Sqs(q) => q.next().await,
        }
    }
}

/// One due wake-up, held by the worker that received it.
#[derive(Debug)]
pub struct Wake {
    /// The job whose record to look at.
    pub job_id: String,
    receipt: Receipt,
}

#[derive(Debug)]
enum Receipt {
    Local(local::Lease),
    /// The message's receipt handle.
    Sqs(String),
}

impl Wake {
    /// Keeps the wake-up held while a step runs longer than expected (SQS: the message's
    /// visibility timeout is pushed `by` into the future; local: nothing to do, a held wake-up is
    /// never handed out twice).
    pub async fn extend(&self, queue: &JobQueue, by: Duration) -> Result<(), QueueError> {
        match (&self.receipt, queue) {
            (Receipt::Sqs(receipt), JobQueue::Sqs(q)) => q.extend(receipt, by).await,
            _ => Ok(()),
        }
    }

    /// The step finished and has scheduled its own next wake-up: forget this one.
    pub async fn done(self, queue: &JobQueue) -> Result<(), QueueError> {
        match (self.receipt, queue) {
            (Receipt::Local(lease), _) => {
                lease.release();
                Ok(())
            }
            (Receipt::Sqs(receipt), JobQueue::Sqs(q)) => q.delete(&receipt).await,
            (Receipt::Sqs(_), JobQueue::Local(_)) => Ok(()),
        }
    }
}
