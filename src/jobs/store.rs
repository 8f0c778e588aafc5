//! Job records in the statements bucket: one object per job, `{JOBS_PREFIX}{job_id}.json`.
//!
//! The record is the truth; every replica reads it before acting. Within one process the
//! routes and the engine change a record under the job's lock ([`JobStore::lock`]), so a
//! cancel never loses to a step writing what it polled (the step re-reads under the lock and
//! yields to a finished record).

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use tokio::sync::{Mutex, MutexGuard};

use super::record::{JobId, JobRecord};
use crate::{
    domain::Prefix,
    storage::{Created, Storage, StorageError},
};

/// Locks striped by job id: bounded memory, whatever the number of jobs.
const LOCK_STRIPES: usize = 64;
/// Reads of one record at most, and the pause between two.
const READ_ATTEMPTS: u32 = 4;
const READ_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A record that does not read as one (never its content: it names a client).
    #[error("job record {key} is not a valid record")]
    Corrupt { key: String },
}

pub struct JobStore {
    storage: Arc<Storage>,
    prefix: Prefix,
    locks: Vec<Mutex<()>>,
}

impl JobStore {
    pub fn new(storage: Arc<Storage>, prefix: Prefix) -> Self {
        Self {
            storage,
            prefix,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    fn key(&self, id: &JobId) -> String {
        format!("{}{id}.json", self.prefix.as_str())
    }

    /// This process's lock on the job's record: hold it from reading a record to writing it
    /// back.
    pub async fn lock(&self, id: &JobId) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        let stripe = usize::try_from(h.finish() % LOCK_STRIPES as u64).unwrap_or(0);
        self.locks[stripe].lock().await
    }

    /// Writes a new job unless one with its id exists.
    pub async fn create(&self, record: &JobRecord) -> Result<Created, JobStoreError> {
        let key = self.key(&record.job_id);
        let body = to_json(record, &key)?;
        Ok(self.storage.create_record(&key, body).await?)
    }

    /// The job's record. A read that breaks off (or reads as no record) is tried again a
    /// few times: a record is rewritten while it may be read, and some S3 servers (s3s-fs)
    /// break a GET stream whose object is replaced under it.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, JobStoreError> {
        let mut attempt = 1;
        loop {
            match self.get_once(id).await {
                Err(e) if attempt < READ_ATTEMPTS && retryable(&e) => {
                    attempt += 1;
                    tokio::time::sleep(READ_RETRY).await;
                }
                result => return result,
            }
        }
    }

    async fn get_once(&self, id: &JobId) -> Result<Option<JobRecord>, JobStoreError> {
        let key = self.key(id);
        match self.storage.read_record(&key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| JobStoreError::Corrupt { key }),
        }
    }

    pub async fn put(&self, record: &JobRecord) -> Result<(), JobStoreError> {
        let key = self.key(&record.job_id);
        let body = to_json(record, &key)?;
        Ok(self.storage.write_record(&key, body).await?)
    }

    /// The ids of every job under the prefix (finished or not; the caller reads each).
    pub async fn ids(&self) -> Result<Vec<JobId>, JobStoreError> {
        let keys = self.storage.list_records(self.prefix.as_str()).await?;
        Ok(keys
            .iter()
            .filter_map(|k| {
                k.strip_prefix(self.prefix.as_str())?
                    .strip_suffix(".json")
                    .and_then(|id| JobId::parse(id).ok())
            })
            .collect())
    }
}

fn retryable(e: &JobStoreError) -> bool {
    match e {
        JobStoreError::Storage(e) => e.is_transient(),
        JobStoreError::Corrupt { .. } => true,
    }
}

fn to_json(record: &JobRecord, key: &str) -> Result<Vec<u8>, JobStoreError> {
    serde_json::to_vec(record).map_err(|_| JobStoreError::Corrupt {
        key: key.to_owned(),
    })
}
