//! `POST /v1/statements`.

use std::time::{Duration, SystemTime};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use tokio::time::Instant;
use utoipa::ToSchema;

use super::{
    ApiError,
    admission::Admission,
    caller::Authenticated,
    clients::{Audit, ReadSide, authorise},
    problem::Problem,
};
use crate::{
    domain::{AuditAction, AuditOutcome, ClientId, RequestId, RetainUntil, Scope},
    finpass::FinpassError,
    metrics::Metrics,
    pipeline::{
        Pipeline,
        answer::{StatementsResponse, render},
    },
    storage::Storage,
};

/// Longest a caller may ever ask us to wait for PENDING reports (the OpenAPI maximum); a
/// deployment may accept less (`MAX_WAIT_SECONDS`, which `CALL_DEADLINE_MS` must exceed).
pub const MAX_WAIT_SECONDS: u64 = 60;

/// When S3 is known to be down, the background check looks again every second or so.
const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Store the statements of this client (and consent request).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementsRequest {
    /// The Account Aggregator client id (any Finpass format).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9_-]{1,128}$",
        example = "aa_demo_ready"
    )]
    pub client_id: String,
    /// The consent request id from Finpass's refresh-data call.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub request_id: Option<String>,
    /// Keep polling Finpass this long while reports are PENDING.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 60)]
    pub wait_seconds: Option<u64>,
    /// The end of the consent's data life (Sahamati `DataLife`), RFC 3339: statements stored
    /// by this call are deleted by the first retention sweep after it (daily: within 24 h).
    /// Not in the past. Absent: `STATEMENT_RETENTION_DAYS` after now, or kept until deleted.
    /// A statement already stored keeps the end of life it was stored with.
    #[serde(default)]
    #[schema(format = DateTime, example = "2027-03-31T23:59:59Z")]
    pub retain_until: Option<String>,
}

struct Validated {
    client_id: ClientId,
    request_id: Option<RequestId>,
    /// As asked, or the default; `None` keeps the statements until deleted.
    retain_until: Option<RetainUntil>,
    wait: Duration,
}

/// JSON Schema's `integer` includes `44.0`: accept any whole, non-negative number.
pub(super) fn whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    let n: Option<serde_json::Number> = Option::deserialize(d)?;
    n.map(|n| {
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 1e9)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| {
                serde::de::Error::custom("wait_seconds must be a whole number of seconds")
            })
    })
    .transpose()
}

/// Typed parsing of the body. serde would read a struct from a JSON array positionally, so
/// anything but an object is refused first.
fn parse(body: serde_json::Value) -> Result<StatementsRequest, ApiError> {
    parse_object(body)
}

