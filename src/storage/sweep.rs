//! Start-up sweep of the staging prefix: staging objects (every version and delete marker on
//! a versioned bucket) and multipart uploads older than
//! `STAGING_SWEEP_AGE_SECONDS` are leftovers of a crash (a live transfer ends within the call
//! deadline), so they are deleted. The bucket's lifecycle rules (README) are the second net.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};

use super::{
    Storage,
    purge::{Scope, Target},
};
use crate::metrics::S3Op;

/// What a sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub objects: usize,
    pub uploads: usize,
}

impl Storage {
    /// Deletes staging objects and aborts multipart uploads under the staging prefix that are
    /// older than `age`. Best effort: failures are logged, never fatal (a server without
    /// `ListMultipartUploads`, such as s3s-fs, still gets its objects swept).
    pub async fn sweep_staging(&self, age: Duration) -> Swept {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let is_old = |t: Option<&aws_smithy_types::DateTime>| {
            t.and_then(|t| SystemTime::try_from(*t).ok())
                .is_some_and(|t| t <= cutoff)
        };
        let mut swept = Swept::default();
        // Every version and delete marker, not only current objects: on a versioned bucket a
        // plain delete leaves the bytes behind as a noncurrent version.
        let staging = Scope::Prefix(self.staging_prefix.as_str().to_owned());
        match self.plan_delete(&[staging]).await {
            Ok(plan) => {
                let old: Vec<Target> = plan
                    .targets
                    .into_iter()
                    .filter(|t| t.last_modified.is_some_and(|t| t <= cutoff))
                    .collect();
                match self.delete_targets(&old).await {
                    Ok(()) => swept.objects = old.len(),
                    Err(e) => tracing::warn!(error = %e, "staging sweep: delete failed"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "staging sweep: listing failed"),
        }
        self.metrics.s3_request(S3Op::ListMultipartUploads);
        match self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(self.staging_prefix.as_str())
            .send()
            .await
        {
            Ok(out) => {
                for upload in out.uploads() {
                    let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                        continue;
                    };
                    if !is_old(upload.initiated()) {
                        continue;
                    }
                    self.metrics.s3_request(S3Op::AbortMultipartUpload);
                    if self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .is_ok()
                    {
                        swept.uploads += 1;
                    }
                }
            }
            // A server without the operation (s3s-fs answers 501 NotImplemented) has nothing
            // to list: not worth a line on a newcomer's screen.
            Err(e)
                if e.code() == Some("NotImplemented")
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 501) =>
            {
                tracing::debug!("staging sweep: the server does not list multipart uploads")
            }
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "staging sweep: multipart uploads not listed (the bucket's abort-incomplete-multipart rule covers them)")
            }
        }
        if swept != Swept::default() {
            tracing::info!(
                objects = swept.objects,
                uploads = swept.uploads,
                "staging sweep removed leftovers"
            );
        }
        swept
    }
}
