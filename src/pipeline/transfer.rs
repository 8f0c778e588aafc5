//! One report's bytes from its link into S3, exactly once per source version.
//!
//! Open the link (conditionally, when this process has seen the source's ETag) → the
//! response headers give the source's version → the permanent key → if a statement is already
//! there and its metadata names this client, FIP and version, answer it and drop the body; if
//! something else is there, `storage_conflict`; otherwise stream the body into S3 (one direct
//! PUT, or staging + copy, see `storage::statement`). Transient download failures are retried
//! from the start. Whatever fails, nothing partial is left: a failed PUT stores nothing, a
//! failed multipart upload is aborted, a staging key is deleted.
//!
//! Everything stops at the call's deadline: the download then fails `download_timeout`, which
//! fails the upload's body and so aborts it.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::{sync::mpsc, time::Instant};

use crate::{
    domain::{
        ClientId, FailureCode, ObjectKey, Prefix, RequestId, RetainUntil, SourceLocation,
        SourceVersion,
    },
    download::{Download, DownloadError, Downloader, Opened, Pumped},
    link_policy::ReportLink,
    metrics::{DedupKind, InFlightKind, Metrics},
    storage::{
        DirectPut, Existing, Owner, Staged, StatementMetadata, Storage, StorageError, StoredObject,
    },
};

use super::outcomes::ReportResult;

/// Chunks buffered between download and upload. awc yields chunks of at most ~64 KiB, so this
/// bounds the in-transit bytes of one report to about 1 MiB.
const CHANNEL_CHUNKS: usize = 16;
/// Attempts at one transfer when the download breaks or S3 fails transiently, with the same
/// link.
pub const DOWNLOAD_ATTEMPTS: u32 = 3;
/// Looks at an object without metadata before it is called a conflict (50 ms, 100 ms, …,
/// at most 1 s apart: about 5 s in all, well past any write's bytes-to-metadata window).
const UNLABELLED_LOOKS: u32 = 9;
/// Sources whose ETag this process remembers (for conditional GETs).
const MAX_REMEMBERED_VERSIONS: usize = 10_000;
/// The upload stops waiting for the body this long after the deadline: the download has
/// given up by then and failed the body, which is what aborts the upload cleanly.
const UPLOAD_DEADLINE_SLACK: Duration = Duration::from_millis(500);

pub enum TransferError {
    Download(DownloadError),
    Storage(StorageError),
    /// An object at the key is someone else's (client, FIP or version differ).
    Conflict,
}

/// What is being fetched: one report and whose it is (one item of a Finpass answer).
pub struct Item<'a> {
    pub client_id: &'a ClientId,
    pub request_id: Option<&'a RequestId>,
    /// The end of the statement's data life, written with it when it is stored now (a
    /// statement already stored keeps its own).
    pub retain_until: Option<RetainUntil>,
    pub fip_id: &'a str,
    pub account_number: &'a str,
    pub source: &'a SourceLocation,
    pub link: &'a ReportLink,
    /// The call's deadline: nothing of this item runs past it (but cleaning up).
    pub deadline: Instant,
}

/// ETags seen per (client, source), so a repeat call for an unchanged report sends
/// `If-None-Match` and the link answers 304 with no body. Bounded: cleared when full (it is
/// only an optimisation; without it the body is dropped after the headers).
#[derive(Default)]
pub struct SeenVersions {
    map: Mutex<HashMap<(ClientId, SourceLocation), (String, SourceVersion)>>,
}

impl SeenVersions {
    fn get(&self, client: &ClientId, source: &SourceLocation) -> Option<(String, SourceVersion)> {
        let map = self.map.lock().ok()?;
        map.get(&(client.clone(), source.clone())).cloned()
    }

    fn remember(
        &self,
        client: &ClientId,
        source: &SourceLocation,
        etag: Option<&str>,
        version: &SourceVersion,
    ) {
        let Some(etag) = etag else { return };
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_REMEMBERED_VERSIONS {
                map.clear();
            }
            map.insert(
                (client.clone(), source.clone()),
                (etag.to_owned(), version.clone()),
            );
        }
    }

    fn forget(&self, client: &ClientId, source: &SourceLocation) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&(client.clone(), source.clone()));
        }
    }
}

pub struct Transfer<'a> {
    pub downloader: &'a Downloader,
    pub storage: &'a Storage,
    pub metrics: &'a Metrics,
    pub seen: &'a SeenVersions,
}

