//! The read side over HTTP (issue #12): list, describe, stream, download links, purge, and the
//! audit trail of every call, against a real S3 server. One test per "Must show" bullet.

use std::time::{Duration, Instant, SystemTime};

use awc::http::Method;
use aws_smithy_types::{DateTime, date_time::Format};
use bytes::Bytes;
use finpass_gateway::{
    api::StatementsResponse,
    sandbox::{Body, ReportSpec},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    auth::{AUDIENCE, ISSUER, PRIVATE, PUBLIC_PATH, claims, jwt_with},
    helpers::{TestApp, TestConfig, register_secret, spawn_app, spawn_app_with},
};

pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: awc::http::header::HeaderMap,
    pub(crate) body: Bytes,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = app.http.request(method, format!("{}{path}", app.address));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = req.send().await.expect("request");
    let body = resp.body().limit(64 << 20).await.expect("body");
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

async fn get(app: &TestApp, path: &str) -> Resp {
    call(app, Method::GET, path, &[]).await
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A service token named `name` for CALLER_TOKENS (registered so the log scan looks for it).
pub(crate) fn service(name: &str) -> (String, String) {
    let token = format!("svc-{name}-7d1e5a90c2");
    register_secret(&token);
    (
        token.clone(),
        format!("{name}:{}", hex::encode(Sha256::digest(&token))),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The stored reports' statement ids, in answer order.
pub(crate) fn statement_ids(answer: &StatementsResponse) -> Vec<String> {
    answer
        .reports
        .iter()
        .map(|r| {
            r.statement_id
                .clone()
                .expect("a stored report has a statement_id")
        })
        .collect()
}

/// Every event of the audit trail (`audit/` in the statements bucket), in no particular order.
pub(crate) async fn audit_events(app: &TestApp) -> Vec<Value> {
    let mut events = Vec::new();
    for key in app.keys("audit/").await {
        let out = app
            .s3_client
            .get_object()
            .bucket(&app.bucket)
            .key(&key)
            .send()
            .await
            .expect("audit object");
        assert_eq!(out.content_type(), Some("application/x-ndjson"), "{key}");
        let body = out.body.collect().await.expect("body").into_bytes();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            events.push(serde_json::from_slice(line).expect("one JSON event per line"));
        }
    }
    events
}

/// The keys outside the audit trail and the purge markers (ADR 0005).
fn statement_keys(keys: Vec<String>) -> Vec<String> {
    keys.into_iter()
        .filter(|k| !k.starts_with("audit/") && !k.starts_with("_purges/"))
        .collect()
}

fn parse_time(s: &str) -> SystemTime {
    SystemTime::try_from(DateTime::from_str(s, Format::DateTime).expect("RFC 3339")).expect("time")
}

#[actix_web::test]
async fn list_after_store_returns_exactly_the_stored_statements() {
    let app = spawn_app().await;
    let (a, b) = (Body::pdf(5_000, 11), Body::pdf(7_000, 12));
    app.finpass.set_client(
        "aa_list",
        vec![
            ReportSpec::ready("HDFC-FIP", "XXXXXX1234", a.clone()),
            ReportSpec::ready("SBI-FIP", "XXXXXX5678", b.clone()),
        ],
    );
    app.finpass.set_client(
        "aa_list_other",
        vec![ReportSpec::ready("HDFC-FIP", "X9", Body::pdf(3_000, 13))],
    );
    let stored = app
        .store_ok(&json!({"client_id": "aa_list", "request_id": "req_list_1"}))
        .await;
    app.store_ok(&json!({"client_id": "aa_list_other"})).await;
    let finpass_calls = app.finpass.api_calls();

    let resp = get(&app, "/v1/clients/aa_list/statements").await;
    assert_eq!(resp.status, 200);
    let list = resp.json();
    assert_eq!(list["client_id"], "aa_list");
    assert_eq!(list["next_cursor"], Value::Null);
    let listed = list["statements"].as_array().expect("statements");
    assert_eq!(listed.len(), 2, "{list}");
    for (report, body) in stored.reports.iter().zip([&a, &b]) {
        let id = report.statement_id.as_deref().expect("statement_id");
        assert!(
            id.len() <= 128
                && id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
            "{id}"
        );
        let object = report.object.as_ref().expect("object");
        let entry = listed
            .iter()
            .find(|s| s["statement_id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"));
        let (s3_sha, s3_size) = app.object_sha256(&object.key).await;
        assert_eq!(
            entry["sha256"],
            s3_sha.as_str(),
            "the SHA-256 of the bytes S3 holds"
        );
        assert_eq!(s3_sha, body.sha256());
        assert_eq!(entry["size_bytes"], s3_size);
        assert_eq!(entry["fip_id"], report.fip_id.as_str());
        assert_eq!(entry["request_id"], "req_list_1");
        // The write path does not record the account number yet: empty until it does.
        assert!(
            entry["account_number"] == ""
                || entry["account_number"] == report.account_number.as_str(),
            "{entry}"
        );
        parse_time(entry["fetched_at"].as_str().expect("fetched_at"));
        assert_eq!(
            entry["object"],
            json!({"bucket": object.bucket, "key": object.key, "etag": object.etag})
        );
    }
    let mut keys: Vec<String> = listed
        .iter()
        .map(|s| s["object"]["key"].as_str().expect("key").to_owned())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        app.keys("statements/aa_list/").await,
        "exactly what S3 holds"
    );

    // Pages of one: the cursor walks the same two statements, then ends.
    let first = get(&app, "/v1/clients/aa_list/statements?limit=1")
        .await
        .json();
    assert_eq!(first["statements"].as_array().map(Vec::len), Some(1));
    let cursor = first["next_cursor"].as_str().expect("a next cursor");
    let second = get(
        &app,
        &format!("/v1/clients/aa_list/statements?limit=1&cursor={cursor}"),
    )
    .await
    .json();
    assert_eq!(second["statements"].as_array().map(Vec::len), Some(1));
    let mut paged = vec![
        first["statements"][0]["statement_id"].clone(),
        second["statements"][0]["statement_id"].clone(),
    ];
    paged.sort_by_key(ToString::to_string);
    let mut ids: Vec<Value> = statement_ids(&stored)
        .into_iter()
        .map(Value::from)
        .collect();
    ids.sort_by_key(ToString::to_string);
    assert_eq!(paged, ids);
    if second["next_cursor"] != Value::Null {
        let cursor = second["next_cursor"].as_str().expect("cursor");
        let third = get(
            &app,
            &format!("/v1/clients/aa_list/statements?limit=1&cursor={cursor}"),
        )
        .await
        .json();
        assert_eq!(third["statements"], json!([]));
        assert_eq!(third["next_cursor"], Value::Null);
    }

    let empty = get(&app, "/v1/clients/aa_nothing_stored/statements").await;
    assert_eq!(empty.status, 200);
    assert_eq!(
        empty.json(),
        json!({"client_id": "aa_nothing_stored", "statements": [], "next_cursor": null})
    );
    for bad in ["limit=0", "limit=101", "limit=x", "cursor=zz", "cursor=abc"] {
        let resp = get(&app, &format!("/v1/clients/aa_list/statements?{bad}")).await;
        assert_eq!(
            (resp.status, resp.json()["code"].clone()),
            (400, json!("invalid_request")),
            "{bad}"
        );
    }
    assert_eq!(
        app.finpass.api_calls(),
        finpass_calls,
        "the read side never calls Finpass"
    );
}

#[actix_web::test]
async fn one_statement_metadata_and_404() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_meta",
        vec![ReportSpec::ready("HDFC-FIP", "XXXX1", Body::pdf(4_000, 31))],
    );
    let stored = app.store_ok(&json!({"client_id": "aa_meta"})).await;
    let id = &statement_ids(&stored)[0];
    let one = get(&app, &format!("/v1/clients/aa_meta/statements/{id}")).await;
    assert_eq!(one.status, 200);
    let listed = get(&app, "/v1/clients/aa_meta/statements").await.json();
    assert_eq!(
        one.json(),
        listed["statements"][0],
        "same shape and values as the list"
    );
    assert_eq!(
        one.json()["sha256"],
        stored.reports[0]
            .object
            .as_ref()
            .expect("object")
            .sha256
            .as_str()
    );

    for path in [
        "/v1/clients/aa_meta/statements/no_such_statement".to_owned(),
        "/v1/clients/aa_meta/statements/no_such_statement/content".to_owned(),
        "/v1/clients/aa_meta/statements/no_such_statement/download-url".to_owned(),
        format!("/v1/clients/aa_someone_else/statements/{id}"),
    ] {
        let resp = get(&app, &path).await;
        assert_eq!(resp.status, 404, "{path}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(resp.json()["code"], "statement_not_found", "{path}");
    }
    let resp = call(
        &app,
        Method::PUT,
        &format!("/v1/clients/aa_meta/statements/{id}"),
        &[],
    )
    .await;
    assert_eq!(
        (resp.status, resp.header("allow")),
        (405, Some("GET, DELETE"))
    );
}

