//! Reads declared variables from a lookup function, applying their defaults and ranges.
//!
//! Parsing goes through a lookup rather than `std::env` so tests and the sandbox build settings
//! without mutating the (process-global) environment.

use std::{str::FromStr, time::Duration};

use secrecy::SecretString;

use super::{ConfigError, vars::Var};
use crate::domain::Prefix;

pub(crate) struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

pub(crate) fn invalid(var: &Var, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        var: var.name,
        reason: reason.to_string(),
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The trimmed value, or the default; a blank value counts as unset.
    pub(crate) fn string(&self, var: &Var) -> Result<String, ConfigError> {
        match (self.lookup)(var.name).filter(|v| !v.trim().is_empty()) {
            Some(v) => Ok(v.trim().to_owned()),
            None => var
                .default
                .map(str::to_owned)
                .ok_or(ConfigError::Missing { var: var.name }),
        }
    }

    /// An optional variable: `None` when unset or empty.
    pub(crate) fn optional(&self, var: &Var) -> Result<Option<String>, ConfigError> {
        Ok(Some(self.string(var)?).filter(|v| !v.is_empty()))
    }

    pub(crate) fn secret(&self, var: &Var) -> Result<SecretString, ConfigError> {
        Ok(SecretString::from(self.string(var)?))
    }

    /// Parses with `FromStr`. The error names the variable and the parse failure, never the
    /// value (it may be a secret pasted into the wrong variable).
    pub(crate) fn parse<T: FromStr>(&self, var: &Var) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.string(var)?
            .parse()
            .map_err(|e: T::Err| invalid(var, e))
    }

    /// A whole number inside the variable's declared range.
    pub(crate) fn number(&self, var: &Var) -> Result<u64, ConfigError> {
        let n: u64 = self.parse(var)?;
        check_range(var, n)
    }

    /// [`Self::number`] for variables that may be unset (no default).
    pub(crate) fn optional_number(&self, var: &Var) -> Result<Option<u64>, ConfigError> {
        match self.optional(var)? {
            None => Ok(None),
            Some(raw) => {
                let n: u64 = raw.parse().map_err(|e| invalid(var, e))?;
                check_range(var, n).map(Some)
            }
        }
    }

    pub(crate) fn count(&self, var: &Var) -> Result<usize, ConfigError> {
        usize::try_from(self.number(var)?).map_err(|e| invalid(var, e))
    }

    pub(crate) fn millis(&self, var: &Var) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.number(var)?))
    }

    pub(crate) fn bool(&self, var: &Var) -> Result<bool, ConfigError> {
        match self.string(var)?.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(invalid(var, "must be true or false")),
        }
    }

    pub(crate) fn prefix(&self, var: &Var) -> Result<Prefix, ConfigError> {
        Prefix::parse(&self.string(var)?).map_err(|e| invalid(var, e))
    }

    /// The non-empty entries of a comma list.
    pub(crate) fn list(&self, var: &Var) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .string(var)?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

fn check_range(var: &Var, n: u64) -> Result<u64, ConfigError> {
    match var.range {
        Some((lo, hi)) if !(lo..=hi).contains(&n) => {
            Err(invalid(var, format!("must be between {lo} and {hi}")))
        }
        _ => Ok(n),
    }
}
