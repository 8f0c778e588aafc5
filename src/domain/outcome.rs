//! What became of a report: its status and, when it failed, why.
//!
//! One home for these codes. The pipeline produces them, the API returns them (the OpenAPI
//! lists them as an enum), metrics label with them and the README documents them; the compiler
//! keeps all four in step, and tests check the README and metrics against [`FailureCode::ALL`].

use serde::{Deserialize, Serialize};

/// A report's status in a `POST /v1/statements` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Stored,
    Pending,
    Failed,
}

impl ReportStatus {
    pub const ALL: [Self; 3] = [Self::Stored, Self::Pending, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Pending => "pending",
            Self::Failed => "failed",
        }
    }
}

/// Why a report was not stored (`error.code` of a failed report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// Finpass reported the report as FAILED.
    UpstreamReportFailed,
    /// Finpass sent a report the gateway cannot use (unknown status, READY without a link,
    /// missing fields).
    UpstreamInvalidReport,
    /// The link is not allowed by the link policy (scheme, host, port, forbidden address).
    LinkRejected,
    /// The link expired and fresh links from Finpass did not help.
    LinkExpired,
    /// The link answered an error status, or the transfer broke, after retries.
    DownloadFailed,
    /// The link stopped sending data for longer than the read timeout.
    DownloadTimeout,
    /// The link served something that does not start with `%PDF-`.
    NotAPdf,
    /// The report is larger than `MAX_REPORT_BYTES`.
    TooLarge,
    /// Writing to S3 failed; nothing partial was left behind.
    StorageFailed,
    /// An object already at the statement's key names another client, FIP or source version:
    /// never answered as this report.
    StorageConflict,
    /// Past `MAX_REPORTS_PER_CALL` in one Finpass answer.
    ReportLimit,
    /// A purge of the client's statements began while this report was being stored: what
    /// was stored was removed again (the purge wins).
    Purged,
    /// A bug or an internal limit; see the logs.
    InternalError,
}

impl FailureCode {
    pub const ALL: [Self; 13] = [
        Self::UpstreamReportFailed,
        Self::UpstreamInvalidReport,
        Self::LinkRejected,
        Self::LinkExpired,
        Self::DownloadFailed,
        Self::DownloadTimeout,
        Self::NotAPdf,
        Self::TooLarge,
        Self::StorageFailed,
        Self::StorageConflict,
        Self::ReportLimit,
        Self::Purged,
        Self::InternalError,
    ];

    /// The wire form (serde's snake_case), for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpstreamReportFailed => "upstream_report_failed",
            Self::UpstreamInvalidReport => "upstream_invalid_report",
            Self::LinkRejected => "link_rejected",
            Self::LinkExpired => "link_expired",
            Self::DownloadFailed => "download_failed",
            Self::DownloadTimeout => "download_timeout",
            Self::NotAPdf => "not_a_pdf",
            Self::TooLarge => "too_large",
            Self::StorageFailed => "storage_failed",
            Self::StorageConflict => "storage_conflict",
            Self::ReportLimit => "report_limit",
            Self::Purged => "purged",
            Self::InternalError => "internal_error",
        }
    }

    /// A fresh link from a new Finpass call may heal this failure.
    pub fn healed_by_fresh_link(self) -> bool {
        self == Self::LinkExpired
    }
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_is_the_wire_form() {
        for code in FailureCode::ALL {
            assert_eq!(
                serde_json::to_value(code).expect("serialise"),
                serde_json::Value::from(code.as_str())
            );
        }
        for status in ReportStatus::ALL {
            assert_eq!(
                serde_json::to_value(status).expect("serialise"),
                serde_json::Value::from(status.as_str())
            );
        }
    }

    /// The README's failure-code table lists exactly the codes of the enum.
    #[test]
    fn readme_lists_every_failure_code() {
        let readme = include_str!("../../README.md");
        let table: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| failure code |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        let all: Vec<&str> = FailureCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(table, all, "README failure-code table");
    }
}
