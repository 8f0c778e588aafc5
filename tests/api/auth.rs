//! Caller authentication and authorisation: service tokens, user JWTs bound to one client,
//! CORS for frontends, per-caller rate limits.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpResponse, HttpServer, web};
use finpass_gateway::sandbox::{Body, ReportSpec};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header, encode,
    jwk::{Jwk, JwkSet},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, register_secret, spawn_app_with};

pub(crate) const PRIVATE: &str = include_str!("../fixtures/jwt-es256-private.pem");
pub(crate) const OTHER_PRIVATE: &str = include_str!("../fixtures/jwt-es256-other-private.pem");
pub(crate) const PUBLIC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jwt-es256-public.pem"
);
pub(crate) const ISSUER: &str = "https://idp.example.com";
pub(crate) const AUDIENCE: &str = "finpass-gateway";
/// Authentication on, user JWTs verified with the fixture's public key.
pub(crate) const JWT_FROM_FILE: [(&str, &str); 4] = [
    ("AUTH_DISABLED", "false"),
    ("JWT_PUBLIC_KEY_FILE", PUBLIC_PATH),
    ("JWT_ISSUER", ISSUER),
    ("JWT_AUDIENCE", AUDIENCE),
];

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn jwt_with(key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let token = encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(key.as_bytes()).expect("key"),
    )
    .expect("sign");
    register_secret(&token);
    token
}

pub(crate) fn claims(client: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 300, "sub": "user-1", "aa_client_id": client})
}

pub(crate) async fn call(
    app: &TestApp,
    auth: Option<&str>,
    client: &str,
) -> (u16, Value, Option<String>) {
    let mut req = app.http.post(format!("{}/v1/statements", app.address));
    if let Some(a) = auth {
        req = req.insert_header(("authorization", a));
    }
    let mut resp = req
        .send_json(&json!({"client_id": client}))
        .await
        .expect("request");
    let www = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.body().limit(1 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        www,
    )
}

#[actix_web::test]
async fn service_tokens_no_wrong_right() {
    let token = "svc-token-4f6c1e0b9d";
    register_secret(token);
    let entry = format!("loans:{}", hex::encode(Sha256::digest(token)));
    let app = spawn_app_with(&[("AUTH_DISABLED", "false"), ("CALLER_TOKENS", &entry)]).await;
    app.finpass.set_client(
        "aa_auth",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(1000, 1))],
    );

    let (status, problem, www) = call(&app, None, "aa_auth").await;
    assert_eq!(
        (status, problem["code"].as_str(), www.as_deref()),
        (401, Some("unauthorized"), Some("Bearer"))
    );
    let (status, _, _) = call(&app, Some("Bearer not-the-token"), "aa_auth").await;
    assert_eq!(status, 401);
    let (status, _, _) = call(&app, Some(&format!("Basic {token}")), "aa_auth").await;
    assert_eq!(status, 401);
    assert_eq!(
        app.finpass.api_calls(),
        0,
        "unauthenticated calls never reach Finpass"
    );

    let (status, body, _) = call(&app, Some(&format!("Bearer {token}")), "aa_auth").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["stored"], 1);
    let (_, _, metrics) = app.get("/metrics").await;
    assert!(metrics.contains(r#"finpass_gateway_caller_requests_total{caller="loans"} 1"#));
    assert_eq!(app.get("/healthz").await.0, 200, "probes need no token");
}

#[actix_web::test]
async fn user_jwts_are_bound_to_their_client() {
    let app = spawn_app_with(&JWT_FROM_FILE).await;
    app.finpass.set_client(
        "aa_mine",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(1000, 2))],
    );
    app.finpass.set_client(
        "aa_theirs",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(1000, 3))],
    );
    let bearer = |t: String| format!("Bearer {t}");

    let ok = jwt_with(PRIVATE, None, &claims("aa_mine"));
    assert_eq!(
        call(&app, Some(&bearer(ok.clone())), "aa_mine").await.0,
        200
    );

    let (status, problem, _) = call(&app, Some(&bearer(ok)), "aa_theirs").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("forbidden")),
        "another customer's statements"
    );

    let mut bad_iss = claims("aa_mine");
    bad_iss["iss"] = json!("https://evil.example.com");
    let mut bad_aud = claims("aa_mine");
    bad_aud["aud"] = json!("someone-else");
    let mut expired = claims("aa_mine");
    expired["exp"] = json!(now() - 3600);
    let mut no_claim = claims("aa_mine");
    no_claim
        .as_object_mut()
        .expect("object")
        .remove("aa_client_id");
    for (what, token) in [
        ("wrong issuer", jwt_with(PRIVATE, None, &bad_iss)),
        ("wrong audience", jwt_with(PRIVATE, None, &bad_aud)),
        ("expired", jwt_with(PRIVATE, None, &expired)),
        ("no client claim", jwt_with(PRIVATE, None, &no_claim)),
        (
            "signed by another key",
            jwt_with(OTHER_PRIVATE, None, &claims("aa_mine")),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&claims("aa_mine").to_string())
            ),
        ),
    ] {
        let (status, problem, _) = call(&app, Some(&bearer(token)), "aa_mine").await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("unauthorized")),
            "{what}"
        );
    }
    assert_eq!(
        app.finpass.api_calls(),
        1,
        "only the valid, matching token reached Finpass"
    );
}

