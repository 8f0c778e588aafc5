//! Single flight: one piece of work per key per process, however many callers ask at once.
//!
//! Every caller waits until a time it gives (its call's deadline plus the cleanup grace), and
//! a follower never longer than the leader's: the work itself is bounded by the leader's
//! deadline, so waiting past it would only wait for a result already decided.
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

use tokio::{
    sync::watch,
    time::{Instant, timeout_at},
};

/// Whether this caller did the work or shared another caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

/// Why a caller has no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightError {
    /// The time this caller (or its leader) would wait passed; the work goes on detached.
    TimedOut,
    /// The work's task failed (it panicked).
    Failed,
}

/// A run in progress: its result when ready, and how long its leader waits for it.
struct Entry<V> {
    result: watch::Receiver<Option<V>>,
    leader_until: Instant,
}

pub struct SingleFlight<K, V> {
    map: Mutex<HashMap<K, Entry<V>>>,
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
    Follower(watch::Receiver<Option<V>>, Instant),
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
    /// run's result. The work runs as a detached local task: this caller stops waiting at
    /// `until` (a follower at its leader's `until` if that is earlier), and the work goes on.
    /// A follower whose leader's task failed (panicked) takes over and runs `work` itself.
    pub async fn run<F, Fut>(
        self: &Arc<Self>,
        key: K,
        until: Instant,
        work: F,
    ) -> (Result<V, FlightError>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + 'static,
    {
        loop {
            match self.join(&key, until) {
                Joined::Follower(mut rx, leader_until) => {
                    match timeout_at(until.min(leader_until), rx.wait_for(Option::is_some)).await {
                        Err(_) => return (Err(FlightError::TimedOut), Role::Follower),
                        Ok(Ok(value)) => match value.clone() {
                            Some(v) => return (Ok(v), Role::Follower),
                            None => return (Err(FlightError::Failed), Role::Follower),
                        },
                        // The leader ended without an answer: try to lead.
                        Ok(Err(_)) => {}
                    }
                }
                Joined::Leader(tx, guard) => {
                    let fut = work();
                    let handle = actix_web::rt::spawn(async move {
                        let value = fut.await;
                        let _ = tx.send(Some(value.clone()));
                        drop(guard);
                        value
                    });
                    let result = match timeout_at(until, handle).await {
                        Err(_) => Err(FlightError::TimedOut),
                        Ok(Err(_)) => Err(FlightError::Failed),
                        Ok(Ok(value)) => Ok(value),
                    };
                    return (result, Role::Leader);
                }
            }
        }
    }

    fn join(self: &Arc<Self>, key: &K, until: Instant) -> Joined<K, V> {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(entry) = map.get(key) {
            return Joined::Follower(entry.result.clone(), entry.leader_until);
        }
        let (tx, rx) = watch::channel(None);
        map.insert(
            key.clone(),
            Entry {
                result: rx,
                leader_until: until,
            },
        );
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

    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[actix_web::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<SingleFlight<&'static str, u32>> = Arc::default();
        let runs = Rc::new(Cell::new(0));
        let (release, gate) = oneshot::channel::<()>();
        let leader = {
            let runs = Rc::clone(&runs);
            flights.run("k", later(), move || async move {
                runs.set(runs.get() + 1);
                let _ = gate.await;
                7
            })
        };
        let follower = {
            let runs = Rc::clone(&runs);
            flights.run("k", later(), move || async move {
                runs.set(runs.get() + 1);
                8
            })
        };
        let other_key = flights.run("other", later(), || async { 9 });
        let started = Rc::clone(&runs);
        let releaser = async move {
            // Both callers have joined once the leader's task runs: yield until then.
            while started.get() == 0 {
                tokio::task::yield_now().await;
            }
            let _ = release.send(());
        };
        let ((a, ra), (b, rb), (c, _), ()) = tokio::join!(leader, follower, other_key, releaser);
        assert_eq!((a, ra), (Ok(7), Role::Leader));
        assert_eq!((b, rb), (Ok(7), Role::Follower));
        assert_eq!(c, Ok(9));
        assert_eq!(runs.get(), 1, "the work ran once");
        assert_eq!(flights.in_progress(), 0, "entries are removed when done");
    }

    #[actix_web::test]
    async fn a_new_run_starts_once_the_previous_one_finished() {
        let flights: Arc<SingleFlight<u8, u8>> = Arc::default();
        assert_eq!(
            flights.run(1, later(), || async { 1 }).await,
            (Ok(1), Role::Leader)
        );
        assert_eq!(
            flights.run(1, later(), || async { 2 }).await,
            (Ok(2), Role::Leader)
        );
    }

    #[actix_web::test]
    async fn a_panicking_leader_leaves_no_entry_behind() {
        let flights: Arc<SingleFlight<u8, u8>> = Arc::default();
        let (value, role) = flights.run(1, later(), || async { explode() }).await;
        assert_eq!((value, role), (Err(FlightError::Failed), Role::Leader));
        assert_eq!(flights.in_progress(), 0);
        assert_eq!(flights.run(1, later(), || async { 3 }).await.0, Ok(3));
    }

    /// Callers stop waiting at their time, a follower at its leader's if that is earlier, and
    /// the work goes on detached: a later caller joins it.
    #[actix_web::test]
    async fn callers_wait_until_their_time_and_followers_no_longer_than_the_leader() {
        let flights: Arc<SingleFlight<u8, u8>> = Arc::default();
        let (release, gate) = oneshot::channel::<()>();
        let soon = Instant::now() + Duration::from_millis(50);
        let leader = flights.run(1, soon, move || async move {
            let _ = gate.await;
            5
        });
        let patient_follower = flights.run(1, later(), || async { 6 });
        let started = Instant::now();
        let ((lv, lr), (fv, fr)) = tokio::join!(leader, patient_follower);
        assert_eq!((lv, lr), (Err(FlightError::TimedOut), Role::Leader));
        assert_eq!(
            (fv, fr),
            (Err(FlightError::TimedOut), Role::Follower),
            "the follower gave up at the leader's time, not its own"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(flights.in_progress(), 1, "the work goes on");
        assert_eq!(
            flights.run(1, later(), || async { 7 }).await,
            (Err(FlightError::TimedOut), Role::Follower),
            "a run past its leader's time is not waited for"
        );
        let _ = release.send(());
        while flights.in_progress() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(flights.run(1, later(), || async { 8 }).await.0, Ok(8));
    }

    fn explode() -> u8 {
        panic!("work failed")
    }
}
