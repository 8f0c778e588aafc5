//! The fault suite: whatever Finpass, the links, the network or S3 do wrong, every READY
//! report ends up in S3 with the right SHA-256 or is reported `failed` with a precise code,
//! and the bucket never holds a partial object, a staging leftover or an open multipart
//! upload. Faults are injected deterministically by the simulator, one per call/download.

use std::time::{Duration, Instant};

use finpass_gateway::sandbox::{ApiFault, Body, LinkFault, ReportSpec, SandboxStatus};
use serde_json::json;

use crate::helpers::{
    TestApp, TestConfig, assert_problem, assert_refused_for_s3_outage, reports, spawn_app,
    spawn_app_with,
};

/// Stores one report for `client` and checks the bucket holds exactly it.
async fn assert_stored_exactly(app: &TestApp, client: &str, body: &Body) -> serde_json::Value {
    let (status, resp) = app.store(&json!({"client_id": client})).await;
    assert_eq!(status, 200, "{resp}");
    let report = &reports(&resp)[0];
    assert_eq!(report["status"], "stored", "{resp}");
    assert_eq!(report["object"]["sha256"], body.sha256());
    let key = report["object"]["key"].as_str().expect("key");
    app.assert_bucket_holds_exactly(&[(key, body.sha256())])
        .await;
    resp
}

#[actix_web::test]
async fn finpass_5xx_is_retried_until_success() {
    let app = spawn_app().await;
    let body = Body::pdf(10_000, 1);
    app.finpass.set_client(
        "aa_f5xx",
        vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
    );
    app.finpass
        .push_api_faults([ApiFault::Status(500), ApiFault::Status(503)]);

    assert_stored_exactly(&app, "aa_f5xx", &body).await;

    assert_eq!(app.finpass.api_calls(), 3);
    let (_, _, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains(r#"finpass_gateway_finpass_retries_total{reason="server_error"} 2"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn finpass_429_waits_for_retry_after() {
    let app = spawn_app().await;
    let body = Body::pdf(10_000, 2);
    app.finpass.set_client(
        "aa_f429",
        vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
    );
    app.finpass.push_api_faults([ApiFault::RateLimited {
        retry_after_secs: 1,
    }]);

    let started = Instant::now();
    assert_stored_exactly(&app, "aa_f429", &body).await;

    assert_eq!(app.finpass.api_calls(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
}

#[actix_web::test]
async fn finpass_4xx_is_never_retried() {
    let app = spawn_app().await;
    app.finpass.set_client("aa_f400", vec![]);
    app.finpass.push_api_faults([ApiFault::Status(400)]);

    let (status, problem) = app.store(&json!({"client_id": "aa_f400"})).await;

    assert_problem(status, &problem, 502, "upstream_error");
    assert_eq!(app.finpass.api_calls(), 1);
}

#[actix_web::test]
async fn finpass_hang_ends_in_504_within_the_deadline() {
    let app = spawn_app_with(&[("FINPASS_TIMEOUT_MS", "200")]).await;
    app.finpass.set_client("aa_hang", vec![]);
    app.finpass.push_api_faults(std::iter::repeat_n(
        ApiFault::Hang(Duration::from_secs(30)),
        4,
    ));

    let started = Instant::now();
    let (status, problem) = app.store(&json!({"client_id": "aa_hang"})).await;

    assert_problem(status, &problem, 504, "upstream_timeout");
    // The test retry policy's overall deadline is 5 s; four 200 ms attempts end well before.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        app.finpass.api_calls(),
        4,
        "every attempt timed out and was retried"
    );
}

#[actix_web::test]
async fn malformed_finpass_answer_is_a_502() {
    let app = spawn_app().await;
    app.finpass.set_client("aa_malformed", vec![]);
    app.finpass.push_api_faults([ApiFault::Malformed]);
    let (status, problem) = app.store(&json!({"client_id": "aa_malformed"})).await;
    assert_problem(status, &problem, 502, "upstream_error");
}

#[actix_web::test]
async fn connection_reset_mid_body_is_retried_from_the_start() {
    let app = spawn_app().await;
    let body = Body::pdf(3 << 20, 3);
    app.finpass.set_client(
        "aa_reset",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_faults(vec![LinkFault::ResetAfter(1 << 20)]),
        ],
    );

    assert_stored_exactly(&app, "aa_reset", &body).await;

    assert_eq!(app.finpass.downloads("aa_reset"), 2);
}

/// S3 shedding load (503 SlowDown) on a streamed PUT: the SDK cannot replay a body that is
/// the download, so the transfer retries from the link. Before, the report failed
/// `storage_failed` on a single transient answer, which a 1 GiB report sent as one PUT (the
/// default) could not afford.
#[actix_web::test]
async fn a_put_refused_with_slow_down_is_retried_from_the_link() {
    let mut app = spawn_app().await;
    let body = Body::pdf(3 << 20, 5);
    app.finpass.set_client(
        "aa_slowdown",
        vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
    );
    app.s3().fail_next_puts(1);

    assert_stored_exactly(&app, "aa_slowdown", &body).await;

    assert_eq!(app.finpass.downloads("aa_slowdown"), 2, "downloaded again");
}

#[actix_web::test]
async fn reset_during_multipart_aborts_the_upload_and_retries() {
    let app = spawn_app_with(TestConfig::default().small_multipart()).await;
    let body = Body::pdf(12 << 20, 4);
    // Cut after two full parts went to S3.
    app.finpass.set_client(
        "aa_mreset",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_faults(vec![LinkFault::ResetAfter(11 << 20)]),
        ],
    );

    assert_stored_exactly(&app, "aa_mreset", &body).await;
    assert_eq!(app.finpass.downloads("aa_mreset"), 2);
}

#[actix_web::test]
async fn a_body_that_always_breaks_fails_cleanly() {
    let app = spawn_app_with(TestConfig::default().small_multipart()).await;
    let faults = vec![LinkFault::ResetAfter(6 << 20); 3];
    app.finpass.set_client(
        "aa_broken",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(12 << 20, 5)).with_faults(faults.clone()),
            ReportSpec::ready("SBI-FIP", "X2", Body::pdf(2 << 20, 6))
                .with_faults(vec![LinkFault::ResetAfter(1 << 20); 3]),
        ],
    );

    let (status, resp) = app.store(&json!({"client_id": "aa_broken"})).await;

    assert_eq!(status, 200);
    for r in reports(&resp) {
        assert_eq!(r["error"]["code"], "download_failed", "{resp}");
    }
    app.assert_bucket_holds_exactly(&[]).await;
}

