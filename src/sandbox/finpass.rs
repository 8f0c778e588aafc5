//! A Finpass simulator that implements the seed contract faithfully: the
//! `fetch-statement-pdf` endpoint with `x-api-key`/`x-api-secret`, the response envelope,
//! READY/PENDING/FAILED reports, 404 `client_not_found`, and pre-signed-style links
//! (`X-Amz-Date`, `X-Amz-Expires`, `X-Amz-Signature`) that expire and answer 403 with an S3
//! XML error when they do. Tests inject faults deterministically, one per call or download.
//!
//! It also misbehaves the way real upstreams do, so the gateway's handling of each edge is
//! tested over HTTP: a 404 that is not Finpass's envelope (a wrong base URL, a proxy's page),
//! a `Retry-After` far beyond any sane wait or written as an HTTP-date, a `data` without
//! `reports`, report entries with null or missing fields, and links signed with
//! out-of-range `X-Amz-Date`/`X-Amz-Expires`.

use std::{
    collections::{HashMap, VecDeque},
    net::TcpListener,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{
    App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, http::StatusCode, web,
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::pdf;

pub const API_KEY: &str = "sandbox-finpass-api-key-do-not-log";
pub const API_SECRET: &str = "sandbox-finpass-api-secret-do-not-log";
const SIGNING_KEY: &str = "sandbox-link-signing-key";
const DEFAULT_LINK_TTL_SECS: u64 = 600;
const ENDPOINT: &str = "/api/v1/services/account-aggregator/fetch-statement-pdf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxStatus {
    Ready,
    /// PENDING for this many Finpass calls, then READY (`usize::MAX`: forever).
    Pending {
        polls: usize,
    },
    Failed,
}

#[derive(Debug, Clone)]
pub enum Body {
    /// A synthetic PDF of exactly `size` bytes; `chunked` omits Content-Length.
    Pdf { size: u64, seed: u64, chunked: bool },
    /// Fixed bytes (a real statement PDF for demos, or anything a test wants served).
    Fixed(Bytes),
    /// An HTML error page served with 200, as misbehaving storage does.
    Html,
}

impl Body {
    pub fn pdf(size: u64, seed: u64) -> Self {
        Self::Pdf {
            size,
            seed,
            chunked: false,
        }
    }

    /// SHA-256 of what a successful download serves.
    pub fn sha256(&self) -> String {
        match self {
            Self::Pdf { size, seed, .. } => pdf::synthetic_sha256(*size, *seed),
            Self::Fixed(b) => hex::encode(Sha256::digest(b)),
            Self::Html => hex::encode(Sha256::digest(HTML_PAGE)),
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Self::Pdf { size, .. } => pdf::synthetic(*size, 0).map(|c| c.len() as u64).sum(),
            Self::Fixed(b) => b.len() as u64,
            Self::Html => HTML_PAGE.len() as u64,
        }
    }
}

const HTML_PAGE: &[u8] = b"<html><body><h1>Access denied</h1></body></html>";

/// A fault applied to one download of a report link, in order.
#[derive(Debug, Clone)]
pub enum LinkFault {
    /// Answer with this status and an S3-style XML error body.
    Status(u16),
    /// Send this many body bytes, then cut the connection.
    ResetAfter(u64),
    /// Pause this long before every chunk.
    Slow(Duration),
    /// Answer 302 with this `Location`.
    Redirect(String),
    /// Send `bytes` body bytes every `every`: never silent for as long as the read timeout,
    /// yet a report that would take hours (a call deadline is the only thing that ends it).
    Drip { bytes: usize, every: Duration },
}

/// A fault applied to one call of the Finpass API, in order.
#[derive(Debug, Clone)]
pub enum ApiFault {
    Status(u16),
    RateLimited {
        retry_after_secs: u64,
    },
    /// 429 with this `Retry-After` value verbatim (an HTTP-date, garbage, a huge number).
    RateLimitedRaw(String),
    /// Answer normally, but only after this long.
    Hang(Duration),
    /// 200 with a body that is not the envelope.
    Malformed,
    /// This status with an HTML page instead of the envelope, as a proxy, a load balancer or a
    /// wrong `FINPASS_BASE_URL` answers (e.g. 404 from a path Finpass does not serve).
    NotAnEnvelope(u16),
}

#[derive(Debug, Clone)]
pub struct ReportSpec {
    pub fip_id: String,
    pub account_number: String,
    pub status: SandboxStatus,
    pub body: Body,
    pub link_faults: Vec<LinkFault>,
    /// The first this-many links issued for the report are already expired.
    pub expired_links: usize,
    /// Serve this link verbatim instead of a signed one (SSRF tests).
    pub link_override: Option<String>,
    /// Issue the signed link for this host name (pinned to the simulator by the test) and
    /// this file name, and serve the body only to requests for that host: two reports can
    /// then share a path on two "buckets".
    pub served_at: Option<(String, String)>,
    /// Bump the source's version (new bytes, new ETag) on every Finpass call, as a
    /// loan-monitoring refresh does.
    pub regenerate_each_call: bool,
    /// Sign links with this `X-Amz-Date` and `X-Amz-Expires` verbatim (out-of-range tests);
    /// the download then checks them as S3 would.
    pub signed_params_override: Option<(String, String)>,
    /// Serve this JSON verbatim as the report's entry in `reports` (malformed-entry tests).
    /// Such a report has no downloadable link.
    pub raw_entry: Option<serde_json::Value>,
}

impl ReportSpec {
    pub fn ready(fip_id: &str, account_number: &str, body: Body) -> Self {
        Self {
            fip_id: fip_id.to_owned(),
            account_number: account_number.to_owned(),
            status: SandboxStatus::Ready,
            body,
            link_faults: Vec::new(),
            expired_links: 0,
            link_override: None,
            served_at: None,
            regenerate_each_call: false,
            signed_params_override: None,
            raw_entry: None,
        }
    }

    /// Serve the report at `http://{host}:{port}/reports/{client}/{file}` (see
    /// [`ReportSpec::served_at`]).
    pub fn served_at(mut self, host: &str, file: &str) -> Self {
        self.served_at = Some((host.to_ascii_lowercase(), file.to_owned()));
        self
    }

    pub fn regenerated_each_call(mut self) -> Self {
        self.regenerate_each_call = true;
        self
    }

    /// A report whose entry in `reports` is `entry` verbatim, e.g. with `fip_id: null`.
    pub fn raw(entry: serde_json::Value) -> Self {
        let mut spec = Self::ready("RAW", "RAW", Body::Html);
        spec.raw_entry = Some(entry);
        spec
    }

    pub fn with_status(mut self, status: SandboxStatus) -> Self {
        self.status = status;
        self
    }

    /// Serve `link` verbatim as the report's link.
    pub fn with_link(mut self, link: &str) -> Self {
        self.link_override = Some(link.to_owned());
        self
    }

    pub fn with_faults(mut self, faults: Vec<LinkFault>) -> Self {
        self.link_faults = faults;
        self
    }

    /// Sign the report's links with `X-Amz-Date=date` and `X-Amz-Expires=expires` verbatim.
    pub fn with_signed_params(mut self, date: &str, expires: &str) -> Self {
        self.signed_params_override = Some((date.to_owned(), expires.to_owned()));
        self
    }
}

struct ReportState {
    spec: ReportSpec,
    /// The source's version: bumped when the report is regenerated.
    generation: u64,
    /// Conditional GETs answered 304 (no body).
    not_modified: usize,
    polls_left: usize,
    faults: VecDeque<LinkFault>,
    expired_left: usize,
    downloads: usize,
}

struct State {
    /// Total report bodies started, for tests to wait on without sleeping.
    downloads_started: tokio::sync::watch::Sender<usize>,
    clients: Mutex<HashMap<String, Vec<ReportState>>>,
    /// Clients whose envelope carries this `data` verbatim (`{}`, `null`, ...).
    raw_data: Mutex<HashMap<String, serde_json::Value>>,
    /// Clients whose answer echoes another `data.client_id` (every other answer echoes the
    /// client asked for, as Finpass does).
    echo_as: Mutex<HashMap<String, String>>,
    api_faults: Mutex<VecDeque<ApiFault>>,
    api_calls: AtomicUsize,
    /// API calls being answered now, and the most ever at once (bounds are tested on it).
    api_in_flight: AtomicUsize,
    api_peak: AtomicUsize,
    /// Every API answer takes at least this long (ms), so concurrent callers overlap.
    api_latency_ms: AtomicU64,
    link_ttl_secs: AtomicU64,
    base_url: Mutex<String>,
    /// Header names of every API call received, to prove what the gateway forwards.
    seen_headers: Mutex<Vec<Vec<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running simulator on an ephemeral loopback port.
pub struct FinpassSandbox {
    state: Arc<State>,
    port: u16,
    handle: ServerHandle,
}

impl FinpassSandbox {
    /// Starts the simulator with the demo clients of the README. Must run inside an actix
    /// (tokio) runtime.
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            downloads_started: tokio::sync::watch::channel(0).0,
            clients: Mutex::default(),
            raw_data: Mutex::default(),
            echo_as: Mutex::default(),
            api_faults: Mutex::default(),
            api_calls: AtomicUsize::default(),
            api_in_flight: AtomicUsize::default(),
            api_peak: AtomicUsize::default(),
            api_latency_ms: AtomicU64::default(),
            link_ttl_secs: AtomicU64::default(),
            base_url: Mutex::default(),
            seen_headers: Mutex::default(),
        });
        state
            .link_ttl_secs
            .store(DEFAULT_LINK_TTL_SECS, Ordering::SeqCst);
        *lock(&state.base_url) = format!("http://127.0.0.1:{port}");
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024))
                .route(ENDPOINT, web::post().to(fetch_statement_pdf))
                .route("/reports/{client}/{file}", web::get().to(download))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let sandbox = Self {
            state,
            port,
            handle,
        };
        sandbox.seed_demo_clients();
        Ok(sandbox)
    }

    pub fn base_url(&self) -> String {
        lock(&self.state.base_url).clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Defines (or replaces) a client and its reports.
    pub fn set_client(&self, client_id: &str, reports: Vec<ReportSpec>) {
        let states = reports
            .into_iter()
            .map(|spec| ReportState {
                polls_left: match spec.status {
                    SandboxStatus::Pending { polls } => polls,
                    _ => 0,
                },
                faults: spec.link_faults.iter().cloned().collect(),
                expired_left: spec.expired_links,
                downloads: 0,
                generation: 0,
                not_modified: 0,
                spec,
            })
            .collect();
        lock(&self.state.raw_data).remove(client_id);
        lock(&self.state.clients).insert(client_id.to_owned(), states);
    }

    /// Defines (or replaces) a client whose successful answer carries `data` verbatim, e.g.
    /// `{}` or `null` with `success: true`.
    pub fn set_client_raw_data(&self, client_id: &str, data: serde_json::Value) {
        lock(&self.state.clients).remove(client_id);
        lock(&self.state.raw_data).insert(client_id.to_owned(), data);
    }

    /// Makes `client_id`'s answers echo `echoed` as `data.client_id` (an answer for another
    /// customer).
    pub fn echo_client_as(&self, client_id: &str, echoed: &str) {
        lock(&self.state.echo_as).insert(client_id.to_owned(), echoed.to_owned());
    }

    /// Queues faults for the next Finpass API calls, in order.
    pub fn push_api_faults(&self, faults: impl IntoIterator<Item = ApiFault>) {
        lock(&self.state.api_faults).extend(faults);
    }

    /// Number of calls the Finpass API endpoint received.
    pub fn api_calls(&self) -> usize {
        self.state.api_calls.load(Ordering::SeqCst)
    }

    /// The most API calls ever answered at once.
    pub fn peak_concurrent_api_calls(&self) -> usize {
        self.state.api_peak.load(Ordering::SeqCst)
    }

    /// Every API answer takes at least `latency` from now on (Finpass is never instant).
    pub fn set_api_latency(&self, latency: Duration) {
        self.state.api_latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Number of report bodies served (started) for a client.
    pub fn downloads(&self, client_id: &str) -> usize {
        lock(&self.state.clients)
            .get(client_id)
            .map_or(0, |r| r.iter().map(|s| s.downloads).sum())
    }

    /// Conditional GETs of a client's links answered 304 Not Modified (nothing sent).
    pub fn not_modified(&self, client_id: &str) -> usize {
        lock(&self.state.clients)
            .get(client_id)
            .map_or(0, |r| r.iter().map(|s| s.not_modified).sum())
    }

    /// Regenerates a report at the same link path with new bytes (a new version, new ETag).
    pub fn regenerate(&self, client_id: &str, index: usize, body: Body) {
        if let Some(r) = lock(&self.state.clients)
            .get_mut(client_id)
            .and_then(|reports| reports.get_mut(index))
        {
            r.spec.body = body;
            r.generation += 1;
        }
    }

    /// Resolves once at least `n` report bodies (of any client) have started.
    pub async fn wait_for_downloads(&self, n: usize) {
        let mut rx = self.state.downloads_started.subscribe();
        let _ = rx.wait_for(|started| *started >= n).await;
    }

    /// Lifetime of links issued from now on.
    pub fn set_link_ttl(&self, secs: u64) {
        self.state.link_ttl_secs.store(secs, Ordering::SeqCst);
    }

    /// Header names of every API call so far.
    pub fn seen_headers(&self) -> Vec<Vec<String>> {
        lock(&self.state.seen_headers).clone()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }

    fn seed_demo_clients(&self) {
        let statement = |fip: &str, acct: &str| {
            Body::Fixed(Bytes::from(pdf::statement(&[
                "finpass-gateway sandbox statement",
                &format!("FIP: {fip}"),
                &format!("Account: {acct}"),
            ])))
        };
        self.set_client(
            "aa_demo_ready",
            vec![
                ReportSpec::ready(
                    "HDFC-FIP",
                    "XXXXXXXXXX1234",
                    statement("HDFC-FIP", "XXXXXXXXXX1234"),
                ),
                ReportSpec::ready(
                    "SBI-FIP",
                    "XXXXXXXX9876",
                    statement("SBI-FIP", "XXXXXXXX9876"),
                ),
            ],
        );
        self.set_client(
            "aa_demo_mixed",
            vec![
                ReportSpec::ready(
                    "HDFC-FIP",
                    "XXXXXXXXXX1234",
                    statement("HDFC-FIP", "XXXXXXXXXX1234"),
                ),
                ReportSpec::ready("ICICI-FIP", "XXXXXXXX1326", Body::pdf(4096, 2))
                    .with_status(SandboxStatus::Pending { polls: usize::MAX }),
                ReportSpec::ready("AXIS-FIP", "XXXXXX5555", Body::pdf(4096, 3))
                    .with_status(SandboxStatus::Failed),
            ],
        );
        self.set_client(
            "aa_demo_pending",
            vec![
                ReportSpec::ready(
                    "FDRLFIPPROD",
                    "XXXXXXXXXX8517",
                    statement("FDRLFIPPROD", "XXXXXXXXXX8517"),
                )
                .with_status(SandboxStatus::Pending { polls: 2 }),
            ],
        );
        self.set_client(
            "aa_demo_not_pdf",
            vec![ReportSpec::ready("HDFC-FIP", "XXXXXXXXXX1234", Body::Html)],
        );
        self.set_client(
            "aa_demo_flaky",
            vec![
                ReportSpec::ready("HDFC-FIP", "XXXXXXXXXX1234", Body::pdf(3 << 20, 11))
                    .with_faults(vec![LinkFault::ResetAfter(1 << 20)]),
            ],
        );
        // Two statement periods of one account: two entries, two keys.
        self.set_client(
            "aa_demo_two_statements",
            vec![
                ReportSpec::ready(
                    "HDFC-FIP",
                    "XXXXXXXXXX1234",
                    statement("HDFC-FIP", "XXXXXXXXXX1234 (April)"),
                ),
                ReportSpec::ready(
                    "HDFC-FIP",
                    "XXXXXXXXXX1234",
                    statement("HDFC-FIP", "XXXXXXXXXX1234 (May)"),
                ),
            ],
        );
        // Regenerated at the same path on every call (loan monitoring): each call stores a
        // new statement under a new key; earlier keys keep their bytes.
        self.set_client(
            "aa_demo_refreshing",
            vec![
                ReportSpec::ready(
                    "HDFC-FIP",
                    "XXXXXXXXXX1234",
                    statement("HDFC-FIP", "XXXXXXXXXX1234"),
                )
                .regenerated_each_call(),
            ],
        );
        self.set_client(
            "aa_demo_large",
            vec![ReportSpec::ready(
                "HDFC-FIP",
                "XXXXXXXXXX1234",
                Body::Pdf {
                    size: 80 << 20,
                    seed: 12,
                    chunked: true,
                },
            )],
        );
        // One report of each malformed kind between two valid ones: the valid ones are
        // stored, each malformed one is `failed`/`upstream_invalid_report`.
        self.set_client(
            "aa_demo_invalid_report",
            vec![
                ReportSpec::ready(
                    "HDFC-FIP",
                    "XXXXXXXXXX1234",
                    statement("HDFC-FIP", "XXXXXXXXXX1234"),
                ),
                ReportSpec::raw(json!({
                    "fip_id": null,
                    "account_number": "XXXXXXXX1111",
                    "status": "READY",
                    "statement_report_link": "https://example.invalid/null-fip.pdf",
                })),
                ReportSpec::raw(json!({
                    "fip_id": "ICICI-FIP",
                    "status": "READY",
                    "statement_report_link": "https://example.invalid/no-account.pdf",
                })),
                ReportSpec::raw(json!({
                    "fip_id": "AXIS-FIP",
                    "account_number": "XXXXXXXX3333",
                    "status": null,
                })),
                ReportSpec::ready(
                    "SBI-FIP",
                    "XXXXXXXX9876",
                    statement("SBI-FIP", "XXXXXXXX9876"),
                ),
            ],
        );
        self.set_client(
            "aa_demo_wrong_client",
            vec![ReportSpec::ready(
                "HDFC-FIP",
                "XXXXXXXXXX4321",
                statement("HDFC-FIP", "XXXXXXXXXX4321"),
            )],
        );
        self.echo_client_as("aa_demo_wrong_client", "aa_demo_someone_else");
        self.set_client_raw_data("aa_demo_empty_data", json!({}));
        self.set_client_raw_data("aa_demo_null_data", json!(null));
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn amz_date(secs: u64) -> String {
    let t = aws_smithy_types::DateTime::from_secs(i64::try_from(secs).unwrap_or_default());
    t.fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
        .replace(['-', ':'], "")
        .chars()
        .take(15)
        .collect::<String>()
        + "Z"
}

fn signature(path: &str, date: &str, expires: &str) -> String {
    hex::encode(Sha256::digest(format!(
        "{SIGNING_KEY}\n{path}\n{date}\n{expires}"
    )))
}

fn report_path(client_id: &str, index: usize, spec: &ReportSpec) -> String {
    if let Some((_, file)) = &spec.served_at {
        return format!("/reports/{client_id}/{file}");
    }
    let fip: String = spec
        .fip_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("/reports/{client_id}/account_aggregator_v2_{index}_{fip}.pdf")
}

/// The host a report is served for: its alias, or the simulator's own address.
fn served_host(spec: &ReportSpec) -> &str {
    spec.served_at
        .as_ref()
        .map_or("127.0.0.1", |(h, _)| h.as_str())
}

/// A strong ETag per (path, generation, body), like S3's: changes whenever the bytes do.
fn etag(path: &str, r: &ReportState) -> String {
    let body = match &r.spec.body {
        Body::Pdf { size, seed, .. } => format!("pdf:{size}:{seed}"),
        Body::Fixed(b) => format!("fixed:{}", b.len()),
        Body::Html => "html".to_owned(),
    };
    let digest = Sha256::digest(format!("{path}\n{}\n{body}", r.generation));
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// An HTTP date that moves with the generation.
fn last_modified(generation: u64) -> String {
    let t = aws_smithy_types::DateTime::from_secs(
        1_780_000_000 + i64::try_from(generation).unwrap_or(0),
    );
    t.fmt(aws_smithy_types::date_time::Format::HttpDate)
        .unwrap_or_default()
}

fn envelope(
    status: StatusCode,
    message: &str,
    message_code: &str,
    data: serde_json::Value,
) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "data": data,
        "status_code": status.as_u16(),
        "success": status.is_success(),
        "message": message,
        "message_code": message_code,
    }))
}

