//! The answer to a store: each report of Finpass's answer and what became of it, in one shape
//! for `POST /v1/statements`, a statement job and the job's webhook bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ReportOutcome, ReportResult};
use crate::domain::{ClientId, FailureCode, Prefix, ReportStatus, statement_id_of};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatementsResponse {
    pub client_id: String,
    pub request_id: Option<String>,
    pub reports: Vec<ReportDto>,
    pub summary: Summary,
}

/// One report (one FIP account) and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Report)]
pub struct ReportDto {
    /// Financial Information Provider, e.g. `HDFC-FIP`.
    pub fip_id: String,
    /// Masked account number, e.g. `XXXXXXXXXX1234`.
    pub account_number: String,
    pub status: ReportStatus,
    /// Present when `status` is `stored`: the id of the statement on the read routes
    /// (`/v1/clients/{client_id}/statements/{statement_id}`), stable for its lifetime.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false, pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub statement_id: Option<String>,
    /// Present when `status` is `stored`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false)]
    pub object: Option<ObjectDto>,
    /// Present when `status` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false)]
    pub error: Option<ErrorDto>,
}

/// Where the statement is stored, permanently.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = StoredObject)]
pub struct ObjectDto {
    pub bucket: String,
    pub key: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the stored bytes.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    pub etag: String,
}

/// Why a report was not stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ReportError)]
pub struct ErrorDto {
    pub code: FailureCode,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    pub stored: usize,
    pub pending: usize,
    pub failed: usize,
}

/// The answer for `outcomes` (in Finpass's order), with a summary of them.
pub fn render(
    client_id: &ClientId,
    prefix: &Prefix,
    request_id: Option<String>,
    outcomes: Vec<ReportOutcome>,
) -> StatementsResponse {
    let mut summary = Summary::default();
    let reports = outcomes
        .into_iter()
        .map(|o| {
            let mut statement_id = None;
            let (status, object, error) = match o.result {
                ReportResult::Stored(s) => {
                    summary.stored += 1;
                    statement_id = statement_id_of(&s.key, prefix, client_id);
                    if statement_id.is_none() {
                        // Excluded by the key scheme (a domain proptest checks it).
                        tracing::error!(key = %s.key, "stored key has no statement id");
                    }
                    let object = ObjectDto {
                        bucket: s.bucket,
                        key: s.key,
                        size_bytes: s.size_bytes,
                        sha256: s.sha256,
                        etag: s.etag,
                    };
                    (ReportStatus::Stored, Some(object), None)
                }
                ReportResult::Pending => {
                    summary.pending += 1;
                    (ReportStatus::Pending, None, None)
                }
                ReportResult::Failed(f) => {
                    summary.failed += 1;
                    (
                        ReportStatus::Failed,
                        None,
                        Some(ErrorDto {
                            code: f.code,
                            message: f.message,
                        }),
                    )
                }
            };
            ReportDto {
                fip_id: o.fip_id,
                account_number: o.account_number,
                status,
                statement_id: statement_id.map(|id| id.to_string()),
                object,
                error,
            }
        })
        .collect();
    StatementsResponse {
        client_id: client_id.to_string(),
        request_id,
        reports,
        summary,
    }
}
