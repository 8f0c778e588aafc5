//! Purging a client's statements (consent revoked, data life over): every version of every
//! object in the client's folder and in its staging folder, not just a delete marker.
//!
//! [`Storage::plan_delete`] and [`Storage::purge`] are the general tool: every version and
//! delete marker of some keys or under some prefixes, listed, then deleted by version id.
//! A client's purge is one use, the retention sweep another.
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
use crate::domain::{
    ClientId, ObjectKey, StatementId, client_folder, retention_index_key, statement_id_of,
};

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

/// What to remove every version of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything whose key starts with this (a folder: end it with `/`).
    Prefix(String),
    /// Exactly this key (not the longer keys it is a prefix of).
    Key(String),
}

/// One object version to delete (`version_id` is `None` on servers without versioning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) key: String,
    pub(super) version_id: Option<String>,
    pub(super) last_modified: Option<std::time::SystemTime>,
}

/// What a purge will remove.
#[derive(Debug, Default)]
pub struct PurgePlan {
    pub(super) targets: Vec<Target>,
    /// Keys that hold bytes (a version, not only delete markers).
    live: BTreeSet<String>,
    /// The statements that have stored bytes (not only delete markers) among the targets.
    pub statement_ids: Vec<StatementId>,
    /// The key of each of `statement_ids`, in the same order.
    statement_keys: Vec<String>,
}

impl PurgePlan {
    /// Object versions (and delete markers) to remove.
    pub fn versions(&self) -> usize {
        self.targets.len()
    }

    /// The keys among the targets that hold bytes (not only delete markers).
    pub fn keys_with_bytes(&self) -> impl Iterator<Item = &str> {
        self.live.iter().map(String::as_str)
    }
}

impl Storage {
    /// Lists everything a purge of `client` (or of one of its statements) must remove: the
    /// client's folder and its staging folder (leftovers of its transfers), or the one
    /// statement's key.
    pub async fn plan_purge(
        &self,
        client: &ClientId,
        only: Option<&StatementId>,
    ) -> Result<PurgePlan, StorageError> {
        let scopes = match only {
            Some(id) => vec![Scope::Key(
                ObjectKey::for_statement(&self.prefix, client, id)
                    .as_str()
                    .to_owned(),
            )],
            None => vec![
                Scope::Prefix(client_folder(&self.prefix, client)),
                Scope::Prefix(format!(
                    "{}{}/",
                    self.staging_prefix.as_str(),
                    client.as_str()
                )),
            ],
        };
        let mut plan = self.plan_delete(&scopes).await?;
        (plan.statement_ids, plan.statement_keys) = plan
            .live
            .iter()
            .filter_map(|k| Some((statement_id_of(k, &self.prefix, client)?, k.clone())))
            .unzip();
        let entries = self.index_entries_of(client, &plan.statement_ids).await?;
        if !entries.is_empty() {
            // Only their versions join the plan: they are not statements (nothing to count).
            let index = self.plan_delete(&entries).await?;
            plan.targets.extend(index.targets);
        }
        Ok(plan)
    }

    /// The expiry-index entries of `ids` (their keys name the client and the statement, so a
    /// purge must leave none): one HEAD per statement that may have an end of life, to read
    /// the day it is filed under. Purges are rare and small; the sweep's cost stays
    /// proportional to what expires.
    async fn index_entries_of(
        &self,
        client: &ClientId,
        ids: &[StatementId],
    ) -> Result<Vec<Scope>, StorageError> {
        let mut entries = Vec::new();
        for id in ids {
            if let Some(until) = self
                .statement(client, id)
                .await?
                .and_then(|info| info.retain_until)
            {
                entries.push(Scope::Key(retention_index_key(
                    &self.retention_index,
                    &until,
                    client,
                    id,
                )));
            }
        }
        Ok(entries)
    }

    /// Lists every version and delete marker in `scopes` (ListObjectVersions; on a server
    /// without versioning, ListObjectsV2: one version per key).
    pub async fn plan_delete(&self, scopes: &[Scope]) -> Result<PurgePlan, StorageError> {
        let mut plan = PurgePlan::default();
        for scope in scopes {
            let (prefix, exact) = match scope {
                Scope::Prefix(p) => (p.as_str(), None),
                Scope::Key(k) => (k.as_str(), Some(k.as_str())),
            };
            let (mut targets, mut live) = match self.list_versions(prefix).await {
                Ok(found) => found,
                Err(VersionsError::Unversioned) => self.list_current(prefix).await?,
                Err(VersionsError::S3(e)) => return Err(e),
            };
            if let Some(exact) = exact {
                // A prefix also matches longer names (`{id}.pdf` is a prefix of `{id}.pdf2`).
                targets.retain(|t| t.key == exact);
                live.retain(|k| k == exact);
            }
            plan.targets.extend(targets);
            plan.live.extend(live);
        }
        Ok(plan)
    }

