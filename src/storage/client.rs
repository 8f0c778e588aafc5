use std::time::Duration;

use aws_config::{
    BehaviorVersion, Region, stalled_stream_protection::StalledStreamProtectionConfig,
};
use aws_sdk_s3::config::{Credentials, RequestChecksumCalculation, timeout::TimeoutConfig};
use secrecy::ExposeSecret;

use crate::config::{ConfigError, S3Connection};

/// Builds the S3 client from the standard AWS chain (env, IRSA web identity, profile, IMDS),
/// with whatever the settings pin explicitly (endpoint, region, static credentials).
pub async fn build_client(conn: &S3Connection) -> Result<aws_sdk_s3::Client, ConfigError> {
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
    if let Some(endpoint) = &conn.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(ConfigError::Missing { var: "AWS_REGION" });
    }
    let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(conn.force_path_style)
        // Our own read timeout on the download guards against stalls; the SDK's stalled-stream
        // check would misread a slow upstream as a stalled upload.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .build(),
        );
    if conn.checksum_when_required {
        builder = builder.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    }
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}