/// Every S3 request of the read routes counts in `s3_requests_total`, which is where the
/// benchmark's "S3 requests per page" comes from: a listing page is one ListObjectsV2 and a
/// HEAD per statement, `/content` one GetObject, and the audit trail's PutObjects count too.
#[actix_web::test]
async fn read_routes_count_their_s3_requests() {
    let app = spawn_app().await;
    app.finpass.set_client(
        "aa_count",
        vec![
            ReportSpec::ready("HDFC-FIP", "XXXX1", Body::pdf(4_000, 51)),
            ReportSpec::ready("HDFC-FIP", "XXXX2", Body::pdf(4_000, 52)),
        ],
    );
    let stored = app.store_ok(&json!({"client_id": "aa_count"})).await;
    let id = &statement_ids(&stored)[0];
    let count = |op: &'static str| {
        let app = &app;
        async move {
            app.metric(&format!(
                "finpass_gateway_s3_requests_total{{operation=\"{op}\"}}"
            ))
            .await
            .unwrap_or(0.0)
        }
    };
    let (lists, heads, gets, puts) = (
        count("ListObjectsV2").await,
        count("HeadObject").await,
        count("GetObject").await,
        count("PutObject").await,
    );

    let listed = get(&app, "/v1/clients/aa_count/statements").await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json()["statements"].as_array().map(Vec::len),
        Some(2)
    );
    // At least: a background sweep may list too; the HEADs are the page's alone.
    assert!(
        count("ListObjectsV2").await >= lists + 1.0,
        "the page's listing"
    );
    assert_eq!(
        count("HeadObject").await,
        heads + 2.0,
        "a HEAD per statement"
    );

    let content = get(
        &app,
        &format!("/v1/clients/aa_count/statements/{id}/content"),
    )
    .await;
    assert_eq!(content.status, 200);
    assert_eq!(count("GetObject").await, gets + 1.0, "one GET per /content");
    // Each read's audit event is durable before its answer: its PUT has been made.
    assert!(
        count("PutObject").await >= puts + 1.0,
        "the audit trail's PUTs count"
    );
}

