//! `spawn_app`: the gateway on an ephemeral port, wired to a real S3 server (s3s-fs over HTTP
//! with SigV4 and checksums) and the Finpass simulator over real HTTP. Tests only use the
//! public HTTP API, then look in S3 directly to check the bytes.

#![allow(dead_code)]

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use actix_web::dev::ServerHandle;
use aws_sdk_s3::primitives::ByteStream;
use finpass_gateway::{
    finpass::RetryPolicy,
    sandbox::{self, FinpassSandbox, S3Sandbox},
    startup::Application,
    storage::{self, S3Override},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Everything any test hands the gateway that must never be printed.
pub const SECRETS: &[&str] = &[
    sandbox::finpass::API_KEY,
    sandbox::finpass::API_SECRET,
    sandbox::s3::SECRET_KEY,
    "X-Amz-Signature",
    "X-Amz-Credential",
];

/// All log output of this test process (gateway, SDK, actix, awc) at debug level or finer.
pub fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,finpass_gateway=trace,awc=trace,actix_http=trace,h2=info,hyper=info,hyper_util=info,rustls=info,s3s=info,s3s_fs=info",
        );
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || CaptureWriter(Arc::clone(&writer)))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Secrets made up by individual tests (caller tokens, JWTs): checked like [`SECRETS`].
pub fn register_secret(secret: &str) {
    static_secrets()
        .lock()
        .expect("secret registry")
        .push(secret.to_owned());
}

fn static_secrets() -> &'static Mutex<Vec<String>> {
    static REGISTERED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    REGISTERED.get_or_init(Mutex::default)
}

/// Fails if any secret appears in the logs captured so far.
pub fn assert_logs_clean() {
    let logs = captured_logs().lock().expect("log buffer").clone();
    let logs = String::from_utf8_lossy(&logs);
    for secret in SECRETS {
        assert!(!logs.contains(secret), "logs contain a secret ({secret})");
    }
    for secret in static_secrets().lock().expect("secret registry").iter() {
        assert!(
            !logs.contains(secret.as_str()),
            "logs contain a test secret"
        );
    }
}

/// Multipart from 1 MiB with 5 MiB parts (the S3 minimum), so modest reports exercise it.
pub const SMALL_MULTIPART: &[(&str, &str)] = &[
    ("MULTIPART_THRESHOLD_BYTES", "1048576"),
    ("MULTIPART_PART_BYTES", "5242880"),
];

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub metrics_port: Option<u16>,
    pub finpass: FinpassSandbox,
    /// The embedded S3 server; `None` when the suite runs against an external S3 (Garage).
    embedded_s3: Option<S3Sandbox>,
    pub bucket: String,
    pub s3_client: aws_sdk_s3::Client,
    pub http: awc::Client,
    handle: ServerHandle,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// An S3 server the suite can use instead of the embedded one: set `TEST_S3_ENDPOINT`,
/// `TEST_S3_ACCESS_KEY`, `TEST_S3_SECRET_KEY` (and optionally `TEST_S3_REGION`). CI does this
/// with Garage (`.ci/garage.sh`). Each test then gets a bucket of its own.
fn external_s3() -> Option<S3Override> {
    let endpoint = std::env::var("TEST_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())?;
    let key = std::env::var("TEST_S3_ACCESS_KEY").expect("TEST_S3_ACCESS_KEY");
    let secret = std::env::var("TEST_S3_SECRET_KEY").expect("TEST_S3_SECRET_KEY");
    Some(S3Override {
        endpoint_url: Some(endpoint),
        credentials: Some((key, secret)),
        region: Some(std::env::var("TEST_S3_REGION").unwrap_or_else(|_| "garage".to_owned())),
        // Garage rejects the SDK's streaming checksum trailer over plain HTTP.
        checksum_when_required: true,
    })
}

/// Spawns the app with extra environment variables.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_pinned(extra, &[]).await
}

