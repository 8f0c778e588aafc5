//! What a user JWT must be (issue #21): keys not meant for signatures are never used, a key's
//! `alg` binds the token's, the lifetime is bounded (`JWT_MAX_LIFETIME_SECONDS`, `iat`
//! required), `typ` is an access token's, and the classic forgeries are refused, each in a
//! test named after it. Every refused token is a 401 that never reaches Finpass.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::{
    auth::{JWT_FROM_FILE, PRIVATE, b64, claims, jwt_with, now},
    helpers::{TestApp, register_secret, spawn_app_with},
    jwks::{Idp, jwk, status_with, with_jwks},
};

const PUBLIC_PEM: &str = include_str!("../fixtures/jwt-es256-public.pem");

/// A gateway verifying user JWTs with the fixture's public key; `aa_jwks` exists at Finpass.
async fn app_with(extra: &[(&str, &str)]) -> TestApp {
    let env: Vec<(&str, &str)> = JWT_FROM_FILE.iter().chain(extra).copied().collect();
    let app = spawn_app_with(env.as_slice()).await;
    app.finpass.set_client("aa_jwks", vec![]);
    app
}

fn user_claims() -> Value {
    claims("aa_jwks")
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().expect("object").remove(name);
    claims
}

/// Signs with the fixture key and a header the test shapes.
fn signed(header: Header, claims: &Value) -> String {
    let token = encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(PRIVATE.as_bytes()).expect("key"),
    )
    .expect("sign");
    register_secret(&token);
    token
}

#[actix_web::test]
async fn a_token_hs256_signed_with_the_public_key_is_refused() {
    let app = app_with(&[]).await;
    // The classic key confusion: the verifier's public key used as an HMAC secret.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &user_claims(),
        &EncodingKey::from_secret(PUBLIC_PEM.as_bytes()),
    )
    .expect("sign");
    register_secret(&forged);
    assert_eq!(status_with(&app, &forged).await, 401);
    assert_eq!(app.finpass.api_calls(), 0);
}

#[actix_web::test]
async fn a_token_with_alg_none_is_refused() {
    let app = app_with(&[]).await;
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let unsigned = format!("{}.{}.", b64(header), b64(&user_claims().to_string()));
        register_secret(&unsigned);
        assert_eq!(status_with(&app, &unsigned).await, 401, "{header}");
    }
    assert_eq!(app.finpass.api_calls(), 0);
}

#[actix_web::test]
async fn a_token_missing_exp_is_refused() {
    let app = app_with(&[]).await;
    let token = jwt_with(PRIVATE, None, &without(user_claims(), "exp"));
    assert_eq!(status_with(&app, &token).await, 401);
    assert_eq!(app.finpass.api_calls(), 0);
}

#[actix_web::test]
async fn a_token_missing_iss_is_refused() {
    let app = app_with(&[]).await;
    let token = jwt_with(PRIVATE, None, &without(user_claims(), "iss"));
    assert_eq!(status_with(&app, &token).await, 401);
    assert_eq!(app.finpass.api_calls(), 0);
}

#[actix_web::test]
async fn a_token_living_longer_than_the_maximum_or_without_iat_is_refused() {
    let app = app_with(&[("JWT_MAX_LIFETIME_SECONDS", "600")]).await;
    let with = |iat: Option<u64>, exp: u64| {
        let mut c = without(user_claims(), "iat");
        c["exp"] = json!(exp);
        if let Some(iat) = iat {
            c["iat"] = json!(iat);
        }
        jwt_with(PRIVATE, None, &c)
    };
    let t = now();
    for (what, token, status) in [
        ("600 s", with(Some(t), t + 600), 200),
        ("601 s", with(Some(t), t + 601), 401),
        ("a day", with(Some(t - 60), t + 86_400), 401),
        ("no iat", with(None, t + 300), 401),
        // A far-future iat would stretch a short lifetime into years.
        ("iat in an hour", with(Some(t + 3600), t + 3900), 401),
    ] {
        assert_eq!(status_with(&app, &token).await, status, "{what}");
    }
    assert_eq!(app.finpass.api_calls(), 1);
}

#[actix_web::test]
async fn a_token_whose_typ_is_not_an_access_tokens_is_refused() {
    let app = app_with(&[]).await;
    let typed = |typ: Option<&str>| {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = typ.map(str::to_owned);
        signed(header, &user_claims())
    };
    for (typ, status) in [
        (Some("JWT"), 200),
        (Some("at+jwt"), 200),
        (Some("application/at+jwt"), 200),
        (None, 200),
        (Some("dpop+jwt"), 401),
        (Some("secevent+jwt"), 401),
        (Some("JOSE"), 401),
    ] {
        assert_eq!(status_with(&app, &typed(typ)).await, status, "typ {typ:?}");
    }
}

#[actix_web::test]
async fn jwks_keys_not_meant_for_verifying_signatures_are_skipped() {
    let key = |kid: &str, extra: Value| {
        let mut k = serde_json::to_value(jwk(PRIVATE, kid)).expect("jwk");
        k.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        k
    };
    let doc = json!({"keys": [
        key("enc", json!({"use": "enc"})),
        key("wrap", json!({"key_ops": ["encrypt", "wrapKey"]})),
        key("es384", json!({"alg": "ES384"})),
        key("rs256", json!({"alg": "RS256"})),
        key("sig", json!({"use": "sig", "key_ops": ["verify"], "alg": "ES256"})),
        key("bare", json!({"alg": null})),
    ]});
    let idp = Idp::start(Some(doc.to_string()));
    let app = with_jwks(&idp).await;
    let token = |kid: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let mut c = user_claims();
        c["aa_client_id"] = json!("aa_jwks");
        signed(header, &c)
    };
    for (kid, status) in [
        ("enc", 401),
        ("wrap", 401),
        ("es384", 401),
        ("rs256", 401),
        ("sig", 200),
        ("bare", 200),
    ] {
        assert_eq!(status_with(&app, &token(kid)).await, status, "kid {kid}");
    }
    assert_eq!(app.finpass.api_calls(), 2);
}
