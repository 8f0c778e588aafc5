//! Stored statements: their metadata, the check of an object already at a key, and the two
//! atomic ways to write one.
//!
//! - **Direct PUT** (reports of known size up to `MULTIPART_THRESHOLD_BYTES`, by default every
//!   known size, on servers that take streaming checksum trailers): one request, straight to the permanent key, with the
//!   metadata known at the start and S3's own `x-amz-checksum-sha256`, so S3 verifies the bytes
//!   end to end and `HeadObject` returns the SHA-256. A PUT is atomic (a broken or rejected
//!   body leaves nothing) and carries `If-None-Match: *`, so a stored statement is never
//!   overwritten where the server honours it (AWS, s3s-fs; Garage ignores it, and then a racing
//!   writer of the same source writes the same bytes).
//! - **Staging + copy** (multipart, or servers without trailers such as Garage over plain
//!   HTTP): upload to a staging key, then `CopyObject` to the permanent key with the metadata
//!   including the SHA-256 we only know once the last byte has passed.

use std::collections::HashMap;

use aws_sdk_s3::{
    error::{ProvideErrorMetadata, SdkError},
    types::{ChecksumAlgorithm, ChecksumMode, MetadataDirective, ServerSideEncryption},
};

use super::{
    BodyReceiver, Encryption, PDF_CONTENT_TYPE, Staged, Storage, StorageError, StoredObject,
    upload::streaming_body,
};
use crate::{
    domain::{ClientId, ObjectKey, RequestId, RetainUntil, SourceVersion},
    metrics::{InFlightKind, S3Op, UploadOutcome},
};

/// What a statement's object carries as user metadata: what the read side lists without
/// another lookup, and what proves whose statement it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementMetadata {
    pub client_id: String,
    pub fip_id: String,
    pub account_number: String,
    pub request_id: Option<String>,
    /// RFC 3339.
    pub fetched_at: String,
    pub source_version: String,
    /// Present when written by staging + copy; a direct PUT has S3's checksum instead.
    pub sha256: Option<String>,
    /// The end of its data life (`retain-until`); `None`: kept until deleted.
    pub retain_until: Option<RetainUntil>,
}

/// Who a statement must belong to for an existing object to be answered as it.
pub struct Owner<'a> {
    pub client_id: &'a ClientId,
    pub fip_id: &'a str,
    pub version: &'a SourceVersion,
}

/// What is at a statement's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    Absent,
    /// The statement, with the SHA-256 S3 or its metadata holds.
    Ours(StoredObject),
    /// Something names another client, FIP or version: never ours.
    Conflict,
    /// An object without a complete statement label: no statement metadata, or ours without
    /// a SHA-256 yet. On S3 that is someone else's object (or a broken one); on servers that
    /// write the bytes, then the metadata, then the checksum (s3s-fs) it can also be a write
    /// in progress, so callers look again before calling it a conflict.
    Unlabelled,
}

/// How a direct PUT ended.
pub enum DirectPut {
    Stored(StoredObject),
    /// `If-None-Match: *` refused: the key was written meanwhile (check it with a HEAD).
    AlreadyExists,
}

impl StatementMetadata {
    pub fn new(
        client_id: &ClientId,
        fip_id: &str,
        account_number: &str,
        request_id: Option<&RequestId>,
        version: &SourceVersion,
    ) -> Self {
        Self {
            client_id: client_id.to_string(),
            fip_id: header_safe(fip_id),
            account_number: header_safe(account_number),
            request_id: request_id.map(ToString::to_string),
            fetched_at: aws_smithy_types::DateTime::from(std::time::SystemTime::now())
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .unwrap_or_default(),
            source_version: header_safe(version.as_str()),
            sha256: None,
            retain_until: None,
        }
    }

    /// With the end of the statement's data life (`retain_until`), if it has one.
    pub fn retaining(mut self, until: Option<RetainUntil>) -> Self {
        self.retain_until = until;
        self
    }

    fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            ("client-id".to_owned(), self.client_id.clone()),
            ("fip-id".to_owned(), self.fip_id.clone()),
            ("account-number".to_owned(), self.account_number.clone()),
            ("fetched-at".to_owned(), self.fetched_at.clone()),
            ("source-version".to_owned(), self.source_version.clone()),
        ]);
        if let Some(r) = &self.request_id {
            m.insert("request-id".to_owned(), r.clone());
        }
        if let Some(s) = &self.sha256 {
            m.insert("sha256".to_owned(), s.clone());
        }
        if let Some(r) = &self.retain_until {
            m.insert("retain-until".to_owned(), r.to_rfc3339());
        }
        m
    }

    /// Reads metadata back; `None` when it is not a statement's.
    pub fn from_map(m: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| m.get(k).cloned();
        Some(Self {
            client_id: get("client-id")?,
            fip_id: get("fip-id")?,
            account_number: get("account-number").unwrap_or_default(),
            request_id: get("request-id"),
            fetched_at: get("fetched-at").unwrap_or_default(),
            source_version: get("source-version")?,
            sha256: get("sha256").filter(|s| is_sha256_hex(s)),
            retain_until: get("retain-until").and_then(|r| RetainUntil::from_stored(&r)),
        })
    }

    fn belongs_to(&self, owner: &Owner<'_>) -> bool {
        self.client_id == owner.client_id.as_str()
            && self.fip_id == header_safe(owner.fip_id)
            && self.source_version == header_safe(owner.version.as_str())
    }
}

impl Storage {
    /// What is at `key`, checked against who it must belong to.
    pub async fn existing(
        &self,
        key: &ObjectKey,
        owner: &Owner<'_>,
    ) -> Result<Existing, StorageError> {
        self.metrics.s3_request(S3Op::HeadObject);
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        self.health.observe(&result);
        let out = match result {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => {
                return Ok(Existing::Absent);
            }
            Err(e) => return Err(StorageError::s3("HeadObject")(e)),
        };
        let label = Label {
            metadata: out.metadata().and_then(StatementMetadata::from_map),
            checksum_sha256: out.checksum_sha256().and_then(checksum_to_hex),
            size: out.content_length().and_then(|n| u64::try_from(n).ok()),
        };
        Ok(label.classify(owner, || StoredObject {
            bucket: self.bucket.clone(),
            key: key.as_str().to_owned(),
            size_bytes: 0,
            sha256: String::new(),
            etag: out.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
        }))
    }

    /// Whether a report of `len` bytes goes in one direct PUT.
    pub fn direct_put_fits(&self, len: Option<u64>) -> bool {
        self.trailing_checksums && len.is_some_and(|l| l <= self.multipart_threshold)
    }

    /// Streams `body` (exactly `len` bytes) straight to the permanent key, once.
    pub async fn put_direct(
        &self,
        key: &ObjectKey,
        body: BodyReceiver,
        len: u64,
        meta: &StatementMetadata,
    ) -> Result<DirectPut, StorageError> {
        self.write_index_entry(key, meta).await?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .if_none_match("*")
            .content_type(PDF_CONTENT_TYPE)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_metadata(Some(meta.to_map()))
            .body(streaming_body(body));
        let req = with_encryption!(req, &self.encryption);
        self.metrics.s3_request(S3Op::PutObject);
        let started = std::time::Instant::now();
        let _guard = self.metrics.in_flight(InFlightKind::S3Upload);
        // A streamed PUT lasts as long as its download: data timeouts, not metadata ones.
        let result = req.customize().config_override(self.data_op()).send().await;
        // Only success says something about S3 here: a failure may be the body's (the
        // download broke or hit its deadline), which must not mark S3 down.
        if result.is_ok() {
            self.health.set(true);
        }
        let outcome = match &result {
            Ok(_) => UploadOutcome::Success,
            Err(e) if is_body_error(e) => UploadOutcome::SourceFailed,
            Err(_) => UploadOutcome::Error,
        };
        self.metrics.upload(outcome, len, started.elapsed());
        match result {
            Ok(out) => {
                let sha256 = out
                    .checksum_sha256()
                    .and_then(checksum_to_hex)
                    .ok_or_else(|| StorageError::S3 {
                        op: "PutObject",
                        detail: "the server returned no SHA-256 checksum".into(),
                    })?;
                Ok(DirectPut::Stored(StoredObject {
                    bucket: self.bucket.clone(),
                    key: key.as_str().to_owned(),
                    size_bytes: len,
                    sha256,
                    etag: out.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                }))
            }
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("PreconditionFailed") => {
                Ok(DirectPut::AlreadyExists)
            }
            Err(e) if is_body_error(&e) => Err(StorageError::SourceFailed),
            Err(e) => Err(StorageError::s3("PutObject")(e)),
        }
    }

