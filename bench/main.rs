//! The benchmark of issue #6: how close the gateway gets to the loopback limit, and how it
//! compares with what an operator would script instead. Run it with `bash bench/run.sh`
//! (README "Benchmark"); `--smoke` runs a tiny version that only proves it works.
//!
//! For each workload (N reports of S bytes, K transfers at once) it starts, on loopback, the
//! Finpass sandbox serving the reports and uses one S3 server (the embedded s3s-fs, or any
//! server given with `--s3`, e.g. Garage), then measures, one after the other:
//! - **limit**: raw GET of the same links into nowhere, and raw PUT of the same bytes into the
//!   same bucket (the production SDK configuration), both at concurrency K; limit = the slower;
//! - **gateway**: the release binary as a separate process, N `POST /v1/statements` calls (one
//!   client, one report each) at concurrency K, every answer checked (`stored`, SHA-256); its
//!   peak RSS (`VmHWM`) and CPU time come from `/proc/<pid>`;
//! - **floor** (`bench floor`, floor.rs): the mandatory work alone in a process of its own,
//!   with the gateway's crates: GET the link, stream it into one PutObject with the SHA-256
//!   checksum trailer. The gateway's CPU per report is compared with its CPU per report;
//! - **rclone**: `rclone copyurl <link> remote:bucket/key`, K processes at once;
//! - **curl | aws**: `curl <link> | aws s3 cp - s3://bucket/key`, K pipelines at once.
//!
//! Each row also gives the machine's busy CPU time per report during its run (`/proc/stat`,
//! every process: S3 server, Finpass sandbox, client and contender). This machine has two
//! cores and the runs saturate them, so a contender's rate against the limit follows the
//! inverse ratio of these numbers: the gateway's per-report work (a Finpass call, the link's
//! GET, a HEAD, the checksummed PUT, its audit event) against a bare PUT's.
//!
//! Then the read side (reads.rs): `/content` against pre-signed GETs, and a paged listing.
//!
//! Every contender's objects are counted and sized in S3 afterwards. The peers get their
//! links before the clock starts; the gateway's time includes its Finpass calls, so the
//! comparison is conservative. Absolute rates drift on a shared machine; the ratios are taken
//! from one run.

mod floor;
mod reads;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use finpass_gateway::{
    config::{S3Connection, S3Credentials},
    sandbox::{self, Body, FinpassSandbox, ReportSpec, S3Sandbox, pdf},
    storage::build_client,
};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// awc's errors are not `Send`; everything here runs on one actix runtime thread.
type BoxError = Box<dyn std::error::Error>;
type Result<T> = std::result::Result<T, BoxError>;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Workload {
    name: &'static str,
    reports: usize,
    size: u64,
    concurrency: usize,
}

const FULL: &[Workload] = &[
    Workload {
        name: "64 x 2 MiB",
        reports: 64,
        size: 2 * MIB,
        concurrency: 8,
    },
    Workload {
        name: "256 x 100 KiB",
        reports: 256,
        size: 100 * KIB,
        concurrency: 16,
    },
    Workload {
        name: "1 x 1 GiB",
        reports: 1,
        size: GIB,
        concurrency: 1,
    },
    Workload {
        name: "64 concurrent x 10 MiB",
        reports: 64,
        size: 10 * MIB,
        concurrency: 64,
    },
];

const SMOKE: &[Workload] = &[Workload {
    name: "smoke 4 x 64 KiB",
    reports: 4,
    size: 64 * KIB,
    concurrency: 2,
}];

/// The S3 server every contender writes to.
#[derive(Clone)]
struct Target {
    name: String,
    endpoint: String,
    access_key: String,
    secret_key: String,
    region: String,
    bucket: String,
    /// Garage over plain HTTP wants checksums only where required.
    checksum_when_required: bool,
}

/// One contender's result on one workload.
struct Row {
    method: &'static str,
    secs: f64,
    bytes: u64,
    reports: usize,
    peak_rss: Option<u64>,
    cpu_secs: Option<f64>,
    /// S3 requests the gateway made per report stored (from its own metrics).
    s3_per_report: Option<f64>,
    /// Busy CPU time of the whole machine during the run (`/proc/stat`): the S3 server, the
    /// Finpass sandbox, the client and the contender together. On a machine whose cores the
    /// runs saturate, rates follow the inverse of this per report.
    machine_cpu_secs: Option<f64>,
}

