//! Is S3 reachable from this pod? A metric and a fast answer, not a readiness condition.
//!
//! Readiness is local (docs/adr/0001-readiness-is-local.md): an S3 or IAM blip affects every
//! pod at once, and unreadying them all would empty the Service, so callers would get
//! connection refused instead of a precise answer. Instead a background check (HeadBucket
//! every [`PROBE_EVERY`], every [`PROBE_EVERY_WHILE_DOWN`] while down) and the outcomes of
//! real S3 operations keep `finpass_gateway_dependency_up{dependency="s3"}` current, and
//! calls answer 503 `storage_unavailable` while it is 0, before spending a Finpass call on
//! reports that could not be stored.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aws_sdk_s3::{config::http::HttpResponse, error::SdkError};

use super::Storage;
use crate::metrics::{Dependency, Metrics};

/// Interval of the background check while S3 is up.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// Interval while S3 is down: recovery shows within a second or so.
pub const PROBE_EVERY_WHILE_DOWN: Duration = Duration::from_secs(1);

/// The last known reachability of S3, mirrored in the gauge.
pub(super) struct S3Health {
    up: AtomicBool,
    metrics: Metrics,
}

impl S3Health {
    /// Starts up: no evidence against S3 yet, and the first check runs right away.
    pub(super) fn new(metrics: Metrics) -> Self {
        metrics.dependency_up(Dependency::S3, true);
        Self {
            up: AtomicBool::new(true),
            metrics,
        }
    }

    pub(super) fn set(&self, up: bool) {
        if self.up.swap(up, Ordering::SeqCst) != up {
            if up {
                tracing::info!("S3 is reachable again");
            } else {
                tracing::warn!("S3 is unreachable; calls answer 503 storage_unavailable");
            }
        }
        self.metrics.dependency_up(Dependency::S3, up);
    }

    pub(super) fn up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Learns from a real operation: success means reachable; a transport failure, a timeout
    /// or a 5xx means not. Other refusals (a 404, a 403 on one key) say nothing about
    /// reachability.
    pub(super) fn observe<T, E>(&self, result: &Result<T, SdkError<E, HttpResponse>>) {
        match result {
            Ok(_) => self.set(true),
            Err(
                SdkError::DispatchFailure(_)
                | SdkError::TimeoutError(_)
                | SdkError::ResponseError(_),
            ) => self.set(false),
            Err(SdkError::ServiceError(e)) if e.raw().status().is_server_error() => {
                self.set(false);
            }
            Err(_) => {}
        }
    }
}

impl Storage {
    /// False while S3 is known to be unreachable; calls then answer `storage_unavailable`.
    pub fn available(&self) -> bool {
        self.health.up()
    }

    /// One background check: HeadBucket within the S3 timeouts. Any failure (unreachable,
    /// timed out, refused by IAM) counts as down, since no report could be stored.
    pub async fn probe(&self) -> bool {
        let up = match self.check_bucket().await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "S3 check failed");
                false
            }
        };
        self.health.set(up);
        up
    }
}

/// Checks S3 for as long as the process runs.
pub async fn probe_forever(storage: Arc<Storage>) {
    loop {
        let up = storage.probe().await;
        tokio::time::sleep(if up {
            PROBE_EVERY
        } else {
            PROBE_EVERY_WHILE_DOWN
        })
        .await;
    }
}