#[actix_web::test]
async fn content_is_the_statement_with_ranges_and_etags() {
    let app = spawn_app().await;
    let body = Body::pdf(300_000, 41);
    app.finpass.set_client(
        "aa_content",
        vec![ReportSpec::ready("HDFC-FIP", "XXXX1", body.clone())],
    );
    let stored = app.store_ok(&json!({"client_id": "aa_content"})).await;
    let id = &statement_ids(&stored)[0];
    let etag = &stored.reports[0].object.as_ref().expect("object").etag;
    let path = format!("/v1/clients/aa_content/statements/{id}/content");

    let full = get(&app, &path).await;
    assert_eq!(full.status, 200);
    assert_eq!(sha256_hex(&full.body), body.sha256(), "the exact bytes");
    assert_eq!(full.body.len() as u64, body.size());
    assert_eq!(full.header("content-type"), Some("application/pdf"));
    assert_eq!(
        full.header("content-length"),
        Some(body.size().to_string().as_str())
    );
    assert_eq!(
        full.header("content-disposition"),
        Some(format!("attachment; filename=\"{id}.pdf\"").as_str())
    );
    assert_eq!(full.header("cache-control"), Some("private, no-store"));
    assert_eq!(full.header("etag"), Some(format!("\"{etag}\"").as_str()));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));

    let head = call(&app, Method::GET, &path, &[("range", "bytes=0-4")]).await;
    assert_eq!(head.status, 206);
    assert_eq!(&head.body[..], b"%PDF-");
    assert_eq!(
        head.header("content-range"),
        Some(format!("bytes 0-4/{}", body.size()).as_str())
    );
    assert_eq!(head.header("content-length"), Some("5"));

    let tail = call(&app, Method::GET, &path, &[("range", "bytes=-10")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(&tail.body[..], &full.body[full.body.len() - 10..]);

    let cached = call(
        &app,
        Method::GET,
        &path,
        &[("if-none-match", &format!("\"{etag}\""))],
    )
    .await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), Some(format!("\"{etag}\"").as_str()));
    let stale = call(
        &app,
        Method::GET,
        &path,
        &[("if-none-match", "\"something-else\"")],
    )
    .await;
    assert_eq!(stale.status, 200);

    let beyond = call(&app, Method::GET, &path, &[("range", "bytes=900000000-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.json()["code"], "range_not_satisfiable");
    assert_eq!(
        beyond.header("content-range"),
        Some(format!("bytes */{}", body.size()).as_str())
    );

    let (_, _, metrics) = app.get("/metrics").await;
    let served = body.size() * 2 + 5 + 10;
    assert!(
        metrics.contains(&format!(
            "finpass_gateway_statement_content_bytes_total {served}"
        )),
        "content bytes counted"
    );
}

#[actix_web::test]
async fn download_url_serves_the_exact_bytes_and_expires_after_its_ttl() {
    let app = spawn_app_with(&[("DOWNLOAD_URL_TTL_SECONDS", "2")]).await;
    let body = Body::pdf(20_000, 51);
    app.finpass.set_client(
        "aa_link",
        vec![ReportSpec::ready("HDFC-FIP", "XXXX1", body.clone())],
    );
    let stored = app.store_ok(&json!({"client_id": "aa_link"})).await;
    let id = &statement_ids(&stored)[0];

    let resp = get(
        &app,
        &format!("/v1/clients/aa_link/statements/{id}/download-url"),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("cache-control"), Some("private, no-store"));
    let answer = resp.json();
    let url = answer["url"].as_str().expect("url").to_owned();
    let expires_at = parse_time(answer["expires_at"].as_str().expect("expires_at"));
    let ttl = expires_at
        .duration_since(SystemTime::now() - Duration::from_secs(1))
        .expect("expires in the future");
    assert!(ttl <= Duration::from_secs(3), "TTL of 2 s, was {ttl:?}");
    assert!(url.starts_with("http://127.0.0.1:") || std::env::var_os("TEST_S3_ENDPOINT").is_some());
    assert!(
        url.contains("response-content-type=application%2Fpdf"),
        "PDF content type"
    );
    assert!(
        url.contains("response-content-disposition=attachment"),
        "attachment disposition"
    );
    // Signed into the link: a browser or proxy caches nothing it fetched through it (s3s-fs
    // accepts the parameter without applying it; AWS and moto answer with it).
    assert!(
        url.contains("response-cache-control=no-store"),
        "no caching of the download"
    );

    // A plain HTTP client with no credentials of ours: the link alone is enough.
    let plain = awc::Client::default();
    let fetch = |url: String| {
        let plain = plain.clone();
        async move {
            let mut r = plain.get(url).send().await.expect("GET the link");
            let bytes = r.body().limit(1 << 20).await.expect("body");
            (r.status().as_u16(), bytes)
        }
    };
    let (status, bytes) = fetch(url.clone()).await;
    assert_eq!(status, 200, "the link works before it expires");
    assert_eq!(sha256_hex(&bytes), body.sha256(), "the exact bytes");

    // Poll until the server refuses it, bounded; the refusal must come after expires_at,
    // and come at all within a few seconds of it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sent = SystemTime::now();
        let (status, _) = fetch(url.clone()).await;
        if status != 200 {
            // AWS and s3s-fs answer 403 (AccessDenied: request has expired), Garage 400.
            assert!(
                status == 403 || status == 400,
                "an expired link is refused, got {status}"
            );
            assert!(
                sent + Duration::from_millis(50) >= expires_at,
                "refused before expires_at"
            );
            break;
        }
        assert!(
            sent < expires_at + Duration::from_secs(2),
            "the link still works well after expires_at"
        );
        assert!(Instant::now() < deadline, "the link never stopped working");
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, _, metrics) = app.get("/metrics").await;
    assert!(metrics.contains("finpass_gateway_download_urls_total 1"));
}

#[actix_web::test]
async fn a_user_reaches_only_their_own_client_and_never_deletes() {
    let (ops_token, ops) = service("ops");
    let app = spawn_app_with(&[
        ("AUTH_DISABLED", "false"),
        ("CALLER_TOKENS", &ops),
        ("DELETE_CALLERS", "ops"),
        ("JWT_PUBLIC_KEY_FILE", PUBLIC_PATH),
        ("JWT_ISSUER", ISSUER),
        ("JWT_AUDIENCE", AUDIENCE),
    ])
    .await;
    for client in ["aa_mine", "aa_theirs"] {
        app.finpass.set_client(
            client,
            vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 61))],
        );
    }
    let ops_auth = bearer(&ops_token);
    let store = |client: &'static str| {
        let app = &app;
        let auth = ops_auth.clone();
        async move {
            let resp = app
                .http
                .post(format!("{}/v1/statements", app.address))
                .insert_header(("authorization", auth))
                .send_json(&json!({"client_id": client}))
                .await
                .expect("store")
                .json::<StatementsResponse>()
                .await
                .expect("answer");
            statement_ids(&resp)[0].clone()
        }
    };
    let mine = store("aa_mine").await;
    let theirs = store("aa_theirs").await;
    let user = bearer(&jwt_with(PRIVATE, None, &claims("aa_mine")));
    let auth: &[(&str, &str)] = &[("authorization", &user)];
    let routes = |client: &str, id: &str| {
        vec![
            (Method::GET, format!("/v1/clients/{client}/statements")),
            (Method::GET, format!("/v1/clients/{client}/statements/{id}")),
            (
                Method::GET,
                format!("/v1/clients/{client}/statements/{id}/content"),
            ),
            (
                Method::GET,
                format!("/v1/clients/{client}/statements/{id}/download-url"),
            ),
            (
                Method::DELETE,
                format!("/v1/clients/{client}/statements/{id}"),
            ),
            (Method::DELETE, format!("/v1/clients/{client}/statements")),
        ]
    };
    for (method, path) in routes("aa_theirs", &theirs) {
        let resp = call(&app, method.clone(), &path, auth).await;
        assert_eq!(
            (resp.status, resp.json()["code"].clone()),
            (403, json!("forbidden")),
            "{method} {path}"
        );
        assert!(
            !resp.body.starts_with(b"%PDF-")
                && !String::from_utf8_lossy(&resp.body).contains("X-Amz")
        );
    }
    for (method, path) in routes("aa_mine", &mine) {
        let resp = call(&app, method.clone(), &path, auth).await;
        let expected = if method == Method::DELETE { 403 } else { 200 };
        assert_eq!(
            resp.status, expected,
            "{method} {path}: a user reads its own, never deletes"
        );
    }
    assert_eq!(
        app.keys("statements/").await.len(),
        2,
        "nothing was deleted"
    );
    let resp = get(&app, "/v1/clients/aa_theirs/statements").await;
    assert_eq!(resp.status, 401, "no token, no statements");

    let refused: Vec<Value> = audit_events(&app)
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "forbidden")
        .collect();
    assert_eq!(refused.len(), 8, "every refusal is audited: {refused:?}");
    assert!(refused.iter().all(|e| e["caller"] == "user:aa_mine"));
    assert_eq!(
        refused
            .iter()
            .filter(|e| e["client_id"] == "aa_theirs")
            .count(),
        6
    );
}

