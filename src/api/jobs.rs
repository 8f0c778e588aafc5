//! Statement jobs: `POST /v1/statement-jobs`, `GET|DELETE /v1/statement-jobs/{job_id}`.
//!
//! A job is created (and answered 202) before any Finpass call: everything that can be
//! refused is refused first (400, 401, 403, 429, 503). The engine (`jobs::engine`) then polls
//! Finpass on the ladder and stores READY reports through the same path as
//! `POST /v1/statements`. Every call is audited like the read routes: the answer is built only
//! once its event is durable.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{
    ApiError,
    caller::Authenticated,
    clients::{Audit, ReadSide, authorise},
    problem::Problem,
    statements::{parse_object, whole_number},
};
use crate::{
    auth::Caller,
    domain::{AuditAction, AuditOutcome, ClientId, RequestId, Scope},
    jobs::{
        engine::Engine,
        record::{JobId, JobRecord, JobState, JobView, WebhookDto, now_ms},
        store::JobStoreError,
        webhook::{Webhooks, deliver::check_destination, outbox::endpoint_caller},
    },
    storage::{Created, Storage},
};

/// `wait_seconds` of a job: at most 72 h, 6 h when not given.
pub const MAX_JOB_WAIT_SECONDS: u64 = 259_200;
pub const DEFAULT_JOB_WAIT_SECONDS: u64 = 21_600;
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Start a statement job for this client (and consent request).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StatementJobRequest)]
pub struct JobRequest {
    /// The Account Aggregator client id (any Finpass format).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9_-]{1,128}$",
        example = "aa_demo_pending"
    )]
    pub client_id: String,
    /// The consent request id from Finpass's refresh-data call.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub request_id: Option<String>,
    /// How long to keep polling Finpass while reports are PENDING (default 21600: 6 h).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 259200, example = 3600)]
    pub wait_seconds: Option<u64>,
    /// Where to POST the job's events (service callers only, within their allowed
    /// destinations).
    #[serde(default)]
    #[schema(example = "https://hooks.example.com/finpass")]
    pub webhook_url: Option<String>,
}

/// The job's path parameter, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "never built: only its OpenAPI description is used"
)]
struct JobPath {
    #[param(
        pattern = "^[A-Za-z0-9_-]{1,64}$",
        example = "job_3f9c2a7d41e04b7e9a1c5d2e8f6b0a13"
    )]
    job_id: String,
}

