//! The read side of the store: list a client's statements, describe one, stream its bytes,
//! pre-sign a download link.
//!
//! Every call takes a validated [`ClientId`] and [`StatementId`] and builds keys only through
//! [`ObjectKey::for_statement`] / [`statement_id_of`], so nothing here can reach outside
//! `{STATEMENTS_PREFIX}{client_id}/`. An object counts as a statement only if it carries a
//! statement's metadata (`StatementMetadata`, written by both write paths) naming this client
//! ([`metadata_of`], the one rule every read uses: list, describe, content and download
//! links), and a SHA-256 (S3's checksum for direct PUTs, metadata for copied objects):
//! anything else in the folder is not ours to serve.

use std::{collections::HashMap, time::Duration, time::SystemTime};

use aws_sdk_s3::{
    error::{ProvideErrorMetadata, SdkError},
    presigning::PresigningConfig,
    primitives::ByteStream,
};
use aws_smithy_types::date_time::Format;
use futures_util::{StreamExt, stream};

use super::{PDF_CONTENT_TYPE, StatementMetadata, Storage, StorageError};
use crate::domain::{
    ClientId, ObjectKey, RetainUntil, STATEMENT_SUFFIX, StatementId, client_folder, statement_id_of,
};

/// HEADs in flight while describing one page of a listing.
const LIST_HEAD_CONCURRENCY: usize = 8;
/// Keys asked for by each ListObjectsV2 after a page's first, which only happens to list past
/// objects that are not statements.
const SKIP_KEYS: i32 = 1000;
/// ListObjectsV2 calls one page may make: a page of statements costs one.
const MAX_LIST_CALLS: usize = 5;

/// One stored statement as the read routes describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    pub statement_id: StatementId,
    pub key: String,
    pub fip_id: String,
    /// Masked account number; empty for statements stored before the write path recorded it.
    pub account_number: String,
    pub request_id: Option<String>,
    /// RFC 3339.
    pub fetched_at: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// Without quotes, as the store answer gives it.
    pub etag: String,
    /// The end of its data life, when it has one.
    pub retain_until: Option<RetainUntil>,
}

/// One page of a client's statements, in key order.
#[derive(Debug)]
pub struct StatementPage {
    pub statements: Vec<StatementInfo>,
    /// The statement's file name to continue after, when there may be more.
    pub resume_after: Option<String>,
}

