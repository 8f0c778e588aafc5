use actix_web::{HttpResponse, web};

use super::ApiError;
use crate::{auth::Authenticator, lifecycle::Lifecycle, metrics::Metrics};

/// Liveness: the process answers. Deliberately checks nothing else, so a slow S3 never gets
/// a healthy pod restarted.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready to serve"),
    (status = 503, description = "`not_ready`: JWT keys not loaded yet, or draining", body = super::problem::Problem, content_type = "application/problem+json"),
))]
/// Readiness of this pod only: configuration loaded (we are running), JWT keys loaded when a
/// JWKS is configured, and not draining. No network call: S3 reachability is the metric
/// `finpass_gateway_dependency_up` instead, because an S3 blip would unready every pod at once
/// and empty the Service (docs/adr/0001-readiness-is-local.md).
pub async fn readyz(
    authenticator: web::Data<Authenticator>,
    lifecycle: web::Data<Lifecycle>,
) -> Result<HttpResponse, ApiError> {
    if lifecycle.draining() {
        return Err(ApiError::NotReady("shutting down"));
    }
    if !authenticator.keys_loaded() {
        return Err(ApiError::NotReady(
            "the JWT keys (JWT_JWKS_URL) are not loaded yet",
        ));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}

/// Prometheus metrics (served on `METRICS_ADDR` instead when that is set).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

/// This API's OpenAPI document (generated from the code; `openapi/openapi.yaml` is a copy
/// that a test keeps identical).
#[utoipa::path(get, path = "/openapi.yaml", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/yaml")))]
pub async fn openapi_yaml() -> HttpResponse {
    match super::openapi_yaml() {
        Ok(yaml) => HttpResponse::Ok()
            .content_type("application/yaml")
            .body(yaml),
        Err(e) => {
            tracing::error!(error = %e, "rendering the OpenAPI document failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}
