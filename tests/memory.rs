//! Proof that memory does not grow with report size, nor with many large reports at once.
//!
//! Peak RSS (`VmHWM`) is per process, and the allocator keeps memory a scenario freed, so each
//! scenario runs in a fresh process of this test binary (the `#[test]` re-runs itself with
//! [`SCENARIO`] set) and measures only itself: the gateway *plus* the in-process Finpass
//! simulator and S3 server, which makes the bounds conservative.
//!
//! - Flat in size: reports of 8, 100 and 300 MiB of known size (each one streamed PUT), then
//!   100 and 300 MiB of unknown size (chunked, so multipart) are stored in turn; for each
//!   kind the peak after the 300 MiB report must stay under 100 MiB and grow by less than
//!   32 MiB from the 100 MiB one (200 MiB more data). Then the peak is reset
//!   (`/proc/self/clear_refs`) and the 100 MiB statement is served by `GET …/content` and read
//!   by the test chunk by chunk: the peak may rise by less than 16 MiB over the resident size
//!   before it, i.e. the gateway streams and never holds the file.
//! - Bounded in concurrency: ten 72 MiB reports of unknown size (chunked, so multipart, each
//!   wanting `MULTIPART_CONCURRENCY + 1` part buffers) stored at once with the shipped defaults;
//!   the peak must stay under 200 MiB (the pod's limit is 256 MiB). Without a process-wide
//!   budget for part buffers this peaked at 380 MiB.
//!
//! - Flat in jobs: 1,000 statement jobs created at once (each PENDING for one poll, then one
//!   small READY report) all complete with a peak under 128 MiB, and Finpass never sees more
//!   calls at once than `MAX_CONCURRENT_CALLS` (the simulator answers each after 20 ms, so
//!   polls overlap whenever the gateway lets them).
//!
//! Run with `--nocapture` to see the numbers.

#[path = "api/helpers.rs"]
mod helpers;

use std::process::Command;

use finpass_gateway::sandbox::{Body, ReportSpec, SandboxStatus};
use serde_json::json;

/// Set (to the test's name) in the child process that runs one scenario.
const SCENARIO: &str = "FINPASS_GATEWAY_MEMORY_SCENARIO";

/// Peak resident set size of this process so far, in bytes.
fn peak_rss() -> u64 {
    proc_status_kb("VmHWM:") * 1024
}

/// Resident set size now, in bytes.
fn rss() -> u64 {
    proc_status_kb("VmRSS:") * 1024
}

/// Resets the peak (`VmHWM`) to the current resident size (Linux `clear_refs`, value 5).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM through clear_refs");
}

fn proc_status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect(field)
}

const MIB: u64 = 1 << 20;

/// Runs `scenario` in a process of its own: this process when it is the child started for
/// `name`, else a child running only this test.
fn isolated(name: &str, scenario: impl std::future::Future<Output = ()>) {
    if std::env::var(SCENARIO).as_deref() == Ok(name) {
        // Quiet logging: the capture buffer of the API tests would itself use memory.
        let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
        actix_web::rt::System::new().block_on(scenario);
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, name)
        .status()
        .expect("run the scenario's process");
    assert!(
        status.success(),
        "scenario {name} failed (its output is above)"
    );
}

#[test]
fn peak_memory_is_flat_in_report_size() {
    isolated("peak_memory_is_flat_in_report_size", flat_in_size());
}

#[test]
fn ten_concurrent_large_reports_of_unknown_size_stay_under_200_mib() {
    isolated(
        "ten_concurrent_large_reports_of_unknown_size_stay_under_200_mib",
        bounded_in_concurrency(),
    );
}

#[test]
fn a_thousand_jobs_finish_with_flat_memory_and_bounded_finpass_calls() {
    isolated(
        "a_thousand_jobs_finish_with_flat_memory_and_bounded_finpass_calls",
        a_thousand_jobs(),
    );
}

