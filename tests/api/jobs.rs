//! Statement jobs (#19) through the public HTTP API: created with one call, polled by the
//! gateway on its ladder (`JOB_POLL_SCHEDULE` in milliseconds here), read back with GET.
//! Waits poll the job's GET route until a condition holds, bounded generously: never a fixed
//! sleep.

use std::time::{Duration, Instant};

use finpass_gateway::sandbox::{ApiFault, Body, ReportSpec, SandboxStatus};
use serde_json::{Value, json};

use crate::{
    auth::{JWT_FROM_FILE, PRIVATE, claims, jwt_with},
    helpers::{TestApp, assert_problem, spawn_app_with},
    read_side::audit_events,
};

/// A fast ladder, so a job's polls come a fraction of a second apart.
const FAST: (&str, &str) = ("JOB_POLL_SCHEDULE", "200ms,200ms,500ms");
/// Far above what any job here needs, so a slow machine passes and a stuck job fails.
const BOUND: Duration = Duration::from_secs(90);

async fn create(
    app: &TestApp,
    body: &Value,
    key: Option<&str>,
    auth: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = app.http.post(format!("{}/v1/statement-jobs", app.address));
    if let Some(k) = key {
        req = req.insert_header(("idempotency-key", k));
    }
    if let Some(a) = auth {
        req = req.insert_header(("authorization", a));
    }
    let mut resp = req.send_json(body).await.expect("request");
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.body().limit(1 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        location,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn send(app: &TestApp, method: &str, job_id: &str, auth: Option<&str>) -> (u16, Value) {
    let url = format!("{}/v1/statement-jobs/{job_id}", app.address);
    let mut req = match method {
        "DELETE" => app.http.delete(url),
        _ => app.http.get(url),
    };
    if let Some(a) = auth {
        req = req.insert_header(("authorization", a));
    }
    let mut resp = req.send().await.expect("request");
    let body = resp.body().limit(1 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn job(app: &TestApp, job_id: &str) -> Value {
    let (status, job) = send(app, "GET", job_id, None).await;
    assert_eq!(status, 200, "{job}");
    job
}

/// GETs the job until `done` holds for it, within [`BOUND`].
async fn wait_for(app: &TestApp, job_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let job = job(app, job_id).await;
        if done(&job) {
            return job;
        }
        assert!(start.elapsed() < BOUND, "job never {what}: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_state(app: &TestApp, job_id: &str, state: &str) -> Value {
    wait_for(app, job_id, state, |j| j["state"] == state).await
}

async fn new_job(app: &TestApp, body: Value) -> String {
    let (status, location, job) = create(app, &body, None, None).await;
    assert_eq!(status, 202, "{job}");
    let id = job["job_id"].as_str().expect("job_id").to_owned();
    assert_eq!(
        location.as_deref(),
        Some(format!("/v1/statement-jobs/{id}").as_str())
    );
    id
}

#[actix_web::test]
async fn a_pending_client_becomes_a_completed_job_with_its_report_stored() {
    let app = spawn_app_with(&[FAST]).await;
    let (status, location, created) =
        create(&app, &json!({"client_id": "aa_demo_pending"}), None, None).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["state"], "queued");
    assert_eq!(created["polls"], 0);
    let id = created["job_id"].as_str().expect("job_id");
    assert_eq!(location, Some(format!("/v1/statement-jobs/{id}")));

    let done = wait_for_state(&app, id, "completed").await;
    // aa_demo_pending is PENDING for two Finpass calls, READY on the third.
    assert_eq!(done["polls"], 3, "{done}");
    assert_eq!(done["next_poll_at"], Value::Null);
    assert_eq!(done["error"], Value::Null);
    assert_eq!(
        done["summary"],
        json!({"stored": 1, "pending": 0, "failed": 0})
    );
    let report = &done["reports"][0];
    assert_eq!(report["status"], "stored", "{done}");
    let key = report["object"]["key"].as_str().expect("key");
    let statement_id = report["statement_id"].as_str().expect("statement_id");
    assert!(key.ends_with(&format!("{statement_id}.pdf")), "{key}");
    let (sha, _) = app.object_sha256(key).await;
    assert_eq!(Some(sha.as_str()), report["object"]["sha256"].as_str());
    // The same statement the synchronous route stores: it answers the same key, no new download.
    let downloads = app.finpass.downloads("aa_demo_pending");
    let stored = app.store_ok(&json!({"client_id": "aa_demo_pending"})).await;
    assert_eq!(
        stored.reports[0].object.as_ref().map(|o| o.key.as_str()),
        Some(key)
    );
    assert_eq!(app.finpass.downloads("aa_demo_pending"), downloads);
    // The record is one object under JOBS_PREFIX.
    assert_eq!(app.keys("jobs/").await, [format!("jobs/{id}.json")]);
    // The job's store is audited as a store, with the job's id; its creation and reads too.
    let events = audit_events(&app).await;
    let store = events
        .iter()
        .find(|e| e["action"] == "store" && e["http_request_id"] == id)
        .expect("the job's store event");
    assert_eq!(store["statement_ids"], json!([statement_id]));
    assert_eq!(store["client_id"], "aa_demo_pending");
    assert_eq!(store["outcome"], "ok");
    for action in ["job_create", "job_read"] {
        assert!(
            events
                .iter()
                .any(|e| e["action"] == action && e["client_id"] == "aa_demo_pending"),
            "{action}"
        );
    }
}

#[actix_web::test]
async fn the_same_idempotency_key_and_body_is_the_same_job_another_body_is_422() {
    let app = spawn_app_with(&[FAST]).await;
    let body = json!({"client_id": "aa_demo_ready", "wait_seconds": 600});
    let (s1, _, first) = create(&app, &body, Some("order-42"), None).await;
    let (s2, _, again) = create(&app, &body, Some("order-42"), None).await;
    assert_eq!((s1, s2), (202, 202), "{first} {again}");
    assert_eq!(first["job_id"], again["job_id"]);
    assert_eq!(first["created_at"], again["created_at"]);

    let other = json!({"client_id": "aa_demo_ready", "wait_seconds": 601});
    let (status, _, problem) = create(&app, &other, Some("order-42"), None).await;
    assert_problem(status, &problem, 422, "idempotency_key_reused");

    let (_, _, fresh) = create(&app, &body, None, None).await;
    assert_ne!(fresh["job_id"], first["job_id"], "no key: a new job");
    let id = first["job_id"].as_str().expect("id");
    wait_for_state(&app, id, "completed").await;
    assert_eq!(app.keys("jobs/").await.len(), 2, "two jobs, not three");
}

#[actix_web::test]
async fn bad_requests_are_refused_before_any_finpass_call() {
    let app = spawn_app_with(&[FAST]).await;
    for (body, key) in [
        (
            json!({"client_id": "aa_demo_ready", "wait_seconds": 0}),
            None,
        ),
        (
            json!({"client_id": "aa_demo_ready", "wait_seconds": 259_201}),
            None,
        ),
        (json!({"client_id": "a/b"}), None),
        (json!({"client_id": "aa_demo_ready", "extra": 1}), None),
        (json!({"client_id": "aa_demo_ready"}), Some("has space")),
        (
            json!({"client_id": "aa_demo_ready"}),
            Some(&*"k".repeat(256)),
        ),
    ] {
        let (status, _, problem) = create(&app, &body, key, None).await;
        assert_problem(status, &problem, 400, "invalid_request");
    }
    let (status, _, problem) = create(
        &app,
        &json!({"client_id": "aa_demo_ready", "webhook_url": "https://hooks.example.com/x"}),
        None,
        None,
    )
    .await;
    assert_problem(status, &problem, 400, "webhook_not_allowed");
    let (status, problem) = send(&app, "GET", "job_unknown", None).await;
    assert_problem(status, &problem, 404, "job_not_found");
    let (status, problem) = send(&app, "GET", "bad.id", None).await;
    assert_problem(status, &problem, 400, "invalid_request");
    let (status, problem) = send(&app, "DELETE", "job_unknown", None).await;
    assert_problem(status, &problem, 404, "job_not_found");
    assert_eq!(app.finpass.api_calls(), 0);
    assert!(app.keys("jobs/").await.is_empty());
}

#[actix_web::test]
async fn a_user_reads_only_its_own_clients_jobs_and_sets_no_webhook() {
    let mut env = JWT_FROM_FILE.to_vec();
    env.push(FAST);
    let app = spawn_app_with(env.as_slice()).await;
    app.finpass.set_client(
        "aa_mine",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(1000, 2))],
    );
    app.finpass.set_client(
        "aa_theirs",
        vec![ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(1000, 3))],
    );
    let mine = format!("Bearer {}", jwt_with(PRIVATE, None, &claims("aa_mine")));
    let theirs = format!("Bearer {}", jwt_with(PRIVATE, None, &claims("aa_theirs")));

    let (status, _, job) = create(&app, &json!({"client_id": "aa_mine"}), None, Some(&mine)).await;
    assert_eq!(status, 202, "{job}");
    let id = job["job_id"].as_str().expect("id");
    let (status, _, problem) =
        create(&app, &json!({"client_id": "aa_theirs"}), None, Some(&mine)).await;
    assert_problem(status, &problem, 403, "forbidden");
    let (status, problem) = send(&app, "GET", id, Some(&theirs)).await;
    assert_problem(status, &problem, 403, "forbidden");
    let (status, seen) = send(&app, "GET", id, Some(&mine)).await;
    assert_eq!((status, &seen["job_id"]), (200, &job["job_id"]));
    let (status, _, problem) = create(
        &app,
        &json!({"client_id": "aa_mine", "webhook_url": "https://hooks.example.com/x"}),
        None,
        Some(&mine),
    )
    .await;
    assert_problem(status, &problem, 400, "invalid_request");
}

#[actix_web::test]
async fn a_cancelled_job_makes_no_further_finpass_calls() {
    let app = spawn_app_with(&[FAST]).await;
    app.finpass.set_client(
        "aa_forever",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(1000, 2))
                .with_status(SandboxStatus::Pending { polls: usize::MAX }),
        ],
    );
    let id = new_job(&app, json!({"client_id": "aa_forever"})).await;
    let polled = wait_for(&app, &id, "polled", |j| j["polls"].as_u64() >= Some(1)).await;
    assert_eq!(polled["state"], "running");
    assert_eq!(polled["reports"][0]["status"], "pending");

    let (status, cancelled) = send(&app, "DELETE", &id, None).await;
    assert_eq!(
        (status, &cancelled["state"]),
        (200, &json!("cancelled")),
        "{cancelled}"
    );
    assert_eq!(cancelled["next_poll_at"], Value::Null);
    let calls = app.finpass.api_calls();
    let polls = cancelled["polls"].as_u64().expect("polls");

    // Another job runs to completion meanwhile: the cancelled one is not polled in that time.
    let other = new_job(&app, json!({"client_id": "aa_demo_pending"})).await;
    let other = wait_for_state(&app, &other, "completed").await;
    let other_polls = other["polls"].as_u64().expect("polls") as usize;
    let after = job(&app, &id).await;
    assert_eq!(after["state"], "cancelled");
    assert!(
        after["polls"].as_u64() <= Some(polls + 1),
        "at most a poll already in flight: {after}"
    );
    assert!(
        app.finpass.api_calls() <= calls + other_polls + 1,
        "the cancelled job kept polling"
    );
    // A finished job is answered unchanged.
    let (status, again) = send(&app, "DELETE", &id, None).await;
    assert_eq!((status, &again["updated_at"]), (200, &after["updated_at"]));
}

