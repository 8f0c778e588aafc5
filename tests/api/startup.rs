//! Unsafe configuration is refused at start: the real binary exits non-zero with a message
//! naming the variable (never its value), before it listens or touches S3.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use finpass_gateway::sandbox::{self, S3Sandbox};

use crate::helpers::{TestConfig, spawn_app_with};

/// A configuration that would start (if nothing else were set).
const BASE: &[(&str, &str)] = &[
    ("FINPASS_API_KEY", "startup-test-key"),
    ("FINPASS_API_SECRET", "startup-test-secret"),
    ("STATEMENTS_BUCKET", "statements"),
    (
        "CALLER_TOKENS",
        "loans:abababababababababababababababababababababababababababababababab",
    ),
    ("LISTEN_ADDR", "127.0.0.1:0"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9"),
];

/// Runs the binary with `BASE` plus `extra`; returns its exit code (`None`: it was still
/// running after 20 s, i.e. it accepted the configuration, and was killed) and its stderr.
fn run(extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_finpass-gateway"))
        .env_clear()
        .envs(BASE.iter().copied())
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run finpass-gateway");
    let started = Instant::now();
    let code = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break status.code(),
            None if started.elapsed() > Duration::from_secs(20) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (code, stderr)
}

#[test]
fn each_unsafe_configuration_exits_non_zero_naming_its_variable() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("AUTH_DISABLED", &[("AUTH_DISABLED", "true")]),
        (
            "FINPASS_BASE_URL",
            &[("FINPASS_BASE_URL", "http://api.finpass.ai")],
        ),
        (
            "STAGING_PREFIX",
            &[("STATEMENTS_PREFIX", "same/"), ("STAGING_PREFIX", "same/")],
        ),
        (
            "STAGING_PREFIX",
            &[("STAGING_PREFIX", "statements/_staging/")],
        ),
        ("MAX_REPORT_BYTES", &[("MAX_REPORT_BYTES", "0")]),
        ("MAX_REPORT_BYTES", &[("MAX_REPORT_BYTES", "5368709121")]),
        (
            "JWT_JWKS_URL",
            &[
                ("JWT_JWKS_URL", "http://idp.example.com/jwks.json"),
                ("JWT_ISSUER", "https://idp.example.com"),
                ("JWT_AUDIENCE", "finpass-gateway"),
            ],
        ),
        ("CALL_DEADLINE_MS", &[("CALL_DEADLINE_MS", "60000")]),
        (
            "UPLOAD_BUFFER_BUDGET_BYTES",
            &[("UPLOAD_BUFFER_BUDGET_BYTES", "1048576")],
        ),
        ("MAX_CALLS_PER_CALLER", &[("MAX_CALLS_PER_CALLER", "0")]),
        // The audit trail inside what a purge, the staging sweep or the purge markers touch
        // (a purge of client `audit` would delete it), in the same bucket.
        ("AUDIT_PREFIX", &[("AUDIT_PREFIX", "statements/audit/")]),
        ("AUDIT_PREFIX", &[("AUDIT_PREFIX", "statements/")]),
        ("AUDIT_PREFIX", &[("AUDIT_PREFIX", "_staging/")]),
        (
            "AUDIT_PREFIX",
            &[("AUDIT_PREFIX", "_purges/finpass-gateway/audit/")],
        ),
        (
            "AUDIT_PREFIX",
            &[
                ("AUDIT_BUCKET", "statements"),
                ("AUDIT_PREFIX", "statements/audit/"),
            ],
        ),
        (
            "PURGE_MARKER_PREFIX",
            &[("PURGE_MARKER_PREFIX", "statements/_purges/")],
        ),
        (
            "PUBLIC_LISTEN_ADDR",
            &[("PUBLIC_LISTEN_ADDR", "127.0.0.1:0")],
        ),
        (
            "CALLER_TOKENS",
            &[(
                "CALLER_TOKENS",
                "loans:abababababababababababababababababababababababababababababababab:store+admin",
            )],
        ),
        ("JOB_POLL_SCHEDULE", &[("JOB_POLL_SCHEDULE", "5s,soon")]),
        ("JOBS_PREFIX", &[("JOBS_PREFIX", "statements/jobs/")]),
    ];
    let mut failures = Vec::new();
    for (var, extra) in cases {
        let (code, stderr) = run(extra);
        if code.is_none_or(|c| c == 0) || !stderr.contains(var) {
            failures.push(format!(
                "{extra:?}: exit {code:?} (None: still running), stderr {stderr:?}; expected a non-zero exit naming {var}"
            ));
        }
        assert!(!stderr.contains("startup-test-secret"), "{stderr}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A bad `WEBHOOK_ENDPOINTS_FILE` (or schedule) stops the start; the message names the file's
/// line, never the secret on it.
#[test]
fn a_bad_webhook_endpoints_file_refuses_the_start_naming_the_line_not_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("endpoints");
    // 16 bytes: too short for a Standard Webhooks secret.
    let secret = "whsec_c2hvcnQtc2hvcnQtc2hvcnQ=";
    std::fs::write(
        &path,
        format!("# allowed destinations\nloans https://hooks.example.com/loans/ {secret}\n"),
    )
    .expect("write");
    let path = path.to_str().expect("utf-8");
    let (code, stderr) = run(&[("WEBHOOK_ENDPOINTS_FILE", path)]);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("WEBHOOK_ENDPOINTS_FILE line 2"), "{stderr}");
    assert!(!stderr.contains(&secret[6..]), "{stderr}");

    let (code, stderr) = run(&[("WEBHOOK_RETRY_SCHEDULE", "5s,0s")]);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("WEBHOOK_RETRY_SCHEDULE"), "{stderr}");
}

