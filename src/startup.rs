//! Assembles the application: settings → clients → actix `App`, bound to a listener.
//!
//! Tests call [`Application::build`] with `LISTEN_ADDR=127.0.0.1:0` and talk to the port it
//! reports, exactly as production traffic would (zero2prod's `spawn_app` pattern).

use std::{
    net::TcpListener,
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
    auth::{Authenticator, JwtKeySource, JwtVerifier, fetch_jwks, refresh_jwks_forever},
    config::{ConfigError, Settings},
    download::Downloader,
    finpass::{FinpassClient, RetryPolicy},
    link_policy::PolicyResolver,
    metrics::Metrics,
    pipeline::{InFlight, Limits, Pipeline},
    storage::{self, S3Override, Storage},
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

/// Knobs that only tests and the sandbox turn.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub s3: S3Override,
    pub retry: Option<RetryPolicy>,
    pub workers: Option<usize>,
    /// Name → address pins for report-link resolution (like curl's `--resolve`).
    pub pinned_dns: std::collections::HashMap<String, std::net::IpAddr>,
}

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    /// Separate `/metrics` listener (METRICS_ADDR); stopped when the API server stops.
    metrics_server: Option<ServerHandle>,
}

impl Application {
    pub async fn build(settings: Settings, overrides: Overrides) -> Result<Self, StartupError> {
        let bind = |addr: std::net::SocketAddr| {
            TcpListener::bind(addr).map_err(|source| StartupError::Bind {
                addr: addr.to_string(),
                source,
            })
        };
        let listener = bind(settings.listen_addr)?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: settings.listen_addr.to_string(),
                source,
            })?
            .port();
        let metrics_listener = settings.metrics_addr.map(bind).transpose()?;
        let metrics_port = metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port());

        let metrics = Metrics::new();
        let s3 = storage::build_client(settings.storage.force_path_style, &overrides.s3).await?;
        let storage = web::Data::new(Storage::new(s3, &settings.storage, metrics.clone()));
        let jwt = match &settings.auth.jwt {
            None => None,
            Some(jwt_settings) => {
                let verifier =
                    Arc::new(
                        JwtVerifier::new(jwt_settings).map_err(|e| ConfigError::Invalid {
                            var: "JWT_PUBLIC_KEY_FILE",
                            reason: e.to_string(),
                        })?,
                    );
                if let JwtKeySource::JwksUrl(url) = &jwt_settings.source {
                    // Keys before the first request, so users are not turned away at boot.
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
        };
        if settings.auth.disabled {
            tracing::warn!(
                "CALLER AUTHENTICATION IS DISABLED (AUTH_DISABLED=true): anyone who can reach this port can fetch any customer's statements"
            );
        }
        let authenticator = web::Data::new(Authenticator::new(&settings.auth, jwt));
        let limits = Arc::new(Limits {
            per_call: settings.download.report_concurrency,
            max_reports: settings.download.max_reports_per_call,
            downloads: Arc::new(Semaphore::new(settings.download.max_downloads)),
            max_poll_interval: Duration::from_secs(5),
        });
        let in_flight = Arc::new(InFlight::default());
        let admission =
            web::Data::new(api::Admission(Arc::new(Semaphore::new(settings.max_calls))));
        let retry = overrides.retry.unwrap_or_default();
        let serve_metrics_here = metrics_listener.is_none();
        let pinned_dns = Arc::new(overrides.pinned_dns.clone());

        let app_metrics = metrics.clone();
        let mut server = HttpServer::new(move || {
            let d = &settings.download;
            // Every connection a report link makes resolves through the link policy.
            let resolver = PolicyResolver::new(d.policy.clone(), Arc::clone(&pinned_dns));
            let tcp =
                actix_tls::connect::Connector::new(actix_tls::connect::Resolver::custom(resolver))
                    .service();
            let http = awc::Client::builder()
                .connector(
                    awc::Connector::new()
                        .connector(tcp)
                        .timeout(d.connect_timeout),
                )
                .disable_redirects()
                .timeout(d.connect_timeout)
                .finish();
            let pipeline = Pipeline {
                finpass: FinpassClient::new(&settings.finpass, retry, app_metrics.clone()),
                downloader: Downloader::new(http, d.max_report_bytes, d.read_timeout),
                storage: storage.clone().into_inner(),
                policy: d.policy.clone(),
                metrics: app_metrics.clone(),
                limits: Arc::clone(&limits),
                in_flight: Arc::clone(&in_flight),
            };
            let cors = settings.cors_origins.iter().fold(
                Cors::default()
                    .allowed_methods(["GET", "POST"])
                    .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                    .max_age(600),
                |cors, origin| cors.allowed_origin(origin),
            );
            let mut app = App::new()
                .wrap(Condition::new(!settings.cors_origins.is_empty(), cors))
                .wrap(from_fn(track_http))
                .wrap(TracingLogger::default())
                .app_data(api::json_config())
                .app_data(web::Data::new(pipeline))
                .app_data(storage.clone())
                .app_data(admission.clone())
                .app_data(authenticator.clone())
                .app_data(web::Data::new(app_metrics.clone()))
                .service(route(
                    "/v1/statements",
                    "POST",
                    web::post().to(api::store_statements),
                ))
                .service(route("/healthz", "GET", web::get().to(api::healthz)))
                .service(route("/readyz", "GET", web::get().to(api::readyz)))
                .service(route(
                    "/openapi.yaml",
                    "GET",
                    web::get().to(api::serve_openapi),
                ));
            if serve_metrics_here {
                app = app.service(route("/metrics", "GET", web::get().to(api::metrics)));
            }
            app.default_service(web::to(api::not_found))
        })
        .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs());
        if let Some(workers) = overrides.workers {
            server = server.workers(workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                addr: settings.listen_addr.to_string(),
                source,
            })?
            .run();

        let metrics_server = match metrics_listener {
            None => None,
            Some(l) => {
                let m = metrics.clone();
                let metrics_server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(m.clone()))
                        .service(route("/metrics", "GET", web::get().to(api::metrics)))
                        .default_service(web::to(api::not_found))
                })
                .workers(1)
                .disable_signals()
                .listen(l)
                .map_err(|source| StartupError::Bind {
                    addr: "METRICS_ADDR".into(),
                    source,
                })?
                .run();
                let handle = metrics_server.handle();
                actix_web::rt::spawn(metrics_server);
                Some(handle)
            }
        };
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
