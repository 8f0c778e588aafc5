//! Statement jobs' webhooks (#19) through the public HTTP API, to a real receiver on loopback.
//! Every signature is verified with the `standardwebhooks` crate: an independent
//! implementation of Standard Webhooks, not the gateway's signer. Waits poll a condition within
//! a generous bound; never a fixed sleep.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::{Engine, engine::general_purpose::STANDARD};
use finpass_gateway::sandbox::{Body, ReportSpec, SandboxStatus};
use serde_json::{Value, json};

use crate::{
    auth::{JWT_FROM_FILE, PRIVATE, claims, jwt_with},
    helpers::{TestApp, assert_problem, spawn_app_with},
};

/// Far above what any job here needs, so a slow machine passes and a stuck job fails.
const BOUND: Duration = Duration::from_secs(90);

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    headers: http::HeaderMap,
    body: Vec<u8>,
    answered: u16,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver: answers each request with the next scripted status (then 204).
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
}

struct ReceiverState {
    script: Mutex<VecDeque<u16>>,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start(script: &[u16]) -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let state = web::Data::new(ReceiverState {
            script: Mutex::new(script.iter().copied().collect()),
            got: Arc::clone(&got),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            App::new().app_data(state.clone()).default_service(web::to(
                |req: HttpRequest, body: web::Bytes, state: web::Data<ReceiverState>| async move {
                    let status = state.script.lock().unwrap().pop_front().unwrap_or(204);
                    let mut headers = http::HeaderMap::new();
                    for (k, v) in req.headers() {
                        headers.append(
                            http::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
                            http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
                        );
                    }
                    state.got.lock().unwrap().push(Got {
                        headers,
                        body: body.to_vec(),
                        answered: status,
                    });
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .finish()
                },
            ))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        Self { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/statement-jobs", self.port)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

fn secret() -> String {
    format!(
        "whsec_{}",
        STANDARD.encode(*b"webhook-api-test-secret-32-bytes")
    )
}

/// The gateway with a fast poll and retry ladder, and `receiver` allowed for the sandbox's
/// caller (`anonymous`). Returns the app and the endpoints file (kept alive).
async fn app_for(receiver: &Receiver, retries: &str) -> (TestApp, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(
        file.path(),
        format!(
            "# test receiver\nanonymous http://127.0.0.1:{}/hooks/ {}\n",
            receiver.port,
            secret()
        ),
    )
    .expect("write endpoints");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let app = spawn_app_with(&[
        ("JOB_POLL_SCHEDULE", "200ms,200ms,500ms"),
        ("WEBHOOK_RETRY_SCHEDULE", retries),
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_ENDPOINTS_FILE", path.as_str()),
    ])
    .await;
    (app, file)
}

async fn create(app: &TestApp, body: &Value, auth: Option<&str>) -> (u16, Value) {
    let mut req = app.http.post(format!("{}/v1/statement-jobs", app.address));
    if let Some(a) = auth {
        req = req.insert_header(("authorization", a));
    }
    let mut resp = req.send_json(body).await.expect("request");
    let body = resp.body().limit(1 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn new_job(app: &TestApp, client_id: &str, receiver: &Receiver) -> String {
    let (status, job) = create(
        app,
        &json!({"client_id": client_id, "webhook_url": receiver.url()}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(
        job["webhook"],
        json!({"url": receiver.url(), "delivered": 0, "failed": 0, "last_status": null})
    );
    job["job_id"].as_str().expect("job_id").to_owned()
}

async fn job(app: &TestApp, id: &str) -> Value {
    let mut resp = app
        .http
        .get(format!("{}/v1/statement-jobs/{id}", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().limit(1 << 20).await.expect("job")
}

/// GETs the job until `done` holds, within [`BOUND`].
async fn wait_for(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let job = job(app, id).await;
        if done(&job) {
            return job;
        }
        assert!(start.elapsed() < BOUND, "job never {what}: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn verify(got: &Got) {
    standardwebhooks::Webhook::new(&secret())
        .expect("secret")
        .verify(&got.body, &got.headers)
        .unwrap_or_else(|e| {
            panic!(
                "signature of {} does not verify: {e}",
                got.header("webhook-id")
            )
        });
}

/// A client with one report READY at once and one PENDING for two more calls: a job on it
/// sends `statement_job.updated`, then `statement_job.completed`.
fn two_step_client(app: &TestApp) -> &'static str {
    app.finpass.set_client(
        "aa_hook_two_step",
        vec![
            ReportSpec::ready("HDFC-FIP", "XXXXXXXXXX1234", Body::pdf(4096, 21)),
            ReportSpec::ready("ICICI-FIP", "XXXXXXXX1326", Body::pdf(4096, 22))
                .with_status(SandboxStatus::Pending { polls: 2 }),
        ],
    );
    "aa_hook_two_step"
}

#[actix_web::test]
async fn a_pending_job_ends_in_a_verified_completed_event() {
    let receiver = Receiver::start(&[]);
    let (app, _file) = app_for(&receiver, "200ms,200ms,200ms").await;
    let id = new_job(&app, "aa_demo_pending", &receiver).await;
    let done = wait_for(&app, &id, "delivered its completed event", |j| {
        j["state"] == "completed" && j["webhook"]["delivered"] == 1
    })
    .await;
    assert_eq!(done["webhook"]["failed"], 0, "{done}");
    assert_eq!(done["webhook"]["last_status"], 204, "{done}");
    let got = receiver.got();
    assert_eq!(got.len(), 1, "{got:?}");
    let event = got[0].event();
    assert_eq!(event["type"], "statement_job.completed");
    assert!(
        event["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(event["data"]["job_id"], id.as_str());
    assert_eq!(event["data"]["state"], "completed");
    assert_eq!(event["data"]["reports"][0]["status"], "stored");
    assert_eq!(got[0].header("content-type"), "application/json");
    assert!(got[0].header("webhook-id").starts_with("msg_"));
    verify(&got[0]);
    // No link, PDF or token: the simulator's links point at its own port.
    let body = String::from_utf8_lossy(&got[0].body);
    let finpass = format!("127.0.0.1:{}", app.finpass.port());
    assert!(!body.contains(&finpass) && !body.contains("X-Amz") && !body.contains("%PDF"));
}

#[actix_web::test]
async fn events_of_a_job_arrive_in_order_and_a_500_is_retried_under_the_same_webhook_id() {
    // The first attempt (of `updated`) fails; `completed` must wait behind its retry.
    let receiver = Receiver::start(&[500]);
    let (app, _file) = app_for(&receiver, "200ms,200ms,200ms").await;
    let client = two_step_client(&app);
    let id = new_job(&app, client, &receiver).await;
    let done = wait_for(&app, &id, "delivered both events", |j| {
        j["state"] == "completed" && j["webhook"]["delivered"] == 2
    })
    .await;
    assert_eq!(done["webhook"]["failed"], 0, "{done}");
    let got = receiver.got();
    let seen: Vec<(String, String, u16)> = got
        .iter()
        .map(|g| {
            (
                g.event()["type"].as_str().unwrap_or_default().to_owned(),
                g.header("webhook-id").to_owned(),
                g.answered,
            )
        })
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].0, "statement_job.updated");
    assert_eq!(seen[0].2, 500);
    assert_eq!(seen[1].0, "statement_job.updated");
    assert_eq!(seen[1].1, seen[0].1, "a retry keeps its webhook-id");
    assert_eq!(seen[1].2, 204);
    assert_eq!(seen[2].0, "statement_job.completed");
    assert_ne!(seen[2].1, seen[0].1);
    // Same id and body on the retry: only the timestamp (and so the signature) is the attempt's.
    assert_eq!(got[0].body, got[1].body);
    for g in &got {
        verify(g);
    }
    assert_eq!(got[0].event()["data"]["summary"]["pending"], 1);
}

#[actix_web::test]
async fn a_410_stops_the_jobs_deliveries_and_the_job_still_completes() {
    let receiver = Receiver::start(&[410]);
    let (app, _file) = app_for(&receiver, "200ms,200ms,200ms").await;
    let client = two_step_client(&app);
    let id = new_job(&app, client, &receiver).await;
    let done = wait_for(&app, &id, "gave up on both events", |j| {
        j["state"] == "completed" && j["webhook"]["failed"] == 2
    })
    .await;
    assert_eq!(done["webhook"]["delivered"], 0, "{done}");
    assert_eq!(done["webhook"]["last_status"], 410, "{done}");
    let got = receiver.got();
    assert_eq!(got.len(), 1, "nothing is sent after a 410: {got:?}");
    assert_eq!(got[0].event()["type"], "statement_job.updated");
}

#[actix_web::test]
async fn retries_run_out_and_the_event_is_failed_without_changing_the_job() {
    let receiver = Receiver::start(&[500, 503, 500]);
    let (app, _file) = app_for(&receiver, "200ms,200ms").await;
    let id = new_job(&app, "aa_demo_ready", &receiver).await;
    let done = wait_for(&app, &id, "gave up on its event", |j| {
        j["webhook"]["failed"] == 1
    })
    .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["error"], Value::Null, "{done}");
    assert_eq!(done["webhook"]["delivered"], 0);
    assert_eq!(done["webhook"]["last_status"], 500);
    let got = receiver.got();
    // The first attempt and one per step of the ladder, all the same event.
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter()
            .all(|g| g.header("webhook-id") == got[0].header("webhook-id"))
    );
}

#[actix_web::test]
async fn a_webhook_url_outside_the_callers_prefixes_is_refused() {
    let receiver = Receiver::start(&[]);
    let (app, _file) = app_for(&receiver, "200ms").await;
    let port = receiver.port;
    for url in [
        format!("http://127.0.0.1:{port}/other"),
        format!("http://127.0.0.1:{port}/hooksx"),
        format!("http://127.0.0.1:{}/hooks/", port.wrapping_add(1)),
        format!("http://localhost:{port}/hooks/"),
        format!("https://127.0.0.1:{port}/hooks/"),
        format!("http://user:pw@127.0.0.1:{port}/hooks/"),
        "not a url".to_owned(),
    ] {
        let (status, problem) = create(
            &app,
            &json!({"client_id": "aa_demo_ready", "webhook_url": url}),
            None,
        )
        .await;
        assert_problem(status, &problem, 400, "webhook_not_allowed");
    }
    assert!(receiver.got().is_empty());
}

#[actix_web::test]
async fn a_user_token_cannot_set_a_webhook_url() {
    let receiver = Receiver::start(&[]);
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(
        file.path(),
        format!("anonymous {} {}\n", receiver.url(), secret()),
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let mut env = JWT_FROM_FILE.to_vec();
    env.push(("WEBHOOK_ALLOW_HTTP", "true"));
    env.push(("WEBHOOK_ENDPOINTS_FILE", path.as_str()));
    let app = spawn_app_with(env.as_slice()).await;
    let token = jwt_with(PRIVATE, None, &claims("aa_demo_ready"));
    let (status, problem) = create(
        &app,
        &json!({"client_id": "aa_demo_ready", "webhook_url": receiver.url()}),
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_problem(status, &problem, 400, "invalid_request");
    assert!(receiver.got().is_empty());
}

/// The event's `webhook-id` is fixed in the job record when the event is queued: a replacement
/// gateway (another process's wake-up of the same job) retries it under the same id, and the
/// terminal event is delivered once.
#[actix_web::test]
async fn a_replacement_gateway_retries_the_terminal_event_under_its_webhook_id() {
    // The first two attempts fail; the third (whichever gateway makes it) is delivered.
    let receiver = Receiver::start(&[500, 500]);
    let (mut app, _file) = app_for(&receiver, "1s,1s,1s,1s").await;
    let id = new_job(&app, "aa_demo_ready", &receiver).await;
    let start = Instant::now();
    while receiver.got().is_empty() {
        assert!(start.elapsed() < BOUND, "no attempt reached the receiver");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.restart_with(&[]).await;
    let done = wait_for(&app, &id, "delivered its completed event", |j| {
        j["webhook"]["delivered"] == 1
    })
    .await;
    assert_eq!(done["state"], "completed", "{done}");
    let got = receiver.got();
    assert!(got.len() >= 3, "{got:?}");
    assert!(
        got.iter()
            .all(|g| g.header("webhook-id") == got[0].header("webhook-id")),
        "one event, one webhook-id: {got:?}"
    );
    assert_eq!(got.iter().filter(|g| g.answered == 204).count(), 1);
    assert!(
        got.iter()
            .all(|g| g.event()["type"] == "statement_job.completed")
    );
}