/// Creates a statement job: the gateway polls Finpass until every report is stored or failed,
/// or `wait_seconds` pass.
#[utoipa::path(
    post,
    path = "/v1/statement-jobs",
    tag = "jobs",
    request_body(content = JobRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "1..255 visible ASCII characters: the same caller with the same key and body gets the same job", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The job (new, or the one this Idempotency-Key created)", body = JobView,
            headers(("Location" = String, description = "/v1/statement-jobs/{job_id}"))),
        (status = 400, description = "`invalid_request`, or `webhook_not_allowed`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a service caller without the `jobs` scope, or a user token for another client", body = Problem, content_type = "application/problem+json"),
        (status = 405, description = "`method_not_allowed`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_key_reused`: the key was used with another body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`storage_unavailable` or `audit_unavailable` (retry; with an Idempotency-Key a retry finds the same job)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "api.create_job", skip_all, fields(caller = caller.label()))]
pub async fn create_job(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
    engine: web::Data<Engine>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let body: JobRequest = parse_object(body.into_inner())?;
    let client_id = ClientId::parse(body.client_id.as_str())
        .map_err(|e| ApiError::InvalidRequest(format!("client_id {e}")))?;
    let request_id = body
        .request_id
        .clone()
        .map(RequestId::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(format!("request_id {e}")))?;
    let wait = match body.wait_seconds {
        None => DEFAULT_JOB_WAIT_SECONDS,
        Some(s) if (1..=MAX_JOB_WAIT_SECONDS).contains(&s) => s,
        Some(_) => {
            return Err(ApiError::InvalidRequest(format!(
                "wait_seconds must be between 1 and {MAX_JOB_WAIT_SECONDS}"
            )));
        }
    };
    let key = idempotency_key(&req)?;
    let webhook = webhook(&caller, body.webhook_url.as_deref(), &engine.webhooks)?;
    let audit = Audit::new(
        &side.audit,
        &req,
        AuditAction::JobCreate,
        &caller,
        &client_id,
    );
    authorise(&audit, &caller, Scope::Jobs, &client_id, &[]).await?;
    if !storage.available() {
        return Err(storage_unavailable("S3 is unreachable"));
    }
    let owner = caller.audit_name();
    let body_sha256 = hex::encode(Sha256::digest(
        serde_json::json!([
            client_id.as_str(),
            request_id.as_ref().map(RequestId::as_str),
            wait,
            body.webhook_url,
        ])
        .to_string()
        .as_bytes(),
    ));
    let job_id = key
        .as_deref()
        .map_or_else(JobId::random, |k| JobId::for_idempotency_key(&owner, k));
    let now = now_ms();
    let (sub, jti) = caller.person();
    let record = JobRecord {
        job_id: job_id.clone(),
        client_id: client_id.to_string(),
        request_id: request_id.map(|r| r.to_string()),
        state: JobState::Queued,
        created_at: now,
        updated_at: now,
        deadline_at: now.saturating_add(wait.saturating_mul(1000)),
        next_poll_at: Some(now),
        polls: 0,
        outcomes: Default::default(),
        error: None,
        webhook,
        owner: owner.clone(),
        actor: crate::audit::Actor {
            caller: owner.clone(),
            sub: sub.map(str::to_owned),
            jti: jti.map(str::to_owned),
            source_address: String::new(),
        },
        idempotency_key: key,
        body_sha256,
        ladder_step: 0,
        outbox: Vec::new(),
    };
    let job = match engine.store.create(&record).await {
        Ok(Created::Created) => {
            engine.metrics.job_created();
            engine
                .metrics
                .job_open(job_id.as_str(), record.created_at / 1000);
            if let Err(e) = engine
                .queue
                .wake_after(job_id.as_str(), Duration::ZERO)
                .await
            {
                // The record stands; start-up (or another replica's) resume picks it up.
                tracing::error!(error = %e, "could not schedule a new job");
            }
            record
        }
        Ok(Created::Exists) => match engine.store.get(&job_id).await {
            Ok(Some(existing))
                if existing.owner == record.owner && existing.body_sha256 == record.body_sha256 =>
            {
                existing
            }
            Ok(Some(_)) => {
                return audit
                    .fail(AuditOutcome::Failed, vec![], ApiError::IdempotencyKeyReused)
                    .await;
            }
            Ok(None) => return Err(storage_unavailable("the job record vanished")),
            Err(e) => {
                return audit
                    .fail(AuditOutcome::Failed, vec![], storage_unavailable(e))
                    .await;
            }
        },
        Err(e) => {
            return audit
                .fail(AuditOutcome::Failed, vec![], storage_unavailable(e))
                .await;
        }
    };
    audit.record(AuditOutcome::Ok, vec![]).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/statement-jobs/{job_id}")))
        .json(job.view(storage.prefix())))
}

/// Describes a statement job.
#[utoipa::path(
    get,
    path = "/v1/statement-jobs/{job_id}",
    tag = "jobs",
    params(JobPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "`invalid_request` (job_id)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a service caller without the `jobs` scope, or a user token for another client's job", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`job_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 405, description = "`method_not_allowed`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`storage_unavailable` or `audit_unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "api.read_job", skip_all, fields(caller = caller.label()))]
pub async fn read_job(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<String>,
    engine: web::Data<Engine>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let (job, audit) = open_job(&caller, &req, &path, &engine, &side, AuditAction::JobRead).await?;
    audit.record(AuditOutcome::Ok, vec![]).await?;
    Ok(HttpResponse::Ok().json(job.view(storage.prefix())))
}

