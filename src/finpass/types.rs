//! The wire format of `fetch-statement-pdf`, and the typed result we hand to the pipeline.
//!
//! The envelope is read leniently (an error envelope has `data: null`, and we would rather
//! report a precise error than fail to parse), but `data` itself strictly: a successful answer
//! must carry a `reports` array, and each entry of it is read on its own, so one malformed
//! report cannot hide the others.

use std::time::Duration;

use serde::{Deserialize, Serialize, de::IntoDeserializer};
use serde_json::Value;

use super::FinpassOutcome;
use crate::link_policy::RawLink;

/// The envelope's `message_code` of the one "unknown client" answer (with HTTP 404).
pub(super) const CLIENT_NOT_FOUND: &str = "client_not_found";

/// Request body. `request_id` is omitted (not `null`) when absent.
#[derive(Debug, Serialize)]
pub(super) struct FetchRequest<'a> {
    pub client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
}

/// `{data, status_code, success, message, message_code}`. Everything is optional here; what a
/// successful answer must hold is checked by [`parse_data`].
#[derive(Debug, Deserialize)]
pub(super) struct Envelope {
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default)]
    pub message_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReportStatus {
    Ready,
    Pending,
    Failed,
    /// Anything Finpass may add later, or an entry that breaks the contract; reported as
    /// failed (`upstream_invalid_report`) rather than breaking the call.
    #[serde(other)]
    Unknown,
}

impl ReportStatus {
    fn from_wire(s: &str) -> Self {
        // The serde attributes above are the one home of the wire names.
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            s.into_deserializer();
        Self::deserialize(de).unwrap_or(Self::Unknown)
    }
}

/// One report as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct FinpassReport {
    pub fip_id: String,
    pub account_number: String,
    pub status: ReportStatus,
    pub link: Option<RawLink>,
}

/// Reads a successful answer's `data`: `null`, a missing `data`, or one without a `reports`
/// array is a broken answer, not "no reports" (which is `reports: []`).
pub(super) fn parse_data(data: Option<Value>) -> Result<Vec<FinpassReport>, FinpassError> {
    let Some(Value::Object(mut data)) = data else {
        return Err(FinpassError::InvalidResponse);
    };
    let Some(Value::Array(entries)) = data.remove("reports") else {
        return Err(FinpassError::InvalidResponse);
    };
    Ok(entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let parsed = parse_report(entry);
            if !parsed.invalid_fields.is_empty() {
                // Field names only: the values are PII or a signed link.
                tracing::warn!(
                    index,
                    fields = ?parsed.invalid_fields,
                    "Finpass sent a report entry with missing or invalid fields; it is answered failed"
                );
            }
            parsed.report
        })
        .collect())
}

/// One entry of `reports`, and the contract's fields it lacks or has in the wrong type.
#[derive(Debug)]
pub(super) struct ParsedReport {
    pub report: FinpassReport,
    pub invalid_fields: Vec<&'static str>,
}