#[actix_web::test]
async fn encoded_traversal_attempts_are_refused() {
    let app = spawn_app().await;
    for client in ["aa_trav", "aa_victim"] {
        app.finpass.set_client(
            client,
            vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 71))],
        );
    }
    app.store_ok(&json!({"client_id": "aa_trav"})).await;
    let victim = statement_ids(&app.store_ok(&json!({"client_id": "aa_victim"})).await)[0].clone();
    let before = statement_keys(app.keys("").await);
    let attempts = [
        format!("/v1/clients/aa_trav/statements/..%2Faa_victim%2F{victim}/content"),
        format!("/v1/clients/aa_trav/statements/..%2F..%2Fstatements%2Faa_victim%2F{victim}"),
        format!("/v1/clients/aa_trav/statements/%2e%2e%2faa_victim%2f{victim}/download-url"),
        "/v1/clients/aa_trav/statements/%2e%2e".to_owned(),
        "/v1/clients/%2e%2e/statements".to_owned(),
        "/v1/clients/..%2Faa_victim/statements".to_owned(),
        "/v1/clients/aa_trav%2F..%2Faa_victim/statements".to_owned(),
        format!("/v1/clients/aa_trav/statements/{victim}.pdf/content"),
        format!("/v1/clients/aa_trav/../aa_victim/statements/{victim}/content"),
        format!("/v1/clients/aa_trav/statements/%252e%252e%252F{victim}"),
    ];
    for path in &attempts {
        // DELETE on /content or /download-url is a 405 before any id is looked at.
        let methods = if path.ends_with("/content") || path.ends_with("/download-url") {
            vec![Method::GET]
        } else {
            vec![Method::GET, Method::DELETE]
        };
        for method in methods {
            let resp = call(&app, method.clone(), path, &[]).await;
            assert!(
                [400, 404].contains(&resp.status),
                "{method} {path}: {} {:?}",
                resp.status,
                resp.json()
            );
            assert!(!resp.body.starts_with(b"%PDF-"), "{path} served a PDF");
        }
    }
    assert_eq!(
        statement_keys(app.keys("").await),
        before,
        "nothing was deleted"
    );
}

