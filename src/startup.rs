//! Assembles the application: settings → clients → actix `App`, bound to a listener.
//!
//! [`Application::build`] reads like a table of contents; each step is a named function
//! below. With `PUBLIC_LISTEN_ADDR` a second server serves frontend users only
//! ([`Audience::Public`]: their routes, JWTs only); both share every part but the listener,
//! and a shutdown drains both. Tests call it with `LISTEN_ADDR=127.0.0.1:0` and talk to the
//! port it reports,
//! exactly as production traffic would (zero2prod's `spawn_app` pattern): there is no
//! test-only entry point, tests change settings.

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::{Duration, Instant},
};

use actix_cors::Cors;
use actix_web::{
    App, HttpMessage, HttpResponse, HttpServer,
    body::{BoxBody, MessageBody},
    dev::{Server, ServerHandle, ServiceRequest, ServiceResponse},
    http::header,
    middleware::{Condition, Next, from_fn},
    web,
};
use tokio::sync::{Semaphore, watch};
use tracing_actix_web::TracingLogger;

use crate::{
    api::{self, single_method_resource as route},
    audit::{AuditLog, S3Sink},
    auth::{Audience, Authenticator, JwtVerifier, fetch_jwks, refresh_jwks_forever},
    config::{ConfigError, JwtKeySource, Settings},
    download::{Downloader, link_client},
    finpass::FinpassClient,
    jobs::{engine::Engine, ladder::Ladder, queue::JobQueue, store::JobStore},
    lifecycle::Lifecycle,
    metrics::Metrics,
    pipeline::{InFlight, Limits, Pipeline, SeenVersions},
    storage::{self, Storage},
};

/// What the shutdown drain adds to `CALL_DEADLINE_MS`: a call cut at its deadline still
/// cleans up (pipeline::CLEANUP_GRACE) and answers. The k8s termination grace period must
/// cover preStop + drain + a margin (`.ci/k8s_check.py` checks it: 5 + 125 + 10 = 140 s).
pub const DRAIN_EXTRA: Duration = Duration::from_secs(5);
/// After the drain, what actix still gives open connections (idle keep-alives, requests
/// refused while draining) before the workers stop.
const CONNECTION_SHUTDOWN_SECS: u64 = 1;

