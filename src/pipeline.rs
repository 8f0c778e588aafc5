//! `fetch_and_store`: one caller request, end to end.
//!
//! Ask Finpass for the client's reports; for each READY one (a bounded number at a time)
//! check the link, HEAD the permanent key, and otherwise download and store it. Reports whose
//! link expired are retried with fresh links from a new Finpass call (bounded); while reports
//! are PENDING and the caller asked to wait, Finpass is polled with backoff. A report's failure
//! is data in the response, never a failure of the call.

use std::{
    collections::HashMap,
    rc::Rc,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::{StreamExt, stream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::{
    domain::{ClientId, ObjectKey, RequestId},
    download::{DownloadError, Downloader},
    finpass::{FinpassClient, FinpassError, FinpassReport, ReportStatus},
    link_policy::{LinkPolicy, LinkRejection, ReportLink},
    metrics::Metrics,
    storage::{Provenance, Storage, StorageError, StoredObject},
};

/// Chunks buffered between download and upload. awc yields chunks of at most ~64 KiB, so this
/// bounds the in-transit bytes of one report to about 1 MiB.
const CHANNEL_CHUNKS: usize = 16;
/// Attempts at one download when it breaks mid-stream, with the same link.
const DOWNLOAD_ATTEMPTS: u32 = 3;
/// Extra Finpass calls made to replace expired links.
const MAX_LINK_REFRESHES: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportResult {
    Stored(StoredObject),
    Pending,
    Failed(Failure),
}

impl ReportResult {
    fn is_final(&self) -> bool {
        match self {
            Self::Stored(_) => true,
            Self::Pending => false,
            // An expired link is healed by a fresh one: not final while refreshes remain.
            Self::Failed(f) => f.code != "link_expired",
        }
    }

    fn label(&self) -> (&'static str, &'static str) {
        match self {
            Self::Stored(_) => ("stored", ""),
            Self::Pending => ("pending", ""),
            Self::Failed(f) => ("failed", f.code),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReportOutcome {
    pub fip_id: String,
    pub account_number: String,
    pub result: ReportResult,
}

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
}

/// Single-flight registry: one download per permanent key per process, however many calls
/// ask for it at once. Other replicas are covered by the HEAD-before-write and the atomic
/// promote in [`Storage`].
#[derive(Default)]
pub struct InFlight {
    map: Mutex<HashMap<ObjectKey, watch::Receiver<Option<ReportResult>>>>,
}

enum Flight {
    Leader(watch::Sender<Option<ReportResult>>, FlightGuard),
    Follower(watch::Receiver<Option<ReportResult>>),
}

/// Removes the registry entry when the leader finishes or is dropped.
struct FlightGuard {
    registry: Arc<InFlight>,
    key: ObjectKey,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.map.lock() {
            map.remove(&self.key);
        }
    }
}

impl InFlight {
    fn join(self: &Arc<Self>, key: &ObjectKey) -> Flight {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(rx) = map.get(key) {
            return Flight::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Flight::Leader(
            tx,
            FlightGuard {
                registry: Arc::clone(self),
                key: key.clone(),
            },
        )
    }
}

/// Per-worker pipeline (it owns `!Send` awc clients).
pub struct Pipeline {
    pub finpass: FinpassClient,
    pub downloader: Downloader,
    pub storage: Arc<Storage>,
    pub policy: LinkPolicy,
    pub metrics: Metrics,
    pub limits: Arc<Limits>,
    pub in_flight: Arc<InFlight>,
}

struct Ctx {
    client_id: ClientId,
    request_id: Option<RequestId>,
}

impl Pipeline {
    /// Stores every READY report of the client, waiting up to `wait` for PENDING ones.
    #[tracing::instrument(name = "pipeline.fetch_and_store", skip_all)]
    pub async fn fetch_and_store(
        self: &Arc<Self>,
        client_id: ClientId,
        request_id: Option<RequestId>,
        wait: Duration,
    ) -> Result<Vec<ReportOutcome>, FinpassError> {
        let ctx = Rc::new(Ctx {
            client_id,
            request_id,
        });
        let wait_until = Instant::now() + wait;
        // Keyed by (fip_id, account_number), which is stable across Finpass calls; a Vec
        // keeps Finpass's order for the response.
        let mut outcomes: Vec<ReportOutcome> = Vec::new();
        let mut refreshes = 0;
        let mut polls = 0u32;
        loop {
            let reports = match self
                .finpass
                .fetch_statements(&ctx.client_id, ctx.request_id.as_ref())
                .await
            {
                Ok(r) => r,
                // The first answer decides the call; a failed later poll keeps what we have.
                Err(e) if outcomes.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "Finpass poll failed; answering with the results so far");
                    break;
                }
            };
            let (reports, excess) = split_at_limit(reports, self.limits.max_reports);
            let todo: Vec<FinpassReport> = reports
                .into_iter()
                .filter(|r| {
                    !outcomes.iter().any(|o| {
                        o.fip_id == r.fip_id
                            && o.account_number == r.account_number
                            && o.result.is_final()
                    })
                })
                .collect();
            let done: Vec<ReportOutcome> =
                stream::iter(todo.into_iter().map(|r| self.process(&ctx, r)))
                    .buffered(self.limits.per_call)
                    .collect()
                    .await;
            for o in done {
                match outcomes
                    .iter_mut()
                    .find(|x| x.fip_id == o.fip_id && x.account_number == o.account_number)
                {
                    Some(slot) => *slot = o,
                    None => outcomes.push(o),
                }
            }
            // Past the cap, after the processed ones: Finpass's order is kept.
            for r in excess {
                if !outcomes
                    .iter()
                    .any(|o| o.fip_id == r.fip_id && o.account_number == r.account_number)
                {
                    let result = failed(
                        "report_limit",
                        "the call returned more reports than MAX_REPORTS_PER_CALL",
                    );
                    outcomes.push(ReportOutcome {
                        fip_id: r.fip_id,
                        account_number: r.account_number,
                        result,
                    });
                }
            }
            let expired = outcomes
                .iter()
                .any(|o| !o.result.is_final() && o.result != ReportResult::Pending);
            if expired && refreshes < MAX_LINK_REFRESHES {
                refreshes += 1;
                tracing::info!(
                    refreshes,
                    "report links expired; asking Finpass for fresh ones"
                );
                continue;
            }
            let pending = outcomes.iter().any(|o| o.result == ReportResult::Pending);
            if !pending {
                break;
            }
            polls += 1;
            let delay = poll_delay(polls, self.limits.max_poll_interval);
            if Instant::now() + delay >= wait_until {
                break;
            }
            tokio::time::sleep(delay).await;
        }
        for o in &outcomes {
            let (status, code) = o.result.label();
            self.metrics.report(status, code);
        }
        Ok(outcomes)
    }

    async fn process(self: &Arc<Self>, ctx: &Rc<Ctx>, report: FinpassReport) -> ReportOutcome {
        let result = match (report.status, &report.link) {
            (ReportStatus::Pending, _) => ReportResult::Pending,
            (ReportStatus::Failed, _) => failed(
                "upstream_report_failed",
                "Finpass could not generate this report",
            ),
            (ReportStatus::Unknown, _) => failed(
                "upstream_invalid_report",
                "Finpass sent an unknown report status",
            ),
            (ReportStatus::Ready, None) => failed(
                "upstream_invalid_report",
                "Finpass sent a READY report without a link",
            ),
            (ReportStatus::Ready, Some(raw)) => match self.policy.check(raw) {
                Err(rejection) => self.rejected(rejection),
                Ok(link) => self.store_once(ctx, &report, link).await,
            },
        };
        ReportOutcome {
            fip_id: report.fip_id,
            account_number: report.account_number,
            result,
        }
    }

    fn rejected(&self, rejection: LinkRejection) -> ReportResult {
        self.metrics.link_rejected(rejection.as_label());
        tracing::warn!(reason = rejection.as_label(), "report link rejected");
        failed("link_rejected", &rejection.to_string())
    }

    /// Stores the report unless already stored, sharing the work with concurrent callers.
    async fn store_once(
        self: &Arc<Self>,
        ctx: &Rc<Ctx>,
        report: &FinpassReport,
        link: ReportLink,
    ) -> ReportResult {
        let key = ObjectKey::for_report(self.storage.prefix(), &ctx.client_id, link.path());
        loop {
            match self.in_flight.join(&key) {
                Flight::Follower(mut rx) => {
                    self.metrics.dedup_hit("in_flight");
                    match rx.wait_for(Option::is_some).await {
                        Ok(result) => return result.clone().unwrap_or(ReportResult::Pending),
                        // The leader vanished without an answer: take over.
                        Err(_) => continue,
                    }
                }
                Flight::Leader(tx, guard) => {
                    // Detached so that a caller hanging up does not abort a transfer other
                    // callers are waiting for, or strand a multipart upload.
                    let this = Arc::clone(self);
                    let ctx = Rc::clone(ctx);
                    let fip_id = report.fip_id.clone();
                    let handle = actix_web::rt::spawn(async move {
                        let result = this.store(&ctx, &fip_id, &key, link).await;
                        let _ = tx.send(Some(result.clone()));
                        drop(guard);
                        result
                    });
                    return handle
                        .await
                        .unwrap_or_else(|_| failed("internal_error", "the transfer task failed"));
                }
            }
        }
    }

    #[tracing::instrument(name = "pipeline.store_report", skip_all, fields(link = %link, key = %key))]
    async fn store(
        &self,
        ctx: &Ctx,
        fip_id: &str,
        key: &ObjectKey,
        link: ReportLink,
    ) -> ReportResult {
        match self.storage.head(key).await {
            Ok(Some(stored)) => {
                self.metrics.dedup_hit("already_stored");
                tracing::info!("already stored; not downloading again");
                return ReportResult::Stored(stored);
            }
            Ok(None) => {}
            Err(e) => return storage_failed(&e),
        }
        if link.expires_at().is_some_and(|t| t <= unix_now()) {
            return failed("link_expired", &DownloadError::Expired.to_string());
        }
        let _permit = match self.limits.downloads.acquire().await {
            Ok(p) => p,
            Err(_) => return failed("internal_error", "the download limiter is closed"),
        };
        let provenance = Provenance {
            client_id: &ctx.client_id,
            request_id: ctx.request_id.as_ref(),
            fip_id,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.transfer(key, &link, &provenance).await {
                Ok(stored) => return ReportResult::Stored(stored),
                Err(TransferError::Download(e))
                    if e.is_transient() && attempt < DOWNLOAD_ATTEMPTS =>
                {
                    tracing::warn!(attempt, error = %e, "download broke; retrying from the start");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(TransferError::Download(e)) => {
                    if e == DownloadError::ForbiddenAddress {
                        self.metrics
                            .link_rejected(LinkRejection::ForbiddenAddress.as_label());
                    }
                    return failed(e.code(), &e.to_string());
                }
                Err(TransferError::Storage(e)) => return storage_failed(&e),
            }
        }
    }

    /// One download → staging upload → promote attempt. Leaves nothing behind on failure.
    async fn transfer(
        &self,
        key: &ObjectKey,
        link: &ReportLink,
        provenance: &Provenance<'_>,
    ) -> Result<StoredObject, TransferError> {
        let started = Instant::now();
        let _guard = self.metrics.in_flight("download");
        let download = match self.downloader.open(link).await {
            Ok(d) => d,
            Err(e) => {
                self.metrics.download(e.code(), 0, started.elapsed());
                return Err(TransferError::Download(e));
            }
        };
        let staging = self.storage.new_staging_key();
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let len = download.content_length;
        let (pumped, uploaded) =
            futures_util::future::join(download.pump(tx), self.storage.upload(&staging, rx, len))
                .await;
        let outcome = match (&pumped, &uploaded) {
            (Ok(_), Ok(_)) => "success",
            (Err(DownloadError::SinkClosed), _) | (Ok(_), Err(_)) => "storage_failed",
            (Err(e), _) => e.code(),
        };
        self.metrics.download(
            outcome,
            pumped.as_ref().map_or(0, |p| p.size),
            started.elapsed(),
        );
        let result = match (pumped, uploaded) {
            (Ok(p), Ok(_)) => self
                .storage
                .promote(&staging, key, p.size, &p.sha256, provenance)
                .await
                .map_err(TransferError::Storage),
            (Err(DownloadError::SinkClosed), Err(e)) | (Ok(_), Err(e)) => {
                Err(TransferError::Storage(e))
            }
            (Err(e), _) => Err(TransferError::Download(e)),
        };
        match &result {
            Ok(stored) => {
                tracing::info!(size = stored.size_bytes, sha256 = %stored.sha256, "report stored")
            }
            // A failed single PUT stores nothing and a failed multipart upload is aborted;
            // this also removes anything a lenient server kept.
            Err(_) => self.storage.discard(&staging).await,
        }
        result
    }
}

enum TransferError {
    Download(DownloadError),
    Storage(StorageError),
}

fn failed(code: &'static str, message: &str) -> ReportResult {
    ReportResult::Failed(Failure {
        code,
        message: message.to_owned(),
    })
}

fn storage_failed(e: &StorageError) -> ReportResult {
    tracing::error!(error = %e, "storing the report failed");
    failed("storage_failed", "storing the report in S3 failed")
}

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