/// Cancels a statement job: no further Finpass calls nor webhooks but its
/// `statement_job.cancelled` event. A finished job is answered unchanged.
#[utoipa::path(
    delete,
    path = "/v1/statement-jobs/{job_id}",
    tag = "jobs",
    params(JobPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The job, `cancelled` (or as it finished)", body = JobView),
        (status = 400, description = "`invalid_request` (job_id)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a service caller without the `jobs` scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`job_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 405, description = "`method_not_allowed`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`storage_unavailable` or `audit_unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "api.cancel_job", skip_all, fields(caller = caller.label()))]
pub async fn cancel_job(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<String>,
    engine: web::Data<Engine>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let (job, audit) =
        open_job(&caller, &req, &path, &engine, &side, AuditAction::JobCancel).await?;
    let job = {
        let _lock = engine.store.lock(&job.job_id).await;
        let mut job = match engine.store.get(&job.job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return Err(ApiError::JobNotFound),
            Err(e) => {
                return audit
                    .fail(AuditOutcome::Failed, vec![], storage_unavailable(e))
                    .await;
            }
        };
        if !job.state.is_terminal() {
            job.finish(JobState::Cancelled, storage.prefix(), now_ms());
            if let Err(e) = engine.store.put(&job).await {
                return audit
                    .fail(AuditOutcome::Failed, vec![], storage_unavailable(e))
                    .await;
            }
            engine
                .metrics
                .job_finished(job.job_id.as_str(), crate::metrics::JobEnd::Cancelled);
            // Its terminal event, if it has a webhook, is delivered by the engine.
            if let Err(e) = engine
                .queue
                .wake_after(job.job_id.as_str(), Duration::ZERO)
                .await
            {
                tracing::warn!(error = %e, "could not schedule a cancelled job's event");
            }
        }
        job
    };
    audit.record(AuditOutcome::Ok, vec![]).await?;
    Ok(HttpResponse::Ok().json(job.view(storage.prefix())))
}

/// The opening of the routes on one job: the id validated (400), the record read (404, 503),
/// the caller allowed on its client (an audited 403).
async fn open_job<'a>(
    caller: &Caller,
    req: &HttpRequest,
    raw_id: &str,
    engine: &Engine,
    side: &'a ReadSide,
    action: AuditAction,
) -> Result<(JobRecord, Audit<'a>), ApiError> {
    let id = JobId::parse(raw_id).map_err(|e| ApiError::InvalidRequest(format!("job_id {e}")))?;
    let job = engine
        .store
        .get(&id)
        .await
        .map_err(storage_unavailable)?
        .ok_or(ApiError::JobNotFound)?;
    let client = ClientId::parse(job.client_id.as_str()).map_err(|_| ApiError::JobNotFound)?;
    let audit = Audit::new(&side.audit, req, action, caller, &client);
    authorise(&audit, caller, Scope::Jobs, &client, &[]).await?;
    Ok((job, audit))
}

/// The optional `Idempotency-Key`: 1..255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return Err(ApiError::InvalidRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

fn storage_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "job record S3 call failed");
    ApiError::StorageUnavailable {
        retry_after: Duration::from_secs(5),
    }
}

impl From<JobStoreError> for ApiError {
    fn from(e: JobStoreError) -> Self {
        storage_unavailable(e)
    }
}

/// The jobs routes on the internal listener. Any other method answers 405 with `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let not_allowed = |allow: &'static str| {
        web::to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) })
    };
    cfg.service(super::single_method_resource(
        "/v1/statement-jobs",
        "POST",
        web::post().to(create_job),
    ))
    .service(
        web::resource("/v1/statement-jobs/{job_id}")
            .route(web::get().to(read_job))
            .route(web::delete().to(cancel_job))
            .default_service(not_allowed("GET, DELETE")),
    );
}

/// The jobs routes of frontend users (the public listener): create and read, never cancel.
pub fn user_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::single_method_resource(
        "/v1/statement-jobs",
        "POST",
        web::post().to(create_job),
    ))
    .service(super::single_method_resource(
        "/v1/statement-jobs/{job_id}",
        "GET",
        web::get().to(read_job),
    ));
}

/// The job's webhook, when `webhook_url` is set: it must lie under one of the caller's
/// prefixes in `WEBHOOK_ENDPOINTS_FILE` and pass the destination rules (https, no userinfo;
/// http to loopback only with `WEBHOOK_ALLOW_HTTP`), else 400 `webhook_not_allowed`. Users
/// (JWT) set none: a user's browser must not make the gateway call out.
fn webhook(
    caller: &Caller,
    url: Option<&str>,
    webhooks: &Webhooks,
) -> Result<Option<WebhookDto>, ApiError> {
    let Some(raw) = url else { return Ok(None) };
    if matches!(caller, Caller::User { .. }) {
        return Err(ApiError::InvalidRequest(
            "webhook_url cannot be set with a user token".to_owned(),
        ));
    }
    let allowed = url::Url::parse(raw).ok().is_some_and(|u| {
        check_destination(&u, webhooks.allow_http).is_ok()
            && endpoint_caller(&caller.audit_name())
                .and_then(|name| webhooks.endpoints.secrets_for(name, &u))
                .is_some()
    });
    if !allowed {
        return Err(ApiError::WebhookNotAllowed(
            "webhook_url is not among this caller's allowed webhook destinations".to_owned(),
        ));
    }
    Ok(Some(WebhookDto {
        url: raw.to_owned(),
        delivered: 0,
        failed: 0,
        last_status: None,
    }))
}