async fn a_thousand_jobs() {
    const JOBS: usize = 1000;
    const MAX_CALLS: usize = 8;
    let app = helpers::spawn_app_with(
        helpers::TestConfig::default()
            .env("JOB_POLL_SCHEDULE", "100ms")
            .env("MAX_CONCURRENT_CALLS", &MAX_CALLS.to_string())
            .env("RATE_LIMIT_PER_MINUTE", "1000000"),
    )
    .await;
    app.finpass
        .set_api_latency(std::time::Duration::from_millis(20));
    for i in 0..JOBS {
        app.finpass.set_client(
            &format!("aa_job_{i}"),
            vec![
                ReportSpec::ready("HDFC-FIP", "X1", Body::pdf(16 * 1024, i as u64))
                    .with_status(SandboxStatus::Pending { polls: 1 }),
            ],
        );
    }
    let before = peak_rss();
    let mut ids = Vec::with_capacity(JOBS);
    let app = &app;
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(50) {
        let created = futures_util::future::join_all(chunk.iter().map(|i| async move {
            let mut resp = app
                .http
                .post(format!("{}/v1/statement-jobs", app.address))
                .send_json(&json!({"client_id": format!("aa_job_{i}")}))
                .await
                .expect("create");
            let body: serde_json::Value = resp.json().await.expect("job");
            assert_eq!(resp.status().as_u16(), 202, "{body}");
            body["job_id"].as_str().expect("job_id").to_owned()
        }))
        .await;
        ids.extend(created);
    }
    // Every job is read until it is completed: a bounded wait on a condition, never a sleep
    // standing in for one.
    let started = std::time::Instant::now();
    let mut open = ids.clone();
    while !open.is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(900),
            "{} jobs never finished",
            open.len()
        );
        let mut still = Vec::new();
        for id in open {
            let mut resp = app
                .http
                .get(format!("{}/v1/statement-jobs/{id}", app.address))
                .send()
                .await
                .expect("read");
            let job: serde_json::Value = resp.json().limit(1 << 20).await.expect("job");
            match job["state"].as_str() {
                Some("completed") => assert_eq!(job["summary"]["stored"], 1, "{job}"),
                Some("queued" | "running") => still.push(id),
                _ => panic!("job did not complete: {job}"),
            }
        }
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    let peak = peak_rss();
    let concurrent = app.finpass.peak_concurrent_api_calls();
    eprintln!(
        "{JOBS} jobs: peak RSS {:.1} MiB (before creating them {:.1} MiB), {} Finpass calls, at most {concurrent} at once (limit {MAX_CALLS}), {:.1} s",
        peak as f64 / MIB as f64,
        before as f64 / MIB as f64,
        app.finpass.api_calls(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        app.finpass.api_calls() >= 2 * JOBS,
        "each job polled twice at least"
    );
    assert!(
        concurrent <= MAX_CALLS,
        "{concurrent} Finpass calls at once, over MAX_CONCURRENT_CALLS={MAX_CALLS}"
    );
    assert!(
        concurrent > 1,
        "the jobs' polls never overlapped: the bound was not exercised"
    );
    assert!(
        peak < 128 * MIB,
        "peak RSS {} MiB with {JOBS} jobs",
        peak / MIB
    );
}

