//! The read side: `GET|DELETE /v1/clients/{client_id}/statements[/{statement_id}[/content|/download-url]]`.
//!
//! Every handler runs the same steps, in this order: authenticate (the extractor: 401/429),
//! validate the path's ids (400; never a key outside `{STATEMENTS_PREFIX}{client_id}/`),
//! authorise (403, audited), act on S3, record the audit event, answer. The answer is built
//! only after its audit event is durable; if the event cannot be written the call answers 503
//! `audit_unavailable` and serves nothing. A delete records its event *before* removing
//! anything, so no purge goes unrecorded. Finpass is never called.

use std::time::{Duration, SystemTime};

use actix_web::{HttpRequest, HttpResponse, body::SizedStream, http::header, web};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, caller::Authenticated, problem::Problem, source::source_of};
use crate::{
    audit::{Actor, AuditLog, Recorder, rfc3339},
    auth::{AuthError, Caller},
    domain::{
        AuditAction, AuditOutcome, ClientId, MAX_ID_LEN, STATEMENT_SUFFIX, Scope, StatementId,
    },
    lifecycle::Lifecycle,
    metrics::Metrics,
    storage::{ByteRange, Content, PurgeError, StatementInfo, Storage, attachment},
};

/// `limit` bounds and default of the list route.
pub const MAX_LIST_LIMIT: u16 = 100;
pub const DEFAULT_LIST_LIMIT: u16 = 50;
/// Longest cursor accepted: the hex of the longest statement file name (`{id}.pdf`).
const MAX_CURSOR_LEN: usize = 2 * (MAX_ID_LEN + STATEMENT_SUFFIX.len());

