//! Two listeners (issue #21): with `PUBLIC_LISTEN_ADDR` a second port serves frontend users
//! only (JWTs; service tokens 401), only the routes users may call, no probes, metrics or
//! OpenAPI document, no deletes; `LISTEN_ADDR` stays the internal port, serving everything as
//! before. A graceful shutdown drains both.

use std::time::Duration;

use awc::http::Method;
use finpass_gateway::sandbox::{Body, LinkFault, ReportSpec};
use serde_json::json;

use crate::{
    auth::{JWT_FROM_FILE, PRIVATE, claims, jwt_with},
    helpers::{TestApp, assert_problem, spawn_app_with},
    read_side::{Resp, bearer, service},
};

async fn app_with_public_listener(tokens: &str) -> TestApp {
    let mut env: Vec<(&str, &str)> = JWT_FROM_FILE.to_vec();
    env.extend([
        ("PUBLIC_LISTEN_ADDR", "127.0.0.1:0"),
        ("CALLER_TOKENS", tokens),
        ("DELETE_CALLERS", "ops"),
    ]);
    spawn_app_with(env.as_slice()).await
}

/// One request to `base` (either listener).
async fn at(app: &TestApp, base: &str, method: Method, path: &str, auth: Option<&str>) -> Resp {
    let mut req = app.http.request(method, format!("{base}{path}"));
    if let Some(a) = auth {
        req = req.insert_header(("authorization", a));
    }
    let mut resp = if path == "/v1/statements" {
        req.send_json(&json!({"client_id": "aa_front"})).await
    } else {
        req.send().await
    }
    .expect("request");
    let body = resp.body().limit(8 << 20).await.expect("body");
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

#[actix_web::test]
async fn the_public_listener_serves_users_only_and_only_their_routes() {
    let (ops_token, ops) = service("ops");
    let app = app_with_public_listener(&ops).await;
    let public = app
        .public_address
        .clone()
        .expect("PUBLIC_LISTEN_ADDR is served");
    let internal = app.address.clone();
    app.finpass.set_client(
        "aa_front",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(3_000, 131))],
    );
    let user = bearer(&jwt_with(PRIVATE, None, &claims("aa_front")));
    let other_user = bearer(&jwt_with(PRIVATE, None, &claims("aa_someone_else")));
    let ops = bearer(&ops_token);

    // Service tokens and missing tokens are refused on every public route, before Finpass.
    for auth in [Some(ops.as_str()), None, Some("Bearer not-a-token")] {
        let resp = at(&app, &public, Method::POST, "/v1/statements", auth).await;
        assert_problem(resp.status, &resp.json(), 401, "unauthorized");
        let resp = at(
            &app,
            &public,
            Method::GET,
            "/v1/clients/aa_front/statements",
            auth,
        )
        .await;
        assert_problem(resp.status, &resp.json(), 401, "unauthorized");
    }
    assert_eq!(app.finpass.api_calls(), 0);

    // A user stores and reads its own client there.
    let stored = at(&app, &public, Method::POST, "/v1/statements", Some(&user)).await;
    assert_eq!(stored.status, 200, "{:?}", stored.json());
    let id = stored.json()["reports"][0]["statement_id"]
        .as_str()
        .expect("statement_id")
        .to_owned();
    let base = "/v1/clients/aa_front/statements";
    for path in [
        base.to_owned(),
        format!("{base}/{id}"),
        format!("{base}/{id}/content"),
        format!("{base}/{id}/download-url"),
    ] {
        let resp = at(&app, &public, Method::GET, &path, Some(&user)).await;
        assert_eq!(resp.status, 200, "GET {path}");
        let resp = at(&app, &public, Method::GET, &path, Some(&other_user)).await;
        assert_problem(resp.status, &resp.json(), 403, "forbidden");
    }
    // No deletes there at all, whoever asks.
    for path in [base.to_owned(), format!("{base}/{id}")] {
        for auth in [&user, &ops] {
            let resp = at(&app, &public, Method::DELETE, &path, Some(auth)).await;
            assert_problem(resp.status, &resp.json(), 405, "method_not_allowed");
            assert_eq!(resp.header("allow"), Some("GET"));
        }
    }
    // Probes, metrics and the OpenAPI document are the internal port's.
    for path in ["/metrics", "/healthz", "/readyz", "/openapi.yaml"] {
        let resp = at(&app, &public, Method::GET, path, None).await;
        assert_problem(resp.status, &resp.json(), 404, "not_found");
        assert_eq!(
            at(&app, &internal, Method::GET, path, None).await.status,
            200,
            "{path} on the internal port"
        );
    }

    // The internal port is unchanged: service tokens (and users) as before, deletes included.
    let resp = at(&app, &internal, Method::GET, base, Some(&ops)).await;
    assert_eq!(resp.status, 200);
    let resp = at(&app, &internal, Method::GET, base, Some(&user)).await;
    assert_eq!(resp.status, 200);
    let resp = at(&app, &internal, Method::DELETE, base, Some(&ops)).await;
    assert_eq!(
        (resp.status, resp.json()["deleted"].clone()),
        (200, json!(1))
    );
}

#[actix_web::test]
async fn a_shutdown_drains_calls_on_the_public_listener() {
    let (_, ops) = service("ops");
    let app = app_with_public_listener(&ops).await;
    let public = app
        .public_address
        .clone()
        .expect("PUBLIC_LISTEN_ADDR is served");
    // 2 MiB in 64 KiB chunks 50 ms apart: the call is in progress for over a second.
    let body = Body::Pdf {
        size: 2 << 20,
        seed: 132,
        chunked: false,
    };
    app.finpass.set_client(
        "aa_front",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", body.clone())
                .with_faults(vec![LinkFault::Slow(Duration::from_millis(50))]),
        ],
    );
    let user = bearer(&jwt_with(PRIVATE, None, &claims("aa_front")));
    let call = at(&app, &public, Method::POST, "/v1/statements", Some(&user));
    let stop = async {
        app.finpass.wait_for_downloads(1).await;
        app.stop().await;
    };
    let (resp, ()) = futures_util::future::join(call, stop).await;
    assert_eq!(
        resp.status,
        200,
        "the call in progress finished: {:?}",
        resp.json()
    );
    assert_eq!(resp.json()["summary"]["stored"], 1);
    let keys = app.keys("statements/aa_front/").await;
    app.assert_bucket_holds_exactly(&[(keys[0].as_str(), body.sha256())])
        .await;
    let port = public.rsplit(':').next().expect("port");
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "the public listener is closed after the shutdown"
    );
}
