//! Streaming a body into a staging key: one PUT when the size is known and moderate, a
//! multipart upload otherwise. Memory stays bounded by the channel plus
//! `MULTIPART_CONCURRENCY + 1` parts, whatever the report's size.

use std::{collections::VecDeque, time::Instant};

use aws_sdk_s3::{
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption},
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;

use super::{Encryption, PDF_CONTENT_TYPE, Storage, StorageError};
use crate::{
    domain::ObjectKey,
    metrics::{InFlightKind, S3Op, UploadOutcome},
};

/// The download side sends chunks here; an `Err` makes the upload fail (and abort).
pub type BodyReceiver = mpsc::Receiver<Result<Bytes, std::io::Error>>;

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
    ) -> Result<u64, StorageError> {
        let started = Instant::now();
        let _guard = self.metrics.in_flight(InFlightKind::S3Upload);
        let result = match len {
            Some(len) if len <= self.multipart_threshold => {
                self.put_single(key, body, len).await.map(|()| len)
            }
            _ => self.put_multipart(key, body).await,
        };
        let outcome = match &result {
            Ok(_) => UploadOutcome::Success,
            Err(StorageError::SourceFailed) => UploadOutcome::SourceFailed,
            Err(StorageError::S3 { .. }) => UploadOutcome::Error,
        };
        self.metrics
            .upload(outcome, *result.as_ref().unwrap_or(&0), started.elapsed());
        result
    }

    async fn put_single(
        &self,
        key: &ObjectKey,
        body: BodyReceiver,
        len: u64,
    ) -> Result<(), StorageError> {
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
        req.send()
            .await
            .map(|_| ())
            .map_err(StorageError::s3("PutObject"))
    }

    async fn put_multipart(
        &self,
        key: &ObjectKey,
        mut body: BodyReceiver,
    ) -> Result<u64, StorageError> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(PDF_CONTENT_TYPE);
        let req = with_encryption!(req, &self.encryption);
        self.metrics.s3_request(S3Op::CreateMultipartUpload);
        let created = req
            .send()
            .await
            .map_err(StorageError::s3("CreateMultipartUpload"))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StorageError::S3 {
                op: "CreateMultipartUpload",
                detail: "no upload id".into(),
            })?
            .to_owned();
        let result = match self.upload_parts(key, &upload_id, &mut body).await {
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
                    .send()
                    .await
                    .map(|_| size)
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
    /// `parts_in_flight + 1` parts.
    async fn upload_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        body: &mut BodyReceiver,
    ) -> Result<(Vec<CompletedPart>, u64), StorageError> {
        let mut parts = Parts {
            in_flight: VecDeque::new(),
            done: Vec::new(),
            buffers: PartBuffers::new(self.part_size),
        };
        let mut buf = parts.buffers.next();
        let mut number = 0;
        let mut size = 0u64;
        let result = async {
            loop {
                let done = match body.recv().await {
                    Some(Ok(mut chunk)) => {
                        size += chunk.len() as u64;
                        while !chunk.is_empty() {
                            let take = chunk.len().min(self.part_size - buf.len());
                            buf.extend_from_slice(&chunk.split_to(take));
                            if buf.len() == self.part_size {
                                number += 1;
                                let full = std::mem::take(&mut buf).freeze();
                                self.rotate(&mut parts, key, upload_id, number, full)
                                    .await?;
                                buf = parts.buffers.next();
                            }
                        }
                        false
                    }
                    Some(Err(_)) => return Err(StorageError::SourceFailed),
                    None => true,
                };
                if done {
                    if !buf.is_empty() {
                        number += 1;
                        let last = std::mem::take(&mut buf).freeze();
                        self.rotate(&mut parts, key, upload_id, number, last)
                            .await?;
                    }
                    break;
                }
            }
            while let Some(next) = parts.in_flight.pop_front() {
                parts.done.push(join_part(next).await?.0);
            }
            Ok(())
        }
        .await;
        for handle in parts.in_flight {
            handle.abort();
        }
        result.map(|()| (parts.done, size))
    }

    /// Waits for the oldest part when `parts_in_flight` are already uploading (its buffer
    /// becomes a spare), then starts `data` as the next one. Parts complete in order, so
    /// `done` stays sorted by number.
    async fn rotate(
        &self,
        parts: &mut Parts,
        key: &ObjectKey,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<(), StorageError> {
        if parts.in_flight.len() >= self.parts_in_flight
            && let Some(oldest) = parts.in_flight.pop_front()
        {
            let (part, used) = join_part(oldest).await?;
            parts.done.push(part);
            parts.buffers.recycle(used);
        }
        parts
            .in_flight
            .push_back(self.spawn_part(key, upload_id, number, data));
        Ok(())
    }

    fn spawn_part(&self, key: &ObjectKey, upload_id: &str, number: i32, data: Bytes) -> PartTask {
        self.metrics.s3_request(S3Op::UploadPart);
        tokio::spawn(upload_part(
            self.client.clone(),
            self.bucket.clone(),
            key.as_str().to_owned(),
            upload_id.to_owned(),
            number,
            data,
        ))
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

/// The parts of one multipart upload.
struct Parts {
    in_flight: VecDeque<PartTask>,
    done: Vec<CompletedPart>,
    buffers: PartBuffers,
}

/// Part buffers come back from finished uploads and are refilled, so a 1 GiB report touches
/// `parts_in_flight + 1` buffers rather than one fresh allocation per part: fresh buffers
/// cost page faults and fragment the allocator's heap, which made peak RSS vary by a seventh
/// between runs (bench/RESULTS.md).
struct PartBuffers {
    part_size: usize,
    spare: Vec<BytesMut>,
    /// Buffers allocated so far (the rest were reused).
    allocated: usize,
}

impl PartBuffers {
    fn new(part_size: usize) -> Self {
        Self {
            part_size,
            spare: Vec::new(),
            allocated: 0,
        }
    }

    /// An empty buffer of `part_size` capacity: a spare one if any, else a fresh one.
    fn next(&mut self) -> BytesMut {
        self.spare.pop().unwrap_or_else(|| {
            self.allocated += 1;
            BytesMut::with_capacity(self.part_size)
        })
    }

    /// Takes back a part's bytes once its upload is done. Reusable only when nothing else
    /// (the SDK, a retry) still holds a reference; otherwise it is simply freed.
    fn recycle(&mut self, used: Bytes) {
        if let Ok(mut reusable) = used.try_into_mut() {
            reusable.clear();
            self.spare.push(reusable);
        }
    }
}

/// One part upload; it hands its buffer back when done so the next part can reuse it.
type PartTask = JoinHandle<Result<(CompletedPart, Bytes), StorageError>>;

async fn join_part(handle: PartTask) -> Result<(CompletedPart, Bytes), StorageError> {
    handle.await.map_err(|e| StorageError::S3 {
        op: "UploadPart",
        detail: e.to_string(),
    })?
}

async fn upload_part(
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    number: i32,
    data: Bytes,
) -> Result<(CompletedPart, Bytes), StorageError> {
    let len = data.len();
    let out = client
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(number)
        .content_length(i64::try_from(len).unwrap_or(i64::MAX))
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .map_err(StorageError::s3("UploadPart"))?;
    let part = CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag().map(str::to_owned))
        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
        .build();
    Ok((part, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_part_buffers_are_refilled_instead_of_reallocated() {
        let mut buffers = PartBuffers::new(1024);
        let mut first = buffers.next();
        first.extend_from_slice(&[1; 1024]);
        let ptr = first.as_ptr();
        buffers.recycle(first.freeze());
        let again = buffers.next();
        assert_eq!(again.as_ptr(), ptr, "the same memory is handed out again");
        assert!(again.is_empty() && again.capacity() >= 1024);
        assert_eq!(buffers.allocated, 1);
    }

    #[test]
    fn a_buffer_still_referenced_elsewhere_is_not_reused() {
        let mut buffers = PartBuffers::new(1024);
        let mut first = buffers.next();
        first.extend_from_slice(b"%PDF-");
        let frozen = first.freeze();
        let held_by_sdk = frozen.clone();
        buffers.recycle(frozen);
        let _second = buffers.next();
        assert_eq!(buffers.allocated, 2, "a shared buffer is never overwritten");
        assert_eq!(&held_by_sdk[..], b"%PDF-");
    }
}
