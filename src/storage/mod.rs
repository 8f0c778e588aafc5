//! The company's S3 bucket.
//!
//! Writes go to a unique *staging* key first (a streamed single PUT, or a multipart upload for
//! large or unknown sizes) and are then promoted to the permanent key with a server-side
//! `CopyObject` that sets the metadata, including the SHA-256 we only know once the last byte
//! has passed. So the permanent key only ever holds a complete, verified object with full
//! metadata, and a HEAD on it is authoritative. That is what makes repeat calls and several
//! replicas safe without conditional writes (Garage ignores `If-None-Match`), and why a broken
//! stream can never leave a partial statement behind: s3s-fs, for one, renames a PUT into
//! place before checking its checksum.

/// Applies the configured server-side encryption to a PutObject, CreateMultipartUpload or
/// CopyObject builder (three builder types with the same two setters).
macro_rules! with_encryption {
    ($req:expr, $enc:expr) => {
        match $enc {
            None => $req,
            Some(Encryption::S3Managed) => {
                $req.server_side_encryption(ServerSideEncryption::Aes256)
            }
            Some(Encryption::Kms { key_id }) => $req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
        }
    };
}

mod client;
mod health;
pub mod iam;
mod purge;
mod purge_marker;
mod read;
mod records;
mod region;
mod retention;
mod statement;
mod sweep;
mod upload;

use std::{sync::Arc, time::Duration};

use aws_sdk_s3::{
    config::http::HttpResponse,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
};
use tokio::sync::Semaphore;

pub use client::{aws_sdk_config, build_client, data_timeouts, metadata_timeouts};
pub use health::{PROBE_EVERY, PROBE_EVERY_WHILE_DOWN, probe_forever};
pub use purge::{PurgeError, PurgePlan, PurgeReport, Scope};
pub use purge_marker::{PurgeMarker, PurgeWatch};
pub use read::{
    ByteRange, Content, DownloadLink, StatementInfo, StatementPage, attachment, etag_matches,
};
pub use records::Created;
pub use retention::DuePage;
pub use statement::{DirectPut, Existing, Owner, StatementMetadata};
pub use upload::{BodyReceiver, Uploaded};

use crate::{
    config::{Encryption, StorageSettings},
    domain::{ClientId, ObjectKey, Prefix, RetainUntil},
    metrics::{Metrics, S3Op},
};

pub const PDF_CONTENT_TYPE: &str = "application/pdf";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("S3 {op} failed: {detail}")]
    S3 { op: &'static str, detail: String },
    /// S3 did not answer, timed out, shed load (503 SlowDown) or failed (5xx): another
    /// attempt may well work. A streamed PUT cannot be replayed by the SDK (its body is the
    /// download), so the transfer retries it from the link.
    #[error("S3 {op} failed (transient): {detail}")]
    Transient { op: &'static str, detail: String },
    /// The body being uploaded failed (the download broke); the upload was abandoned.
    #[error("the report body failed during upload")]
    SourceFailed,
    /// The transfer's deadline passed while the upload waited (for the body or for buffer
    /// budget); the upload was abandoned.
    #[error("the call's deadline passed during the upload")]
    DeadlineExceeded,
}

impl StorageError {
    fn s3<E>(op: &'static str) -> impl FnOnce(SdkError<E, HttpResponse>) -> Self
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        move |e| {
            let detail = DisplayErrorContext(&e).to_string();
            if is_transient(&e) {
                Self::Transient { op, detail }
            } else {
                Self::S3 { op, detail }
            }
        }
    }

    /// Worth another attempt (see [`Self::Transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

/// The failures S3's own guidance says to retry: no answer, a timeout, a broken response,
/// 5xx, and throttling.
fn is_transient<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            se.raw().status().is_server_error()
                || matches!(
                    se.err().code(),
                    Some("SlowDown" | "RequestTimeout" | "Throttling" | "ThrottlingException")
                )
        }
        _ => false,
    }
}

/// A statement as stored: what callers get back instead of an expiring link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredObject {
    pub bucket: String,
    pub key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub etag: String,
}

