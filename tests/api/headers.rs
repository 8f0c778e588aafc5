//! Response headers at the edge (issue #21): `X-Content-Type-Options: nosniff` and an
//! `X-Request-Id` on every answer, `Cache-Control: no-store` on every answer that carries
//! statement data, and the request id shared by the header, problem+json `instance` and the
//! audit event.

use awc::http::Method;
use finpass_gateway::sandbox::{Body, ReportSpec};
use serde_json::json;

use crate::{
    helpers::{TestApp, spawn_app, spawn_app_with},
    read_side::{Resp, audit_events, call},
};

/// A generated request id: a UUID (36 characters, hex and dashes).
fn is_generated_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok() && id.len() == 36
}

/// Stores one statement for `client` and returns its id.
async fn one_statement(app: &TestApp, client: &str, seed: u64) -> String {
    app.finpass.set_client(
        client,
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(3_000, seed))],
    );
    let stored = app.store_ok(&json!({"client_id": client})).await;
    stored.reports[0]
        .statement_id
        .clone()
        .expect("a stored report has a statement_id")
}

#[actix_web::test]
async fn every_answer_has_nosniff_and_a_request_id() {
    let app = spawn_app().await;
    let id = one_statement(&app, "aa_hdr_all", 201).await;
    let base = "/v1/clients/aa_hdr_all/statements";
    let cases: Vec<(Method, String, u16)> = vec![
        (Method::GET, base.to_owned(), 200),
        (Method::GET, format!("{base}/{id}"), 200),
        (Method::GET, format!("{base}/{id}/content"), 200),
        (Method::GET, format!("{base}/{id}/download-url"), 200),
        (Method::GET, format!("{base}?limit=0"), 400),
        (Method::GET, format!("{base}/nothing_here"), 404),
        (Method::PUT, format!("{base}/{id}/content"), 405),
        (Method::GET, "/no/such/route".to_owned(), 404),
        (Method::GET, "/healthz".to_owned(), 200),
        (Method::GET, "/metrics".to_owned(), 200),
        (Method::GET, "/openapi.yaml".to_owned(), 200),
    ];
    let mut seen = Vec::new();
    for (method, path, status) in cases {
        let resp = call(&app, method.clone(), &path, &[]).await;
        assert_eq!(resp.status, status, "{method} {path}");
        assert_eq!(
            resp.header("x-content-type-options"),
            Some("nosniff"),
            "{method} {path}"
        );
        let rid = resp.header("x-request-id").unwrap_or_default().to_owned();
        assert!(is_generated_id(&rid), "{method} {path}: {rid:?}");
        seen.push(rid);
    }
    let (status, ct, _) = app.post_raw(Some("text/plain"), "{}".to_owned()).await;
    assert_eq!((status, ct.as_str()), (415, "application/problem+json"));
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 11, "one id per answer");
}

#[actix_web::test]
async fn the_metrics_listener_answers_with_nosniff_and_a_request_id() {
    let app = spawn_app_with(&[("METRICS_ADDR", "127.0.0.1:0")]).await;
    let port = app.metrics_port.expect("a metrics port");
    for (path, status) in [("/metrics", 200), ("/elsewhere", 404)] {
        let resp = app
            .http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
        assert!(header("x-request-id").is_some_and(|id| is_generated_id(&id)));
    }
}

#[actix_web::test]
async fn answers_carrying_statement_data_are_never_stored_by_caches() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_hdr_cache",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(3_000, 202))],
    );
    let resp = app
        .http
        .post(format!("{}/v1/statements", app.address))
        .send_json(&json!({"client_id": "aa_hdr_cache"}))
        .await
        .expect("store");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("private, no-store"),
        "the store answer names keys and checksums"
    );
    let id = one_statement(&app, "aa_hdr_cache", 202).await;
    let base = "/v1/clients/aa_hdr_cache/statements";
    let content = format!("{base}/{id}/content");
    let etag = call(&app, Method::GET, &content, &[])
        .await
        .header("etag")
        .expect("etag")
        .to_owned();
    let cases = vec![
        (base.to_owned(), vec![], 200),
        (format!("{base}/{id}"), vec![], 200),
        (content.clone(), vec![], 200),
        (content.clone(), vec![("range", "bytes=0-4")], 206),
        (content.clone(), vec![("if-none-match", etag.as_str())], 304),
        (format!("{base}/{id}/download-url"), vec![], 200),
        (format!("{base}/nothing_here"), vec![], 404),
    ];
    for (path, headers, status) in cases {
        let resp = call(&app, Method::GET, &path, &headers).await;
        assert_eq!(resp.status, status, "{path} {headers:?}");
        assert_eq!(
            resp.header("cache-control"),
            Some("private, no-store"),
            "{path} {headers:?}"
        );
    }
}

