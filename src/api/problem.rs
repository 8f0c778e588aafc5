//! RFC 9457 `application/problem+json` errors with a stable machine-readable `code`.
//!
//! Messages are fixed per kind or built from values we produced ourselves: never from an
//! upstream body, a URL or a header, so no secret or pre-signed link can reach a caller.

use std::time::Duration;

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    error::JsonPayloadError,
    http::{StatusCode, header},
    web,
};
use serde::Serialize;

use super::request_id::HttpRequestId;
use crate::{audit::AuditError, auth::AuthError, finpass::FinpassError};

/// Largest accepted request body. The request is three small fields.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body exceeds {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed on this endpoint (allowed: {allow})")]
    MethodNotAllowed { allow: &'static str },
    #[error("Finpass does not know this client")]
    ClientNotFound,
    #[error("{0}")]
    Upstream(String),
    #[error("Finpass did not answer in time")]
    UpstreamTimeout,
    #[error("Finpass is rate limiting the gateway; retry later")]
    UpstreamRateLimited { retry_after: Duration },
    #[error("the gateway is at capacity; retry later")]
    Overloaded { retry_after: Duration },
    /// S3 is unreachable from this pod: a write is refused before calling Finpass, a read
    /// when its S3 call fails.
    #[error("the statements bucket is not reachable from the gateway; retry later")]
    StorageUnavailable { retry_after: Duration },
    /// This caller already has `MAX_CALLS_PER_CALLER` calls in progress.
    #[error("this caller has too many calls in progress; retry later")]
    TooManyCalls { retry_after: Duration },
    /// The pod is not ready; the detail says why (never a secret or a URL).
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// Authentication, the caller's reach (BOLA), or its rate limit: `auth` says which.
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no such statement for this client")]
    StatementNotFound,
    /// Fail closed: nothing is served when its audit event cannot be made durable.
    #[error("the audit trail cannot be written; nothing was served (retry later)")]
    AuditUnavailable,
    #[error(
        "S3 refused to delete some object versions (Object Lock retention, legal hold or permissions)"
    )]
    DeleteRefused,
    #[error("the requested range lies outside the statement")]
    RangeNotSatisfiable { size: Option<u64> },
    #[error("no such statement job")]
    JobNotFound,
    /// The caller's `Idempotency-Key` named a job created from another request body.
    #[error("this Idempotency-Key was used with another request body")]
    IdempotencyKeyReused,
    /// A `webhook_url` outside the caller's allowed destinations.
    #[error("{0}")]
    WebhookNotAllowed(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::ClientNotFound => "client_not_found",
            Self::Upstream(_) => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamRateLimited { .. } => "upstream_rate_limited",
            Self::Overloaded { .. } => "overloaded",
            Self::StorageUnavailable { .. } => "storage_unavailable",
            Self::TooManyCalls { .. } => "too_many_calls",
            Self::NotReady(_) => "not_ready",
            Self::Auth(AuthError::Unauthorized) => "unauthorized",
            Self::Auth(AuthError::Forbidden) => "forbidden",
            Self::Auth(AuthError::RateLimited { .. }) => "rate_limited",
            Self::StatementNotFound => "statement_not_found",
            Self::AuditUnavailable => "audit_unavailable",
            Self::DeleteRefused => "delete_refused",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::JobNotFound => "job_not_found",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::WebhookNotAllowed(_) => "webhook_not_allowed",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "Invalid request",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed { .. } => "Method not allowed",
            Self::ClientNotFound => "Client not found",
            Self::Upstream(_) => "Upstream error",
            Self::UpstreamTimeout => "Upstream timeout",
            Self::UpstreamRateLimited { .. } => "Upstream rate limited",
            Self::Overloaded { .. } => "Overloaded",
            Self::StorageUnavailable { .. } => "Storage unavailable",
            Self::TooManyCalls { .. } => "Too many calls in progress",
            Self::NotReady(_) => "Not ready",
            Self::Auth(AuthError::Unauthorized) => "Unauthorized",
            Self::Auth(AuthError::Forbidden) => "Forbidden",
            Self::Auth(AuthError::RateLimited { .. }) => "Too many requests",
            Self::StatementNotFound => "Statement not found",
            Self::AuditUnavailable => "Audit trail unavailable",
            Self::DeleteRefused => "Delete refused",
            Self::RangeNotSatisfiable { .. } => "Range not satisfiable",
            Self::JobNotFound => "Statement job not found",
            Self::IdempotencyKeyReused => "Idempotency key reused",
            Self::WebhookNotAllowed(_) => "Webhook not allowed",
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:finpass-gateway:problem:{code}`.
    #[serde(rename = "type")]
    pub type_: String,
    #[schema(value_type = String)]
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code.
    #[schema(value_type = String, example = "invalid_request")]
    pub code: &'static str,
    /// The exchange's request id (the `X-Request-Id` response header), to quote when asking
    /// about this answer: the logs and the audit trail record the same id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "0b5c63f4-8d2e-4f3b-9a51-6f0e2d7c9b1a")]
    pub instance: Option<String>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::ClientNotFound => StatusCode::NOT_FOUND,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamRateLimited { .. }
            | Self::Overloaded { .. }
            | Self::StorageUnavailable { .. }
            | Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Auth(AuthError::Unauthorized) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::Forbidden) => StatusCode::FORBIDDEN,
            Self::Auth(AuthError::RateLimited { .. }) | Self::TooManyCalls { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::StatementNotFound => StatusCode::NOT_FOUND,
            Self::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeleteRefused => StatusCode::CONFLICT,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::JobNotFound => StatusCode::NOT_FOUND,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::WebhookNotAllowed(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let problem = self.problem(None);
        let mut resp = HttpResponse::build(status);
        resp.content_type("application/problem+json");
        if let Self::Auth(AuthError::Unauthorized) = self {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Self::MethodNotAllowed { allow } = self {
            resp.insert_header((header::ALLOW, *allow));
        }
        if let Self::RangeNotSatisfiable { size: Some(size) } = self {
            resp.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
        }
        if let Self::AuditUnavailable = self {
            resp.insert_header((header::RETRY_AFTER, "5"));
        }
        if let Self::UpstreamRateLimited { retry_after }
        | Self::Overloaded { retry_after }
        | Self::StorageUnavailable { retry_after }
        | Self::TooManyCalls { retry_after }
        | Self::Auth(AuthError::RateLimited { retry_after }) = self
        {
            resp.insert_header((
                header::RETRY_AFTER,
                retry_after.as_secs().max(1).to_string(),
            ));
        }
        resp.json(problem)
    }
}

impl ApiError {
    fn problem(&self, instance: Option<String>) -> Problem {
        Problem {
            type_: format!("urn:finpass-gateway:problem:{}", self.code()),
            title: self.title(),
            status: self.status_code().as_u16(),
            detail: self.to_string(),
            code: self.code(),
            instance,
        }
    }
}

/// The problem body of an answer made from an [`ApiError`], naming the exchange as `instance`
/// (`None` for any other error). `ResponseError` renders without the request, so the edge
/// middleware swaps this body in, keeping the answer's status and headers.
pub fn problem_with_instance(error: &actix_web::Error, id: &HttpRequestId) -> Option<Vec<u8>> {
    let api = error.as_error::<ApiError>()?;
    serde_json::to_vec(&api.problem(Some(id.as_uri_reference()))).ok()
}

/// Fail closed: an event that cannot be made durable serves nothing.
impl From<AuditError> for ApiError {
    fn from(_: AuditError) -> Self {
        Self::AuditUnavailable
    }
}

impl From<FinpassError> for ApiError {
    fn from(e: FinpassError) -> Self {
        match e {
            FinpassError::ClientNotFound => Self::ClientNotFound,
            FinpassError::Timeout => Self::UpstreamTimeout,
            FinpassError::RateLimited { retry_after } => Self::UpstreamRateLimited {
                retry_after: retry_after.unwrap_or(Duration::from_secs(5)),
            },
            other => Self::Upstream(other.to_string()),
        }
    }
}

/// JSON extractor settings: size cap, content type required, errors as problem+json.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .content_type_required(true)
        .error_handler(|err, _req| {
            let api = match &err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::PayloadTooLarge,
                JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
                JsonPayloadError::Deserialize(e) => {
                    ApiError::InvalidRequest(truncate(&format!("invalid JSON body: {e}")))
                }
                _ => ApiError::InvalidRequest("the request body could not be read".to_owned()),
            };
            api.into()
        })
}

/// Keeps an error detail short even when it quotes a huge input.
fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

pub async fn not_found(_req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// A resource with one method; any other method gets a problem+json 405 with `Allow`.
pub fn single_method_resource(
    path: &str,
    method: &'static str,
    route: actix_web::Route,
) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(move || async move {
            Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow: method })
        }))
}
