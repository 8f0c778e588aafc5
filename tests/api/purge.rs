//! Purges that leave nothing (issue #18): after a purge, no version and no delete marker of
//! anything the gateway wrote for the client survives anywhere in the bucket (statements,
//! staging leftovers), whichever write path stored it. `.ci/moto.sh` runs these against moto,
//! which has bucket versioning (s3s-fs and Garage have none: there they check the plain
//! purge), with `TEST_S3_EXPECT_VERSIONING=1` so they cannot pass there without it.

use awc::http::Method;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use bytes::Bytes;
use finpass_gateway::sandbox::{Body, ReportSpec};
use serde_json::json;

use crate::helpers::{TestApp, TestConfig, spawn_app_with};

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

/// Every object version and every delete marker in the bucket outside the audit trail, as
/// `key` / `marker:key` (on a server without versioning: every key).
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
    found.retain(|k| !k.starts_with("audit/") && !k.starts_with("marker:audit/"));
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
        let answer = app.store_ok(&json!({"client_id": client})).await;
        app.assert_stored(&answer.reports[0], client, body).await;
    }
    assert_eq!(
        everything_but_audit(&app, versioned)
            .await
            .iter()
            .filter(|k| k.starts_with("statements/"))
            .count(),
        3,
        "one version of each statement before the purge"
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
