//! The retention sweep (`finpass-gateway sweep-retention`, run by a Kubernetes CronJob):
//! deletes every statement whose `retain_until` has passed, every version of it, audited as
//! `system:retention`, and nothing else.
//!
//! It reads the expiry index (`storage::retention`) from its first day up to today and stops
//! at the first later day, so a run costs what has expired (plus one listing page), not what
//! is stored. For each due entry the statement's own `retain-until` metadata decides:
//! - passed: the deletion is audited (fail closed: no event, no delete), every version of the
//!   statement is deleted, then every version of the entry;
//! - the statement is gone, or carries another end of life (a writer that lost a race left
//!   the entry; the winner's entry is under its own day): the entry alone is deleted;
//! - not yet passed but due today: left for a later run.
//!
//! A run that meets any failure still sweeps the rest and then fails (non-zero exit), so the
//! CronJob's last *successful* time, which the alert watches, only moves when all went well.

use std::time::SystemTime;

use futures_util::{StreamExt, stream};

use crate::{
    audit::{AuditEvent, AuditLog, S3Sink, rfc3339},
    config::Settings,
    domain::{AuditAction, AuditOutcome, IndexEntry, day_of},
    metrics::Metrics,
    startup::{StartupError, check_region},
    storage::{self, PurgeError, Scope, Storage, StorageError},
};

/// The audit trail's caller name for the sweep.
pub const CALLER: &str = "system:retention";
/// Index entries per listing page.
pub const PAGE_SIZE: i32 = 1000;
/// Statements handled at once.
const CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("listing the expiry index failed: {0}")]
    Index(StorageError),
    #[error("{failed} of {due} due index entries could not be handled (see the log)")]
    Incomplete { failed: usize, due: usize },
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Index entries up to today that were looked at.
    pub due: usize,
    /// Statements deleted (their `retain_until` had passed).
    pub deleted: usize,
    /// Entries dropped without deleting anything (statement gone, or another end of life).
    pub dropped: usize,
    /// Entries due later today, left in place.
    pub kept: usize,
    /// ListObjectsV2 requests made on the index: the cost of finding what is due.
    pub list_requests: usize,
    pub failed: usize,
}

/// What became of one entry.
enum Handled {
    Deleted,
    Dropped,
    Kept,
    Failed,
}

/// What a sweep works with: the bucket and the audit trail, built from the same settings as
/// the server.
pub struct Sweeper {
    pub storage: Storage,
    audit: AuditLog,
}

impl Sweeper {
    /// The S3 client, the region check (`REQUIRED_BUCKET_REGION`) and the audit writer.
    pub async fn build(settings: &Settings) -> Result<Self, SweepError> {
        let metrics = Metrics::new();
        let client = storage::build_client(&settings.s3)
            .await
            .map_err(StartupError::from)?;
        let storage = Storage::new(
            client,
            &settings.storage,
            !settings.s3.checksum_when_required,
            metrics.clone(),
        );
        check_region(&storage, settings).await?;
        let sink = S3Sink {
            client: storage.client().clone(),
            bucket: settings
                .read_side
                .audit_bucket
                .clone()
                .unwrap_or_else(|| settings.storage.bucket.clone()),
            encryption: storage.encryption().cloned(),
            metrics: metrics.clone(),
        };
        let audit = AuditLog::start(sink, settings.read_side.audit_prefix.clone(), metrics);
        Ok(Self { storage, audit })
    }

    /// One sweep as of `now`, listing the index `page_size` entries at a time.
    pub async fn sweep_at(
        &self,
        now: SystemTime,
        page_size: i32,
    ) -> Result<SweepReport, SweepError> {
        sweep(&self.storage, &self.audit, now, page_size).await
    }
}

/// `sweep-retention`: one sweep at the present time; an incomplete one is an error.
pub async fn run(settings: &Settings) -> Result<SweepReport, SweepError> {
    let report = Sweeper::build(settings)
        .await?
        .sweep_at(SystemTime::now(), PAGE_SIZE)
        .await?;
    if report.failed > 0 {
        return Err(SweepError::Incomplete {
            failed: report.failed,
            due: report.due,
        });
    }
    Ok(report)
}

