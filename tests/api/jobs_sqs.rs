//! Statement jobs on Amazon SQS (`JOBS_QUEUE_URL`), two gateway processes over one bucket and
//! one queue: the release shape with several replicas. Needs an SQS server: `.ci/moto.sh` runs
//! these with `--ignored` against `moto[server]`, which serves both S3 (`TEST_S3_ENDPOINT`) and
//! SQS (`TEST_SQS_ENDPOINT`).

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use finpass_gateway::sandbox::{Body, LinkFault, ReportSpec};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, spawn_app},
    process::GatewayProcess,
};

/// Far above what the hand-over needs (a visibility timeout and one poll), so a slow machine
/// passes and a stuck job fails.
const BOUND: Duration = Duration::from_secs(120);
/// The queue's visibility timeout: how soon a dead holder's wake-up reappears.
const VISIBILITY_SECS: u32 = 3;

fn sqs_endpoint() -> String {
    std::env::var("TEST_SQS_ENDPOINT").expect("TEST_SQS_ENDPOINT: run these through .ci/moto.sh")
}

/// A fresh queue on the test's SQS server.
async fn create_queue() -> String {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "moto-test-access-key",
            "moto-test-secret-key",
            None,
            None,
            "test",
        ))
        .endpoint_url(sqs_endpoint())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
        .create_queue()
        .queue_name(format!("jobs-{}", uuid::Uuid::new_v4().simple()))
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_SECS.to_string(),
        )
        .send()
        .await
        .expect("create the jobs queue")
        .queue_url
        .expect("queue url")
}

async fn get_json(app: &TestApp, url: String) -> (u16, Value) {
    let mut resp = app.http.get(url).send().await.expect("request");
    let body = resp.body().limit(1 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// Whether this gateway is downloading a report right now (its in-flight gauge).
async fn downloading(app: &TestApp, gateway: &GatewayProcess) -> bool {
    let Ok(mut resp) = app
        .http
        .get(format!("{}/metrics", gateway.address))
        .send()
        .await
    else {
        return false;
    };
    let body = resp.body().limit(8 << 20).await.unwrap_or_default();
    String::from_utf8_lossy(&body)
        .lines()
        .any(|l| l == "finpass_gateway_in_flight{kind=\"download\"} 1")
}

/// The test: the gateway process holding a job (mid-step, its wake-up held by the
/// visibility timeout) is killed; the other process, which was running all along and so
/// learns of the job only through the queue, finishes it once the wake-up reappears.
#[actix_web::test]
#[ignore = "needs an SQS server: .ci/moto.sh"]
async fn a_killed_gateway_holding_a_job_leaves_it_to_another_replica() {
    let app = spawn_app().await;
    // The first download of the report drips a byte a second: whoever takes the job first
    // is still holding it when it is killed. The second download is served normally.
    app.finpass.set_client(
        "aa_handover",
        vec![
            ReportSpec::ready("FIP-H", "XXXX1111", Body::pdf(64 * 1024, 7)).with_faults(vec![
                LinkFault::Drip {
                    bytes: 1,
                    every: Duration::from_secs(1),
                },
            ]),
        ],
    );
    let queue_url = create_queue().await;
    let endpoint = sqs_endpoint();
    let env = [
        ("JOBS_QUEUE_URL", queue_url.as_str()),
        ("AWS_ENDPOINT_URL_SQS", endpoint.as_str()),
        ("JOB_POLL_SCHEDULE", "1s"),
    ];
    // Both replicas run before the job exists: neither learns of it at start-up.
    let mut gateways = vec![
        GatewayProcess::start(&app, &env).await,
        GatewayProcess::start(&app, &env).await,
    ];

    let mut resp = app
        .http
        .post(format!("{}/v1/statement-jobs", gateways[0].address))
        .send_json(&json!({"client_id": "aa_handover", "request_id": "handover-1"}))
        .await
        .expect("create the job");
    let body = resp.body().await.expect("body");
    assert_eq!(resp.status().as_u16(), 202, "{body:?}");
    let job: Value = serde_json::from_slice(&body).expect("job");
    let job_id = job["job_id"].as_str().expect("job_id").to_owned();

    // Which replica took the job: the one downloading its report.
    let start = Instant::now();
    let holder = loop {
        let mut found = None;
        for (i, g) in gateways.iter().enumerate() {
            if downloading(&app, g).await {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(start.elapsed() < BOUND, "no replica took the job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut killed = gateways.remove(holder);
    killed.kill();
    let survivor = &gateways[0];

    let start = Instant::now();
    let done = loop {
        let (status, job) = get_json(
            &app,
            format!("{}/v1/statement-jobs/{job_id}", survivor.address),
        )
        .await;
        assert_eq!(status, 200, "{job}");
        if job["state"] == "completed" {
            break job;
        }
        assert!(
            start.elapsed() < BOUND,
            "the surviving replica never finished the job: {job}\n{}",
            survivor.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let report = &done["reports"][0];
    assert_eq!(report["status"], "stored", "{done}");
    let key = report["object"]["key"].as_str().expect("object key");
    let stored = app
        .s3_client
        .get_object()
        .bucket(&app.bucket)
        .key(key)
        .send()
        .await
        .expect("the statement is in S3")
        .body
        .collect()
        .await
        .expect("read")
        .into_bytes();
    assert_eq!(stored.len(), 64 * 1024);
    assert_eq!(
        app.finpass.downloads("aa_handover"),
        2,
        "the dead holder's download and the survivor's"
    );
}
