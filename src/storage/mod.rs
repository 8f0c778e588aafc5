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
mod upload;

use std::collections::HashMap;

use aws_sdk_s3::{
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{MetadataDirective, ServerSideEncryption},
};

pub use client::build_client;
pub use upload::BodyReceiver;

use crate::{
    config::{Encryption, StorageSettings},
    domain::{ClientId, ObjectKey, Prefix, RequestId},
    metrics::Metrics,
};

pub const PDF_CONTENT_TYPE: &str = "application/pdf";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("S3 {op} failed: {detail}")]
    S3 { op: &'static str, detail: String },
    /// The body being uploaded failed (the download broke); the upload was abandoned.
    #[error("the report body failed during upload")]
    SourceFailed,
}

impl StorageError {
    fn s3<E, R>(op: &'static str) -> impl FnOnce(SdkError<E, R>) -> Self
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
        R: std::fmt::Debug,
    {
        move |e| Self::S3 {
            op,
            detail: DisplayErrorContext(&e).to_string(),
        }
    }
}

/// A statement as stored: what callers get back instead of an expiring link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub bucket: String,
    pub key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub etag: String,
}

/// Where a statement came from; stored as S3 user metadata.
pub struct Provenance<'a> {
    pub client_id: &'a ClientId,
    pub request_id: Option<&'a RequestId>,
    pub fip_id: &'a str,
}

pub struct Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: Prefix,
    staging_prefix: Prefix,
    multipart_threshold: u64,
    part_size: usize,
    parts_in_flight: usize,
    encryption: Option<Encryption>,
    metrics: Metrics,
}

