//! Scopes per service caller (issue #21): each `CALLER_TOKENS` entry may name what it may do
//! (`name:sha256hex:store+read`); a call outside them is an audited 403 on every route, before
//! Finpass or S3 are touched. An entry without scopes keeps its old reach, and
//! `DELETE_CALLERS` still grants `delete`.

use awc::http::Method;
use finpass_gateway::sandbox::{Body, ReportSpec};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_problem, spawn_app_with},
    read_side::{audit_events, bearer, call, service, statement_ids},
};

/// `name:sha256hex:scopes` for a made-up token (registered for the log scan).
fn scoped(name: &str, scopes: &str) -> (String, String) {
    let (token, entry) = service(name);
    (token, format!("{entry}:{scopes}"))
}

async fn store(app: &TestApp, auth: &str, client: &str) -> (u16, Value) {
    let mut resp = app
        .http
        .post(format!("{}/v1/statements", app.address))
        .insert_header(("authorization", auth))
        .send_json(&json!({"client_id": client}))
        .await
        .expect("store");
    let body = resp.body().limit(1 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[actix_web::test]
async fn a_call_outside_the_callers_scopes_is_an_audited_403_on_every_route() {
    let (batch_token, batch) = scoped("batch", "store");
    let (viewer_token, viewer) = scoped("viewer", "read");
    let (purger_token, purger) = scoped("purger", "delete");
    let app = spawn_app_with(&[
        ("AUTH_DISABLED", "false"),
        ("CALLER_TOKENS", &format!("{batch},{viewer},{purger}")),
    ])
    .await;
    let (batch, viewer, purger) = (
        bearer(&batch_token),
        bearer(&viewer_token),
        bearer(&purger_token),
    );
    app.finpass.set_client(
        "aa_scoped",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 121))],
    );

    // The batch service stores, and can do nothing else.
    let (status, answer) = store(&app, &batch, "aa_scoped").await;
    assert_eq!(status, 200, "{answer}");
    let answer = serde_json::from_value(answer).expect("a StatementsResponse");
    let id = statement_ids(&answer)[0].clone();
    assert_eq!(app.finpass.api_calls(), 1);
    let base = "/v1/clients/aa_scoped/statements";
    let reads = [
        base.to_owned(),
        format!("{base}/{id}"),
        format!("{base}/{id}/content"),
        format!("{base}/{id}/download-url"),
    ];
    let deletes = [base.to_owned(), format!("{base}/{id}")];
    for path in &reads {
        let resp = call(&app, Method::GET, path, &[("authorization", &batch)]).await;
        assert_problem(resp.status, &resp.json(), 403, "forbidden");
    }
    for path in &deletes {
        let resp = call(&app, Method::DELETE, path, &[("authorization", &batch)]).await;
        assert_problem(resp.status, &resp.json(), 403, "forbidden");
    }

    // The viewer reads, and neither stores nor deletes.
    for path in &reads {
        let resp = call(&app, Method::GET, path, &[("authorization", &viewer)]).await;
        assert_eq!(resp.status, 200, "{path}");
    }
    let (status, problem) = store(&app, &viewer, "aa_scoped").await;
    assert_problem(status, &problem, 403, "forbidden");
    assert_eq!(
        app.finpass.api_calls(),
        1,
        "a refused store never reaches Finpass"
    );
    for path in &deletes {
        let resp = call(&app, Method::DELETE, path, &[("authorization", &viewer)]).await;
        assert_problem(resp.status, &resp.json(), 403, "forbidden");
    }
    assert_eq!(
        app.keys("statements/").await.len(),
        1,
        "nothing was deleted"
    );

    // The purger deletes (its entry grants it; DELETE_CALLERS is not set) and reads nothing.
    let resp = call(&app, Method::GET, base, &[("authorization", &purger)]).await;
    assert_problem(resp.status, &resp.json(), 403, "forbidden");
    let resp = call(&app, Method::DELETE, base, &[("authorization", &purger)]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["deleted"], 1);

    let refused: Vec<Value> = audit_events(&app)
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "forbidden")
        .collect();
    let count = |caller: &str, action: &str| {
        refused
            .iter()
            .filter(|e| e["caller"] == caller && e["action"] == action)
            .count()
    };
    assert_eq!(refused.len(), 10, "every refusal is audited: {refused:?}");
    assert_eq!(count("service:batch", "list"), 1);
    assert_eq!(count("service:batch", "read"), 1);
    assert_eq!(count("service:batch", "content"), 1);
    assert_eq!(count("service:batch", "download_url"), 1);
    assert_eq!(count("service:batch", "delete"), 2);
    assert_eq!(count("service:viewer", "store"), 1);
    assert_eq!(count("service:viewer", "delete"), 2);
    assert_eq!(count("service:purger", "list"), 1);
    assert!(refused.iter().all(|e| e["client_id"] == "aa_scoped"));
}

#[actix_web::test]
async fn an_entry_without_scopes_keeps_its_old_reach_and_delete_callers_still_grants_delete() {
    let (plain_token, plain) = service("plain");
    let (ops_token, ops) = service("ops");
    let (reader_token, reader) = scoped("reader", "read");
    let app = spawn_app_with(&[
        ("AUTH_DISABLED", "false"),
        ("CALLER_TOKENS", &format!("{plain},{ops},{reader}")),
        ("DELETE_CALLERS", "ops,reader"),
    ])
    .await;
    let (plain, ops, reader) = (
        bearer(&plain_token),
        bearer(&ops_token),
        bearer(&reader_token),
    );
    app.finpass.set_client(
        "aa_legacy",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(2_000, 122))],
    );
    let (status, answer) = store(&app, &plain, "aa_legacy").await;
    assert_eq!(status, 200, "{answer}");
    let base = "/v1/clients/aa_legacy/statements";
    assert_eq!(
        call(&app, Method::GET, base, &[("authorization", &plain)])
            .await
            .status,
        200
    );
    let resp = call(&app, Method::DELETE, base, &[("authorization", &plain)]).await;
    assert_problem(resp.status, &resp.json(), 403, "forbidden");
    assert_eq!(
        call(&app, Method::GET, base, &[("authorization", &reader)])
            .await
            .status,
        200
    );
    // DELETE_CALLERS adds `delete` to whatever the entry names.
    let (status, problem) = store(&app, &reader, "aa_legacy").await;
    assert_problem(status, &problem, 403, "forbidden");
    let resp = call(&app, Method::DELETE, base, &[("authorization", &reader)]).await;
    assert_eq!(resp.status, 200);
    let (status, _) = store(&app, &ops, "aa_legacy").await;
    assert_eq!(status, 200);
    let resp = call(&app, Method::DELETE, base, &[("authorization", &ops)]).await;
    assert_eq!(
        (resp.status, resp.json()["deleted"].clone()),
        (200, json!(1))
    );
}
