//! `fetch_and_store`: one caller request, end to end.
//!
//! Ask Finpass for the client's reports; for each READY one (a bounded number at a time)
//! check the link, HEAD the permanent key, and otherwise download and store it. Reports whose
//! link expired are retried with fresh links from a new Finpass call (bounded); while reports
//! are PENDING and the caller asked to wait, Finpass is polled with backoff. A report's failure
//! is data in the response, never a failure of the call.
//!
//! Everything is bounded by the call's deadline (`CALL_DEADLINE_MS`): the Finpass calls, the
//! polling, and the transfers themselves, which run detached (single flight) and so would
//! not be ended by the caller going away. At the deadline the call answers with what it has;
//! a transfer still running fails `download_timeout` and cleans up after itself (upload
//! aborted, staging key deleted), within [`CLEANUP_GRACE`].
//!
//! Concerns live in their own modules: [`outcomes`] (the call's bookkeeping),
//! [`single_flight`] (one transfer per key per process) and [`transfer`] (the bytes).

pub mod answer;
mod outcomes;
mod single_flight;
mod transfer;

use std::{
    rc::Rc,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::{StreamExt, stream};
use tokio::{
    sync::Semaphore,
    time::{Instant, timeout_at},
};

pub use outcomes::{CallOutcomes, Failure, ReportIdentity, ReportOutcome, ReportResult};
pub use single_flight::{FlightError, Role, SingleFlight};
pub use transfer::SeenVersions;

use crate::{
    domain::{
        ClientId, FailureCode, ReportStatus as Status, RequestId, RetainUntil, SourceLocation,
    },
    download::{DownloadError, Downloader},
    finpass::{FinpassClient, FinpassError, FinpassReport, ReportStatus},
    lifecycle::WorkTracker,
    link_policy::{LinkPolicy, LinkRejection, ReportLink},
    metrics::{DedupKind, Metrics},
    storage::{PurgeWatch, Storage, StoredObject},
};
use outcomes::over_limit;
use transfer::{Item, Transfer};

/// Extra Finpass calls made to replace expired links.
const MAX_LINK_REFRESHES: u32 = 2;
/// How long past its deadline a call waits for a transfer to clean up (abort its upload,
/// delete its staging key) so that it answers with nothing left behind. Well within the
/// 5 s the shutdown drain adds to the deadline.
pub const CLEANUP_GRACE: Duration = Duration::from_secs(2);

/// Limits shared by every worker of the process.
pub struct Limits {
    /// Reports of one call processed at once.
    pub per_call: usize,
    /// Reports of one call processed at all; the rest are failed `report_limit`.
    pub max_reports: usize,
    /// Downloads in progress across the whole process.
    pub downloads: Arc<Semaphore>,
    /// How long to wait between PENDING polls at most.
    pub max_poll_interval: Duration,
    /// Bound on one call (`CALL_DEADLINE_MS`).
    pub call_deadline: Duration,
    /// Largest `wait_seconds` accepted (`MAX_WAIT_SECONDS`).
    pub max_wait: Duration,
}

/// One transfer per (client, source) per process, however many calls ask at once. Other
/// replicas are covered by the HEAD-before-write and the atomic writes in [`Storage`].
pub type InFlight = SingleFlight<(ClientId, SourceLocation), ReportResult>;

/// Per-worker pipeline (it owns `!Send` awc clients).
pub struct Pipeline {
    pub finpass: FinpassClient,
    pub downloader: Downloader,
    pub storage: Arc<Storage>,
    pub policy: LinkPolicy,
    pub metrics: Metrics,
    pub limits: Arc<Limits>,
    pub in_flight: Arc<InFlight>,
    pub seen: Arc<SeenVersions>,
    /// Detached transfers are tracked so a graceful shutdown waits for them.
    pub work: WorkTracker,
}

/// Whose reports a poll is for: what every poll of one call (or one job step) shares.
pub struct PollContext {
    pub client_id: ClientId,
    pub request_id: Option<RequestId>,
    /// The client's purges as the call saw them before asking Finpass anything.
    pub purges: PurgeWatch,
    pub retain_until: Option<RetainUntil>,
}

impl Pipeline {
    /// Stores every READY report of the client, waiting up to `wait` for PENDING ones, and
    /// answers by `deadline` (plus [`CLEANUP_GRACE`] when a transfer is cut at it). `purges`
    /// is what the call saw of the client's purges when it began (`Storage::watch_purges`):
    /// a report stored while a purge ran, or after one began, is removed again and failed
    /// `purged`.
    #[tracing::instrument(name = "pipeline.fetch_and_store", skip_all)]
    pub async fn fetch_and_store(
        self: &Arc<Self>,
        client_id: ClientId,
        request_id: Option<RequestId>,
        purges: PurgeWatch,
        retain_until: Option<RetainUntil>,
        wait: Duration,
        deadline: Instant,
    ) -> Result<Vec<ReportOutcome>, FinpassError> {
        let ctx = Rc::new(PollContext {
            client_id,
            request_id,
            purges,
            retain_until,
        });
        let wait_until = (Instant::now() + wait).min(deadline);
        let mut call = CallOutcomes::default();
        let mut refreshes = 0;
        let mut polls = 0u32;
        loop {
            match self.poll_once(&ctx, &mut call, deadline).await {
                Ok(()) => {}
                // The first answer decides the call; a failed later poll keeps what we have.
                Err(e) if call.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "Finpass poll failed; answering with the results so far");
                    break;
                }
            }
            if call.needs_fresh_links()
                && refreshes < MAX_LINK_REFRESHES
                && Instant::now() < deadline
            {
                refreshes += 1;
                tracing::info!(
                    refreshes,
                    "report links expired; asking Finpass for fresh ones"
                );
                continue;
            }
            if !call.pending() {
                break;
            }
            polls += 1;
            let delay = poll_delay(polls, self.limits.max_poll_interval);
            if Instant::now() + delay >= wait_until {
                break;
            }
            tokio::time::sleep(delay).await;
        }
        for o in call.iter() {
            match &o.result {
                ReportResult::Stored(_) => self.metrics.report(Status::Stored, None),
                ReportResult::Pending => self.metrics.report(Status::Pending, None),
                ReportResult::Failed(f) => self.metrics.report(Status::Failed, Some(f.code)),
            }
        }
        Ok(call.into_vec())
    }

    /// One poll: one Finpass call (bounded by `deadline`), then every entry of its answer
    /// evaluated (READY ones stored, a bounded number at a time; settled results of earlier
    /// polls reused) and recorded in `call`. A Finpass failure is returned as it is
    /// (`RateLimited` keeps its `Retry-After`) and leaves `call` unchanged: whoever polls
    /// decides what it means (a call answers with what it has; a job polls again later).
    pub async fn poll_once(
        self: &Arc<Self>,
        ctx: &Rc<PollContext>,
        call: &mut CallOutcomes,
        deadline: Instant,
    ) -> Result<(), FinpassError> {
        let reports = timeout_at(
            deadline,
            self.finpass
                .fetch_statements(&ctx.client_id, ctx.request_id.as_ref()),
        )
        .await
        .unwrap_or(Err(FinpassError::Timeout))?;
        let (reports, excess) = split_at_limit(reports, self.limits.max_reports);
        let call_so_far = &*call;
        let mut round: Vec<_> = stream::iter(
            reports
                .into_iter()
                .map(|r| self.evaluate(ctx, call_so_far, r, deadline)),
        )
        .buffered(self.limits.per_call)
        .collect()
        .await;
        // Past the cap, after the processed ones: Finpass's order is kept.
        round.extend(
            excess
                .iter()
                .map(|r| (None, ReportOutcome::of(r, over_limit()))),
        );
        call.record(round);
        Ok(())
    }

    /// What became of one entry of Finpass's answer (reusing a settled result of an earlier
    /// answer), and its identity when it has a usable link.
    async fn evaluate(
        self: &Arc<Self>,
        ctx: &Rc<PollContext>,
        call: &CallOutcomes,
        report: FinpassReport,
        deadline: Instant,
    ) -> (Option<ReportIdentity>, ReportOutcome) {
        let result = match (report.status, &report.link) {
            (ReportStatus::Pending, _) => ReportResult::Pending,
            (ReportStatus::Failed, _) => ReportResult::failed(
                FailureCode::UpstreamReportFailed,
                "Finpass could not generate this report",
            ),
            (ReportStatus::Unknown, _) => ReportResult::failed(
                FailureCode::UpstreamInvalidReport,
                "Finpass sent a report with an unknown status or missing fields",
            ),
            (ReportStatus::Ready, None) => ReportResult::failed(
                FailureCode::UpstreamInvalidReport,
                "Finpass sent a READY report without a link",
            ),
            (ReportStatus::Ready, Some(raw)) => match self.policy.check(raw) {
                Err(rejection) => self.rejected(rejection),
                Ok(link) => {
                    let id = ReportIdentity::new(&report.fip_id, &link);
                    let result = match call.settled(&id) {
                        Some(settled) => settled,
                        None => {
                            self.store_once(ctx, &report, id.source().clone(), link, deadline)
                                .await
                        }
                    };
                    return (Some(id), ReportOutcome::of(&report, result));
                }
            },
        };
        (None, ReportOutcome::of(&report, result))
    }

    fn rejected(&self, rejection: LinkRejection) -> ReportResult {
        self.metrics.link_rejected(rejection.as_label());
        tracing::warn!(reason = rejection.as_label(), "report link rejected");
        ReportResult::failed(FailureCode::LinkRejected, rejection.to_string())
    }

    /// Stores the report unless already stored, sharing the work with concurrent callers.
    /// The work runs detached (and tracked for the shutdown drain); this waits for it until
    /// the deadline plus [`CLEANUP_GRACE`], a follower no longer than its leader's.
    async fn store_once(
        self: &Arc<Self>,
        ctx: &Rc<PollContext>,
        report: &FinpassReport,
        source: SourceLocation,
        link: ReportLink,
        deadline: Instant,
    ) -> ReportResult {
        if Instant::now() >= deadline {
            return deadline_passed();
        }
        let this = Arc::clone(self);
        let ctx = Rc::clone(ctx);
        let fip_id = report.fip_id.clone();
        let account_number = report.account_number.clone();
        let flight = (ctx.client_id.clone(), source.clone());
        let tracker = self.work.clone();
        let (result, role) = self
            .in_flight
            .run(flight, deadline + CLEANUP_GRACE, move || {
                let tracked = tracker.track();
                async move {
                    let result = this
                        .store(&ctx, &fip_id, &account_number, &source, link, deadline)
                        .await;
                    drop(tracked);
                    result
                }
            })
            .await;
        if role == Role::Follower {
            self.metrics.dedup_hit(DedupKind::InFlight);
        }
        result.unwrap_or_else(|e| match e {
            FlightError::TimedOut => deadline_passed(),
            FlightError::Failed => {
                ReportResult::failed(FailureCode::InternalError, "the transfer task failed")
            }
        })
    }

    #[tracing::instrument(name = "pipeline.store_report", skip_all, fields(link = %link))]
    async fn store(
        &self,
        ctx: &PollContext,
        fip_id: &str,
        account_number: &str,
        source: &SourceLocation,
        link: ReportLink,
        deadline: Instant,
    ) -> ReportResult {
        if link.expires_at().is_some_and(|t| t <= unix_now()) {
            return ReportResult::failed(
                FailureCode::LinkExpired,
                DownloadError::Expired.to_string(),
            );
        }
        let _permit = match timeout_at(deadline, self.limits.downloads.acquire()).await {
            Err(_) => return deadline_passed(),
            Ok(Err(_)) => {
                return ReportResult::failed(
                    FailureCode::InternalError,
                    "the download limiter is closed",
                );
            }
            Ok(Ok(permit)) => permit,
        };
        let item = Item {
            client_id: &ctx.client_id,
            request_id: ctx.request_id.as_ref(),
            retain_until: ctx.retain_until,
            fip_id,
            account_number,
            source,
            link: &link,
            deadline,
        };
        let result = Transfer {
            downloader: &self.downloader,
            storage: &self.storage,
            metrics: &self.metrics,
            seen: &self.seen,
        }
        .store(&item)
        .await;
        match result {
            ReportResult::Stored(stored) => self.unless_purged(ctx, stored).await,
            other => other,
        }
    }

    /// A stored report, checked against the client's purges before it is answered: if one
    /// was running when the call began or began since, it may have listed before this write
    /// landed, so the statement is removed (every version) and the report fails `purged`.
    /// Runs in the detached transfer, so a caller that hung up changes nothing. If the check
    /// itself fails, the statement is removed too: an unanswered store is repeated, a
    /// statement outliving its purge cannot be taken back.
    async fn unless_purged(&self, ctx: &PollContext, stored: StoredObject) -> ReportResult {
        let (code, message) = match self
            .storage
            .lost_to_purge(&ctx.client_id, &ctx.purges)
            .await
        {
            Ok(false) => return ReportResult::Stored(stored),
            Ok(true) => (
                FailureCode::Purged,
                "the client's statements were purged while this report was being stored; it was removed",
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not check for a purge; the statement is removed");
                (
                    FailureCode::StorageFailed,
                    "could not check for a purge of the client; the statement was removed",
                )
            }
        };
        tracing::info!(code = code.as_str(), "a purge won over this store");
        if let Err(e) = self.storage.withdraw(&stored.key).await {
            tracing::error!(error = %e, "could not remove a statement stored during a purge");
        }
        ReportResult::failed(code, message)
    }
}

