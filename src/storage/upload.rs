//! Streaming a body into a staging key: one PUT when the size is known and moderate, a
//! multipart upload otherwise. Memory stays bounded by the channel plus
//! `MULTIPART_CONCURRENCY + 1` parts per upload, whatever the report's size, and all uploads
//! together by the process-wide part-buffer budget (`UPLOAD_BUFFER_BUDGET_BYTES`): past it
//! uploads wait for buffers, which holds their downloads back through the bounded channel.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use aws_sdk_s3::{
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption},
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::{
    sync::{OwnedSemaphorePermit, mpsc},
    task::JoinHandle,
    time::{Instant, sleep_until, timeout_at},
};
use tokio_stream::wrappers::ReceiverStream;

use super::{Encryption, PDF_CONTENT_TYPE, Storage, StorageError};
use crate::{
    domain::ObjectKey,
    metrics::{InFlightKind, S3Op, UploadOutcome},
};

/// The download side sends chunks here; an `Err` makes the upload fail (and abort).
pub type BodyReceiver = mpsc::Receiver<Result<Bytes, std::io::Error>>;

/// What an upload stored: its size, and the version S3 made of it on a versioned bucket
/// (what a delete must name to remove the bytes rather than hide them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub size: u64,
    pub version_id: Option<String>,
}

/// A PUT body that streams whatever arrives on `body` (awc's body is `!Send`, the SDK's must
/// be `Send`: the bounded channel between them is what keeps memory flat).
pub(super) fn streaming_body(body: BodyReceiver) -> ByteStream {
    let frames = ReceiverStream::new(body).map(|r| r.map(Frame::data));
    ByteStream::from_body_1_x(StreamBody::new(frames))
}

impl Storage {
    /// Uploads everything received on `body` to `key` (a staging key). On any failure nothing
    /// remains: a failed PUT stores nothing, a failed multipart upload is aborted.
    pub async fn upload(
        &self,
        key: &ObjectKey,
        body: BodyReceiver,
        len: Option<u64>,
    ) -> Result<Uploaded, StorageError> {
        let unbounded = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        self.upload_until(key, body, len, unbounded).await
    }

    /// [`Self::upload`], giving up at `deadline` if the body or the buffer budget makes it
    /// wait that long ([`StorageError::DeadlineExceeded`]; the upload is aborted).
    pub async fn upload_until(
        &self,
        key: &ObjectKey,
        body: BodyReceiver,
        len: Option<u64>,
        deadline: Instant,
    ) -> Result<Uploaded, StorageError> {
        let started = std::time::Instant::now();
        let _guard = self.metrics.in_flight(InFlightKind::S3Upload);
        let result = match len {
            Some(len) if len <= self.multipart_threshold => self
                .put_single(key, body, len)
                .await
                .map(|version_id| Uploaded {
                    size: len,
                    version_id,
                }),
            _ => self.put_multipart(key, body, deadline).await,
        };
        let outcome = match &result {
            Ok(_) => UploadOutcome::Success,
            Err(StorageError::SourceFailed | StorageError::DeadlineExceeded) => {
                UploadOutcome::SourceFailed
            }
            Err(StorageError::S3 { .. } | StorageError::Transient { .. }) => UploadOutcome::Error,
        };
        let size = result.as_ref().map_or(0, |u| u.size);
        self.metrics.upload(outcome, size, started.elapsed());
        result
    }

