//! `spawn_app`: the gateway on an ephemeral port, wired to a real S3 server (s3s-fs over HTTP
//! with SigV4 and checksums) and the Finpass simulator over real HTTP. Tests only use the
//! public HTTP API, then look in S3 directly to check the bytes.

#![allow(dead_code)]

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use actix_web::dev::ServerHandle;
use aws_sdk_s3::primitives::ByteStream;
use finpass_gateway::{
    api::{ReportDto, StatementsResponse},
    domain::ReportStatus,
    sandbox::{self, Body, FinpassSandbox, S3Sandbox},
    startup::{Application, Shutdown},
    storage,
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

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// The frontend-only listener, when the test sets `PUBLIC_LISTEN_ADDR=127.0.0.1:0`.
    pub public_address: Option<String>,
    pub metrics_port: Option<u16>,
    pub finpass: FinpassSandbox,
    /// The embedded S3 server; `None` when the suite runs against an external S3 (Garage).
    embedded_s3: Option<S3Sandbox>,
    pub bucket: String,
    pub s3_client: aws_sdk_s3::Client,
    pub http: awc::Client,
    /// The environment that points a gateway at this test's Finpass simulator and S3 server
    /// (for gateways started as separate processes).
    pub gateway_env: Vec<(String, String)>,
    /// The environment this gateway was built with (for [`TestApp::restart_with`]).
    settings_env: Vec<(String, String)>,
    handle: ServerHandle,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

/// What a test changes about the gateway: environment variables, exactly as production sets
/// them. There is no other side channel into the application.
#[derive(Debug, Clone, Default)]
pub struct TestConfig {
    env: Vec<(String, String)>,
    link_hosts: Vec<String>,
}

impl TestConfig {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Pins a report-link host name to an address (`REPORT_LINK_RESOLVE`, like curl's
    /// `--resolve`).
    pub fn resolve(self, host: &str, ip: std::net::IpAddr) -> Self {
        self.env("REPORT_LINK_RESOLVE", &format!("{host}={ip}"))
    }

    /// Host names the simulator serves links for (`ReportSpec::served_at`): allowed on the
    /// simulator's port and pinned to loopback.
    pub fn link_host(mut self, host: &str) -> Self {
        self.link_hosts.push(host.to_owned());
        self
    }

    /// Multipart from 1 MiB with 5 MiB parts (the S3 minimum), so modest reports exercise it.
    pub fn small_multipart(self) -> Self {
        self.env("MULTIPART_THRESHOLD_BYTES", "1048576")
            .env("MULTIPART_PART_BYTES", "5242880")
    }
}

impl<const N: usize> From<&[(&str, &str); N]> for TestConfig {
    fn from(pairs: &[(&str, &str); N]) -> Self {
        pairs.iter().fold(Self::default(), |c, (k, v)| c.env(k, v))
    }
}

impl From<&[(&str, &str)]> for TestConfig {
    fn from(pairs: &[(&str, &str)]) -> Self {
        pairs.iter().fold(Self::default(), |c, (k, v)| c.env(k, v))
    }
}

/// The tests' HTTP client. Its pool keeps an idle connection 30 s, well below the gateway's
/// `HTTP_KEEP_ALIVE_SECONDS` (75 s): it never writes on a connection the gateway may have
/// closed (awc's own default, 15 s, was above actix's 5 s, and a slow machine lost requests
/// to it: `Connect(Disconnected)`). Long timeout: tests stream hundreds of MiB.
pub fn http_client() -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(30)))
        .timeout(Duration::from_secs(300))
        .finish()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestConfig::default()).await
}