/// How long a graceful shutdown waits for calls and detached transfers: the longest call.
pub fn drain_timeout(settings: &Settings) -> Duration {
    settings.call.deadline + DRAIN_EXTRA
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Webhooks(#[from] crate::jobs::webhook::WebhookConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// Data stays in region: a bucket elsewhere is refused before anything is stored.
    #[error(
        "bucket {bucket} is in region {actual}, not in REQUIRED_BUCKET_REGION {required}: refusing to start"
    )]
    WrongRegion {
        bucket: String,
        actual: String,
        required: String,
    },
    /// `JOBS_QUEUE_URL` names a queue that cannot be used (missing, no permission).
    #[error("JOBS_QUEUE_URL: {0}")]
    JobQueue(#[from] crate::jobs::queue::QueueError),
    #[error("JOB_POLL_SCHEDULE: {0}")]
    JobPollSchedule(#[from] crate::jobs::ladder::LadderError),
    /// Where a bucket is could not be learnt, so REQUIRED_BUCKET_REGION cannot be vouched for.
    #[error("REQUIRED_BUCKET_REGION: cannot learn where bucket {bucket} is: {source}")]
    RegionUnknown {
        bucket: String,
        source: storage::StorageError,
    },
}

pub struct Application {
    port: u16,
    public_port: Option<u16>,
    metrics_port: Option<u16>,
    server: Server,
    /// The frontend-only listener (`PUBLIC_LISTEN_ADDR`); drained and stopped with `server`.
    public_server: Option<Server>,
    /// Separate `/metrics` listener (METRICS_ADDR); stopped when the API server stops.
    metrics_server: Option<ServerHandle>,
    /// The statement jobs engine's own thread (it owns a `Pipeline`); stopped after the drain.
    jobs_arbiter: actix_rt::Arbiter,
    lifecycle: Arc<Lifecycle>,
    drain: Duration,
    shutdown: Shutdown,
}

/// Stops an [`Application`] the way SIGTERM does: drain, then stop.
#[derive(Clone)]
pub struct Shutdown {
    requested: Arc<watch::Sender<bool>>,
    done: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    fn new() -> Self {
        Self {
            requested: Arc::new(watch::Sender::new(false)),
            done: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Starts the graceful shutdown and waits until it is over (the drain included).
    pub async fn stop(&self) {
        self.requested.send_replace(true);
        let mut done = self.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }

    async fn requested(&self) {
        let mut requested = self.requested.subscribe();
        let _ = requested.wait_for(|r| *r).await;
    }
}

/// What every worker's `App` shares (cheap clones of `Arc`s).
#[derive(Clone)]
struct Shared {
    settings: Arc<Settings>,
    metrics: Metrics,
    storage: web::Data<Storage>,
    authenticator: web::Data<Authenticator>,
    admission: web::Data<api::Admission>,
    lifecycle: Arc<Lifecycle>,
    limits: Arc<Limits>,
    in_flight: Arc<InFlight>,
    seen: Arc<SeenVersions>,
    read_side: web::Data<api::ReadSide>,
    jobs: web::Data<Engine>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // A bad endpoints file refuses the start (before anything listens or touches S3),
        // rather than failing jobs' webhooks hours later.
        let webhooks = Arc::new(crate::jobs::webhook::Webhooks::load(&settings.webhooks)?);
        let listener = bind(settings.listen_addr)?;
        let public_listener = settings.public_listen_addr.map(bind).transpose()?;
        let metrics_listener = settings.metrics_addr.map(bind).transpose()?;
        let metrics = Metrics::new();
        let storage = s3_storage(&settings, &metrics).await?;
        let jwt = jwt_verifier(&settings).await;
        warn_if_auth_disabled(&settings);
        let lifecycle = Arc::new(Lifecycle::default());
        let drain = drain_timeout(&settings);
        let read_side = read_side(&settings, &storage, &metrics);
        let admission = web::Data::new(api::Admission::new(
            settings.max_calls,
            settings.max_calls_per_caller,
            Arc::clone(&lifecycle),
            metrics.clone(),
        ));
        // SQS when JOBS_QUEUE_URL is set, checked now (GetQueueAttributes) so a wrong URL or a
        // missing permission refuses the start instead of stalling every job.
        let queue = JobQueue::from_settings(&settings.job_queue, &settings.s3).await?;
        let jobs = web::Data::new(Engine {
            queue,
            store: Arc::new(JobStore::new(
                storage.clone().into_inner(),
                settings.storage.jobs_prefix.clone(),
            )),
            audit: read_side.audit.clone(),
            polls: Arc::new(settings.job_poll_schedule.parse::<Ladder>()?),
            slots: admission.slots(),
            lifecycle: Arc::clone(&lifecycle),
            metrics: metrics.clone(),
            webhooks,
        });
        let shared = Shared {
            authenticator: web::Data::new(Authenticator::new(&settings.auth, jwt, metrics.clone())),
            admission,
            jobs,
            lifecycle: Arc::clone(&lifecycle),
            limits: Arc::new(limits(&settings)),
            in_flight: Arc::default(),
            seen: Arc::default(),
            read_side,
            storage,
            metrics: metrics.clone(),
            settings: Arc::new(settings),
        };
        let jobs_arbiter = start_jobs(&shared);
        let port = local_port(&listener)?;
        let public_port = public_listener.as_ref().map(local_port).transpose()?;
        let metrics_port = metrics_listener.as_ref().map(local_port).transpose()?;
        let public_server = public_listener
            .map(|l| api_server(shared.clone(), l, Routes::Public))
            .transpose()?;
        let server = api_server(
            shared,
            listener,
            Routes::Internal {
                metrics: metrics_listener.is_none(),
            },
        )?;
        let metrics_server = metrics_listener
            .map(|l| metrics_server(metrics, l))
            .transpose()?;
        Ok(Self {
            port,
            public_port,
            metrics_port,
            server,
            public_server,
            metrics_server,
            jobs_arbiter,
            lifecycle,
            drain,
            shutdown: Shutdown::new(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The frontend-only listener's port, when `PUBLIC_LISTEN_ADDR` is set.
    pub fn public_port(&self) -> Option<u16> {
        self.public_port
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Stops the application as SIGTERM does (tests use it; it works once running).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs until SIGTERM/SIGINT or [`Shutdown::stop`], then shuts down gracefully: not
    /// ready and refusing new calls, no new connections, then waiting (up to the drain,
    /// `CALL_DEADLINE_MS` + 5 s) for the calls in progress *and* the transfers that outlived
    /// their callers, and only then stopping the workers, which would drop those transfers.
    /// Both API listeners (internal and public) are paused, drained and stopped together.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            public_server,
            metrics_server,
            jobs_arbiter,
            lifecycle,
            drain,
            shutdown,
            ..
        } = self;
        let handles: Vec<ServerHandle> = std::iter::once(server.handle())
            .chain(public_server.as_ref().map(Server::handle))
            .collect();
        // A server future also runs its server's command loop (pause, stop): it keeps
        // being polled, as a task of its own, while the drain waits.
        let mut server = actix_web::rt::spawn(server);
        let public_server = public_server.map(actix_web::rt::spawn);
        let stopped_otherwise = tokio::select! {
            result = &mut server => Some(result),
            () = stop_requested(&shutdown) => None,
        };
        let joined = match stopped_otherwise {
            Some(joined) => {
                for handle in &handles {
                    handle.stop(true).await;
                }
                joined
            }
            None => {
                drain_then_stop(&handles, &lifecycle, drain).await;
                server.await
            }
        };
        if let Some(public) = public_server {
            let _ = public.await;
        }
        let result = joined.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        // The drain waited for the job steps in progress; the engine took no new ones.
        lifecycle.start_draining();
        jobs_arbiter.stop();
        if let Some(metrics) = metrics_server {
            metrics.stop(true).await;
        }
        shutdown.done.send_replace(true);
        result
    }
}

async fn stop_requested(shutdown: &Shutdown) {
    tokio::select! {
        () = shutdown.requested() => tracing::info!("shutdown requested"),
        () = termination_signal() => tracing::info!("shutdown signal received"),
    }
}

/// SIGTERM (Kubernetes) or SIGINT (a terminal).
#[cfg(unix)]
async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for termination signals");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn termination_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn drain_then_stop(handles: &[ServerHandle], lifecycle: &Lifecycle, drain: Duration) {
    lifecycle.start_draining();
    for handle in handles {
        handle.pause().await;
    }
    tracing::info!(
        in_progress = lifecycle.work.in_progress(),
        drain_secs = drain.as_secs(),
        "draining: waiting for calls and transfers"
    );
    if tokio::time::timeout(drain, lifecycle.work.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            in_progress = lifecycle.work.in_progress(),
            "the drain ran out; stopping with work in progress"
        );
    }
    for handle in handles {
        handle.stop(true).await;
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).map_err(|source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    })
}

fn local_port(listener: &TcpListener) -> Result<u16, StartupError> {
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| StartupError::Bind {
            addr: "listener".into(),
            source,
        })
}

/// The S3 client (standard AWS chain plus the settings' pins) and the store on top of it;
/// staging leftovers of a crashed process are swept before serving.
async fn s3_storage(
    settings: &Settings,
    metrics: &Metrics,
) -> Result<web::Data<Storage>, StartupError> {
    let s3 = storage::build_client(&settings.s3).await?;
    let storage = Storage::new(
        s3,
        &settings.storage,
        !settings.s3.checksum_when_required,
        metrics.clone(),
    );
    check_region(&storage, settings).await?;
    storage
        .sweep_staging(settings.storage.staging_sweep_age)
        .await;
    let storage = web::Data::new(storage);
    // S3 reachability is a metric and a fast 503, not readiness (docs/adr/0001).
    actix_web::rt::spawn(storage::probe_forever(storage.clone().into_inner()));
    Ok(storage)
}

/// `REQUIRED_BUCKET_REGION`: the statements and audit buckets are where the deployment says
/// data must stay (RBI's payment-data storage directive, CERT-In's 2022 directions: README
/// "Data residency"), or the process does not start.
pub async fn check_region(storage: &Storage, settings: &Settings) -> Result<(), StartupError> {
    let Some(required) = &settings.storage.required_region else {
        return Ok(());
    };
    let mut buckets = vec![settings.storage.bucket.clone()];
    if let Some(audit) = &settings.read_side.audit_bucket
        && !buckets.contains(audit)
    {
        buckets.push(audit.clone());
    }
    for bucket in buckets {
        let actual =
            storage
                .bucket_region(&bucket)
                .await
                .map_err(|source| StartupError::RegionUnknown {
                    bucket: bucket.clone(),
                    source,
                })?;
        if &actual != required {
            return Err(StartupError::WrongRegion {
                bucket,
                actual,
                required: required.clone(),
            });
        }
        tracing::info!(bucket = %bucket, region = %actual, "bucket is in the required region");
    }
    Ok(())
}

/// The read routes' shared state: the audit trail's group-commit writer (started here, on the
/// main runtime, so every worker's calls share its batches) and the read-side settings.
fn read_side(
    settings: &Settings,
    storage: &web::Data<Storage>,
    metrics: &Metrics,
) -> web::Data<api::ReadSide> {
    let r = &settings.read_side;
    let sink = S3Sink {
        client: storage.client().clone(),
        bucket: r
            .audit_bucket
            .clone()
            .unwrap_or_else(|| settings.storage.bucket.clone()),
        encryption: storage.encryption().cloned(),
        metrics: metrics.clone(),
    };
    web::Data::new(api::ReadSide {
        audit: AuditLog::start(sink, r.audit_prefix.clone(), metrics.clone()),
        download_url_ttl: r.download_url_ttl,
        trusted_proxies: r.trusted_proxies.clone(),
    })
}

/// The JWT verifier, with JWKS keys loaded before the first request and refreshed in the
/// background.
async fn jwt_verifier(settings: &Settings) -> Option<Arc<JwtVerifier>> {
    let jwt_settings = settings.auth.jwt.as_ref()?;
    let verifier = Arc::new(JwtVerifier::new(jwt_settings));
    if let JwtKeySource::JwksUrl(url) = &jwt_settings.source {
        match fetch_jwks(&verifier, url).await {
            Ok(n) => tracing::info!(keys = n, "JWKS loaded"),
            Err(e) => {
                tracing::error!(error = %e, "JWKS fetch failed; user JWTs are refused until a refresh succeeds")
            }
        }
        actix_web::rt::spawn(refresh_jwks_forever(Arc::clone(&verifier), url.clone()));
    }
    Some(verifier)
}

fn warn_if_auth_disabled(settings: &Settings) {
    if settings.auth.disabled {
        tracing::warn!(
            "CALLER AUTHENTICATION IS DISABLED (AUTH_DISABLED=true): anyone who can reach this port can fetch any customer's statements"
        );
    }
}

fn limits(settings: &Settings) -> Limits {
    let d = &settings.download;
    Limits {
        per_call: d.report_concurrency,
        max_reports: d.max_reports_per_call,
        downloads: Arc::new(Semaphore::new(d.max_downloads)),
        max_poll_interval: Duration::from_secs(5),
        call_deadline: settings.call.deadline,
        max_wait: settings.call.max_wait,
    }
}

/// The statement jobs engine on an arbiter (a thread) of its own, with a pipeline of its own
/// (awc is `!Send`): it resumes the unfinished jobs, then runs until the process drains.
fn start_jobs(shared: &Shared) -> actix_rt::Arbiter {
    let arbiter = actix_rt::Arbiter::new();
    let shared = shared.clone();
    arbiter.spawn_fn(move || {
        // As the HTTP workers hold theirs (`web::Data` is an `Arc`): the pipeline API takes
        // `&Arc<Pipeline>`, on this one thread.
        let pipeline = web::Data::new(pipeline(&shared)).into_inner();
        let engine = Engine::clone(&shared.jobs);
        actix_web::rt::spawn(engine.run(pipeline));
    });
    arbiter
}

/// One pipeline per worker: it owns `!Send` awc clients.
fn pipeline(shared: &Shared) -> Pipeline {
    let s = &shared.settings;
    Pipeline {
        finpass: FinpassClient::new(&s.finpass, shared.metrics.clone()),
        downloader: Downloader::new(
            link_client(&s.download),
            s.download.max_report_bytes,
            s.download.read_timeout,
        ),
        storage: shared.storage.clone().into_inner(),
        policy: s.download.policy.clone(),
        metrics: shared.metrics.clone(),
        limits: Arc::clone(&shared.limits),
        in_flight: Arc::clone(&shared.in_flight),
        work: shared.lifecycle.work.clone(),
        seen: Arc::clone(&shared.seen),
    }
}

fn cors(origins: &[String]) -> Cors {
    origins.iter().fold(
        Cors::default()
            .allowed_methods(["GET", "POST", "DELETE", "OPTIONS"])
            .allowed_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::RANGE,
                header::IF_NONE_MATCH,
                api::X_REQUEST_ID,
            ])
            // What a frontend reads from a statement download (PDF viewers use ranges), and
            // the request id to quote in a support ticket.
            .expose_headers([
                header::CONTENT_DISPOSITION,
                header::CONTENT_RANGE,
                header::ETAG,
                header::ACCEPT_RANGES,
                header::CONTENT_LENGTH,
                api::X_REQUEST_ID,
            ])
            .max_age(600),
        |cors, origin| cors.allowed_origin(origin),
    )
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy)]
enum Routes {
    /// `LISTEN_ADDR`: everything (`/metrics` too unless `METRICS_ADDR` has its own listener).
    Internal { metrics: bool },
    /// `PUBLIC_LISTEN_ADDR`: what frontend users may call, nothing else (no probes, which are
    /// the kubelet's on the internal port; no metrics, no OpenAPI document, no deletes).
    Public,
}

