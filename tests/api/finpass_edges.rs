//! Finpass's edges (issue 13): what a real upstream sends besides the happy envelope. Each test
//! drives `POST /v1/statements` over HTTP against a simulator scenario and asserts the caller's
//! answer, what was stored and the metric outcome.

use std::time::{Duration, Instant};

use finpass_gateway::sandbox::{ApiFault, Body, ReportSpec};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, captured_logs, reports, spawn_app, spawn_app_with};

async fn finpass_outcome(app: &TestApp, outcome: &str) -> Option<f64> {
    app.metric(&format!(
        r#"finpass_gateway_finpass_requests_total{{outcome="{outcome}"}}"#
    ))
    .await
}

/// POSTs `body` and returns the status, the `Retry-After` header and the JSON body, without
/// panicking when the gateway drops the connection (the failure this file guards against).
async fn post(app: &TestApp, body: &Value) -> Result<(u16, Option<String>, Value), String> {
    let mut resp = app
        .http
        .post(format!("{}/v1/statements", app.address))
        .send_json(body)
        .await
        .map_err(|e| format!("the gateway gave no answer: {e}"))?;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((resp.status().as_u16(), retry_after, json))
}

#[actix_web::test]
async fn a_404_that_is_not_the_envelope_is_an_upstream_error() {
    let app = spawn_app().await;
    // A proxy's HTML 404 (or a wrong FINPASS_BASE_URL), for a client Finpass does know.
    app.finpass.push_api_faults([ApiFault::NotAnEnvelope(404)]);

    let (status, problem) = app.store(&json!({"client_id": "aa_demo_ready"})).await;

    assert_problem(status, &problem, 502, "upstream_error");
    assert_eq!(app.finpass.api_calls(), 1, "a 404 is not retried");
    assert_eq!(finpass_outcome(&app, "endpoint_not_found").await, Some(1.0));
    assert_eq!(finpass_outcome(&app, "client_not_found").await, Some(0.0));
    app.assert_bucket_holds_exactly(&[]).await;
}

#[actix_web::test]
async fn a_404_envelope_with_another_message_code_is_an_upstream_error() {
    let app = spawn_app().await;
    // The simulator's injected status carries `message_code: server_error`.
    app.finpass.push_api_faults([ApiFault::Status(404)]);

    let (status, problem) = app.store(&json!({"client_id": "aa_demo_ready"})).await;

    assert_problem(status, &problem, 502, "upstream_error");
    assert_eq!(finpass_outcome(&app, "endpoint_not_found").await, Some(1.0));
    assert_eq!(finpass_outcome(&app, "client_not_found").await, Some(0.0));
}

#[actix_web::test]
async fn the_client_not_found_envelope_is_still_a_404() {
    let app = spawn_app().await;

    let (status, problem) = app.store(&json!({"client_id": "aa_nobody"})).await;

    assert_problem(status, &problem, 404, "client_not_found");
    assert_eq!(finpass_outcome(&app, "client_not_found").await, Some(1.0));
    assert_eq!(finpass_outcome(&app, "endpoint_not_found").await, Some(0.0));
}

