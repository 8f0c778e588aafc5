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
    post_via(app, source, None, auth).await
}

/// As [`post_from`], with an `X-Forwarded-For` header when `forwarded_for` is given (the
/// peer playing a reverse proxy).
async fn post_via(
    app: &TestApp,
    source: &str,
    forwarded_for: Option<&str>,
    auth: &str,
) -> (u16, Option<String>, Value) {
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
        "POST /v1/statements HTTP/1.1\r\nhost: gateway\r\nauthorization: {auth}\r\n{xff}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len(),
        xff = forwarded_for
            .map(|f| format!("x-forwarded-for: {f}\r\n"))
            .unwrap_or_default(),
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

/// Behind the ingress every call's peer is the ingress controller: keyed on the peer, one
/// guesser would spend the budget of every frontend user. From a proxy listed in
/// `TRUSTED_PROXIES` the budget is the first `X-Forwarded-For` hop's (the audit trail's source
/// address); from anyone else the header is ignored.
#[actix_web::test]
async fn behind_a_trusted_proxy_the_budget_is_the_forwarded_sources() {
    let mut env: Vec<(&str, &str)> = JWT_FROM_FILE.to_vec();
    env.extend([
        ("AUTH_FAILURES_PER_MINUTE", "2"),
        ("TRUSTED_PROXIES", "127.0.0.4/32"),
    ]);
    let app = spawn_app_with(env.as_slice()).await;
    app.finpass.set_client("aa_guess", vec![]);
    let guess = "guessed-token-behind-proxy-7c1d";
    register_secret(guess);
    let guess = bearer(guess);
    let user = bearer(&jwt_with(PRIVATE, None, &claims("aa_guess")));
    let proxy = "127.0.0.4";

    for _ in 0..2 {
        let (status, _, problem) = post_via(&app, proxy, Some("203.0.113.7"), &guess).await;
        assert_problem(status, &problem, 401, "unauthorized");
    }
    let (status, _, problem) = post_via(&app, proxy, Some("203.0.113.7"), &user).await;
    assert_problem(status, &problem, 429, "rate_limited");
    // Another user behind the same proxy keeps its own budget.
    let (status, _, body) = post_via(&app, proxy, Some("198.51.100.9"), &user).await;
    assert_eq!(status, 200, "{body}");
    // An untrusted peer cannot borrow (or spend) a forwarded address's budget.
    let (status, _, body) = post_via(&app, "127.0.0.5", Some("203.0.113.7"), &user).await;
    assert_eq!(status, 200, "{body}");
}
