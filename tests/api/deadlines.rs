//! Every call ends: one deadline per call (`CALL_DEADLINE_MS`) bounds the Finpass calls, the
//! polling and the transfers themselves, which run detached (single flight) and so are not
//! ended by the caller hanging up. At the deadline the call answers with what it has; the
//! unfinished reports are `failed`/`download_timeout`, their uploads aborted, nothing partial
//! stored.

use std::time::{Duration, Instant};

use finpass_gateway::sandbox::{Body, LinkFault, ReportSpec, SandboxStatus};
use serde_json::json;

use crate::helpers::{
    TestConfig, assert_problem, assert_refused_for_s3_outage, reports, spawn_app_with,
};

const S3_UP: &str = r#"finpass_gateway_dependency_up{dependency="s3"}"#;

/// A small deadline: `MAX_WAIT_SECONDS=0` lets it pass the configuration check (the deadline
/// must exceed the largest `wait_seconds` plus 5 s).
const DEADLINE_SECS: u64 = 6;

#[actix_web::test]
async fn a_dripping_link_is_cut_at_the_call_deadline_and_nothing_partial_is_stored() {
    let app = spawn_app_with(
        TestConfig::default()
            .env("CALL_DEADLINE_MS", &(DEADLINE_SECS * 1000).to_string())
            .env("MAX_WAIT_SECONDS", "0")
            .small_multipart(),
    )
    .await;
    let fine = Body::pdf(10_000, 31);
    // 16 bytes a second: never silent for DOWNLOAD_READ_TIMEOUT_MS, done in days.
    let drip = LinkFault::Drip {
        bytes: 16,
        every: Duration::from_secs(1),
    };
    app.finpass.set_client(
        "aa_drip",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", fine.clone()),
            // Unknown size: a multipart upload is open while it drips.
            ReportSpec::ready(
                "SBI-FIP",
                "X2",
                Body::Pdf {
                    size: 2 << 20,
                    seed: 32,
                    chunked: true,
                },
            )
            .with_faults(vec![drip.clone()]),
            // Known, small size: a streamed single PUT is open while it drips.
            ReportSpec::ready("AXIS-FIP", "X3", Body::pdf(200_000, 33)).with_faults(vec![drip]),
            ReportSpec::ready("ICICI-FIP", "X4", Body::pdf(1_000, 34))
                .with_status(SandboxStatus::Pending { polls: usize::MAX }),
        ],
    );

    let started = Instant::now();
    // Two identical calls: the second one follows the first one's transfers (single flight)
    // and must not outlive the leader's deadline either.
    let calls = futures_util::future::join(
        app.store_owned(json!({"client_id": "aa_drip"})),
        app.store_owned(json!({"client_id": "aa_drip"})),
    );
    let ((status_a, a), (status_b, b)) =
        tokio::time::timeout(Duration::from_secs(DEADLINE_SECS + 5), calls)
            .await
            .expect("both calls answered within CALL_DEADLINE_MS + 5 s");
    let elapsed = started.elapsed();

    assert!(
        elapsed >= Duration::from_secs(DEADLINE_SECS - 1),
        "answered after {elapsed:?}: the drip was not waited for"
    );
    for (status, resp) in [(status_a, &a), (status_b, &b)] {
        assert_eq!(status, 200, "{resp}");
        assert_eq!(
            resp["summary"],
            json!({"stored": 1, "pending": 1, "failed": 2}),
            "{resp}"
        );
        let by_fip = |fip: &str| {
            reports(resp)
                .iter()
                .find(|r| r["fip_id"] == fip)
                .cloned()
                .expect("report")
        };
        assert_eq!(by_fip("HDFC-FIP")["status"], "stored", "{resp}");
        assert_eq!(by_fip("ICICI-FIP")["status"], "pending", "{resp}");
        for fip in ["SBI-FIP", "AXIS-FIP"] {
            assert_eq!(by_fip(fip)["error"]["code"], "download_timeout", "{resp}");
        }
    }
    assert_eq!(
        app.finpass.downloads("aa_drip"),
        3,
        "one download per READY report, shared by both calls"
    );
    let key = reports(&a)
        .iter()
        .find(|r| r["fip_id"] == "HDFC-FIP")
        .and_then(|r| r["object"]["key"].as_str())
        .expect("key")
        .to_owned();
    app.assert_bucket_holds_exactly(&[(key.as_str(), fine.sha256())])
        .await;
    let (_, _, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"finpass_gateway_reports_total{code="download_timeout",status="failed"} 4"#
        ),
        "{metrics}"
    );

    // A wait the deadline could not honour is refused up front.
    let (status, problem) = app
        .store(&json!({"client_id": "aa_drip", "wait_seconds": 1}))
        .await;
    assert_problem(status, &problem, 400, "invalid_request");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("wait_seconds")),
        "{problem}"
    );
}

