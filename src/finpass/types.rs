//! The wire format of `fetch-statement-pdf`, and the typed result we hand to the pipeline.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::link_policy::RawLink;

/// Request body. `request_id` is omitted (not `null`) when absent.
#[derive(Debug, Serialize)]
pub(super) struct FetchRequest<'a> {
    pub client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
}

/// `{data, status_code, success, message, message_code}`. Everything is optional: an error
/// envelope has `data: null`, and we would rather report a precise error than fail to parse.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope {
    pub data: Option<Data>,
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default)]
    pub message_code: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Data {
    #[serde(default)]
    pub reports: Vec<WireReport>,
}

#[derive(Debug, Deserialize)]
pub(super) struct WireReport {
    pub fip_id: String,
    pub account_number: String,
    pub status: ReportStatus,
    #[serde(default)]
    pub statement_report_link: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReportStatus {
    Ready,
    Pending,
    Failed,
    /// Anything Finpass may add later; reported as failed rather than breaking the call.
    #[serde(other)]
    Unknown,
}

/// One report as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct FinpassReport {
    pub fip_id: String,
    pub account_number: String,
    pub status: ReportStatus,
    pub link: Option<RawLink>,
}

impl From<WireReport> for FinpassReport {
    fn from(w: WireReport) -> Self {
        Self {
            fip_id: w.fip_id,
            account_number: w.account_number,
            status: w.status,
            link: w
                .statement_report_link
                .filter(|l| !l.is_empty())
                .map(RawLink::new),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FinpassError {
    #[error("Finpass does not know this client")]
    ClientNotFound,
    #[error("Finpass rejected the gateway's credentials")]
    Unauthorized,
    #[error("Finpass is rate limiting the gateway")]
    RateLimited { retry_after: Option<Duration> },
    #[error("Finpass answered HTTP {status}")]
    Server { status: u16 },
    #[error("Finpass rejected the request with HTTP {status}")]
    Rejected { status: u16 },
    #[error("Finpass did not answer in time")]
    Timeout,
    #[error("could not reach Finpass: {0}")]
    Transport(String),
    #[error("Finpass sent a response the gateway cannot read")]
    InvalidResponse,
}

impl FinpassError {
    pub(super) fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Server { .. } | Self::Timeout | Self::Transport(_)
        )
    }

    /// Bounded metric label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::ClientNotFound => "client_not_found",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server_error",
            Self::Rejected { .. } => "client_error",
            Self::Timeout => "timeout",
            Self::Transport(_) => "transport_error",
            Self::InvalidResponse => "invalid_response",
        }
    }
}
