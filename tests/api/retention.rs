//! Consent-bound retention (issue #18): `retain_until` is validated, saved with the statement
//! and shown by the read routes; the retention sweep deletes every version of what has
//! expired, audited as `system:retention`, and nothing else, at a cost that follows what has
//! expired. Against the real S3 test server (s3s-fs; moto with versioning in `.ci/moto.sh`).

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use aws_smithy_types::{DateTime, date_time::Format};
use finpass_gateway::{
    config::Settings,
    retention::Sweeper,
    sandbox::{Body, ReportSpec},
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_with};
use crate::read_side::audit_events;

const INDEX: &str = "_retention/finpass-gateway/";

/// To the second, as the gateway shows `retain_until`.
fn rfc3339(t: SystemTime) -> String {
    DateTime::from_secs(DateTime::from(t).secs())
        .fmt(Format::DateTime)
        .expect("format")
}

fn parse_time(s: &str) -> SystemTime {
    SystemTime::try_from(DateTime::from_str(s, Format::DateTime).expect("RFC 3339")).expect("time")
}

/// The sweep as `sweep-retention` builds it, from the environment the test's gateway runs with.
async fn sweeper(app: &TestApp) -> Sweeper {
    let env: HashMap<String, String> = app.gateway_env.iter().cloned().collect();
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).expect("settings");
    Sweeper::build(&settings).await.expect("sweeper")
}

async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let (status, _, body) = app.get(path).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Versions and delete markers of every key under `prefix` whose name contains `part` (`""`:
/// every key).
pub(crate) async fn versions_matching(app: &TestApp, prefix: &str, part: &str) -> (usize, usize) {
    let out = app
        .s3_client
        .list_object_versions()
        .bucket(&app.bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list object versions");
    let matching = |k: Option<&str>| k.is_some_and(|k| k.contains(part));
    (
        out.versions().iter().filter(|v| matching(v.key())).count(),
        out.delete_markers()
            .iter()
            .filter(|m| matching(m.key()))
            .count(),
    )
}

async fn stored_ids(app: &TestApp, body: Value) -> Vec<String> {
    app.store_ok(&body)
        .await
        .reports
        .iter()
        .filter_map(|r| r.statement_id.clone())
        .collect()
}

#[actix_web::test]
async fn a_bad_or_past_retain_until_is_refused_before_finpass_is_called() {
    let app = spawn_app().await;
    let calls = app.finpass.api_calls();
    for bad in [
        "tomorrow",
        "2031-01-01",
        "2031-02-30T00:00:00Z",
        "2020-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
    ] {
        let (status, problem) = app
            .store(&json!({"client_id": "aa_demo_ready", "retain_until": bad}))
            .await;
        assert_problem(status, &problem, 400, "invalid_request");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("retain_until ")),
            "{bad}: {problem}"
        );
    }
    assert_eq!(app.finpass.api_calls(), calls, "Finpass was not called");
}

#[actix_web::test]
async fn the_read_routes_show_retain_until_and_a_later_store_keeps_the_first() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_ret_kept",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(3_000, 11))],
    );
    app.finpass.set_client(
        "aa_ret_none",
        vec![ReportSpec::ready("HDFC-FIP", "X2", Body::pdf(3_000, 12))],
    );
    // Any offset is accepted and shown in UTC.
    let ids = stored_ids(
        &app,
        json!({"client_id": "aa_ret_kept", "retain_until": "2031-01-01T05:30:00+05:30"}),
    )
    .await;
    assert_eq!(ids.len(), 1);
    let path = format!("/v1/clients/aa_ret_kept/statements/{}", ids[0]);
    let (status, statement) = get_json(&app, &path).await;
    assert_eq!(status, 200, "{statement}");
    assert_eq!(statement["retain_until"], "2031-01-01T00:00:00Z");
    // Stored again under a consent with a longer data life: the statement is immutable and
    // keeps the end of life it was stored with.
    let again = stored_ids(
        &app,
        json!({"client_id": "aa_ret_kept", "retain_until": "2032-06-30T12:00:00Z"}),
    )
    .await;
    assert_eq!(again, ids);
    let (_, list) = get_json(&app, "/v1/clients/aa_ret_kept/statements").await;
    assert_eq!(
        list["statements"][0]["retain_until"],
        "2031-01-01T00:00:00Z"
    );
    assert_eq!(
        app.keys(INDEX).await,
        vec![format!("{INDEX}2031-01-01/aa_ret_kept/{}", ids[0])],
        "one expiry index entry, under the day of the first retain_until"
    );
    // Without retain_until (and no STATEMENT_RETENTION_DAYS): kept until deleted.
    let none = stored_ids(&app, json!({"client_id": "aa_ret_none"})).await;
    let (_, statement) = get_json(
        &app,
        &format!("/v1/clients/aa_ret_none/statements/{}", none[0]),
    )
    .await;
    assert_eq!(statement["retain_until"], Value::Null, "{statement}");
    assert_eq!(
        app.keys(INDEX).await.len(),
        1,
        "no index entry without an end of life"
    );
}

