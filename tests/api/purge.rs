//! Purges that leave nothing (issue #18): after a purge, no version and no delete marker of
//! anything the gateway wrote for the client survives anywhere in the bucket (statements,
//! staging leftovers), whichever write path stored it. `.ci/moto.sh` runs these against moto,
//! which has bucket versioning (s3s-fs and Garage have none: there they check the plain
//! purge), with `TEST_S3_EXPECT_VERSIONING=1` so they cannot pass there without it.

use std::time::{Duration, Instant};

use awc::http::Method;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use bytes::Bytes;
use finpass_gateway::sandbox::{Body, LinkFault, ReportSpec, SandboxStatus};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, TestConfig, reports, spawn_app, spawn_app_with},
    process::GatewayProcess,
};

/// Turns versioning on and says whether it took effect, by its behaviour (GetBucketVersioning
/// answers vary): two PUTs of one key must leave two versions. The probe is removed again.
pub async fn enable_versioning(app: &TestApp) -> bool {
    let _ = app
        .s3_client
        .put_bucket_versioning()
        .bucket(&app.bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await;
    let probe = "probe/versioning";
    for body in [&b"probe-1"[..], &b"probe-2"[..]] {
        app.s3_client
            .put_object()
            .bucket(&app.bucket)
            .key(probe)
            .body(Bytes::from_static(body).into())
            .send()
            .await
            .expect("put probe");
    }
    let versions = app
        .s3_client
        .list_object_versions()
        .bucket(&app.bucket)
        .prefix(probe)
        .send()
        .await
        .ok();
    let versioned = versions.as_ref().is_some_and(|v| v.versions().len() == 2);
    if std::env::var("TEST_S3_EXPECT_VERSIONING").is_ok_and(|v| v == "1") {
        assert!(
            versioned,
            "this S3 server was expected to enable versioning"
        );
    }
    match versions.filter(|_| versioned) {
        Some(out) => {
            for v in out.versions() {
                app.s3_client
                    .delete_object()
                    .bucket(&app.bucket)
                    .key(probe)
                    .set_version_id(v.version_id().map(str::to_owned))
                    .send()
                    .await
                    .expect("remove probe version");
            }
        }
        None => {
            app.s3_client
                .delete_object()
                .bucket(&app.bucket)
                .key(probe)
                .send()
                .await
                .expect("remove probe");
        }
    }
    versioned
}

/// Every object version and every delete marker in the bucket outside the audit trail and
/// the purge markers (which name a hash of the client id, see ADR 0005), as `key` /
/// `marker:key` (on a server without versioning: every key).
pub async fn everything_but_audit(app: &TestApp, versioned: bool) -> Vec<String> {
    let mut found = Vec::new();
    if !versioned {
        found = app.keys("").await;
    } else {
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let out = app
                .s3_client
                .list_object_versions()
                .bucket(&app.bucket)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .expect("list object versions");
            found.extend(
                out.versions()
                    .iter()
                    .filter_map(|v| v.key())
                    .map(str::to_owned),
            );
            found.extend(
                out.delete_markers()
                    .iter()
                    .filter_map(|m| m.key())
                    .map(|k| format!("marker:{k}")),
            );
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            version_marker = out.next_version_id_marker().map(str::to_owned);
        }
    }
    found.retain(|k| {
        let k = k.strip_prefix("marker:").unwrap_or(k);
        !k.starts_with("audit/") && !k.starts_with("_purges/")
    });
    found.sort();
    found
}

async fn delete(app: &TestApp, path: &str) -> (u16, serde_json::Value) {
    let mut resp = app
        .http
        .request(Method::DELETE, format!("{}{path}", app.address))
        .send()
        .await
        .expect("request");
    let body = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or_default(),
    )
}