    /// One streamed PUT. Its body ends (in error) when the download gives up at the deadline;
    /// the data timeouts bound it otherwise.
    async fn put_single(
        &self,
        key: &ObjectKey,
        body: BodyReceiver,
        len: u64,
    ) -> Result<Option<String>, StorageError> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(PDF_CONTENT_TYPE)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .body(streaming_body(body));
        let req = with_encryption!(req, &self.encryption);
        self.metrics.s3_request(S3Op::PutObject);
        let result = req.customize().config_override(self.data_op()).send().await;
        // Only success says something about S3 here: a failure may be the body's (the
        // download broke or hit its deadline), which must not mark S3 down.
        if result.is_ok() {
            self.health.set(true);
        }
        result
            .map(|out| out.version_id)
            .map_err(StorageError::s3("PutObject"))
    }

    async fn put_multipart(
        &self,
        key: &ObjectKey,
        mut body: BodyReceiver,
        deadline: Instant,
    ) -> Result<Uploaded, StorageError> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(PDF_CONTENT_TYPE);
        let req = with_encryption!(req, &self.encryption);
        self.metrics.s3_request(S3Op::CreateMultipartUpload);
        let created = req.send().await;
        self.health.observe(&created);
        let created = created.map_err(StorageError::s3("CreateMultipartUpload"))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StorageError::S3 {
                op: "CreateMultipartUpload",
                detail: "no upload id".into(),
            })?
            .to_owned();
        let result = match self
            .upload_parts(key, &upload_id, &mut body, deadline)
            .await
        {
            Ok((parts, size)) => {
                self.metrics.s3_request(S3Op::CompleteMultipartUpload);
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key.as_str())
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .customize()
                    .config_override(self.data_op())
                    .send()
                    .await
                    .map(|out| Uploaded {
                        size,
                        version_id: out.version_id,
                    })
                    .map_err(StorageError::s3("CompleteMultipartUpload"))
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.abort_multipart(key, &upload_id).await;
        }
        result
    }

    /// Reads `part_size` chunks and uploads up to `parts_in_flight` of them while the next one
    /// is being read: the download waits for S3 only when that many parts are still in
    /// flight, and S3 servers that handle parts in parallel are kept busy. Memory is
    /// `parts_in_flight + 1` parts per upload, and every part buffer is paid for from the
    /// process-wide budget first ([`Self::part_buffer`]).
    async fn upload_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        body: &mut BodyReceiver,
        deadline: Instant,
    ) -> Result<(Vec<CompletedPart>, u64), StorageError> {
        let mut parts = Parts {
            in_flight: VecDeque::new(),
            done: Vec::new(),
            spare: Vec::new(),
        };
        let result = async {
            let mut buf = self.part_buffer(&mut parts, deadline).await?;
            let mut number = 0;
            let mut size = 0u64;
            loop {
                let next = timeout_at(deadline, body.recv())
                    .await
                    .map_err(|_| StorageError::DeadlineExceeded)?;
                match next {
                    Some(Ok(mut chunk)) => {
                        size += chunk.len() as u64;
                        while !chunk.is_empty() {
                            let take = chunk.len().min(self.part_size - buf.bytes.len());
                            buf.bytes.extend_from_slice(&chunk.split_to(take));
                            if buf.bytes.len() == self.part_size {
                                number += 1;
                                self.start_part(&mut parts, key, upload_id, number, buf)
                                    .await?;
                                buf = self.part_buffer(&mut parts, deadline).await?;
                            }
                        }
                    }
                    Some(Err(_)) => return Err(StorageError::SourceFailed),
                    None => break,
                }
            }
            if !buf.bytes.is_empty() {
                number += 1;
                self.start_part(&mut parts, key, upload_id, number, buf)
                    .await?;
            }
            while let Some((next, permit)) = parts.in_flight.pop_front() {
                parts.done.push(join_part(next).await?.0);
                drop(permit);
            }
            Ok(size)
        }
        .await;
        for (handle, _permit) in parts.in_flight {
            handle.abort();
        }
        result.map(|size| (parts.done, size))
    }

    /// An empty buffer of `part_size` capacity: a spare one of this upload, else one paid for
    /// from the process-wide budget. When the budget is spent this waits (back-pressure,
    /// never a failure) for whichever comes first: budget that other uploads release, or this
    /// upload's own oldest part finishing, whose buffer is then reused. An upload holding
    /// buffers therefore always makes progress on its own, so uploads cannot deadlock each
    /// other; one holding none just waits its turn (the semaphore is fair). Gives up at
    /// `deadline`.
    async fn part_buffer(
        &self,
        parts: &mut Parts,
        deadline: Instant,
    ) -> Result<PartBuffer, StorageError> {
        let cost = u32::try_from(self.part_size).unwrap_or(u32::MAX);
        loop {
            if let Some(spare) = parts.spare.pop() {
                return Ok(spare);
            }
            if parts.in_flight.len() >= self.parts_in_flight {
                self.finish_oldest(parts).await?;
                continue;
            }
            if let Ok(permit) = Arc::clone(&self.buffer_budget).try_acquire_many_owned(cost) {
                return Ok(PartBuffer::new(self.part_size, permit));
            }
            let waited = {
                let own_part = async {
                    match parts.in_flight.front_mut() {
                        Some((handle, _)) => Some(handle.await),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    permit = Arc::clone(&self.buffer_budget).acquire_many_owned(cost) => {
                        Waited::Budget(permit)
                    }
                    joined = own_part => Waited::OwnPart(Box::new(joined)),
                    () = sleep_until(deadline) => Waited::Deadline,
                }
            };
            match waited {
                Waited::Budget(Ok(permit)) => return Ok(PartBuffer::new(self.part_size, permit)),
                // The budget is never closed; treat it like the deadline should it be.
                Waited::Budget(Err(_)) | Waited::Deadline => {
                    return Err(StorageError::DeadlineExceeded);
                }
                Waited::OwnPart(joined) => {
                    let (_, permit) = parts.in_flight.pop_front().ok_or(StorageError::S3 {
                        op: "UploadPart",
                        detail: "no part in flight".into(),
                    })?;
                    let joined = (*joined).ok_or(StorageError::S3 {
                        op: "UploadPart",
                        detail: "no part in flight".into(),
                    })?;
                    let (part, used) = part_result(joined)?;
                    parts.done.push(part);
                    parts.recycle(used, permit);
                }
            }
        }
    }

    /// Waits for the oldest part in flight; its buffer becomes a spare. Parts complete in
    /// order, so `done` stays sorted by number.
    async fn finish_oldest(&self, parts: &mut Parts) -> Result<(), StorageError> {
        if let Some((oldest, permit)) = parts.in_flight.pop_front() {
            let (part, used) = join_part(oldest).await?;
            parts.done.push(part);
            parts.recycle(used, permit);
        }
        Ok(())
    }

    /// Starts uploading a full (or the last) part, once fewer than `parts_in_flight` are.
    async fn start_part(
        &self,
        parts: &mut Parts,
        key: &ObjectKey,
        upload_id: &str,
        number: i32,
        buf: PartBuffer,
    ) -> Result<(), StorageError> {
        if parts.in_flight.len() >= self.parts_in_flight {
            self.finish_oldest(parts).await?;
        }
        let PartBuffer { bytes, permit } = buf;
        let task = self.spawn_part(key, upload_id, number, bytes.freeze());
        parts.in_flight.push_back((task, permit));
        Ok(())
    }

    fn spawn_part(&self, key: &ObjectKey, upload_id: &str, number: i32, data: Bytes) -> PartTask {
        self.metrics.s3_request(S3Op::UploadPart);
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(data.len()).unwrap_or(i64::MAX))
            .body(ByteStream::from(data.clone()))
            .customize()
            .config_override(self.data_op());
        tokio::spawn(upload_part(req, number, data))
    }

    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) {
        self.metrics.s3_request(S3Op::AbortMultipartUpload);
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = result {
            tracing::error!(key = %key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "AbortMultipartUpload failed; the bucket's abort-incomplete-multipart lifecycle rule will clean up");
        }
    }
}

