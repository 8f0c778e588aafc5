//! The floor contender (`bench floor …`, a process of its own): exactly the work every report
//! needs and nothing else, with the gateway's own crates against the same servers. Per link:
//! one GET (awc, as the gateway), its body streamed through a bounded channel (awc's body is
//! `!Send`, the SDK's must be `Send`, as in the gateway) into one `PutObject` of known length
//! with S3's SHA-256 checksum trailer (plain, when the server takes no trailers: Garage over
//! HTTP). No Finpass call, no HEAD, no metadata, no audit, no HTTP server. Its own CPU time
//! per report is what the gateway's is compared with.
//!
//! The parent writes the links on stdin, one a line; the floor prints one line
//! `secs cpu_secs peak_rss_bytes` on stdout, timing only the transfers (not its start-up).

use std::{
    io::BufRead,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aws_sdk_s3::{primitives::ByteStream, types::ChecksumAlgorithm};
use futures_util::{StreamExt, TryStreamExt, stream};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use finpass_gateway::{
    config::{S3Connection, S3Credentials},
    storage::build_client,
};

use super::{BoxError, Result, Target, check, proc_usage};

/// Chunks in flight between the GET and the PUT (the gateway's bound).
const CHANNEL_CHUNKS: usize = 16;

/// What one floor run measured (its own process).
pub struct FloorRun {
    pub secs: f64,
    pub cpu_secs: f64,
    pub peak_rss: u64,
}

/// Runs the floor process over `links` at concurrency `k`, writing to `{prefix}{i}.pdf`.
pub fn run(target: &Target, links: &[String], prefix: &str, k: usize) -> Result<FloorRun> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("floor")
        .args([
            target.endpoint.as_str(),
            &target.access_key,
            &target.secret_key,
            &target.region,
            &target.bucket,
            prefix,
            &k.to_string(),
            if target.checksum_when_required {
                "plain"
            } else {
                "sha256"
            },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("floor stdin")?;
        for link in links {
            writeln!(stdin, "{link}")?;
        }
    }
    let out = child.wait_with_output()?;
    check(out.status.success(), "the floor process succeeded")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [secs, cpu, rss] = fields[..] else {
        return Err(format!("odd floor output: {text}").into());
    };
    Ok(FloorRun {
        secs: secs.parse()?,
        cpu_secs: cpu.parse()?,
        peak_rss: rss.parse()?,
    })
}

/// The floor process's `main`: `bench floor ENDPOINT KEY SECRET REGION BUCKET PREFIX K MODE`.
pub async fn main(args: &[String]) -> Result<()> {
    let [
        endpoint,
        access_key,
        secret_key,
        region,
        bucket,
        prefix,
        k,
        mode,
    ] = args
    else {
        return Err("bench floor ENDPOINT KEY SECRET REGION BUCKET PREFIX K sha256|plain".into());
    };
    let k: usize = k.parse()?;
    let sha256 = mode == "sha256";
    let links: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .collect::<std::io::Result<_>>()?;
    let s3 = build_client(&S3Connection {
        endpoint_url: Some(endpoint.clone()),
        credentials: Some(S3Credentials {
            access_key_id: access_key.clone(),
            secret_access_key: secret_key.clone().into(),
            session_token: None,
        }),
        region: Some(region.clone()),
        force_path_style: true,
        checksum_when_required: !sha256,
        attempt_timeout: Duration::from_secs(600),
    })
    .await?;
    let http = awc::Client::builder()
        .timeout(Duration::from_secs(600))
        .finish();
    let pid = std::process::id();
    let (_, cpu_before) = proc_usage(pid)?;
    let started = Instant::now();
    stream::iter(links.iter().enumerate())
        .map(|(i, link)| {
            copy(
                &http,
                &s3,
                bucket,
                format!("{prefix}{i}.pdf"),
                link.as_str(),
                sha256,
            )
        })
        .buffer_unordered(k)
        .try_collect::<Vec<()>>()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let (peak_rss, cpu_after) = proc_usage(pid)?;
    println!("{secs} {} {peak_rss}", cpu_after - cpu_before);
    Ok(())
}

/// One report: GET → channel → one PUT with the checksum trailer.
async fn copy(
    http: &awc::Client,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: String,
    link: &str,
    sha256: bool,
) -> Result<()> {
    let mut resp = http.get(link).send().await?;
    check(resp.status().is_success(), "floor GET status")?;
    let len: i64 = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("floor: no Content-Length")?;
    let (tx, rx) =
        mpsc::channel::<std::result::Result<bytes::Bytes, std::io::Error>>(CHANNEL_CHUNKS);
    let body = ByteStream::from_body_1_x(StreamBody::new(
        ReceiverStream::new(rx).map(|r| r.map(Frame::data)),
    ));
    let mut put = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/pdf")
        .content_length(len)
        .body(body);
    if sha256 {
        put = put.checksum_algorithm(ChecksumAlgorithm::Sha256);
    }
    let pump = async move {
        while let Some(chunk) = resp.next().await {
            let chunk = chunk.map_err(|e| -> BoxError { e.to_string().into() })?;
            if tx.send(Ok(chunk)).await.is_err() {
                break;
            }
        }
        Ok::<_, BoxError>(())
    };
    let (pumped, put) = futures_util::future::join(pump, put.send()).await;
    pumped?;
    let out = put?;
    check(
        !sha256 || out.checksum_sha256().is_some(),
        "floor: S3 returned the SHA-256",
    )
}
