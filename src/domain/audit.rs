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
}

impl AuditAction {
    pub const ALL: [Self; 6] = [
        Self::Store,
        Self::List,
        Self::Read,
        Self::Content,
        Self::DownloadUrl,
        Self::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::List => "list",
            Self::Read => "read",
            Self::Content => "content",
            Self::DownloadUrl => "download_url",
            Self::Delete => "delete",
        }
    }
}

/// What the gateway decided. The event is durable before the answer is sent (and, for a
/// delete, before anything is removed), so `ok` means "served" or "authorised and carried out
/// next"; a delete that then fails answers 5xx and is safe to repeat.
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
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotModified => "not_modified",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Failed => "failed",
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
        ] {
            assert_eq!(
                serde_json::to_value(o).expect("serialise"),
                serde_json::Value::from(o.as_str())
            );
        }
    }
}
