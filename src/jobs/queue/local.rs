//! The in-process queue: wake-ups in a min-heap, one process, lost at exit (start-up re-wakes
//! every unfinished job from its record, so nothing durable lives here).
//!
//! A `BinaryHeap` and `sleep_until` rather than tokio-util's `DelayQueue`: tokio-util is in the
//! tree without its `time` feature, and turning it on would rebuild every crate above it
//! (actix, h2, hyper) for some forty lines of heap.
//!
//! Beyond the contract of [`super::JobQueue`], the local queue keeps at most one pending wake-up
//! per job (the earliest: the step schedules its own next one from the record) and never hands
//! out a job that a worker still holds; a wake-up that comes due meanwhile waits for the release.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{MAX_BATCH, Receipt, Wake};

/// A failed step (its wake-up dropped without `done`) is looked at again after this, doubled
/// on each further failure up to [`MAX_RETRY_BACKOFF`].
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(5);
/// The longest back-off of a repeatedly failing step: S3 outages end, and the job's deadline
/// is checked by the step itself.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// In-memory wake-ups; clones share one queue.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Woken whenever a wake-up is added or released, so a sleeping `next` re-reads the heap.
    changed: Notify,
    retry_backoff: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// (due, sequence, job): the sequence makes equal due times come out in insertion order and
    /// tells a live entry from one superseded in `pending` (lazy deletion).
    heap: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// The live entry of each job: its sequence and how many failed steps led to it.
    pending: HashMap<String, Entry>,
    /// Jobs a worker holds now.
    held: HashSet<String>,
    /// Jobs that came due while held: handed out again at the release.
    deferred: HashMap<String, u32>,
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    due: Instant,
    seq: u64,
    failures: u32,
}

impl State {
    /// Adds a wake-up unless the job already has one at or before `due`.
    fn push(&mut self, job_id: &str, due: Instant, failures: u32) {
        if let Some(e) = self.pending.get(job_id)
            && e.due <= due
        {
            return;
        }
        self.seq += 1;
        let entry = Entry {
            due,
            seq: self.seq,
            failures,
        };
        self.pending.insert(job_id.to_owned(), entry);
        self.heap.push(Reverse((due, self.seq, job_id.to_owned())));
    }

    /// Takes up to [`MAX_BATCH`] due wake-ups; also returns when the next one is due.
    fn take_due(&mut self, now: Instant) -> (Vec<(String, u32)>, Option<Instant>) {
        let mut due = Vec::new();
        while let Some(Reverse((at, seq, _))) = self.heap.peek() {
            if due.len() == MAX_BATCH || *at > now {
                return (due, Some(*at));
            }
            let (at, seq) = (*at, *seq);
            let Some(Reverse((_, _, job_id))) = self.heap.pop() else {
                break;
            };
            match self.pending.get(&job_id) {
                Some(e) if e.seq == seq && e.due == at => {}
                _ => continue, // superseded by an earlier wake-up of the same job
            }
            let Some(entry) = self.pending.remove(&job_id) else {
                continue;
            };
            if self.held.contains(&job_id) {
                let failures = self.deferred.entry(job_id).or_insert(entry.failures);
                *failures = (*failures).max(entry.failures);
            } else {
                self.held.insert(job_id.clone());
                due.push((job_id, entry.failures));
            }
        }
        (due, None)
    }
}

impl Default for LocalQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalQueue {
    pub fn new() -> Self {
        Self::with_retry_backoff(DEFAULT_RETRY_BACKOFF)
    }

