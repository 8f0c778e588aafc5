//! The audit trail's own guarantees (issue #18): append-only objects, events that survive a
//! caller hanging up, deletes recorded before and after, who acted and from where.

use bytes::Bytes;
use finpass_gateway::audit::{AuditSink, S3Sink};

use crate::helpers::spawn_app;

/// Audit objects are written with `If-None-Match: *`: an object already at the key is never
/// replaced (s3s-fs and AWS enforce it), so the gateway's role cannot rewrite history even by
/// accident.
#[actix_web::test]
async fn an_existing_audit_object_is_never_overwritten() {
    let app = spawn_app().await;
    let sink = S3Sink {
        client: app.s3_client.clone(),
        bucket: app.bucket.clone(),
        encryption: None,
    };
    let key = "audit/2026/01/01/existing.jsonl".to_owned();
    let first = b"{\"action\":\"store\"}\n".to_vec();
    sink.write(key.clone(), first.clone())
        .await
        .expect("a new audit object is written");
    let again = sink
        .write(key.clone(), b"{\"forged\":true}\n".to_vec())
        .await;
    assert!(
        again.is_err(),
        "a second write to an existing key must be refused"
    );
    let stored = app
        .s3_client
        .get_object()
        .bucket(&app.bucket)
        .key(&key)
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(stored, Bytes::from(first), "the first event is intact");
}
