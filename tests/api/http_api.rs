//! Health, readiness, metrics, routing and credentials handling.

use std::time::Duration;

use serde_json::json;

use finpass_gateway::sandbox::{Body, ReportSpec};

use crate::helpers::{assert_refused_for_s3_outage, spawn_app, spawn_app_with};

/// Readiness is this pod's own state (configuration and keys loaded, not draining): an S3
/// outage must not unready every pod at once and empty the Service. S3 reachability is a
/// metric, and calls answer 503 `storage_unavailable` without calling Finpass meanwhile.
#[actix_web::test]
async fn health_and_readiness() {
    const S3_UP: &str = r#"finpass_gateway_dependency_up{dependency="s3"}"#;
    let mut app = spawn_app().await;
    let body = Body::pdf(10_000, 21);
    app.finpass.set_client(
        "aa_ready",
        vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
    );
    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.get("/readyz").await.0, 200);
    assert_eq!(app.metric(S3_UP).await, Some(1.0));

    app.s3().stop();
    // The call that meets the outage (or the background check, whichever comes first) marks
    // S3 down.
    let (status, resp) = app.store(&json!({"client_id": "aa_ready"})).await;
    assert_refused_for_s3_outage(status, &resp);
    app.wait_for_metric(S3_UP, 0.0, Duration::from_secs(20))
        .await;
    let finpass_calls = app.finpass.api_calls();
    let mut resp = app
        .http
        .post(format!("{}/v1/statements", app.address))
        .send_json(&json!({"client_id": "aa_ready"}))
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let problem: serde_json::Value = resp.json().await.expect("problem");
    assert_eq!(problem["code"], "storage_unavailable", "{problem}");
    assert_eq!(
        app.finpass.api_calls(),
        finpass_calls,
        "Finpass is not called while S3 is down"
    );
    assert_eq!(
        app.get("/readyz").await.0,
        200,
        "readiness does not depend on S3"
    );
    assert_eq!(app.get("/healthz").await.0, 200);

    app.s3().restart().expect("restart S3");
    app.wait_for_metric(S3_UP, 1.0, Duration::from_secs(20))
        .await;
    let resp = app.store_ok(&json!({"client_id": "aa_ready"})).await;
    app.assert_stored(&resp.reports[0], "aa_ready", &body).await;
}

#[actix_web::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let (status, ct, body) = app.get("/v2/nothing").await;
    assert_eq!((status, ct.as_str()), (404, "application/problem+json"));
    assert!(body.contains("\"code\":\"not_found\""));
    let (status, ct, body) = app.get("/v1/statements").await;
    assert_eq!((status, ct.as_str()), (405, "application/problem+json"));
    let resp = app
        .http
        .delete(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET")
    );
    assert!(body.contains("\"code\":\"method_not_allowed\""));
}

#[actix_web::test]
async fn metrics_count_requests_by_route_without_client_ids() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_metrics_client",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(10_000, 1))],
    );
    assert_eq!(
        app.store(&json!({"client_id": "aa_metrics_client"}))
            .await
            .0,
        200
    );
    assert_eq!(
        app.store(&json!({"client_id": "aa_metrics_nobody"}))
            .await
            .0,
        404
    );

    let (status, ct, text) = app.get("/metrics").await;

    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain"));
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    };
    assert_eq!(
        line(r#"finpass_gateway_http_requests_total{method="POST",route="/v1/statements",status="200"}"#).as_deref(),
        Some(r#"finpass_gateway_http_requests_total{method="POST",route="/v1/statements",status="200"} 1"#)
    );
    assert!(line(r#"finpass_gateway_http_requests_total{method="POST",route="/v1/statements",status="404"} 1"#).is_some());
    assert!(line(r#"finpass_gateway_http_request_duration_seconds_bucket{method="POST",route="/v1/statements",status="200",le="+Inf"} 1"#).is_some());
    assert!(
        line(r#"finpass_gateway_finpass_requests_total{outcome="client_not_found"} 1"#).is_some()
    );
    assert!(line(r#"finpass_gateway_reports_total{code="",status="stored"} 1"#).is_some());
    assert!(line(r#"finpass_gateway_s3_upload_bytes_total 10000"#).is_some());
    assert!(
        !text.contains("aa_metrics"),
        "client ids never become labels"
    );
}

#[actix_web::test]
async fn metrics_can_move_to_their_own_port() {
    let app = spawn_app_with(&[("METRICS_ADDR", "127.0.0.1:0")]).await;
    assert_eq!(app.get("/metrics").await.0, 404, "not on the API port");
    let port = app.metrics_port.expect("metrics port");
    let mut resp = app
        .http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.body().await.expect("body");
    assert!(String::from_utf8_lossy(&text).contains("finpass_gateway_build_info"));
}

#[actix_web::test]
async fn credentials_are_sent_upstream_and_caller_headers_are_not() {
    let app = spawn_app().await;
    app.finpass.set_client("aa_headers", vec![]);
    let resp = app
        .http
        .post(format!("{}/v1/statements", app.address))
        .insert_header(("authorization", "Bearer caller-token-must-not-travel"))
        .insert_header(("x-api-key", "caller-supplied-key"))
        .insert_header(("cookie", "session=abc"))
        .send_json(&json!({"client_id": "aa_headers"}))
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);

    let seen = app.finpass.seen_headers();
    assert_eq!(seen.len(), 1);
    let names = &seen[0];
    assert!(names.iter().any(|h| h == "x-api-key") && names.iter().any(|h| h == "x-api-secret"));
    assert!(
        !names.iter().any(|h| h == "authorization" || h == "cookie"),
        "{names:?}"
    );
}

#[actix_web::test]
async fn the_openapi_document_is_served_and_matches_the_committed_file() {
    let app = spawn_app().await;
    let (status, ct, body) = app.get("/openapi.yaml").await;
    assert_eq!((status, ct.as_str()), (200, "application/yaml"));
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.yaml"))
            .expect("openapi.yaml");
    assert_eq!(body, committed);
}

#[actix_web::test]
async fn logs_show_links_as_host_and_path_only() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_logged",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(10_000, 9))],
    );
    assert_eq!(app.store(&json!({"client_id": "aa_logged"})).await.0, 200);

    let logs = crate::helpers::captured_logs()
        .lock()
        .expect("logs")
        .clone();
    let logs = String::from_utf8_lossy(&logs);
    // The capture is live (so the secret scan every test runs is not vacuous) and the link
    // appears as scheme://host:port/path with no query.
    let link_prefix = format!("link={}/reports/aa_logged/", app.finpass.base_url());
    let line = logs
        .lines()
        .find(|l| l.contains(&link_prefix) && l.contains("report stored"))
        .expect("a 'report stored' line naming the link");
    assert!(!line.contains('?') && !line.contains("X-Amz"), "{line}");
}
