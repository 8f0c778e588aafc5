//! Assembles the application: settings → clients → actix `App`, bound to a listener.
//!
//! [`Application::build`] reads like a table of contents; each step is a named function
//! below. Tests call it with `LISTEN_ADDR=127.0.0.1:0` and talk to the port it reports,
//! exactly as production traffic would (zero2prod's `spawn_app` pattern): there is no
//! test-only entry point, tests change settings.

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::{Duration, Instant},
};

use actix_cors::Cors;
use actix_web::{
    App, HttpServer,
    body::MessageBody,
    dev::{Server, ServerHandle, ServiceRequest, ServiceResponse},
    http::header,
    middleware::{Condition, Next, from_fn},
    web,
};
use tokio::sync::Semaphore;
use tracing_actix_web::TracingLogger;

use crate::{
    api::{self, single_method_resource as route},
    audit::{AuditLog, S3Sink},
    auth::{Authenticator, JwtVerifier, fetch_jwks, refresh_jwks_forever},
    config::{ConfigError, DownloadSettings, JwtKeySource, Settings},
    download::Downloader,
    finpass::FinpassClient,
    link_policy::PolicyResolver,
    metrics::{Dependency, Metrics},
    pipeline::{InFlight, Limits, Pipeline, SeenVersions},
    storage::{self, Storage},
};

/// How long in-flight requests get to finish after SIGTERM. The k8s termination grace period
/// must be longer.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    /// Separate `/metrics` listener (METRICS_ADDR); stopped when the API server stops.
    metrics_server: Option<ServerHandle>,
}

/// What every worker's `App` shares (cheap clones of `Arc`s).
#[derive(Clone)]
struct Shared {
    settings: Arc<Settings>,
    metrics: Metrics,
    storage: web::Data<Storage>,
    authenticator: web::Data<Authenticator>,
    admission: web::Data<api::Admission>,
    limits: Arc<Limits>,
    in_flight: Arc<InFlight>,
    seen: Arc<SeenVersions>,
    read_side: web::Data<api::ReadSide>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let listener = bind(settings.listen_addr)?;
        let metrics_listener = settings.metrics_addr.map(bind).transpose()?;
        let metrics = Metrics::new();
        let storage = s3_storage(&settings, &metrics).await?;
        probe_s3(storage.clone(), metrics.clone()).await;
        metrics.set_calls_capacity(settings.max_calls);
        let jwt = jwt_verifier(&settings).await;
        warn_if_auth_disabled(&settings);
        let read_side = read_side(&settings, &storage, &metrics);
        let shared = Shared {
            authenticator: web::Data::new(Authenticator::new(&settings.auth, jwt)),
            admission: web::Data::new(api::Admission(Arc::new(Semaphore::new(settings.max_calls)))),
            limits: Arc::new(limits(&settings.download)),
            in_flight: Arc::default(),
            seen: Arc::default(),
            read_side,
            storage,
            metrics: metrics.clone(),
            settings: Arc::new(settings),
        };
        let port = local_port(&listener)?;
        let metrics_port = metrics_listener.as_ref().map(local_port).transpose()?;
        let server = api_server(shared, listener, metrics_listener.is_none())?;
        let metrics_server = metrics_listener
            .map(|l| metrics_server(metrics, l))
            .transpose()?;
        Ok(Self {
            port,
            metrics_port,
            server,
            metrics_server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs until SIGTERM/SIGINT (graceful: stop accepting, finish in-flight work within
    /// [`SHUTDOWN_TIMEOUT`]) or until stopped through [`Application::handle`].
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some(metrics) = self.metrics_server {
            metrics.stop(true).await;
        }
        result
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
    storage
        .sweep_staging(settings.storage.staging_sweep_age)
        .await;
    Ok(web::Data::new(storage))
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
    };
    web::Data::new(api::ReadSide {
        audit: AuditLog::start(sink, r.audit_prefix.clone(), metrics.clone()),
        download_url_ttl: r.download_url_ttl,
        delete_callers: r.delete_callers.clone(),
    })
}

/// How often S3 reachability is probed for `dependency_up{dependency="s3"}`.
const S3_PROBE_INTERVAL: Duration = Duration::from_secs(10);
const S3_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes S3 once now (so the gauge is right from the first scrape), then every
/// [`S3_PROBE_INTERVAL`] in the background, for the `dependency_up` metric and its alert.
async fn probe_s3(storage: web::Data<Storage>, metrics: Metrics) {
    async fn once(storage: &Storage, metrics: &Metrics) {
        let up = matches!(
            tokio::time::timeout(S3_PROBE_TIMEOUT, storage.check_bucket()).await,
            Ok(Ok(()))
        );
        metrics.dependency_up(Dependency::S3, up);
    }
    once(&storage, &metrics).await;
    actix_web::rt::spawn(async move {
        loop {
            tokio::time::sleep(S3_PROBE_INTERVAL).await;
            once(&storage, &metrics).await;
        }
    });
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

fn limits(d: &DownloadSettings) -> Limits {
    Limits {
        per_call: d.report_concurrency,
        max_reports: d.max_reports_per_call,
        downloads: Arc::new(Semaphore::new(d.max_downloads)),
        max_poll_interval: Duration::from_secs(5),
    }
}

/// The report-link HTTP client: every connection resolves through the link policy, no
/// redirects, bounded connect and response-head time.
fn link_client(d: &DownloadSettings) -> awc::Client {
    let resolver = PolicyResolver::new(d.policy.clone(), Arc::new(d.pinned_hosts.clone()));
    let tcp = actix_tls::connect::Connector::new(actix_tls::connect::Resolver::custom(resolver))
        .service();
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .connector(tcp)
                .timeout(d.connect_timeout),
        )
        .disable_redirects()
        .timeout(d.connect_timeout)
        .finish()
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
            ])
            // What a frontend reads from a statement download (PDF viewers use ranges).
            .expose_headers([
                header::CONTENT_DISPOSITION,
                header::CONTENT_RANGE,
                header::ETAG,
                header::ACCEPT_RANGES,
                header::CONTENT_LENGTH,
            ])
            .max_age(600),
        |cors, origin| cors.allowed_origin(origin),
    )
}