pub struct Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: Prefix,
    staging_prefix: Prefix,
    purge_marker_prefix: Prefix,
    /// Where the expiry index of `retain_until` lives.
    retention_index: Prefix,
    /// `STATEMENT_RETENTION_DAYS`.
    default_retention_days: Option<u64>,
    multipart_threshold: u64,
    part_size: usize,
    parts_in_flight: usize,
    encryption: Option<Encryption>,
    /// The server takes streaming checksum trailers (not Garage over plain HTTP), so small
    /// reports go in one direct PUT with S3's SHA-256 checksum.
    trailing_checksums: bool,
    metrics: Metrics,
    /// Process-wide budget for multipart part buffers, in bytes (`UPLOAD_BUFFER_BUDGET_BYTES`);
    /// see upload.rs and docs/adr/0004-upload-buffer-budget.md.
    buffer_budget: Arc<Semaphore>,
    /// Bound on a data operation (see [`data_timeouts`]).
    data_timeout: Duration,
    health: health::S3Health,
}

impl Storage {
    pub fn new(
        client: aws_sdk_s3::Client,
        settings: &StorageSettings,
        trailing_checksums: bool,
        metrics: Metrics,
    ) -> Self {
        Self {
            client,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            staging_prefix: settings.staging_prefix.clone(),
            purge_marker_prefix: settings.purge_marker_prefix.clone(),
            retention_index: settings.retention_index_prefix.clone(),
            default_retention_days: settings.default_retention_days,
            multipart_threshold: settings.multipart_threshold,
            part_size: settings.part_size,
            parts_in_flight: settings.parts_in_flight,
            encryption: settings.encryption.clone(),
            buffer_budget: Arc::new(Semaphore::new(
                settings.upload_buffer_budget.min(Semaphore::MAX_PERMITS),
            )),
            data_timeout: settings.data_timeout,
            health: health::S3Health::new(metrics.clone()),
            trailing_checksums,
            metrics,
        }
    }