/// A request body as `T`: anything but a JSON object is refused first (serde would read a
/// struct from an array positionally).
pub(super) fn parse_object<T: serde::de::DeserializeOwned>(
    body: serde_json::Value,
) -> Result<T, ApiError> {
    if !body.is_object() {
        return Err(ApiError::InvalidRequest(
            "the request body must be a JSON object".to_owned(),
        ));
    }
    serde_json::from_value(body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

fn validate(
    body: StatementsRequest,
    max_wait: Duration,
    now: SystemTime,
    default_retain_until: Option<RetainUntil>,
) -> Result<Validated, ApiError> {
    let client_id = ClientId::parse(body.client_id)
        .map_err(|e| ApiError::InvalidRequest(format!("client_id {e}")))?;
    let request_id = body
        .request_id
        .map(RequestId::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(format!("request_id {e}")))?;
    let retain_until = match body.retain_until {
        Some(raw) => Some(
            RetainUntil::parse(&raw, now)
                .map_err(|e| ApiError::InvalidRequest(format!("retain_until {e}")))?,
        ),
        None => default_retain_until,
    };
    let max = max_wait.as_secs().min(MAX_WAIT_SECONDS);
    let wait = match body.wait_seconds {
        None => 0,
        Some(s) if s <= max => s,
        Some(_) => {
            return Err(ApiError::InvalidRequest(format!(
                "wait_seconds must be between 0 and {max}"
            )));
        }
    };
    Ok(Validated {
        client_id,
        request_id,
        retain_until,
        wait: Duration::from_secs(wait),
    })
}

/// Stores the statements of a client (and request) and returns their permanent keys.
#[utoipa::path(
    post,
    path = "/v1/statements",
    tag = "statements",
    request_body(content = StatementsRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every report with its outcome", body = StatementsResponse),
        (status = 400, description = "`invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: missing or invalid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a service caller without the `store` scope, or a user token for another client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`client_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 405, description = "`method_not_allowed`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`, or `too_many_calls` in progress for this caller (with Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`upstream_error`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`upstream_rate_limited`, `overloaded` or `storage_unavailable` (with Retry-After), or `audit_unavailable` (the call's audit event could not be written: retry, storing is idempotent)", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`upstream_timeout`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "api.store_statements", skip_all, fields(client_id, caller))]
#[allow(clippy::too_many_arguments)]
pub async fn store_statements(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
    pipeline: web::Data<Pipeline>,
    admission: web::Data<Admission>,
    metrics: web::Data<Metrics>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let now = SystemTime::now();
    let v = validate(
        parse(body.into_inner())?,
        pipeline.limits.max_wait,
        now,
        storage.default_retain_until(now),
    )?;
    let audit = Audit::new(&side.audit, &req, AuditAction::Store, &caller, &v.client_id);
    authorise(&audit, &caller, Scope::Store, &v.client_id, &[]).await?;
    let span = tracing::Span::current();
    span.record("client_id", v.client_id.as_str());
    span.record("caller", caller.label());
    metrics.caller_request(caller.label());
    // Not a Finpass call (nor its quota) for reports that could not be stored. Refused like
    // `overloaded`, before any statement is touched, so there is nothing to audit.
    if !pipeline.storage.available() {
        return Err(ApiError::StorageUnavailable {
            retry_after: STORAGE_RETRY_AFTER,
        });
    }
    let permit = admission.admit(&caller)?;
    // The work and its audit event run in a task of their own: the transfers are detached
    // already, so a caller that hangs up must not be able to cancel the event that records
    // what they stored. The task holds the call's admission permit (and with it the
    // shutdown drain) until the event is written.
    let pipeline = pipeline.into_inner();
    let work = async move {
        let _permit = permit;
        let audit = Audit::new(&side.audit, &req, AuditAction::Store, &caller, &v.client_id);
        let answer = store_and_audit(&audit, pipeline, v, &metrics, &storage).await?;
        Ok(HttpResponse::Ok().json(answer))
    };
    actix_web::rt::spawn(tracing::Instrument::instrument(
        work,
        tracing::Span::current(),
    ))
    .await
    .unwrap_or_else(|_| Err(ApiError::AuditUnavailable))
}

/// Reads the client's purges, fetches and stores, then records the call's event: the answer
/// exists only once its event is durable.
async fn store_and_audit(
    audit: &Audit<'_>,
    pipeline: std::sync::Arc<Pipeline>,
    v: Validated,
    metrics: &Metrics,
    storage: &Storage,
) -> Result<StatementsResponse, ApiError> {
    // What the call sees of the client's purges before it asks Finpass anything: a purge
    // running now, or one that begins before a report is answered, wins over this store
    // (docs/adr/0005-purge-wins-races.md). Without it nothing is stored: refused like an
    // S3 outage, before any statement is touched.
    let purges = pipeline
        .storage
        .watch_purges(&v.client_id)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "could not read the client's purge markers");
            ApiError::StorageUnavailable {
                retry_after: STORAGE_RETRY_AFTER,
            }
        })?;
    let deadline = Instant::now() + pipeline.limits.call_deadline;
    let client_id = v.client_id.clone();
    let request_id = v.request_id.as_ref().map(ToString::to_string);
    let started = std::time::Instant::now();
    let waited = !v.wait.is_zero();
    let outcomes = match pipeline
        .fetch_and_store(
            v.client_id,
            v.request_id,
            purges,
            v.retain_until,
            v.wait,
            deadline,
        )
        .await
    {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let outcome = match e {
                FinpassError::ClientNotFound => AuditOutcome::NotFound,
                _ => AuditOutcome::Failed,
            };
            return audit.fail(outcome, vec![], e.into()).await;
        }
    };
    metrics.call_answered(waited, started.elapsed());
    let answer = render(&client_id, storage.prefix(), request_id, outcomes);
    let stored = answer
        .reports
        .iter()
        .filter_map(|r| r.statement_id.clone())
        .collect();
    // Stored but not yet answered: if the event cannot be written the caller gets 503 and
    // retries, which finds the statements already stored and downloads nothing again.
    audit.record(AuditOutcome::Ok, stored).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI maximum is the ceiling of the variable's declared range.
    #[test]
    fn the_wait_ceiling_is_the_variables_range() {
        assert_eq!(
            crate::config::vars::MAX_WAIT_SECONDS.range,
            Some((0, MAX_WAIT_SECONDS))
        );
    }

    #[test]
    fn wait_seconds_above_the_configured_maximum_is_refused() {
        let body = |wait| StatementsRequest {
            client_id: "aa_1".into(),
            request_id: None,
            wait_seconds: Some(wait),
            retain_until: None,
        };
        let max = Duration::from_secs(10);
        let now = SystemTime::now();
        assert_eq!(
            validate(body(10), max, now, None).map(|v| v.wait).ok(),
            Some(Duration::from_secs(10))
        );
        assert!(matches!(
            validate(body(11), max, now, None),
            Err(ApiError::InvalidRequest(d)) if d == "wait_seconds must be between 0 and 10"
        ));
    }
}
