//! The Finpass Account Aggregator client.
//!
//! Holds the company's credentials and is the only code that talks to Finpass. It turns the
//! response envelope into typed reports, retries what is worth retrying (connect errors,
//! timeouts, 429, 5xx; never other 4xx) with exponential backoff and full jitter, honours
//! `Retry-After`, and gives up at an overall deadline so callers get a bounded answer.

mod client;
mod types;

pub use client::{FinpassClient, RetryPolicy};
pub use types::{FinpassError, FinpassReport, ReportStatus};