/// One report through each write path: a small report of known size (one direct PUT where
/// the server takes checksum trailers, else a staging PUT and a copy), one of unknown size
/// (chunked: a multipart upload to staging, then a copy) and one of known size above
/// `MULTIPART_THRESHOLD_BYTES` (multipart to staging, then a copy). After purging the three
/// clients nothing of theirs is left: no statement, no staging object, no noncurrent version,
/// no delete marker.
#[actix_web::test]
async fn a_purge_after_stores_through_every_path_leaves_no_version_anywhere() {
    let app = spawn_app_with(TestConfig::default().small_multipart()).await;
    let versioned = enable_versioning(&app).await;
    let clients = [
        ("aa_path_small", Body::pdf(4_000, 1)),
        (
            "aa_path_chunked",
            Body::Pdf {
                size: (6 << 20) + 123,
                seed: 2,
                chunked: true,
            },
        ),
        ("aa_path_big", Body::pdf((6 << 20) + 456, 3)),
    ];
    for (client, body) in &clients {
        app.finpass.set_client(
            client,
            vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
        );
        // With an end of life, so each statement also has an expiry-index entry (its key
        // names the client and the statement): the purge must remove that too.
        let answer = app
            .store_ok(&json!({"client_id": client, "retain_until": "2099-01-01T00:00:00Z"}))
            .await;
        app.assert_stored(&answer.reports[0], client, body).await;
    }
    let before = everything_but_audit(&app, versioned).await;
    assert_eq!(
        before
            .iter()
            .filter(|k| k.starts_with("statements/"))
            .count(),
        3,
        "one version of each statement before the purge: {before:?}"
    );
    assert_eq!(
        before
            .iter()
            .filter(|k| k.starts_with("_retention/"))
            .count(),
        3,
        "one expiry-index entry of each statement before the purge: {before:?}"
    );
    for (client, _) in &clients {
        let (status, answer) = delete(&app, &format!("/v1/clients/{client}/statements")).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["deleted"], 1, "{answer}");
    }
    assert_eq!(
        everything_but_audit(&app, versioned).await,
        Vec::<String>::new(),
        "no version and no delete marker left outside the audit trail (versioned: {versioned})"
    );
    assert_eq!(app.open_multipart_uploads().await, 0);
}

/// Polls `condition` until it holds; fails after `within` (never a fixed sleep).
async fn until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < within, "{what}: not after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The client's statements as the read side lists them.
async fn listed(app: &TestApp, client: &str) -> Vec<Value> {
    let (status, _, body) = app.get(&format!("/v1/clients/{client}/statements")).await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("json");
    list["statements"].as_array().expect("statements").clone()
}

/// Once the store waiting on `client`'s PENDING report has made its first Finpass call,
/// purges the client, and only then turns the report READY (so the store's next poll stores it
/// after the purge listed). Answers the purge's status and body.
async fn purge_then_turn_ready(
    app: &TestApp,
    client: &str,
    calls_before: usize,
    body: &Body,
) -> (u16, Value) {
    until(
        "the store's first Finpass call",
        Duration::from_secs(60),
        || app.finpass.api_calls() > calls_before,
    )
    .await;
    let purge = delete(app, &format!("/v1/clients/{client}/statements")).await;
    app.finpass.set_client(
        client,
        vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
    );
    purge
}

/// What a store answered for its one report, and what the purge said it deleted: either the
/// store saw the purge and removed its statement (`purged`), or the purge found it stored
/// and deleted it. Nothing else is allowed: a statement that outlives the purge.
fn assert_purge_won(store: &Value, purge: &Value) {
    let report = &reports(store)[0];
    let purged = report["status"] == "failed" && report["error"]["code"] == "purged";
    let deleted_by_purge = report["status"] == "stored" && purge["deleted"] == 1;
    assert!(
        purged || deleted_by_purge,
        "the store began before the purge answered, yet: store {store}, purge {purge}"
    );
}

