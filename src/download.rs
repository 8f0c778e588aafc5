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
use tokio::{
    sync::mpsc,
    time::{Instant, timeout_at},
};

use crate::{
    config::DownloadSettings,
    domain::{FailureCode, SourceVersion},
    link_policy::{LinkRejection, PolicyResolver, ReportLink, rejection_in},
    outbound,
};

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
    /// The call's deadline (`CALL_DEADLINE_MS`) came before the report was in.
    #[error("the call's deadline passed before the report was stored")]
    Deadline,
    #[error("the report download failed: {0}")]
    Transport(String),
    #[error("the report download ended before its announced length")]
    Truncated,
    /// The link policy refused the connection (the resolver found a forbidden address).
    #[error("{0}")]
    LinkRejected(LinkRejection),
    /// The upload stopped consuming; the storage error explains why.
    #[error("the upload stopped")]
    SinkClosed,
}

impl DownloadError {
    /// The report's failure code (API contract and metric label).
    pub fn code(&self) -> FailureCode {
        match self {
            Self::Status(_) | Self::Transport(_) | Self::Truncated => FailureCode::DownloadFailed,
            Self::Expired => FailureCode::LinkExpired,
            Self::TooLarge(_) => FailureCode::TooLarge,
            Self::NotPdf => FailureCode::NotAPdf,
            Self::Timeout | Self::Deadline => FailureCode::DownloadTimeout,
            Self::SinkClosed => FailureCode::StorageFailed,
            Self::LinkRejected(_) => FailureCode::LinkRejected,
        }
    }

