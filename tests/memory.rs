//! Proof that memory does not grow with report size.
//!
//! Runs in its own test binary, hence its own process, so the process's peak RSS (`VmHWM`)
//! covers only this scenario: the gateway *plus* the in-process Finpass simulator and S3
//! server, which makes the bound conservative. Reports of 8 MiB (single streamed PUT),
//! 100 MiB and 300 MiB (multipart) are stored in turn; the peak after the 300 MiB report must
//! stay under 100 MiB and grow by less than 32 MiB from the 100 MiB one (200 MiB more data). Run with `--nocapture` to see the
//! numbers.

#[path = "api/helpers.rs"]
mod helpers;

use finpass_gateway::sandbox::{Body, ReportSpec};
use serde_json::json;

/// Peak resident set size of this process so far, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

const MIB: u64 = 1 << 20;

#[actix_web::test]
async fn peak_memory_is_flat_in_report_size() {
    // Quiet logging: the capture buffer of the other tests would itself use memory.
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let app = helpers::spawn_app_with(
        helpers::TestConfig::default().env("MAX_REPORT_BYTES", &(400 * MIB).to_string()),
    )
    .await;
    let mut peaks = Vec::new();
    for (client, size) in [
        ("aa_mem_8", 8 * MIB),
        ("aa_mem_100", 100 * MIB),
        ("aa_mem_300", 300 * MIB),
    ] {
        let body = Body::pdf(size, size);
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
            "after storing {:>3} MiB: peak RSS {:.1} MiB",
            size / MIB,
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
    }
    let (p100, p300) = (peaks[1], peaks[2]);
    assert!(
        p300 < 100 * MIB,
        "peak RSS {} MiB with a 300 MiB report",
        p300 / MIB
    );
    assert!(
        p300.saturating_sub(p100) < 32 * MIB,
        "tripling the report size grew the peak by {} MiB",
        p300.saturating_sub(p100) / MIB
    );
}
