//! Caller-supplied identifiers.
//!
//! The Finpass contract contradicts itself about the `client_id` format
//! (`account_aggregator_v2_{id}` in the table, `aa_…` in every example), so we do not require a
//! prefix. We only accept what is safe everywhere the id travels: in an S3 key, in S3 user
//! metadata, in a JSON body and in logs. That is 1..=128 characters of `[A-Za-z0-9_-]`.

use std::fmt;

/// Longest id we accept; comfortably above anything Finpass issues.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters")]
    TooLong,
    #[error("may only contain ASCII letters, digits, '_' and '-'")]
    InvalidCharacter,
}

fn validate(raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(IdError::InvalidCharacter);
    }
    Ok(())
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses an untrusted string; the only way to build one.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                validate(&raw)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_newtype!(
    /// The Account Aggregator customer whose statements are fetched.
    ClientId
);
id_newtype!(
    /// The consent request id from Finpass's refresh-data call.
    RequestId
);
id_newtype!(
    /// A stored statement, stable for its lifetime: the file name of its object key without
    /// `.pdf` (see [`super::statement`], the one place that maps ids to keys and back).
    StatementId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_documented_formats() {
        assert!(ClientId::parse("aa_6989cbcf_a136a40db8abb6b691067").is_ok());
        assert!(ClientId::parse("account_aggregator_v2_oOxRfypvwDqMjti").is_ok());
        assert!(RequestId::parse("account_aggregator_v2_ojmzgkXAqwzTroKp").is_ok());
    }

    #[test]
    fn rejects_hostile_input() {
        assert_eq!(ClientId::parse(""), Err(IdError::Empty));
        assert_eq!(ClientId::parse("a".repeat(129)), Err(IdError::TooLong));
        assert!(ClientId::parse("a".repeat(128)).is_ok());
        for bad in ["../etc", "a/b", "a b", "é", "a.b", "a\0b", "a%2Fb", "🙂"] {
            assert_eq!(
                ClientId::parse(bad),
                Err(IdError::InvalidCharacter),
                "{bad:?}"
            );
        }
    }
}