async fn flat_in_size() {
    let app = helpers::spawn_app_with(
        helpers::TestConfig::default().env("MAX_REPORT_BYTES", &(400 * MIB).to_string()),
    )
    .await;
    let mut peaks = Vec::new();
    let mut keys = Vec::new();
    // Known sizes go in one streamed PUT, unknown (chunked) ones in multipart: both flat.
    for (client, size, chunked) in [
        ("aa_mem_8", 8 * MIB, false),
        ("aa_mem_100", 100 * MIB, false),
        ("aa_mem_300", 300 * MIB, false),
        ("aa_mem_100_chunked", 100 * MIB, true),
        ("aa_mem_300_chunked", 300 * MIB, true),
    ] {
        let body = Body::Pdf {
            size,
            seed: size + u64::from(chunked),
            chunked,
        };
        app.finpass.set_client(
            client,
            vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
        );
        let (status, resp) = app.store(&json!({"client_id": client})).await;
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["reports"][0]["status"], "stored", "{resp}");
        assert_eq!(resp["reports"][0]["object"]["sha256"], body.sha256());
        let peak = peak_rss();
        eprintln!(
            "after storing {:>3} MiB{}: peak RSS {:.1} MiB",
            size / MIB,
            if chunked { " (chunked: multipart)" } else { "" },
            peak as f64 / MIB as f64
        );
        peaks.push(peak);
        // The bytes in S3 are checked after the peak was read, so reading them back does not
        // count against the gateway.
        let key = resp["reports"][0]["object"]["key"]
            .as_str()
            .expect("key")
            .to_owned();
        assert_eq!(app.object_sha256(&key).await, (body.sha256(), size));
        keys.push((key, body));
    }
    for (p100, p300, how) in [
        (peaks[1], peaks[2], "one PUT"),
        (peaks[3], peaks[4], "multipart"),
    ] {
        assert!(
            p300 < 100 * MIB,
            "peak RSS {} MiB with a 300 MiB report ({how})",
            p300 / MIB
        );
        assert!(
            p300.saturating_sub(p100) < 32 * MIB,
            "tripling the report size grew the peak by {} MiB ({how})",
            p300.saturating_sub(p100) / MIB
        );
    }

    serve_100_mib_at_flat_memory(&app, &keys[1].0, &keys[1].1).await;
}

/// `GET …/content` of the 100 MiB statement, read and hashed chunk by chunk by the test.
async fn serve_100_mib_at_flat_memory(app: &helpers::TestApp, key: &str, body: &Body) {
    use futures_util::StreamExt;
    use sha2::{Digest, Sha256};

    let id = key
        .rsplit('/')
        .next()
        .and_then(|n| n.strip_suffix(".pdf"))
        .expect("statement id");
    reset_peak_rss();
    let before = rss();
    let mut resp = app
        .http
        .get(format!(
            "{}/v1/clients/aa_mem_100/statements/{id}/content",
            app.address
        ))
        .send()
        .await
        .expect("content");
    assert_eq!(resp.status().as_u16(), 200);
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.expect("content chunk");
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let peak = peak_rss();
    eprintln!(
        "serving 100 MiB: RSS before {:.1} MiB, peak while serving {:.1} MiB",
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    assert_eq!(
        (hex::encode(hasher.finalize()), len),
        (body.sha256(), body.size())
    );
    assert!(
        peak.saturating_sub(before) < 16 * MIB,
        "serving 100 MiB raised the peak RSS by {} MiB",
        peak.saturating_sub(before) / MIB
    );
}

async fn bounded_in_concurrency() {
    // The shipped defaults: k8s/base/config.env sets none of the memory knobs.
    let app = helpers::spawn_app().await;
    let size = 72 * MIB;
    let clients: Vec<(String, Body)> = (0..10u64)
        .map(|i| {
            let body = Body::Pdf {
                size,
                seed: 100 + i,
                chunked: true,
            };
            (format!("aa_mem_conc_{i}"), body)
        })
        .collect();
    for (client, body) in &clients {
        app.finpass.set_client(
            client,
            vec![ReportSpec::ready("HDFC-FIP", "X1", body.clone())],
        );
    }
    let before = peak_rss();
    let calls = clients
        .iter()
        .map(|(client, _)| app.store_owned(json!({"client_id": client})));
    let answers = futures_util::future::join_all(calls).await;
    let peak = peak_rss();
    eprintln!(
        "ten concurrent {} MiB chunked reports: peak RSS {:.1} MiB (at start {:.1} MiB)",
        size / MIB,
        peak as f64 / MIB as f64,
        before as f64 / MIB as f64
    );
    for ((status, resp), (_, body)) in answers.iter().zip(&clients) {
        assert_eq!(*status, 200, "{resp}");
        assert_eq!(resp["reports"][0]["status"], "stored", "{resp}");
        assert_eq!(resp["reports"][0]["object"]["sha256"], body.sha256());
    }
    assert!(
        peak < 200 * MIB,
        "peak RSS {} MiB with ten concurrent {} MiB reports",
        peak / MIB,
        size / MIB
    );
}
