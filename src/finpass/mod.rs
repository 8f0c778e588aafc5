//! The Finpass Account Aggregator client.
//!
//! Holds the company's credentials and is the only code that talks to Finpass. It turns the
//! response envelope into typed reports (each report read on its own, so one malformed entry
//! cannot hide the others), retries what is worth retrying (connect errors, timeouts, 429, 5xx;
//! never other 4xx) with exponential backoff and full jitter, honours `Retry-After` (clamped:
//! it is untrusted), and gives up at an overall deadline so callers get a bounded answer.

mod client;
mod retry_after;
mod types;

pub use crate::domain::FinpassOutcome;
pub use client::{FinpassClient, RetryPolicy};
pub use retry_after::{MAX_RETRY_AFTER, parse_retry_after, parse_retry_after_within};
pub use types::{FinpassError, FinpassReport, ReportStatus};
