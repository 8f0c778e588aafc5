//! Bad input gets a precise problem+json error before any upstream call.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app};

#[actix_web::test]
async fn every_bad_body_is_rejected_before_finpass_is_called() {
    let app = spawn_app().await;
    let long = "a".repeat(129);
    let huge = "a".repeat(5 * 1024);
    let cases: Vec<(String, &str)> = vec![
        (json!({}).to_string(), "missing client_id"),
        (json!({"client_id": ""}).to_string(), "empty"),
        (json!({"client_id": long}).to_string(), "129 chars"),
        (json!({"client_id": huge}).to_string(), "5 KB id"),
        (
            json!({"client_id": "../../etc/passwd"}).to_string(),
            "traversal",
        ),
        (json!({"client_id": "aa/other"}).to_string(), "slash"),
        (
            json!({"client_id": "aa_\u{0430}"}).to_string(),
            "cyrillic lookalike",
        ),
        (json!({"client_id": "aa 1"}).to_string(), "space"),
        (json!({"client_id": 42}).to_string(), "number"),
        (json!({"client_id": null}).to_string(), "null"),
        (
            json!({"client_id": "aa_1", "request_id": "r/1"}).to_string(),
            "bad request_id",
        ),
        (
            json!({"client_id": "aa_1", "request_id": ""}).to_string(),
            "empty request_id",
        ),
        (
            json!({"client_id": "aa_1", "wait_seconds": 61}).to_string(),
            "wait too long",
        ),
        (
            json!({"client_id": "aa_1", "wait_seconds": -1}).to_string(),
            "negative wait",
        ),
        (
            json!({"client_id": "aa_1", "clientId": "x"}).to_string(),
            "unknown field",
        ),
        (json!(["aa_1"]).to_string(), "array"),
        ("{\"client_id\": \"aa_1\"".to_owned(), "truncated JSON"),
        (String::new(), "empty body"),
    ];
    for (body, what) in &cases {
        let (status, ct, problem) = app.post_raw(Some("application/json"), body.clone()).await;
        assert_eq!(status, 400, "{what}: {problem}");
        assert_eq!(ct, "application/problem+json", "{what}");
        assert_eq!(problem["code"], "invalid_request", "{what}");
        assert_eq!(problem["status"], 400, "{what}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty() && d.len() < 400),
            "{what}: {problem}"
        );
    }

    let (status, _, problem) = app
        .post_raw(Some("text/plain"), json!({"client_id": "aa_1"}).to_string())
        .await;
    assert_problem(status, &problem, 415, "unsupported_media_type");
    let (status, _, problem) = app
        .post_raw(None, json!({"client_id": "aa_1"}).to_string())
        .await;
    assert_problem(status, &problem, 415, "unsupported_media_type");
    let padded = json!({"client_id": "aa_1", "request_id": "r".repeat(20 * 1024)}).to_string();
    let (status, _, problem) = app.post_raw(Some("application/json"), padded).await;
    assert_problem(status, &problem, 413, "payload_too_large");

    assert_eq!(
        app.finpass.api_calls(),
        0,
        "no bad request may reach Finpass"
    );
}

#[actix_web::test]
async fn the_detail_names_the_offending_field() {
    let app = spawn_app().await;
    let (_, problem) = app
        .store(&json!({"client_id": "aa_1", "request_id": "bad id"}))
        .await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("request_id ")),
        "{problem}"
    );
    let (_, problem) = app.store(&json!({"client_id": "a".repeat(200)})).await;
    assert_eq!(
        problem["detail"],
        "client_id must be at most 128 characters"
    );
}