#[actix_web::test]
async fn delete_by_a_listed_caller_purges_the_client_and_nothing_else() {
    let (ops_token, ops) = service("ops");
    let (loans_token, loans) = service("loans");
    let app = spawn_app_with(&[
        ("AUTH_DISABLED", "false"),
        ("CALLER_TOKENS", &format!("{ops},{loans}")),
        ("DELETE_CALLERS", "ops"),
    ])
    .await;
    let (ops, loans) = (bearer(&ops_token), bearer(&loans_token));
    app.finpass.set_client(
        "aa_gone",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 81)),
            ReportSpec::ready("SBI-FIP", "X2", Body::pdf(3_000, 82)),
        ],
    );
    app.finpass.set_client(
        "aa_gone2",
        vec![ReportSpec::ready("HDFC-FIP", "X3", Body::pdf(2_500, 83))],
    );
    app.finpass.set_client(
        "aa_kept",
        vec![ReportSpec::ready("HDFC-FIP", "X4", Body::pdf(2_600, 84))],
    );
    for client in ["aa_gone", "aa_gone2", "aa_kept"] {
        let resp = app
            .http
            .post(format!("{}/v1/statements", app.address))
            .insert_header(("authorization", loans.clone()))
            .send_json(&json!({"client_id": client}))
            .await
            .expect("store");
        assert_eq!(resp.status().as_u16(), 200);
    }
    // Not a statement, but in the client's folder: a purge takes it too.
    app.s3_client
        .put_object()
        .bucket(&app.bucket)
        .key("statements/aa_gone/notes.txt")
        .body(Bytes::from_static(b"note").into())
        .send()
        .await
        .expect("put stray object");
    let before = statement_keys(app.keys("").await);
    assert_eq!(before.len(), 5);

    let refused = call(
        &app,
        Method::DELETE,
        "/v1/clients/aa_gone/statements",
        &[("authorization", &loans)],
    )
    .await;
    assert_eq!(
        (refused.status, refused.json()["code"].clone()),
        (403, json!("forbidden"))
    );
    assert_eq!(
        statement_keys(app.keys("").await),
        before,
        "a refused delete deletes nothing"
    );

    let purge = call(
        &app,
        Method::DELETE,
        "/v1/clients/aa_gone/statements",
        &[("authorization", &ops)],
    )
    .await;
    assert_eq!(purge.status, 200);
    assert_eq!(purge.json(), json!({"client_id": "aa_gone", "deleted": 2}));
    let after = statement_keys(app.keys("").await);
    let expected: Vec<String> = before
        .iter()
        .filter(|k| !k.starts_with("statements/aa_gone/"))
        .cloned()
        .collect();
    assert_eq!(
        after, expected,
        "every object of the client, and nothing else"
    );
    assert_eq!(
        after.len(),
        2,
        "aa_gone2 (same name prefix) and aa_kept remain"
    );

    let again = call(
        &app,
        Method::DELETE,
        "/v1/clients/aa_gone/statements",
        &[("authorization", &ops)],
    )
    .await;
    assert_eq!(
        again.json(),
        json!({"client_id": "aa_gone", "deleted": 0}),
        "idempotent"
    );

    let kept_id = get_ids(&app, "aa_kept", &ops).await.remove(0);
    let one = format!("/v1/clients/aa_kept/statements/{kept_id}");
    let refused = call(&app, Method::DELETE, &one, &[("authorization", &loans)]).await;
    assert_eq!(refused.status, 403);
    for _ in 0..2 {
        let resp = call(&app, Method::DELETE, &one, &[("authorization", &ops)]).await;
        assert_eq!(resp.status, 204, "deleting one statement is idempotent");
        assert!(resp.body.is_empty());
    }
    assert_eq!(
        call(&app, Method::GET, &one, &[("authorization", &ops)])
            .await
            .status,
        404
    );
    assert_eq!(
        statement_keys(app.keys("").await).len(),
        1,
        "only aa_gone2's statement left"
    );
    let (_, _, metrics) = app.get("/metrics").await;
    assert!(
        metrics.contains("finpass_gateway_statements_deleted_total 3"),
        "{metrics}"
    );
}

