//! The read workloads (issue #20): what frontends viewing statements cost.
//!
//! - **`/content`**: N stored statements of S bytes read through the gateway at K at once,
//!   against the same objects fetched at K at once by pre-signed GETs straight from the S3
//!   server (the floor for reads: the links come from the gateway's own `/download-url`,
//!   before the clock starts). The gateway's CPU per MiB served is its own process's.
//! - **listing**: one client with M statements, listed page by page (the default page size):
//!   latency per page, and the S3 requests per page from the gateway's own metrics (its
//!   ListObjectsV2, a HEAD per statement, and its share of the audit trail's PUTs).

use std::{fmt::Write as _, time::Instant};

use bytes::Bytes;
use finpass_gateway::sandbox::{Body, ReportSpec, pdf};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

use super::{
    Ctx, KIB, MIB, Result, check, delete_prefix, machine_busy_secs, proc_usage, s3_requests,
    start_gateway, with_log_tail,
};

/// One read workload's sizes.
pub struct Reads {
    pub content_statements: usize,
    pub content_size: u64,
    pub concurrency: usize,
    pub list_statements: usize,
    /// Page size asked for (the API's default is 50).
    pub page: usize,
}

pub const FULL: Reads = Reads {
    content_statements: 64,
    content_size: 2 * MIB,
    concurrency: 16,
    list_statements: 200,
    page: 50,
};

pub const SMOKE: Reads = Reads {
    content_statements: 4,
    content_size: 64 * KIB,
    concurrency: 2,
    list_statements: 12,
    page: 5,
};

const CONTENT_CLIENT: &str = "aa_bench_read_content";
const LIST_CLIENT: &str = "aa_bench_read_list";
/// The listed statements' size: small, the listing never reads them.
const LIST_SIZE: u64 = 8 * KIB;

/// Runs both read workloads against one gateway; returns their tables.
pub async fn run(ctx: &Ctx, r: &Reads) -> Result<String> {
    let prefix = "bench/read/";
    let seed = |client: &str, n: usize, size: u64, salt: u64| {
        let body: Bytes = pdf::synthetic(size, salt)
            .flat_map(|c| c.to_vec())
            .collect::<Vec<u8>>()
            .into();
        let reports = (0..n)
            .map(|i| {
                ReportSpec::ready(
                    "BENCH-FIP",
                    &format!("ACCT{i:04}"),
                    Body::Fixed(body.clone()),
                )
            })
            .collect();
        ctx.finpass.set_client(client, reports);
    };
    seed(CONTENT_CLIENT, r.content_statements, r.content_size, 101);
    seed(LIST_CLIENT, r.list_statements, LIST_SIZE, 102);
    let most = r.content_statements.max(r.list_statements);
    let (child, base) = start_gateway(
        ctx,
        prefix,
        r.concurrency,
        &[("MAX_REPORTS_PER_CALL", most.to_string())],
    )
    .await?;
    let pid = child.0.id();
    let log = ctx.work.join("gateway.log");
    let result = async {
        for (client, n) in [
            (CONTENT_CLIENT, r.content_statements),
            (LIST_CLIENT, r.list_statements),
        ] {
            store_all(ctx, &base, client, n).await?;
        }
        let mut out = content(ctx, &base, pid, r).await?;
        out.push_str(&listing(ctx, &base, pid, r).await?);
        Ok(out)
    }
    .await
    .map_err(|e| with_log_tail(e, &log));
    drop(child);
    delete_prefix(ctx, prefix).await?;
    result
}

/// One `POST /v1/statements` storing all of a client's reports (not measured).
async fn store_all(ctx: &Ctx, base: &str, client: &str, n: usize) -> Result<()> {
    let mut resp = ctx
        .http
        .post(format!("{base}/v1/statements"))
        .send_json(&json!({ "client_id": client }))
        .await?;
    let v: Value = resp.json().limit(16 << 20).await?;
    let stored = v["reports"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|r| r["status"] == "stored").count());
    check(
        stored == n,
        &format!("{client}: {n} reports stored, got {stored}"),
    )
}

/// Every statement id of a client, page by page (not measured).
async fn statement_ids(ctx: &Ctx, base: &str, client: &str) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = list_page(ctx, base, client, 100, cursor.as_deref()).await?;
        ids.extend(page);
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(ids),
        }
    }
}

async fn list_page(
    ctx: &Ctx,
    base: &str,
    client: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<String>, Option<String>)> {
    let mut url = format!("{base}/v1/clients/{client}/statements?limit={limit}");
    if let Some(c) = cursor {
        let _ = write!(url, "&cursor={c}");
    }
    let mut resp = ctx.http.get(url).send().await?;
    check(resp.status().is_success(), "list status")?;
    let v: Value = resp.json().limit(4 << 20).await?;
    let ids = v["statements"]
        .as_array()
        .ok_or("no statements in the list")?
        .iter()
        .filter_map(|s| s["statement_id"].as_str().map(str::to_owned))
        .collect();
    Ok((ids, v["next_cursor"].as_str().map(str::to_owned)))
}

