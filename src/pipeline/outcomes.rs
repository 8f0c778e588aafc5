//! The bookkeeping of one call: what became of each report so far, across PENDING polls and
//! link refreshes.
//!
//! Finpass answers the same list again on every poll; a report is matched to its earlier
//! outcome by [`ReportIdentity`], the single place that decides "same report". The answer
//! keeps Finpass's order.

use crate::{domain::FailureCode, finpass::FinpassReport, storage::StoredObject};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Which report of Finpass's list an outcome belongs to. Today (fip_id, masked account
/// number): stable across Finpass calls, which is what matching polls needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReportIdentity {
    fip_id: String,
    account_number: String,
}

impl ReportIdentity {
    pub fn of(report: &FinpassReport) -> Self {
        Self {
            fip_id: report.fip_id.clone(),
            account_number: report.account_number.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReportOutcome {
    pub fip_id: String,
    pub account_number: String,
    pub result: ReportResult,
}

impl ReportOutcome {
    fn identity(&self) -> ReportIdentity {
        ReportIdentity {
            fip_id: self.fip_id.clone(),
            account_number: self.account_number.clone(),
        }
    }
}

/// The outcomes of one call, in Finpass's order.
#[derive(Debug, Default)]
pub struct CallOutcomes {
    outcomes: Vec<ReportOutcome>,
}

impl CallOutcomes {
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// True when this report already has a result that another attempt would not change.
    pub fn is_settled(&self, report: &FinpassReport) -> bool {
        let id = ReportIdentity::of(report);
        self.outcomes
            .iter()
            .any(|o| o.identity() == id && o.result.is_settled())
    }

    /// Records new results: a report seen before gets its new result in place (keeping
    /// Finpass's order), a new one is appended.
    pub fn merge(&mut self, done: impl IntoIterator<Item = ReportOutcome>) {
        for o in done {
            let id = o.identity();
            match self.outcomes.iter_mut().find(|x| x.identity() == id) {
                Some(slot) => *slot = o,
                None => self.outcomes.push(o),
            }
        }
    }

    /// Reports past the per-call cap are failed `report_limit`, unless already known.
    pub fn over_limit(&mut self, excess: Vec<FinpassReport>) {
        for r in excess {
            let id = ReportIdentity::of(&r);
            if !self.outcomes.iter().any(|o| o.identity() == id) {
                self.outcomes.push(ReportOutcome {
                    fip_id: r.fip_id,
                    account_number: r.account_number,
                    result: ReportResult::failed(
                        FailureCode::ReportLimit,
                        "the call returned more reports than MAX_REPORTS_PER_CALL",
                    ),
                });
            }
        }
    }

    /// Some report failed only because its link expired.
    pub fn needs_fresh_links(&self) -> bool {
        self.outcomes.iter().any(|o| o.result.needs_fresh_link())
    }

    /// Some report is still PENDING at Finpass.
    pub fn pending(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| o.result == ReportResult::Pending)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ReportOutcome> {
        self.outcomes.iter()
    }

    pub fn into_vec(self) -> Vec<ReportOutcome> {
        self.outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finpass::ReportStatus;

    fn report(fip: &str, account: &str) -> FinpassReport {
        FinpassReport {
            fip_id: fip.into(),
            account_number: account.into(),
            status: ReportStatus::Pending,
            link: None,
        }
    }

    fn outcome(fip: &str, account: &str, result: ReportResult) -> ReportOutcome {
        ReportOutcome {
            fip_id: fip.into(),
            account_number: account.into(),
            result,
        }
    }

    fn stored() -> ReportResult {
        ReportResult::Stored(StoredObject {
            bucket: "b".into(),
            key: "k".into(),
            size_bytes: 1,
            sha256: "0".repeat(64),
            etag: "e".into(),
        })
    }

    fn expired() -> ReportResult {
        ReportResult::failed(FailureCode::LinkExpired, "expired")
    }

    #[test]
    fn merge_replaces_in_place_and_appends_new_reports() {
        let mut call = CallOutcomes::default();
        call.merge([
            outcome("A", "1", ReportResult::Pending),
            outcome("B", "2", expired()),
        ]);
        call.merge([outcome("C", "3", stored()), outcome("A", "1", stored())]);
        let order: Vec<(&str, bool)> = call
            .iter()
            .map(|o| {
                (
                    o.fip_id.as_str(),
                    matches!(o.result, ReportResult::Stored(_)),
                )
            })
            .collect();
        assert_eq!(order, [("A", true), ("B", false), ("C", true)]);
    }

    #[test]
    fn settled_means_another_attempt_would_not_change_it() {
        let mut call = CallOutcomes::default();
        call.merge([
            outcome("stored", "1", stored()),
            outcome("pending", "1", ReportResult::Pending),
            outcome("expired", "1", expired()),
            outcome(
                "failed",
                "1",
                ReportResult::failed(FailureCode::NotAPdf, "html"),
            ),
        ]);
        assert!(call.is_settled(&report("stored", "1")));
        assert!(!call.is_settled(&report("pending", "1")));
        assert!(!call.is_settled(&report("expired", "1")));
        assert!(call.is_settled(&report("failed", "1")));
        assert!(!call.is_settled(&report("unknown", "1")));
        assert!(
            !call.is_settled(&report("stored", "2")),
            "account is part of the identity"
        );
    }

    #[test]
    fn fresh_links_and_pending_are_asked_for_separately() {
        let mut call = CallOutcomes::default();
        assert!(!call.needs_fresh_links() && !call.pending());
        call.merge([outcome("A", "1", expired())]);
        assert!(call.needs_fresh_links() && !call.pending());
        call.merge([outcome("A", "1", ReportResult::Pending)]);
        assert!(!call.needs_fresh_links() && call.pending());
    }

    #[test]
    fn reports_over_the_limit_fail_unless_already_known() {
        let mut call = CallOutcomes::default();
        call.merge([outcome("A", "1", stored())]);
        call.over_limit(vec![report("A", "1"), report("B", "2")]);
        let results: Vec<_> = call.iter().map(|o| o.result.clone()).collect();
        assert_eq!(results[0], stored());
        assert!(
            matches!(&results[1], ReportResult::Failed(f) if f.code == FailureCode::ReportLimit)
        );
        assert_eq!(results.len(), 2);
    }
}