/// What a wait for a part buffer ended with.
enum Waited {
    Budget(Result<OwnedSemaphorePermit, tokio::sync::AcquireError>),
    OwnPart(Box<Option<Result<PartOutput, tokio::task::JoinError>>>),
    Deadline,
}

/// A part buffer and the share of the budget it holds; dropping it returns both.
struct PartBuffer {
    bytes: BytesMut,
    permit: OwnedSemaphorePermit,
}

impl PartBuffer {
    fn new(part_size: usize, permit: OwnedSemaphorePermit) -> Self {
        Self {
            bytes: BytesMut::with_capacity(part_size),
            permit,
        }
    }
}

/// The parts of one multipart upload.
struct Parts {
    /// Uploading, oldest first, each with its buffer's share of the budget.
    in_flight: VecDeque<(PartTask, OwnedSemaphorePermit)>,
    done: Vec<CompletedPart>,
    /// Part buffers come back from finished uploads and are refilled, so a 1 GiB report
    /// touches `parts_in_flight + 1` buffers rather than one fresh allocation per part: fresh
    /// buffers cost page faults and fragment the allocator's heap, which made peak RSS vary
    /// by a seventh between runs (bench/RESULTS.md).
    spare: Vec<PartBuffer>,
}

impl Parts {
    /// Takes back a part's bytes once its upload is done. Reusable only when nothing else
    /// (the SDK, a retry) still holds a reference; otherwise it is freed, and its share of
    /// the budget with it.
    fn recycle(&mut self, used: Bytes, permit: OwnedSemaphorePermit) {
        if let Ok(mut bytes) = used.try_into_mut() {
            bytes.clear();
            self.spare.push(PartBuffer { bytes, permit });
        }
    }
}