/// Issue #18's first reproduction: a store waiting for a PENDING report when the purge comes.
/// The report turns READY only after the purge answered, so the store writes after the
/// purge listed: it must see the purge, remove what it wrote and answer `purged`.
#[actix_web::test]
async fn a_purge_wins_over_a_store_waiting_for_a_pending_report() {
    let app = spawn_app().await;
    let client = "aa_race_pending";
    let body = Body::pdf(3_000, 21);
    app.finpass.set_client(
        client,
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_status(SandboxStatus::Pending { polls: usize::MAX }),
        ],
    );
    let calls_before = app.finpass.api_calls();
    let store = app.store_owned(json!({"client_id": client, "wait_seconds": 20}));
    let purge = purge_then_turn_ready(&app, client, calls_before, &body);
    let ((status, store), (purge_status, purge)) = futures_util::future::join(store, purge).await;
    assert_eq!((status, purge_status), (200, 200), "{store} {purge}");
    assert_eq!(
        purge["deleted"], 0,
        "nothing was stored when the purge listed"
    );
    let report = &reports(&store)[0];
    assert_eq!(report["status"], "failed", "{store}");
    assert_eq!(report["error"]["code"], "purged", "{store}");
    assert!(report.get("object").is_none(), "{store}");
    assert_eq!(listed(&app, client).await, Vec::<Value>::new());
    assert!(app.keys(&format!("statements/{client}/")).await.is_empty());
    assert!(
        app.keys(&format!("_staging/finpass-gateway/{client}/"))
            .await
            .is_empty()
    );
}

/// Issue #18's second reproduction: a purge while a large report is being downloaded.
#[actix_web::test]
async fn a_purge_wins_over_a_store_in_mid_transfer() {
    let app = spawn_app().await;
    let client = "aa_race_large";
    // 40 chunks of 64 KiB, 100 ms apart: about 4 s in transfer.
    app.finpass.set_client(
        client,
        vec![
            ReportSpec::ready(
                "HDFC-FIP",
                "X1",
                Body::Pdf {
                    size: 40 << 16,
                    seed: 22,
                    chunked: true,
                },
            )
            .with_faults(vec![LinkFault::Slow(Duration::from_millis(100))]),
        ],
    );
    let store = app.store_owned(json!({"client_id": client}));
    let purge = async {
        until("the download to start", Duration::from_secs(60), || {
            app.finpass.downloads(client) > 0
        })
        .await;
        delete(&app, &format!("/v1/clients/{client}/statements")).await
    };
    let ((status, store), (purge_status, purge)) = futures_util::future::join(store, purge).await;
    assert_eq!((status, purge_status), (200, 200), "{store} {purge}");
    assert_purge_won(&store, &purge);
    assert_eq!(listed(&app, client).await, Vec::<Value>::new());
    assert!(app.keys(&format!("statements/{client}/")).await.is_empty());
    assert!(
        app.keys(&format!("_staging/finpass-gateway/{client}/"))
            .await
            .is_empty()
    );
    assert_eq!(app.open_multipart_uploads().await, 0);
}

/// Two replicas on one bucket: the store runs in a separate gateway process, the purge in
/// this one. Nothing but S3 connects them.
#[actix_web::test]
async fn a_purge_on_one_replica_wins_over_a_store_on_another() {
    let app = spawn_app().await;
    let other = GatewayProcess::start(&app, &[]).await;
    let client = "aa_race_replicas";
    let body = Body::pdf(3_000, 23);
    app.finpass.set_client(
        client,
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_status(SandboxStatus::Pending { polls: usize::MAX }),
        ],
    );
    let calls_before = app.finpass.api_calls();
    let store = async {
        let mut resp = app
            .http
            .post(format!("{}/v1/statements", other.address))
            .send_json(&json!({"client_id": client, "wait_seconds": 20}))
            .await
            .expect("store on the other replica");
        let status = resp.status().as_u16();
        let body = resp.body().limit(1 << 20).await.expect("body");
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap_or_default(),
        )
    };
    let purge = purge_then_turn_ready(&app, client, calls_before, &body);
    let ((status, store), (purge_status, purge)) = futures_util::future::join(store, purge).await;
    assert_eq!(
        (status, purge_status),
        (200, 200),
        "{store} {purge}\n{}",
        other.log_text()
    );
    let report = &reports(&store)[0];
    assert_eq!(report["error"]["code"], "purged", "{store}");
    assert_eq!(listed(&app, client).await, Vec::<Value>::new());
    assert!(app.keys(&format!("statements/{client}/")).await.is_empty());
}
