//! Validated domain types. Everything that crosses the HTTP boundary is parsed into one of
//! these before any upstream call, so the rest of the code never sees unchecked input.

mod ids;
mod key;

pub use ids::{ClientId, IdError, RequestId};
pub use key::{ObjectKey, Prefix, PrefixError};