    /// A per-request override giving a data operation the data timeouts.
    fn data_op(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().timeout_config(data_timeouts(self.data_timeout))
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// The end of life of a statement stored at `now` without one (`STATEMENT_RETENTION_DAYS`).
    pub fn default_retain_until(&self, now: std::time::SystemTime) -> Option<RetainUntil> {
        self.default_retention_days
            .map(|days| RetainUntil::days_after(now, days))
    }

    /// Readiness: can we reach the bucket with our credentials?
    pub async fn check_bucket(&self) -> Result<(), StorageError> {
        self.metrics.s3_request(S3Op::HeadBucket);
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(StorageError::s3("HeadBucket"))
    }

    /// A fresh, unique key in the client's staging folder, `{STAGING_PREFIX}{client_id}/{uuid}.pdf`:
    /// a purge of the client clears that folder too, so no leftover of its reports survives.
    pub fn new_staging_key(&self, client: &ClientId) -> ObjectKey {
        ObjectKey::from_trusted(format!(
            "{}{}/{}.pdf",
            self.staging_prefix.as_str(),
            client.as_str(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Removes a staging object for good. With its version id (what the PUT or
    /// CompleteMultipartUpload answered on a versioned bucket) the version itself is deleted;
    /// a delete without one would only hide the bytes behind a delete marker. Without one
    /// (a server without versioning, or a write that failed before answering) a plain delete
    /// is enough, unless S3 answers that it made a marker: the bucket is versioned after all,
    /// so every version of the key and the marker are removed. Best effort: a leftover is
    /// never returned to anyone, a purge of the client removes it, and the staging prefix's
    /// lifecycle rules (noncurrent versions and delete markers included) are the last net.
    pub async fn discard(&self, staged: &Staged) {
        self.metrics.s3_request(S3Op::DeleteObject);
        let result = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(staged.key.as_str())
            .set_version_id(staged.version_id.clone())
            .send()
            .await;
        match result {
            Ok(out) if staged.version_id.is_none() && out.delete_marker() == Some(true) => {
                if let Err(e) = self.delete_every_version(staged.key.as_str()).await {
                    tracing::warn!(key = %staged.key, error = %e, "could not remove the versions of a staging object");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(key = %staged.key, error = %DisplayErrorContext(&e), "could not delete staging object");
            }
        }
    }
}

/// A write to a staging key: the key, and the version it made on a versioned bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub key: ObjectKey,
    pub version_id: Option<String>,
}

impl Staged {
    /// A staging key whose write did not answer (failed or abandoned): what it may have
    /// left has no known version.
    pub fn unknown_version(key: ObjectKey) -> Self {
        Self {
            key,
            version_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The SSE headers are the gateway's responsibility; s3s-fs and Garage accept but do not
    //! report them, so these tests look at the requests the SDK would send (the writes
    //! themselves are exercised against real servers in the integration suite).

    use std::sync::{Arc, Mutex};

    use aws_sdk_s3::config::{
        BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
        interceptors::BeforeTransmitInterceptorContextRef,
    };
    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::*;
    use crate::domain::{ClientId, SourceLocation, SourceVersion};

    /// The first request the SDK was about to send, signed and complete: its URI and headers.
    #[derive(Debug)]
    struct Captured {
        uri: String,
        headers: Vec<(String, String)>,
    }

    impl Captured {
        fn uri(&self) -> &str {
            &self.uri
        }
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Records the first request just before it would go on the wire, and fails every
    /// attempt there, so nothing is sent and the operation's first request is the one seen.
    /// (An interceptor rather than a test HTTP client: it needs no test-only features of the
    /// SDK's crates, which would make the tests compile the SDK a second time.)
    #[derive(Debug, Clone, Default)]
    struct Capture(Arc<Mutex<Option<Captured>>>);

    impl Capture {
        fn expect_request(&self) -> Captured {
            self.0
                .lock()
                .expect("capture lock")
                .take()
                .expect("a request was made")
        }
    }

    impl Intercept for Capture {
        fn name(&self) -> &'static str {
            "Capture"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _components: &RuntimeComponents,
            _cfg: &mut ConfigBag,
        ) -> Result<(), aws_sdk_s3::error::BoxError> {
            let req = context.request();
            let mut first = self.0.lock().expect("capture lock");
            if first.is_none() {
                *first = Some(Captured {
                    uri: req.uri().to_owned(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.to_owned(), v.to_owned()))
                        .collect(),
                });
            }
            Err("captured, not sent".into())
        }
    }

    fn storage(capture: Capture) -> Storage {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .interceptor(capture)
            .build();
        let settings = StorageSettings {
            bucket: "statements".into(),
            prefix: Prefix::parse("statements/").expect("prefix"),
            staging_prefix: Prefix::parse("_staging/").expect("prefix"),
            purge_marker_prefix: Prefix::parse("_purges/").expect("prefix"),
            multipart_threshold: 1 << 20,
            part_size: 5 << 20,
            parts_in_flight: 2,
            upload_buffer_budget: 96 << 20,
            data_timeout: std::time::Duration::from_secs(60),
            staging_sweep_age: std::time::Duration::from_secs(3600),
            required_region: None,
            retention_index_prefix: Prefix::parse("_retention/").expect("prefix"),
            jobs_prefix: Prefix::parse("jobs/").expect("prefix"),
            default_retention_days: None,
            encryption: Some(Encryption::Kms {
                key_id: Some("alias/statements".into()),
            }),
        };
        Storage::new(
            aws_sdk_s3::Client::from_conf(conf),
            &settings,
            true,
            Metrics::new(),
        )
    }

    fn staging_client() -> ClientId {
        ClientId::parse("aa_1").expect("id")
    }

    fn body() -> BodyReceiver {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Ok(Bytes::from_static(b"%PDF-1.7 test")));
        rx
    }

    fn assert_sse(req: &Captured, op: &str) {
        assert_eq!(
            req.header("x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{op}"
        );
        assert_eq!(
            req.header("x-amz-server-side-encryption-aws-kms-key-id"),
            Some("alias/statements"),
            "{op}"
        );
    }

    /// A real S3 server (s3s-fs over HTTP, with the sandbox's bucket) and a client of it.
    #[cfg(feature = "sandbox")]
    async fn s3s_fs() -> (
        crate::sandbox::S3Sandbox,
        aws_sdk_s3::Client,
        tempfile::TempDir,
    ) {
        use crate::{
            config::{S3Connection, S3Credentials},
            sandbox::{self, S3Sandbox},
        };

        let dir = tempfile::tempdir().expect("tempdir");
        let server = S3Sandbox::start(dir.path()).expect("s3");
        sandbox::create_bucket(dir.path()).expect("bucket");
        let client = build_client(&S3Connection {
            endpoint_url: Some(server.endpoint()),
            credentials: Some(S3Credentials {
                access_key_id: sandbox::s3::ACCESS_KEY.into(),
                secret_access_key: sandbox::s3::SECRET_KEY.to_owned().into(),
                session_token: None,
            }),
            region: Some("us-east-1".into()),
            force_path_style: true,
            checksum_when_required: false,
            attempt_timeout: std::time::Duration::from_secs(5),
        })
        .await
        .expect("client");
        (server, client, dir)
    }

    /// The object at `key` of the sandbox bucket, as S3 serves it.
    #[cfg(feature = "sandbox")]
    async fn read_back(client: &aws_sdk_s3::Client, key: &ObjectKey) -> Bytes {
        client
            .get_object()
            .bucket(crate::sandbox::BUCKET)
            .key(key.as_str())
            .send()
            .await
            .expect("get")
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes()
    }

    /// Multipart against a real S3 server (s3s-fs over HTTP): parts rotate with two in
    /// flight and a short last part, and the object is byte for byte what was sent.
    #[cfg(feature = "sandbox")]
    #[actix_web::test]
    async fn multipart_parts_rotate_in_order_and_store_the_exact_bytes() {
        use sha2::{Digest, Sha256};

        use crate::sandbox;

        let (server, client, _dir) = s3s_fs().await;
        let settings = StorageSettings {
            bucket: sandbox::BUCKET.into(),
            prefix: Prefix::parse("statements/").expect("prefix"),
            staging_prefix: Prefix::parse("_staging/").expect("prefix"),
            purge_marker_prefix: Prefix::parse("_purges/").expect("prefix"),
            multipart_threshold: 0,
            part_size: 5 << 20,
            parts_in_flight: 2,
            upload_buffer_budget: 96 << 20,
            data_timeout: std::time::Duration::from_secs(60),
            staging_sweep_age: std::time::Duration::from_secs(3600),
            required_region: None,
            retention_index_prefix: Prefix::parse("_retention/").expect("prefix"),
            jobs_prefix: Prefix::parse("jobs/").expect("prefix"),
            default_retention_days: None,
            encryption: None,
        };
        let storage = Storage::new(client.clone(), &settings, true, Metrics::new());
        let data: Vec<u8> = (0..(16 << 20) + 12_345)
            .map(|i: u32| (i % 253) as u8)
            .collect();
        let key = storage.new_staging_key(&ClientId::parse("aa_1").expect("id"));
        let (tx, rx) = mpsc::channel(8);
        let feed = async {
            for chunk in data.chunks(60_000) {
                tx.send(Ok(Bytes::copy_from_slice(chunk)))
                    .await
                    .expect("send");
            }
            drop(tx);
        };
        let (uploaded, ()) = tokio::join!(storage.upload(&key, rx, None), feed);
        assert_eq!(uploaded.expect("upload").size, data.len() as u64);
        let stored = read_back(&client, &key).await;
        assert_eq!(stored.len(), data.len());
        assert_eq!(Sha256::digest(&stored), Sha256::digest(&data));
        assert_eq!(server.open_multipart_uploads(), 0);
    }

    /// The buffer budget is back-pressure, never a failure and never a deadlock: with a
    /// budget of exactly one part, three concurrent multipart uploads (each wanting three
    /// buffers) all complete, byte for byte, and hand the whole budget back.
    #[cfg(feature = "sandbox")]
    #[actix_web::test]
    async fn uploads_share_a_budget_of_one_part_without_failing_or_deadlocking() {
        use sha2::{Digest, Sha256};

        use crate::sandbox;

        let (server, client, _dir) = s3s_fs().await;
        let part = 5 << 20;
        let settings = StorageSettings {
            bucket: sandbox::BUCKET.into(),
            prefix: Prefix::parse("statements/").expect("prefix"),
            staging_prefix: Prefix::parse("_staging/").expect("prefix"),
            purge_marker_prefix: Prefix::parse("_purges/").expect("prefix"),
            multipart_threshold: 0,
            part_size: part,
            parts_in_flight: 2,
            upload_buffer_budget: part,
            data_timeout: std::time::Duration::from_secs(60),
            staging_sweep_age: std::time::Duration::from_secs(3600),
            required_region: None,
            retention_index_prefix: Prefix::parse("_retention/").expect("prefix"),
            jobs_prefix: Prefix::parse("jobs/").expect("prefix"),
            default_retention_days: None,
            encryption: None,
        };
        let storage = Storage::new(client.clone(), &settings, true, Metrics::new());
        let upload = |seed: u32| {
            let storage = &storage;
            async move {
                let data: Vec<u8> = (0..(12 << 20) + 777)
                    .map(|i: u32| (i.wrapping_mul(seed) % 251) as u8)
                    .collect();
                let key = storage.new_staging_key(&ClientId::parse("aa_1").expect("id"));
                let (tx, rx) = mpsc::channel(8);
                let feed = async {
                    for chunk in data.chunks(64 << 10) {
                        tx.send(Ok(Bytes::copy_from_slice(chunk)))
                            .await
                            .expect("send");
                    }
                    drop(tx);
                };
                let (uploaded, ()) = tokio::join!(storage.upload(&key, rx, None), feed);
                (key, uploaded, hex::encode(Sha256::digest(&data)))
            }
        };
        let results = futures_util::future::join_all([upload(3), upload(5), upload(7)]).await;
        for (key, uploaded, sha) in results {
            assert_eq!(uploaded.expect("upload").size, (12 << 20) + 777);
            let stored = read_back(&client, &key).await;
            assert_eq!(hex::encode(Sha256::digest(&stored)), sha);
        }
        assert_eq!(storage.buffer_budget.available_permits(), part);
        assert_eq!(server.open_multipart_uploads(), 0);
    }

    #[tokio::test]
    async fn every_write_asks_for_server_side_encryption() {
        let rx = Capture::default();
        let s = storage(rx.clone());
        let _ = s
            .upload(&s.new_staging_key(&staging_client()), body(), Some(13))
            .await;
        assert_sse(&rx.expect_request(), "PutObject");

        let rx = Capture::default();
        let s = storage(rx.clone());
        let client = ClientId::parse("aa_1").expect("id");
        let version = SourceVersion::from_headers(Some("\"e\""), None, None).expect("v");
        let meta = StatementMetadata::new(&client, "HDFC-FIP", "XX1", None, &version);
        let key = ObjectKey::for_source(
            s.prefix(),
            &client,
            "HDFC-FIP",
            &SourceLocation {
                host: "h".into(),
                path: "/x.pdf".into(),
            },
            &version,
        );
        let _ = s.put_direct(&key, body(), 13, &meta).await;
        let req = rx.expect_request();
        assert_sse(&req, "direct PutObject");
        assert_eq!(req.header("if-none-match"), Some("*"), "never overwrite");
        assert_eq!(req.header("x-amz-meta-source-version"), Some("etag:\"e\""));
        assert_eq!(req.header("x-amz-meta-account-number"), Some("XX1"));
        assert_eq!(
            req.header("x-amz-trailer"),
            Some("x-amz-checksum-sha256"),
            "S3 verifies the SHA-256 end to end"
        );

        let rx = Capture::default();
        let s = storage(rx.clone());
        let _ = s
            .upload(&s.new_staging_key(&staging_client()), body(), None)
            .await;
        let req = rx.expect_request();
        assert!(
            req.uri().contains("uploads"),
            "unknown size starts a multipart upload: {}",
            req.uri()
        );
        assert_sse(&req, "CreateMultipartUpload");

        // The copy's request is the first one (nothing is sent, so there is no retry or
        // cleanup behind it).
        let rx = Capture::default();
        let s = storage(rx.clone());
        let client = ClientId::parse("aa_1").expect("id");
        let version = SourceVersion::from_sha256(&"0".repeat(64));
        let mut meta = StatementMetadata::new(&client, "HDFC-FIP", "XX1", None, &version);
        meta.sha256 = Some("0".repeat(64));
        let source = SourceLocation {
            host: "h".into(),
            path: "/x.pdf".into(),
        };
        let key = ObjectKey::for_source(s.prefix(), &client, "HDFC-FIP", &source, &version);
        let _ = s
            .promote(
                &Staged::unknown_version(s.new_staging_key(&client)),
                &key,
                13,
                &meta,
            )
            .await;
        let req = rx.expect_request();
        assert!(
            req.header("x-amz-copy-source").is_some(),
            "promote is a CopyObject"
        );
        assert_sse(&req, "CopyObject");
        assert_eq!(req.header("x-amz-meta-client-id"), Some("aa_1"));
        assert_eq!(req.header("x-amz-metadata-directive"), Some("REPLACE"));
    }
}