/// One API call being answered (counted in `api_in_flight` until dropped).
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        let now = state.api_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.api_peak.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.api_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Deserialize)]
struct FetchBody {
    client_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    request_id: Option<String>,
}

async fn fetch_statement_pdf(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Bytes,
) -> HttpResponse {
    state.api_calls.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(&state);
    let latency = state.api_latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    lock(&state.seen_headers).push(
        req.headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect(),
    );
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if header("x-api-key") != Some(API_KEY) || header("x-api-secret") != Some(API_SECRET) {
        return envelope(
            StatusCode::UNAUTHORIZED,
            "Invalid API credentials",
            "unauthorized",
            json!(null),
        );
    }
    if !header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        return envelope(
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/json",
            "bad_request",
            json!(null),
        );
    }
    let Ok(parsed) = serde_json::from_slice::<FetchBody>(&body) else {
        return envelope(
            StatusCode::BAD_REQUEST,
            "Invalid request body",
            "bad_request",
            json!(null),
        );
    };
    let fault = lock(&state.api_faults).pop_front();
    match fault {
        Some(ApiFault::Status(s)) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return envelope(status, "Injected failure", "server_error", json!(null));
        }
        Some(ApiFault::RateLimited { retry_after_secs }) => {
            let mut resp = envelope(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "rate_limited",
                json!(null),
            );
            if let Ok(v) = retry_after_secs.to_string().parse() {
                resp.headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, v);
            }
            return resp;
        }
        Some(ApiFault::RateLimitedRaw(value)) => {
            let mut resp = envelope(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "rate_limited",
                json!(null),
            );
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&value) {
                resp.headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, v);
            }
            return resp;
        }
        Some(ApiFault::Hang(d)) => tokio::time::sleep(d).await,
        Some(ApiFault::Malformed) => {
            return HttpResponse::Ok()
                .content_type("application/json")
                .body("<html>oops</html>");
        }
        Some(ApiFault::NotAnEnvelope(s)) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::NOT_FOUND);
            return HttpResponse::build(status)
                .content_type("text/html")
                .body(format!(
                    "<html><body><h1>{status}</h1><hr>nginx</body></html>"
                ));
        }
        None => {}
    }
    if let Some(data) = lock(&state.raw_data).get(&parsed.client_id) {
        return envelope(StatusCode::OK, "Success", "success", data.clone());
    }
    let echoed = lock(&state.echo_as)
        .get(&parsed.client_id)
        .cloned()
        .unwrap_or_else(|| parsed.client_id.clone());
    let base = lock(&state.base_url).clone();
    let port = base.rsplit(':').next().unwrap_or_default().to_owned();
    let ttl = state.link_ttl_secs.load(Ordering::SeqCst);
    let mut clients = lock(&state.clients);
    let Some(reports) = clients.get_mut(&parsed.client_id) else {
        return envelope(
            StatusCode::NOT_FOUND,
            "Client not found",
            "client_not_found",
            json!(null),
        );
    };
    let reports: Vec<_> = reports
        .iter_mut()
        .enumerate()
        .map(|(i, r)| {
            if let Some(entry) = &r.spec.raw_entry {
                return entry.clone();
            }
            let status = match r.spec.status {
                SandboxStatus::Failed => "FAILED",
                SandboxStatus::Ready => "READY",
                SandboxStatus::Pending { .. } if r.polls_left > 0 => {
                    r.polls_left = r.polls_left.saturating_sub(1);
                    "PENDING"
                }
                SandboxStatus::Pending { .. } => "READY",
            };
            if r.spec.regenerate_each_call {
                r.generation += 1;
            }
            let link = if status != "READY" {
                serde_json::Value::Null
            } else if let Some(link) = &r.spec.link_override {
                json!(link)
            } else {
                let path = report_path(&parsed.client_id, i, &r.spec);
                let base = match &r.spec.served_at {
                    Some((host, _)) => format!("http://{host}:{port}"),
                    None => base.clone(),
                };
                let issued = if r.expired_left > 0 {
                    r.expired_left -= 1;
                    now_secs().saturating_sub(ttl.saturating_add(60))
                } else {
                    now_secs()
                };
                let (date, expires) = match &r.spec.signed_params_override {
                    Some((date, expires)) => (date.clone(), expires.clone()),
                    None => (amz_date(issued), ttl.to_string()),
                };
                let sig = signature(&path, &date, &expires);
                json!(format!(
                    "{base}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=SANDBOXKEY%2F{}%2Fap-south-1%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}",
                    date.get(..8).unwrap_or_default()
                ))
            };
            json!({
                "fip_id": r.spec.fip_id,
                "account_number": r.spec.account_number,
                "status": status,
                "statement_report_link": link,
            })
        })
        .collect();
    envelope(
        StatusCode::OK,
        "Success",
        "success",
        json!({ "client_id": echoed, "reports": reports }),
    )
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).content_type("application/xml").body(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ))
}