    /// A queue whose failed steps come back after `backoff` (doubling): tests use milliseconds.
    pub fn with_retry_backoff(backoff: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                retry_backoff: backoff,
            }),
        }
    }

    pub fn wake_after(&self, job_id: &str, delay: Duration) {
        self.inner.schedule(job_id, delay, 0);
    }

    /// How many wake-ups wait (due or not), held ones excluded.
    pub fn len(&self) -> usize {
        let s = self.inner.lock();
        s.pending.len() + s.deferred.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least one wake-up is due and returns the due ones (at most [`MAX_BATCH`]),
    /// earliest first.
    pub async fn next(&self) -> Vec<Wake> {
        loop {
            // Registered before the heap is read, so a wake-up added in between is not missed.
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (due, next_at) = self.inner.lock().take_due(Instant::now());
            if !due.is_empty() {
                return due
                    .into_iter()
                    .map(|(job_id, failures)| Wake {
                        receipt: Receipt::Local(Lease {
                            queue: Some(Arc::clone(&self.inner)),
                            job_id: job_id.clone(),
                            failures,
                        }),
                        job_id,
                    })
                    .collect();
            }
            match next_at {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the heap consistent (every mutation is one
        // push/pop/insert), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn schedule(&self, job_id: &str, delay: Duration, failures: u32) {
        let due = Instant::now() + delay;
        self.lock().push(job_id, due, failures);
        self.changed.notify_waiters();
    }

    /// The holder let go of `job_id`: after a finished step (`failed` false) or a failed one.
    fn release(&self, job_id: &str, failed_times: Option<u32>) {
        {
            let mut s = self.lock();
            s.held.remove(job_id);
            let now = Instant::now();
            if let Some(failures) = failed_times {
                let backoff = self
                    .retry_backoff
                    .saturating_mul(2u32.saturating_pow(failures.min(16)))
                    .min(MAX_RETRY_BACKOFF.max(self.retry_backoff));
                s.push(job_id, now + backoff, failures.saturating_add(1));
            }
            if let Some(failures) = s.deferred.remove(job_id) {
                s.push(job_id, now, failures);
            }
        }
        self.changed.notify_waiters();
    }
}

/// A held local wake-up. Dropped without [`Lease::release`] (the step failed or panicked), it
/// puts the job back after the retry back-off.
#[derive(Debug)]
pub(super) struct Lease {
    queue: Option<Arc<Inner>>,
    job_id: String,
    failures: u32,
}

impl Lease {
    pub(super) fn release(mut self) {
        if let Some(q) = self.queue.take() {
            q.release(&self.job_id, None);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            q.release(&self.job_id, Some(self.failures));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::queue::JobQueue;

    /// A bound for waits that must end; far above any delay used here, so a slow machine
    /// passes, and a hung queue fails instead of hanging the suite.
    const BOUND: Duration = Duration::from_secs(30);

    async fn next_ids(q: &JobQueue) -> Vec<String> {
        let wakes = tokio::time::timeout(BOUND, q.next())
            .await
            .expect("a wake-up came due")
            .expect("local queue never fails");
        let ids = wakes.iter().map(|w| w.job_id.clone()).collect();
        for w in wakes {
            w.done(q).await.expect("done");
        }
        ids
    }

    #[tokio::test]
    async fn wake_ups_come_out_in_due_order_not_insertion_order() {
        let q = JobQueue::local();
        q.wake_after("c", Duration::from_millis(300)).await.unwrap();
        q.wake_after("a", Duration::from_millis(100)).await.unwrap();
        q.wake_after("b", Duration::from_millis(200)).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            seen.extend(next_ids(&q).await);
        }
        assert_eq!(seen, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_wake_up_is_not_handed_out_before_its_delay() {
        let q = JobQueue::local();
        let start = Instant::now();
        q.wake_after("j", Duration::from_millis(400)).await.unwrap();
        assert_eq!(next_ids(&q).await, ["j"]);
        assert!(start.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn a_sleeping_next_sees_an_earlier_wake_up_added_later() {
        let q = JobQueue::local();
        q.wake_after("late", Duration::from_secs(3600))
            .await
            .unwrap();
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { next_ids(&q).await })
        };
        // Whether the waiter already sleeps or not, the new wake-up must reach it.
        tokio::task::yield_now().await;
        q.wake_after("soon", Duration::ZERO).await.unwrap();
        let got = tokio::time::timeout(BOUND, waiter).await.unwrap().unwrap();
        assert_eq!(got, ["soon"]);
    }

    #[tokio::test]
    async fn duplicate_wake_ups_of_one_job_come_out_once_at_the_earliest() {
        let local = LocalQueue::new();
        let q = JobQueue::Local(local.clone());
        q.wake_after("j", Duration::from_secs(3600)).await.unwrap();
        q.wake_after("j", Duration::from_millis(50)).await.unwrap();
        q.wake_after("j", Duration::from_millis(80)).await.unwrap();
        q.wake_after("j", Duration::from_secs(7200)).await.unwrap();
        assert_eq!(local.len(), 1);
        let start = Instant::now();
        assert_eq!(next_ids(&q).await, ["j"]);
        assert!(start.elapsed() < Duration::from_secs(3600));
        assert!(local.is_empty(), "the superseded wake-ups are gone");
    }

    #[tokio::test]
    async fn a_held_job_is_not_handed_out_again_until_released() {
        let q = JobQueue::local();
        q.wake_after("j", Duration::ZERO).await.unwrap();
        let held = q.next().await.unwrap();
        assert_eq!(held.len(), 1);
        // Due while held (e.g. a cancel woke it): waits for the holder.
        q.wake_after("j", Duration::ZERO).await.unwrap();
        q.wake_after("other", Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(next_ids(&q).await, ["other"]);
        for w in held {
            w.done(&q).await.unwrap();
        }
        assert_eq!(next_ids(&q).await, ["j"]);
    }

    #[tokio::test]
    async fn a_failed_step_is_handed_out_again_after_the_back_off() {
        let q = JobQueue::Local(LocalQueue::with_retry_backoff(Duration::from_millis(200)));
        q.wake_after("j", Duration::ZERO).await.unwrap();
        let wakes = q.next().await.unwrap();
        assert_eq!(wakes[0].job_id, "j");
        let failed_at = Instant::now();
        drop(wakes); // the step failed: no `done`
        assert_eq!(next_ids(&q).await, ["j"]);
        assert!(failed_at.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn repeated_failures_back_off_longer() {
        let q = JobQueue::Local(LocalQueue::with_retry_backoff(Duration::from_millis(150)));
        q.wake_after("j", Duration::ZERO).await.unwrap();
        drop(q.next().await.unwrap());
        let second = q.next().await.unwrap();
        let failed_again = Instant::now();
        drop(second);
        assert_eq!(next_ids(&q).await, ["j"]);
        assert!(
            failed_again.elapsed() >= Duration::from_millis(300),
            "doubled"
        );
    }

    #[tokio::test]
    async fn a_done_step_is_not_handed_out_again() {
        let local = LocalQueue::new();
        let q = JobQueue::Local(local.clone());
        q.wake_after("j", Duration::ZERO).await.unwrap();
        assert_eq!(next_ids(&q).await, ["j"]);
        assert!(local.is_empty());
    }

    #[tokio::test]
    async fn one_next_returns_at_most_a_batch() {
        let q = JobQueue::local();
        for i in 0..(MAX_BATCH + 3) {
            q.wake_after(&format!("j{i}"), Duration::ZERO)
                .await
                .unwrap();
        }
        assert_eq!(next_ids(&q).await.len(), MAX_BATCH);
        assert_eq!(next_ids(&q).await.len(), 3);
    }

    #[tokio::test]
    async fn the_queue_is_shared_across_threads() {
        let q = JobQueue::local();
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                rt.block_on(q.wake_after("from-another-thread", Duration::ZERO))
            })
        };
        assert_eq!(next_ids(&q).await, ["from-another-thread"]);
        producer.join().unwrap().unwrap();
    }
}
