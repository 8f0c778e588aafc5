//! User JWTs from an identity provider's JWKS: the pod is not ready before the first key set
//! is loaded, a token with an unknown `kid` refreshes the keys once (rate limited), a broken
//! or empty refresh keeps the last good keys, and `nbf` is enforced.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header, encode,
    jwk::{Jwk, JwkSet},
};
use serde_json::{Value, json};

use crate::{
    auth::{AUDIENCE, ISSUER, JWT_FROM_FILE, OTHER_PRIVATE, PRIVATE},
    helpers::{TestApp, register_secret, spawn_app_with},
};

/// An identity provider's JWKS endpoint whose document the test changes; `None` answers 503.
pub(crate) struct Idp {
    doc: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
    pub(crate) url: String,
}

impl Idp {
    pub(crate) fn start(doc: Option<String>) -> Self {
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let (d, h) = (Arc::clone(&doc), Arc::clone(&hits));
        let server = HttpServer::new(move || {
            let (d, h) = (Arc::clone(&d), Arc::clone(&h));
            App::new().route(
                "/jwks.json",
                web::get().to(move || {
                    h.fetch_add(1, Ordering::SeqCst);
                    let doc = d.lock().expect("doc").clone();
                    async move {
                        match doc {
                            Some(doc) => HttpResponse::Ok()
                                .content_type("application/json")
                                .body(doc),
                            None => HttpResponse::ServiceUnavailable().finish(),
                        }
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
        Self { doc, hits, url }
    }

    pub(crate) fn serve(&self, doc: Option<String>) {
        *self.doc.lock().expect("doc") = doc;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub(crate) fn jwk(private: &str, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(
        &EncodingKey::from_ec_pem(private.as_bytes()).expect("key"),
        Algorithm::ES256,
    )
    .expect("jwk");
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

fn jwks(keys: Vec<Jwk>) -> Option<String> {
    Some(serde_json::to_string(&JwkSet { keys }).expect("jwks"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn token(private: &str, kid: Option<&str>, extra: Value) -> String {
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 300, "sub": "user-1", "aa_client_id": "aa_jwks"});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let token = encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(private.as_bytes()).expect("key"),
    )
    .expect("sign");
    register_secret(&token);
    token
}

pub(crate) async fn status_with(app: &TestApp, token: &str) -> u16 {
    app.http
        .post(format!("{}/v1/statements", app.address))
        .insert_header(("authorization", format!("Bearer {token}")))
        .send_json(&json!({"client_id": "aa_jwks"}))
        .await
        .expect("request")
        .status()
        .as_u16()
}

pub(crate) async fn with_jwks(idp: &Idp) -> TestApp {
    let app = spawn_app_with(&[
        ("AUTH_DISABLED", "false"),
        ("JWT_JWKS_URL", &idp.url),
        ("JWT_ISSUER", ISSUER),
        ("JWT_AUDIENCE", AUDIENCE),
    ])
    .await;
    app.finpass.set_client("aa_jwks", vec![]);
    app
}

#[actix_web::test]
async fn the_pod_is_not_ready_until_the_first_key_set_is_loaded() {
    let idp = Idp::start(None);
    let app = with_jwks(&idp).await;

    let (status, ct, body) = app.get("/readyz").await;
    assert_eq!(
        (status, ct.as_str()),
        (503, "application/problem+json"),
        "{body}"
    );
    assert!(
        body.contains("JWT"),
        "the detail says what is missing: {body}"
    );
    assert_eq!(app.get("/healthz").await.0, 200, "alive all the same");

    idp.serve(jwks(vec![jwk(PRIVATE, "k1")]));
    let started = Instant::now();
    while app.get("/readyz").await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ready 30 s after the JWKS came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        status_with(&app, &token(PRIVATE, Some("k1"), json!({}))).await,
        200
    );
}

#[actix_web::test]
async fn an_unknown_kid_refreshes_the_keys_once() {
    let idp = Idp::start(jwks(vec![jwk(PRIVATE, "k1")]));
    let app = with_jwks(&idp).await;
    assert_eq!(app.get("/readyz").await.0, 200);
    let loaded = idp.hits();

    // The identity provider rotates in a new key: its first token refreshes the set.
    idp.serve(jwks(vec![jwk(PRIVATE, "k1"), jwk(OTHER_PRIVATE, "k2")]));
    assert_eq!(
        status_with(&app, &token(OTHER_PRIVATE, Some("k2"), json!({}))).await,
        200
    );
    assert_eq!(idp.hits(), loaded + 1, "one refresh");

    // Made-up kids cannot make the gateway hammer the identity provider.
    for kid in ["k3", "k4", "k5"] {
        assert_eq!(
            status_with(&app, &token(OTHER_PRIVATE, Some(kid), json!({}))).await,
            401
        );
    }
    assert_eq!(
        idp.hits(),
        loaded + 1,
        "refreshes on unknown kids are rate limited"
    );
    assert_eq!(
        status_with(&app, &token(PRIVATE, Some("k1"), json!({}))).await,
        200
    );
}

#[actix_web::test]
async fn an_empty_key_set_keeps_the_last_good_keys() {
    let idp = Idp::start(jwks(vec![jwk(PRIVATE, "k1")]));
    let app = with_jwks(&idp).await;
    let loaded = idp.hits();

    idp.serve(jwks(vec![]));
    assert_eq!(
        status_with(&app, &token(PRIVATE, Some("k9"), json!({}))).await,
        401
    );
    assert_eq!(
        idp.hits(),
        loaded + 1,
        "the unknown kid asked for a refresh"
    );
    assert_eq!(
        status_with(&app, &token(PRIVATE, Some("k1"), json!({}))).await,
        200,
        "the empty set did not replace the good one"
    );
    assert_eq!(app.get("/readyz").await.0, 200);
}

#[actix_web::test]
async fn a_token_not_valid_yet_is_refused() {
    let app = spawn_app_with(&JWT_FROM_FILE).await;
    app.finpass.set_client("aa_jwks", vec![]);
    let later = token(PRIVATE, None, json!({"nbf": now() + 3600}));
    assert_eq!(status_with(&app, &later).await, 401, "nbf an hour from now");
    let valid = token(PRIVATE, None, json!({"nbf": now().saturating_sub(5)}));
    assert_eq!(status_with(&app, &valid).await, 200);
    assert_eq!(app.finpass.api_calls(), 1);
}
