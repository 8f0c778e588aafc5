//! The bookkeeping of one call: what became of each report, across PENDING polls and link
//! refreshes.
//!
//! The answer has one entry per entry of Finpass's latest `reports` array, in its order, never
//! merged: two statements of one account are two entries. Work that involved a transfer is
//! remembered by [`ReportIdentity`] (FIP id + the link's host and path, never the masked
//! account number nor the signed query) so a later poll reuses a settled result instead of
//! fetching again. Reports without a usable link (PENDING, FAILED, invalid) cost nothing to
//! evaluate and are simply evaluated again on each answer.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    domain::{FailureCode, SourceLocation},
    finpass::FinpassReport,
    link_policy::ReportLink,
    storage::StoredObject,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportResult {
    Stored(StoredObject),
    Pending,
    Failed(Failure),
}

impl ReportResult {
    pub fn failed(code: FailureCode, message: impl Into<String>) -> Self {
        Self::Failed(Failure {
            code,
            message: message.into(),
        })
    }

    /// Settled results are kept; the others are worked on again on the next Finpass answer
    /// (PENDING ones, and expired links, which only a fresh link heals).
    fn is_settled(&self) -> bool {
        match self {
            Self::Stored(_) => true,
            Self::Pending => false,
            Self::Failed(f) => !f.code.healed_by_fresh_link(),
        }
    }

    fn needs_fresh_link(&self) -> bool {
        matches!(self, Self::Failed(f) if f.code.healed_by_fresh_link())
    }
}

/// Which report a result belongs to across Finpass answers: the FIP and the link's source.
/// A fresh link for the same report differs only in its query, so it has the same identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReportIdentity {
    fip_id: String,
    source: SourceLocation,
}

impl ReportIdentity {
    /// The identity of a report whose link passed the policy. Reports without a usable link
    /// have none: there is nothing to remember for them.
    pub fn new(fip_id: &str, link: &ReportLink) -> Self {
        Self {
            fip_id: fip_id.to_owned(),
            source: source_of(link),
        }
    }

    pub fn source(&self) -> &SourceLocation {
        &self.source
    }
}