/// The report of a call whose deadline came first.
fn deadline_passed() -> ReportResult {
    ReportResult::failed(
        FailureCode::DownloadTimeout,
        DownloadError::Deadline.to_string(),
    )
}

/// Splits Finpass's list at the per-call cap: the first `limit` are processed.
fn split_at_limit(
    mut reports: Vec<FinpassReport>,
    limit: usize,
) -> (Vec<FinpassReport>, Vec<FinpassReport>) {
    let excess = reports.split_off(limit.min(reports.len()));
    (reports, excess)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 0.5 s, 1 s, 2 s … capped: quick for reports that are nearly ready, gentle on Finpass.
fn poll_delay(poll: u32, max: Duration) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1 << poll.saturating_sub(1).min(10))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(n: usize) -> Vec<FinpassReport> {
        (0..n)
            .map(|i| FinpassReport {
                fip_id: format!("FIP-{i}"),
                account_number: "X".into(),
                status: ReportStatus::Pending,
                link: None,
            })
            .collect()
    }

    #[test]
    fn poll_delay_doubles_from_half_a_second_up_to_the_cap() {
        let max = Duration::from_secs(5);
        let delays: Vec<u64> = (1..=6)
            .map(|p| poll_delay(p, max).as_millis() as u64)
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(poll_delay(0, max), Duration::from_millis(500));
        assert_eq!(
            poll_delay(u32::MAX, max),
            max,
            "no overflow on huge poll counts"
        );
        assert_eq!(
            poll_delay(u32::MAX, Duration::MAX),
            Duration::from_millis(500 * 1024)
        );
    }

    #[test]
    fn report_limit_split_keeps_order() {
        let (kept, excess) = split_at_limit(reports(5), 3);
        let ids = |v: &[FinpassReport]| v.iter().map(|r| r.fip_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&kept), ["FIP-0", "FIP-1", "FIP-2"]);
        assert_eq!(ids(&excess), ["FIP-3", "FIP-4"]);
        let (kept, excess) = split_at_limit(reports(2), 3);
        assert_eq!((kept.len(), excess.len()), (2, 0));
        let (kept, excess) = split_at_limit(Vec::new(), 0);
        assert!(kept.is_empty() && excess.is_empty());
    }
}
