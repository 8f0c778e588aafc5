//! Single flight: one piece of work per key per process, however many callers ask at once.
//!
//! Hand-written because the crates that do this (`async_singleflight`, `singleflight-async`)
//! either require `Send` futures (ours hold `!Send` awc clients) or cancel the work when the
//! first caller hangs up; here the work runs detached, so a caller going away neither aborts
//! a transfer other callers wait for nor strands a multipart upload. The shape follows
//! pict-rs's `concurrent_processor.rs`: a map of watch channels and a guard that removes the
//! entry however the leader ends.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

/// Whether this caller did the work or shared another caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

pub struct SingleFlight<K, V> {
    map: Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

enum Joined<K: Hash + Eq + Clone, V> {
    Leader(watch::Sender<Option<V>>, Guard<K, V>),
    Follower(watch::Receiver<Option<V>>),
}

/// Removes the registry entry when the leader finishes or is dropped (panic, cancellation).
struct Guard<K: Hash + Eq + Clone, V> {
    registry: Arc<SingleFlight<K, V>>,
    key: K,
}

impl<K: Hash + Eq + Clone, V> Drop for Guard<K, V> {
    fn drop(&mut self) {
        let mut map = match self.registry.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(&self.key);
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + 'static,
    V: Clone + 'static,
{
    /// Runs `work` for `key` unless it is already running, in which case this waits for that
    /// run's result. The work runs as a detached local task. Returns `None` only if the
    /// work's task itself failed (it panicked); a follower whose leader vanished that way
    /// takes over and runs `work` itself.
    pub async fn run<F, Fut>(self: &Arc<Self>, key: K, work: F) -> (Option<V>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + 'static,
    {
        loop {
            match self.join(&key) {
                Joined::Follower(mut rx) => {
                    if let Ok(value) = rx.wait_for(Option::is_some).await {
                        return (value.clone(), Role::Follower);
                    }
                    // The leader ended without an answer: try to lead.
                }
                Joined::Leader(tx, guard) => {
                    let fut = work();
                    let handle = actix_web::rt::spawn(async move {
                        let value = fut.await;
                        let _ = tx.send(Some(value.clone()));
                        drop(guard);
                        value
                    });
                    return (handle.await.ok(), Role::Leader);
                }
            }
        }
    }

    fn join(self: &Arc<Self>, key: &K) -> Joined<K, V> {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(rx) = map.get(key) {
            return Joined::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Joined::Leader(
            tx,
            Guard {
                registry: Arc::clone(self),
                key: key.clone(),
            },
        )
    }

    /// Keys with work in progress (for tests and debugging).
    pub fn in_progress(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, rc::Rc};

    use tokio::sync::oneshot;

    use super::*;

    #[actix_web::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<SingleFlight<&'static str, u32>> = Arc::default();
        let runs = Rc::new(Cell::new(0));
        let (release, gate) = oneshot::channel::<()>();
        let leader = {
            let runs = Rc::clone(&runs);
            flights.run("k", move || async move {
                runs.set(runs.get() + 1);
                let _ = gate.await;
                7
            })
        };
        let follower = {
            let runs = Rc::clone(&runs);
            flights.run("k", move || async move {
                runs.set(runs.get() + 1);
                8
            })
        };
        let other_key = flights.run("other", || async { 9 });
        let started = Rc::clone(&runs);
        let releaser = async move {
            // Both callers have joined once the leader's task runs: yield until then.
            while started.get() == 0 {
                tokio::task::yield_now().await;
            }
            let _ = release.send(());
        };
        let ((a, ra), (b, rb), (c, _), ()) = tokio::join!(leader, follower, other_key, releaser);
        assert_eq!((a, ra), (Some(7), Role::Leader));
        assert_eq!((b, rb), (Some(7), Role::Follower));
        assert_eq!(c, Some(9));
        assert_eq!(runs.get(), 1, "the work ran once");
        assert_eq!(flights.in_progress(), 0, "entries are removed when done");
    }

    #[actix_web::test]
    async fn a_new_run_starts_once_the_previous_one_finished() {
        let flights: Arc<SingleFlight<u8, u8>> = Arc::default();
        assert_eq!(
            flights.run(1, || async { 1 }).await,
            (Some(1), Role::Leader)
        );
        assert_eq!(
            flights.run(1, || async { 2 }).await,
            (Some(2), Role::Leader)
        );
    }

    #[actix_web::test]
    async fn a_panicking_leader_leaves_no_entry_behind() {
        let flights: Arc<SingleFlight<u8, u8>> = Arc::default();
        let (value, role) = flights.run(1, || async { explode() }).await;
        assert_eq!((value, role), (None, Role::Leader));
        assert_eq!(flights.in_progress(), 0);
        assert_eq!(flights.run(1, || async { 3 }).await.0, Some(3));
    }

    fn explode() -> u8 {
        panic!("work failed")
    }
}