/// Where a link's bytes come from.
pub fn source_of(link: &ReportLink) -> SourceLocation {
    let (host, path) = link.location();
    SourceLocation { host, path }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportOutcome {
    pub fip_id: String,
    pub account_number: String,
    pub result: ReportResult,
}

impl ReportOutcome {
    pub fn of(report: &FinpassReport, result: ReportResult) -> Self {
        Self {
            fip_id: report.fip_id.clone(),
            account_number: report.account_number.clone(),
            result,
        }
    }
}

/// The outcomes of one call, or of a job's polls so far (serde: a job record keeps what is
/// settled, so a later poll never re-opens a stored report's link).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(from = "SavedOutcomes", into = "SavedOutcomes")]
pub struct CallOutcomes {
    /// The latest answer's entries, in Finpass's order.
    latest: Vec<ReportOutcome>,
    /// Results that another attempt would not change, by identity.
    settled: HashMap<ReportIdentity, ReportResult>,
    answered: bool,
}

impl CallOutcomes {
    /// True until Finpass has answered once.
    pub fn is_empty(&self) -> bool {
        !self.answered
    }

    /// The settled result of the report with this identity, if an earlier answer produced
    /// one.
    pub fn settled(&self, id: &ReportIdentity) -> Option<ReportResult> {
        self.settled.get(id).cloned()
    }

    /// Records one Finpass answer's results, entry for entry (the answer replaces the
    /// previous one; settled results are remembered by identity).
    pub fn record(&mut self, round: Vec<(Option<ReportIdentity>, ReportOutcome)>) {
        self.answered = true;
        self.latest = round
            .into_iter()
            .map(|(id, outcome)| {
                if let Some(id) = id.filter(|_| outcome.result.is_settled()) {
                    self.settled.insert(id, outcome.result.clone());
                }
                outcome
            })
            .collect();
    }

    /// Some report failed only because its link expired.
    pub fn needs_fresh_links(&self) -> bool {
        self.latest.iter().any(|o| o.result.needs_fresh_link())
    }

    /// Some report is still PENDING at Finpass.
    pub fn pending(&self) -> bool {
        self.latest
            .iter()
            .any(|o| o.result == ReportResult::Pending)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ReportOutcome> {
        self.latest.iter()
    }

    pub fn into_vec(self) -> Vec<ReportOutcome> {
        self.latest
    }
}

/// [`CallOutcomes`] as JSON has it: a map keyed by a struct is not JSON, so the settled
/// results are a list of pairs.
#[derive(Serialize, Deserialize)]
struct SavedOutcomes {
    latest: Vec<ReportOutcome>,
    settled: Vec<(ReportIdentity, ReportResult)>,
    answered: bool,
}

impl From<SavedOutcomes> for CallOutcomes {
    fn from(s: SavedOutcomes) -> Self {
        Self {
            latest: s.latest,
            settled: s.settled.into_iter().collect(),
            answered: s.answered,
        }
    }
}

impl From<CallOutcomes> for SavedOutcomes {
    fn from(c: CallOutcomes) -> Self {
        Self {
            latest: c.latest,
            settled: c.settled.into_iter().collect(),
            answered: c.answered,
        }
    }
}

/// The `report_limit` result of an entry past the per-call cap.
pub fn over_limit() -> ReportResult {
    ReportResult::failed(
        FailureCode::ReportLimit,
        "the call returned more reports than MAX_REPORTS_PER_CALL",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        finpass::ReportStatus,
        link_policy::{HostPattern, LinkPolicy, RawLink},
    };

    fn link(url: &str) -> ReportLink {
        let policy = LinkPolicy::new(
            vec![
                HostPattern::parse("*.example.com").expect("pattern"),
                HostPattern::parse("*.example.com:8443").expect("pattern"),
            ],
            false,
        );
        policy
            .check(&RawLink::new(url.to_owned()))
            .expect("allowed")
    }

    fn id(fip: &str, url: &str) -> ReportIdentity {
        ReportIdentity::new(fip, &link(url))
    }

    fn report(fip: &str) -> FinpassReport {
        FinpassReport {
            fip_id: fip.into(),
            account_number: "X1".into(),
            status: ReportStatus::Ready,
            link: None,
        }
    }

    fn stored(key: &str) -> ReportResult {
        ReportResult::Stored(StoredObject {
            bucket: "b".into(),
            key: key.into(),
            size_bytes: 1,
            sha256: "0".repeat(64),
            etag: "e".into(),
        })
    }

    fn expired() -> ReportResult {
        ReportResult::failed(FailureCode::LinkExpired, "expired")
    }

    fn entry(
        id: Option<ReportIdentity>,
        fip: &str,
        result: ReportResult,
    ) -> (Option<ReportIdentity>, ReportOutcome) {
        (id, ReportOutcome::of(&report(fip), result))
    }

    #[test]
    fn identity_is_the_fip_and_the_links_source_never_the_query() {
        let a = id("F", "https://b.example.com/p/1.pdf?X-Amz-Signature=1");
        assert_eq!(
            a,
            id("F", "https://B.example.com/p/1.pdf?X-Amz-Signature=2"),
            "a fresh link"
        );
        for other in [
            id("F", "https://b.example.com/p/2.pdf"),
            id("F", "https://c.example.com/p/1.pdf"),
            id("F", "https://b.example.com:8443/p/1.pdf"),
            id("G", "https://b.example.com/p/1.pdf"),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn two_statements_of_one_account_stay_two_entries() {
        let april = id("F", "https://b.example.com/april.pdf");
        let may = id("F", "https://b.example.com/may.pdf");
        let mut call = CallOutcomes::default();
        call.record(vec![
            entry(Some(april.clone()), "F", stored("k1")),
            entry(Some(may.clone()), "F", stored("k2")),
        ]);
        let keys: Vec<_> = call
            .iter()
            .map(|o| match &o.result {
                ReportResult::Stored(s) => s.key.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(call.settled(&may), Some(stored("k2")));
        assert_eq!(call.settled(&april), Some(stored("k1")));
    }

    #[test]
    fn settled_means_another_attempt_would_not_change_it() {
        let done = id("A", "https://h.example.com/a.pdf");
        let gone = id("B", "https://h.example.com/b.pdf");
        let html = id("C", "https://h.example.com/c.pdf");
        let mut call = CallOutcomes::default();
        assert!(call.is_empty());
        call.record(vec![
            entry(Some(done.clone()), "A", stored("k")),
            entry(Some(gone.clone()), "B", expired()),
            entry(
                Some(html.clone()),
                "C",
                ReportResult::failed(FailureCode::NotAPdf, "html"),
            ),
        ]);
        assert!(!call.is_empty());
        assert_eq!(call.settled(&done), Some(stored("k")));
        assert_eq!(call.settled(&gone), None, "an expired link is retried");
        assert!(call.settled(&html).is_some());
        assert!(call.needs_fresh_links() && !call.pending());
    }

    #[test]
    fn outcomes_survive_a_json_round_trip() {
        let done = id("A", "https://h.example.com/a.pdf");
        let mut call = CallOutcomes::default();
        call.record(vec![
            entry(Some(done.clone()), "A", stored("k")),
            entry(None, "B", ReportResult::Pending),
        ]);
        let json = serde_json::to_string(&call).expect("serialise");
        let back: CallOutcomes = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back.settled(&done), Some(stored("k")));
        assert!(back.pending() && !back.is_empty());
        assert_eq!(back.iter().count(), 2);
    }

    #[test]
    fn each_answer_replaces_the_previous_one_entry_for_entry() {
        let mut call = CallOutcomes::default();
        call.record(vec![entry(None, "A", ReportResult::Pending)]);
        assert!(call.pending());
        call.record(vec![entry(
            Some(id("A", "https://h.example.com/a.pdf")),
            "A",
            stored("k"),
        )]);
        assert!(!call.pending());
        assert_eq!(
            call.iter().count(),
            1,
            "the PENDING entry became the stored one"
        );
        call.record(vec![entry(None, "A", over_limit())]);
        assert_eq!(call.iter().count(), 1);
    }
}