/// `finpass-gateway --sandbox` over a fresh data directory, with only `PATH` and what
/// `configure` sets in its environment, its output in a log file. The data directory and the
/// log are returned so that they live as long as the test reads them.
fn start_sandbox(
    configure: impl FnOnce(&mut Command),
) -> (
    std::process::Child,
    tempfile::TempDir,
    tempfile::NamedTempFile,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finpass-gateway"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    configure(&mut cmd);
    let child = cmd
        .arg("--sandbox")
        .arg("--sandbox-data")
        .arg(dir.path())
        .stdout(Stdio::from(log.reopen().expect("log")))
        .stderr(Stdio::from(log.reopen().expect("log")))
        .spawn()
        .expect("run finpass-gateway --sandbox");
    (child, dir, log)
}

/// A newcomer's first screen: `--sandbox` starts, a store of the banner's demo client
/// succeeds, and nothing on the screen says `ERROR` (the embedded S3 server answers the
/// start-up sweep's ListMultipartUploads with 501 and a dedup HEAD with 404; neither is an
/// error of the gateway).
#[actix_web::test]
async fn the_sandbox_first_screen_holds_no_error() {
    let (mut child, _data, log) = start_sandbox(|cmd| {
        cmd.env("LISTEN_ADDR", "127.0.0.1:0");
    });
    let screen = || std::fs::read_to_string(log.path()).unwrap_or_default();
    // The banner names the port: `curl ... http://127.0.0.1:{port}/v1/statements`.
    let started = Instant::now();
    let address = loop {
        let text = screen();
        if let Some(url) = text
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:") && w.ends_with("/v1/statements"))
        {
            break url.to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the sandbox exited ({status}): {text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no banner after 120 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut resp = awc::Client::default()
        .post(&address)
        .timeout(Duration::from_secs(120))
        .send_json(&serde_json::json!({"client_id": "aa_demo_ready"}))
        .await
        .expect("store");
    let body = resp.body().await.expect("body");
    let _ = child.kill();
    let _ = child.wait();
    let text = screen();
    assert_eq!(resp.status().as_u16(), 200, "{body:?}\n{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "error lines on the first screen:\n{text}"
    );
}

/// Two loopback ports in a row that are free now: the README's walk-throughs put the API on one
/// and the public listener (or the demo webhook receiver) on the next.
fn two_free_ports_in_a_row() -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free ports in a row in 100 tries");
}

/// The README's public-listener walk-through: the sandbox with the public listener on the port
/// after the API's (where the demo webhook receiver would go) starts, and a user's JWT from
/// `sandbox-jwt` reads its own client there. The receiver used to take that port first, so the
/// public listener could not bind and the sandbox exited.
#[actix_web::test]
async fn the_sandbox_public_listener_walk_through_works_on_the_port_after_the_apis() {
    let port = two_free_ports_in_a_row();
    let (mut child, _data, log) = start_sandbox(|cmd| {
        cmd.env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("PUBLIC_LISTEN_ADDR", format!("127.0.0.1:{}", port + 1))
            .env("AUTH_DISABLED", "false")
            .env(
                "JWT_PUBLIC_KEY_FILE",
                format!(
                    "{}/tests/fixtures/jwt-es256-public.pem",
                    env!("CARGO_MANIFEST_DIR")
                ),
            )
            .env("JWT_ISSUER", sandbox::jwt::ISSUER)
            .env("JWT_AUDIENCE", sandbox::jwt::AUDIENCE);
    });
    let screen = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let jwt = Command::new(env!("CARGO_BIN_EXE_finpass-gateway"))
        .args(["sandbox-jwt", "aa_demo_ready"])
        .output()
        .expect("sandbox-jwt");
    assert!(jwt.status.success(), "{jwt:?}");
    let jwt = String::from_utf8(jwt.stdout).expect("utf-8");
    let client = awc::Client::default();
    let url = format!(
        "http://127.0.0.1:{}/v1/clients/aa_demo_ready/statements",
        port + 1
    );
    let started = Instant::now();
    let status = loop {
        if let Ok(resp) = client
            .get(&url)
            .bearer_auth(jwt.trim())
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            break resp.status().as_u16();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the sandbox exited ({status}): {}", screen());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the public listener did not answer in 120 s: {}",
            screen()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{}", screen());
}

/// `REQUIRED_BUCKET_REGION`: a bucket S3 places elsewhere stops the binary (exit 2) before it
/// serves, naming the bucket and both regions; so does a bucket whose region cannot be learnt
/// (here an `AUDIT_BUCKET` that does not exist: the audit bucket is checked too). s3s-fs
/// answers GetBucketLocation with no LocationConstraint, which S3 means as us-east-1.
#[test]
fn a_bucket_outside_the_required_region_stops_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = S3Sandbox::start(dir.path()).expect("s3");
    sandbox::create_bucket(dir.path()).expect("bucket");
    let endpoint = s3.endpoint();
    let connection = [
        ("AWS_ENDPOINT_URL_S3", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", sandbox::s3::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", sandbox::s3::SECRET_KEY),
        ("S3_FORCE_PATH_STYLE", "true"),
    ];
    // (extra environment, words the refusal must name)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[("REQUIRED_BUCKET_REGION", "ap-south-1")],
            &[
                "statements",
                "us-east-1",
                "ap-south-1",
                "REQUIRED_BUCKET_REGION",
            ],
        ),
        (
            &[
                ("REQUIRED_BUCKET_REGION", "us-east-1"),
                ("AUDIT_BUCKET", "audit-bucket-that-is-not-there"),
            ],
            &["audit-bucket-that-is-not-there", "REQUIRED_BUCKET_REGION"],
        ),
    ];
    for (extra, named) in cases {
        let env: Vec<(&str, &str)> = connection.iter().chain(extra.iter()).copied().collect();
        let (code, stderr) = run(&env);
        assert_eq!(code, Some(2), "{extra:?}: {stderr}");
        for word in *named {
            assert!(
                stderr.contains(word),
                "{extra:?} should name {word}: {stderr}"
            );
        }
        assert!(!stderr.contains(sandbox::s3::SECRET_KEY), "{stderr}");
    }
}