#[actix_web::test]
async fn a_job_still_pending_at_its_deadline_expires() {
    let app = spawn_app_with(&[FAST]).await;
    app.finpass.set_client(
        "aa_forever",
        vec![
            ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(1000, 2))
                .with_status(SandboxStatus::Pending { polls: usize::MAX }),
            ReportSpec::ready("AXIS-FIP", "X2", Body::pdf(1000, 3)),
        ],
    );
    let id = new_job(&app, json!({"client_id": "aa_forever", "wait_seconds": 2})).await;
    let done = wait_for(&app, &id, "finished", |j| {
        j["state"] != "queued" && j["state"] != "running"
    })
    .await;
    assert_eq!(done["state"], "expired", "{done}");
    assert_eq!(done["error"], Value::Null);
    assert_eq!(done["reports"][0]["status"], "pending");
    assert_eq!(
        done["reports"][1]["status"], "stored",
        "the stored one stays stored"
    );
    assert!(done["polls"].as_u64() >= Some(2), "{done}");
}

#[actix_web::test]
async fn an_unknown_client_fails_the_job() {
    let app = spawn_app_with(&[FAST]).await;
    let id = new_job(&app, json!({"client_id": "aa_nobody_knows"})).await;
    let done = wait_for(&app, &id, "finished", |j| {
        j["state"] != "queued" && j["state"] != "running"
    })
    .await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "client_not_found");
    assert_eq!(done["polls"], 1);
    assert_eq!(done["reports"], json!([]));
}

