//! The object-key scheme.
//!
//! A stored statement is immutable, so its key must name its source exactly: the link's host
//! and path (never the query, a short-lived bearer credential) and the source's version (the
//! link server's ETag, else Last-Modified + length, else the content's SHA-256). A report that
//! Finpass regenerates at the same path has a new version, hence a new key; two FIPs' reports
//! at the same path on different bucket hosts get different keys.
//!
//! Layout: `{prefix}{client_id}/{fip}-{hash}.pdf`, where `fip` is the sanitised FIP id (for a
//! human skimming a listing) and `hash` is the first 20 hex digits (80 bits) of SHA-256 over
//! host, path and version. Every component is validated ([`ClientId`], [`Prefix`]) or built
//! from `[A-Za-z0-9_-]` here, so no input can produce `..`, a leading `/` or an extra path
//! segment, and the file stem is a valid statement id.

use std::fmt;

use sha2::{Digest, Sha256};

use super::ClientId;

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

/// Which version of a source the bytes are, as its server tells (or as we measured).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceVersion(String);

impl SourceVersion {
    /// From the link's response headers: the ETag, else Last-Modified with the length; `None`
    /// when the server gives neither (the content hash is then the only exact version).
    pub fn from_headers(
        etag: Option<&str>,
        last_modified: Option<&str>,
        len: Option<u64>,
    ) -> Option<Self> {
        let printable = |s: &str| {
            s.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(200)
                .collect::<String>()
        };
        match (etag.map(str::trim).filter(|e| !e.is_empty()), last_modified) {
            (Some(etag), _) => Some(Self(format!("etag:{}", printable(etag)))),
            (None, Some(lm)) => Some(Self(format!(
                "last-modified:{};length:{}",
                printable(lm),
                len.map_or_else(|| "unknown".to_owned(), |l| l.to_string())
            ))),
            (None, None) => None,
        }
    }

    /// The content's SHA-256, for sources that give no version of their own.
    pub fn from_sha256(hex: &str) -> Self {
        Self(format!("sha256:{hex}"))
    }

    /// Wraps a version read back from object metadata.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a report's bytes come from: the link's host (with any port) and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SourceLocation {
    pub host: String,
    pub path: String,
}

/// A key under which a statement PDF is (or will be) stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

/// Longest sanitised FIP id kept in a key.
const MAX_FIP_LEN: usize = 48;

impl ObjectKey {
    /// The permanent key of the statement at `source` in `version`, fetched for `client`.
    pub fn for_source(
        prefix: &Prefix,
        client: &ClientId,
        fip_id: &str,
        source: &SourceLocation,
        version: &SourceVersion,
    ) -> Self {
        let mut hasher = Sha256::new();
        for part in [source.host.as_str(), source.path.as_str(), version.as_str()] {
            hasher.update(part.as_bytes());
            // A separator no component contains, so ("ab","c") and ("a","bc") differ.
            hasher.update([0u8]);
        }
        let hash = hex::encode(hasher.finalize());
        let fip: String = fip_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            .take(MAX_FIP_LEN)
            .collect();
        let fip = if fip.is_empty() {
            "report".to_owned()
        } else {
            fip
        };
        Self(format!(
            "{}{}/{fip}-{}.pdf",
            prefix.as_str(),
            client.as_str(),
            &hash[..20]
        ))
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

    fn source(host: &str, path: &str) -> SourceLocation {
        SourceLocation {
            host: host.into(),
            path: path.into(),
        }
    }

    fn etag(e: &str) -> SourceVersion {
        SourceVersion::from_headers(Some(e), None, None).expect("version")
    }

    fn key(fip: &str, src: &SourceLocation, v: &SourceVersion) -> ObjectKey {
        let prefix = Prefix::parse("statements/").expect("valid prefix");
        ObjectKey::for_source(&prefix, &client(), fip, src, v)
    }

    #[test]
    fn key_is_deterministic_readable_and_names_the_source_exactly() {
        let path = "/bucket/account_aggregator_v2/x/account_aggregator_v2_1770470141502632.pdf";
        let src = source("fip-bucket.s3.ap-south-1.amazonaws.com", path);
        let a = key("HDFC-FIP", &src, &etag("\"abc\""));
        assert_eq!(a, key("HDFC-FIP", &src, &etag("\"abc\"")));
        assert!(a.as_str().starts_with("statements/aa_123/HDFC-FIP-"), "{a}");
        assert!(a.as_str().ends_with(".pdf"));
        let stem = a
            .as_str()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".pdf");
        assert!(
            stem.len() <= 128
                && stem
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
        // Another host, another version or another path is another statement.
        assert_ne!(
            a,
            key(
                "HDFC-FIP",
                &source("other-bucket.s3.amazonaws.com", path),
                &etag("\"abc\"")
            )
        );
        assert_ne!(a, key("HDFC-FIP", &src, &etag("\"abd\"")));
        assert_ne!(
            a,
            key(
                "HDFC-FIP",
                &source("fip-bucket.s3.ap-south-1.amazonaws.com", "/other.pdf"),
                &etag("\"abc\"")
            )
        );
    }

    #[test]
    fn versions_prefer_the_etag_then_last_modified_with_length() {
        assert_eq!(
            SourceVersion::from_headers(
                Some("\"e1\""),
                Some("Tue, 01 Dec 2026 10:00:00 GMT"),
                Some(5)
            ),
            Some(SourceVersion("etag:\"e1\"".into()))
        );
        assert_eq!(
            SourceVersion::from_headers(None, Some("Tue, 01 Dec 2026 10:00:00 GMT"), Some(5)),
            Some(SourceVersion(
                "last-modified:Tue, 01 Dec 2026 10:00:00 GMT;length:5".into()
            ))
        );
        assert_eq!(SourceVersion::from_headers(Some(" "), None, Some(5)), None);
        assert_eq!(SourceVersion::from_headers(None, None, Some(5)), None);
    }

    #[test]
    fn hostile_fip_ids_and_paths_stay_inside_the_client_folder() {
        for (fip, path) in [
            ("../../etc", "/../../etc/passwd"),
            ("", "/a/.."),
            ("a/b", "/"),
            ("\u{202e}x", ""),
        ] {
            let k = key(fip, &source("h", path), &etag("e"));
            let rest = k
                .as_str()
                .strip_prefix("statements/aa_123/")
                .expect("inside client folder");
            assert!(
                !rest.contains('/') && !rest.contains(".."),
                "{fip:?} {path:?} -> {k}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the caller sends and whatever Finpass's link and FIP id are, a key is
        /// either refused at the id or lands as one `.pdf` file directly in the client's folder.
        #[test]
        fn no_input_produces_a_key_outside_the_prefix(raw_id in proptest::prelude::any::<String>(), fip in ".*", path in ".*") {
            check_key(&raw_id, &fip, &path)?;
        }

        #[test]
        fn valid_ids_with_hostile_paths(raw_id in "[A-Za-z0-9_-]{1,128}", fip in "(/|\\.\\.|[a-z])*", path in "(/|\\.\\.|%2e|[a-z]|\\.pdf|\\\\)*") {
            check_key(&raw_id, &fip, &path)?;
        }
    }

    fn check_key(
        raw_id: &str,
        fip: &str,
        path: &str,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let prefix = Prefix::parse("statements/").expect("valid prefix");
        let Ok(client) = ClientId::parse(raw_id) else {
            return Ok(());
        };
        let key = ObjectKey::for_source(&prefix, &client, fip, &source("h", path), &etag("e"));
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