/// What the read routes share: the audit trail and the read-side settings.
pub struct ReadSide {
    pub audit: AuditLog,
    pub download_url_ttl: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the source address (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Where a stored statement is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatementObjectDto {
    pub bucket: String,
    pub key: String,
    pub etag: String,
}

/// One stored statement.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = Statement)]
pub struct StatementDto {
    /// Stable id: the object's file name without `.pdf`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub statement_id: String,
    pub fip_id: String,
    /// Masked account number; empty for statements stored before the write path recorded it.
    pub account_number: String,
    pub request_id: Option<String>,
    /// When the gateway fetched it from Finpass (RFC 3339).
    #[schema(format = DateTime)]
    pub fetched_at: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the stored bytes.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    /// The end of its data life (RFC 3339, UTC): the retention sweep deletes it within a day
    /// after. `null`: kept until deleted.
    #[schema(format = DateTime)]
    pub retain_until: Option<String>,
    pub object: StatementObjectDto,
}

/// One page of a client's statements.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = StatementList)]
pub struct StatementListDto {
    pub client_id: String,
    pub statements: Vec<StatementDto>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A pre-signed link to the statement's bytes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = DownloadUrl)]
pub struct DownloadUrlDto {
    /// A pre-signed GET of the bucket, answering `application/pdf` as an attachment. Whoever
    /// holds it can download until `expires_at`: treat it as a secret.
    pub url: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// How many statements a purge removed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = Deleted)]
pub struct DeletedDto {
    pub client_id: String,
    pub deleted: usize,
}

/// Query of the list route, for the OpenAPI document; [`list_query`] parses it (leniently
/// about unknown parameters, strictly about these two, with problem+json errors).
#[allow(dead_code)]
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Statements per page, 1..100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u16>,
    /// `next_cursor` of the previous page (opaque; any other value is refused). The pattern is
    /// exactly what [`decode_cursor`] takes: lowercase hex of `{statement_id}.pdf`, each
    /// character of the id one of `[A-Za-z0-9_-]`.
    #[param(pattern = "^(2d|3[0-9]|4[1-9a-f]|5[0-9af]|6[1-9a-f]|7[0-9a]){1,128}2e706466$")]
    pub cursor: Option<String>,
}

impl StatementDto {
    fn new(bucket: &str, s: StatementInfo) -> Self {
        Self {
            statement_id: s.statement_id.to_string(),
            fip_id: s.fip_id,
            account_number: s.account_number,
            request_id: s.request_id,
            fetched_at: s.fetched_at,
            size_bytes: s.size_bytes,
            sha256: s.sha256,
            retain_until: s.retain_until.map(|r| r.to_rfc3339()),
            object: StatementObjectDto {
                bucket: bucket.to_owned(),
                key: s.key,
                etag: s.etag,
            },
        }
    }
}

/// One call's audit event, filled in as the handler learns the outcome.
pub(super) struct Audit<'a>(Recorder<'a>);

impl<'a> Audit<'a> {
    pub(super) fn new(
        log: &'a AuditLog,
        req: &HttpRequest,
        action: AuditAction,
        caller: &Caller,
        client: &ClientId,
    ) -> Self {
        let (sub, jti) = caller.person();
        let actor = Actor {
            caller: caller.audit_name(),
            sub: sub.map(str::to_owned),
            jti: jti.map(str::to_owned),
            source_address: source_of(req).map_or_else(String::new, |ip| ip.to_string()),
        };
        let request_id = super::HttpRequestId::of(req).to_string();
        Self(Recorder::new(log, action, actor, client, request_id))
    }

    /// Every event of this call names `id` as the statement asked for.
    pub(super) fn asking_for(self, id: Option<&StatementId>) -> Self {
        Self(self.0.asking_for(id.map(ToString::to_string)))
    }

    /// Makes the event durable; the caller's answer may be sent only after `Ok`.
    pub(super) async fn record(
        &self,
        outcome: AuditOutcome,
        statement_ids: Vec<String>,
    ) -> Result<(), ApiError> {
        Ok(self.0.record(outcome, statement_ids).await?)
    }

    /// Records a refusal or failure, then answers with `error` (or 503 if even that cannot
    /// be recorded).
    pub(super) async fn fail<T>(
        &self,
        outcome: AuditOutcome,
        statement_ids: Vec<String>,
        error: ApiError,
    ) -> Result<T, ApiError> {
        self.record(outcome, statement_ids).await?;
        Err(error)
    }

    /// What a lookup of one statement found: a missing statement is an audited 404, an S3
    /// failure an audited 503.
    async fn found<T>(
        &self,
        ids: &[String],
        lookup: Result<Option<T>, impl std::fmt::Display>,
    ) -> Result<T, ApiError> {
        match lookup {
            Ok(Some(found)) => Ok(found),
            Ok(None) => {
                self.fail(
                    AuditOutcome::NotFound,
                    ids.to_vec(),
                    ApiError::StatementNotFound,
                )
                .await
            }
            Err(e) => {
                self.fail(AuditOutcome::Failed, ids.to_vec(), storage_unavailable(e))
                    .await
            }
        }
    }
}

/// The opening of the routes that read one statement: both ids validated (400), the audit
/// event begun, the caller allowed on the client (an audited 403).
async fn one_statement<'a>(
    side: &'a ReadSide,
    req: &HttpRequest,
    action: AuditAction,
    caller: &Caller,
    path: &(String, String),
) -> Result<(ClientId, StatementId, Audit<'a>), ApiError> {
    let (client, id) = (client_id(&path.0)?, statement_id(&path.1)?);
    let audit = Audit::new(&side.audit, req, action, caller, &client);
    authorise(&audit, caller, Scope::Read, &client, &[&id]).await?;
    Ok((client, id, audit))
}

fn client_id(raw: &str) -> Result<ClientId, ApiError> {
    ClientId::parse(raw).map_err(|e| ApiError::InvalidRequest(format!("client_id {e}")))
}

fn statement_id(raw: &str) -> Result<StatementId, ApiError> {
    StatementId::parse(raw).map_err(|e| ApiError::InvalidRequest(format!("statement_id {e}")))
}

fn storage_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "S3 read-side call failed");
    ApiError::StorageUnavailable {
        retry_after: Duration::from_secs(5),
    }
}