/// What a part upload hands back: the completed part, and its buffer for reuse.
type PartOutput = Result<(CompletedPart, Bytes), StorageError>;
type PartTask = JoinHandle<PartOutput>;

fn part_result(joined: Result<PartOutput, tokio::task::JoinError>) -> PartOutput {
    joined.map_err(|e| StorageError::S3 {
        op: "UploadPart",
        detail: e.to_string(),
    })?
}

async fn join_part(handle: PartTask) -> PartOutput {
    part_result(handle.await)
}

async fn upload_part(
    req: aws_sdk_s3::client::customize::CustomizableOperation<
        aws_sdk_s3::operation::upload_part::UploadPartOutput,
        aws_sdk_s3::operation::upload_part::UploadPartError,
        aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder,
    >,
    number: i32,
    data: Bytes,
) -> PartOutput {
    let out = req.send().await.map_err(StorageError::s3("UploadPart"))?;
    let part = CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag().map(str::to_owned))
        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
        .build();
    Ok((part, data))
}

#[cfg(test)]
mod tests {
    use tokio::sync::Semaphore;

    use super::*;

    fn parts() -> Parts {
        Parts {
            in_flight: VecDeque::new(),
            done: Vec::new(),
            spare: Vec::new(),
        }
    }

    fn buffer(budget: &Arc<Semaphore>) -> PartBuffer {
        let permit = Arc::clone(budget)
            .try_acquire_many_owned(1024)
            .expect("budget");
        PartBuffer::new(1024, permit)
    }

    #[test]
    fn finished_part_buffers_are_refilled_instead_of_reallocated() {
        let budget = Arc::new(Semaphore::new(1024));
        let mut parts = parts();
        let mut first = buffer(&budget);
        first.bytes.extend_from_slice(&[1; 1024]);
        let ptr = first.bytes.as_ptr();
        let PartBuffer { bytes, permit } = first;
        parts.recycle(bytes.freeze(), permit);
        let again = parts.spare.pop().expect("a spare buffer");
        assert_eq!(
            again.bytes.as_ptr(),
            ptr,
            "the same memory is handed out again"
        );
        assert!(again.bytes.is_empty() && again.bytes.capacity() >= 1024);
        assert_eq!(
            budget.available_permits(),
            0,
            "a spare buffer keeps its share of the budget"
        );
    }

    #[test]
    fn a_buffer_still_referenced_elsewhere_is_freed_with_its_budget() {
        let budget = Arc::new(Semaphore::new(1024));
        let mut parts = parts();
        let mut first = buffer(&budget);
        first.bytes.extend_from_slice(b"%PDF-");
        let PartBuffer { bytes, permit } = first;
        let frozen = bytes.freeze();
        let held_by_sdk = frozen.clone();
        parts.recycle(frozen, permit);
        assert!(
            parts.spare.is_empty(),
            "a shared buffer is never overwritten"
        );
        assert_eq!(budget.available_permits(), 1024, "its budget is back");
        assert_eq!(&held_by_sdk[..], b"%PDF-");
    }
}
