use std::time::Duration;

use aws_config::{
    BehaviorVersion, Region, stalled_stream_protection::StalledStreamProtectionConfig,
};
use aws_sdk_s3::config::{Credentials, RequestChecksumCalculation, timeout::TimeoutConfig};

/// Connection settings that do not come from the standard AWS chain: used by the sandbox and
/// by tests to point at a local S3 server without touching the process environment.
#[derive(Debug, Clone, Default)]
pub struct S3Override {
    pub endpoint_url: Option<String>,
    pub credentials: Option<(String, String)>,
    pub region: Option<String>,
    /// Only send checksums when an operation requires them (Garage over plain HTTP).
    pub checksum_when_required: bool,
}

/// Builds the S3 client from the standard AWS chain (env, IRSA web identity, profile, IMDS),
/// then applies any override.
pub async fn build_client(
    force_path_style: bool,
    ov: &S3Override,
) -> Result<aws_sdk_s3::Client, crate::config::ConfigError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &ov.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some((access_key, secret_key)) = &ov.credentials {
        loader = loader.credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "override",
        ));
    }
    if let Some(endpoint) = &ov.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(crate::config::ConfigError::Missing { var: "AWS_REGION" });
    }
    let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(force_path_style)
        // Our own read timeout on the download guards against stalls; the SDK's stalled-stream
        // check would misread a slow upstream as a stalled upload.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .build(),
        );
    if ov.checksum_when_required {
        builder = builder.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    }
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}