/// `limit` and `cursor`, read leniently from the raw query (unknown parameters are ignored)
/// and strictly checked.
fn list_query(query: &str) -> Result<(u16, Option<StatementId>), ApiError> {
    let mut limit = DEFAULT_LIST_LIMIT;
    let mut cursor = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "limit" => {
                limit = value
                    .parse::<u16>()
                    .ok()
                    .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::InvalidRequest(format!(
                            "limit must be a whole number between 1 and {MAX_LIST_LIMIT}"
                        ))
                    })?;
            }
            "cursor" => cursor = Some(decode_cursor(&value)?),
            _ => {}
        }
    }
    Ok((limit, cursor))
}

/// A cursor is the hex of the file name (`{statement_id}.pdf`) of the statement a page ended
/// on. Only that decodes: anything else, forged or damaged, is a 400 before S3 is asked, so
/// what S3 does with an odd `StartAfter` never matters (it is used under the client's folder
/// prefix only, in any case).
fn decode_cursor(raw: &str) -> Result<StatementId, ApiError> {
    let invalid = || {
        ApiError::InvalidRequest(
            "cursor is invalid: pass the next_cursor of the previous page unchanged".to_owned(),
        )
    };
    // Lowercase hex only, as `encode_cursor` writes it (and the OpenAPI pattern says).
    let lowercase_hex = raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if raw.is_empty() || raw.len() > MAX_CURSOR_LEN || !lowercase_hex {
        return Err(invalid());
    }
    let bytes = hex::decode(raw).map_err(|_| invalid())?;
    let name = String::from_utf8(bytes).map_err(|_| invalid())?;
    let id = name.strip_suffix(STATEMENT_SUFFIX).ok_or_else(invalid)?;
    StatementId::parse(id).map_err(|_| invalid())
}

fn encode_cursor(resume_after: &str) -> String {
    hex::encode(resume_after.as_bytes())
}

/// The caller may do `scope` on this client ([`Caller::may`]: its scopes, and a user JWT only
/// its own client); a refusal is audited.
pub(super) async fn authorise(
    audit: &Audit<'_>,
    caller: &Caller,
    scope: Scope,
    client: &ClientId,
    statement_ids: &[&StatementId],
) -> Result<(), ApiError> {
    if caller.may(scope, client.as_str()).is_err() {
        let ids = statement_ids.iter().map(ToString::to_string).collect();
        return audit
            .fail(AuditOutcome::Forbidden, ids, AuthError::Forbidden.into())
            .await;
    }
    Ok(())
}

/// The problems every read route can answer, described once for the OpenAPI document (each
/// route lists its own 400, 403 and 404 next to it).
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "never built: only its OpenAPI description is used"
)]
enum ReadProblems {
    #[response(
        status = 401,
        description = "`unauthorized`",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 405,
        description = "`method_not_allowed`",
        content_type = "application/problem+json"
    )]
    MethodNotAllowed(Problem),
    #[response(
        status = 429,
        description = "`rate_limited`",
        content_type = "application/problem+json"
    )]
    RateLimited(Problem),
    #[response(
        status = 503,
        description = "`audit_unavailable` or `storage_unavailable`",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// The path of the routes on one statement, described once for the OpenAPI document (the
/// handlers validate both ids themselves, into `ClientId` and `StatementId`).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "never built: only its OpenAPI description is used"
)]
struct StatementPath {
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    client_id: String,
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    statement_id: String,
}

/// The problems of the routes that read one statement, besides [`ReadProblems`].
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "never built: only its OpenAPI description is used"
)]
enum StatementProblems {
    #[response(
        status = 400,
        description = "`invalid_request`",
        content_type = "application/problem+json"
    )]
    InvalidRequest(Problem),
    #[response(
        status = 403,
        description = "`forbidden`: a service caller without the `read` scope, or a user token for another client",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    #[response(
        status = 404,
        description = "`statement_not_found`",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
}

