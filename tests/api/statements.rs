//! The core contract: READY reports end up in S3 byte for byte, with deterministic keys.

use finpass_gateway::sandbox::{Body, LinkFault, ReportSpec, SandboxStatus};
use serde_json::json;

use crate::helpers::{TestConfig, reports, spawn_app, spawn_app_with};

#[actix_web::test]
async fn happy_path_stores_both_reports_byte_for_byte() {
    let app = spawn_app().await;
    let small = Body::pdf(200_000, 1);
    let big = Body::pdf(3 << 20, 2);
    app.finpass.set_client(
        "aa_happy",
        vec![
            ReportSpec::ready("HDFC-FIP", "XXXXXXXXXX1234", small.clone()),
            ReportSpec::ready("SBI-FIP", "XXXXXXXX9876", big.clone()),
        ],
    );
    let request = json!({"client_id": "aa_happy", "request_id": "req_1"});

    let answer = app.store_ok(&request).await;

    assert_eq!(answer.client_id, "aa_happy");
    assert_eq!(answer.request_id.as_deref(), Some("req_1"));
    assert_eq!(
        (answer.summary.stored, answer.summary.pending, answer.summary.failed),
        (2, 0, 0)
    );
    let (_, raw) = app.store(&request).await;
    let text = raw.to_string();
    assert!(
        !text.contains("X-Amz") && !text.contains(&app.finpass.base_url()),
        "no link may leak: {text}"
    );
    let mut expected = Vec::new();
    for (report, body) in answer.reports.iter().zip([&small, &big]) {
        let key = app.assert_stored(report, "aa_happy", body).await;
        let head = app.head(&key).await;
        let meta = head.metadata().expect("metadata");
        assert_eq!(meta.get("request-id").map(String::as_str), Some("req_1"));
        assert!(meta.get("fetched-at").is_some_and(|t| t.ends_with('Z')));
        let object = report.object.as_ref().expect("object");
        assert_eq!(
            Some(object.etag.clone()),
            head.e_tag().map(|e| e.trim_matches('"').to_owned())
        );
        expected.push((key, body.sha256()));
    }
    let expected: Vec<(&str, String)> = expected
        .iter()
        .map(|(k, s)| (k.as_str(), s.clone()))
        .collect();
    app.assert_bucket_holds_exactly(&expected).await;
}

#[actix_web::test]
async fn repeat_call_returns_the_same_keys_without_downloading_again() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_repeat",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(50_000, 3)),
            ReportSpec::ready("SBI-FIP", "X2", Body::pdf(60_000, 4)),
        ],
    );

    let (_, first) = app.store(&json!({"client_id": "aa_repeat"})).await;
    assert_eq!(app.finpass.downloads("aa_repeat"), 2);
    let (status, second) = app.store(&json!({"client_id": "aa_repeat"})).await;

    assert_eq!(status, 200);
    assert_eq!(
        app.finpass.downloads("aa_repeat"),
        2,
        "second call must not download"
    );
    assert_eq!(
        first["reports"], second["reports"],
        "same keys, sizes, hashes and etags"
    );
    assert_eq!(second["summary"]["stored"], 2);
    assert_eq!(second["request_id"], serde_json::Value::Null);
}

#[actix_web::test]
async fn unknown_client_is_a_404_problem() {
    let app = spawn_app().await;

    let (status, ct, body) = app
        .post_raw(
            Some("application/json"),
            json!({"client_id": "aa_nobody"}).to_string(),
        )
        .await;

    assert_eq!(status, 404);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["code"], "client_not_found");
    assert_eq!(body["status"], 404);
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("client_not_found"))
    );
    assert_eq!(app.finpass.api_calls(), 1, "404 is final: no retries");
}