impl Storage {
    pub fn new(client: aws_sdk_s3::Client, settings: &StorageSettings, metrics: Metrics) -> Self {
        Self {
            client,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            staging_prefix: settings.staging_prefix.clone(),
            multipart_threshold: settings.multipart_threshold,
            part_size: settings.part_size,
            parts_in_flight: settings.parts_in_flight,
            encryption: settings.encryption.clone(),
            metrics,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// Readiness: can we reach the bucket with our credentials?
    pub async fn check_bucket(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(StorageError::s3("HeadBucket"))
    }

    /// Returns the stored statement at `key`, if a complete one is there.
    pub async fn head(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StorageError> {
        let out = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => return Ok(None),
            Err(e) => return Err(StorageError::s3("HeadObject")(e)),
        };
        let sha256 = out
            .metadata()
            .and_then(|m| m.get("sha256"))
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
        // Only our promote step writes permanent keys, always with a SHA-256. Anything else
        // there is not ours to trust: treat it as absent and overwrite it.
        let (Some(sha256), Some(size)) = (sha256, out.content_length()) else {
            return Ok(None);
        };
        Ok(Some(StoredObject {
            bucket: self.bucket.clone(),
            key: key.as_str().to_owned(),
            size_bytes: u64::try_from(size).unwrap_or_default(),
            sha256: sha256.clone(),
            etag: out.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
        }))
    }

    /// A fresh, unique key under the staging prefix.
    pub fn new_staging_key(&self) -> ObjectKey {
        ObjectKey::from_trusted(format!(
            "{}{}.pdf",
            self.staging_prefix.as_str(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Moves a fully uploaded staging object to its permanent key, setting its metadata.
    pub async fn promote(
        &self,
        staging: &ObjectKey,
        key: &ObjectKey,
        size_bytes: u64,
        sha256: &str,
        provenance: &Provenance<'_>,
    ) -> Result<StoredObject, StorageError> {
        let fetched_at = aws_smithy_types::DateTime::from(std::time::SystemTime::now())
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default();
        let mut metadata = HashMap::from([
            ("sha256".to_owned(), sha256.to_owned()),
            ("client-id".to_owned(), provenance.client_id.to_string()),
            ("fip-id".to_owned(), header_safe(provenance.fip_id)),
            ("fetched-at".to_owned(), fetched_at),
        ]);
        if let Some(r) = provenance.request_id {
            metadata.insert("request-id".to_owned(), r.to_string());
        }
        // Staging keys are built from a validated prefix and a UUID: no encoding needed.
        let source = format!("{}/{}", self.bucket, staging.as_str());
        let req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .copy_source(source)
            .metadata_directive(MetadataDirective::Replace)
            .content_type(PDF_CONTENT_TYPE)
            .set_metadata(Some(metadata));
        let req = with_encryption!(req, &self.encryption);
        let out = req.send().await.map_err(StorageError::s3("CopyObject"))?;
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
            sha256: sha256.to_owned(),
            etag,
        })
    }

    /// Best-effort removal of a staging object. A leftover is harmless (it is never returned
    /// to anyone) and is removed by the staging prefix's lifecycle rule.
    pub async fn discard(&self, staging: &ObjectKey) {
        if let Err(e) = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(staging.as_str())
            .send()
            .await
        {
            tracing::warn!(key = %staging, error = %DisplayErrorContext(&e), "could not delete staging object");
        }
    }
}

/// S3 metadata travels as HTTP headers: keep printable ASCII only.
fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    //! The SSE headers are the gateway's responsibility; s3s-fs and Garage accept but do not
    //! report them, so these tests look at the requests the SDK would send (the writes
    //! themselves are exercised against real servers in the integration suite).

    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::test_util::{CaptureRequestHandler, capture_request};
    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::*;

    fn storage(http: CaptureRequestHandler) -> Storage {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .http_client(http)
            .build();
        let settings = StorageSettings {
            bucket: "statements".into(),
            prefix: Prefix::parse("statements/").expect("prefix"),
            staging_prefix: Prefix::parse("_staging/").expect("prefix"),
            multipart_threshold: 1 << 20,
            part_size: 5 << 20,
            parts_in_flight: 2,
            encryption: Some(Encryption::Kms {
                key_id: Some("alias/statements".into()),
            }),
        };
        Storage::new(
            aws_sdk_s3::Client::from_conf(conf),
            &settings,
            Metrics::new(),
        )
    }

    fn body() -> BodyReceiver {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Ok(Bytes::from_static(b"%PDF-1.7 test")));
        rx
    }

    fn assert_sse(req: &aws_sdk_s3::config::http::HttpRequest, op: &str) {
        assert_eq!(
            req.headers().get("x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{op}"
        );
        assert_eq!(
            req.headers()
                .get("x-amz-server-side-encryption-aws-kms-key-id"),
            Some("alias/statements"),
            "{op}"
        );
    }

    /// Multipart against a real S3 server (s3s-fs over HTTP): parts rotate with two in
    /// flight and a short last part, and the object is byte for byte what was sent.
    #[cfg(feature = "sandbox")]
    #[actix_web::test]
    async fn multipart_parts_rotate_in_order_and_store_the_exact_bytes() {
        use sha2::{Digest, Sha256};

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
        })
        .await
        .expect("client");
        let settings = StorageSettings {
            bucket: sandbox::BUCKET.into(),
            prefix: Prefix::parse("statements/").expect("prefix"),
            staging_prefix: Prefix::parse("_staging/").expect("prefix"),
            multipart_threshold: 0,
            part_size: 5 << 20,
            parts_in_flight: 2,
            encryption: None,
        };
        let storage = Storage::new(client.clone(), &settings, Metrics::new());
        let data: Vec<u8> = (0..(16 << 20) + 12_345)
            .map(|i: u32| (i % 253) as u8)
            .collect();
        let key = storage.new_staging_key();
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
        assert_eq!(uploaded.expect("upload"), data.len() as u64);
        let out = client
            .get_object()
            .bucket(sandbox::BUCKET)
            .key(key.as_str())
            .send()
            .await
            .expect("get");
        let stored = out.body.collect().await.expect("body").into_bytes();
        assert_eq!(stored.len(), data.len());
        assert_eq!(Sha256::digest(&stored), Sha256::digest(&data));
        assert_eq!(server.open_multipart_uploads(), 0);
    }

    #[tokio::test]
    async fn every_write_asks_for_server_side_encryption() {
        let (http, rx) = capture_request(None);
        let s = storage(http);
        let _ = s.upload(&s.new_staging_key(), body(), Some(13)).await;
        assert_sse(&rx.expect_request(), "PutObject");

        let (http, rx) = capture_request(None);
        let s = storage(http);
        let _ = s.upload(&s.new_staging_key(), body(), None).await;
        let req = rx.expect_request();
        assert!(
            req.uri().contains("uploads"),
            "unknown size starts a multipart upload: {}",
            req.uri()
        );
        assert_sse(&req, "CreateMultipartUpload");

        // A non-retryable refusal, so the copy is the only request (no retry, no cleanup).
        let denied = http::Response::builder()
            .status(403)
            .body(aws_smithy_types::body::SdkBody::from(
                "<Error><Code>AccessDenied</Code></Error>",
            ))
            .expect("response");
        let (http, rx) = capture_request(Some(denied));
        let s = storage(http);
        let client = ClientId::parse("aa_1").expect("id");
        let provenance = Provenance {
            client_id: &client,
            request_id: None,
            fip_id: "HDFC-FIP",
        };
        let key = ObjectKey::for_report(s.prefix(), &client, "/x.pdf");
        let _ = s
            .promote(&s.new_staging_key(), &key, 13, &"0".repeat(64), &provenance)
            .await;
        let req = rx.expect_request();
        assert!(
            req.headers().get("x-amz-copy-source").is_some(),
            "promote is a CopyObject"
        );
        assert_sse(&req, "CopyObject");
        assert_eq!(req.headers().get("x-amz-meta-client-id"), Some("aa_1"));
        assert_eq!(
            req.headers().get("x-amz-metadata-directive"),
            Some("REPLACE")
        );
    }
}