/// Lists a client's stored statements (never calls Finpass).
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/statements",
    tag = "read",
    params(("client_id" = String, Path, pattern = "^[A-Za-z0-9_-]{1,128}$"), ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the client's statements, in key order", body = StatementListDto),
        (status = 400, description = "`invalid_request` (client_id, limit or cursor)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a service caller without the `read` scope, or a user token for another client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such route (e.g. an empty client_id)", body = Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
#[tracing::instrument(name = "api.list_statements", skip_all, fields(caller = caller.label()))]
pub async fn list_statements(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<String>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let client = client_id(&path)?;
    let (limit, cursor) = list_query(req.query_string())?;
    let audit = Audit::new(&side.audit, &req, AuditAction::List, &caller, &client);
    authorise(&audit, &caller, Scope::Read, &client, &[]).await?;
    let page = match storage
        .list_statements(&client, cursor.as_ref(), limit)
        .await
    {
        Ok(page) => page,
        Err(e) => {
            return audit
                .fail(AuditOutcome::Failed, vec![], storage_unavailable(e))
                .await;
        }
    };
    let ids = page
        .statements
        .iter()
        .map(|s| s.statement_id.to_string())
        .collect();
    audit.record(AuditOutcome::Ok, ids).await?;
    let bucket = storage.bucket();
    Ok(HttpResponse::Ok().json(StatementListDto {
        client_id: client.to_string(),
        statements: page
            .statements
            .into_iter()
            .map(|s| StatementDto::new(bucket, s))
            .collect(),
        next_cursor: page.resume_after.as_deref().map(encode_cursor),
    }))
}

/// Describes one stored statement.
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/statements/{statement_id}",
    tag = "read",
    params(StatementPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The statement", body = StatementDto),
        StatementProblems,
        ReadProblems,
    )
)]
#[tracing::instrument(name = "api.read_statement", skip_all, fields(caller = caller.label()))]
pub async fn read_statement(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
) -> Result<HttpResponse, ApiError> {
    let (client, id, audit) = one_statement(&side, &req, AuditAction::Read, &caller, &path).await?;
    let ids = vec![id.to_string()];
    let info = audit
        .found(&ids, storage.statement(&client, &id).await)
        .await?;
    audit.record(AuditOutcome::Ok, ids).await?;
    Ok(HttpResponse::Ok().json(StatementDto::new(storage.bucket(), info)))
}

