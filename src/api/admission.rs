//! Who may start a call now: a bounded number of calls per process (`MAX_CONCURRENT_CALLS`)
//! and per caller (`MAX_CALLS_PER_CALLER`), none while draining. Past a bound the answer is
//! immediate (503 or 429 with `Retry-After`), never a queue: a call holds a download slot,
//! memory and a Finpass quota for up to `CALL_DEADLINE_MS`, so queueing would only move the
//! wait somewhere less visible.
//!
//! The per-caller cap keeps one caller asking `wait_seconds=60` in a loop from taking every
//! slot. Callers are keyed like the rate limit (service name, or the user's client id); with
//! authentication disabled there is no caller identity and only the process bound applies.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;
use crate::{
    auth::Caller,
    lifecycle::{Lifecycle, WorkGuard},
    metrics::{GaugeGuard, Metrics},
};

/// How soon a turned-away caller may try again: calls are usually seconds long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct Admission {
    slots: Arc<Semaphore>,
    per_caller_max: usize,
    per_caller: Arc<Mutex<HashMap<String, usize>>>,
    lifecycle: Arc<Lifecycle>,
    metrics: Metrics,
}

/// Held for the whole call; dropping it frees the slots.
pub struct CallPermit {
    _slot: OwnedSemaphorePermit,
    _caller: Option<CallerSlot>,
    _work: WorkGuard,
    _gauge: GaugeGuard,
}

struct CallerSlot {
    key: String,
    per_caller: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut map = self
            .per_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // The map only holds callers with calls in progress: bounded by the slots.
                map.remove(&self.key);
            }
        }
    }
}

impl Admission {
    /// The process's call slots (`MAX_CONCURRENT_CALLS`): statement jobs' steps take theirs
    /// from the same semaphore, waiting instead of being refused.
    pub fn slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.slots)
    }

    pub fn new(
        max_calls: usize,
        per_caller_max: usize,
        lifecycle: Arc<Lifecycle>,
        metrics: Metrics,
    ) -> Self {
        metrics.set_calls_capacity(max_calls);
        Self {
            slots: Arc::new(Semaphore::new(max_calls)),
            per_caller_max,
            per_caller: Arc::default(),
            lifecycle,
            metrics,
        }
    }

    /// Admits a call of `caller`, or says why not.
    pub fn admit(&self, caller: &Caller) -> Result<CallPermit, ApiError> {
        if self.lifecycle.draining() {
            return Err(ApiError::Overloaded {
                retry_after: RETRY_AFTER,
            });
        }
        let caller_slot = match caller.concurrency_key() {
            None => None,
            Some(key) => {
                let mut map = self
                    .per_caller
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let n = map.entry(key.clone()).or_insert(0);
                if *n >= self.per_caller_max {
                    return Err(ApiError::TooManyCalls {
                        retry_after: RETRY_AFTER,
                    });
                }
                *n += 1;
                Some(CallerSlot {
                    key,
                    per_caller: Arc::clone(&self.per_caller),
                })
            }
        };
        // On refusal `caller_slot` is dropped here, which gives the caller's slot back.
        let slot =
            Arc::clone(&self.slots)
                .try_acquire_owned()
                .map_err(|_| ApiError::Overloaded {
                    retry_after: RETRY_AFTER,
                })?;
        Ok(CallPermit {
            _slot: slot,
            _caller: caller_slot,
            _work: self.lifecycle.work.track(),
            _gauge: self.metrics.call_in_flight(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_caller: usize) -> (Admission, Arc<Lifecycle>) {
        let lifecycle = Arc::new(Lifecycle::default());
        let a = Admission::new(max, per_caller, Arc::clone(&lifecycle), Metrics::new());
        (a, lifecycle)
    }

    fn anonymous() -> Caller {
        Caller::Anonymous {
            scopes: crate::domain::Scopes::SERVICE_DEFAULT,
        }
    }

    fn svc(name: &str) -> Caller {
        Caller::Service {
            name: name.into(),
            scopes: crate::domain::Scopes::SERVICE_DEFAULT,
        }
    }

    #[test]
    fn per_caller_and_process_bounds() {
        let (a, lifecycle) = admission(3, 2);
        let first = a.admit(&svc("loans")).expect("1st");
        let _second = a.admit(&svc("loans")).expect("2nd");
        assert!(matches!(
            a.admit(&svc("loans")),
            Err(ApiError::TooManyCalls { .. })
        ));
        let _kyc = a.admit(&svc("kyc")).expect("other caller");
        assert!(
            matches!(a.admit(&svc("ops")), Err(ApiError::Overloaded { .. })),
            "process bound"
        );
        assert_eq!(lifecycle.work.in_progress(), 3);
        drop(first);
        let _again = a.admit(&svc("loans")).expect("a slot came back");
        assert_eq!(
            a.per_caller.lock().expect("map").get("svc:loans"),
            Some(&2),
            "a refused call does not keep a caller slot"
        );
    }

    #[test]
    fn anonymous_callers_are_bound_by_the_process_only_and_draining_refuses() {
        let (a, lifecycle) = admission(4, 1);
        let _a = a.admit(&anonymous()).expect("1st");
        let _b = a.admit(&anonymous()).expect("2nd");
        lifecycle.start_draining();
        assert!(matches!(
            a.admit(&anonymous()),
            Err(ApiError::Overloaded { .. })
        ));
    }
}
