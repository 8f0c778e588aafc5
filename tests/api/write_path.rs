//! Write path v2: every statement exactly identified and immutable, one S3 write per report.

use finpass_gateway::{
    api::StatementsResponse,
    domain::ReportStatus,
    sandbox::{Body, ReportSpec},
};
use serde_json::json;

use crate::{
    helpers::{TestConfig, spawn_app, spawn_app_with},
    process::GatewayProcess,
};

fn keys_of(answer: &StatementsResponse) -> Vec<String> {
    answer
        .reports
        .iter()
        .map(|r| r.object.as_ref().expect("stored").key.clone())
        .collect()
}

#[actix_web::test]
async fn two_statements_of_one_account_are_two_entries_under_distinct_keys() {
    let app = spawn_app().await;
    let april = Body::pdf(30_000, 41);
    let may = Body::pdf(31_000, 42);
    app.finpass.set_client(
        "aa_two",
        vec![
            ReportSpec::ready("HDFC-FIP", "XXXXXX1234", april.clone()),
            ReportSpec::ready("HDFC-FIP", "XXXXXX1234", may.clone()),
        ],
    );

    let answer = app.store_ok(&json!({"client_id": "aa_two"})).await;

    assert_eq!(answer.reports.len(), 2, "never merged");
    let k1 = app
        .assert_stored(&answer.reports[0], "aa_two", &april)
        .await;
    let k2 = app.assert_stored(&answer.reports[1], "aa_two", &may).await;
    assert_ne!(k1, k2);
    app.assert_bucket_holds_exactly(&[(&k1, april.sha256()), (&k2, may.sha256())])
        .await;
}

#[actix_web::test]
async fn the_same_path_on_two_hosts_is_two_statements_with_the_right_bytes() {
    let app = spawn_app_with(
        TestConfig::default()
            .link_host("fip-a-bucket.s3.test")
            .link_host("fip-b-bucket.s3.test"),
    )
    .await;
    let a = Body::pdf(20_000, 51);
    let b = Body::pdf(20_000, 52);
    app.finpass.set_client(
        "aa_hosts",
        vec![
            ReportSpec::ready("FIP-A", "X1", a.clone())
                .served_at("fip-a-bucket.s3.test", "statement.pdf"),
            ReportSpec::ready("FIP-B", "X1", b.clone())
                .served_at("fip-b-bucket.s3.test", "statement.pdf"),
        ],
    );

    let answer = app.store_ok(&json!({"client_id": "aa_hosts"})).await;

    let ka = app.assert_stored(&answer.reports[0], "aa_hosts", &a).await;
    let kb = app.assert_stored(&answer.reports[1], "aa_hosts", &b).await;
    assert_ne!(ka, kb);
    app.assert_bucket_holds_exactly(&[(&ka, a.sha256()), (&kb, b.sha256())])
        .await;
}

#[actix_web::test]
async fn a_regenerated_report_gets_a_new_key_and_the_old_key_keeps_its_bytes() {
    let app = spawn_app().await;
    let first = Body::pdf(25_000, 61);
    let refreshed = Body::pdf(26_000, 62);
    app.finpass.set_client(
        "aa_regen",
        vec![ReportSpec::ready("HDFC-FIP", "X1", first.clone())],
    );
    let before = app.store_ok(&json!({"client_id": "aa_regen"})).await;
    let old_key = app
        .assert_stored(&before.reports[0], "aa_regen", &first)
        .await;

    app.finpass.regenerate("aa_regen", 0, refreshed.clone());
    let after = app.store_ok(&json!({"client_id": "aa_regen"})).await;

    let new_key = app
        .assert_stored(&after.reports[0], "aa_regen", &refreshed)
        .await;
    assert_ne!(old_key, new_key, "a regenerated report is a new statement");
    app.assert_bucket_holds_exactly(&[(&old_key, first.sha256()), (&new_key, refreshed.sha256())])
        .await;
}

#[actix_web::test]
async fn an_object_with_foreign_metadata_at_the_key_is_never_answered_as_ours() {
    let app = spawn_app().await;
    let body = Body::pdf(15_000, 71);
    app.finpass.set_client(
        "aa_conflict",
        vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
    );
    let first = app.store_ok(&json!({"client_id": "aa_conflict"})).await;
    let key = app
        .assert_stored(&first.reports[0], "aa_conflict", &body)
        .await;
    // Someone else's object lands at the key (a misconfigured writer, another tenant).
    let foreign = b"%PDF-1.7 somebody else's statement".to_vec();
    app.s3_client
        .put_object()
        .bucket(&app.bucket)
        .key(&key)
        .metadata("client-id", "aa_intruder")
        .metadata("fip-id", "HDFC-FIP")
        .metadata("source-version", "etag:\"x\"")
        .body(foreign.clone().into())
        .send()
        .await
        .expect("put foreign object");

    // Once from this process (conditional GET) and once from a fresh process.
    let again = app.store_ok(&json!({"client_id": "aa_conflict"})).await;
    let gateway = GatewayProcess::start(&app, &[]).await;
    let (status, fresh) = app
        .store_at(&gateway.address, &json!({"client_id": "aa_conflict"}))
        .await;

    for answer in [&again, &fresh.expect("an answer")] {
        let report = &answer.reports[0];
        assert_eq!(report.status, ReportStatus::Failed, "{report:?}");
        let code = report.error.as_ref().map(|e| e.code);
        assert_eq!(
            code,
            Some(finpass_gateway::domain::FailureCode::StorageConflict)
        );
    }
    assert_eq!(status, 200);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&foreign));
    app.assert_bucket_holds_exactly(&[(&key, sha)]).await;
}

