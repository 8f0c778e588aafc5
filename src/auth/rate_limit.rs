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

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let rate = self.per_minute / 60.0;
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            let cap = self.per_minute;
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < cap);
        }
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