/// An S3 server the suite can use instead of the embedded one: set `TEST_S3_ENDPOINT`,
/// `TEST_S3_ACCESS_KEY`, `TEST_S3_SECRET_KEY` (and optionally `TEST_S3_REGION`). CI does this
/// with Garage (`.ci/garage.sh`). Each test then gets a bucket of its own.
fn external_s3() -> Option<Vec<(&'static str, String)>> {
    let endpoint = std::env::var("TEST_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())?;
    Some(vec![
        ("AWS_ENDPOINT_URL_S3", endpoint),
        (
            "AWS_ACCESS_KEY_ID",
            std::env::var("TEST_S3_ACCESS_KEY").expect("TEST_S3_ACCESS_KEY"),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            std::env::var("TEST_S3_SECRET_KEY").expect("TEST_S3_SECRET_KEY"),
        ),
        (
            "AWS_REGION",
            std::env::var("TEST_S3_REGION").unwrap_or_else(|_| "garage".to_owned()),
        ),
        // Garage rejects the SDK's streaming checksum trailer over plain HTTP.
        (
            "AWS_REQUEST_CHECKSUM_CALCULATION",
            "when_required".to_owned(),
        ),
    ])
}

/// The one entry point: the gateway on an ephemeral port with `config` applied on top of
/// the sandbox defaults and the test S3 server.
pub async fn spawn_app_with(config: impl Into<TestConfig>) -> TestApp {
    let config = config.into();
    captured_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let finpass = FinpassSandbox::start().expect("start Finpass simulator");
    let (embedded_s3, connection, bucket) = match external_s3() {
        Some(connection) => (
            None,
            connection,
            format!("fgw-test-{}", uuid::Uuid::new_v4().simple()),
        ),
        None => {
            let s3 = S3Sandbox::start(dir.path()).expect("start S3");
            sandbox::create_bucket(dir.path()).expect("bucket");
            let connection = s3.env();
            (Some(s3), connection, sandbox::BUCKET.to_owned())
        }
    };
    let mut env: Vec<(&str, &str)> = vec![
        ("STATEMENTS_BUCKET", bucket.as_str()),
        ("WORKERS", "2"),
        // Same retry shape as production, scaled down so retry tests run in milliseconds.
        ("FINPASS_RETRY_BASE_MS", "20"),
        ("FINPASS_RETRY_MAX_MS", "200"),
        ("FINPASS_DEADLINE_MS", "5000"),
    ];
    env.extend(connection.iter().map(|(k, v)| (*k, v.as_str())));
    // The test's own S3 client talks to the test S3 server, whatever the test points the
    // gateway at (an unreachable endpoint, say).
    let harness = sandbox::settings(&finpass, "127.0.0.1:0".parse().expect("addr"), &env)
        .expect("harness settings");
    let port = finpass.port();
    let allowed = std::iter::once(format!("127.0.0.1:{port}"))
        .chain(config.link_hosts.iter().map(|h| format!("{h}:{port}")))
        .collect::<Vec<_>>()
        .join(",");
    let pins = config
        .link_hosts
        .iter()
        .map(|h| format!("{h}=127.0.0.1"))
        .collect::<Vec<_>>()
        .join(",");
    if !config.link_hosts.is_empty() {
        env.push(("REPORT_LINK_ALLOWED_HOSTS", allowed.as_str()));
        env.push(("REPORT_LINK_RESOLVE", pins.as_str()));
    }
    env.extend(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let gateway_env: Vec<(String, String)> = [
        ("STATEMENTS_BUCKET", bucket.clone()),
        ("FINPASS_BASE_URL", finpass.base_url()),
        ("FINPASS_API_KEY", sandbox::finpass::API_KEY.to_owned()),
        (
            "FINPASS_API_SECRET",
            sandbox::finpass::API_SECRET.to_owned(),
        ),
        ("S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("REPORT_LINK_ALLOWED_HOSTS", format!("127.0.0.1:{port}")),
        ("REPORT_LINK_ALLOW_HTTP", "true".to_owned()),
        ("AUTH_DISABLED", "true".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(connection.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
    .collect();
    let settings_env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let settings =
        sandbox::settings(&finpass, "127.0.0.1:0".parse().expect("addr"), &env).expect("settings");
    let s3_client = storage::build_client(&harness.s3).await.expect("s3 client");
    if embedded_s3.is_none() {
        s3_client
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create bucket");
    }
    let app = Application::build(settings).await.expect("build app");
    let port = app.port();
    let public_address = app.public_port().map(|p| format!("http://127.0.0.1:{p}"));
    let metrics_port = app.metrics_port();
    let handle = app.handle();
    let shutdown = app.shutdown_handle();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        public_address,
        metrics_port,
        finpass,
        embedded_s3,
        bucket,
        s3_client,
        http: http_client(),
        gateway_env,
        settings_env,
        handle,
        shutdown,
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

    /// Where the embedded S3 server keeps its buckets (one directory each); `None` against an
    /// external S3.
    pub fn embedded_s3_root(&self) -> Option<&std::path::Path> {
        self.embedded_s3.as_ref().map(S3Sandbox::root)
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

    /// POSTs a JSON body that must succeed, and returns the typed answer.
    pub async fn store_ok(&self, body: &Value) -> StatementsResponse {
        let (status, json) = self.store(body).await;
        assert_eq!(status, 200, "{json}");
        serde_json::from_value(json).expect("a StatementsResponse")
    }

    /// The one check that a report was stored right: the answer's object matches `body`,
    /// and S3 holds exactly those bytes with the statement's content type and metadata.
    pub async fn assert_stored(&self, report: &ReportDto, client_id: &str, body: &Body) -> String {
        assert_eq!(report.status, ReportStatus::Stored, "{report:?}");
        let object = report
            .object
            .as_ref()
            .expect("a stored report has an object");
        assert_eq!(object.bucket, self.bucket);
        assert_eq!(object.sha256, body.sha256());
        assert_eq!(object.size_bytes, body.size());
        let folder = format!("statements/{client_id}/");
        assert!(
            object.key.starts_with(&folder) && object.key.ends_with(".pdf"),
            "{}",
            object.key
        );
        assert_eq!(
            self.object_sha256(&object.key).await,
            (body.sha256(), body.size()),
            "the bytes S3 holds"
        );
        let head = self.head(&object.key).await;
        assert_eq!(head.content_type(), Some("application/pdf"));
        assert_eq!(
            self.stored_sha256(&object.key).await.as_deref(),
            Some(body.sha256().as_str()),
            "S3 (checksum or metadata) holds the SHA-256"
        );
        let meta = head.metadata().expect("metadata");
        assert_eq!(meta.get("client-id").map(String::as_str), Some(client_id));
        assert_eq!(meta.get("fip-id"), Some(&report.fip_id));
        assert_eq!(meta.get("account-number"), Some(&report.account_number));
        assert!(meta.get("source-version").is_some_and(|v| !v.is_empty()));
        object.key.clone()
    }

    /// The SHA-256 S3 holds for a statement: its checksum (direct PUT) or its metadata
    /// (staging + copy), as the read side finds it.
    pub async fn stored_sha256(&self, key: &str) -> Option<String> {
        let head = self
            .s3_client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .expect("head object");
        head.metadata()
            .and_then(|m| m.get("sha256").cloned())
            .or_else(|| {
                head.checksum_sha256()
                    .and_then(|c| aws_smithy_types::base64::decode(c).ok())
                    .map(hex::encode)
            })
    }

    /// POSTs to another gateway (a separate process) and returns the status and, on 200,
    /// the typed answer.
    pub async fn store_at(&self, address: &str, body: &Value) -> (u16, Option<StatementsResponse>) {
        let mut resp = self
            .http
            .post(format!("{address}/v1/statements"))
            .send_json(body)
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).ok())
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

    /// The value of one series of `/metrics`, named exactly as rendered (labels sorted), e.g.
    /// `finpass_gateway_dependency_up{dependency="s3"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (status, _, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics");
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Polls `/metrics` until `series` reads `value`; fails after `within`.
    pub async fn wait_for_metric(&self, series: &str, value: f64, within: Duration) {
        let started = Instant::now();
        loop {
            let got = self.metric(series).await;
            if got == Some(value) {
                return;
            }
            assert!(
                started.elapsed() < within,
                "{series} is {got:?}, not {value}, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        // The audit trail shares the bucket (AUDIT_PREFIX); its own tests check it.
        let keys: Vec<String> = self
            .keys("")
            .await
            .into_iter()
            .filter(|k| !k.starts_with("audit/"))
            .collect();
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

    /// Stops the gateway as SIGTERM does: it drains (calls and detached transfers) first.
    pub async fn stop(&self) {
        self.shutdown.stop().await;
    }

    /// Stops this gateway (as SIGTERM does) and starts another over the same Finpass
    /// simulator and S3 bucket, with `overrides` on top of this one's environment: a pod
    /// replaced by a new one. The address fields then name the new gateway.
    pub async fn restart_with(&mut self, overrides: &[(&str, &str)]) {
        self.stop().await;
        let mut env: Vec<(&str, &str)> = self
            .settings_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend_from_slice(overrides);
        let settings = sandbox::settings(&self.finpass, "127.0.0.1:0".parse().expect("addr"), &env)
            .expect("settings");
        let app = Application::build(settings).await.expect("build app");
        self.port = app.port();
        self.address = format!("http://127.0.0.1:{}", self.port);
        self.public_address = app.public_port().map(|p| format!("http://127.0.0.1:{p}"));
        self.metrics_port = app.metrics_port();
        self.handle = app.handle();
        self.shutdown = app.shutdown_handle();
        actix_web::rt::spawn(app.run_until_stopped());
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

/// The answer to a store call that meets an S3 outage: a 503 either way. If this call's own S3
/// request found S3 down, its report failed and its audit event (same S3) could not be written
/// (`audit_unavailable`: fail closed); if the background check saw it first, the call was refused
/// before calling Finpass (`storage_unavailable`).
pub fn assert_refused_for_s3_outage(status: u16, resp: &Value) {
    assert!(
        status == 503
            && (resp["code"] == "audit_unavailable" || resp["code"] == "storage_unavailable"),
        "{status} {resp}"
    );
}

/// Asserts a problem+json answer by its status and stable `code`.
pub fn assert_problem(status: u16, problem: &Value, want_status: u16, want_code: &str) {
    assert_eq!(
        (status, problem["code"].as_str()),
        (want_status, Some(want_code)),
        "{problem}"
    );
}
