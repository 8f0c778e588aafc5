use std::time::Duration;

use aws_config::{
    BehaviorVersion, Region, stalled_stream_protection::StalledStreamProtectionConfig,
};
use aws_sdk_s3::config::{Credentials, RequestChecksumCalculation, timeout::TimeoutConfig};
use secrecy::ExposeSecret;

use crate::config::{ConfigError, S3Connection};

/// Connecting to S3 (or an S3-compatible server) takes milliseconds when it works.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt when `S3_TIMEOUT_MS` is not given.
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The timeouts of metadata operations (HEAD, HeadBucket, CreateMultipartUpload, Abort,
/// Delete): a connection that is accepted and never answered (a half-open connection, a
/// black-holed route) fails one attempt at `attempt`, and the operation, retries included,
/// at twice that. Data operations override both with [`data_timeouts`].
pub fn metadata_timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt.saturating_mul(2))
        .build()
}

/// The timeouts of data operations: a streamed PUT lasts as long as its download, a part or a
/// copy as long as its size needs, so no fixed metadata-sized bound fits. They get the call
/// deadline instead (`CALL_DEADLINE_MS`): the transfer itself gives up at the deadline (the
/// body fails, which ends a streamed PUT), and this bounds what runs after the last byte (a
/// copy, a completion) to one more deadline at worst.
pub fn data_timeouts(bound: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(bound)
        .operation_timeout(bound)
        .build()
}

/// The AWS configuration every client of the gateway starts from: the standard AWS chain
/// (env, IRSA web identity, profile, IMDS) with whatever the settings pin explicitly (region,
/// static credentials). The S3 endpoint is not in it: S3 and SQS have endpoints of their own.
pub async fn aws_sdk_config(conn: &S3Connection) -> Result<aws_config::SdkConfig, ConfigError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &conn.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(c) = &conn.credentials {
        loader = loader.credentials_provider(Credentials::new(
            &c.access_key_id,
            c.secret_access_key.expose_secret(),
            c.session_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            None,
            "settings",
        ));
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(ConfigError::Missing { var: "AWS_REGION" });
    }
    Ok(sdk)
}

/// Builds the S3 client from [`aws_sdk_config`] and the S3 endpoint, if one is set.
pub async fn build_client(conn: &S3Connection) -> Result<aws_sdk_s3::Client, ConfigError> {
    let sdk = aws_sdk_config(conn).await?;
    let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(conn.force_path_style)
        // Our own read timeout on the download guards against stalls; the SDK's stalled-stream
        // check would misread a slow upstream as a stalled upload.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(metadata_timeouts(if conn.attempt_timeout.is_zero() {
            DEFAULT_ATTEMPT_TIMEOUT
        } else {
            conn.attempt_timeout
        }));
    if let Some(endpoint) = &conn.endpoint_url {
        builder = builder.endpoint_url(endpoint);
    }
    if conn.checksum_when_required {
        builder = builder.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    }
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}
