//! The expiry index of `retain_until` in the bucket (see `domain::retention` for its layout):
//! written with a statement, read and pruned by the retention sweep.
//!
//! An entry is written *before* its statement, so no statement with an end of life is ever
//! missing from the index (a crash in between leaves an entry without a statement, which the
//! sweep drops). An entry is a claim to check, not a fact: the statement's own `retain-until`
//! metadata decides (a racing writer that lost may have left an entry for another day).

use aws_sdk_s3::{primitives::ByteStream, types::ServerSideEncryption};

use super::{Encryption, StatementMetadata, Storage, StorageError};
use crate::{
    domain::{
        ClientId, IndexEntry, ObjectKey, parse_index_key, retention_index_key, statement_id_of,
    },
    metrics::S3Op,
};

/// One page of index entries that are due (their day is not after the sweep's day).
#[derive(Debug, Default)]
pub struct DuePage {
    /// `(key, entry)` in key order.
    pub entries: Vec<(String, IndexEntry)>,
    /// Where the next page starts; `None` when the listing reached a later day or the end.
    pub resume_after: Option<String>,
}

impl Storage {
    /// Writes the index entry of a statement about to be written at `key`, if it has an end
    /// of life. Its failure fails the store: a statement must never outlive its consent
    /// because its entry was lost.
    pub(super) async fn write_index_entry(
        &self,
        key: &ObjectKey,
        meta: &StatementMetadata,
    ) -> Result<(), StorageError> {
        let Some(until) = &meta.retain_until else {
            return Ok(());
        };
        let entry = ClientId::parse(meta.client_id.as_str())
            .ok()
            .and_then(|client| {
                statement_id_of(key.as_str(), &self.prefix, &client)
                    .map(|id| retention_index_key(&self.retention_index, until, &client, &id))
            })
            .ok_or_else(|| StorageError::S3 {
                op: "PutObject",
                detail: "a statement key without a client and statement id".into(),
            })?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(entry)
            .body(ByteStream::from_static(b""));
        let req = with_encryption!(req, &self.encryption);
        self.metrics.s3_request(S3Op::PutObject);
        req.send()
            .await
            .map(|_| ())
            .map_err(StorageError::s3("PutObject"))
    }

    /// The index entries due by `day` (`YYYY-MM-DD`), one page of at most `page_size`,
    /// starting after `resume_after`. Keys sort by day, so the listing stops at the first
    /// later day: a sweep lists what is due plus at most one page, however much is kept.
    pub async fn due_index_entries(
        &self,
        day: &str,
        resume_after: Option<&str>,
        page_size: i32,
    ) -> Result<DuePage, StorageError> {
        self.metrics.s3_request(S3Op::ListObjectsV2);
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.retention_index.as_str())
            .set_start_after(resume_after.map(str::to_owned))
            .max_keys(page_size)
            .send()
            .await
            .map_err(StorageError::s3("ListObjectsV2"))?;
        let mut page = DuePage::default();
        let mut later_day = false;
        let mut last = None;
        for key in out.contents().iter().filter_map(|o| o.key()) {
            last = Some(key.to_owned());
            match parse_index_key(&self.retention_index, key) {
                Some(entry) if entry.day.as_str() > day => {
                    later_day = true;
                    break;
                }
                Some(entry) => page.entries.push((key.to_owned(), entry)),
                None => tracing::warn!(key, "not an expiry index entry; left alone"),
            }
        }
        if !later_day && out.is_truncated() == Some(true) {
            page.resume_after = last;
        }
        Ok(page)
    }
}