async fn get_ids(app: &TestApp, client: &str, auth: &str) -> Vec<String> {
    call(
        app,
        Method::GET,
        &format!("/v1/clients/{client}/statements"),
        &[("authorization", auth)],
    )
    .await
    .json()["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .map(|s| s["statement_id"].as_str().expect("id").to_owned())
        .collect()
}

/// A purge on a versioned bucket removes every version and delete marker, not just the
/// current object. Servers without versioning (s3s-fs, Garage) keep one version per key, so
/// there the test checks the plain purge; `.ci/moto.sh` runs it against moto, which has
/// versioning, with `TEST_S3_EXPECT_VERSIONING=1` so it cannot pass there without it.
#[actix_web::test]
async fn purge_removes_every_version_on_a_versioned_bucket() {
    use crate::retention::versions_matching;

    let app = spawn_app().await;
    let versioned = crate::purge::enable_versioning(&app).await;
    eprintln!("bucket versioning enabled: {versioned}");
    app.finpass.set_client(
        "aa_versions",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 91))],
    );
    app.finpass.set_client(
        "aa_versions_kept",
        vec![ReportSpec::ready("HDFC-FIP", "X2", Body::pdf(2_000, 92))],
    );
    let stored = app.store_ok(&json!({"client_id": "aa_versions"})).await;
    app.store_ok(&json!({"client_id": "aa_versions_kept"}))
        .await;
    let key = stored.reports[0]
        .object
        .as_ref()
        .expect("object")
        .key
        .clone();
    if versioned {
        // An older version, a delete marker and a current version again.
        let put = |bytes: &'static [u8]| {
            app.s3_client
                .put_object()
                .bucket(&app.bucket)
                .key(&key)
                .body(Bytes::from_static(bytes).into())
                .send()
        };
        put(b"%PDF-older").await.expect("put version");
        app.s3_client
            .delete_object()
            .bucket(&app.bucket)
            .key(&key)
            .send()
            .await
            .expect("delete marker");
        put(b"%PDF-newer").await.expect("put version");
        let (versions, markers) = versions_matching(&app, "statements/aa_versions/", "").await;
        assert_eq!(
            (versions, markers),
            (3, 1),
            "versions before the purge (the store's CopyObject, two PUTs) and one delete marker"
        );
    }
    let resp = call(
        &app,
        Method::DELETE,
        "/v1/clients/aa_versions/statements",
        &[],
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.json());
    if versioned {
        assert_eq!(
            versions_matching(&app, "statements/aa_versions/", "").await,
            (0, 0),
            "no version and no delete marker left"
        );
        let (kept, _) = versions_matching(&app, "statements/aa_versions_kept/", "").await;
        assert_eq!(kept, 1, "the other client's versions are untouched");
    }
    assert!(app.keys("statements/aa_versions/").await.is_empty());
    assert_eq!(app.keys("statements/aa_versions_kept/").await.len(), 1);
}