#[actix_web::test]
async fn transient_finpass_failures_are_retried_then_the_job_completes() {
    // One attempt per Finpass call: each fault reaches the job as a failed poll.
    let app = spawn_app_with(&[FAST, ("FINPASS_MAX_ATTEMPTS", "1")]).await;
    app.finpass.push_api_faults([
        ApiFault::Status(503),
        ApiFault::RateLimited {
            retry_after_secs: 1,
        },
        ApiFault::Status(500),
    ]);
    let id = new_job(&app, json!({"client_id": "aa_demo_ready"})).await;
    let done = wait_for(&app, &id, "finished", |j| {
        j["state"] != "queued" && j["state"] != "running"
    })
    .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["polls"], 4, "three failed polls, then the answer");
    assert_eq!(done["summary"]["stored"], 2, "{done}");
}

#[actix_web::test]
async fn a_replacement_gateway_finishes_a_job_the_first_one_started() {
    // The first gateway cannot reach Finpass: its job keeps running (a transient failure).
    let mut app = spawn_app_with(&[
        FAST,
        ("FINPASS_BASE_URL", "http://127.0.0.1:9"),
        ("FINPASS_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let id = new_job(&app, json!({"client_id": "aa_demo_ready"})).await;
    let running = wait_for(&app, &id, "polled", |j| j["polls"].as_u64() >= Some(1)).await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(app.finpass.api_calls(), 0);

    // Its replacement, over the same bucket, resumes the job at start-up and finishes it.
    let finpass = app.finpass.base_url();
    app.restart_with(&[("FINPASS_BASE_URL", &finpass)]).await;
    let done = wait_for_state(&app, &id, "completed").await;
    assert_eq!(done["summary"]["stored"], 2, "{done}");
}