impl Transfer<'_> {
    /// Stores the report, retrying transient failures from the start (a download that broke,
    /// or S3 shedding load or failing mid-PUT: a streamed PUT cannot be replayed, its body is
    /// the download), until the item's deadline: then the download fails `download_timeout`
    /// and the upload is aborted.
    pub async fn store(&self, item: &Item<'_>) -> ReportResult {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let may_retry = || {
                attempt < DOWNLOAD_ATTEMPTS && Instant::now() + retry_delay(attempt) < item.deadline
            };
            match self.once(item).await {
                Ok(stored) => return ReportResult::Stored(stored),
                Err(TransferError::Download(e)) if e.is_transient() && may_retry() => {
                    tracing::warn!(attempt, error = %e, "download broke; retrying from the start");
                    tokio::time::sleep(retry_delay(attempt)).await;
                }
                Err(TransferError::Storage(e)) if e.is_transient() && may_retry() => {
                    tracing::warn!(attempt, error = %e, "S3 failed transiently; retrying from the link");
                    tokio::time::sleep(retry_delay(attempt)).await;
                }
                Err(TransferError::Download(e)) => {
                    if let Some(reason) = e.link_rejection() {
                        self.metrics.link_rejected(reason.as_label());
                    }
                    return ReportResult::failed(e.code(), e.to_string());
                }
                Err(TransferError::Storage(StorageError::DeadlineExceeded)) => {
                    return ReportResult::failed(
                        FailureCode::DownloadTimeout,
                        DownloadError::Deadline.to_string(),
                    );
                }
                Err(TransferError::Storage(e)) => return storage_failed(&e),
                Err(TransferError::Conflict) => {
                    tracing::error!(
                        "an object at the statement's key belongs to another client, FIP or version"
                    );
                    return ReportResult::failed(
                        FailureCode::StorageConflict,
                        "an object at this statement's key is not this report's",
                    );
                }
            }
        }
    }

    fn key(&self, item: &Item<'_>, version: &SourceVersion) -> ObjectKey {
        ObjectKey::for_source(
            self.prefix(),
            item.client_id,
            item.fip_id,
            item.source,
            version,
        )
    }

    fn prefix(&self) -> &Prefix {
        self.storage.prefix()
    }

    /// What is at `key`. An object without metadata may be another writer's copy in
    /// progress on servers that write bytes before metadata: look again (bounded) before
    /// calling it a conflict.
    async fn existing(
        &self,
        item: &Item<'_>,
        key: &ObjectKey,
        version: &SourceVersion,
    ) -> Result<Existing, TransferError> {
        let owner = Owner {
            client_id: item.client_id,
            fip_id: item.fip_id,
            version,
        };
        let mut delay = Duration::from_millis(50);
        for _ in 0..UNLABELLED_LOOKS {
            match self.storage.existing(key, &owner).await {
                Ok(Existing::Unlabelled) => {
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2).min(Duration::from_secs(1));
                }
                other => return other.map_err(TransferError::Storage),
            }
        }
        Ok(Existing::Conflict)
    }

    /// One attempt. Leaves nothing behind on failure.
    async fn once(&self, item: &Item<'_>) -> Result<StoredObject, TransferError> {
        // A download is in flight from the link's GET on, so a shutdown (and the gauge) sees
        // it before the first byte arrives.
        let _guard = self.metrics.in_flight(InFlightKind::Download);
        let seen = self.seen.get(item.client_id, item.source);
        let download = match self
            .downloader
            .open(
                item.link,
                seen.as_ref().map(|(etag, _)| etag.as_str()),
                item.deadline,
            )
            .await
            .map_err(TransferError::Download)?
        {
            Opened::Body(d) => *d,
            Opened::NotModified => {
                let version = seen
                    .map(|(_, v)| v)
                    .ok_or(TransferError::Download(DownloadError::Status(304)))?;
                let key = self.key(item, &version);
                match self.existing(item, &key, &version).await? {
                    Existing::Ours(stored) => {
                        self.metrics.dedup_hit(DedupKind::AlreadyStored);
                        tracing::info!("unchanged since the last call; nothing downloaded");
                        return Ok(stored);
                    }
                    Existing::Conflict | Existing::Unlabelled => {
                        return Err(TransferError::Conflict);
                    }
                    // Deleted since: fetch it in full.
                    Existing::Absent => {
                        self.seen.forget(item.client_id, item.source);
                        match self
                            .downloader
                            .open(item.link, None, item.deadline)
                            .await
                            .map_err(TransferError::Download)?
                        {
                            Opened::Body(d) => *d,
                            Opened::NotModified => {
                                return Err(TransferError::Download(DownloadError::Status(304)));
                            }
                        }
                    }
                }
            }
        };
        let stored = match download.version.clone() {
            Some(version) => {
                let key = self.key(item, &version);
                match self.existing(item, &key, &version).await? {
                    Existing::Ours(stored) => {
                        self.metrics.dedup_hit(DedupKind::AlreadyStored);
                        tracing::info!("already stored; the body is not read");
                        stored
                    }
                    Existing::Conflict | Existing::Unlabelled => {
                        return Err(TransferError::Conflict);
                    }
                    Existing::Absent => {
                        let meta = StatementMetadata::new(
                            item.client_id,
                            item.fip_id,
                            item.account_number,
                            item.request_id,
                            &version,
                        )
                        .retaining(item.retain_until);
                        let etag = download.etag.clone();
                        let stored = self.write(item, &key, download, meta).await?;
                        self.seen
                            .remember(item.client_id, item.source, etag.as_deref(), &version);
                        stored
                    }
                }
            }
            None => self.write_unversioned(item, download).await?,
        };
        Ok(stored)
    }

    /// Writes a source of known version to its key.
    async fn write(
        &self,
        item: &Item<'_>,
        key: &ObjectKey,
        download: Download,
        mut meta: StatementMetadata,
    ) -> Result<StoredObject, TransferError> {
        let len = download.content_length;
        if let Some(len) = len.filter(|_| self.storage.direct_put_fits(len)) {
            let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
            let started = Instant::now();
            // Hashed once, by the SDK for S3's checksum trailer; S3 verifies it and answers it.
            let (pumped, put) = futures_util::future::join(
                download.pump_unhashed(tx, item.deadline),
                self.storage.put_direct(key, rx, len, &meta),
            )
            .await;
            self.record_download(pumped.as_ref().map(|n| *n), put.as_ref().err(), started);
            return match (pumped, put) {
                (_, Ok(DirectPut::AlreadyExists)) => {
                    // Written meanwhile (another call or replica): answer it only if ours.
                    match self.existing(item, key, &source_version(&meta)).await? {
                        Existing::Ours(stored) => Ok(stored),
                        Existing::Conflict | Existing::Unlabelled => Err(TransferError::Conflict),
                        Existing::Absent => Err(TransferError::Storage(StorageError::S3 {
                            op: "PutObject",
                            detail: "precondition failed but no object found".into(),
                        })),
                    }
                }
                (Ok(_), Ok(DirectPut::Stored(stored))) => {
                    tracing::info!(size = stored.size_bytes, sha256 = %stored.sha256, "report stored");
                    Ok(stored)
                }
                (Err(DownloadError::SinkClosed), Err(e)) | (Ok(_), Err(e)) => {
                    Err(TransferError::Storage(e))
                }
                (Err(e), _) => Err(TransferError::Download(e)),
            };
        }
        let (staging, pumped) = self.stage(item.client_id, download, item.deadline).await?;
        meta.sha256 = Some(pumped.sha256.clone());
        match self
            .storage
            .promote(&staging, key, pumped.size, &meta)
            .await
        {
            Ok(stored) => {
                tracing::info!(size = stored.size_bytes, sha256 = %stored.sha256, "report stored");
                Ok(stored)
            }
            Err(e) => {
                self.storage.discard(&staging).await;
                Err(TransferError::Storage(e))
            }
        }
    }

    /// A source whose server gives no version: the content's SHA-256 is its version, known
    /// only once the bytes are in staging.
    async fn write_unversioned(
        &self,
        item: &Item<'_>,
        download: Download,
    ) -> Result<StoredObject, TransferError> {
        let (staging, pumped) = self.stage(item.client_id, download, item.deadline).await?;
        let version = SourceVersion::from_sha256(&pumped.sha256);
        let key = self.key(item, &version);
        let result = match self.existing(item, &key, &version).await {
            Ok(Existing::Ours(stored)) => {
                self.metrics.dedup_hit(DedupKind::AlreadyStored);
                Ok(stored)
            }
            Ok(Existing::Conflict | Existing::Unlabelled) => Err(TransferError::Conflict),
            Ok(Existing::Absent) => {
                let mut meta = StatementMetadata::new(
                    item.client_id,
                    item.fip_id,
                    item.account_number,
                    item.request_id,
                    &version,
                )
                .retaining(item.retain_until);
                meta.sha256 = Some(pumped.sha256.clone());
                return match self
                    .storage
                    .promote(&staging, &key, pumped.size, &meta)
                    .await
                {
                    Ok(stored) => Ok(stored),
                    Err(e) => {
                        self.storage.discard(&staging).await;
                        Err(TransferError::Storage(e))
                    }
                };
            }
            Err(e) => Err(e),
        };
        self.storage.discard(&staging).await;
        result
    }

    /// Streams the body to a fresh staging key (PUT or multipart). On failure the staging
    /// key is gone.
    async fn stage(
        &self,
        client: &ClientId,
        download: Download,
        deadline: Instant,
    ) -> Result<(Staged, Pumped), TransferError> {
        let started = Instant::now();
        let staging = self.storage.new_staging_key(client);
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let len = download.content_length;
        // The download gives up at the deadline and fails the upload through the channel;
        // the upload's own bound (a little later) only guards against a stuck pump.
        let (pumped, uploaded) = futures_util::future::join(
            download.pump(tx, deadline),
            self.storage
                .upload_until(&staging, rx, len, deadline + UPLOAD_DEADLINE_SLACK),
        )
        .await;
        self.record_download(
            pumped.as_ref().map(|p| p.size),
            uploaded.as_ref().err(),
            started,
        );
        match (pumped, uploaded) {
            (Ok(p), Ok(uploaded)) => Ok((
                Staged {
                    key: staging,
                    version_id: uploaded.version_id,
                },
                p,
            )),
            (pumped, uploaded) => {
                // A failed single PUT stores nothing and a failed multipart upload is
                // aborted; this also removes anything a lenient server kept.
                self.storage
                    .discard(&Staged::unknown_version(staging))
                    .await;
                match (pumped, uploaded) {
                    (Err(DownloadError::SinkClosed), Err(e)) | (Ok(_), Err(e)) => {
                        Err(TransferError::Storage(e))
                    }
                    (Err(e), _) => Err(TransferError::Download(e)),
                    (Ok(_), Ok(_)) => Err(TransferError::Storage(StorageError::SourceFailed)),
                }
            }
        }
    }

    fn record_download(
        &self,
        pumped: Result<u64, &DownloadError>,
        storage: Option<&StorageError>,
        started: Instant,
    ) {
        let outcome = match (pumped, storage) {
            (Ok(_), None) => None,
            (_, Some(StorageError::DeadlineExceeded)) => Some(FailureCode::DownloadTimeout),
            (Err(DownloadError::SinkClosed), _) | (Ok(_), Some(_)) => {
                Some(FailureCode::StorageFailed)
            }
            (Err(e), _) => Some(e.code()),
        };
        self.metrics
            .download(outcome, pumped.unwrap_or(0), started.elapsed());
    }
}