/// An S3 endpoint that accepts connections and never answers (a half-open connection, a
/// black-holed route): the operations time out instead of holding the call forever.
#[actix_web::test]
async fn an_s3_that_accepts_connections_and_never_answers_cannot_hold_a_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    actix_web::rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let app = spawn_app_with(
        TestConfig::default()
            .env("AWS_ENDPOINT_URL_S3", &endpoint)
            .env("S3_TIMEOUT_MS", "500"),
    )
    .await;
    app.finpass.set_client(
        "aa_blackhole",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(10_000, 36))],
    );

    let (status, resp) = tokio::time::timeout(
        Duration::from_secs(20),
        app.store(&json!({"client_id": "aa_blackhole"})),
    )
    .await
    .expect("answered although S3 never answers");

    // Answered although S3 never answers: the call's own HEAD timed out, or the background
    // check had already seen S3 down.
    assert_refused_for_s3_outage(status, &resp);
    app.wait_for_metric(S3_UP, 0.0, Duration::from_secs(20))
        .await;
    assert_eq!(app.get("/readyz").await.0, 200, "readiness is local");
}

/// A transfer runs detached from its caller: a caller going away ends its call (actix drops
/// the handler when the connection is reset) but not the transfer, and a graceful shutdown
/// must not either. With no connection left in flight the workers would stop at once and drop
/// the upload mid-way; the drain waits for the transfer, so the report lands whole and no
/// multipart upload is left open.
#[actix_web::test]
async fn graceful_shutdown_waits_for_a_transfer_whose_caller_hung_up() {
    use std::io::Write;

    let app = spawn_app_with(TestConfig::default().small_multipart()).await;
    // 8 MiB of unknown size: multipart, 128 chunks 20 ms apart (about 2.6 s).
    let body = Body::Pdf {
        size: 8 << 20,
        seed: 37,
        chunked: true,
    };
    app.finpass.set_client(
        "aa_orphan",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_faults(vec![LinkFault::Slow(Duration::from_millis(20))]),
        ],
    );
    let json = r#"{"client_id":"aa_orphan"}"#;
    // A plain socket, so the test decides how the connection ends (a small blocking write on
    // loopback; the gateway runs on its own worker threads).
    let mut caller = std::net::TcpStream::connect(("127.0.0.1", app.port)).expect("connect");
    caller
        .write_all(
            format!(
                "POST /v1/statements HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                json.len()
            )
            .as_bytes(),
        )
        .expect("request");
    app.finpass.wait_for_downloads(1).await;
    // The caller goes away abruptly (RST): actix drops its call.
    caller.set_nonblocking(true).expect("nonblocking");
    let caller = tokio::net::TcpStream::from_std(caller).expect("tokio socket");
    caller.set_zero_linger().expect("SO_LINGER 0");
    drop(caller);
    // Only the scrape itself is in flight: the call is gone; its transfer is not.
    app.wait_for_metric(
        "finpass_gateway_http_requests_in_flight",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        app.metric(r#"finpass_gateway_in_flight{kind="download"}"#)
            .await,
        Some(1.0),
        "the transfer outlived its caller"
    );

    app.stop().await;

    let keys = app.keys("statements/aa_orphan/").await;
    assert_eq!(keys.len(), 1, "the report was stored whole: {keys:?}");
    app.assert_bucket_holds_exactly(&[(keys[0].as_str(), body.sha256())])
        .await;
}