/// Reads one entry of `reports` on its own. An entry without a non-empty `fip_id` and
/// `account_number` string, without a `status` string, or with a link that is not a string
/// becomes a report with `status: Unknown` and no link, keeping whichever ids it has (empty
/// otherwise); the pipeline answers it `failed`/`upstream_invalid_report`.
pub(super) fn parse_report(entry: &Value) -> ParsedReport {
    let mut invalid_fields = Vec::new();
    let mut id = |name: &'static str| {
        let value = entry.get(name).and_then(Value::as_str);
        if value.is_none_or(|v| v.trim().is_empty()) {
            invalid_fields.push(name);
        }
        value.unwrap_or_default().to_owned()
    };
    let fip_id = id("fip_id");
    let account_number = id("account_number");
    let status = match entry.get("status") {
        Some(Value::String(s)) => Some(ReportStatus::from_wire(s)),
        _ => {
            invalid_fields.push("status");
            None
        }
    };
    let link = match entry.get("statement_report_link") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) if l.is_empty() => None,
        Some(Value::String(l)) => Some(RawLink::new(l.clone())),
        Some(_) => {
            invalid_fields.push("statement_report_link");
            None
        }
    };
    let report = match status {
        Some(status) if invalid_fields.is_empty() => FinpassReport {
            fip_id,
            account_number,
            status,
            link,
        },
        _ => FinpassReport {
            fip_id,
            account_number,
            status: ReportStatus::Unknown,
            link: None,
        },
    };
    ParsedReport {
        report,
        invalid_fields,
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FinpassError {
    #[error("Finpass does not know this client")]
    ClientNotFound,
    /// A 404 that is not Finpass's `client_not_found` envelope.
    #[error(
        "Finpass answered HTTP 404 without its client_not_found answer (wrong FINPASS_BASE_URL, or a proxy's page)"
    )]
    EndpointNotFound,
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
    /// The answer's `data.client_id` is not the client asked for: its reports may be another
    /// customer's, so none is stored. The message names neither id.
    #[error("Finpass answered for another client than the one asked for; nothing was stored")]
    ClientMismatch,
}

impl FinpassError {
    pub(super) fn is_retryable(&self) -> bool {
        self.outcome().is_retryable()
    }

    /// The metric outcome of an attempt that ended in this error.
    pub fn outcome(&self) -> FinpassOutcome {
        match self {
            Self::ClientNotFound => FinpassOutcome::ClientNotFound,
            Self::EndpointNotFound => FinpassOutcome::EndpointNotFound,
            Self::Unauthorized => FinpassOutcome::Unauthorized,
            Self::RateLimited { .. } => FinpassOutcome::RateLimited,
            Self::Server { .. } => FinpassOutcome::ServerError,
            Self::Rejected { .. } => FinpassOutcome::ClientError,
            Self::Timeout => FinpassOutcome::Timeout,
            Self::Transport(_) => FinpassOutcome::TransportError,
            Self::InvalidResponse => FinpassOutcome::InvalidResponse,
            Self::ClientMismatch => FinpassOutcome::ClientMismatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn ids(r: &FinpassReport) -> (&str, &str, ReportStatus, bool) {
        (
            r.fip_id.as_str(),
            r.account_number.as_str(),
            r.status,
            r.link.is_some(),
        )
    }

    #[test]
    fn a_valid_entry_is_read_as_is() {
        let p = parse_report(&json!({
            "fip_id": "HDFC-FIP", "account_number": "XX1234", "status": "READY",
            "statement_report_link": "https://b.s3.amazonaws.com/x.pdf?X-Amz-Signature=1"
        }));
        assert!(p.invalid_fields.is_empty());
        assert_eq!(
            ids(&p.report),
            ("HDFC-FIP", "XX1234", ReportStatus::Ready, true)
        );
        let p = parse_report(&json!({
            "fip_id": "HDFC-FIP", "account_number": "XX1234", "status": "PENDING",
            "statement_report_link": null
        }));
        assert!(p.invalid_fields.is_empty());
        assert_eq!(
            ids(&p.report),
            ("HDFC-FIP", "XX1234", ReportStatus::Pending, false)
        );
        // A status Finpass may add later is not a broken entry.
        let p = parse_report(&json!({"fip_id": "A", "account_number": "B", "status": "ARCHIVED"}));
        assert!(p.invalid_fields.is_empty());
        assert_eq!(p.report.status, ReportStatus::Unknown);
    }

    #[test]
    fn an_invalid_entry_becomes_an_unknown_report_without_a_link() {
        let link = "https://b.s3.amazonaws.com/x.pdf";
        for (entry, want, bad) in [
            (
                json!({"fip_id": null, "account_number": "XX1", "status": "READY", "statement_report_link": link}),
                ("", "XX1"),
                vec!["fip_id"],
            ),
            (
                json!({"fip_id": "ICICI", "status": "READY", "statement_report_link": link}),
                ("ICICI", ""),
                vec!["account_number"],
            ),
            (
                json!({"fip_id": "AXIS", "account_number": "XX3", "status": null, "statement_report_link": link}),
                ("AXIS", "XX3"),
                vec!["status"],
            ),
            (
                json!({"fip_id": "AXIS", "account_number": "XX3", "status": 1}),
                ("AXIS", "XX3"),
                vec!["status"],
            ),
            (
                json!({"fip_id": "AXIS", "account_number": "XX3", "status": "READY", "statement_report_link": 7}),
                ("AXIS", "XX3"),
                vec!["statement_report_link"],
            ),
            (
                json!({"fip_id": " ", "account_number": 12, "status": "READY"}),
                (" ", ""),
                vec!["fip_id", "account_number"],
            ),
            (
                json!(null),
                ("", ""),
                vec!["fip_id", "account_number", "status"],
            ),
            (
                json!("READY"),
                ("", ""),
                vec!["fip_id", "account_number", "status"],
            ),
        ] {
            let p = parse_report(&entry);
            assert_eq!(p.invalid_fields, bad, "{entry}");
            assert_eq!(
                ids(&p.report),
                (want.0, want.1, ReportStatus::Unknown, false),
                "{entry}"
            );
        }
    }

    #[test]
    fn data_must_hold_a_reports_array() {
        for data in [
            None,
            Some(json!(null)),
            Some(json!({})),
            Some(json!({"reports": null})),
            Some(json!({"reports": {}})),
            Some(json!([])),
        ] {
            assert!(
                matches!(parse_data(data.clone()), Err(FinpassError::InvalidResponse)),
                "{data:?}"
            );
        }
        let reports = parse_data(Some(json!({"client_id": "c", "reports": []}))).expect("empty");
        assert!(reports.is_empty());
        let reports = parse_data(Some(json!({"reports": [
            {"fip_id": "A", "account_number": "1", "status": "FAILED"},
            {"fip_id": null},
            {"fip_id": "B", "account_number": "2", "status": "PENDING"},
        ]})))
        .expect("reports");
        let statuses: Vec<_> = reports.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                ReportStatus::Failed,
                ReportStatus::Unknown,
                ReportStatus::Pending
            ]
        );
    }