/// Streams the statement's PDF (ranges and conditional requests supported).
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/statements/{statement_id}/content",
    tag = "read",
    params(
        StatementPath,
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023` (others are ignored: 200 with the whole PDF)"),
        ("If-None-Match" = Option<String>, Header, description = "ETag(s) the caller already has"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The whole PDF (attachment)", content_type = "application/pdf", body = Vec<u8>),
        (status = 206, description = "The requested range, with Content-Range", content_type = "application/pdf", body = Vec<u8>),
        (status = 304, description = "If-None-Match matched"),
        StatementProblems,
        (status = 416, description = "`range_not_satisfiable` (with Content-Range: bytes */size)", body = Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
#[tracing::instrument(name = "api.statement_content", skip_all, fields(caller = caller.label()))]
pub async fn statement_content(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let (client, id, audit) =
        one_statement(&side, &req, AuditAction::Content, &caller, &path).await?;
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let range = header(header::RANGE).and_then(ByteRange::parse);
    let if_none_match = header(header::IF_NONE_MATCH);
    let ids = vec![id.to_string()];
    let content = match storage
        .open_statement(&client, &id, range, if_none_match)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            return audit
                .fail(AuditOutcome::Failed, ids, storage_unavailable(e))
                .await;
        }
    };
    match content {
        Content::NotFound => {
            audit
                .fail(AuditOutcome::NotFound, ids, ApiError::StatementNotFound)
                .await
        }
        Content::RangeNotSatisfiable { size } => {
            audit
                .fail(
                    AuditOutcome::Failed,
                    ids,
                    ApiError::RangeNotSatisfiable { size },
                )
                .await
        }
        Content::NotModified { etag } => {
            audit.record(AuditOutcome::NotModified, ids).await?;
            Ok(HttpResponse::NotModified()
                .insert_header((header::ETAG, format!("\"{etag}\"")))
                .finish())
        }
        Content::Body {
            info_etag,
            content_length,
            content_range,
            body,
        } => {
            audit.record(AuditOutcome::Ok, ids).await?;
            let mut resp = match &content_range {
                Some(range) => {
                    let mut r = HttpResponse::PartialContent();
                    r.insert_header((header::CONTENT_RANGE, range.as_str()));
                    r
                }
                None => HttpResponse::Ok(),
            };
            Ok(resp
                .content_type("application/pdf")
                .insert_header((header::CONTENT_DISPOSITION, attachment(&id)))
                .insert_header((header::ETAG, format!("\"{info_etag}\"")))
                .insert_header((header::ACCEPT_RANGES, "bytes"))
                .body(SizedStream::new(
                    content_length,
                    Box::pin(stream_body(body, metrics.get_ref().clone())),
                )))
        }
    }
}

/// The S3 body as an HTTP body, chunk by chunk: memory stays flat whatever the size, and
/// actix stops pulling while the client is slow (back-pressure all the way to S3).
fn stream_body(
    body: ByteStream,
    metrics: Metrics,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(body), move |body| {
        let metrics = metrics.clone();
        async move {
            let mut body = body?;
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    metrics.content_bytes(chunk.len() as u64);
                    Some((Ok(chunk), Some(body)))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "S3 body failed mid-stream; the response is cut");
                    Some((Err(std::io::Error::other("statement body failed")), None))
                }
            }
        }
    })
}

/// Issues a short-lived pre-signed link to the statement's bytes in the bucket.
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/statements/{statement_id}/download-url",
    tag = "read",
    params(StatementPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A pre-signed GET valid for DOWNLOAD_URL_TTL_SECONDS", body = DownloadUrlDto),
        StatementProblems,
        ReadProblems,
    )
)]
#[tracing::instrument(name = "api.download_url", skip_all, fields(caller = caller.label()))]
pub async fn download_url(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let (client, id, audit) =
        one_statement(&side, &req, AuditAction::DownloadUrl, &caller, &path).await?;
    let ids = vec![id.to_string()];
    let lookup = storage
        .presign_statement(&client, &id, side.download_url_ttl, SystemTime::now())
        .await;
    let (_, link) = audit.found(&ids, lookup).await?;
    audit.record(AuditOutcome::Ok, ids).await?;
    metrics.download_url_issued();
    Ok(HttpResponse::Ok().json(DownloadUrlDto {
        url: link.url,
        expires_at: rfc3339(link.expires_at),
    }))
}

/// Purges every statement of a client: every object version under its folder.
#[utoipa::path(
    delete,
    path = "/v1/clients/{client_id}/statements",
    tag = "read",
    params(("client_id" = String, Path, pattern = "^[A-Za-z0-9_-]{1,128}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many statements were removed (0 when none are left: idempotent)", body = DeletedDto),
        (status = 400, description = "`invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: only service callers with the `delete` scope (or in DELETE_CALLERS) delete", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`delete_refused`: S3 refused some deletes (Object Lock, legal hold, permissions)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such route (e.g. an empty client_id)", body = Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
#[tracing::instrument(name = "api.delete_statements", skip_all, fields(caller = caller.label()))]
pub async fn delete_statements(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<String>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
    lifecycle: web::Data<Lifecycle>,
) -> Result<HttpResponse, ApiError> {
    let client = client_id(&path)?;
    let deleted =
        detached_purge(caller, req, client.clone(), None, storage, side, lifecycle).await?;
    Ok(HttpResponse::Ok().json(DeletedDto {
        client_id: client.to_string(),
        deleted,
    }))
}

/// Purges one statement (every version of its object). 204 whether or not it was there.
#[utoipa::path(
    delete,
    path = "/v1/clients/{client_id}/statements/{statement_id}",
    tag = "read",
    params(StatementPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The statement is gone (idempotent)"),
        (status = 400, description = "`invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: only service callers with the `delete` scope (or in DELETE_CALLERS) delete", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`delete_refused`", body = Problem, content_type = "application/problem+json"),
        ReadProblems,
    )
)]
#[tracing::instrument(name = "api.delete_statement", skip_all, fields(caller = caller.label()))]
pub async fn delete_statement(
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
    lifecycle: web::Data<Lifecycle>,
) -> Result<HttpResponse, ApiError> {
    let (client, id) = (client_id(&path.0)?, statement_id(&path.1)?);
    detached_purge(caller, req, client, Some(id), storage, side, lifecycle).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// [`purge`] in a task of its own (tracked, so a graceful shutdown waits for it): a caller
/// that hangs up does not stop a purge half-way, nor leave its purge marker running.
async fn detached_purge(
    caller: Caller,
    req: HttpRequest,
    client: ClientId,
    only: Option<StatementId>,
    storage: web::Data<Storage>,
    side: web::Data<ReadSide>,
    lifecycle: web::Data<Lifecycle>,
) -> Result<usize, ApiError> {
    let tracked = lifecycle.work.track();
    let work = async move {
        let result = purge(&caller, &req, &client, only.as_ref(), &storage, &side).await;
        drop(tracked);
        result
    };
    actix_web::rt::spawn(tracing::Instrument::instrument(
        work,
        tracing::Span::current(),
    ))
    .await
    .unwrap_or_else(|_| {
        Err(ApiError::StorageUnavailable {
            retry_after: Duration::from_secs(5),
        })
    })
}

/// Authorise, announce (a purge of the whole client leaves a purge marker first, so that
/// stores in flight on any replica give way: docs/adr/0005-purge-wins-races.md), plan,
/// record, delete, mark done. The event naming what is about to go is durable before
/// anything is removed.
async fn purge(
    caller: &Caller,
    req: &HttpRequest,
    client: &ClientId,
    only: Option<&StatementId>,
    storage: &Storage,
    side: &ReadSide,
) -> Result<usize, ApiError> {
    let audit = Audit::new(&side.audit, req, AuditAction::Delete, caller, client).asking_for(only);
    authorise(
        &audit,
        caller,
        Scope::Delete,
        client,
        &only.into_iter().collect::<Vec<_>>(),
    )
    .await?;
    let marker = match only {
        Some(_) => None,
        None => match storage.begin_purge(client).await {
            Ok(marker) => Some(marker),
            Err(e) => {
                return audit
                    .fail(AuditOutcome::Failed, vec![], storage_unavailable(e))
                    .await;
            }
        },
    };
    let result = plan_record_delete(&audit, client, only, storage).await;
    if let Some(marker) = marker {
        storage.end_purge(marker).await;
    }
    result
}

/// Plan, record the intent (durable before anything is removed), delete, record the result:
/// what was really removed, `ok`, `partial` or `failed`. The purge runs detached from the
/// request, so the result is recorded even if the caller hung up in between.
async fn plan_record_delete(
    audit: &Audit<'_>,
    client: &ClientId,
    only: Option<&StatementId>,
    storage: &Storage,
) -> Result<usize, ApiError> {
    let plan = match storage.plan_purge(client, only).await {
        Ok(plan) => plan,
        Err(e) => {
            return audit
                .fail(AuditOutcome::Failed, vec![], storage_unavailable(e))
                .await;
        }
    };
    let ids = plan.statement_ids.iter().map(ToString::to_string).collect();
    audit.record(AuditOutcome::Intent, ids).await?;
    tracing::info!(
        statements = plan.statement_ids.len(),
        versions = plan.versions(),
        "purging"
    );
    let report = storage.purge_reporting(&plan).await;
    let deleted: Vec<String> = report.deleted.iter().map(ToString::to_string).collect();
    let count = deleted.len();
    let Some(failure) = report.failure else {
        audit.record(AuditOutcome::Ok, deleted).await?;
        return Ok(count);
    };
    let outcome = if deleted.is_empty() {
        AuditOutcome::Failed
    } else {
        AuditOutcome::Partial
    };
    let error = match failure {
        PurgeError::Refused { refused, total } => {
            tracing::error!(refused, total, "S3 refused part of a purge");
            ApiError::DeleteRefused
        }
        PurgeError::Storage(e) => storage_unavailable(e),
    };
    audit.fail(outcome, deleted, error).await
}

/// The read routes users may call (the public listener): the GETs only; DELETE answers 405.
pub fn user_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::single_method_resource(
        "/v1/clients/{client_id}/statements",
        "GET",
        web::get().to(list_statements),
    ))
    .service(super::single_method_resource(
        "/v1/clients/{client_id}/statements/{statement_id}",
        "GET",
        web::get().to(read_statement),
    ));
    get_only_routes(cfg);
}