#[actix_web::test]
async fn one_invalid_report_fails_alone_and_the_others_are_stored() {
    let app = spawn_app().await;

    let (status, resp) = app
        .store(&json!({"client_id": "aa_demo_invalid_report"}))
        .await;

    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["summary"],
        json!({"stored": 2, "pending": 0, "failed": 3}),
        "{resp}"
    );
    let got: Vec<(&str, &str, &str, &str)> = reports(&resp)
        .iter()
        .map(|r| {
            (
                r["fip_id"].as_str().unwrap_or("?"),
                r["account_number"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or("?"),
                r["error"]["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // Finpass's order is kept; a missing or null id is reported empty.
    assert_eq!(
        got,
        vec![
            ("HDFC-FIP", "XXXXXXXXXX1234", "stored", ""),
            ("", "XXXXXXXX1111", "failed", "upstream_invalid_report"),
            ("ICICI-FIP", "", "failed", "upstream_invalid_report"),
            (
                "AXIS-FIP",
                "XXXXXXXX3333",
                "failed",
                "upstream_invalid_report"
            ),
            ("SBI-FIP", "XXXXXXXX9876", "stored", ""),
        ],
        "{resp}"
    );
    assert_eq!(
        app.finpass.downloads("aa_demo_invalid_report"),
        2,
        "only the valid reports were downloaded"
    );
    let stored: Vec<(&str, String)> = reports(&resp)
        .iter()
        .filter(|r| r["status"] == "stored")
        .map(|r| {
            (
                r["object"]["key"].as_str().expect("key"),
                r["object"]["sha256"].as_str().expect("sha256").to_owned(),
            )
        })
        .collect();
    app.assert_bucket_holds_exactly(&stored).await;
    assert_eq!(
        app.metric(
            r#"finpass_gateway_reports_total{code="upstream_invalid_report",status="failed"}"#
        )
        .await,
        Some(3.0)
    );
}

#[actix_web::test]
async fn data_without_reports_is_an_upstream_error_not_no_reports() {
    let app = spawn_app().await;

    let (status, problem) = app.store(&json!({"client_id": "aa_demo_empty_data"})).await;

    assert_problem(status, &problem, 502, "upstream_error");
    assert_eq!(finpass_outcome(&app, "invalid_response").await, Some(1.0));
}

#[actix_web::test]
async fn null_data_with_success_is_an_upstream_error() {
    let app = spawn_app().await;

    let (status, problem) = app.store(&json!({"client_id": "aa_demo_null_data"})).await;

    assert_problem(status, &problem, 502, "upstream_error");
    assert_eq!(finpass_outcome(&app, "invalid_response").await, Some(1.0));
}

#[actix_web::test]
async fn an_empty_reports_array_is_still_an_empty_answer() {
    let app = spawn_app().await;
    app.finpass.set_client("aa_none", vec![]);

    let (status, resp) = app.store(&json!({"client_id": "aa_none"})).await;

    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["summary"],
        json!({"stored": 0, "pending": 0, "failed": 0})
    );
    assert!(reports(&resp).is_empty());
}

#[actix_web::test]
async fn a_huge_retry_after_is_clamped_and_answered() {
    let app = spawn_app().await;
    app.finpass.push_api_faults([ApiFault::RateLimited {
        retry_after_secs: u64::MAX,
    }]);

    let started = Instant::now();
    let (status, retry_after, problem) = post(&app, &json!({"client_id": "aa_demo_ready"}))
        .await
        .expect("an answer");

    // 60 s (the clamp) is past the test policy's 5 s deadline: answered at once.
    assert_problem(status, &problem, 503, "upstream_rate_limited");
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert_eq!(app.finpass.api_calls(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(finpass_outcome(&app, "rate_limited").await, Some(1.0));
}

#[actix_web::test]
async fn a_retry_after_http_date_is_honoured() {
    let app = spawn_app().await;
    // An hour from now, as an IMF-fixdate: clamped to 60 s, past the 5 s test deadline.
    let in_an_hour =
        aws_smithy_types::DateTime::from(std::time::SystemTime::now() + Duration::from_secs(3600))
            .fmt(aws_smithy_types::date_time::Format::HttpDate)
            .expect("http date");
    app.finpass
        .push_api_faults([ApiFault::RateLimitedRaw(in_an_hour)]);

    let (status, retry_after, problem) = post(&app, &json!({"client_id": "aa_demo_ready"}))
        .await
        .expect("an answer");

    assert_problem(status, &problem, 503, "upstream_rate_limited");
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert_eq!(app.finpass.api_calls(), 1, "not retried before the date");
}

#[actix_web::test]
async fn an_unreadable_retry_after_falls_back_to_backoff() {
    let app = spawn_app().await;
    app.finpass.push_api_faults([
        ApiFault::RateLimitedRaw("soon".to_owned()),
        ApiFault::RateLimitedRaw("-5".to_owned()),
    ]);

    let (status, resp) = app.store(&json!({"client_id": "aa_demo_ready"})).await;

    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["summary"]["stored"], 2, "{resp}");
    assert_eq!(app.finpass.api_calls(), 3);
}

#[actix_web::test]
async fn an_out_of_range_x_amz_expires_does_not_panic() {
    let app = spawn_app().await;
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .expect("date");
    let date: String = now
        .replace(['-', ':'], "")
        .chars()
        .take(15)
        .collect::<String>()
        + "Z";
    app.finpass.set_client(
        "aa_amz_expires",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(10_000, 21))
                .with_signed_params(&date, "18446744073709551615"),
            ReportSpec::ready("SBI-FIP", "X2", Body::pdf(10_000, 22))
                .with_signed_params(&date, "99999999999999999999999"),
        ],
    );

    let (status, resp) = app.store(&json!({"client_id": "aa_amz_expires"})).await;

    assert_eq!(status, 200, "{resp}");
    // Expiry unknown: the link is tried, and S3 (here the simulator) refuses a pre-signed URL
    // valid for more than a week with a 400.
    for r in reports(&resp) {
        assert_eq!(r["error"]["code"], "download_failed", "{resp}");
    }
    assert_eq!(app.finpass.downloads("aa_amz_expires"), 0);
    app.assert_bucket_holds_exactly(&[]).await;
}

#[actix_web::test]
async fn an_out_of_range_x_amz_date_does_not_panic() {
    let app = spawn_app().await;
    let far_future = Body::pdf(10_000, 23);
    app.finpass.set_client(
        "aa_amz_date",
        vec![
            // Year 0: before the epoch, unreadable as Unix time; S3 calls it expired.
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(10_000, 24))
                .with_signed_params("00000101T000000Z", "600"),
            // The last second of year 9999: far future, still valid.
            ReportSpec::ready("SBI-FIP", "X2", far_future.clone())
                .with_signed_params("99991231T235959Z", "604800"),
        ],
    );

    let (status, resp) = app.store(&json!({"client_id": "aa_amz_date"})).await;

    assert_eq!(status, 200, "{resp}");
    let r = reports(&resp);
    assert_eq!(r[0]["error"]["code"], "link_expired", "{resp}");
    assert_eq!(r[1]["status"], "stored", "{resp}");
    assert_eq!(r[1]["object"]["sha256"], far_future.sha256());
    let key = r[1]["object"]["key"].as_str().expect("key");
    app.assert_bucket_holds_exactly(&[(key, far_future.sha256())])
        .await;
}

/// An answer naming another customer in `data.client_id` may carry that customer's reports:
/// nothing of it is downloaded or stored, and the caller gets a 502.
#[actix_web::test]
async fn an_answer_for_another_client_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;

    let (status, problem) = app
        .store(&json!({"client_id": "aa_demo_wrong_client"}))
        .await;

    assert_problem(status, &problem, 502, "upstream_error");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.contains("aa_demo_someone_else") && !detail.contains("aa_demo_wrong_client"),
        "no client id in the answer: {detail}"
    );
    assert_eq!(app.finpass.api_calls(), 1, "not retried");
    assert_eq!(app.finpass.downloads("aa_demo_wrong_client"), 0);
    assert_eq!(finpass_outcome(&app, "client_mismatch").await, Some(1.0));
    app.assert_bucket_holds_exactly(&[]).await;
}

/// `FINPASS_CLIENT_ID_MISMATCH=warn` stores the reports under the client asked for and logs
/// that the ids differ, without the id Finpass sent.
#[actix_web::test]
async fn with_warn_a_mismatched_answer_is_stored_with_a_warning_naming_no_client() {
    let app = spawn_app_with(&[("FINPASS_CLIENT_ID_MISMATCH", "warn")]).await;
    let body = Body::pdf(4_000, 301);
    app.finpass.set_client(
        "aa_mismatch_asked",
        vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
    );
    app.finpass
        .echo_client_as("aa_mismatch_asked", "aa_mismatch_echoed_9f2");

    let answer = app
        .store_ok(&json!({"client_id": "aa_mismatch_asked"}))
        .await;

    app.assert_stored(&answer.reports[0], "aa_mismatch_asked", &body)
        .await;
    let logs = String::from_utf8_lossy(&captured_logs().lock().expect("logs")).into_owned();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("FINPASS_CLIENT_ID_MISMATCH=warn"))
        .collect();
    assert!(!warnings.is_empty(), "the mismatch is logged");
    // (The request's span names the client asked for, as on every line of the call.)
    for line in warnings {
        assert!(!line.contains("aa_mismatch_echoed_9f2"), "{line}");
    }
}