    #[test]
    fn every_error_maps_to_a_listed_outcome() {
        for e in [
            FinpassError::ClientNotFound,
            FinpassError::EndpointNotFound,
            FinpassError::Unauthorized,
            FinpassError::RateLimited { retry_after: None },
            FinpassError::Server { status: 500 },
            FinpassError::Rejected { status: 400 },
            FinpassError::Timeout,
            FinpassError::Transport("x".into()),
            FinpassError::InvalidResponse,
        ] {
            assert!(FinpassOutcome::ALL.contains(&e.outcome()), "{e}");
            assert_eq!(e.is_retryable(), e.outcome().is_retryable());
        }
        assert!(!FinpassError::EndpointNotFound.is_retryable());
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            "\\PC{0,12}".prop_map(Value::String),
            prop_oneof![Just("READY"), Just("PENDING"), Just("FAILED")].prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("fip_id".to_owned()),
                        Just("account_number".to_owned()),
                        Just("status".to_owned()),
                        Just("statement_report_link".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..5,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_entry_is_a_report_and_invalid_ones_are_unknown(entry in arbitrary_json()) {
            let p = parse_report(&entry);
            if !p.invalid_fields.is_empty() {
                prop_assert_eq!(p.report.status, ReportStatus::Unknown);
                prop_assert!(p.report.link.is_none());
            }
        }

        #[test]
        fn any_data_parses_or_is_invalid_response(data in arbitrary_json()) {
            let n = data.get("reports").and_then(Value::as_array).map(Vec::len);
            match parse_data(Some(data)) {
                Ok(reports) => prop_assert_eq!(Some(reports.len()), n),
                Err(e) => prop_assert!(matches!(e, FinpassError::InvalidResponse)),
            }
        }
    }
}
