//! What a caller may do: the scopes of a service caller (`CALLER_TOKENS` entries name theirs as
//! `name:sha256hex:store+read`) and the fixed set of a frontend user.
//!
//! A validated set, parsed once at start: an unknown scope word stops the process, so a typo
//! can never silently grant or withhold a permission.

use std::fmt;

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `POST /v1/statements`: fetch from Finpass and store.
    Store,
    /// The GET read routes: list, describe, stream, download links.
    Read,
    /// The DELETE routes (purge).
    Delete,
    /// Statement jobs: `/v1/statement-jobs` (create, read, cancel).
    Jobs,
}

impl Scope {
    pub const ALL: [Self; 4] = [Self::Store, Self::Read, Self::Delete, Self::Jobs];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Read => "read",
            Self::Delete => "delete",
            Self::Jobs => "jobs",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Self::Store => 1,
            Self::Read => 2,
            Self::Delete => 4,
            Self::Jobs => 8,
        }
    }
}

/// A set of [`Scope`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The message never quotes the input: it sits next to a token hash in the same entry.
    #[error("scopes must be one or more of store, read, delete, jobs joined by `+`")]
    Unknown,
}

impl Scopes {
    pub const NONE: Self = Self(0);
    /// A service caller configured without scopes: what every service token could do before
    /// scopes existed (delete only through `DELETE_CALLERS`).
    pub const SERVICE_DEFAULT: Self =
        Self(Scope::Store.bit() | Scope::Read.bit() | Scope::Jobs.bit());
    /// A frontend user, on its own client only: store, read and statement jobs (without
    /// webhooks), never delete.
    pub const USER: Self = Self(Scope::Store.bit() | Scope::Read.bit() | Scope::Jobs.bit());

    /// Parses `store+read+…`. Empty words, unknown words and an empty list are refused;
    /// repeating a word is harmless.
    pub fn parse(spec: &str) -> Result<Self, ScopeError> {
        let mut set = Self::NONE;
        for word in spec.split('+') {
            let scope = Scope::ALL
                .into_iter()
                .find(|s| s.as_str() == word.trim())
                .ok_or(ScopeError::Unknown)?;
            set = set.with(scope);
        }
        Ok(set)
    }

    #[must_use]
    pub const fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect();
        f.write_str(&words.join("+"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_words_and_refuses_anything_else() {
        let s = Scopes::parse("store+read").expect("valid");
        assert!(s.contains(Scope::Store) && s.contains(Scope::Read));
        assert!(!s.contains(Scope::Delete) && !s.contains(Scope::Jobs));
        assert_eq!(
            Scopes::parse("delete")
                .map(|s| s.to_string())
                .ok()
                .as_deref(),
            Some("delete")
        );
        assert_eq!(
            Scopes::parse("jobs+store+jobs")
                .map(|s| s.to_string())
                .ok()
                .as_deref(),
            Some("store+jobs")
        );
        for bad in [
            "",
            "+",
            "read+",
            "admin",
            "Read",
            "store,read",
            "store read",
        ] {
            assert_eq!(Scopes::parse(bad), Err(ScopeError::Unknown), "{bad:?}");
        }
    }

    #[test]
    fn the_default_is_what_every_token_could_do_before_scopes() {
        assert_eq!(Scopes::SERVICE_DEFAULT.to_string(), "store+read+jobs");
        assert_eq!(Scopes::USER.to_string(), "store+read+jobs");
    }
}