/// The same check passes when the buckets are where they must be, and the gateway serves.
#[actix_web::test]
async fn a_bucket_in_the_required_region_starts_and_serves() {
    let probe = spawn_app_with(TestConfig::default()).await;
    let region = probe
        .gateway_env
        .iter()
        .find(|(k, _)| k == "AWS_REGION")
        .map(|(_, v)| v.clone())
        .expect("AWS_REGION of the test S3 server");
    drop(probe);
    let app = spawn_app_with(&[("REQUIRED_BUCKET_REGION", region.as_str())]).await;
    let resp = app
        .store_ok(&serde_json::json!({"client_id": "aa_demo_ready"}))
        .await;
    assert_eq!(resp.summary.stored, 2, "{resp:?}");
}

/// The README's webhook walk-through: `--sandbox`, a job on `aa_demo_pending` with the demo
/// receiver's URL (from the banner) as `webhook_url`, ends in the receiver's logged, verified
/// `statement_job.completed` (the receiver verifies with the `standardwebhooks` crate).
#[actix_web::test]
async fn the_sandbox_demo_receiver_logs_a_verified_completed_event() {
    let (mut child, _data, log) = start_sandbox(|cmd| {
        cmd.env("LISTEN_ADDR", "127.0.0.1:0")
            // The README's default ladder takes ~20 s; the same walk, faster.
            .env("JOB_POLL_SCHEDULE", "200ms");
    });
    let screen = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let word = |text: &str, end: &str| {
        text.split_whitespace()
            .map(|w| w.trim_matches('"'))
            .find(|w| w.starts_with("http://127.0.0.1:") && w.ends_with(end))
            .map(str::to_owned)
    };
    let started = Instant::now();
    let (store, receiver) = loop {
        let text = screen();
        if let (Some(store), Some(receiver)) =
            (word(&text, "/v1/statements"), word(&text, "/webhooks"))
        {
            break (store, receiver);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the sandbox exited ({status}): {text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no banner after 120 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let jobs = store.replace("/v1/statements", "/v1/statement-jobs");
    let mut resp = awc::Client::default()
        .post(&jobs)
        .send_json(&serde_json::json!({"client_id": "aa_demo_pending", "webhook_url": receiver}))
        .await
        .expect("create job");
    let created: serde_json::Value = resp.json().await.expect("job");
    assert_eq!(resp.status().as_u16(), 202, "{created}");
    let job_id = created["job_id"].as_str().expect("job_id").to_owned();
    let started = Instant::now();
    let line = loop {
        let text = screen();
        if let Some(line) = text.lines().find(|l| {
            l.contains("demo receiver: webhook received")
                && l.contains("statement_job.completed")
                && l.contains(&job_id)
        }) {
            break strip_ansi(line);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no verified completed event logged after 120 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The gateway records the delivery once the receiver's answer is in: poll for it.
    let started = Instant::now();
    let job = loop {
        let mut resp = awc::Client::default()
            .get(format!("{jobs}/{job_id}"))
            .send()
            .await
            .expect("read job");
        let job: serde_json::Value = resp.json().await.expect("job");
        if job["webhook"]["delivered"] == 1 || started.elapsed() > Duration::from_secs(120) {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains("verified=true") && line.contains("INFO"),
        "{line}"
    );
    assert!(line.contains("webhook_id=msg_"), "{line}");
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["webhook"]["delivered"], 1, "{job}");
    assert_eq!(job["webhook"]["last_status"], 204, "{job}");
}

/// `line` without terminal colour codes (`ESC [ … m`), which the text log format may carry.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