    /// The link-policy reason when the failure is the policy refusing the connection.
    pub fn link_rejection(&self) -> Option<LinkRejection> {
        match self {
            Self::LinkRejected(r) => Some(*r),
            _ => None,
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

/// The report-link HTTP client: every connection resolves through the link policy, no
/// redirects, bounded connect and response-head time, and the shared pool rules
/// ([`outbound`]).
pub fn link_client(d: &DownloadSettings) -> awc::Client {
    let resolver = PolicyResolver::new(
        d.policy.clone(),
        std::sync::Arc::new(d.pinned_hosts.clone()),
    );
    let tcp = actix_tls::connect::Connector::new(actix_tls::connect::Resolver::custom(resolver))
        .service();
    awc::Client::builder()
        .connector(outbound::connector(
            awc::Connector::new()
                .connector(tcp)
                .timeout(d.connect_timeout),
        ))
        .disable_redirects()
        .timeout(d.connect_timeout)
        .finish()
}

pub struct Downloader {
    http: awc::Client,
    max_bytes: u64,
    read_timeout: Duration,
}

/// A response whose status, size and magic bytes were checked; the body is not read yet
/// beyond the first bytes. Dropping it closes the connection without reading further.
pub struct Download {
    resp: awc::ClientResponse,
    head: Vec<Bytes>,
    pub content_length: Option<u64>,
    /// The source's version as its server tells (ETag, else Last-Modified + length).
    pub version: Option<SourceVersion>,
    /// The raw ETag, for a later conditional GET.
    pub etag: Option<String>,
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

    /// Requests the link and validates everything knowable before storing a byte, by
    /// `deadline` at the latest. With `if_none_match` (an ETag seen before) an unchanged source
    /// answers 304 and sends nothing.
    pub async fn open(
        &self,
        link: &ReportLink,
        if_none_match: Option<&str>,
        deadline: Instant,
    ) -> Result<Opened, DownloadError> {
        let mut req = self.http.get(link.expose_url().as_str());
        if let Some(etag) = if_none_match {
            req = req.insert_header((header::IF_NONE_MATCH, etag));
        }
        let sent = timeout_at(deadline, req.send())
            .await
            .map_err(|_| DownloadError::Deadline)?;
        let mut resp = sent.map_err(|e| match e {
            awc::error::SendRequestError::Timeout => DownloadError::Timeout,
            awc::error::SendRequestError::Connect(awc::error::ConnectError::Resolver(e)) => {
                match rejection_in(&*e) {
                    Some(rejection) => DownloadError::LinkRejected(rejection),
                    None => DownloadError::Transport(e.to_string()),
                }
            }
            // Display of a send error names the failure, never the URL.
            other => DownloadError::Transport(other.to_string()),
        })?;
        match resp.status() {
            StatusCode::NOT_MODIFIED if if_none_match.is_some() => return Ok(Opened::NotModified),
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
        let text = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = text(header::ETAG);
        let version = SourceVersion::from_headers(
            etag.as_deref(),
            text(header::LAST_MODIFIED).as_deref(),
            content_length,
        );
        let mut head = Vec::new();
        let mut have = 0;
        while have < PDF_MAGIC.len() {
            match next_chunk(&mut resp, self.read_timeout, deadline).await? {
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
        Ok(Opened::Body(Box::new(Download {
            resp,
            head,
            content_length,
            version,
            etag,
            max_bytes: self.max_bytes,
            read_timeout: self.read_timeout,
        })))
    }
}

/// What opening a link gave.
pub enum Opened {
    /// The source is unchanged since the ETag sent (nothing was downloaded).
    NotModified,
    Body(Box<Download>),
}

impl Download {
    /// Streams the whole body into `tx`, hashing and counting as it goes, until `deadline`.
    /// On any failure an `Err` is sent first so the upload fails (and aborts) rather than
    /// completing with a short body. That last send is not bounded by the deadline: the
    /// upload side stops listening shortly after it, which ends the send.
    pub async fn pump(
        self,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
        deadline: Instant,
    ) -> Result<Pumped, DownloadError> {
        let mut hasher = Sha256::new();
        let size = self.stream(tx, deadline, Some(&mut hasher)).await?;
        Ok(Pumped {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// [`Self::pump`] without hashing; returns the size. For a direct PUT with S3's SHA-256
    /// checksum trailer: the SDK hashes every byte for the trailer, S3 verifies it and
    /// answers it, so a second pass here would hash each byte twice for the same digest
    /// (the largest share of the gateway's CPU per byte, bench/RESULTS.md).
    pub async fn pump_unhashed(
        self,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
        deadline: Instant,
    ) -> Result<u64, DownloadError> {
        self.stream(tx, deadline, None).await
    }

    async fn stream(
        mut self,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
        deadline: Instant,
        hasher: Option<&mut Sha256>,
    ) -> Result<u64, DownloadError> {
        let result = self.stream_inner(&tx, deadline, hasher).await;
        if let Err(e) = &result {
            // Ignored error: the upload may already have stopped listening.
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
        result
    }

    async fn stream_inner(
        &mut self,
        tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
        deadline: Instant,
        mut hasher: Option<&mut Sha256>,
    ) -> Result<u64, DownloadError> {
        let mut size = 0u64;
        let head = std::mem::take(&mut self.head);
        let mut head = head.into_iter();
        loop {
            let chunk = match head.next() {
                Some(c) => c,
                None => match next_chunk(&mut self.resp, self.read_timeout, deadline).await? {
                    Some(c) => c,
                    None => break,
                },
            };
            size += chunk.len() as u64;
            if size > self.max_bytes {
                return Err(DownloadError::TooLarge(self.max_bytes));
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&chunk);
            }
            // A slow upload (waiting for S3 or for buffer budget) holds the download here.
            timeout_at(deadline, tx.send(Ok(chunk)))
                .await
                .map_err(|_| DownloadError::Deadline)?
                .map_err(|_| DownloadError::SinkClosed)?;
        }
        if self.content_length.is_some_and(|len| len != size) {
            return Err(DownloadError::Truncated);
        }
        Ok(size)
    }
}

/// The next body chunk: within the read timeout (a silent link) and the deadline (a link that
/// keeps sending a few bytes, which the read timeout never catches).
async fn next_chunk(
    resp: &mut awc::ClientResponse,
    read_timeout: Duration,
    deadline: Instant,
) -> Result<Option<Bytes>, DownloadError> {
    let silence_until = Instant::now() + read_timeout;
    match timeout_at(silence_until.min(deadline), resp.next()).await {
        Err(_) if silence_until < deadline => Err(DownloadError::Timeout),
        Err(_) => Err(DownloadError::Deadline),
        Ok(None) => Ok(None),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(awc::error::PayloadError::Incomplete(_)))) => Err(DownloadError::Truncated),
        Ok(Some(Err(e))) => Err(DownloadError::Transport(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    //! The downloader against a real HTTP server on loopback (no mocks): each route plays one
    //! way a link can behave.

    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use actix_web::{App, HttpResponse, HttpServer, web};
    use futures_util::stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::link_policy::{HostPattern, LinkPolicy, RawLink};

    const MAX: u64 = 64 * 1024;

    fn pdf(len: usize) -> Vec<u8> {
        let mut body = b"%PDF-1.7\n".to_vec();
        body.extend((0..len - body.len()).map(|i| (i % 251) as u8));
        body
    }

    /// Starts the link server and returns its port.
    fn serve() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(|| {
            App::new()
                .route(
                    "/ok",
                    web::get().to(|| async { HttpResponse::Ok().body(pdf(40_000)) }),
                )
                .route(
                    "/html",
                    web::get().to(|| async { HttpResponse::Ok().body("<html>login</html>") }),
                )
                .route(
                    "/big",
                    web::get().to(|| async { HttpResponse::Ok().body(pdf(MAX as usize + 1)) }),
                )
                .route(
                    "/chunked-big",
                    web::get().to(|| async {
                        let chunks = (0..20).map(|i| {
                            let chunk = if i == 0 { pdf(8192) } else { vec![7u8; 8192] };
                            Ok::<_, std::io::Error>(Bytes::from(chunk))
                        });
                        HttpResponse::Ok().streaming(stream::iter(chunks))
                    }),
                )
                .route(
                    "/gone",
                    web::get().to(|| async { HttpResponse::Forbidden().finish() }),
                )
                .route(
                    "/broken",
                    web::get().to(|| async { HttpResponse::InternalServerError().finish() }),
                )
                .route(
                    "/drips",
                    web::get().to(|| async {
                        let head = stream::once(async {
                            Ok::<_, std::io::Error>(Bytes::from_static(b"%PDF-1.7\n"))
                        });
                        let drips = stream::unfold((), |()| async {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
                        });
                        HttpResponse::Ok().streaming(head.chain(drips))
                    }),
                )
                .route(
                    "/stalls",
                    web::get().to(|| async {
                        let head = stream::once(async {
                            Ok::<_, std::io::Error>(Bytes::from_static(b"%PDF-1.7\n"))
                        });
                        HttpResponse::Ok().streaming(head.chain(stream::pending()))
                    }),
                )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        port
    }

    fn downloader(read_timeout: Duration) -> Downloader {
        Downloader::new(awc::Client::default(), MAX, read_timeout)
    }

    fn link(port: u16, path: &str) -> ReportLink {
        let pattern = HostPattern::parse(&format!("127.0.0.1:{port}")).expect("pattern");
        LinkPolicy::new(vec![pattern], true)
            .check(&RawLink::new(format!("http://127.0.0.1:{port}{path}")))
            .expect("allowed")
    }

    /// Opens and pumps the whole body, returning what the upload side received.
    fn far() -> Instant {
        Instant::now() + Duration::from_secs(600)
    }

    async fn fetch(d: &Downloader, link: &ReportLink) -> Result<(Pumped, Vec<u8>), DownloadError> {
        fetch_until(d, link, far()).await
    }

    async fn fetch_until(
        d: &Downloader,
        link: &ReportLink,
        deadline: Instant,
    ) -> Result<(Pumped, Vec<u8>), DownloadError> {
        let Opened::Body(download) = d.open(link, None, deadline).await? else {
            return Err(DownloadError::Status(304));
        };
        let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let collect = async move {
            let mut got = Vec::new();
            while let Some(Ok(chunk)) = rx.recv().await {
                got.extend_from_slice(&chunk);
            }
            got
        };
        let (pumped, got) = tokio::join!(download.pump(tx, deadline), collect);
        pumped.map(|p| (p, got))
    }

    #[actix_web::test]
    async fn a_pdf_streams_through_with_its_size_and_sha256() {
        let port = serve();
        let d = downloader(Duration::from_secs(5));
        let (pumped, got) = fetch(&d, &link(port, "/ok")).await.expect("download");
        let want = pdf(40_000);
        assert_eq!(got, want);
        assert_eq!(pumped.size, want.len() as u64);
        assert_eq!(pumped.sha256, hex::encode(Sha256::digest(&want)));
    }

    #[actix_web::test]
    async fn each_bad_link_gets_its_failure_code() {
        let port = serve();
        let d = downloader(Duration::from_millis(300));
        let cases = [
            ("/html", DownloadError::NotPdf, FailureCode::NotAPdf),
            ("/big", DownloadError::TooLarge(MAX), FailureCode::TooLarge),
            (
                "/chunked-big",
                DownloadError::TooLarge(MAX),
                FailureCode::TooLarge,
            ),
            ("/gone", DownloadError::Expired, FailureCode::LinkExpired),
            (
                "/broken",
                DownloadError::Status(500),
                FailureCode::DownloadFailed,
            ),
            (
                "/stalls",
                DownloadError::Timeout,
                FailureCode::DownloadTimeout,
            ),
        ];
        for (path, error, code) in cases {
            let got = fetch(&d, &link(port, path)).await.err();
            assert_eq!(got.as_ref(), Some(&error), "{path}");
            assert_eq!(error.code(), code, "{path}");
        }
    }

    /// A link that keeps sending a little (never silent for the read timeout) is cut at the
    /// deadline, as `download_timeout`, and is not worth a retry.
    #[actix_web::test]
    async fn a_dripping_link_is_cut_at_the_deadline() {
        let port = serve();
        let d = downloader(Duration::from_secs(5));
        let started = Instant::now();
        let got = fetch_until(
            &d,
            &link(port, "/drips"),
            Instant::now() + Duration::from_millis(700),
        )
        .await
        .err();
        assert_eq!(got, Some(DownloadError::Deadline));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(DownloadError::Deadline.code(), FailureCode::DownloadTimeout);
        assert!(!DownloadError::Deadline.is_transient());
    }

    /// A link server on a raw socket that keeps its connections open and answers a
    /// conditional GET with a 304 that carries `Content-Length` (allowed: it describes the
    /// representation, yet a 304 never has content, RFC 9110 §8.6 and §15.4.5) and any other
    /// GET with the PDF; returns its port and how many connections it accepted.
    async fn serve_304_with_content_length(pdf: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        actix_web::rt::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let pdf = pdf.clone();
                actix_web::rt::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let request: Vec<u8> = buf.drain(..end + 4).collect();
                        let request = String::from_utf8_lossy(&request).to_ascii_lowercase();
                        let answer = if request.contains("\r\nif-none-match:") {
                            b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 16\r\n\r\n"
                                .to_vec()
                        } else {
                            let mut a = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/pdf\r\netag: \"v1\"\r\ncontent-length: {}\r\n\r\n",
                                pdf.len()
                            )
                            .into_bytes();
                            a.extend_from_slice(&pdf);
                            a
                        };
                        if conn.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    /// CVE-2026-137505 (GHSA-fcfj-25hf-wjp3, actix-http < 3.20.4): awc reads a body on a 304
    /// that carries framing headers, and so takes the next answer on that keep-alive
    /// connection for it. A repeat call's conditional GET of one report (304), then the GET
    /// of another report of the same host, through the gateway's own link client: the second
    /// answer is read whole and correct. It holds on 3.20.0 because the downloader never reads
    /// a 304's body, and awc closes (never pools) a connection whose body was not read to its
    /// end.
    #[actix_web::test]
    async fn a_304_with_content_length_does_not_swallow_the_next_answer_on_its_connection() {
        let body = pdf(20_000);
        let (port, accepted) = serve_304_with_content_length(body.clone()).await;
        let settings = crate::config::Settings::from_lookup(|name| match name {
            "AUTH_DISABLED" | "REPORT_LINK_ALLOW_HTTP" => Some("true".to_owned()),
            "FINPASS_API_KEY" | "FINPASS_API_SECRET" => Some("x".to_owned()),
            "STATEMENTS_BUCKET" => Some("b".to_owned()),
            "REPORT_LINK_ALLOWED_HOSTS" => Some(format!("127.0.0.1:{port}")),
            _ => None,
        })
        .expect("settings");
        let d = Downloader::new(
            link_client(&settings.download),
            MAX,
            Duration::from_secs(30),
        );

        for round in 0..3 {
            let unchanged = d
                .open(&link(port, "/seen-before.pdf"), Some("\"v1\""), far())
                .await
                .unwrap_or_else(|e| panic!("conditional GET (round {round}): {e}"));
            assert!(matches!(unchanged, Opened::NotModified), "round {round}");
            let (pumped, got) = fetch(&d, &link(port, "/new.pdf"))
                .await
                .unwrap_or_else(|e| panic!("the GET after the 304 (round {round}): {e}"));
            assert_eq!(got, body, "round {round}");
            assert_eq!(pumped.size, body.len() as u64);
            assert_eq!(pumped.sha256, hex::encode(Sha256::digest(&body)));
        }
        eprintln!(
            "link server accepted {} connections for 6 requests",
            accepted.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn only_failures_of_the_transfer_are_worth_a_retry() {
        assert!(DownloadError::Status(503).is_transient());
        assert!(DownloadError::Status(429).is_transient());
        assert!(DownloadError::Timeout.is_transient());
        assert!(DownloadError::Truncated.is_transient());
        assert!(!DownloadError::Status(404).is_transient());
        assert!(!DownloadError::NotPdf.is_transient());
        assert!(!DownloadError::Expired.is_transient());
        assert_eq!(
            DownloadError::LinkRejected(LinkRejection::ForbiddenAddress).link_rejection(),
            Some(LinkRejection::ForbiddenAddress)
        );
    }
}