#[actix_web::test]
async fn pending_and_failed_reports_are_reported_per_report() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_mixed",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(10_000, 5)),
            ReportSpec::ready("ICICI-FIP", "X2", Body::pdf(10_000, 6))
                .with_status(SandboxStatus::Pending { polls: usize::MAX }),
            ReportSpec::ready("AXIS-FIP", "X3", Body::pdf(10_000, 7))
                .with_status(SandboxStatus::Failed),
        ],
    );

    let (status, body) = app.store(&json!({"client_id": "aa_mixed"})).await;

    assert_eq!(status, 200);
    assert_eq!(
        body["summary"],
        json!({"stored": 1, "pending": 1, "failed": 1})
    );
    let r = reports(&body);
    assert_eq!(r[0]["status"], "stored");
    assert_eq!(r[1]["status"], "pending");
    assert!(r[1].get("object").is_none() && r[1].get("error").is_none());
    assert_eq!(r[2]["status"], "failed");
    assert_eq!(r[2]["error"]["code"], "upstream_report_failed");
    assert_eq!(app.keys("statements/aa_mixed/").await.len(), 1);
}

#[actix_web::test]
async fn an_error_page_is_never_stored_as_a_pdf() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_html",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::Html),
            ReportSpec::ready("SBI-FIP", "X2", Body::pdf(10_000, 8))
                .with_faults(vec![LinkFault::Status(404)]),
            ReportSpec::ready("AXIS-FIP", "X3", Body::pdf(10_000, 9)),
        ],
    );

    let (status, body) = app.store(&json!({"client_id": "aa_html"})).await;

    assert_eq!(status, 200);
    let r = reports(&body);
    assert_eq!(r[0]["error"]["code"], "not_a_pdf");
    assert_eq!(r[1]["error"]["code"], "download_failed");
    assert_eq!(
        r[2]["status"], "stored",
        "one report's failure never fails the others"
    );
    let key = r[2]["object"]["key"].as_str().expect("key");
    app.assert_bucket_holds_exactly(&[(key, Body::pdf(10_000, 9).sha256())])
        .await;
}

#[actix_web::test]
async fn large_and_unknown_size_reports_go_through_multipart() {
    // Lower the threshold so multipart runs with a modest file (parts are 5 MiB).
    let app = spawn_app_with(TestConfig::default().small_multipart()).await;
    let sized = Body::pdf(12 << 20, 10);
    let chunked = Body::Pdf {
        size: (6 << 20) + 123,
        seed: 11,
        chunked: true,
    };
    app.finpass.set_client(
        "aa_multi",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", sized.clone()),
            ReportSpec::ready("SBI-FIP", "X2", chunked.clone()),
        ],
    );

    let (status, body) = app.store(&json!({"client_id": "aa_multi"})).await;

    assert_eq!(status, 200, "{body}");
    let r = reports(&body);
    let k0 = r[0]["object"]["key"].as_str().expect("key");
    let k1 = r[1]["object"]["key"].as_str().expect("key");
    assert_eq!(r[1]["object"]["size_bytes"], chunked.size());
    app.assert_bucket_holds_exactly(&[(k0, sized.sha256()), (k1, chunked.sha256())])
        .await;
}

#[actix_web::test]
async fn forty_concurrent_calls_for_different_clients_lose_nothing() {
    let app = spawn_app().await;
    let clients: Vec<String> = (0..40).map(|i| format!("aa_load_{i}")).collect();
    for (i, c) in clients.iter().enumerate() {
        let seed = i as u64 * 2;
        app.finpass.set_client(
            c,
            vec![
                ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(20_000 + seed, seed)),
                ReportSpec::ready("SBI-FIP", "X2", Body::pdf(30_000 + seed, seed + 1)),
            ],
        );
    }

    let calls = clients
        .iter()
        .map(|c| app.store_owned(json!({"client_id": c})));
    let results = futures_util::future::join_all(calls).await;

    let mut expected = Vec::new();
    for (i, (status, body)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["summary"]["stored"], 2, "{body}");
        let seed = i as u64 * 2;
        for (r, spec) in reports(body).iter().zip([
            Body::pdf(20_000 + seed, seed),
            Body::pdf(30_000 + seed, seed + 1),
        ]) {
            assert_eq!(r["object"]["sha256"], spec.sha256());
            expected.push((
                r["object"]["key"].as_str().expect("key").to_owned(),
                spec.sha256(),
            ));
        }
    }
    let expected: Vec<(&str, String)> = expected
        .iter()
        .map(|(k, s)| (k.as_str(), s.clone()))
        .collect();
    app.assert_bucket_holds_exactly(&expected).await;
}
