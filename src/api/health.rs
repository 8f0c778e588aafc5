use std::time::Duration;

use actix_web::{HttpResponse, web};

use super::ApiError;
use crate::{metrics::Metrics, storage::Storage};

const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: the process answers. Deliberately checks nothing else, so a slow S3 never gets
/// a healthy pod restarted.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready to serve"),
    (status = 503, description = "`not_ready`: the bucket is not reachable", body = super::problem::Problem, content_type = "application/problem+json"),
))]
/// Readiness: configuration loaded (we are running) and the bucket reachable. Failing takes
/// the pod out of the Service until S3 is back; it recovers by itself.
pub async fn readyz(storage: web::Data<Storage>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, storage.check_bucket()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: bucket unreachable");
            Err(ApiError::NotReady)
        }
        Err(_) => {
            tracing::warn!("not ready: bucket check timed out");
            Err(ApiError::NotReady)
        }
    }
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
