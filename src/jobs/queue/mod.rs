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

use std::time::Duration;

pub use local::LocalQueue;

/// The most wake-ups one [`JobQueue::next`] returns: SQS's ReceiveMessage maximum, so the
/// engine sees batches of the same size whichever queue runs.
pub const MAX_BATCH: usize = 10;

/// Where job wake-ups are kept.
#[derive(Debug, Clone)]
pub enum JobQueue {
    /// In memory, one process (the embedded default and the sandbox).
    Local(LocalQueue),
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

    /// Asks for `job_id` to be looked at after `delay` (zero: as soon as a worker is free).
    pub async fn wake_after(&self, job_id: &str, delay: Duration) -> Result<(), QueueError> {
        match self {
            Self::Local(q) => {
                q.wake_after(job_id, delay);
                Ok(())
            }
        }
    }

    /// Waits for due wake-ups and returns between 1 and [`MAX_BATCH`] of them. Each is held by the
    /// caller until [`Wake::done`] (or, when dropped without it, handed out again later).
    pub async fn next(&self) -> Result<Vec<Wake>, QueueError> {
        match self {
            Self::Local(q) => Ok(q.next().await),
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
}

impl Wake {
    /// Keeps the wake-up held while a step runs longer than expected (SQS: the message's
    /// visibility timeout is pushed `by` into the future; local: nothing to do, a held wake-up is
    /// never handed out twice).
    pub async fn extend(&self, queue: &JobQueue, by: Duration) -> Result<(), QueueError> {
        let _ = (queue, by);
        match &self.receipt {
            Receipt::Local(_) => Ok(()),
        }
    }

    /// The step finished and has scheduled its own next wake-up: forget this one.
    pub async fn done(self, queue: &JobQueue) -> Result<(), QueueError> {
        let _ = queue;
        match self.receipt {
            Receipt::Local(lease) => {
                lease.release();
                Ok(())
            }
        }
    }
}