#[actix_web::test]
async fn slow_body_is_stored_and_a_stalled_one_times_out() {
    let app = spawn_app_with(&[("DOWNLOAD_READ_TIMEOUT_MS", "300")]).await;
    let slow = Body::pdf(256 << 10, 7);
    app.finpass.set_client(
        "aa_slow",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", slow.clone())
                .with_faults(vec![LinkFault::Slow(Duration::from_millis(50))]),
        ],
    );
    assert_stored_exactly(&app, "aa_slow", &slow).await;

    app.finpass.set_client(
        "aa_stall",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(256 << 10, 8))
                .with_faults(vec![LinkFault::Slow(Duration::from_secs(5)); 3]),
        ],
    );
    let (status, resp) = app.store(&json!({"client_id": "aa_stall"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        reports(&resp)[0]["error"]["code"],
        "download_timeout",
        "{resp}"
    );
    let slow_key = app.keys("statements/aa_slow/").await;
    app.assert_bucket_holds_exactly(&[(slow_key[0].as_str(), slow.sha256())])
        .await;
}

#[actix_web::test]
async fn expired_links_are_replaced_by_fresh_ones() {
    let app = spawn_app().await;
    let body = Body::pdf(10_000, 9);
    // 403 from the link itself.
    app.finpass.set_client(
        "aa_403",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_faults(vec![LinkFault::Status(403)]),
        ],
    );
    assert_stored_exactly(&app, "aa_403", &body).await;
    assert_eq!(
        app.finpass.api_calls(),
        2,
        "one extra Finpass call for a fresh link"
    );

    // Past X-Amz-Date + X-Amz-Expires: refreshed without even trying the dead link.
    let body2 = Body::pdf(10_000, 10);
    let mut spec = ReportSpec::ready("HDFC-FIP", "X1", body2.clone());
    spec.expired_links = 1;
    app.finpass.set_client("aa_expired", vec![spec]);
    let (status, resp) = app.store(&json!({"client_id": "aa_expired"})).await;
    assert_eq!(status, 200);
    assert_eq!(reports(&resp)[0]["object"]["sha256"], body2.sha256());
    assert_eq!(
        app.finpass.downloads("aa_expired"),
        1,
        "the expired link was never requested"
    );
}

#[actix_web::test]
async fn links_that_stay_expired_fail_after_bounded_refreshes() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_dead",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(10_000, 11))
                .with_faults(vec![LinkFault::Status(403); 10]),
        ],
    );
    let (status, resp) = app.store(&json!({"client_id": "aa_dead"})).await;
    assert_eq!(status, 200);
    assert_eq!(reports(&resp)[0]["error"]["code"], "link_expired");
    assert_eq!(app.finpass.api_calls(), 3, "initial call + 2 refreshes");
    app.assert_bucket_holds_exactly(&[]).await;
}

#[actix_web::test]
async fn pending_reports_are_waited_out_when_asked() {
    let app = spawn_app().await;
    let body = Body::pdf(10_000, 12);
    app.finpass.set_client(
        "aa_pend",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_status(SandboxStatus::Pending { polls: 2 }),
            ReportSpec::ready("SBI-FIP", "X2", Body::pdf(10_000, 13)),
        ],
    );

    let (status, resp) = app
        .store(&json!({"client_id": "aa_pend", "wait_seconds": 10}))
        .await;

    assert_eq!(status, 200);
    assert_eq!(
        resp["summary"],
        json!({"stored": 2, "pending": 0, "failed": 0}),
        "{resp}"
    );
    assert_eq!(
        app.finpass.api_calls(),
        3,
        "two PENDING answers, then READY"
    );
    assert_eq!(
        app.finpass.downloads("aa_pend"),
        2,
        "the READY report was stored once, not per poll"
    );

    // Without wait_seconds the answer is immediate.
    app.finpass.set_client(
        "aa_pend2",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body)
                .with_status(SandboxStatus::Pending { polls: 2 }),
        ],
    );
    let (_, resp) = app.store(&json!({"client_id": "aa_pend2"})).await;
    assert_eq!(resp["summary"]["pending"], 1);
}

