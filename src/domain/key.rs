//! The object-key scheme.
//!
//! Keys must be permanent and deterministic so that a repeat call (from this replica or any
//! other) finds the object with a HEAD instead of downloading again. A report is identified by
//! its link's *path*; the query string is a short-lived bearer credential and never takes part.
//!
//! Layout: `{prefix}{client_id}/{stem}-{hash}.pdf`, where `stem` is a sanitised, readable
//! version of the link's file name and `hash` is the first 16 hex digits of SHA-256 over the
//! whole path, so two paths that sanitise to the same stem never collide. Every component is
//! either validated ([`ClientId`], [`Prefix`]) or built from a fixed alphabet here, so no input
//! can produce `..`, a leading `/` or an extra path segment.

use std::fmt;

use sha2::{Digest, Sha256};

use super::ClientId;

const MAX_STEM_LEN: usize = 64;
const MAX_PREFIX_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("must be at most {MAX_PREFIX_LEN} characters")]
    TooLong,
    #[error(
        "segments may only contain ASCII letters, digits, '_', '-' and '.', and may not be '.' or '..'"
    )]
    InvalidSegment,
    #[error("must end with '/' (or be empty)")]
    MissingTrailingSlash,
}

/// A validated key prefix such as `statements/` (or empty, for the bucket root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    pub fn parse(raw: &str) -> Result<Self, PrefixError> {
        if raw.is_empty() {
            return Ok(Self(String::new()));
        }
        if raw.len() > MAX_PREFIX_LEN {
            return Err(PrefixError::TooLong);
        }
        let Some(body) = raw.strip_suffix('/') else {
            return Err(PrefixError::MissingTrailingSlash);
        };
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !body.split('/').all(segment_ok) {
            return Err(PrefixError::InvalidSegment);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key under which a statement PDF is (or will be) stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Builds the permanent key of the report served at `link_path` for `client`.
    pub fn for_report(prefix: &Prefix, client: &ClientId, link_path: &str) -> Self {
        let digest = Sha256::digest(link_path.as_bytes());
        let hash = hex::encode(&digest[..8]);
        let file_name = link_path.rsplit('/').next().unwrap_or_default();
        let file_name = file_name
            .strip_suffix(".pdf")
            .or_else(|| file_name.strip_suffix(".PDF"))
            .unwrap_or(file_name);
        let stem: String = file_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            .take(MAX_STEM_LEN)
            .collect();
        let name = if stem.is_empty() {
            format!("{hash}.pdf")
        } else {
            format!("{stem}-{hash}.pdf")
        };
        Self(format!("{}{}/{}", prefix.as_str(), client.as_str(), name))
    }

    /// Wraps a key that came from our own configuration (e.g. a staging key).
    pub(crate) fn from_trusted(key: String) -> Self {
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientId {
        ClientId::parse("aa_123").expect("valid id")
    }

    #[test]
    fn key_is_deterministic_readable_and_ignores_nothing_but_the_query() {
        let prefix = Prefix::parse("statements/").expect("valid prefix");
        let path = "/bucket/account_aggregator_v2/x/account_aggregator_v2_1770470141502632.pdf";
        let a = ObjectKey::for_report(&prefix, &client(), path);
        let b = ObjectKey::for_report(&prefix, &client(), path);
        assert_eq!(a, b);
        assert!(
            a.as_str()
                .starts_with("statements/aa_123/account_aggregator_v2_1770470141502632-")
        );
        assert!(a.as_str().ends_with(".pdf"));
        let other = ObjectKey::for_report(
            &prefix,
            &client(),
            "/other/account_aggregator_v2_1770470141502632.pdf",
        );
        assert_ne!(
            a, other,
            "same file name under another path must not collide"
        );
    }

    #[test]
    fn hostile_paths_stay_inside_the_client_folder() {
        let prefix = Prefix::parse("statements/").expect("valid prefix");
        for path in [
            "/../../etc/passwd",
            "/a/..",
            "/",
            "",
            "/%2e%2e/x.pdf",
            "/a/b/\u{202e}fdp.exe",
        ] {
            let key = ObjectKey::for_report(&prefix, &client(), path);
            let rest = key
                .as_str()
                .strip_prefix("statements/aa_123/")
                .expect("inside client folder");
            assert!(
                !rest.contains('/') && !rest.contains(".."),
                "{path:?} -> {key}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the caller sends and whatever path Finpass's link has, a key is either
        /// refused at the id or lands as one `.pdf` file directly in the client's folder.
        #[test]
        fn no_input_produces_a_key_outside_the_prefix(raw_id in proptest::prelude::any::<String>(), path in ".*") {
            check_key(&raw_id, &path)?;
        }

        #[test]
        fn valid_ids_with_hostile_paths(raw_id in "[A-Za-z0-9_-]{1,128}", path in "(/|\\.\\.|%2e|[a-z]|\\.pdf|\\\\)*") {
            check_key(&raw_id, &path)?;
        }
    }

    fn check_key(raw_id: &str, path: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        let prefix = Prefix::parse("statements/").expect("valid prefix");
        let Ok(client) = ClientId::parse(raw_id) else {
            return Ok(());
        };
        let key = ObjectKey::for_report(&prefix, &client, path);
        let folder = format!("statements/{client}/");
        let rest = key.as_str().strip_prefix(folder.as_str());
        proptest::prop_assert!(rest.is_some(), "{key} is outside {folder}");
        let rest = rest.unwrap_or_default();
        proptest::prop_assert!(
            !rest.contains('/') && !rest.contains("..") && !rest.contains('\\'),
            "{key}"
        );
        proptest::prop_assert!(rest.ends_with(".pdf") && rest.len() > 4, "{key}");
        Ok(())
    }

    #[test]
    fn prefix_validation() {
        assert!(Prefix::parse("").is_ok());
        assert!(Prefix::parse("statements/").is_ok());
        assert!(Prefix::parse("a/b.c/").is_ok());
        assert_eq!(
            Prefix::parse("statements"),
            Err(PrefixError::MissingTrailingSlash)
        );
        assert_eq!(Prefix::parse("../x/"), Err(PrefixError::InvalidSegment));
        assert_eq!(Prefix::parse("/x/"), Err(PrefixError::InvalidSegment));
        assert_eq!(Prefix::parse("a//"), Err(PrefixError::InvalidSegment));
    }
}
