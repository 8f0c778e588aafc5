//! Purge markers: how a purge wins over stores in flight, on every replica
//! (docs/adr/0005-purge-wins-races.md argues the orderings).
//!
//! A client's purge leaves one small object per purge in the client's marker folder
//! `{PURGE_MARKER_PREFIX}{hash of client_id}/`: `{purge_id}.purging` before it lists anything,
//! `{purge_id}.done` once it has deleted (the `.purging` object is then removed). A store lists
//! that folder when it begins (before it asks Finpass anything) and again after each report's
//! write has landed, before answering: if a purge was running when it began, or one appeared
//! since, the store removes what it answered and fails the report `purged`. Nothing but S3
//! connects the replicas, and S3's listings are strongly consistent.
//!
//! The folder is named by a hash of the client id, so what a purge leaves behind names nobody.
//! Markers older than [`MARKER_KEEP`] can no longer matter (every store that could have seen
//! them has ended) and the next purge of the client removes them; a lifecycle rule on the
//! prefix is the net.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use aws_sdk_s3::{error::DisplayErrorContext, primitives::ByteStream, types::ServerSideEncryption};
use sha2::{Digest, Sha256};

use super::{
    Encryption, Storage, StorageError,
    purge::{PurgeError, Scope},
};
use crate::domain::ClientId;

/// Longer than any store runs (`CALL_DEADLINE_MS` is at most an hour, plus the cleanup grace
/// and the drain): a marker older than this cannot concern a store still running. A
/// `.purging` marker this old is a purge that crashed; it no longer holds stores back.
pub const MARKER_KEEP: Duration = Duration::from_secs(2 * 3600);

const PURGING: &str = ".purging";
const DONE: &str = ".done";

/// A purge in progress: the marker it wrote first.
#[derive(Debug)]
pub struct PurgeMarker {
    folder: String,
    purge_id: String,
}

/// What a store saw of a client's purges when it began.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeWatch {
    purges: BTreeMap<String, State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Running (or crashed less than [`MARKER_KEEP`] ago): it may list before a write lands.
    Purging,
    /// Finished (or crashed long ago).
    Done,
}

impl PurgeWatch {
    /// From the keys of a marker folder and their ages (`None`: unknown, taken as fresh).
    fn from_listing<'a>(listing: impl IntoIterator<Item = (&'a str, Option<Duration>)>) -> Self {
        let mut purges = BTreeMap::new();
        for (name, age) in listing {
            let (id, state) = if let Some(id) = name.strip_suffix(DONE) {
                (id, State::Done)
            } else if let Some(id) = name.strip_suffix(PURGING) {
                let stale = age.is_some_and(|a| a > MARKER_KEEP);
                (id, if stale { State::Done } else { State::Purging })
            } else {
                continue;
            };
            let entry = purges.entry(id.to_owned()).or_insert(state);
            // Both markers of one purge are listed between its two writes: it is done.
            if state == State::Done {
                *entry = State::Done;
            }
        }
        Self { purges }
    }

    /// Whether a store that saw `self` when it began must give way to a purge, now that the
    /// folder reads `now`: a purge was running when it began (it may have listed before the
    /// write landed), is running now, or began since.
    fn lost_to(&self, now: &Self) -> bool {
        self.purges.values().any(|s| *s == State::Purging)
            || now
                .purges
                .iter()
                .any(|(id, s)| *s == State::Purging || !self.purges.contains_key(id))
    }
}

impl Storage {
    /// The client's marker folder: `{PURGE_MARKER_PREFIX}{first 32 hex of SHA-256(client_id)}/`.
    fn marker_folder(&self, client: &ClientId) -> String {
        let digest = hex::encode(Sha256::digest(client.as_str().as_bytes()));
        format!(
            "{}{}/",
            self.purge_marker_prefix.as_str(),
            digest.get(..32).unwrap_or(&digest)
        )
    }