impl Routes {
    fn audience(self) -> Audience {
        match self {
            Self::Internal { .. } => Audience::Internal,
            Self::Public => Audience::Public,
        }
    }
}

/// The routes of one listener, by audience.
fn routes(cfg: &mut web::ServiceConfig, which: Routes) {
    cfg.service(route(
        "/v1/statements",
        "POST",
        web::post().to(api::store_statements),
    ));
    let Routes::Internal { metrics } = which else {
        cfg.configure(api::user_read_routes)
            .configure(api::user_job_routes);
        return;
    };
    cfg.configure(api::read_routes)
        .configure(api::job_routes)
        .service(route("/healthz", "GET", web::get().to(api::healthz)))
        .service(route("/readyz", "GET", web::get().to(api::readyz)))
        .service(route(
            "/openapi.yaml",
            "GET",
            web::get().to(api::serve_openapi),
        ));
    if metrics {
        cfg.service(route("/metrics", "GET", web::get().to(api::metrics)));
    }
}

fn api_server(
    shared: Shared,
    listener: TcpListener,
    which: Routes,
) -> Result<Server, StartupError> {
    let workers = shared.settings.workers;
    let keep_alive = shared.settings.http_keep_alive;
    let mut server = HttpServer::new(move || {
        let origins = &shared.settings.cors_origins;
        App::new()
            .wrap(Condition::new(!origins.is_empty(), cors(origins)))
            .wrap(from_fn(track_http))
            .wrap(TracingLogger::<api::RequestSpan>::new())
            .wrap(from_fn(edge_headers))
            .app_data(api::json_config())
            .app_data(web::Data::new(pipeline(&shared)))
            .app_data(shared.storage.clone())
            .app_data(shared.read_side.clone())
            .app_data(shared.admission.clone())
            .app_data(shared.jobs.clone())
            .app_data(web::Data::from(Arc::clone(&shared.lifecycle)))
            .app_data(shared.authenticator.clone())
            .app_data(web::Data::new(shared.metrics.clone()))
            .app_data(which.audience())
            .configure(|cfg| routes(cfg, which))
            .default_service(web::to(api::not_found))
    })
    // Signals are ours: the drain must come before actix stops its workers.
    .disable_signals()
    .shutdown_timeout(CONNECTION_SHUTDOWN_SECS)
    // actix's default is 5 s, below every proxy's idle timeout: a proxy (or a pooled client)
    // reusing a connection we had just closed got a failed request (README "Connections").
    .keep_alive(keep_alive);
    if let Some(workers) = workers {
        server = server.workers(workers);
    }
    let addr = listener.local_addr().map_or_else(
        |_| match which {
            Routes::Internal { .. } => "LISTEN_ADDR".to_owned(),
            Routes::Public => "PUBLIC_LISTEN_ADDR".to_owned(),
        },
        |a| a.to_string(),
    );
    Ok(server
        .listen(listener)
        .map_err(|source| StartupError::Bind { addr, source })?
        .run())
}