#[actix_web::test]
async fn s3_outage_fails_reports_cleanly_and_recovery_is_automatic() {
    const S3_UP: &str = r#"finpass_gateway_dependency_up{dependency="s3"}"#;
    let mut app = spawn_app().await;
    let body = Body::pdf(100_000, 14);
    app.finpass.set_client(
        "aa_s3down",
        vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
    );

    app.s3().stop();
    let (status, resp) = app.store(&json!({"client_id": "aa_s3down"})).await;
    assert_refused_for_s3_outage(status, &resp);
    app.wait_for_metric(S3_UP, 0.0, Duration::from_secs(20))
        .await;
    let (status, problem) = app.store(&json!({"client_id": "aa_s3down"})).await;
    assert_problem(status, &problem, 503, "storage_unavailable");
    assert_eq!(app.get("/readyz").await.0, 200, "readiness is local");
    assert_eq!(app.get("/healthz").await.0, 200, "the process stays up");

    app.s3().restart().expect("restart S3");
    app.wait_for_metric(S3_UP, 1.0, Duration::from_secs(20))
        .await;
    assert_stored_exactly(&app, "aa_s3down", &body).await;
}

#[actix_web::test]
async fn ten_identical_concurrent_calls_download_once() {
    let app = spawn_app().await;
    let body = Body::pdf(2 << 20, 15);
    app.finpass.set_client(
        "aa_same",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_faults(vec![LinkFault::Slow(Duration::from_millis(5))]),
        ],
    );

    let calls =
        (0..10).map(|_| app.store_owned(json!({"client_id": "aa_same", "request_id": "r1"})));
    let results = futures_util::future::join_all(calls).await;

    let first = &results[0].1;
    for (status, resp) in &results {
        assert_eq!(*status, 200, "{resp}");
        assert_eq!(resp["reports"], first["reports"]);
    }
    assert_eq!(
        app.finpass.downloads("aa_same"),
        1,
        "one download for ten calls"
    );
    let key = first["reports"][0]["object"]["key"].as_str().expect("key");
    app.assert_bucket_holds_exactly(&[(key, body.sha256())])
        .await;
}

#[actix_web::test]
async fn overload_is_a_503_with_retry_after_and_the_running_call_completes() {
    let app = spawn_app_with(&[("MAX_CONCURRENT_CALLS", "1")]).await;
    let body = Body::pdf(512 << 10, 16);
    app.finpass.set_client(
        "aa_busy",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_faults(vec![LinkFault::Slow(Duration::from_millis(40))]),
        ],
    );
    app.finpass.set_client("aa_other", vec![]);

    let first = actix_web::rt::spawn({
        let http = app.http.clone();
        let url = format!("{}/v1/statements", app.address);
        async move {
            let mut r = http
                .post(url)
                .send_json(&json!({"client_id": "aa_busy"}))
                .await
                .expect("first call");
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>()
                    .limit(1 << 20)
                    .await
                    .expect("json"),
            )
        }
    });
    app.finpass.wait_for_downloads(1).await;

    let (status, problem) = app.store(&json!({"client_id": "aa_other"})).await;
    assert_problem(status, &problem, 503, "overloaded");

    let (status, resp) = first.await.expect("first call task");
    assert_eq!(status, 200);
    let key = reports(&resp)[0]["object"]["key"].as_str().expect("key");
    app.assert_bucket_holds_exactly(&[(key, body.sha256())])
        .await;
}

#[actix_web::test]
async fn graceful_shutdown_finishes_in_flight_work() {
    let app = spawn_app().await;
    let body = Body::pdf(512 << 10, 17);
    app.finpass.set_client(
        "aa_drain",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_faults(vec![LinkFault::Slow(Duration::from_millis(40))]),
        ],
    );
    let call = actix_web::rt::spawn({
        let http = app.http.clone();
        let url = format!("{}/v1/statements", app.address);
        async move {
            let mut r = http
                .post(url)
                .send_json(&json!({"client_id": "aa_drain"}))
                .await
                .expect("call");
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>()
                    .limit(1 << 20)
                    .await
                    .expect("json"),
            )
        }
    });
    app.finpass.wait_for_downloads(1).await;

    app.stop().await;

    let (status, resp) = call.await.expect("call task");
    assert_eq!(status, 200, "in-flight call completed during the drain");
    let key = reports(&resp)[0]["object"]["key"].as_str().expect("key");
    app.assert_bucket_holds_exactly(&[(key, body.sha256())])
        .await;
    assert!(
        app.http
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .is_err(),
        "no longer accepting"
    );
}