/// A byte range a client asked for (one range; S3 serves no multi-range answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-` or `bytes=first-last`.
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses a `Range` header. `None` for anything but one well-formed byte range: RFC 9110
    /// lets a server ignore a Range it does not support and answer 200 with the whole body.
    pub fn parse(header: &str) -> Option<Self> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        match (first.trim().is_empty(), last.trim().is_empty()) {
            (true, false) => num(last).filter(|n| *n > 0).map(Self::Suffix),
            (false, true) => Some(Self::From {
                first: num(first)?,
                last: None,
            }),
            (false, false) => {
                let (first, last) = (num(first)?, num(last)?);
                (first <= last).then_some(Self::From {
                    first,
                    last: Some(last),
                })
            }
            (true, true) => None,
        }
    }

    fn header_value(self) -> String {
        match self {
            Self::From { first, last: None } => format!("bytes={first}-"),
            Self::From {
                first,
                last: Some(last),
            } => format!("bytes={first}-{last}"),
            Self::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// What opening a statement's content gave.
pub enum Content {
    /// The statement's bytes (all of them, or the requested range), streamed from S3.
    Body {
        info_etag: String,
        content_length: u64,
        /// `bytes a-b/size` when a range was served.
        content_range: Option<String>,
        body: ByteStream,
    },
    /// `If-None-Match` matched: the caller already has these bytes.
    NotModified {
        etag: String,
    },
    /// The range lies outside the statement (of this size).
    RangeNotSatisfiable {
        size: Option<u64>,
    },
    NotFound,
}

/// A pre-signed GET of one statement.
pub struct DownloadLink {
    /// A bearer credential until it expires: never log it.
    pub url: String,
    pub expires_at: SystemTime,
}

impl Storage {
    /// The S3 client (the audit trail writes through it too).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The server-side encryption applied to every object the gateway writes.
    pub fn encryption(&self) -> Option<&crate::config::Encryption> {
        self.encryption.as_ref()
    }

    /// One page (`limit` statements at most) of `client`'s statements after statement
    /// `resume_after` (from a previous page's cursor).
    ///
    /// Objects in the folder that are not statements are skipped, and a page never ends on
    /// one: the cursor always names a statement, so the API can refuse any other cursor.
    /// When the first listing holds no statement to stop at, the listing goes on past those
    /// objects (bounded by [`MAX_LIST_CALLS`]).
    pub async fn list_statements(
        &self,
        client: &ClientId,
        resume_after: Option<&StatementId>,
        limit: u16,
    ) -> Result<StatementPage, StorageError> {
        let folder = client_folder(&self.prefix, client);
        let limit = usize::from(limit);
        let mut start_after = resume_after.map(|id| {
            ObjectKey::for_statement(&self.prefix, client, id)
                .as_str()
                .to_owned()
        });
        let mut wanted: Vec<(String, StatementId)> = Vec::with_capacity(limit);
        let mut more = false;
        for call in 0..MAX_LIST_CALLS {
            let max_keys = if call == 0 {
                i32::try_from(limit).unwrap_or(SKIP_KEYS)
            } else {
                SKIP_KEYS
            };
            // `prefix` bounds the listing to the folder whatever the start position is.
            self.metrics.s3_request(crate::metrics::S3Op::ListObjectsV2);
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&folder)
                .max_keys(max_keys)
                .set_start_after(start_after.clone())
                .send()
                .await
                .map_err(StorageError::s3("ListObjectsV2"))?;
            let keys: Vec<String> = out
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect();
            let truncated = out.is_truncated() == Some(true);
            let last = keys.last().cloned();
            for key in keys {
                if wanted.len() == limit {
                    more = true;
                    break;
                }
                if let Some(id) = statement_id_of(&key, &self.prefix, client) {
                    wanted.push((key, id));
                }
            }
            if more || !truncated {
                break;
            }
            if wanted.len() == limit {
                more = true;
                break;
            }
            let Some(last) = last else { break };
            if call + 1 == MAX_LIST_CALLS {
                if wanted.is_empty() {
                    tracing::warn!(
                        calls = MAX_LIST_CALLS,
                        "a client's folder holds too many objects that are not statements to list past"
                    );
                    return Err(StorageError::S3 {
                        op: "ListObjectsV2",
                        detail: "too many objects that are not statements in the client's folder"
                            .to_owned(),
                    });
                }
                more = true;
                break;
            }
            start_after = Some(last);
        }
        let resume_after = if more {
            wanted
                .last()
                .map(|(_, id)| format!("{}{STATEMENT_SUFFIX}", id.as_str()))
        } else {
            None
        };
        let described: Vec<Result<Option<StatementInfo>, StorageError>> =
            stream::iter(wanted.into_iter().map(|(key, id)| async move {
                self.describe(
                    client,
                    &ObjectKey::for_statement(&self.prefix, client, &id),
                    id,
                )
                .await
                .map(|info| info.filter(|i| i.key == key))
            }))
            .buffered(LIST_HEAD_CONCURRENCY)
            .collect()
            .await;
        let mut statements = Vec::with_capacity(described.len());
        for d in described {
            // A statement deleted between the listing and its HEAD is simply not listed.
            if let Some(info) = d? {
                statements.push(info);
            }
        }
        Ok(StatementPage {
            statements,
            resume_after,
        })
    }

    /// The statement `id` of `client`, if it is stored.
    pub async fn statement(
        &self,
        client: &ClientId,
        id: &StatementId,
    ) -> Result<Option<StatementInfo>, StorageError> {
        self.describe(
            client,
            &ObjectKey::for_statement(&self.prefix, client, id),
            id.clone(),
        )
        .await
    }

    async fn describe(
        &self,
        client: &ClientId,
        key: &ObjectKey,
        id: StatementId,
    ) -> Result<Option<StatementInfo>, StorageError> {
        self.metrics.s3_request(crate::metrics::S3Op::HeadObject);
        let out = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => return Ok(None),
            Err(e) => return Err(StorageError::s3("HeadObject")(e)),
        };
        Ok(info_from(
            key,
            id,
            metadata_of(out.metadata(), client),
            out.checksum_sha256(),
            out.content_length(),
            out.e_tag(),
            out.last_modified(),
        ))
    }

    /// Opens the statement's bytes for streaming: all of them or `range`, unless the caller's
    /// `If-None-Match` already names its ETag. Nothing is buffered: the body streams from S3.
    pub async fn open_statement(
        &self,
        client: &ClientId,
        id: &StatementId,
        range: Option<ByteRange>,
        if_none_match: Option<&str>,
    ) -> Result<Content, StorageError> {
        let key = ObjectKey::for_statement(&self.prefix, client, id);
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .set_range(range.map(ByteRange::header_value));
        // If-None-Match is compared here, not sent to S3: servers differ (s3s-fs refuses a
        // malformed value with 400, others ignore it), and a 304 must never depend on that.
        self.metrics.s3_request(crate::metrics::S3Op::GetObject);
        let out = match req.send().await {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) => {
                let status = e.raw().status().as_u16();
                if e.err().is_no_such_key() || status == 404 {
                    return Ok(Content::NotFound);
                }
                if status == 304 {
                    let etag = e
                        .raw()
                        .headers()
                        .get("etag")
                        .map(|v| v.trim_matches('"').to_owned())
                        .unwrap_or_default();
                    return Ok(Content::NotModified { etag });
                }
                if status == 416 || e.err().code() == Some("InvalidRange") {
                    let size = self.statement(client, id).await?.map(|i| i.size_bytes);
                    return match size {
                        Some(size) => Ok(Content::RangeNotSatisfiable { size: Some(size) }),
                        None => Ok(Content::NotFound),
                    };
                }
                return Err(StorageError::s3("GetObject")(SdkError::ServiceError(e)));
            }
            Err(e) => return Err(StorageError::s3("GetObject")(e)),
        };
        let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_owned();
        if metadata_of(out.metadata(), client).is_none() {
            return Ok(Content::NotFound);
        }
        // A 304 drops the body unread, which closes that S3 connection.
        if if_none_match.is_some_and(|tags| etag_matches(tags, &etag)) {
            return Ok(Content::NotModified { etag });
        }
        let content_length = out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or_default();
        // A server that ignored the Range answers with the whole object: serve it as such.
        let content_range = if range.is_some() {
            out.content_range().map(str::to_owned)
        } else {
            None
        };
        Ok(Content::Body {
            info_etag: etag,
            content_length,
            content_range,
            body: out.body,
        })
    }

    /// A pre-signed GET of the statement, valid for `ttl` from `now` (whole seconds, so
    /// `expires_at` is exact), answering as a PDF attachment named `{id}.pdf`, not to be
    /// cached. `None` when the
    /// statement is not stored: a link to nothing helps no one.
    pub async fn presign_statement(
        &self,
        client: &ClientId,
        id: &StatementId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Option<(StatementInfo, DownloadLink)>, StorageError> {
        let Some(info) = self.statement(client, id).await? else {
            return Ok(None);
        };
        let start = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()))
            .unwrap_or(now);
        let config = PresigningConfig::builder()
            .start_time(start)
            .expires_in(ttl)
            .build()
            .map_err(|e| StorageError::S3 {
                op: "presign",
                detail: e.to_string(),
            })?;
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&info.key)
            .response_content_type(PDF_CONTENT_TYPE)
            .response_content_disposition(attachment(id))
            // Whoever fetches through the link (a browser, a proxy) keeps no copy.
            .response_cache_control("no-store")
            .presigned(config)
            .await
            // The error names the operation only: never the request, which holds the URL.
            .map_err(|_| StorageError::S3 {
                op: "presign",
                detail: "signing the download link failed".to_owned(),
            })?;
        Ok(Some((
            info,
            DownloadLink {
                url: presigned.uri().to_owned(),
                expires_at: start + ttl,
            },
        )))
    }
}