/// The separate `/metrics` listener (`METRICS_ADDR`), so the API port can be exposed without
/// exposing metrics.
fn metrics_server(metrics: Metrics, listener: TcpListener) -> Result<ServerHandle, StartupError> {
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(edge_headers))
            .app_data(web::Data::new(metrics.clone()))
            .service(route("/metrics", "GET", web::get().to(api::metrics)))
            .default_service(web::to(api::not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .map_err(|source| StartupError::Bind {
        addr: "METRICS_ADDR".into(),
        source,
    })?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(handle)
}

/// What every answer of every listener carries, whatever produced it (a handler, an
/// extractor's problem, the default 404, CORS): the exchange's request id (also in a problem's
/// `instance`), `nosniff` (no browser second-guesses a JSON or PDF body), and, unless the
/// answer says otherwise, `Cache-Control: private, no-store`: statement data, keys and links
/// must not outlive the call in any cache, and one rule here cannot miss a route.
async fn edge_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse, actix_web::Error> {
    let id = api::HttpRequestId::for_request(&req);
    req.extensions_mut().insert(id.clone());
    match next.call(req).await {
        Ok(res) => {
            let (req, res) = res.map_into_boxed_body().into_parts();
            let problem = res.error().and_then(|e| api::problem_with_instance(e, &id));
            Ok(ServiceResponse::new(req, edge_answer(res, &id, problem)))
        }
        // An error no inner layer turned into an answer: actix renders it after this, so the
        // same headers go on through a response mapper.
        Err(mut e) => {
            let problem = api::problem_with_instance(&e, &id);
            e.add_response_mapper(move |res| edge_answer(res, &id, problem.clone()));
            Err(e)
        }
    }
}

fn edge_answer(
    res: HttpResponse,
    id: &api::HttpRequestId,
    problem: Option<Vec<u8>>,
) -> HttpResponse {
    let mut res = match problem {
        Some(body) => res.map_body(|_, _| BoxBody::new(body)),
        None => res,
    };
    let headers = res.headers_mut();
    if let Some(value) = id.header_value() {
        headers.insert(api::X_REQUEST_ID, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static(NO_STORE),
        );
    }
    res
}

/// The `Cache-Control` of every answer that does not set its own.
const NO_STORE: &str = "private, no-store";

/// RED metrics per route pattern (bounded), never per raw path.
async fn track_http(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let _in_flight = metrics.as_ref().map(|m| m.http_in_flight());
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m.to_owned(),
        _ => "OTHER".to_owned(),
    };
    let started = Instant::now();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        m.http_request(&route, &method, res.status().as_u16(), started.elapsed());
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain covers the longest call: the k8s grace period (preStop 5 s + drain + 10 s =
    /// 140 s) is computed from this.
    #[test]
    fn the_drain_is_the_call_deadline_plus_five_seconds() {
        let settings = Settings::from_lookup(|name| {
            match name {
                "AUTH_DISABLED" => Some("true"),
                "FINPASS_API_KEY" | "FINPASS_API_SECRET" => Some("x"),
                "STATEMENTS_BUCKET" => Some("b"),
                _ => None,
            }
            .map(str::to_owned)
        })
        .expect("settings");
        assert_eq!(drain_timeout(&settings), Duration::from_secs(125));
    }
}