/// One sweep as of `now`: every statement whose `retain_until` is not after `now` is deleted.
async fn sweep(
    storage: &Storage,
    audit: &AuditLog,
    now: SystemTime,
    page_size: i32,
) -> Result<SweepReport, SweepError> {
    let today = day_of(now);
    let run_id = format!("retention-{}", uuid::Uuid::new_v4().simple());
    let mut report = SweepReport::default();
    let mut resume_after: Option<String> = None;
    loop {
        report.list_requests += 1;
        let page = storage
            .due_index_entries(&today, resume_after.as_deref(), page_size)
            .await
            .map_err(SweepError::Index)?;
        report.due += page.entries.len();
        let handled: Vec<Handled> = stream::iter(page.entries)
            .map(|(key, entry)| handle(storage, audit, &run_id, now, key, entry))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for h in handled {
            match h {
                Handled::Deleted => report.deleted += 1,
                Handled::Dropped => report.dropped += 1,
                Handled::Kept => report.kept += 1,
                Handled::Failed => report.failed += 1,
            }
        }
        match page.resume_after {
            Some(next) => resume_after = Some(next),
            None => break,
        }
    }
    tracing::info!(
        due = report.due,
        deleted = report.deleted,
        dropped = report.dropped,
        kept = report.kept,
        failed = report.failed,
        list_requests = report.list_requests,
        "retention sweep done"
    );
    Ok(report)
}

async fn handle(
    storage: &Storage,
    audit: &AuditLog,
    run_id: &str,
    now: SystemTime,
    key: String,
    entry: IndexEntry,
) -> Handled {
    let statement = match storage.statement(&entry.client, &entry.statement).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "retention sweep: the statement could not be read");
            return Handled::Failed;
        }
    };
    let until = statement.as_ref().and_then(|s| s.retain_until);
    let outcome = match until {
        Some(until) if until.has_passed(now) => {
            match delete_statement(storage, audit, run_id, &entry).await {
                Ok(()) => Handled::Deleted,
                Err(()) => return Handled::Failed,
            }
        }
        Some(until) if until.day() == entry.day => return Handled::Kept,
        // Gone, kept for good, or indexed under another day by the store that won.
        _ => Handled::Dropped,
    };
    match remove_entry(storage, &key).await {
        Ok(()) => outcome,
        Err(()) => Handled::Failed,
    }
}

/// Audits, then deletes every version of the statement (the event is durable first, as for
/// a caller's delete).
async fn delete_statement(
    storage: &Storage,
    audit: &AuditLog,
    run_id: &str,
    entry: &IndexEntry,
) -> Result<(), ()> {
    let plan = storage
        .plan_purge(&entry.client, Some(&entry.statement))
        .await
        .map_err(|e| tracing::warn!(error = %e, "retention sweep: listing versions failed"))?;
    let event = |outcome| AuditEvent {
        at: rfc3339(SystemTime::now()),
        action: AuditAction::Delete,
        caller: CALLER.to_owned(),
        sub: None,
        jti: None,
        source_address: String::new(),
        client_id: entry.client.to_string(),
        statement_ids: vec![entry.statement.to_string()],
        outcome,
        http_request_id: run_id.to_owned(),
        requested_statement_id: Some(entry.statement.to_string()),
    };
    // The intent is durable before anything is removed, the result after (as for a caller's
    // delete).
    audit.record(event(AuditOutcome::Intent)).await.map_err(
        |e| tracing::warn!(error = %e, "retention sweep: audit event not written; nothing deleted"),
    )?;
    let deleted = storage.purge(&plan).await.map(|_| ()).map_err(|e| match e {
        PurgeError::Refused { refused, total } => {
            tracing::error!(
                refused,
                total,
                "retention sweep: S3 refused to delete versions"
            )
        }
        PurgeError::Storage(e) => tracing::warn!(error = %e, "retention sweep: delete failed"),
    });
    let outcome = if deleted.is_ok() {
        AuditOutcome::Ok
    } else {
        AuditOutcome::Failed
    };
    audit
        .record(event(outcome))
        .await
        .map_err(|e| tracing::warn!(error = %e, "retention sweep: result event not written"))?;
    deleted
}

/// Every version of an index entry.
async fn remove_entry(storage: &Storage, key: &str) -> Result<(), ()> {
    let plan = storage
        .plan_delete(&[Scope::Key(key.to_owned())])
        .await
        .map_err(|e| tracing::warn!(error = %e, "retention sweep: listing an entry failed"))?;
    storage
        .purge(&plan)
        .await
        .map(|_| ())
        .map_err(|e| tracing::warn!(error = %e, "retention sweep: deleting an entry failed"))
}