#[derive(Deserialize)]
struct SignedQuery {
    #[serde(rename = "X-Amz-Date")]
    date: String,
    #[serde(rename = "X-Amz-Expires")]
    expires: String,
    #[serde(rename = "X-Amz-Signature")]
    signature: String,
}

async fn download(
    req: HttpRequest,
    state: web::Data<State>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (client_id, file) = path.into_inner();
    let Ok(q) = web::Query::<SignedQuery>::from_query(req.query_string()) else {
        return s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Query-string authentication requires the Signature parameters",
        );
    };
    let full_path = format!("/reports/{client_id}/{file}");
    if signature(&full_path, &q.date, &q.expires) != q.signature {
        return s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match",
        );
    }
    // As S3 does: an X-Amz-Expires that is not a number of seconds up to a week is a
    // malformed request (400), a date that cannot be read is expired.
    let expires = match q.expires.parse::<u64>() {
        Ok(e) if e <= crate::link_policy::MAX_PRESIGNED_EXPIRES_SECS => e,
        _ => {
            return s3_error(
                StatusCode::BAD_REQUEST,
                "AuthorizationQueryParametersError",
                "X-Amz-Expires must be less than a week (in seconds) that is; 604800",
            );
        }
    };
    let issued = crate::link_policy::parse_amz_date(&q.date).unwrap_or(0);
    if issued.saturating_add(expires) < now_secs() {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
    }
    let host = req
        .connection_info()
        .host()
        .rsplit_once(':')
        .map_or_else(
            || req.connection_info().host().to_owned(),
            |(h, _)| h.to_owned(),
        )
        .to_ascii_lowercase();
    let if_none_match = req
        .headers()
        .get(actix_web::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (body, fault, tag, modified) = {
        let mut clients = lock(&state.clients);
        let found = clients.get_mut(&client_id).and_then(|reports| {
            reports
                .iter_mut()
                .enumerate()
                .find(|(i, r)| {
                    report_path(&client_id, *i, &r.spec) == full_path
                        && served_host(&r.spec) == host
                })
                .map(|(_, r)| r)
        });
        let Some(report) = found else {
            return s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            );
        };
        let tag = etag(&full_path, report);
        if if_none_match.as_deref() == Some(tag.as_str()) {
            report.not_modified += 1;
            return HttpResponse::NotModified()
                .insert_header(("etag", tag))
                .finish();
        }
        report.downloads += 1;
        (
            report.spec.body.clone(),
            report.faults.pop_front(),
            tag,
            last_modified(report.generation),
        )
    };
    state.downloads_started.send_modify(|n| *n += 1);
    let mut drip = None;
    let (cut_after, delay) = match fault {
        Some(LinkFault::Status(s)) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return s3_error(status, "InternalError", "Injected failure");
        }
        Some(LinkFault::Redirect(location)) => {
            return HttpResponse::Found()
                .insert_header(("location", location))
                .finish();
        }
        Some(LinkFault::ResetAfter(n)) => (Some(n), None),
        Some(LinkFault::Slow(d)) => (None, Some(d)),
        Some(LinkFault::Drip { bytes, every }) => {
            drip = Some(bytes);
            (None, Some(every))
        }
        None => (None, None),
    };
    let (chunks, len, content_type): (Box<dyn Iterator<Item = Bytes> + Send>, Option<u64>, &str) =
        match &body {
            Body::Pdf {
                size,
                seed,
                chunked,
            } => (
                Box::new(pdf::synthetic(*size, *seed)),
                (!chunked).then(|| body.size()),
                "application/pdf",
            ),
            // Zero-copy 64 KiB slices: a large fixed body (the benchmark serves 1 GiB from one
            // buffer) is written out piecewise instead of being copied into a write buffer.
            Body::Fixed(b) => (
                Box::new(slices(b.clone(), pdf::CHUNK)),
                Some(b.len() as u64),
                "application/pdf",
            ),
            Body::Html => (
                Box::new(std::iter::once(Bytes::from_static(HTML_PAGE))),
                Some(HTML_PAGE.len() as u64),
                "text/html",
            ),
        };
    let chunks: Box<dyn Iterator<Item = Bytes> + Send> = match drip {
        Some(bytes) => Box::new(chunks.flat_map(move |c| slices(c, bytes))),
        None => chunks,
    };
    let stream =
        futures_util::stream::unfold((chunks, 0u64), move |(mut chunks, sent)| async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let mut chunk = chunks.next()?;
            if let Some(limit) = cut_after {
                if sent >= limit {
                    return Some((
                        Err(std::io::Error::other("injected connection reset")),
                        (chunks, sent),
                    ));
                }
                chunk.truncate(usize::try_from(limit - sent).unwrap_or(usize::MAX));
            }
            let sent = sent + chunk.len() as u64;
            Some((Ok::<_, std::io::Error>(chunk), (chunks, sent)))
        });
    let mut resp = HttpResponse::Ok();
    resp.content_type(content_type)
        .insert_header(("etag", tag))
        .insert_header(("last-modified", modified));
    if let Some(len) = len {
        resp.no_chunking(len);
    }
    resp.streaming(stream)
}

/// `b` as consecutive zero-copy slices of at most `chunk` bytes.
fn slices(b: Bytes, chunk: usize) -> impl Iterator<Item = Bytes> + Send {
    (0..b.len())
        .step_by(chunk.max(1))
        .map(move |start| b.slice(start..(start + chunk).min(b.len())))
}
