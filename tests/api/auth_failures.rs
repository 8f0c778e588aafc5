//! Failed authentications are limited per source address (issue #21): a burst, then 429
//! `rate_limited` with `Retry-After` for whatever that source sends, valid tokens included
//! (so no signature is checked for it any more); other sources are unaffected; each refusal
//! is counted by reason (never a caller, source or token in a label) and logged without the
//! token.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    auth::{JWT_FROM_FILE, PRIVATE, claims, jwt_with},
    helpers::{TestApp, assert_problem, captured_logs, register_secret, spawn_app_with},
    read_side::{bearer, service},
};

/// `POST /v1/statements` from a chosen loopback source address (all of 127/8 is loopback on
/// Linux), over a plain socket: status, `Retry-After` and the JSON body.
async fn post_from(app: &TestApp, source: &str, auth: &str) -> (u16, Option<String>, Value) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse::<SocketAddr>().expect("addr"))
        .expect("bind the source address");
    let mut stream = socket
        .connect(format!("127.0.0.1:{}", app.port).parse().expect("addr"))
        .await
        .expect("connect");
    let body = json!({"client_id": "aa_guess"}).to_string();
    let request = format!(
        "POST /v1/statements HTTP/1.1\r\nhost: gateway\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let retry_after = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().to_owned())
    });
    // A chunked body would carry size lines: take the JSON object out of it.
    let json = body
        .find('{')
        .zip(body.rfind('}'))
        .and_then(|(a, b)| serde_json::from_str(&body[a..=b]).ok())
        .unwrap_or(Value::Null);
    (status, retry_after, json)
}

#[actix_web::test]
async fn failed_authentications_are_limited_per_source_address() {
    let (token, entry) = service("loans");
    let mut env: Vec<(&str, &str)> = JWT_FROM_FILE.to_vec();
    env.extend([
        ("CALLER_TOKENS", entry.as_str()),
        ("AUTH_FAILURES_PER_MINUTE", "3"),
    ]);
    let app = spawn_app_with(env.as_slice()).await;
    app.finpass.set_client("aa_guess", vec![]);
    let guesses: Vec<String> = (0..3)
        .map(|i| {
            let guess = format!("guessed-token-{i}-5b0e");
            register_secret(&guess);
            bearer(&guess)
        })
        .collect();
    let user = bearer(&jwt_with(PRIVATE, None, &claims("aa_guess")));
    let service = bearer(&token);

    // The burst: each wrong token is a plain 401.
    for guess in &guesses {
        let (status, _, problem) = post_from(&app, "127.0.0.2", guess).await;
        assert_problem(status, &problem, 401, "unauthorized");
    }
    // Over budget: 429 for anything from that source, a valid JWT or service token too.
    for auth in [&guesses[0], &user, &service] {
        let (status, retry_after, problem) = post_from(&app, "127.0.0.2", auth).await;
        assert_problem(status, &problem, 429, "rate_limited");
        let secs: u64 = retry_after
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&secs), "{secs}");
    }
    assert_eq!(app.finpass.api_calls(), 0);
    // Another source is unaffected.
    let (status, _, body) = post_from(&app, "127.0.0.3", &user).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post_from(&app, "127.0.0.3", &service).await;
    assert_eq!(status, 200, "{body}");

    let app = &app;
    let failures = |reason: &str| {
        let series = format!(r#"finpass_gateway_auth_failures_total{{reason="{reason}"}}"#);
        async move { app.metric(&series).await }
    };
    assert_eq!(failures("invalid_token").await, Some(3.0));
    assert_eq!(failures("rate_limited").await, Some(3.0));
    assert_eq!(failures("invalid_jwt").await, Some(0.0));
    let logs = String::from_utf8_lossy(&captured_logs().lock().expect("logs")).into_owned();
    assert!(
        logs.matches("authentication refused").count() >= 6,
        "each refusal is logged"
    );
    // (The log scan at the end of the test checks that no token was logged.)
}
