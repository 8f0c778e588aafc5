//! Small JSON records in the statements bucket (statement jobs keep one object per job): a
//! whole object read, written, created if absent, and the keys under a prefix listed.
//!
//! The records are a few kilobytes, so they are read and written whole (no streaming). The
//! caller owns the prefix (it joins the prefix-overlap check at start-up) and the format.

use aws_sdk_s3::{error::SdkError, primitives::ByteStream, types::ServerSideEncryption};

use super::{Storage, StorageError};
use crate::config::Encryption;

/// What [`Storage::create_record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// An object was already at the key (nothing was written).
    Exists,
}

impl Storage {
    /// The record at `key`, or `None` when there is none.
    pub async fn read_record(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(e))
                if e.err().is_no_such_key() || e.raw().status().as_u16() == 404 =>
            {
                return Ok(None);
            }
            Err(e) => return Err(StorageError::s3("GetObject")(e)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Transient {
                op: "GetObject",
                detail: e.to_string(),
            })?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    /// Writes the record at `key`, replacing any.
    pub async fn write_record(&self, key: &str, body: Vec<u8>) -> Result<(), StorageError> {
        self.put_record(key, body, false).await.map(|_| ())
    }

    /// Writes the record at `key` unless one is there (`If-None-Match: *`; a server that
    /// ignores it, Garage, is covered by a read first).
    pub async fn create_record(&self, key: &str, body: Vec<u8>) -> Result<Created, StorageError> {
        if self.read_record(key).await?.is_some() {
            return Ok(Created::Exists);
        }
        self.put_record(key, body, true).await
    }

    async fn put_record(
        &self,
        key: &str,
        body: Vec<u8>,
        if_absent: bool,
    ) -> Result<Created, StorageError> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .set_if_none_match(if_absent.then(|| "*".to_owned()))
            .body(ByteStream::from(body));
        let req = with_encryption!(req, &self.encryption);
        match req.send().await {
            Ok(_) => Ok(Created::Created),
            Err(SdkError::ServiceError(e))
                if if_absent && matches!(e.raw().status().as_u16(), 409 | 412) =>
            {
                Ok(Created::Exists)
            }
            Err(e) => Err(StorageError::s3("PutObject")(e)),
        }
    }

    /// Every key under `prefix` (one listing page after another).
    pub async fn list_records(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(StorageError::s3("ListObjectsV2"))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(keys),
            }
        }
    }
}
