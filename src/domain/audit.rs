//! What an audit event says happened: the action and its outcome. One home for both, so the
//! audit trail, metrics and the README agree.

use serde::Serialize;

/// The API action an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Store,
    List,
    Read,
    Content,
    DownloadUrl,
    Delete,
    /// `POST /v1/statement-jobs`.
    JobCreate,
    /// `GET /v1/statement-jobs/{job_id}`.
    JobRead,
    /// `DELETE /v1/statement-jobs/{job_id}`.
    JobCancel,
}

impl AuditAction {
    pub const ALL: [Self; 9] = [
        Self::Store,
        Self::List,
        Self::Read,
        Self::Content,
        Self::DownloadUrl,
        Self::Delete,
        Self::JobCreate,
        Self::JobRead,
        Self::JobCancel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::List => "list",
            Self::Read => "read",
            Self::Content => "content",
            Self::DownloadUrl => "download_url",
            Self::Delete => "delete",
            Self::JobCreate => "job_create",
            Self::JobRead => "job_read",
            Self::JobCancel => "job_cancel",
        }
    }
}

/// What the gateway decided. The event is durable before the answer is sent. A delete records
/// two events: `intent` (what it is about to remove, durable before anything is removed) and
/// its result (`ok`, `partial` or `failed`, naming what was really removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Ok,
    /// `If-None-Match` matched: no bytes served.
    NotModified,
    NotFound,
    /// The caller may not do this (another client's statements, or a delete by a caller not in
    /// `DELETE_CALLERS`).
    Forbidden,
    /// The action failed on our side or upstream (Finpass, S3).
    Failed,
    /// A delete is about to remove the statements named (recorded before anything is).
    Intent,
    /// A delete removed some of what it meant to (S3 refused the rest: Object Lock, legal
    /// hold, permissions); the statements named are the ones really removed.
    Partial,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotModified => "not_modified",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Failed => "failed",
            Self::Intent => "intent",
            Self::Partial => "partial",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_is_the_wire_form() {
        for a in AuditAction::ALL {
            assert_eq!(
                serde_json::to_value(a).expect("serialise"),
                serde_json::Value::from(a.as_str())
            );
        }
        for o in [
            AuditOutcome::Ok,
            AuditOutcome::NotModified,
            AuditOutcome::NotFound,
            AuditOutcome::Forbidden,
            AuditOutcome::Failed,
            AuditOutcome::Intent,
            AuditOutcome::Partial,
        ] {
            assert_eq!(
                serde_json::to_value(o).expect("serialise"),
                serde_json::Value::from(o.as_str())
            );
        }
    }
}