#[actix_web::test]
async fn every_action_leaves_an_audit_event_with_caller_and_client() {
    let (ops_token, ops) = service("ops");
    let app = spawn_app_with(&[
        ("AUTH_DISABLED", "false"),
        ("CALLER_TOKENS", &ops),
        ("DELETE_CALLERS", "ops"),
    ])
    .await;
    let auth = bearer(&ops_token);
    let h: &[(&str, &str)] = &[("authorization", &auth)];
    app.finpass.set_client(
        "aa_audit",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 101))],
    );
    let store = app
        .http
        .post(format!("{}/v1/statements", app.address))
        .insert_header(("authorization", auth.clone()))
        .send_json(&json!({"client_id": "aa_audit"}))
        .await
        .expect("store")
        .json::<StatementsResponse>()
        .await
        .expect("answer");
    let id = statement_ids(&store)[0].clone();
    let base = "/v1/clients/aa_audit/statements";
    for (method, path, status) in [
        (Method::GET, base.to_owned(), 200),
        (Method::GET, format!("{base}/{id}"), 200),
        (Method::GET, format!("{base}/{id}/content"), 200),
        (Method::GET, format!("{base}/{id}/download-url"), 200),
        (Method::DELETE, base.to_owned(), 200),
    ] {
        assert_eq!(
            call(&app, method.clone(), &path, h).await.status,
            status,
            "{method} {path}"
        );
    }
    let mut events = audit_events(&app).await;
    // A delete also records its intent before removing anything (tests/api/audit.rs).
    events.retain(|e| e["outcome"] != "intent");
    events.sort_by_key(|e| e["at"].as_str().map(str::to_owned));
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["store", "list", "read", "content", "download_url", "delete"]
    );
    for e in &events {
        assert_eq!(e["caller"], "service:ops", "{e}");
        assert_eq!(e["client_id"], "aa_audit", "{e}");
        assert_eq!(e["statement_ids"], json!([id]), "{e}");
        assert_eq!(e["outcome"], "ok", "{e}");
        assert!(
            e["http_request_id"].as_str().is_some_and(|r| r.len() >= 32),
            "{e}"
        );
        parse_time(e["at"].as_str().expect("at"));
        let fields: Vec<&String> = e.as_object().expect("object").keys().collect();
        assert_eq!(fields.len(), 8, "exactly the documented fields: {e}");
        assert_eq!(e["source_address"], "127.0.0.1", "{e}");
        let text = e.to_string();
        assert!(
            !text.contains("X-Amz") && !text.contains(&ops_token),
            "no link or token: {e}"
        );
    }
    for key in app.keys("audit/").await {
        let rest = key.strip_prefix("audit/").expect("under AUDIT_PREFIX");
        let parts: Vec<&str> = rest.split('/').collect();
        assert_eq!(parts.len(), 4, "audit/YYYY/MM/DD/uuid.jsonl: {key}");
        assert!(
            parts[0].len() == 4 && parts[1].len() == 2 && parts[2].len() == 2,
            "{key}"
        );
        assert!(parts[3].ends_with(".jsonl"), "{key}");
    }
    let (_, _, metrics) = app.get("/metrics").await;
    assert!(metrics.contains(r#"finpass_gateway_audit_events_total{action="content"} 1"#));
    assert!(metrics.contains(r#"finpass_gateway_audit_writes_total{outcome="error"} 0"#));
}

#[actix_web::test]
async fn audit_store_down_answers_503_and_serves_nothing() {
    // The audit trail goes to a bucket that refuses every write: it does not exist. (s3s-fs
    // creates a missing bucket's directory on PUT, so there a plain file stands in its way.)
    let audit_bucket = format!("fgw-audit-{}", uuid::Uuid::new_v4().simple());
    let app = spawn_app_with(TestConfig::default().env("AUDIT_BUCKET", &audit_bucket)).await;
    let blocker = app.embedded_s3_root().map(|root| root.join(&audit_bucket));
    if let Some(path) = &blocker {
        std::fs::write(path, b"not a bucket").expect("block the audit bucket");
    }
    // A statement stored earlier (while auditing worked), put straight into S3.
    let pdf = Bytes::from_static(b"%PDF-1.7 a statement stored before the audit bucket went away");
    let key = "statements/aa_down/earlier-0123456789abcdef.pdf";
    app.s3_client
        .put_object()
        .bucket(&app.bucket)
        .key(key)
        .content_type("application/pdf")
        .metadata("sha256", sha256_hex(&pdf))
        .metadata("client-id", "aa_down")
        .metadata("fip-id", "HDFC-FIP")
        .metadata("source-version", "etag:\"seed\"")
        .body(pdf.clone().into())
        .send()
        .await
        .expect("seed statement");
    let id = "earlier-0123456789abcdef";
    let base = "/v1/clients/aa_down/statements";
    for (method, path) in [
        (Method::GET, base.to_owned()),
        (Method::GET, format!("{base}/{id}")),
        (Method::GET, format!("{base}/{id}/content")),
        (Method::GET, format!("{base}/{id}/download-url")),
        (Method::DELETE, format!("{base}/{id}")),
        (Method::DELETE, base.to_owned()),
    ] {
        let resp = call(&app, method.clone(), &path, &[]).await;
        assert_eq!(resp.status, 503, "{method} {path}");
        assert_eq!(resp.json()["code"], "audit_unavailable", "{method} {path}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/problem+json")
        );
        let text = String::from_utf8_lossy(&resp.body);
        assert!(
            !resp.body.starts_with(b"%PDF-") && !text.contains("X-Amz") && !text.contains(key),
            "nothing served: {text}"
        );
    }
    assert_eq!(
        app.keys("statements/aa_down/").await,
        [key],
        "nothing deleted"
    );
    app.finpass.set_client(
        "aa_down",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 111))],
    );
    let (status, answer) = app.store(&json!({"client_id": "aa_down"})).await;
    assert_eq!(
        (status, answer["code"].clone()),
        (503, json!("audit_unavailable"))
    );
    assert!(answer.get("reports").is_none(), "no keys answered");
    let (_, _, metrics) = app.get("/metrics").await;
    assert!(!metrics.contains(r#"finpass_gateway_audit_writes_total{outcome="error"} 0"#));

    // The audit store comes back: the same gateway serves again, no restart.
    if let Some(path) = &blocker {
        std::fs::remove_file(path).expect("unblock");
    }
    app.s3_client
        .create_bucket()
        .bucket(&audit_bucket)
        .send()
        .await
        .expect("create the audit bucket");
    let resp = get(&app, &format!("{base}/{id}/content")).await;
    assert_eq!((resp.status, resp.body), (200, pdf));
    let (status, _) = app.store(&json!({"client_id": "aa_down"})).await;
    assert_eq!(status, 200, "the retried store answers");
}

#[actix_web::test]
async fn cors_preflight_allows_range_and_authorization_on_the_read_routes() {
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    app.finpass.set_client(
        "aa_cors",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 121))],
    );
    let id = statement_ids(&app.store_ok(&json!({"client_id": "aa_cors"})).await)[0].clone();
    let content = format!("/v1/clients/aa_cors/statements/{id}/content");
    let preflight = call(
        &app,
        Method::OPTIONS,
        &content,
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization, range"),
        ],
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("range") && allowed.contains("authorization"),
        "{allowed}"
    );

    let get = call(
        &app,
        Method::GET,
        &content,
        &[
            ("origin", "https://app.example.com"),
            ("range", "bytes=0-4"),
        ],
    )
    .await;
    assert_eq!(get.status, 206);
    assert_eq!(
        get.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let exposed = get
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in [
        "content-disposition",
        "content-range",
        "etag",
        "accept-ranges",
        "x-request-id",
    ] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    let evil = call(
        &app,
        Method::OPTIONS,
        &content,
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert!(evil.header("access-control-allow-origin").is_none());
}

/// Puts an object with a statement's full metadata, labelled for `labelled_client`, at `key`
/// (straight into S3, as a restore, a copy or a bug elsewhere could).
async fn put_labelled(app: &TestApp, key: &str, labelled_client: &str) {
    let pdf = Bytes::from(format!("%PDF-1.7 {key}"));
    app.s3_client
        .put_object()
        .bucket(&app.bucket)
        .key(key)
        .content_type("application/pdf")
        .metadata("sha256", sha256_hex(&pdf))
        .metadata("client-id", labelled_client)
        .metadata("fip-id", "HDFC-FIP")
        .metadata("source-version", "etag:\"seed\"")
        .body(pdf.into())
        .send()
        .await
        .expect("put statement object");
}

/// Defence in depth: an object in a client's folder is served only if its own `client-id`
/// metadata names that client, on every read route.
#[actix_web::test]
async fn read_routes_serve_only_objects_labelled_with_the_requested_client() {
    let app = spawn_app().await;
    put_labelled(&app, "statements/aa_label/own-0001.pdf", "aa_label").await;
    put_labelled(
        &app,
        "statements/aa_label/foreign-0002.pdf",
        "aa_someone_else",
    )
    .await;
    let base = "/v1/clients/aa_label/statements";

    let list = get(&app, base).await;
    assert_eq!(list.status, 200);
    let ids: Vec<Value> = list.json()["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .map(|s| s["statement_id"].clone())
        .collect();
    assert_eq!(ids, [json!("own-0001")], "only the client's own statement");
    for path in [
        format!("{base}/foreign-0002"),
        format!("{base}/foreign-0002/content"),
        format!("{base}/foreign-0002/download-url"),
    ] {
        let resp = get(&app, &path).await;
        assert_eq!(
            (resp.status, resp.json()["code"].clone()),
            (404, json!("statement_not_found")),
            "{path}"
        );
    }
    for path in [
        format!("{base}/own-0001"),
        format!("{base}/own-0001/content"),
        format!("{base}/own-0001/download-url"),
    ] {
        assert_eq!(get(&app, &path).await.status, 200, "{path}");
    }
}

/// A cursor decodes only to a statement's file name in the client's folder: anything else is
/// a 400 naming `cursor`.
#[actix_web::test]
async fn forged_cursors_are_refused_before_s3() {
    let app = spawn_app().await;
    put_labelled(&app, "statements/aa_cursor/a1.pdf", "aa_cursor").await;
    let hex = |s: &str| hex::encode(s.as_bytes());
    let forged = [
        hex("../aa_victim/x.pdf"),
        hex("a1.txt"),
        hex(&format!("{}.pdf", "a".repeat(129))),
        hex(&"z".repeat(600)),
        hex("sub/a1.pdf"),
        "00".repeat(6),
    ];
    for cursor in forged {
        let resp = get(
            &app,
            &format!("/v1/clients/aa_cursor/statements?cursor={cursor}"),
        )
        .await;
        let problem = resp.json();
        assert_eq!(
            (resp.status, problem["code"].clone()),
            (400, json!("invalid_request")),
            "{cursor}: {problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("cursor")),
            "{problem}"
        );
    }
    // Our own cursors still work.
    let resp = get(
        &app,
        &format!("/v1/clients/aa_cursor/statements?cursor={}", hex("a1.pdf")),
    )
    .await;
    assert_eq!(resp.status, 200);
}

/// Objects that are not statements never end a page: every cursor the API issues names a
/// statement (and so is accepted back), and the walk still reaches every statement.
#[actix_web::test]
async fn pages_walk_past_objects_that_are_not_statements() {
    let app = spawn_app().await;
    put_labelled(&app, "statements/aa_walk/a1.pdf", "aa_walk").await;
    for stray in ["a2 notes.txt", "a3.txt", "a4/nested.pdf", "a5.pdf.bak"] {
        app.s3_client
            .put_object()
            .bucket(&app.bucket)
            .key(format!("statements/aa_walk/{stray}"))
            .body(Bytes::from_static(b"not a statement").into())
            .send()
            .await
            .expect("put stray object");
    }
    put_labelled(&app, "statements/aa_walk/b1.pdf", "aa_walk").await;
    let mut cursor: Option<String> = None;
    let mut walked = Vec::new();
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/clients/aa_walk/statements?limit=1&cursor={c}"),
            None => "/v1/clients/aa_walk/statements?limit=1".to_owned(),
        };
        let resp = get(&app, &path).await;
        assert_eq!(resp.status, 200, "{path}: {:?}", resp.json());
        let page = resp.json();
        for s in page["statements"].as_array().expect("statements") {
            walked.push(s["statement_id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked, ["a1", "b1"]);
}