fn source_version(meta: &StatementMetadata) -> SourceVersion {
    SourceVersion::from_stored(meta.source_version.clone())
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

    #[test]
    fn seen_versions_are_per_client_and_source_and_bounded() {
        let seen = SeenVersions::default();
        let a = ClientId::parse("aa_1").expect("id");
        let b = ClientId::parse("aa_2").expect("id");
        let src = SourceLocation {
            host: "h".into(),
            path: "/p.pdf".into(),
        };
        let v = SourceVersion::from_headers(Some("\"e\""), None, None).expect("v");
        seen.remember(&a, &src, Some("\"e\""), &v);
        assert_eq!(seen.get(&a, &src), Some(("\"e\"".to_owned(), v.clone())));
        assert_eq!(seen.get(&b, &src), None);
        seen.remember(&b, &src, None, &v);
        assert_eq!(
            seen.get(&b, &src),
            None,
            "only ETags allow a conditional GET"
        );
        seen.forget(&a, &src);
        assert_eq!(seen.get(&a, &src), None);
        for i in 0..=MAX_REMEMBERED_VERSIONS {
            let src = SourceLocation {
                host: "h".into(),
                path: format!("/{i}.pdf"),
            };
            seen.remember(&a, &src, Some("\"e\""), &v);
        }
        assert!(seen.map.lock().map(|m| m.len()).unwrap_or(usize::MAX) <= MAX_REMEMBERED_VERSIONS);
    }
}