/// Also pins report-link host names to addresses (like curl's `--resolve`).
pub async fn spawn_app_pinned(
    extra: &[(&str, &str)],
    pins: &[(&str, std::net::IpAddr)],
) -> TestApp {
    captured_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let finpass = FinpassSandbox::start().expect("start Finpass simulator");
    let (embedded_s3, connection, bucket) = match external_s3() {
        Some(connection) => {
            let bucket = format!("fgw-test-{}", uuid::Uuid::new_v4().simple());
            let client = storage::build_client(true, &connection)
                .await
                .expect("s3 client");
            client
                .create_bucket()
                .bucket(&bucket)
                .send()
                .await
                .expect("create bucket");
            (None, connection, bucket)
        }
        None => {
            let s3 = S3Sandbox::start(dir.path()).expect("start S3");
            sandbox::create_bucket(dir.path()).expect("bucket");
            let connection = s3.connection();
            (Some(s3), connection, sandbox::BUCKET.to_owned())
        }
    };
    let mut env: Vec<(&str, &str)> = vec![("STATEMENTS_BUCKET", bucket.as_str())];
    env.extend_from_slice(extra);
    let (settings, mut overrides) =
        sandbox::settings(&finpass, "127.0.0.1:0".parse().expect("addr"), &env).expect("settings");
    overrides.s3 = connection.clone();
    overrides.pinned_dns = pins.iter().map(|(h, ip)| ((*h).to_owned(), *ip)).collect();
    overrides.workers = Some(2);
    // Same policy shape as production, scaled down so retry tests run in milliseconds.
    overrides.retry = Some(RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        deadline: Duration::from_secs(5),
    });
    let app = Application::build(settings, overrides)
        .await
        .expect("build app");
    let port = app.port();
    let metrics_port = app.metrics_port();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    let s3_client = storage::build_client(true, &connection)
        .await
        .expect("s3 client");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        metrics_port,
        finpass,
        embedded_s3,
        bucket,
        s3_client,
        http: awc::Client::builder()
            .timeout(Duration::from_secs(300))
            .finish(),
        handle,
        _dir: dir,
    }
}

impl TestApp {
    /// The embedded S3 server, for tests that stop and restart it.
    pub fn s3(&mut self) -> &mut S3Sandbox {
        self.embedded_s3
            .as_mut()
            .expect("this test needs the embedded S3 server (it stops and restarts it)")
    }

    /// Multipart uploads still open in the bucket.
    pub async fn open_multipart_uploads(&self) -> usize {
        match &self.embedded_s3 {
            // s3s-fs has no ListMultipartUploads; it keeps one marker file per open upload.
            Some(s3) => s3.open_multipart_uploads(),
            None => {
                let out = self
                    .s3_client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .expect("list multipart uploads");
                out.uploads().len()
            }
        }
    }

    pub async fn post_raw(&self, content_type: Option<&str>, body: String) -> (u16, String, Value) {
        let mut req = self.http.post(format!("{}/v1/statements", self.address));
        if let Some(ct) = content_type {
            req = req.insert_header(("content-type", ct));
        }
        let mut resp = req.send_body(body).await.expect("request");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.body().limit(1 << 20).await.expect("body");
        (
            status,
            ct,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    /// POSTs a JSON body to /v1/statements.
    pub async fn store(&self, body: &Value) -> (u16, Value) {
        let (status, _, json) = self
            .post_raw(Some("application/json"), body.to_string())
            .await;
        (status, json)
    }

    /// `store` for use in `join_all` (owns its body).
    pub async fn store_owned(&self, body: Value) -> (u16, Value) {
        self.store(&body).await
    }

    pub async fn get(&self, path: &str) -> (u16, String, String) {
        let mut resp = self
            .http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.body().limit(8 << 20).await.expect("body");
        (
            resp.status().as_u16(),
            ct,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// SHA-256 (hex) and length of the object as S3 serves it.
    pub async fn object_sha256(&self, key: &str) -> (String, u64) {
        let out = self
            .s3_client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .expect("get object");
        let mut body: ByteStream = out.body;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = body.try_next().await.expect("object body") {
            len += chunk.len() as u64;
            hasher.update(&chunk);
        }
        (hex::encode(hasher.finalize()), len)
    }

    pub async fn head(&self, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        self.s3_client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .expect("head object")
    }

    /// Every key in the bucket under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self
            .s3_client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list objects");
        let mut keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }

    /// The invariant after any fault: the only objects are complete statements with the
    /// expected SHA-256, no staging leftovers, no open multipart uploads.
    pub async fn assert_bucket_holds_exactly(&self, expected: &[(&str, String)]) {
        let keys = self.keys("").await;
        let mut want: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
        want.sort_unstable();
        assert_eq!(keys, want, "bucket contents");
        for (key, sha) in expected {
            assert_eq!(&self.object_sha256(key).await.0, sha, "sha256 of {key}");
        }
        assert_eq!(
            self.open_multipart_uploads().await,
            0,
            "open multipart uploads"
        );
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_logs_clean();
        }
    }
}

/// The `reports` array of a 200 response.
pub fn reports(body: &Value) -> &Vec<Value> {
    body["reports"].as_array().expect("reports array")
}