/// `/content` and `/download-url`: GET only, on both listeners.
fn get_only_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::single_method_resource(
        "/v1/clients/{client_id}/statements/{statement_id}/content",
        "GET",
        web::get().to(statement_content),
    ))
    .service(super::single_method_resource(
        "/v1/clients/{client_id}/statements/{statement_id}/download-url",
        "GET",
        web::get().to(download_url),
    ));
}

/// The read routes. Any other method on them answers 405 with `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let not_allowed = |allow: &'static str| {
        web::to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) })
    };
    cfg.service(
        web::resource("/v1/clients/{client_id}/statements")
            .route(web::get().to(list_statements))
            .route(web::delete().to(delete_statements))
            .default_service(not_allowed("GET, DELETE")),
    )
    .service(
        web::resource("/v1/clients/{client_id}/statements/{statement_id}")
            .route(web::get().to(read_statement))
            .route(web::delete().to(delete_statement))
            .default_service(not_allowed("GET, DELETE")),
    );
    get_only_routes(cfg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_bounds_and_cursors() {
        assert_eq!(list_query("").ok(), Some((50, None)));
        assert_eq!(list_query("limit=1").ok(), Some((1, None)));
        assert_eq!(list_query("limit=100&x=1").ok(), Some((100, None)));
        for bad in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=abc",
            "cursor=zz",
            "cursor=c",
        ] {
            assert!(list_query(bad).is_err(), "{bad}");
        }
        let cursor = encode_cursor("x-0123.pdf");
        assert_eq!(
            list_query(&format!("cursor={cursor}")).ok(),
            Some((50, StatementId::parse("x-0123").ok()))
        );
    }

    /// Only the file name of a statement decodes: the longest real one is accepted, anything
    /// longer or shaped otherwise is refused.
    #[test]
    fn cursors_decode_only_to_statement_file_names() {
        let longest = format!("{}.pdf", "a".repeat(MAX_ID_LEN));
        assert!(decode_cursor(&encode_cursor(&longest)).is_ok());
        for forged in [
            format!("{}.pdf", "a".repeat(MAX_ID_LEN + 1)),
            "../aa_other/x.pdf".to_owned(),
            "x.txt".to_owned(),
            "x".to_owned(),
            ".pdf".to_owned(),
            "sub/x.pdf".to_owned(),
            "x\u{0}.pdf".to_owned(),
        ] {
            assert!(
                decode_cursor(&encode_cursor(&forged)).is_err(),
                "{forged:?}"
            );
        }
        assert!(decode_cursor("ff").is_err(), "not UTF-8");
        let upper = encode_cursor("x-0123.pdf").to_ascii_uppercase();
        assert!(decode_cursor(&upper).is_err(), "uppercase hex is not ours");
        // What schemathesis sent as schema-valid under the old, looser pattern.
        assert!(decode_cursor("0000000000").is_err());
    }
}