/// The one id of an exchange: echoed when the caller sent a usable one, in the header, the
/// problem's `instance` and the audit event.
#[actix_web::test]
async fn the_callers_request_id_is_echoed_in_the_header_the_problem_and_the_audit_event() {
    let app = spawn_app().await;
    let path = "/v1/clients/aa_hdr_rid/statements/no_such_statement";
    let caller_id = "frontend-7f3a.42:retry=1";
    let resp = call(&app, Method::GET, path, &[("x-request-id", caller_id)]).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-request-id"), Some(caller_id));
    let problem = resp.json();
    assert_eq!(problem["code"], "statement_not_found", "{problem}");
    assert_eq!(problem["instance"], caller_id, "{problem}");
    let events = audit_events(&app).await;
    let event = events
        .iter()
        .find(|e| e["client_id"] == "aa_hdr_rid")
        .unwrap_or_else(|| panic!("no audit event: {events:?}"));
    assert_eq!(event["outcome"], "not_found", "{event}");
    assert_eq!(event["http_request_id"], caller_id, "{event}");

    // A successful, audited call: the header and the audit event agree.
    let id = one_statement(&app, "aa_hdr_rid_ok", 203).await;
    let resp = call(
        &app,
        Method::GET,
        &format!("/v1/clients/aa_hdr_rid_ok/statements/{id}"),
        &[],
    )
    .await;
    assert_eq!(resp.status, 200);
    let generated = resp
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    assert!(is_generated_id(&generated), "{generated}");
    let events = audit_events(&app).await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "read" && e["http_request_id"] == generated.as_str()),
        "{events:?}"
    );

    // A problem that is not audited (validation) still names the exchange.
    let resp = call(
        &app,
        Method::GET,
        "/v1/clients/aa_hdr_rid/statements?limit=0",
        &[("x-request-id", "abc")],
    )
    .await;
    assert_eq!(
        (resp.status, resp.json()["instance"].clone()),
        (400, json!("abc"))
    );
    let generated_problem = call(&app, Method::GET, "/no/such/route", &[]).await;
    assert_eq!(
        Some(generated_problem.json()["instance"].as_str().unwrap_or("")),
        generated_problem.header("x-request-id"),
    );
}

#[actix_web::test]
async fn an_unusable_caller_request_id_is_replaced_by_a_new_one() {
    let app = spawn_app().await;
    let too_long = "a".repeat(129);
    let longest = "b".repeat(128);
    for (sent, echoed) in [
        (too_long.as_str(), false),
        ("has space", false),
        ("tab\there", false),
        (longest.as_str(), true),
        ("~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", true),
    ] {
        let resp: Resp = call(&app, Method::GET, "/healthz", &[("x-request-id", sent)]).await;
        let got = resp.header("x-request-id").unwrap_or_default();
        if echoed {
            assert_eq!(got, sent);
        } else {
            assert!(is_generated_id(got), "{sent:?} gave {got:?}");
        }
    }
    // Not ASCII: sent as raw bytes.
    let resp = app
        .http
        .get(format!("{}/healthz", app.address))
        .insert_header((
            "x-request-id",
            awc::http::header::HeaderValue::from_bytes("café".as_bytes()).expect("value"),
        ))
        .send()
        .await
        .expect("request");
    let got = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(is_generated_id(got), "{got:?}");
}
