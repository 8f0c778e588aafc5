//! Token buckets per key: per caller (calls), per source address (failed authentications). A
//! dozen lines of arithmetic did not justify a rate-limiting crate and its dependency tree
//! (`governor` would bring its own clock, `dashmap`, `quanta` and `nonzero_ext` to save them);
//! what matters is that the map stays bounded, and that a source over its budget can be
//! refused with a look that takes nothing ([`RateLimiter::peek`]), which `governor`'s keyed
//! limiter offers only by consuming.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Entries kept before idle (full) buckets are dropped.
const MAX_TRACKED: usize = 10_000;

pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Says whether `key` has a token left (how long until it has one if not), without taking
    /// it. A key never charged has its full burst.
    pub fn peek(&self, key: &str) -> Result<(), Duration> {
        let rate = self.per_minute / 60.0;
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(bucket) = buckets.get(key) else {
            return Ok(());
        };
        let tokens =
            (bucket.tokens + bucket.at.elapsed().as_secs_f64() * rate).min(self.per_minute);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((1.0 - tokens) / rate).max(1.0)))
        }
    }

    /// Takes one token for `key` even when none is left: what a failure that has already
    /// happened costs. Failures that passed [`Self::peek`] together (their checks still
    /// running) are all charged, the ones beyond the budget as a debt the source pays back in
    /// waiting, so its failures over any stretch stay within the budget plus one burst. The
    /// debt is capped at one minute's budget: a source shared by many users (a NAT) is locked
    /// out for two minutes at most.
    pub fn charge(&self, key: &str) {
        let rate = self.per_minute / 60.0;
        let now = Instant::now();
        let mut buckets = self.lock_making_room(key, now);
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.per_minute,
            at: now,
        });
        bucket.tokens = ((bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate)
            .min(self.per_minute)
            - 1.0)
            .max(-self.per_minute);
        bucket.at = now;
    }

    /// The buckets, after dropping full ones when the map is at its bound and `key` is new.
    fn lock_making_room(
        &self,
        key: &str,
        now: Instant,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        let rate = self.per_minute / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            let cap = self.per_minute;
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < cap);
        }
        buckets
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let rate = self.per_minute / 60.0;
        let now = Instant::now();
        let mut buckets = self.lock_making_room(key, now);
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.per_minute,
            at: now,
        });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate)
            .min(self.per_minute);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - bucket.tokens) / rate).max(1.0),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key() {
        let l = RateLimiter::new(2);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let wait = l.check("a").expect_err("third call within a minute");
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(l.check("b").is_ok(), "other callers are unaffected");
    }

    /// Failures of requests that passed the peek together (their checks were still running)
    /// are all charged: the ones beyond the budget are owed, so the source waits longer and
    /// its guesses over any stretch of time stay within the budget plus one burst.
    #[test]
    fn failures_charged_beyond_the_budget_are_owed() {
        let l = RateLimiter::new(2);
        // Four guesses passed the peek at once; all four fail.
        for _ in 0..4 {
            assert!(l.peek("a").is_ok());
        }
        for _ in 0..4 {
            l.charge("a");
        }
        let wait = l.peek("a").expect_err("the budget is spent");
        // Two owed and one to earn at 2 a minute: 90 s, not the 30 s of an empty bucket.
        assert!(
            wait >= Duration::from_secs(89) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        assert!(l.peek("b").is_ok(), "other sources are unaffected");
    }

    #[test]
    fn a_peek_takes_nothing() {
        let l = RateLimiter::new(2);
        assert!(l.peek("a").is_ok(), "never charged");
        assert!(l.peek("a").is_ok());
        assert!(l.check("a").is_ok());
        assert!(l.peek("a").is_ok());
        assert!(l.check("a").is_ok());
        assert!(l.peek("a").is_err(), "the burst is spent");
        assert!(l.peek("b").is_ok());
    }
}
