//! `POST /v1/statements`.

use std::{sync::Arc, time::Duration};

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::ApiError;
use crate::{
    domain::{ClientId, RequestId},
    pipeline::{Pipeline, ReportOutcome, ReportResult},
};

/// Longest a caller may ask us to wait for PENDING reports.
pub const MAX_WAIT_SECONDS: u64 = 60;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementsRequest {
    pub client_id: String,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatementsResponse {
    pub client_id: String,
    pub request_id: Option<String>,
    pub reports: Vec<ReportDto>,
    pub summary: Summary,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReportDto {
    pub fip_id: String,
    pub account_number: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub object: Option<ObjectDto>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ErrorDto>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectDto {
    pub bucket: String,
    pub key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub etag: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorDto {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub stored: usize,
    pub pending: usize,
    pub failed: usize,
}

/// Bounds the calls in progress in the whole process: past it callers get 503 + Retry-After
/// instead of queueing without limit.
pub struct Admission(pub Arc<Semaphore>);

struct Validated {
    client_id: ClientId,
    request_id: Option<RequestId>,
    wait: Duration,
}

/// Typed parsing of the body. serde would read a struct from a JSON array positionally, so
/// anything but an object is refused first.
fn parse(body: serde_json::Value) -> Result<StatementsRequest, ApiError> {
    if !body.is_object() {
        return Err(ApiError::InvalidRequest(
            "the request body must be a JSON object".to_owned(),
        ));
    }
    serde_json::from_value(body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

fn validate(body: StatementsRequest) -> Result<Validated, ApiError> {
    let client_id = ClientId::parse(body.client_id)
        .map_err(|e| ApiError::InvalidRequest(format!("client_id {e}")))?;
    let request_id = body
        .request_id
        .map(RequestId::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(format!("request_id {e}")))?;
    let wait = match body.wait_seconds {
        None => 0,
        Some(s) if s <= MAX_WAIT_SECONDS => s,
        Some(_) => {
            return Err(ApiError::InvalidRequest(format!(
                "wait_seconds must be between 0 and {MAX_WAIT_SECONDS}"
            )));
        }
    };
    Ok(Validated {
        client_id,
        request_id,
        wait: Duration::from_secs(wait),
    })
}

/// Stores the statements of a client (and request) and returns their permanent keys.
#[tracing::instrument(name = "api.store_statements", skip_all, fields(client_id))]
pub async fn store_statements(
    body: web::Json<serde_json::Value>,
    pipeline: web::Data<Pipeline>,
    admission: web::Data<Admission>,
) -> Result<HttpResponse, ApiError> {
    let v = validate(parse(body.into_inner())?)?;
    tracing::Span::current().record("client_id", v.client_id.as_str());
    let _permit = admission
        .0
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded {
            retry_after: Duration::from_secs(1),
        })?;
    let client_id = v.client_id.to_string();
    let request_id = v.request_id.as_ref().map(ToString::to_string);
    let outcomes = pipeline
        .into_inner()
        .fetch_and_store(v.client_id, v.request_id, v.wait)
        .await?;
    Ok(HttpResponse::Ok().json(render(client_id, request_id, outcomes)))
}

fn render(
    client_id: String,
    request_id: Option<String>,
    outcomes: Vec<ReportOutcome>,
) -> StatementsResponse {
    let mut summary = Summary::default();
    let reports = outcomes
        .into_iter()
        .map(|o| {
            let (status, object, error) = match o.result {
                ReportResult::Stored(s) => {
                    summary.stored += 1;
                    let object = ObjectDto {
                        bucket: s.bucket,
                        key: s.key,
                        size_bytes: s.size_bytes,
                        sha256: s.sha256,
                        etag: s.etag,
                    };
                    ("stored", Some(object), None)
                }
                ReportResult::Pending => {
                    summary.pending += 1;
                    ("pending", None, None)
                }
                ReportResult::Failed(f) => {
                    summary.failed += 1;
                    (
                        "failed",
                        None,
                        Some(ErrorDto {
                            code: f.code.to_owned(),
                            message: f.message,
                        }),
                    )
                }
            };
            ReportDto {
                fip_id: o.fip_id,
                account_number: o.account_number,
                status: status.to_owned(),
                object,
                error,
            }
        })
        .collect();
    StatementsResponse {
        client_id,
        request_id,
        reports,
        summary,
    }
}