/// GETs `url` and counts its body's bytes.
async fn drain(http: &awc::Client, url: String) -> Result<u64> {
    let mut resp = http.get(url).send().await?;
    check(resp.status().is_success(), "read status")?;
    let mut n = 0u64;
    while let Some(chunk) = resp.next().await {
        n += chunk?.len() as u64;
    }
    Ok(n)
}

async fn content(ctx: &Ctx, base: &str, pid: u32, r: &Reads) -> Result<String> {
    let ids = statement_ids(ctx, base, CONTENT_CLIENT).await?;
    check(
        ids.len() == r.content_statements,
        "content statements listed",
    )?;
    let total = r.content_size * ids.len() as u64;

    // The direct GETs' links, before any clock starts.
    let mut links = Vec::with_capacity(ids.len());
    for id in &ids {
        let mut resp = ctx
            .http
            .get(format!(
                "{base}/v1/clients/{CONTENT_CLIENT}/statements/{id}/download-url"
            ))
            .send()
            .await?;
        let v: Value = resp.json().await?;
        links.push(v["url"].as_str().ok_or("no url")?.to_owned());
    }

    let (_, cpu_before) = proc_usage(pid)?;
    let busy = machine_busy_secs();
    let started = Instant::now();
    let got: u64 = stream::iter(ids.iter())
        .map(|id| {
            drain(
                &ctx.http,
                format!("{base}/v1/clients/{CONTENT_CLIENT}/statements/{id}/content"),
            )
        })
        .buffer_unordered(r.concurrency)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    let gw_secs = started.elapsed().as_secs_f64();
    let gw_machine = machine_busy_secs() - busy;
    let (rss, cpu_after) = proc_usage(pid)?;
    let gw_cpu = cpu_after - cpu_before;
    check(got == total, "/content byte count")?;

    let busy = machine_busy_secs();
    let started = Instant::now();
    let got: u64 = stream::iter(links)
        .map(|link| drain(&ctx.http, link))
        .buffer_unordered(r.concurrency)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    let direct_secs = started.elapsed().as_secs_f64();
    let direct_machine = machine_busy_secs() - busy;
    check(got == total, "pre-signed GET byte count")?;

    let name = format!(
        "{} x {} KiB at K = {}",
        ids.len(),
        r.content_size / KIB,
        r.concurrency
    );
    let mbps = |secs: f64| total as f64 / 1e6 / secs;
    let mib = total as f64 / MIB as f64;
    let mut out = String::from(
        "\n| read workload | method | MB/s | vs direct | peak RSS | CPU s | CPU ms/MiB | machine CPU ms/MiB |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        out,
        "| {name} | pre-signed GET (direct) | {:.1} | 100 % |  |  |  | {:.2} |",
        mbps(direct_secs),
        1000.0 * direct_machine / mib
    );
    let _ = writeln!(
        out,
        "| {name} | gateway /content | {:.1} | {:.0} % | {:.1} MiB | {gw_cpu:.2} | {:.2} | {:.2} |",
        mbps(gw_secs),
        100.0 * direct_secs / gw_secs,
        rss as f64 / MIB as f64,
        1000.0 * gw_cpu / mib,
        1000.0 * gw_machine / mib
    );
    Ok(out)
}

async fn listing(ctx: &Ctx, base: &str, pid: u32, r: &Reads) -> Result<String> {
    let s3_before = s3_requests(&ctx.http, base).await?;
    let (_, cpu_before) = proc_usage(pid)?;
    let mut latencies = Vec::new();
    let mut listed = 0;
    let mut cursor: Option<String> = None;
    loop {
        let started = Instant::now();
        let (page, next) = list_page(ctx, base, LIST_CLIENT, r.page, cursor.as_deref()).await?;
        latencies.push(started.elapsed().as_secs_f64());
        listed += page.len();
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let (_, cpu_after) = proc_usage(pid)?;
    let s3 = s3_requests(&ctx.http, base)
        .await?
        .saturating_sub(s3_before);
    check(listed == r.list_statements, "every statement listed")?;
    let pages = latencies.len() as f64;
    let mean = latencies.iter().sum::<f64>() / pages;
    let max = latencies.iter().copied().fold(0.0, f64::max);
    let mut out = String::from(
        "\n| listing | pages | ms/page (mean) | ms/page (max) | S3 req/page | gateway CPU ms/page |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        out,
        "| {} statements, {} a page | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
        r.list_statements,
        r.page,
        latencies.len(),
        1000.0 * mean,
        1000.0 * max,
        s3 as f64 / pages,
        1000.0 * (cpu_after - cpu_before) / pages
    );
    Ok(out)
}