pub(crate) fn b64(s: &str) -> String {
    use std::fmt::Write;
    // URL-safe base64 without padding, enough for a test vector.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let _ = out.write_char(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[actix_web::test]
async fn jwks_keys_are_loaded_before_serving() {
    let jwk = {
        let mut jwk = Jwk::from_encoding_key(
            &EncodingKey::from_ec_pem(PRIVATE.as_bytes()).expect("key"),
            Algorithm::ES256,
        )
        .expect("jwk");
        jwk.common.key_id = Some("k1".to_owned());
        jwk
    };
    let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] }).expect("jwks");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    let server = HttpServer::new(move || {
        let jwks = jwks.clone();
        App::new().route(
            "/jwks.json",
            web::get().to(move || {
                let jwks = jwks.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(jwks)
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    actix_web::rt::spawn(server);
    let app = spawn_app_with(&[
        ("AUTH_DISABLED", "false"),
        ("JWT_JWKS_URL", &url),
        ("JWT_ISSUER", ISSUER),
        ("JWT_AUDIENCE", AUDIENCE),
    ])
    .await;
    app.finpass.set_client("aa_jwks", vec![]);

    let token = jwt_with(PRIVATE, Some("k1"), &claims("aa_jwks"));
    assert_eq!(
        call(&app, Some(&format!("Bearer {token}")), "aa_jwks")
            .await
            .0,
        200
    );
    let unknown_kid = jwt_with(PRIVATE, Some("k2"), &claims("aa_jwks"));
    assert_eq!(
        call(&app, Some(&format!("Bearer {unknown_kid}")), "aa_jwks")
            .await
            .0,
        401
    );
}

#[actix_web::test]
async fn cors_preflight_allows_only_configured_origins() {
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(
                awc::http::Method::OPTIONS,
                format!("{}/v1/statements", app.address),
            )
            .insert_header(("origin", origin))
            .insert_header(("access-control-request-method", "POST"))
            .insert_header((
                "access-control-request-headers",
                "authorization, content-type",
            ))
            .send()
    };
    let ok = preflight("https://app.example.com")
        .await
        .expect("preflight");
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
    let allowed_headers = ok
        .headers()
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("content-type"));

    let evil = preflight("https://evil.example.com")
        .await
        .expect("preflight");
    assert!(
        evil.headers().get("access-control-allow-origin").is_none(),
        "unknown origins get no CORS grant"
    );

    let plain = spawn_app_with(&[]).await;
    let resp = plain
        .http
        .request(
            awc::http::Method::OPTIONS,
            format!("{}/v1/statements", plain.address),
        )
        .insert_header(("origin", "https://app.example.com"))
        .insert_header(("access-control-request-method", "POST"))
        .send()
        .await
        .expect("preflight");
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "no CORS unless configured"
    );
}

#[actix_web::test]
async fn callers_are_rate_limited() {
    let app = spawn_app_with(&[("RATE_LIMIT_PER_MINUTE", "2")]).await;
    app.finpass.set_client("aa_rl", vec![]);
    assert_eq!(call(&app, None, "aa_rl").await.0, 200);
    assert_eq!(call(&app, None, "aa_rl").await.0, 200);
    let mut resp = app
        .http
        .post(format!("{}/v1/statements", app.address))
        .send_json(&json!({"client_id": "aa_rl"}))
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 429);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after));
    let problem: Value = resp.json().await.expect("problem");
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(app.finpass.api_calls(), 2);
}

#[actix_web::test]
async fn reports_per_call_are_capped() {
    let app = spawn_app_with(&[("MAX_REPORTS_PER_CALL", "2")]).await;
    app.finpass.set_client(
        "aa_many",
        (0..3)
            .map(|i| ReportSpec::ready(&format!("FIP-{i}"), "X", Body::pdf(1000, i)))
            .collect(),
    );
    let (status, body, _) = call(&app, None, "aa_many").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["summary"],
        json!({"stored": 2, "pending": 0, "failed": 1})
    );
    assert_eq!(body["reports"][2]["error"]["code"], "report_limit");
    assert_eq!(app.finpass.downloads("aa_many"), 2);
}