    /// Copies a fully uploaded staging object to its permanent key with its metadata (now
    /// including the SHA-256), then deletes the staging object.
    pub async fn promote(
        &self,
        staging: &Staged,
        key: &ObjectKey,
        size_bytes: u64,
        meta: &StatementMetadata,
    ) -> Result<StoredObject, StorageError> {
        let Some(sha256) = meta.sha256.clone() else {
            return Err(StorageError::S3 {
                op: "CopyObject",
                detail: "promote needs the SHA-256".into(),
            });
        };
        self.write_index_entry(key, meta).await?;
        // Staging keys are built from a validated prefix and a UUID: no encoding needed.
        let source = format!("{}/{}", self.bucket, staging.key.as_str());
        let req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .copy_source(source)
            .metadata_directive(MetadataDirective::Replace)
            .content_type(PDF_CONTENT_TYPE)
            .set_metadata(Some(meta.to_map()));
        let req = with_encryption!(req, &self.encryption);
        self.metrics.s3_request(S3Op::CopyObject);
        let result = req.customize().config_override(self.data_op()).send().await;
        self.health.observe(&result);
        let out = result.map_err(StorageError::s3("CopyObject"))?;
        self.discard(staging).await;
        let etag = out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned();
        Ok(StoredObject {
            bucket: self.bucket.clone(),
            key: key.as_str().to_owned(),
            size_bytes,
            sha256,
            etag,
        })
    }
}

/// What a HEAD of a statement's key tells about the object there.
struct Label {
    metadata: Option<StatementMetadata>,
    /// S3's full-object SHA-256 (a direct PUT), as hex.
    checksum_sha256: Option<String>,
    size: Option<u64>,
}

impl Label {
    /// Ours only with our metadata naming this owner *and* a SHA-256 (in the metadata, or
    /// S3's checksum); another owner's metadata is a conflict; anything less is unlabelled.
    /// `object` gives the rest of the stored object (bucket, key, ETag).
    fn classify(self, owner: &Owner<'_>, object: impl FnOnce() -> StoredObject) -> Existing {
        let Some(meta) = self.metadata else {
            return Existing::Unlabelled;
        };
        if !meta.belongs_to(owner) {
            return Existing::Conflict;
        }
        match (meta.sha256.or(self.checksum_sha256), self.size) {
            (Some(sha256), Some(size_bytes)) => Existing::Ours(StoredObject {
                sha256,
                size_bytes,
                ..object()
            }),
            // s3s-fs saves a PUT's metadata before its checksum: a racing writer's object can
            // be seen in between. Calling it a conflict failed a report whose statement was
            // being stored correctly (the three-replica test, now and then).
            _ => Existing::Unlabelled,
        }
    }
}

