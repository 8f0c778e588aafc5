//! One report's bytes from its link into S3: download → staging upload → promote, retried
//! from the start while the download breaks transiently. Whatever fails, nothing partial is
//! left: a failed single PUT stores nothing, a failed multipart upload is aborted, and the
//! staging key is deleted.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::{
    domain::{FailureCode, ObjectKey},
    download::{DownloadError, Downloader},
    link_policy::ReportLink,
    metrics::{InFlightKind, Metrics},
    storage::{Provenance, Storage, StorageError, StoredObject},
};

use super::outcomes::ReportResult;

/// Chunks buffered between download and upload. awc yields chunks of at most ~64 KiB, so this
/// bounds the in-transit bytes of one report to about 1 MiB.
const CHANNEL_CHUNKS: usize = 16;
/// Attempts at one download when it breaks mid-stream, with the same link.
pub const DOWNLOAD_ATTEMPTS: u32 = 3;

pub enum TransferError {
    Download(DownloadError),
    Storage(StorageError),
}

pub struct Transfer<'a> {
    pub downloader: &'a Downloader,
    pub storage: &'a Storage,
    pub metrics: &'a Metrics,
}

impl Transfer<'_> {
    /// Stores the report at `key`, retrying transient download failures from the start.
    pub async fn store(
        &self,
        key: &ObjectKey,
        link: &ReportLink,
        provenance: &Provenance<'_>,
    ) -> ReportResult {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.once(key, link, provenance).await {
                Ok(stored) => return ReportResult::Stored(stored),
                Err(TransferError::Download(e))
                    if e.is_transient() && attempt < DOWNLOAD_ATTEMPTS =>
                {
                    tracing::warn!(attempt, error = %e, "download broke; retrying from the start");
                    tokio::time::sleep(retry_delay(attempt)).await;
                }
                Err(TransferError::Download(e)) => {
                    if let Some(reason) = e.link_rejection() {
                        self.metrics.link_rejected(reason.as_label());
                    }
                    return ReportResult::failed(e.code(), e.to_string());
                }
                Err(TransferError::Storage(e)) => return storage_failed(&e),
            }
        }
    }

    /// One download → staging upload → promote attempt. Leaves nothing behind on failure.
    async fn once(
        &self,
        key: &ObjectKey,
        link: &ReportLink,
        provenance: &Provenance<'_>,
    ) -> Result<StoredObject, TransferError> {
        let started = Instant::now();
        let _guard = self.metrics.in_flight(InFlightKind::Download);
        let download = match self.downloader.open(link).await {
            Ok(d) => d,
            Err(e) => {
                self.metrics.download(Some(e.code()), 0, started.elapsed());
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
            (Ok(_), Ok(_)) => None,
            (Err(DownloadError::SinkClosed), _) | (Ok(_), Err(_)) => {
                Some(FailureCode::StorageFailed)
            }
            (Err(e), _) => Some(e.code()),
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

/// 100 ms, 200 ms, …: a broken connection is usually healed by simply trying again.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(100).saturating_mul(attempt)
}

pub fn storage_failed(e: &StorageError) -> ReportResult {
    tracing::error!(error = %e, "storing the report failed");
    ReportResult::failed(
        FailureCode::StorageFailed,
        "storing the report in S3 failed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_linearly() {
        assert_eq!(retry_delay(1), Duration::from_millis(100));
        assert_eq!(retry_delay(2), Duration::from_millis(200));
        assert_eq!(retry_delay(u32::MAX), Duration::from_millis(100) * u32::MAX);
    }
}
