//! The production sink: one PutObject per batch, never over an existing object.

use aws_sdk_s3::{error::DisplayErrorContext, primitives::ByteStream, types::ServerSideEncryption};

use super::AuditSink;
use crate::{
    config::Encryption,
    metrics::{Metrics, S3Op},
};

pub struct S3Sink {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    /// The statements' server-side encryption setting applies to the audit trail too.
    pub encryption: Option<Encryption>,
    /// Its PUTs count in `s3_requests_total` with the statements' requests.
    pub metrics: Metrics,
}

impl AuditSink for S3Sink {
    async fn write(&self, key: String, body: Vec<u8>) -> Result<(), String> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            // Append-only: an object already there (a replay, a forged write, a uuid that
            // collided) is never replaced. AWS and s3s-fs enforce it; Garage ignores it.
            .if_none_match("*")
            .content_type("application/x-ndjson")
            .body(ByteStream::from(body));
        let req = match &self.encryption {
            None => req,
            Some(Encryption::S3Managed) => req.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Encryption::Kms { key_id }) => req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
        };
        self.metrics.s3_request(S3Op::PutObject);
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| format!("PutObject {key}: {}", DisplayErrorContext(&e)))
    }
}
