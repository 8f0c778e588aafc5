//! The public HTTP API: routes, handlers and the problem+json error model.

mod health;
mod problem;
mod statements;

pub use health::{healthz, metrics, readyz};
pub use problem::{ApiError, json_config, method_not_allowed, not_found};
pub use statements::{Admission, StatementsRequest, StatementsResponse, store_statements};
