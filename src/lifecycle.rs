//! The pod's own state (readiness, draining) and the work a graceful shutdown waits for.
//!
//! Transfers run detached from their caller (single flight, so a caller hanging up neither
//! aborts a transfer other callers share nor strands a multipart upload). They run on the HTTP
//! workers' threads (awc is `!Send`), and actix stops its workers as soon as the last
//! *connection* is done: a transfer whose caller hung up would be dropped mid-way. So the
//! shutdown first stops accepting, then waits here until calls and transfers are done (up to
//! the drain, `CALL_DEADLINE_MS` + 5 s), and only then stops the workers.
//!
//! A bottom-layer module: it imports nothing from the crate.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::watch;

/// Counts work in progress; [`WorkTracker::idle`] resolves when there is none.
#[derive(Clone)]
pub struct WorkTracker(Arc<watch::Sender<usize>>);

impl Default for WorkTracker {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl WorkTracker {
    /// Counts one piece of work until the guard is dropped (however the work ends).
    pub fn track(&self) -> WorkGuard {
        self.0.send_modify(|n| *n += 1);
        WorkGuard(Arc::clone(&self.0))
    }

    pub fn in_progress(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves once no work is in progress.
    pub async fn idle(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// One piece of tracked work; dropping it ends it.
pub struct WorkGuard(Arc<watch::Sender<usize>>);

impl Drop for WorkGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What this process knows about itself: whether it is draining, and its tracked work.
pub struct Lifecycle {
    draining: AtomicBool,
    /// The same, for background loops that wait on it (`select!`) rather than ask.
    drain_signal: watch::Sender<bool>,
    /// Calls in progress, transfers that may outlive their call, and job steps.
    pub work: WorkTracker,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            draining: AtomicBool::new(false),
            drain_signal: watch::Sender::new(false),
            work: WorkTracker::default(),
        }
    }
}

impl Lifecycle {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.drain_signal.send_replace(true);
    }

    /// Resolves once the process drains: a background loop stops taking new work then.
    pub async fn until_draining(&self) {
        let mut rx = self.drain_signal.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn idle_waits_for_every_guard() {
        let tracker = WorkTracker::default();
        tracker.idle().await;
        let a = tracker.track();
        let b = tracker.track();
        assert_eq!(tracker.in_progress(), 2);
        let waiter = actix_web::rt::spawn({
            let tracker = tracker.clone();
            async move { tracker.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one piece of work is still running");
        drop(b);
        waiter.await.expect("idle");
        assert_eq!(tracker.in_progress(), 0);
    }
}