/// Every route of the API.
fn routes(cfg: &mut web::ServiceConfig, serve_metrics_here: bool) {
    cfg.service(route(
        "/v1/statements",
        "POST",
        web::post().to(api::store_statements),
    ))
    .configure(api::read_routes)
    .service(route("/healthz", "GET", web::get().to(api::healthz)))
    .service(route("/readyz", "GET", web::get().to(api::readyz)))
    .service(route(
        "/openapi.yaml",
        "GET",
        web::get().to(api::serve_openapi),
    ));
    if serve_metrics_here {
        cfg.service(route("/metrics", "GET", web::get().to(api::metrics)));
    }
}

fn api_server(
    shared: Shared,
    listener: TcpListener,
    serve_metrics_here: bool,
) -> Result<Server, StartupError> {
    let workers = shared.settings.workers;
    let mut server = HttpServer::new(move || {
        let origins = &shared.settings.cors_origins;
        App::new()
            .wrap(Condition::new(!origins.is_empty(), cors(origins)))
            .wrap(from_fn(track_http))
            .wrap(TracingLogger::default())
            .app_data(api::json_config())
            .app_data(web::Data::new(pipeline(&shared)))
            .app_data(shared.storage.clone())
            .app_data(shared.read_side.clone())
            .app_data(shared.admission.clone())
            .app_data(shared.authenticator.clone())
            .app_data(web::Data::new(shared.metrics.clone()))
            .configure(|cfg| routes(cfg, serve_metrics_here))
            .default_service(web::to(api::not_found))
    })
    .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs());
    if let Some(workers) = workers {
        server = server.workers(workers);
    }
    let addr = listener
        .local_addr()
        .map_or_else(|_| "LISTEN_ADDR".to_owned(), |a| a.to_string());
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