impl Row {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
    fn reports_per_s(&self) -> f64 {
        self.reports as f64 / self.secs
    }
}

struct Args {
    smoke: bool,
    s3: Option<Target>,
    out: Option<PathBuf>,
    gateway: PathBuf,
    only: Option<String>,
    /// Profiling aid: run only the gateway phase (no limit, no peers, so no ratios).
    gateway_only: bool,
    /// Quick runs on a loaded machine: the limit, the floor and the gateway, no peers.
    no_peers: bool,
    /// Extra gateway settings (`--gateway-env NAME=VALUE`, repeatable), for tuning runs.
    gateway_env: Vec<(String, String)>,
}

fn parse_args() -> Result<Args> {
    let exe = std::env::current_exe()?;
    // target/release/examples/bench → target/release/finpass-gateway
    let default_gateway = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("finpass-gateway"))
        .ok_or("cannot locate the gateway binary")?;
    let mut args = Args {
        smoke: false,
        s3: None,
        out: None,
        gateway: default_gateway,
        only: None,
        gateway_only: false,
        no_peers: false,
        gateway_env: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => args.smoke = true,
            "--out" => args.out = Some(it.next().ok_or("--out FILE")?.into()),
            "--gateway" => args.gateway = it.next().ok_or("--gateway PATH")?.into(),
            "--gateway-env" => {
                let kv = it.next().ok_or("--gateway-env NAME=VALUE")?;
                let (k, v) = kv.split_once('=').ok_or("--gateway-env NAME=VALUE")?;
                args.gateway_env.push((k.into(), v.into()));
            }
            "--gateway-only" => args.gateway_only = true,
            "--no-peers" => args.no_peers = true,
            "--only" => args.only = Some(it.next().ok_or("--only TEXT")?),
            // --s3 NAME,ENDPOINT,ACCESS_KEY,SECRET_KEY,REGION,BUCKET (the bucket must exist)
            "--s3" => {
                let spec = it
                    .next()
                    .ok_or("--s3 NAME,ENDPOINT,KEY,SECRET,REGION,BUCKET")?;
                let p: Vec<&str> = spec.split(',').collect();
                let [name, endpoint, access_key, secret_key, region, bucket] = p[..] else {
                    return Err("--s3 NAME,ENDPOINT,KEY,SECRET,REGION,BUCKET".into());
                };
                args.s3 = Some(Target {
                    name: name.into(),
                    endpoint: endpoint.into(),
                    access_key: access_key.into(),
                    secret_key: secret_key.into(),
                    region: region.into(),
                    bucket: bucket.into(),
                    checksum_when_required: true,
                });
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

#[actix_web::main]
async fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("floor") {
        return floor::main(&argv[2..]).await;
    }
    let args = parse_args()?;
    if !args.gateway.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release --bin finpass-gateway`",
            args.gateway.display()
        )
        .into());
    }
    for tool in ["rclone", "curl", "aws"]
        .into_iter()
        .filter(|_| !args.no_peers)
    {
        if which(tool).is_none() {
            return Err(format!("{tool} is not installed (bench/run.sh installs it)").into());
        }
    }
    let finpass = FinpassSandbox::start()?;
    let work = tempfile::Builder::new()
        .prefix("finpass-bench")
        .tempdir_in(scratch_dir())?;
    // Keep the embedded server alive for the whole run, when it is the target.
    let (_s3, target) = match args.s3.clone() {
        Some(t) => (None, t),
        None => {
            let root = work.path().join("s3");
            sandbox::create_bucket(&root)?;
            let s3 = S3Sandbox::start(&root)?;
            let target = Target {
                name: "s3s-fs".into(),
                endpoint: s3.endpoint(),
                access_key: sandbox::s3::ACCESS_KEY.into(),
                secret_key: sandbox::s3::SECRET_KEY.into(),
                region: "us-east-1".into(),
                bucket: sandbox::BUCKET.into(),
                checksum_when_required: false,
            };
            (Some(s3), target)
        }
    };
    let s3 = build_client(&S3Connection {
        endpoint_url: Some(target.endpoint.clone()),
        credentials: Some(S3Credentials {
            access_key_id: target.access_key.clone(),
            secret_access_key: target.secret_key.clone().into(),
            session_token: None,
        }),
        region: Some(target.region.clone()),
        force_path_style: true,
        checksum_when_required: target.checksum_when_required,
        // The raw-PUT baseline streams up to 1 GiB in one request.
        attempt_timeout: Duration::from_secs(600),
    })
    .await?;
    // Idle connections pooled for less than the loopback servers' 5 s keep-alive: the floor
    // and gateway phases leave this client idle for longer, and a connection the server has
    // closed meanwhile failed the next workload's first request (`Connect(Disconnected)`).
    let http = awc::Client::builder()
        .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(2)))
        .timeout(Duration::from_secs(600))
        .finish();
    let ctx = Ctx {
        finpass,
        target,
        s3,
        http,
        work: work.path().to_owned(),
        gateway: args.gateway.clone(),
        gateway_only: args.gateway_only,
        no_peers: args.no_peers,
        gateway_env: args.gateway_env.clone(),
    };

    let workloads = if args.smoke { SMOKE } else { FULL };
    let mut report = format!(
        "S3 server: {} | commit {} | {}\n\n",
        ctx.target.name,
        git_commit(),
        cpu_model()
    );
    report.push_str(
        "| workload | method | MB/s | reports/s | vs limit | vs rclone | vs curl\\|aws | peak RSS | CPU s | CPU ms/report | CPU ns/byte | CPU vs floor | S3 req/report | machine CPU ms/report |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, w) in workloads.iter().enumerate() {
        if args.only.as_deref().is_some_and(|o| !w.name.contains(o)) {
            continue;
        }
        eprintln!("== {} ({})", w.name, ctx.target.name);
        let rows = run_workload(&ctx, i, w).await?;
        report.push_str(&table(w, &rows));
        print!("{}", table(w, &rows));
    }
    if args.only.as_deref().is_none_or(|o| "reads".contains(o)) && !args.gateway_only {
        eprintln!("== reads ({})", ctx.target.name);
        let reads = reads::run(
            &ctx,
            if args.smoke {
                &reads::SMOKE
            } else {
                &reads::FULL
            },
        )
        .await?;
        print!("{reads}");
        report.push_str(&reads);
    }
    println!("\n{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report)?;
    }
    Ok(())
}

/// /dev/shm when there is one: the S3 server's disk writes then cost memory bandwidth, as the
/// network does, rather than whatever the shared disk is doing.
fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

struct Ctx {
    finpass: FinpassSandbox,
    target: Target,
    s3: aws_sdk_s3::Client,
    http: awc::Client,
    work: PathBuf,
    gateway: PathBuf,
    gateway_only: bool,
    no_peers: bool,
    gateway_env: Vec<(String, String)>,
}

async fn run_workload(ctx: &Ctx, index: usize, w: &Workload) -> Result<Vec<Row>> {
    // One buffer serves every report: the simulator slices it without copying.
    let body: Bytes = pdf::synthetic(w.size, index as u64 + 1)
        .flat_map(|c| c.to_vec())
        .collect::<Vec<u8>>()
        .into();
    let sha = hex::encode(Sha256::digest(&body));
    let clients: Vec<String> = (0..w.reports)
        .map(|r| format!("aa_bench_{index}_{r}"))
        .collect();
    for (r, client) in clients.iter().enumerate() {
        ctx.finpass.set_client(
            client,
            vec![ReportSpec::ready(
                "BENCH-FIP",
                &format!("ACCT{r:04}"),
                Body::Fixed(body.clone()),
            )],
        );
    }
    let total = w.size * w.reports as u64;
    let row = |method, secs: f64| Row {
        method,
        secs,
        bytes: total,
        reports: w.reports,
        peak_rss: None,
        cpu_secs: None,
        s3_per_report: None,
        machine_cpu_secs: None,
    };
    let prefix = format!("bench/{index}/");
    let mut rows = Vec::new();

    if !ctx.gateway_only {
        // The limit, part 1: the links, downloaded into nowhere.
        let links = fetch_links(ctx, &clients).await?;
        let started = Instant::now();
        let busy = machine_busy_secs();
        let got: u64 = stream::iter(links.iter().cloned())
            .map(|link| download_to_nowhere(&ctx.http, link))
            .buffer_unordered(w.concurrency)
            .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
            .await?;
        rows.push(Row {
            machine_cpu_secs: Some(machine_busy_secs() - busy),
            ..row("raw GET (limit)", started.elapsed().as_secs_f64())
        });
        check(got == total, "raw GET byte count")?;

        // The limit, part 2: the same bytes PUT by the production SDK configuration.
        let started = Instant::now();
        let busy = machine_busy_secs();
        stream::iter(0..w.reports)
            .map(|r| {
                let put = ctx
                    .s3
                    .put_object()
                    .bucket(&ctx.target.bucket)
                    .key(format!("{prefix}raw/{r}.pdf"))
                    .content_type("application/pdf")
                    .body(ByteStream::from(body.clone()));
                async move { put.send().await.map(|_| ()) }
            })
            .buffer_unordered(w.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        rows.push(Row {
            machine_cpu_secs: Some(machine_busy_secs() - busy),
            ..row("raw PUT (limit)", started.elapsed().as_secs_f64())
        });
        verify_prefix(ctx, &format!("{prefix}raw/"), w).await?;
    }

    if !ctx.gateway_only {
        // The floor: only the mandatory work (GET, one checksummed PUT), its own process.
        let links = fetch_links(ctx, &clients).await?;
        let dest = format!("{prefix}floor/");
        let busy = machine_busy_secs();
        let run = floor::run(&ctx.target, &links, &dest, w.concurrency)?;
        rows.push(Row {
            peak_rss: Some(run.peak_rss),
            cpu_secs: Some(run.cpu_secs),
            machine_cpu_secs: Some(machine_busy_secs() - busy),
            ..row("floor", run.secs)
        });
        verify_prefix(ctx, &dest, w).await?;
    }

    // The gateway, as a separate process so its RSS and CPU are its own.
    let run = run_gateway(ctx, &clients, &format!("{prefix}gateway/"), w, &sha).await?;
    rows.push(Row {
        peak_rss: Some(run.peak_rss),
        cpu_secs: Some(run.cpu_secs),
        s3_per_report: Some(run.s3_requests as f64 / w.reports as f64),
        machine_cpu_secs: Some(run.machine_cpu_secs),
        ..row("gateway", run.secs)
    });
    verify_prefix(ctx, &format!("{prefix}gateway/"), w).await?;

    if !ctx.gateway_only && !ctx.no_peers {
        // The peers, with fresh links.
        for (method, peer) in [
            ("rclone copyurl", Peer::Rclone),
            ("curl \\| aws s3 cp", Peer::CurlAws),
        ] {
            let links = fetch_links(ctx, &clients).await?;
            let dest = format!("{prefix}{}/", peer.dir());
            let busy = machine_busy_secs();
            let (secs, cpu) = run_peer(&ctx.target, peer, &links, &dest, w.concurrency)?;
            rows.push(Row {
                cpu_secs: Some(cpu),
                machine_cpu_secs: Some(machine_busy_secs() - busy),
                ..row(method, secs)
            });
            verify_prefix(ctx, &dest, w).await?;
        }
    }
    delete_prefix(ctx, &prefix).await?;
    Ok(rows)
}

fn check(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

/// Asks the Finpass sandbox for each client's (single) report link, as the peers' scripts
/// would before copying.
async fn fetch_links(ctx: &Ctx, clients: &[String]) -> Result<Vec<String>> {
    let url = format!(
        "{}/api/v1/services/account-aggregator/fetch-statement-pdf",
        ctx.finpass.base_url()
    );
    let mut links = Vec::with_capacity(clients.len());
    for client in clients {
        let mut resp = ctx
            .http
            .post(&url)
            .insert_header(("x-api-key", sandbox::finpass::API_KEY))
            .insert_header(("x-api-secret", sandbox::finpass::API_SECRET))
            .send_json(&json!({ "client_id": client }))
            .await?;
        let v: Value = resp.json().await?;
        let link = v["data"]["reports"][0]["statement_report_link"]
            .as_str()
            .ok_or("no link in the Finpass answer")?;
        links.push(link.to_owned());
    }
    Ok(links)
}

async fn download_to_nowhere(http: &awc::Client, link: String) -> Result<u64> {
    let mut resp = http.get(&link).send().await?;
    check(resp.status().is_success(), "raw GET status")?;
    let mut n = 0u64;
    while let Some(chunk) = resp.next().await {
        n += chunk?.len() as u64;
    }
    Ok(n)
}

/// What one gateway run measured.
struct GatewayRun {
    secs: f64,
    peak_rss: u64,
    cpu_secs: f64,
    s3_requests: u64,
    machine_cpu_secs: f64,
}

/// Busy CPU seconds of the whole machine since boot: every field of `/proc/stat`'s `cpu` line
/// but idle and iowait, in USER_HZ (100 per second on Linux).
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle) as f64 / 100.0
}

/// Runs the release gateway against the sandbox Finpass and the target S3 server, sends one
/// call per client at concurrency K, checks every answer, and says what it measured.
async fn run_gateway(
    ctx: &Ctx,
    clients: &[String],
    prefix: &str,
    w: &Workload,
    sha: &str,
) -> Result<GatewayRun> {
    let (child, base) = start_gateway(ctx, prefix, w.concurrency, &[]).await?;
    let s3_before = s3_requests(&ctx.http, &base).await?;
    // Its CPU during the calls only (start-up is not a report's cost), as the floor's.
    let (_, cpu_before) = proc_usage(child.0.id())?;

    let started = Instant::now();
    let busy = machine_busy_secs();
    stream::iter(clients.iter())
        .map(|client| {
            let req = ctx
                .http
                .post(format!("{base}/v1/statements"))
                .send_json(&json!({ "client_id": client }));
            async move {
                let mut resp = req.await?;
                let v: Value = resp.json().limit(1 << 20).await?;
                let report = &v["reports"][0];
                check(
                    resp.status().is_success() && report["status"] == "stored",
                    &format!("gateway stored the report: {v}"),
                )?;
                check(report["object"]["sha256"] == sha, "gateway SHA-256")?;
                Ok::<_, BoxError>(())
            }
        })
        .buffer_unordered(w.concurrency)
        .try_collect::<Vec<()>>()
        .await
        .map_err(|e| with_log_tail(e, &ctx.work.join("gateway.log")))?;
    let secs = started.elapsed().as_secs_f64();
    let machine_cpu_secs = machine_busy_secs() - busy;
    let (peak_rss, cpu_after) = proc_usage(child.0.id())?;
    let cpu_secs = cpu_after - cpu_before;
    let s3_requests = s3_requests(&ctx.http, &base)
        .await?
        .saturating_sub(s3_before);
    Ok(GatewayRun {
        secs,
        peak_rss,
        cpu_secs,
        s3_requests,
        machine_cpu_secs,
    })
}

/// Starts the release gateway against the sandbox Finpass and the target S3 server, with K
/// calls and downloads at once and `extra` settings, and waits until it is ready.
async fn start_gateway(
    ctx: &Ctx,
    prefix: &str,
    concurrency: usize,
    extra: &[(&str, String)],
) -> Result<(KillOnDrop, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(ctx.work.join("gateway.log"))?;
    let k = concurrency.to_string();
    let mut cmd = Command::new(&ctx.gateway);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("FINPASS_BASE_URL", ctx.finpass.base_url())
        .env("FINPASS_API_KEY", sandbox::finpass::API_KEY)
        .env("FINPASS_API_SECRET", sandbox::finpass::API_SECRET)
        .env("STATEMENTS_BUCKET", &ctx.target.bucket)
        .env("STATEMENTS_PREFIX", prefix)
        .env("S3_FORCE_PATH_STYLE", "true")
        .env(
            "REPORT_LINK_ALLOWED_HOSTS",
            format!("127.0.0.1:{}", ctx.finpass.port()),
        )
        .env("REPORT_LINK_ALLOW_HTTP", "true")
        .env("AUTH_DISABLED", "true")
        .env("RATE_LIMIT_PER_MINUTE", "1000000")
        .env("MAX_REPORT_BYTES", (2 * GIB).to_string())
        .env("MAX_CONCURRENT_CALLS", &k)
        .env("MAX_CONCURRENT_DOWNLOADS", &k)
        .env("AWS_ENDPOINT_URL_S3", &ctx.target.endpoint)
        .env("AWS_ACCESS_KEY_ID", &ctx.target.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &ctx.target.secret_key)
        .env("AWS_REGION", &ctx.target.region)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(log.try_clone()?)
        .stderr(log);
    if ctx.target.checksum_when_required {
        cmd.env("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required");
    }
    cmd.envs(ctx.gateway_env.iter().map(|(k, v)| (k, v)));
    cmd.envs(extra.iter().map(|(k, v)| (k, v)));
    let mut child = KillOnDrop(cmd.spawn()?);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&ctx.http, &base, &mut child.0).await?;
    Ok((child, base))
}

/// A failed run's error, with the end of the gateway's log (its warnings say why).
fn with_log_tail(e: BoxError, log: &Path) -> BoxError {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!(
        "{e}\n--- the gateway's log (last lines):\n{}",
        tail.join("\n")
    )
    .into()
}

/// Total of `finpass_gateway_s3_requests_total` over every operation, from `/metrics`.
async fn s3_requests(http: &awc::Client, base: &str) -> Result<u64> {
    let mut resp = http.get(format!("{base}/metrics")).send().await?;
    let text = resp.body().limit(4 << 20).await?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.starts_with("finpass_gateway_s3_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

async fn wait_healthy(
    http: &awc::Client,
    base: &str,
    child: &mut std::process::Child,
) -> Result<()> {
    // Bounded: 30 s of 50 ms polls. Startup is not measured.
    for _ in 0..600 {
        if let Some(status) = child.try_wait()? {
            return Err(format!("the gateway exited at startup: {status}").into());
        }
        if let Ok(resp) = http.get(format!("{base}/readyz")).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the gateway did not become ready in 30 s".into())
}

/// Kills the gateway however the run ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Peak RSS (bytes) and CPU time (user + system seconds) of a live process.
fn proc_usage(pid: u32) -> Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmHWM")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').ok_or("odd /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok((rss_kib * 1024, ticks as f64 / clock_ticks()))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (user + system) of every child process reaped so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

#[derive(Clone, Copy)]
enum Peer {
    Rclone,
    CurlAws,
}

impl Peer {
    fn dir(self) -> &'static str {
        match self {
            Self::Rclone => "rclone",
            Self::CurlAws => "curl-aws",
        }
    }

    fn command(self, t: &Target, link: &str, key: &str) -> Command {
        let mut c = self.program(t, link, key);
        // A machine-wide AWS_CA_BUNDLE breaks rclone's S3 client ("unsupported transport");
        // every endpoint here is plain-http loopback, so no bundle is needed.
        c.env_remove("AWS_CA_BUNDLE");
        c
    }

    fn program(self, t: &Target, link: &str, key: &str) -> Command {
        match self {
            Self::Rclone => {
                let mut c = Command::new("rclone");
                c.args(["copyurl", "-q", link, &format!("bench:{}/{key}", t.bucket)])
                    .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
                    .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
                    .env("RCLONE_CONFIG_BENCH_ENDPOINT", &t.endpoint)
                    .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", &t.access_key)
                    .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", &t.secret_key)
                    .env("RCLONE_CONFIG_BENCH_REGION", &t.region)
                    .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true");
                c
            }
            Self::CurlAws => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    r#"set -e; curl -sfS "$1" | aws s3 cp - "$2" --endpoint-url "$3" --only-show-errors"#,
                    "sh",
                    link,
                    &format!("s3://{}/{key}", t.bucket),
                    &t.endpoint,
                ])
                .env("AWS_ACCESS_KEY_ID", &t.access_key)
                .env("AWS_SECRET_ACCESS_KEY", &t.secret_key)
                .env("AWS_DEFAULT_REGION", &t.region)
                .env("AWS_EC2_METADATA_DISABLED", "true");
                if t.checksum_when_required {
                    c.env("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required");
                }
                c
            }
        }
    }
}

/// Runs one peer command per link on K threads; returns (seconds, CPU seconds of all the
/// processes it started).
fn run_peer(
    target: &Target,
    peer: Peer,
    links: &[String],
    dest: &str,
    k: usize,
) -> Result<(f64, f64)> {
    let jobs: Arc<Mutex<Vec<(usize, String)>>> =
        Arc::new(Mutex::new(links.iter().cloned().enumerate().collect()));
    let cpu_before = children_cpu();
    let started = Instant::now();
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..k)
            .map(|_| {
                let jobs = Arc::clone(&jobs);
                s.spawn(move || {
                    let mut failures = Vec::new();
                    loop {
                        let job = jobs.lock().map(|mut j| j.pop()).unwrap_or(None);
                        let Some((r, link)) = job else { break };
                        let out = peer
                            .command(target, &link, &format!("{dest}{r}.pdf"))
                            .stdin(Stdio::null())
                            .output();
                        match out {
                            Ok(o) if o.status.success() => {}
                            Ok(o) => failures.push(String::from_utf8_lossy(&o.stderr).into()),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec!["worker panicked".into()]))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    if let Some(f) = failures.first() {
        return Err(format!(
            "{} of {} {} runs failed: {f}",
            failures.len(),
            links.len(),
            peer.dir()
        )
        .into());
    }
    Ok((secs, children_cpu() - cpu_before))
}

/// Every contender must have left exactly N objects of S bytes under its prefix.
async fn verify_prefix(ctx: &Ctx, prefix: &str, w: &Workload) -> Result<()> {
    let objects = list(ctx, prefix).await?;
    check(
        objects.len() == w.reports && objects.iter().all(|(_, size)| *size == w.size),
        &format!(
            "{prefix}: expected {} objects of {} bytes, found {:?}",
            w.reports,
            w.size,
            objects.iter().map(|(_, s)| s).collect::<Vec<_>>()
        ),
    )
}

async fn list(ctx: &Ctx, prefix: &str) -> Result<Vec<(String, u64)>> {
    let mut pages = ctx
        .s3
        .list_objects_v2()
        .bucket(&ctx.target.bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        for o in page?.contents() {
            let size = o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
            out.push((o.key().unwrap_or_default().to_owned(), size));
        }
    }
    Ok(out)
}

/// Frees the workload's objects before the next one (1 GiB runs add up, even in /dev/shm).
async fn delete_prefix(ctx: &Ctx, prefix: &str) -> Result<()> {
    for (key, _) in list(ctx, prefix).await? {
        ctx.s3
            .delete_object()
            .bucket(&ctx.target.bucket)
            .key(key)
            .send()
            .await?;
    }
    Ok(())
}

fn table(w: &Workload, rows: &[Row]) -> String {
    let limit = rows
        .iter()
        .filter(|r| r.method.ends_with("(limit)"))
        .map(Row::mb_per_s)
        .fold(f64::INFINITY, f64::min);
    let rate_of = |m: &str| {
        rows.iter()
            .find(|r| r.method.starts_with(m))
            .map(Row::mb_per_s)
    };
    let (rclone, curl) = (rate_of("rclone"), rate_of("curl"));
    let floor_cpu = rows
        .iter()
        .find(|r| r.method == "floor")
        .and_then(|r| r.cpu_secs);
    let mut out = String::new();
    for r in rows {
        let rate = r.mb_per_s();
        let ratio = |peer: Option<f64>| match peer {
            Some(p) if r.method == "gateway" => format!("{:.2}x", rate / p),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.0} % | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            w.name,
            r.method,
            rate,
            r.reports_per_s(),
            100.0 * rate / limit,
            ratio(rclone),
            ratio(curl),
            r.peak_rss.map_or(String::new(), |b| format!(
                "{:.1} MiB",
                b as f64 / MIB as f64
            )),
            r.cpu_secs.map_or(String::new(), |c| format!("{c:.2}")),
            r.cpu_secs.map_or(String::new(), |c| format!(
                "{:.2}",
                1000.0 * c / r.reports as f64
            )),
            r.cpu_secs.map_or(String::new(), |c| format!(
                "{:.2}",
                1e9 * c / r.bytes as f64
            )),
            match (r.method, r.cpu_secs, floor_cpu) {
                ("gateway", Some(c), Some(f)) if f > 0.0 => format!("{:.2}x", c / f),
                _ => String::new(),
            },
            r.s3_per_report.map_or(String::new(), |n| format!("{n:.2}")),
            r.machine_cpu_secs.map_or(String::new(), |c| format!(
                "{:.2}",
                1000.0 * c / r.reports as f64
            )),
        );
    }
    out
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} x {model}")
}
