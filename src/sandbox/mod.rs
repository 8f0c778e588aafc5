//! Everything `--sandbox` needs to run with no credentials and no network, and what the
//! integration tests run against: a Finpass simulator that implements the seed contract
//! (with deterministic fault injection) and a real S3 server (s3s-fs) over HTTP, so the
//! production aws-sdk-s3 path (SigV4, checksums, multipart) is what runs.
//!
//! Compiled only with the `sandbox` cargo feature (on by default, off in the release image).

pub mod finpass;
pub mod jwt;
pub mod pdf;
pub mod receiver;
pub mod s3;

use std::{collections::HashMap, net::SocketAddr, path::Path};

pub use finpass::{ApiFault, Body, FinpassSandbox, LinkFault, ReportSpec, SandboxStatus};
pub use receiver::WebhookReceiver;
pub use s3::S3Sandbox;

use crate::config::{ConfigError, Settings};

pub const BUCKET: &str = "statements";

/// Settings pointing the gateway at the Finpass simulator. `extra` overrides or adds
/// variables, exactly as the environment would; the S3 connection is one of them (see
/// [`S3Sandbox::env`]).
pub fn settings(
    finpass: &FinpassSandbox,
    listen: SocketAddr,
    extra: &[(&str, &str)],
) -> Result<Settings, ConfigError> {
    let mut env: HashMap<String, String> = HashMap::from([
        ("LISTEN_ADDR".into(), listen.to_string()),
        ("FINPASS_BASE_URL".into(), finpass.base_url()),
        ("FINPASS_API_KEY".into(), finpass::API_KEY.into()),
        ("FINPASS_API_SECRET".into(), finpass::API_SECRET.into()),
        ("STATEMENTS_BUCKET".into(), BUCKET.into()),
        ("S3_FORCE_PATH_STYLE".into(), "true".into()),
        // The simulator's links point at itself: list that host:port literally.
        (
            "REPORT_LINK_ALLOWED_HOSTS".into(),
            format!("127.0.0.1:{}", finpass.port()),
        ),
        ("REPORT_LINK_ALLOW_HTTP".into(), "true".into()),
        // ... and its anonymous caller may also try the delete routes.
        ("DELETE_CALLERS".into(), "anonymous".into()),
    ]);
    // The sandbox holds no real data: without authentication settings it runs with
    // authentication disabled (startup logs a loud warning), since AUTH_DISABLED=true next to
    // them is refused.
    let configures_auth = extra.iter().any(|(k, _)| {
        [
            "CALLER_TOKENS",
            "CALLER_TOKENS_FILE",
            "JWT_JWKS_URL",
            "JWT_PUBLIC_KEY_FILE",
        ]
        .contains(k)
    });
    if !configures_auth {
        env.insert("AUTH_DISABLED".into(), "true".into());
    }
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::from_lookup(|k| env.get(k).cloned())
}

/// Creates the bucket in a fresh s3s-fs root (a bucket is a directory there).
pub fn create_bucket(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join(BUCKET))
}

impl S3Sandbox {
    /// The variables that point the gateway at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_S3", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }
}