/// `attachment; filename="{id}.pdf"`: ids are `[A-Za-z0-9_-]`, so no quoting or encoding is
/// needed and no header injection is possible.
pub fn attachment(id: &StatementId) -> String {
    format!("attachment; filename=\"{}{STATEMENT_SUFFIX}\"", id.as_str())
}

/// Whether an `If-None-Match` value names `etag` (weak comparison, `*` matches anything).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == etag.trim_matches('"')
    })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The object's metadata, if it names the object a statement of `client`: the one rule that
/// decides whether the read side serves an object, whatever its key says. A key in the
/// client's folder is not enough (a copy, a restore or a bug elsewhere could put another
/// client's statement there).
fn metadata_of<'a>(
    metadata: Option<&'a HashMap<String, String>>,
    client: &ClientId,
) -> Option<&'a HashMap<String, String>> {
    metadata
        .filter(|m| StatementMetadata::from_map(m).is_some_and(|s| s.client_id == client.as_str()))
}

/// Describes a statement from its HEAD; `metadata` is what [`metadata_of`] let through.
fn info_from(
    key: &ObjectKey,
    statement_id: StatementId,
    metadata: Option<&HashMap<String, String>>,
    checksum_sha256: Option<&str>,
    content_length: Option<i64>,
    etag: Option<&str>,
    last_modified: Option<&aws_smithy_types::DateTime>,
) -> Option<StatementInfo> {
    let meta = metadata?;
    let statement = StatementMetadata::from_map(meta)?;
    // Copied statements carry it in metadata; direct PUTs as S3's own checksum.
    let sha256 = meta
        .get("sha256")
        .filter(|s| is_sha256_hex(s))
        .cloned()
        .or_else(|| checksum_sha256.and_then(super::statement::checksum_to_hex))?;
    let get = |name: &str| meta.get(name).filter(|v| !v.is_empty()).cloned();
    let fetched_at = get("fetched-at")
        .or_else(|| last_modified.and_then(|t| t.fmt(Format::DateTime).ok()))
        .unwrap_or_default();
    Some(StatementInfo {
        statement_id,
        key: key.as_str().to_owned(),
        fip_id: get("fip-id").unwrap_or_default(),
        account_number: get("account-number").unwrap_or_default(),
        request_id: get("request-id"),
        fetched_at,
        size_bytes: content_length
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or_default(),
        sha256,
        etag: etag.unwrap_or_default().trim_matches('"').to_owned(),
        retain_until: statement.retain_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(
            ByteRange::parse("bytes=0-4"),
            Some(ByteRange::From {
                first: 0,
                last: Some(4)
            })
        );
        assert_eq!(
            ByteRange::parse("bytes=10-"),
            Some(ByteRange::From {
                first: 10,
                last: None
            })
        );
        assert_eq!(ByteRange::parse("bytes=-5"), Some(ByteRange::Suffix(5)));
        for ignored in [
            "bytes=0-1,4-5",
            "bytes=5-4",
            "bytes=-0",
            "bytes=-",
            "items=0-4",
            "bytes=a-b",
            "bytes=+1-2",
        ] {
            assert_eq!(ByteRange::parse(ignored), None, "{ignored}");
        }
        assert_eq!(
            ByteRange::parse("bytes=0-4").map(ByteRange::header_value),
            Some("bytes=0-4".to_owned())
        );
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("W/\"abc\", \"def\"", "\"def\""));
        assert!(etag_matches("*", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
    }
}
