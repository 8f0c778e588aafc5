use std::time::Duration;

use actix_web::{HttpResponse, web};

use super::ApiError;
use crate::{metrics::Metrics, storage::Storage};

const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: the process answers. Deliberately checks nothing else, so a slow S3 never gets
/// a healthy pod restarted.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

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

pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}