    /// Announces a purge of `client`, before it lists anything: from here on, a store of the
    /// client that finishes removes what it wrote.
    pub async fn begin_purge(&self, client: &ClientId) -> Result<PurgeMarker, StorageError> {
        let marker = PurgeMarker {
            folder: self.marker_folder(client),
            purge_id: format!(
                "{}-{}",
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis()),
                uuid::Uuid::new_v4().simple()
            ),
        };
        self.put_marker(&format!("{}{}{PURGING}", marker.folder, marker.purge_id))
            .await?;
        Ok(marker)
    }

    /// Marks the purge done (whether or not it deleted everything: a failed purge answers
    /// an error and is repeated), then removes its `.purging` marker and the client's markers
    /// older than [`MARKER_KEEP`], every version. Best effort: a `.purging` marker left
    /// behind holds the client's stores back for at most [`MARKER_KEEP`].
    pub async fn end_purge(&self, marker: PurgeMarker) {
        let done = format!("{}{}{DONE}", marker.folder, marker.purge_id);
        if let Err(e) = self.put_marker(&done).await {
            tracing::warn!(error = %e, "could not mark a purge done");
            return;
        }
        let purging = format!("{}{}{PURGING}", marker.folder, marker.purge_id);
        let result = async {
            let plan = self
                .plan_delete(&[Scope::Prefix(marker.folder.clone())])
                .await?;
            let cutoff = SystemTime::now().checked_sub(MARKER_KEEP);
            let old: Vec<_> = plan
                .targets
                .into_iter()
                .filter(|t| {
                    t.key == purging
                        || (t.key != done
                            && cutoff.is_some_and(|c| t.last_modified.is_some_and(|m| m < c)))
                })
                .collect();
            self.delete_targets(&old).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not tidy the purge markers");
        }
    }

    /// What a store sees of the client's purges (one ListObjectsV2).
    pub async fn watch_purges(&self, client: &ClientId) -> Result<PurgeWatch, StorageError> {
        let folder = self.marker_folder(client);
        let mut names = Vec::new();
        let mut token = None::<String>;
        let now = SystemTime::now();
        loop {
            self.metrics.s3_request(crate::metrics::S3Op::ListObjectsV2);
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&folder)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(StorageError::s3("ListObjectsV2"))?;
            for o in out.contents() {
                let Some(name) = o.key().and_then(|k| k.strip_prefix(&folder)) else {
                    continue;
                };
                let age = o
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .and_then(|t| now.duration_since(t).ok());
                names.push((name.to_owned(), age));
            }
            token = out.next_continuation_token().map(str::to_owned);
            if out.is_truncated() != Some(true) || token.is_none() {
                break;
            }
        }
        Ok(PurgeWatch::from_listing(
            names.iter().map(|(n, a)| (n.as_str(), *a)),
        ))
    }

    /// Whether a store of `client` that saw `began` must give way to a purge (see
    /// [`PurgeWatch`]); asked after its write landed, before it answers.
    pub async fn lost_to_purge(
        &self,
        client: &ClientId,
        began: &PurgeWatch,
    ) -> Result<bool, StorageError> {
        Ok(began.lost_to(&self.watch_purges(client).await?))
    }

    /// Removes every version of a statement a store answered but a purge must win over.
    pub async fn withdraw(&self, key: &str) -> Result<(), PurgeError> {
        self.delete_every_version(key).await
    }

    async fn put_marker(&self, key: &str) -> Result<(), StorageError> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("text/plain")
            .body(ByteStream::from_static(b""));
        let req = with_encryption!(req, &self.encryption);
        self.metrics.s3_request(crate::metrics::S3Op::PutObject);
        req.send().await.map(|_| ()).map_err(|e| {
            let detail = DisplayErrorContext(&e).to_string();
            StorageError::S3 {
                op: "PutObject",
                detail,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(names: &[(&str, u64)]) -> PurgeWatch {
        PurgeWatch::from_listing(
            names
                .iter()
                .map(|(n, age)| (*n, Some(Duration::from_secs(*age)))),
        )
    }

    /// The orderings of docs/adr/0005-purge-wins-races.md, as seen by a store.
    #[test]
    fn a_store_gives_way_to_every_purge_it_may_have_missed() {
        let none = watch(&[]);
        let running = watch(&[("p1.purging", 1)]);
        let done = watch(&[("p1.done", 1)]);
        let between = watch(&[("p1.purging", 1), ("p1.done", 1)]);
        // No purge at all.
        assert!(!none.lost_to(&none));
        // A purge began after the store began: running or already done.
        assert!(none.lost_to(&running));
        assert!(none.lost_to(&done));
        assert!(none.lost_to(&between));
        // A purge was running when the store began: it may have listed before the write.
        assert!(running.lost_to(&running));
        assert!(running.lost_to(&done));
        assert!(running.lost_to(&none), "its markers were tidied away");
        // A purge that was done before the store began is no concern.
        assert!(!done.lost_to(&done));
        assert!(!between.lost_to(&done));
        assert!(!done.lost_to(&none), "old markers removed meanwhile");
        // …but another one that began since is.
        assert!(done.lost_to(&watch(&[("p1.done", 1), ("p2.purging", 1)])));
    }

    #[test]
    fn a_crashed_purge_holds_stores_back_for_a_bounded_time() {
        let stale = MARKER_KEEP.as_secs() + 1;
        let crashed = watch(&[("p1.purging", stale)]);
        assert!(!crashed.lost_to(&crashed));
        assert!(watch(&[("p1.purging", 5)]).lost_to(&watch(&[("p1.purging", 6)])));
        assert!(!watch(&[("notes.txt", 1)]).lost_to(&watch(&[("notes.txt", 1)])));
    }
}