/// The upload's body stream failed (the download broke), as opposed to S3 refusing.
fn is_body_error<E, R>(e: &SdkError<E, R>) -> bool
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    matches!(e, SdkError::DispatchFailure(_))
        && std::error::Error::source(e).is_some_and(|s| {
            let text = s.to_string();
            text.contains("body") || text.contains("stream")
        })
}

/// S3 reports checksums as base64; the API and metadata use hex.
pub(super) fn checksum_to_hex(b64: &str) -> Option<String> {
    let raw = aws_smithy_types::base64::decode(b64).ok()?;
    (raw.len() == 32).then(|| hex::encode(raw))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// S3 metadata travels as HTTP headers: keep printable ASCII only.
pub(crate) fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_proves_ownership() {
        let client = ClientId::parse("aa_1").expect("id");
        let version = SourceVersion::from_headers(Some("\"e\""), None, None).expect("v");
        let mut meta = StatementMetadata::new(&client, "HDFC-FIP", "XX1234", None, &version);
        meta.sha256 = Some("a".repeat(64));
        let back = StatementMetadata::from_map(&meta.to_map()).expect("a statement's metadata");
        assert_eq!(back, meta);
        let owner = Owner {
            client_id: &client,
            fip_id: "HDFC-FIP",
            version: &version,
        };
        assert!(back.belongs_to(&owner));
        let other = ClientId::parse("aa_2").expect("id");
        assert!(!back.belongs_to(&Owner {
            client_id: &other,
            ..owner
        }));
        let newer = SourceVersion::from_headers(Some("\"f\""), None, None).expect("v");
        assert!(!back.belongs_to(&Owner {
            client_id: &client,
            fip_id: "HDFC-FIP",
            version: &newer,
        }));
        assert_eq!(StatementMetadata::from_map(&HashMap::new()), None);
    }

    /// A racing writer's object seen between its metadata and its checksum is a write in
    /// progress (look again), not a conflict; another owner's object is a conflict at once.
    #[test]
    fn an_object_is_ours_only_with_our_label_and_a_sha256() {
        let client = ClientId::parse("aa_1").expect("id");
        let version = SourceVersion::from_headers(Some("\"e\""), None, None).expect("v");
        let owner = Owner {
            client_id: &client,
            fip_id: "HDFC-FIP",
            version: &version,
        };
        let ours = StatementMetadata::new(&client, "HDFC-FIP", "XX1234", None, &version);
        let object = || StoredObject {
            bucket: "b".into(),
            key: "k".into(),
            size_bytes: 0,
            sha256: String::new(),
            etag: "t".into(),
        };
        let label = |metadata: Option<StatementMetadata>, checksum: Option<&str>| Label {
            metadata,
            checksum_sha256: checksum.map(str::to_owned),
            size: Some(5),
        };
        let sha = "a".repeat(64);
        assert_eq!(
            label(Some(ours.clone()), Some(&sha)).classify(&owner, object),
            Existing::Ours(StoredObject {
                sha256: sha.clone(),
                size_bytes: 5,
                ..object()
            })
        );
        assert_eq!(
            label(Some(ours.clone()), None).classify(&owner, object),
            Existing::Unlabelled,
            "metadata saved, checksum not yet"
        );
        assert_eq!(
            label(None, None).classify(&owner, object),
            Existing::Unlabelled
        );
        let other = ClientId::parse("aa_2").expect("id");
        let theirs = StatementMetadata::new(&other, "HDFC-FIP", "XX1234", None, &version);
        assert_eq!(
            label(Some(theirs), Some(&sha)).classify(&owner, object),
            Existing::Conflict
        );
    }

    #[test]
    fn checksums_are_read_as_hex() {
        let digest = [7u8; 32];
        let b64 = aws_smithy_types::base64::encode(digest);
        assert_eq!(checksum_to_hex(&b64), Some(hex::encode(digest)));
        assert_eq!(checksum_to_hex("not base64!"), None);
        assert_eq!(checksum_to_hex("AAAA"), None, "not 32 bytes");
    }
}
