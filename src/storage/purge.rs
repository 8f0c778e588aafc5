//! Purging a client's statements (consent revoked, data life over): every version of every
//! object in the client's folder, not just a delete marker.
//!
//! Two steps, so the caller can record what it is about to remove before anything is gone
//! (the audit event of a delete is durable before the first byte is deleted):
//! [`Storage::plan_purge`] lists, [`Storage::purge`] deletes. On a versioned bucket the plan
//! holds every version and delete marker (ListObjectVersions) and each is deleted by version
//! id, which removes it for good; servers without versioning (s3s-fs, Garage: both answer
//! ListObjectVersions with 501) keep one version per key, so the plan falls back to
//! ListObjectsV2. Deletes go in DeleteObjects batches of at most 1000. Deleting is idempotent:
//! a second purge finds nothing and deletes nothing.

use std::collections::BTreeSet;

use aws_sdk_s3::{
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{Delete, ObjectIdentifier},
};

use super::{Storage, StorageError};
use crate::domain::{ClientId, ObjectKey, StatementId, client_folder, statement_id_of};

/// DeleteObjects takes at most 1000 keys per request.
const DELETE_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// S3 refused some deletes (Object Lock retention or legal hold, or missing
    /// s3:DeleteObjectVersion): retrying will not help until that changes.
    #[error("S3 refused to delete {refused} of {total} object versions")]
    Refused { refused: usize, total: usize },
}

/// One object version to delete (`version_id` is `None` on servers without versioning).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    key: String,
    version_id: Option<String>,
}

/// What a purge will remove.
#[derive(Debug)]
pub struct PurgePlan {
    targets: Vec<Target>,
    /// The statements that have stored bytes (not only delete markers) among the targets.
    pub statement_ids: Vec<StatementId>,
}

impl PurgePlan {
    /// Object versions (and delete markers) to remove.
    pub fn versions(&self) -> usize {
        self.targets.len()
    }
}

impl Storage {
    /// Lists everything a purge of `client` (or of one of its statements) must remove.
    pub async fn plan_purge(
        &self,
        client: &ClientId,
        only: Option<&StatementId>,
    ) -> Result<PurgePlan, StorageError> {
        let folder = client_folder(&self.prefix, client);
        let (prefix, exact) = match only {
            Some(id) => {
                let key = ObjectKey::for_statement(&self.prefix, client, id);
                (key.as_str().to_owned(), Some(key.as_str().to_owned()))
            }
            None => (folder, None),
        };
        let (mut targets, live) = match self.list_versions(&prefix).await {
            Ok(found) => found,
            Err(VersionsError::Unversioned) => self.list_current(&prefix).await?,
            Err(VersionsError::S3(e)) => return Err(e),
        };
        if let Some(exact) = &exact {
            // A prefix also matches longer names (`{id}.pdf` is a prefix of `{id}.pdf2`).
            targets.retain(|t| &t.key == exact);
        }
        let statement_ids = live
            .into_iter()
            .filter(|k| exact.as_ref().is_none_or(|e| e == k))
            .filter_map(|k| statement_id_of(&k, &self.prefix, client))
            .collect();
        Ok(PurgePlan {
            targets,
            statement_ids,
        })
    }

    /// Deletes everything in `plan`; returns how many statements were removed.
    pub async fn purge(&self, plan: &PurgePlan) -> Result<usize, PurgeError> {
        let mut refused = 0;
        for batch in plan.targets.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|t| {
                    ObjectIdentifier::builder()
                        .key(&t.key)
                        .set_version_id(t.version_id.clone())
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StorageError::S3 {
                    op: "DeleteObjects",
                    detail: e.to_string(),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::S3 {
                    op: "DeleteObjects",
                    detail: e.to_string(),
                })?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(StorageError::s3("DeleteObjects"))?;
            for e in out.errors() {
                tracing::warn!(
                    key = e.key().unwrap_or_default(),
                    code = e.code().unwrap_or_default(),
                    "S3 refused to delete an object version"
                );
            }
            refused += out.errors().len();
        }
        if refused > 0 {
            return Err(PurgeError::Refused {
                refused,
                total: plan.targets.len(),
            });
        }
        self.metrics.statements_deleted(plan.statement_ids.len());
        Ok(plan.statement_ids.len())
    }

    /// Every version and delete marker under `prefix`, and the keys that hold bytes.
    async fn list_versions(&self, prefix: &str) -> Result<Listed, VersionsError> {
        let mut targets = Vec::new();
        let mut live = BTreeSet::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let out = match self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
            {
                Ok(out) => out,
                Err(SdkError::ServiceError(e))
                    if e.raw().status().as_u16() == 501
                        || e.err().code() == Some("NotImplemented") =>
                {
                    return Err(VersionsError::Unversioned);
                }
                Err(e) => {
                    return Err(VersionsError::S3(StorageError::S3 {
                        op: "ListObjectVersions",
                        detail: DisplayErrorContext(&e).to_string(),
                    }));
                }
            };
            for v in out.versions() {
                if let Some(key) = v.key() {
                    live.insert(key.to_owned());
                    targets.push(Target {
                        key: key.to_owned(),
                        version_id: v.version_id().map(str::to_owned),
                    });
                }
            }
            for m in out.delete_markers() {
                if let Some(key) = m.key() {
                    targets.push(Target {
                        key: key.to_owned(),
                        version_id: m.version_id().map(str::to_owned),
                    });
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            version_marker = out.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        Ok((targets, live))
    }

    /// Every key under `prefix` on a server without versioning.
    async fn list_current(&self, prefix: &str) -> Result<Listed, StorageError> {
        let mut targets = Vec::new();
        let mut live = BTreeSet::new();
        let mut token = None::<String>;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(StorageError::s3("ListObjectsV2"))?;
            for o in out.contents() {
                if let Some(key) = o.key() {
                    live.insert(key.to_owned());
                    targets.push(Target {
                        key: key.to_owned(),
                        version_id: None,
                    });
                }
            }
            token = out.next_continuation_token().map(str::to_owned);
            if out.is_truncated() != Some(true) || token.is_none() {
                break;
            }
        }
        Ok((targets, live))
    }
}

type Listed = (Vec<Target>, BTreeSet<String>);

enum VersionsError {
    /// The server does not implement ListObjectVersions, hence keeps no versions.
    Unversioned,
    S3(StorageError),
}
