//! Validated domain types and the report outcome codes. Everything that crosses the HTTP
//! boundary is parsed into one of these before any upstream call, so the rest of the code
//! never sees unchecked input. This module imports nothing else from the crate.

mod audit;
mod finpass_outcome;
mod ids;
mod key;
mod outcome;
mod retention;
mod scope;
mod statement;

pub use audit::{AuditAction, AuditOutcome};
pub use finpass_outcome::FinpassOutcome;
pub use ids::{ClientId, IdError, MAX_ID_LEN, RequestId, StatementId};
pub use key::{ObjectKey, Prefix, PrefixError, SourceLocation, SourceVersion};
pub use outcome::{FailureCode, ReportStatus};
pub use retention::{
    IndexEntry, RetainUntil, RetainUntilError, day_of, parse_index_key, retention_index_key,
};
pub use scope::{Scope, ScopeError, Scopes};
pub use statement::{STATEMENT_SUFFIX, client_folder, statement_id_of};
