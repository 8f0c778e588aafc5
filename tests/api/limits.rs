//! Bounds on work and what autoscaling reads: calls in progress per caller and per process.

use std::time::Duration;

use finpass_gateway::sandbox::{Body, LinkFault, ReportSpec};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{assert_problem, register_secret, reports, spawn_app_with};

const IN_FLIGHT: &str = "finpass_gateway_calls_in_flight";
const CAPACITY: &str = "finpass_gateway_calls_capacity";

/// A call as one caller makes it: (status, Retry-After, body).
async fn call(
    http: awc::Client,
    url: String,
    token: &'static str,
    client: &'static str,
) -> (u16, Option<String>, Value) {
    let mut resp = http
        .post(url)
        .insert_header(("authorization", format!("Bearer {token}")))
        .send_json(&json!({"client_id": client}))
        .await
        .expect("request");
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.body().limit(1 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        retry_after,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[actix_web::test]
async fn one_caller_cannot_take_every_call_slot() {
    const LOANS: &str = "svc-loans-token-7a1e4c";
    const KYC: &str = "svc-kyc-token-93bd02";
    register_secret(LOANS);
    register_secret(KYC);
    let entries = format!(
        "loans:{},kyc:{}",
        hex::encode(Sha256::digest(LOANS)),
        hex::encode(Sha256::digest(KYC))
    );
    let app = spawn_app_with(&[
        ("AUTH_DISABLED", "false"),
        ("CALLER_TOKENS", &entries),
        ("MAX_CALLS_PER_CALLER", "2"),
    ])
    .await;
    // 1 MiB in 64 KiB chunks, 150 ms apart: each call lasts seconds.
    let slow = |seed| {
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(1 << 20, seed))
                .with_faults(vec![LinkFault::Slow(Duration::from_millis(150))]),
        ]
    };
    app.finpass.set_client("aa_cap_1", slow(51));
    app.finpass.set_client("aa_cap_2", slow(52));
    app.finpass.set_client("aa_cap_3", vec![]);
    assert_eq!(
        app.metric(CAPACITY).await,
        Some(64.0),
        "MAX_CONCURRENT_CALLS"
    );
    assert_eq!(app.metric(IN_FLIGHT).await, Some(0.0));

    let url = format!("{}/v1/statements", app.address);
    let first = actix_web::rt::spawn(call(app.http.clone(), url.clone(), LOANS, "aa_cap_1"));
    let second = actix_web::rt::spawn(call(app.http.clone(), url.clone(), LOANS, "aa_cap_2"));
    app.finpass.wait_for_downloads(2).await;

    assert_eq!(app.metric(IN_FLIGHT).await, Some(2.0));
    let (status, retry_after, problem) =
        call(app.http.clone(), url.clone(), LOANS, "aa_cap_3").await;
    assert_problem(status, &problem, 429, "too_many_calls");
    let retry_after: u64 = retry_after
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, _, body) = call(app.http.clone(), url.clone(), KYC, "aa_cap_3").await;
    assert_eq!(status, 200, "another caller is not affected: {body}");

    for task in [first, second] {
        let (status, _, body) = task.await.expect("call task");
        assert_eq!(status, 200, "{body}");
        assert_eq!(reports(&body)[0]["status"], "stored", "{body}");
    }
    assert_eq!(app.metric(IN_FLIGHT).await, Some(0.0));
    let (status, _, _) = call(app.http.clone(), url, LOANS, "aa_cap_3").await;
    assert_eq!(status, 200, "the caller's slots are free again");
}