    /// Removes every version of `key` and every delete marker on it.
    pub(super) async fn delete_every_version(&self, key: &str) -> Result<(), PurgeError> {
        let plan = self.plan_delete(&[Scope::Key(key.to_owned())]).await?;
        self.delete_targets(&plan.targets).await
    }

    /// Deletes everything in `plan`; returns how many statements were removed.
    pub async fn purge(&self, plan: &PurgePlan) -> Result<usize, PurgeError> {
        let report = self.purge_reporting(plan).await;
        match report.failure {
            None => Ok(report.deleted.len()),
            Some(e) => Err(e),
        }
    }

    /// Deletes everything in `plan` and says which of its statements are really gone: a
    /// statement counts only when every version of it was in a batch S3 answered and none
    /// was refused. Never fails as a whole: the failure, if any, is in the report.
    pub async fn purge_reporting(&self, plan: &PurgePlan) -> PurgeReport {
        let outcome = self.delete_versions(&plan.targets).await;
        let deleted: Vec<StatementId> = plan
            .statement_ids
            .iter()
            .zip(&plan.statement_keys)
            .filter(|(_, key)| !outcome.not_deleted.contains(key.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        self.metrics.statements_deleted(deleted.len());
        let failure = match (outcome.error, outcome.refused) {
            (Some(e), _) => Some(PurgeError::Storage(e)),
            (None, 0) => None,
            (None, refused) => Some(PurgeError::Refused {
                refused,
                total: plan.targets.len(),
            }),
        };
        PurgeReport { deleted, failure }
    }

    /// Deletes these versions (DeleteObjects, by version id, in batches of 1000).
    pub(super) async fn delete_targets(&self, targets: &[Target]) -> Result<(), PurgeError> {
        let outcome = self.delete_versions(targets).await;
        match (outcome.error, outcome.refused) {
            (Some(e), _) => Err(e.into()),
            (None, 0) => Ok(()),
            (None, refused) => Err(PurgeError::Refused {
                refused,
                total: targets.len(),
            }),
        }
    }

    /// Deletes batch after batch until S3 fails one; says which keys may still have a version.
    async fn delete_versions(&self, targets: &[Target]) -> Deleted {
        let mut outcome = Deleted::default();
        let mut batches = targets.chunks(DELETE_BATCH);
        for batch in batches.by_ref() {
            match self.delete_batch(batch).await {
                Ok(refused_keys) => {
                    outcome.refused += refused_keys.len();
                    outcome.not_deleted.extend(refused_keys);
                }
                Err(e) => {
                    outcome
                        .not_deleted
                        .extend(batch.iter().map(|t| t.key.clone()));
                    outcome.error = Some(e);
                    break;
                }
            }
        }
        outcome
            .not_deleted
            .extend(batches.flatten().map(|t| t.key.clone()));
        outcome
    }

    /// One DeleteObjects; returns the keys whose deletion S3 refused.
    async fn delete_batch(&self, batch: &[Target]) -> Result<Vec<String>, StorageError> {
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
        self.metrics.s3_request(crate::metrics::S3Op::DeleteObjects);
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(StorageError::s3("DeleteObjects"))?;
        Ok(out
            .errors()
            .iter()
            .map(|e| {
                tracing::warn!(
                    key = e.key().unwrap_or_default(),
                    code = e.code().unwrap_or_default(),
                    "S3 refused to delete an object version"
                );
                e.key().unwrap_or_default().to_owned()
            })
            .collect())
    }

    /// Every version and delete marker under `prefix`, and the keys that hold bytes.
    async fn list_versions(&self, prefix: &str) -> Result<Listed, VersionsError> {
        let mut targets = Vec::new();
        let mut live = BTreeSet::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            self.metrics
                .s3_request(crate::metrics::S3Op::ListObjectVersions);
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
                        last_modified: time(v.last_modified()),
                    });
                }
            }
            for m in out.delete_markers() {
                if let Some(key) = m.key() {
                    targets.push(Target {
                        key: key.to_owned(),
                        version_id: m.version_id().map(str::to_owned),
                        last_modified: time(m.last_modified()),
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
            self.metrics.s3_request(crate::metrics::S3Op::ListObjectsV2);
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
                        last_modified: time(o.last_modified()),
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

/// What a run of DeleteObjects did.
#[derive(Default)]
struct Deleted {
    /// Versions S3 refused to delete.
    refused: usize,
    /// Keys that may still have a version: refused, or in a batch that failed or never ran.
    not_deleted: BTreeSet<String>,
    error: Option<StorageError>,
}

/// What a purge really removed.
#[derive(Debug)]
pub struct PurgeReport {
    /// The planned statements that are gone (every version).
    pub deleted: Vec<StatementId>,
    /// Why the rest is not (`None`: everything planned is gone).
    pub failure: Option<PurgeError>,
}

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<std::time::SystemTime> {
    t.and_then(|t| std::time::SystemTime::try_from(*t).ok())
}

enum VersionsError {
    /// The server does not implement ListObjectVersions, hence keeps no versions.
    Unversioned,
    S3(StorageError),
}
