//! Downloading a report from its pre-signed link.
//!
//! The body is checked and hashed as it flows: the first bytes must be `%PDF-` (so an S3 XML
//! error page or an HTML login page is never stored as a statement), the size may not pass
//! `MAX_REPORT_BYTES` (checked on `Content-Length` up front and again while streaming, since a
//! server may lie or send chunked), and SHA-256 is computed on the fly. Chunks go to the S3
//! upload through a bounded channel: awc's body is `!Send` while the SDK's must be `Send`, and
//! the bound is what keeps memory flat whatever the file size.

use std::time::Duration;

use awc::http::{StatusCode, header};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::link_policy::{ForbiddenAddress, ReportLink};

const PDF_MAGIC: &[u8] = b"%PDF-";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    #[error("the report link answered HTTP {0}")]
    Status(u16),
    #[error("the report link has expired")]
    Expired,
    #[error("the report is larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("the report is not a PDF")]
    NotPdf,
    #[error("the report download timed out")]
    Timeout,
    #[error("the report download failed: {0}")]
    Transport(String),
    #[error("the report download ended before its announced length")]
    Truncated,
    #[error("the report link's host resolves to a forbidden address")]
    ForbiddenAddress,
    /// The upload stopped consuming; the storage error explains why.
    #[error("the upload stopped")]
    SinkClosed,
}

impl DownloadError {
    /// Stable per-report error code (API contract and metric label).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Status(_) | Self::Transport(_) | Self::Truncated => "download_failed",
            Self::Expired => "link_expired",
            Self::TooLarge(_) => "too_large",
            Self::NotPdf => "not_a_pdf",
            Self::Timeout => "download_timeout",
            Self::SinkClosed => "storage_failed",
            Self::ForbiddenAddress => "link_rejected",
        }
    }

    /// Worth another attempt from the start: the link itself is fine.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status(s) => *s >= 500 || *s == 429,
            Self::Timeout | Self::Transport(_) | Self::Truncated => true,
            _ => false,
        }
    }
}

pub struct Downloader {
    http: awc::Client,
    max_bytes: u64,
    read_timeout: Duration,
}

/// A response whose status, size and magic bytes were checked; the body is not read yet
/// beyond the first bytes.
pub struct Download {
    resp: awc::ClientResponse,
    head: Vec<Bytes>,
    pub content_length: Option<u64>,
    max_bytes: u64,
    read_timeout: Duration,
}

/// What a finished pump measured.
#[derive(Debug, Clone)]
pub struct Pumped {
    pub size: u64,
    pub sha256: String,
}

impl Downloader {
    pub fn new(http: awc::Client, max_bytes: u64, read_timeout: Duration) -> Self {
        Self {
            http,
            max_bytes,
            read_timeout,
        }
    }

    /// Requests the link and validates everything knowable before storing a byte.
    pub async fn open(&self, link: &ReportLink) -> Result<Download, DownloadError> {
        let mut resp =
            self.http
                .get(link.expose_url().as_str())
                .send()
                .await
                .map_err(|e| match e {
                    awc::error::SendRequestError::Timeout => DownloadError::Timeout,
                    awc::error::SendRequestError::Connect(awc::error::ConnectError::Resolver(
                        e,
                    )) if e.is::<ForbiddenAddress>() => DownloadError::ForbiddenAddress,
                    // Display of a send error names the failure, never the URL.
                    other => DownloadError::Transport(other.to_string()),
                })?;
        match resp.status() {
            s if s.is_success() => {}
            // Pre-signed S3 links answer 403 once expired; any other 403 is equally final
            // for this link, and a fresh link is the only remedy for both.
            StatusCode::FORBIDDEN => return Err(DownloadError::Expired),
            s => return Err(DownloadError::Status(s.as_u16())),
        }
        let content_length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if content_length.is_some_and(|len| len > self.max_bytes) {
            return Err(DownloadError::TooLarge(self.max_bytes));
        }
        let mut head = Vec::new();
        let mut have = 0;
        while have < PDF_MAGIC.len() {
            match next_chunk(&mut resp, self.read_timeout).await? {
                Some(chunk) => {
                    have += chunk.len();
                    head.push(chunk);
                }
                None => break,
            }
        }
        let first: Vec<u8> = head
            .iter()
            .flat_map(|c| c.iter().copied())
            .take(PDF_MAGIC.len())
            .collect();
        if first != PDF_MAGIC {
            return Err(DownloadError::NotPdf);
        }
        Ok(Download {
            resp,
            head,
            content_length,
            max_bytes: self.max_bytes,
            read_timeout: self.read_timeout,
        })
    }
}

impl Download {
    /// Streams the whole body into `tx`, hashing and counting as it goes. On any failure an
    /// `Err` is sent first so the upload fails rather than completing with a short body.
    pub async fn pump(
        mut self,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<Pumped, DownloadError> {
        let result = self.pump_inner(&tx).await;
        if let Err(e) = &result {
            // Ignored error: the upload may already have stopped listening.
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
        result
    }

    async fn pump_inner(
        &mut self,
        tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<Pumped, DownloadError> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let head = std::mem::take(&mut self.head);
        let mut head = head.into_iter();
        loop {
            let chunk = match head.next() {
                Some(c) => c,
                None => match next_chunk(&mut self.resp, self.read_timeout).await? {
                    Some(c) => c,
                    None => break,
                },
            };
            size += chunk.len() as u64;
            if size > self.max_bytes {
                return Err(DownloadError::TooLarge(self.max_bytes));
            }
            hasher.update(&chunk);
            tx.send(Ok(chunk))
                .await
                .map_err(|_| DownloadError::SinkClosed)?;
        }
        if self.content_length.is_some_and(|len| len != size) {
            return Err(DownloadError::Truncated);
        }
        Ok(Pumped {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }
}

async fn next_chunk(
    resp: &mut awc::ClientResponse,
    read_timeout: Duration,
) -> Result<Option<Bytes>, DownloadError> {
    match tokio::time::timeout(read_timeout, resp.next()).await {
        Err(_) => Err(DownloadError::Timeout),
        Ok(None) => Ok(None),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(awc::error::PayloadError::Incomplete(_)))) => Err(DownloadError::Truncated),
        Ok(Some(Err(e))) => Err(DownloadError::Transport(e.to_string())),
    }
}
