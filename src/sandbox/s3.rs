//! An S3-compatible server (s3s-fs) on its own thread and runtime, listening on loopback.
//! It verifies SigV4 signatures and checksums, like the real thing. It can be stopped and
//! restarted on the same port to simulate an S3 outage, and made to answer PUTs with a
//! transient `503 SlowDown` (what a busy S3 partition does) to exercise the gateway's retries.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder as ConnBuilder,
};
use s3s::{auth::SimpleAuth, service::S3ServiceBuilder};
use tokio::sync::oneshot;

pub const ACCESS_KEY: &str = "sandbox-access-key";
pub const SECRET_KEY: &str = "sandbox-s3-secret-key-do-not-log";

pub struct S3Sandbox {
    root: PathBuf,
    addr: SocketAddr,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// PutObjects under [`FAULT_PATHS`] still to be answered `503 SlowDown`.
    failing_puts: Arc<AtomicUsize>,
}

/// The path part that marks a statement or staging write (`/{bucket}/statements/...` or
/// `/{bucket}/_staging/...`); audit objects and multipart parts are never failed.
const FAULT_PATHS: [&str; 2] = ["/statements/", "/_staging/"];

impl S3Sandbox {
    /// Starts on an ephemeral loopback port, storing under `root`.
    pub fn start(root: &Path) -> std::io::Result<Self> {
        let mut s = Self {
            root: root.to_owned(),
            addr: ([127, 0, 0, 1], 0).into(),
            running: None,
            failing_puts: Arc::default(),
        };
        s.listen()?;
        Ok(s)
    }

    fn listen(&mut self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let listener = std::net::TcpListener::bind(self.addr)?;
        listener.set_nonblocking(true)?;
        self.addr = listener.local_addr()?;
        let fs = s3s_fs::FileSystem::new(&self.root)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3s = builder.build();
        let failing_puts = Arc::clone(&self.failing_puts);
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let s3s = s3s.clone();
                let fail = is_object_put(&req) && take_one(&failing_puts);
                async move {
                    if fail {
                        // Answered before the body is read, as S3 does when it sheds load.
                        return Ok(slow_down());
                    }
                    s3s.call(req.map(s3s::Body::from)).await
                }
            });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sandbox-s3")
            .enable_all()
            .build()?;
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("sandbox-s3".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                            tokio::spawn(async move { let _ = conn.await; });
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
            // Dropping the runtime here aborts every open connection: an outage, not a drain.
            drop(runtime);
        })?;
        self.running = Some((stop_tx, thread));
        Ok(())
    }

    /// Stops serving; open connections are cut. The port stays reserved for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some((tx, thread)) = self.running.take() {
            let _ = tx.send(());
            let _ = thread.join();
        }
    }

    /// Serves again on the same address and data.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.listen()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Answers the next `n` PutObject requests for statement or staging keys with `503
    /// SlowDown`, without storing anything (audit writes and multipart parts pass).
    pub fn fail_next_puts(&self, n: usize) {
        self.failing_puts.store(n, Ordering::SeqCst);
    }

    /// Multipart uploads s3s-fs still holds open (it has no ListMultipartUploads).
    pub fn open_multipart_uploads(&self) -> usize {
        std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".upload-"))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for S3Sandbox {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PutObject (not a part upload, not a CopyObject) of a statement or staging key.
fn is_object_put(req: &hyper::Request<hyper::body::Incoming>) -> bool {
    req.method() == hyper::Method::PUT
        && !req.uri().query().is_some_and(|q| q.contains("uploadId"))
        && !req.headers().contains_key("x-amz-copy-source")
        && FAULT_PATHS.iter().any(|p| req.uri().path().contains(p))
}

/// Takes one pending fault, if any.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn slow_down() -> s3s::HttpResponse {
    let mut resp = s3s::HttpResponse::new(s3s::Body::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".to_owned(),
    ));
    *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    resp
}