#[actix_web::test]
async fn statement_retention_days_is_the_default_end_of_life() {
    let app = spawn_app_with(&[("STATEMENT_RETENTION_DAYS", "30")]).await;
    let before = SystemTime::now();
    let ids = stored_ids(&app, json!({"client_id": "aa_demo_ready"})).await;
    let after = SystemTime::now();
    let (_, statement) = get_json(
        &app,
        &format!("/v1/clients/aa_demo_ready/statements/{}", ids[0]),
    )
    .await;
    let until = parse_time(statement["retain_until"].as_str().expect("retain_until"));
    let days = Duration::from_secs(30 * 86_400);
    assert!(
        until + Duration::from_secs(1) >= before + days && until <= after + days,
        "{statement}"
    );
}

/// The sweep deletes every version of each statement whose retain_until has passed, and its
/// index entry, audited as `system:retention`; statements with a later or no end of life are
/// untouched; an entry whose statement is gone is dropped. Its listing stops at
/// the first later day: with one entry per page it makes one request per due entry plus one,
/// however many statements are kept.
#[actix_web::test]
async fn a_sweep_deletes_every_version_of_what_has_expired_and_nothing_else() {
    let app = spawn_app().await;
    let versioned = crate::purge::enable_versioning(&app).await;
    let now = SystemTime::now();
    let soon = rfc3339(now + Duration::from_secs(3600));
    let later = rfc3339(now + Duration::from_secs(10 * 86_400));
    for (client, seed, reports) in [
        ("aa_ret_expired", 21, 1),
        ("aa_ret_purged", 22, 1),
        ("aa_ret_later", 23, 3),
        ("aa_ret_forever", 24, 1),
    ] {
        let specs = (0..reports)
            .map(|i| {
                ReportSpec::ready(
                    &format!("FIP{i}"),
                    "X1",
                    Body::pdf(2_000 + i, seed * 10 + i),
                )
            })
            .collect();
        app.finpass.set_client(client, specs);
    }
    let expired = stored_ids(
        &app,
        json!({"client_id": "aa_ret_expired", "retain_until": soon}),
    )
    .await;
    let orphaned = stored_ids(
        &app,
        json!({"client_id": "aa_ret_purged", "retain_until": soon}),
    )
    .await;
    let kept = stored_ids(
        &app,
        json!({"client_id": "aa_ret_later", "retain_until": later}),
    )
    .await;
    let forever = stored_ids(&app, json!({"client_id": "aa_ret_forever"})).await;
    assert_eq!((expired.len(), kept.len(), forever.len()), (1, 3, 1));
    // An entry whose statement is gone without a purge (a crash between the entry and the
    // statement, or a delete outside the gateway): the sweep drops it. (A purge through the
    // API removes the entry itself: `purge::a_purge_after_stores_through_every_path_…`.)
    app.s3_client
        .delete_object()
        .bucket(&app.bucket)
        .key(format!("statements/aa_ret_purged/{}.pdf", orphaned[0]))
        .send()
        .await
        .expect("delete the statement behind the gateway's back");

    // Now: nothing has expired. Today's entries are looked at (the expired one is left for
    // later today, the orphaned one's entry is dropped); unless `soon` is already tomorrow,
    // when the first entry's day is later and one listing request ends the run.
    let sweeper = sweeper(&app).await;
    let early = sweeper.sweep_at(now, 1).await.expect("sweep");
    let same_day = soon.get(..10) == rfc3339(now).get(..10);
    let expected = if same_day { (2, 0, 1, 1) } else { (0, 0, 0, 0) };
    assert_eq!(
        (early.due, early.deleted, early.dropped, early.kept),
        expected,
        "{early:?}"
    );
    assert_eq!(early.list_requests, early.due + 1, "{early:?}");

    let two_hours_on = now + Duration::from_secs(2 * 3600);
    let report = sweeper.sweep_at(two_hours_on, 1).await.expect("sweep");
    assert_eq!(
        (
            report.deleted,
            early.dropped + report.dropped,
            report.kept,
            report.failed
        ),
        (1, 1, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.list_requests, report.due + 1, "{report:?}");

    let (status, _) = get_json(
        &app,
        &format!("/v1/clients/aa_ret_expired/statements/{}", expired[0]),
    )
    .await;
    assert_eq!(status, 404, "the expired statement is gone");
    assert!(app.keys("statements/aa_ret_expired/").await.is_empty());
    for id in &kept {
        let (status, s) =
            get_json(&app, &format!("/v1/clients/aa_ret_later/statements/{id}")).await;
        assert_eq!(
            (status, s["retain_until"].as_str()),
            (200, Some(later.as_str()))
        );
    }
    let (status, _) = get_json(
        &app,
        &format!("/v1/clients/aa_ret_forever/statements/{}", forever[0]),
    )
    .await;
    assert_eq!(status, 200, "a statement without an end of life stays");
    let index = app.keys(INDEX).await;
    assert_eq!(
        index.len(),
        3,
        "only the later statements' entries are left: {index:?}"
    );
    assert!(
        index.iter().all(|k| k.contains("/aa_ret_later/")),
        "{index:?}"
    );
    if versioned {
        assert_eq!(
            versions_matching(&app, "statements/", "/aa_ret_expired/").await,
            (0, 0),
            "no version and no delete marker of the expired statement"
        );
        assert_eq!(
            versions_matching(&app, INDEX, "/aa_ret_").await.1,
            0,
            "no delete marker in the index"
        );
    }
    let events: Vec<Value> = audit_events(&app)
        .await
        .into_iter()
        .filter(|e| e["caller"] == "system:retention")
        // Like every delete, the sweep records its intent first (tests/api/audit.rs).
        .filter(|e| e["outcome"] != "intent")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["action"], "delete");
    assert_eq!(events[0]["client_id"], "aa_ret_expired");
    assert_eq!(events[0]["statement_ids"], json!(expired));
    assert_eq!(events[0]["outcome"], "ok");

    // Idempotent: a second run finds nothing due.
    let report = sweeper.sweep_at(two_hours_on, 1).await.expect("sweep");
    assert_eq!((report.due, report.deleted), (0, 0), "{report:?}");
}

/// `finpass-gateway sweep-retention` is that sweep as a process with the server's
/// environment: it exits 0 and the statement whose retain_until has passed is gone.
#[actix_web::test]
async fn the_sweep_retention_subcommand_deletes_what_has_expired() {
    let app = spawn_app().await;
    // retain_until must be in the future when stored: a few seconds, then wait for the clock
    // (a condition on time itself, polled) to pass it.
    let until = SystemTime::now() + Duration::from_secs(3);
    let ids = stored_ids(
        &app,
        json!({"client_id": "aa_demo_ready", "retain_until": rfc3339(until)}),
    )
    .await;
    let path = format!("/v1/clients/aa_demo_ready/statements/{}", ids[0]);
    assert_eq!(get_json(&app, &path).await.0, 200);
    let started = Instant::now();
    while SystemTime::now() <= until + Duration::from_secs(1) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the clock did not move"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_finpass-gateway"))
        .arg("sweep-retention")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(app.gateway_env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run sweep-retention");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{} statement(s) deleted", ids.len())),
        "{stdout}"
    );
    assert_eq!(get_json(&app, &path).await.0, 404, "gone after one sweep");
}