#[actix_web::test]
async fn a_repeat_call_downloads_nothing() {
    let app = spawn_app().await;
    let a = Body::pdf(40_000, 81);
    let b = Body::pdf(41_000, 82);
    app.finpass.set_client(
        "aa_again",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", a.clone()),
            ReportSpec::ready("SBI-FIP", "X2", b.clone()),
        ],
    );
    let first = app.store_ok(&json!({"client_id": "aa_again"})).await;
    assert_eq!(app.finpass.downloads("aa_again"), 2);

    let second = app.store_ok(&json!({"client_id": "aa_again"})).await;

    assert_eq!(
        app.finpass.downloads("aa_again"),
        2,
        "zero bodies served on the repeat call"
    );
    assert_eq!(
        app.finpass.not_modified("aa_again"),
        2,
        "both links answered 304"
    );
    assert_eq!(keys_of(&first), keys_of(&second));
}

#[actix_web::test]
async fn staging_leftovers_of_a_crash_are_swept_at_start_up() {
    let app = spawn_app().await;
    let leftover = "_staging/finpass-gateway/crashed-upload.pdf";
    app.s3_client
        .put_object()
        .bucket(&app.bucket)
        .key(leftover)
        .body(b"%PDF-1.7 half".to_vec().into())
        .send()
        .await
        .expect("put leftover");
    assert_eq!(app.keys("_staging/").await, [leftover]);

    // A replica starting now sweeps leftovers older than STAGING_SWEEP_AGE_SECONDS before it
    // serves; healthy means swept.
    let _replica = GatewayProcess::start(&app, &[("STAGING_SWEEP_AGE_SECONDS", "0")]).await;

    assert!(app.keys("_staging/").await.is_empty(), "staging is empty");
}

/// Three replicas on one bucket, 24 concurrent calls for 4 clients (each with one single-PUT
/// report and one multipart report of unknown size): exactly 8 statements with the right
/// bytes, nothing else in the bucket, no open multipart upload.
#[actix_web::test]
async fn three_replicas_racing_on_one_bucket_store_each_statement_exactly_once() {
    let app = spawn_app().await;
    let small_multipart = [
        ("MULTIPART_THRESHOLD_BYTES", "1048576"),
        ("MULTIPART_PART_BYTES", "5242880"),
    ];
    let replicas = futures_util::future::join_all(
        (0..3).map(|_| GatewayProcess::start(&app, &small_multipart)),
    )
    .await;
    let clients: Vec<String> = (0..4).map(|i| format!("aa_replica_{i}")).collect();
    let mut expected = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let seed = 90 + i as u64 * 2;
        let small = Body::pdf(200_000 + seed, seed);
        let large = Body::Pdf {
            size: (6 << 20) + seed,
            seed: seed + 1,
            chunked: true,
        };
        expected.push((c.clone(), [small.clone(), large.clone()]));
        app.finpass.set_client(
            c,
            vec![
                ReportSpec::ready("HDFC-FIP", "X1", small),
                ReportSpec::ready("SBI-FIP", "X2", large),
            ],
        );
    }

    let requests: Vec<(&str, serde_json::Value)> = (0..24)
        .map(|n| {
            (
                replicas[n % 3].address.as_str(),
                json!({"client_id": clients[n % 4]}),
            )
        })
        .collect();
    let calls = requests
        .iter()
        .map(|(address, body)| app.store_at(address, body));
    let answers = futures_util::future::join_all(calls).await;

    let mut keys = std::collections::BTreeSet::new();
    for (n, (status, answer)) in answers.into_iter().enumerate() {
        assert_eq!(status, 200);
        let answer = answer.expect("an answer");
        let (_, bodies) = &expected[n % 4];
        for (report, body) in answer.reports.iter().zip(bodies) {
            let object = report
                .object
                .as_ref()
                .unwrap_or_else(|| panic!("not stored: {report:?}"));
            assert_eq!(object.sha256, body.sha256());
            keys.insert((object.key.clone(), body.sha256()));
        }
    }
    assert_eq!(
        keys.len(),
        8,
        "one key per statement, whichever replica answered"
    );
    let expected: Vec<(&str, String)> = keys.iter().map(|(k, s)| (k.as_str(), s.clone())).collect();
    app.assert_bucket_holds_exactly(&expected).await;
}
