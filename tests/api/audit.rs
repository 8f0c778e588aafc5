//! The audit trail's own guarantees (issue #18): append-only objects, events that survive a
//! caller hanging up, deletes recorded before and after, who acted and from where.

use std::time::{Duration, Instant};

use awc::http::Method;
use bytes::Bytes;
use finpass_gateway::{
    audit::{AuditSink, S3Sink},
    sandbox::{Body, LinkFault, ReportSpec},
};
use serde_json::{Value, json};

use crate::read_side::audit_events;
use crate::{
    auth::{AUDIENCE, ISSUER, PRIVATE, PUBLIC_PATH, claims, jwt_with},
    helpers::{TestApp, spawn_app, spawn_app_with},
};

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
        metrics: finpass_gateway::metrics::Metrics::new(),
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

async fn delete(app: &TestApp, path: &str) -> u16 {
    app.http
        .request(Method::DELETE, format!("{}{path}", app.address))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// The delete events of one path, intent first.
fn delete_events<'a>(events: &'a [Value], requested: Option<&str>) -> Vec<&'a Value> {
    let mut found: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "delete")
        .filter(|e| e["requested_statement_id"].as_str() == requested)
        .collect();
    found.sort_by_key(|e| e["outcome"] != "intent");
    found
}

/// A delete records its intent (what it is about to remove) before anything is removed and
/// its result (what was really removed: `ok`, `partial` or `failed`) after; deleting one
/// statement names the id asked for even when there was nothing to delete.
#[actix_web::test]
async fn a_delete_is_recorded_before_and_after_with_what_was_really_deleted() {
    let app = spawn_app().await;
    let client = "aa_audit_delete";
    app.finpass.set_client(
        client,
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 31))],
    );
    let stored = app.store_ok(&json!({"client_id": client})).await;
    let id = stored.reports[0]
        .statement_id
        .clone()
        .expect("statement id");

    let absent = "HDFC-FIP-00000000000000000000";
    assert_eq!(
        delete(&app, &format!("/v1/clients/{client}/statements/{absent}")).await,
        204
    );
    assert_eq!(
        delete(&app, &format!("/v1/clients/{client}/statements")).await,
        200
    );

    let events = audit_events(&app).await;
    let one = delete_events(&events, Some(absent));
    let outcomes: Vec<&Value> = one.iter().map(|e| &e["outcome"]).collect();
    assert_eq!(outcomes, [&json!("intent"), &json!("ok")], "{one:?}");
    for e in &one {
        assert_eq!(e["statement_ids"], json!([]), "nothing was there: {e}");
    }
    let all = delete_events(&events, None);
    let outcomes: Vec<&Value> = all.iter().map(|e| &e["outcome"]).collect();
    assert_eq!(outcomes, [&json!("intent"), &json!("ok")], "{all:?}");
    assert_eq!(all[0]["statement_ids"], json!([id]), "about to delete");
    assert_eq!(all[1]["statement_ids"], json!([id]), "really deleted");
    assert!(
        all[0]["at"].as_str() <= all[1]["at"].as_str(),
        "intent before result: {all:?}"
    );
    assert!(app.keys(&format!("statements/{client}/")).await.is_empty());
}

async fn list_as(app: &TestApp, client: &str, token: &str, forwarded: Option<&str>) -> u16 {
    let mut req = app
        .http
        .get(format!("{}/v1/clients/{client}/statements", app.address))
        .insert_header(("authorization", format!("Bearer {token}")));
    if let Some(f) = forwarded {
        req = req.insert_header(("x-forwarded-for", f));
    }
    req.send().await.expect("request").status().as_u16()
}

/// An event names the person who acted (the JWT's `sub`, and its `jti` when present) and where
/// the call came from: the peer's address, or the first `X-Forwarded-For` hop only when the
/// peer is a proxy listed in `TRUSTED_PROXIES` (anyone else could write that header).
#[actix_web::test]
async fn events_name_the_person_and_where_the_call_came_from() {
    for (trusted, forwarded, source) in [
        ("127.0.0.1", "203.0.113.7, 10.0.0.1", "203.0.113.7"),
        ("10.0.0.0/8,::1", "203.0.113.7", "127.0.0.1"),
    ] {
        let app = spawn_app_with(&[
            ("AUTH_DISABLED", "false"),
            ("JWT_PUBLIC_KEY_FILE", PUBLIC_PATH),
            ("JWT_ISSUER", ISSUER),
            ("JWT_AUDIENCE", AUDIENCE),
            ("TRUSTED_PROXIES", trusted),
        ])
        .await;
        let mut with_jti = claims("aa_person");
        with_jti["sub"] = json!("person-42");
        with_jti["jti"] = json!("token-7f3a");
        let token = jwt_with(PRIVATE, None, &with_jti);
        assert_eq!(
            list_as(&app, "aa_person", &token, Some(forwarded)).await,
            200
        );
        let without_jti = jwt_with(PRIVATE, None, &claims("aa_person"));
        assert_eq!(list_as(&app, "aa_person", &without_jti, None).await, 200);

        let mut events = audit_events(&app).await;
        events.sort_by_key(|e| e["jti"].is_null());
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0]["caller"], "user:aa_person");
        assert_eq!(events[0]["sub"], "person-42");
        assert_eq!(events[0]["jti"], "token-7f3a");
        assert_eq!(
            events[0]["source_address"], source,
            "TRUSTED_PROXIES={trusted}"
        );
        assert_eq!(events[1]["sub"], "user-1");
        assert!(
            events[1].get("jti").is_none(),
            "no jti claim: {}",
            events[1]
        );
        assert_eq!(events[1]["source_address"], "127.0.0.1");
    }
}

/// A store's event is written whether or not the caller is still there: a caller that hangs
/// up mid-transfer leaves the transfer running (it is detached), and its audit event with it.
#[actix_web::test]
async fn a_store_whose_caller_hangs_up_mid_transfer_is_still_audited() {
    use tokio::io::AsyncWriteExt;

    let app = spawn_app().await;
    let client = "aa_audit_hangup";
    let body = Body::Pdf {
        size: 30 << 16,
        seed: 41,
        chunked: true,
    };
    app.finpass.set_client(
        client,
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_faults(vec![LinkFault::Slow(Duration::from_millis(50))]),
        ],
    );
    let payload = json!({"client_id": client}).to_string();
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    socket
        .write_all(
            format!(
                "POST /v1/statements HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
                payload.len()
            )
            .as_bytes(),
        )
        .await
        .expect("send the request");
    let started = Instant::now();
    while app.finpass.downloads(client) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no download began"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The caller hangs up mid-transfer.
    drop(socket);

    let started = Instant::now();
    let event = loop {
        let events = audit_events(&app).await;
        if let Some(e) = events
            .into_iter()
            .find(|e| e["action"] == "store" && e["client_id"] == client)
        {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no store event for a caller that hung up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(event["outcome"], "ok", "{event}");
    let keys = app.keys(&format!("statements/{client}/")).await;
    assert_eq!(keys.len(), 1, "the transfer finished: {keys:?}");
    let id = keys[0]
        .rsplit('/')
        .next()
        .and_then(|n| n.strip_suffix(".pdf"))
        .expect("statement id");
    assert_eq!(event["statement_ids"], json!([id]), "{event}");
}
