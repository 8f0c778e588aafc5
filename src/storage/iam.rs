//! Deployment truth: every S3 operation this binary performs and the IAM actions it needs.
//!
//! The IRSA role's policy ships as `k8s/iam/finpass-gateway-policy.json`. The tests below keep
//! three things equal: the SDK calls in the source (a scan of `src/`), [`S3_OPERATIONS`] and
//! [`SQS_OPERATIONS`], and the grants of the policy file. A new S3 or SQS call without its
//! entry here, or an entry whose action the policy lacks, fails `cargo test` rather than a
//! deployment.

/// Where an IAM action applies: the bucket ARN, or object ARNs under the prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Bucket,
    Object,
}

/// One SDK operation and the IAM actions it needs.
#[derive(Debug)]
pub struct S3Operation {
    /// The fluent-builder method on `aws_sdk_s3::Client`, e.g. `head_object`.
    pub sdk_call: &'static str,
    pub actions: &'static [(&'static str, Scope)],
}

const fn op(sdk_call: &'static str, actions: &'static [(&'static str, Scope)]) -> S3Operation {
    S3Operation { sdk_call, actions }
}

use Scope::{Bucket, Object};

/// Every S3 operation the gateway performs.
pub const S3_OPERATIONS: &[S3Operation] = &[
    // The background reachability check.
    op("head_bucket", &[("s3:ListBucket", Bucket)]),
    // REQUIRED_BUCKET_REGION: where the statements and audit buckets are, checked at start.
    op("get_bucket_location", &[("s3:GetBucketLocation", Bucket)]),
    // Dedup before downloading. Without s3:ListBucket a missing key answers 403, not 404, and
    // every report not stored yet would look like a storage failure.
    op(
        "head_object",
        &[("s3:GetObject", Object), ("s3:ListBucket", Bucket)],
    ),
    // Statements (direct PUT or staging) and audit objects.
    op("put_object", &[("s3:PutObject", Object)]),
    op("create_multipart_upload", &[("s3:PutObject", Object)]),
    op("upload_part", &[("s3:PutObject", Object)]),
    op("complete_multipart_upload", &[("s3:PutObject", Object)]),
    // A transfer that fails mid-way leaves no parts behind.
    op(
        "abort_multipart_upload",
        &[("s3:AbortMultipartUpload", Object)],
    ),
    // Promotion from the staging key: reads the source, writes the destination.
    op(
        "copy_object",
        &[("s3:GetObject", Object), ("s3:PutObject", Object)],
    ),
    // Removing a staging object: by the version id its write answered on a versioned bucket
    // (a delete without one would only add a marker), or the marker such a delete made.
    op(
        "delete_object",
        &[
            ("s3:DeleteObject", Object),
            ("s3:DeleteObjectVersion", Object),
        ],
    ),
    // The start-up sweep of staging leftovers (objects and abandoned multipart uploads), and
    // the read side's listing of a client's statements.
    op("list_objects_v2", &[("s3:ListBucket", Bucket)]),
    op(
        "list_multipart_uploads",
        &[("s3:ListBucketMultipartUploads", Bucket)],
    ),
    // The read side: `/content`, and the pre-signed `/download-url` (signed with the role's
    // credentials, so the role itself needs the read).
    op("get_object", &[("s3:GetObject", Object)]),
    // A purge removes every version (ListObjectVersions, DeleteObjects by version id).
    op("list_object_versions", &[("s3:ListBucketVersions", Bucket)]),
    op(
        "delete_objects",
        &[
            ("s3:DeleteObject", Object),
            ("s3:DeleteObjectVersion", Object),
        ],
    ),
];

/// Every SQS operation the gateway performs (`JOBS_QUEUE_URL`, `jobs::queue::sqs`) and its IAM
/// action, granted on the jobs queue's ARN only.
pub const SQS_OPERATIONS: &[(&str, &str)] = &[
    // At start: the queue exists, the role may use it, and its visibility timeout.
    ("get_queue_attributes", "sqs:GetQueueAttributes"),
    // A wake-up, and each hop of a wait longer than SQS's 15-minute delay.
    ("send_message", "sqs:SendMessage"),
    ("receive_message", "sqs:ReceiveMessage"),
    // Holding a wake-up while its step runs.
    ("change_message_visibility", "sqs:ChangeMessageVisibility"),
    // A finished step, and a chained hop once sent on.
    ("delete_message", "sqs:DeleteMessage"),
];

/// With `S3_SSE=aws:kms`: writes need a data key; reading an encrypted object back
/// (CopyObject's source, CompleteMultipartUpload assembling parts) needs Decrypt.
pub const KMS_ACTIONS: &[&str] = &["kms:GenerateDataKey", "kms:Decrypt"];

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        path::{Path, PathBuf},
    };

    use serde_json::Value;

    use super::*;

    const POLICY: &str = include_str!("../../k8s/iam/finpass-gateway-policy.json");

    /// S3 operations started in non-test code (everything of a file before its first
    /// `#[cfg(test)]`; test modules come last): `client.<op>()` followed by `.bucket(`, which
    /// every S3 operation of the SDK takes and nothing else named `client` does.
    fn sdk_calls(source: &str) -> BTreeSet<String> {
        calls_followed_by(source, ".bucket(")
    }

    /// SQS operations, likewise: every one the gateway makes takes `.queue_url(` first.
    fn sqs_calls(source: &str) -> BTreeSet<String> {
        calls_followed_by(source, ".queue_url(")
    }

    fn calls_followed_by(source: &str, first_setter: &str) -> BTreeSet<String> {
        let code = source.split("#[cfg(test)]").next().unwrap_or(source);
        let mut calls = BTreeSet::new();
        let mut from = 0;
        while let Some(at) = code[from..].find("client") {
            let start = from + at;
            from = start + "client".len();
            let word_start = code[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let Some(rest) = code[from..].trim_start().strip_prefix('.') else {
                continue;
            };
            let rest = rest.trim_start();
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let after_call = rest[name.len()..].strip_prefix("()").map(str::trim_start);
            if word_start
                && !name.is_empty()
                && after_call.is_some_and(|r| r.starts_with(first_setter))
            {
                calls.insert(name);
            }
        }
        calls
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    fn as_list(v: &Value) -> Vec<&str> {
        match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The grants `policy` lacks for [`S3_OPERATIONS`] and [`KMS_ACTIONS`].
    fn missing_grants(policy: &str) -> Vec<String> {
        let policy: Value = serde_json::from_str(policy).expect("the policy is JSON");
        let allows: Vec<(Vec<&str>, Vec<&str>)> = policy["Statement"]
            .as_array()
            .expect("Statement list")
            .iter()
            .filter(|s| s["Effect"] == "Allow")
            .map(|s| (as_list(&s["Action"]), as_list(&s["Resource"])))
            .collect();
        let granted = |action: &str, resource_ok: &dyn Fn(&str) -> bool| {
            allows.iter().any(|(actions, resources)| {
                actions.iter().any(|a| *a == action || *a == "s3:*")
                    && resources.iter().any(|r| resource_ok(r))
            })
        };
        let bucket = |r: &str| r.starts_with("arn:aws:s3:::") && !r.contains('/');
        let object = |r: &str| r.starts_with("arn:aws:s3:::") && r.contains('/');
        let kms = |r: &str| r.starts_with("arn:aws:kms:");
        let mut missing = BTreeSet::new();
        for op in S3_OPERATIONS {
            for (action, scope) in op.actions {
                let ok: &dyn Fn(&str) -> bool = match scope {
                    Scope::Bucket => &bucket,
                    Scope::Object => &object,
                };
                if !granted(action, ok) {
                    missing.insert(format!("{action} ({} needs it)", op.sdk_call));
                }
            }
        }
        for action in KMS_ACTIONS {
            if !granted(action, &kms) {
                missing.insert(format!("{action} (SSE-KMS needs it)"));
            }
        }
        let queue = |r: &str| r.starts_with("arn:aws:sqs:") && !r.contains('*');
        for (call, action) in SQS_OPERATIONS {
            if !granted(action, &queue) {
                missing.insert(format!("{action} ({call} needs it)"));
            }
        }
        // The queue only: an SQS grant on every queue (`*`, `arn:aws:sqs:*:…`) or of every
        // action lets a leaked role read or poison other services' queues.
        for (actions, resources) in &allows {
            for a in actions.iter().filter(|a| a.starts_with("sqs:")) {
                if *a == "sqs:*" || resources.iter().any(|r| r.contains('*')) {
                    missing.insert(format!("{a} must name the jobs queue's ARN only"));
                }
            }
        }
        missing.into_iter().collect()
    }

    fn source_files() -> Vec<String> {
        let mut files = Vec::new();
        rust_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("read source"))
            .collect()
    }

    #[test]
    fn the_sqs_list_names_exactly_the_sqs_calls_in_the_source() {
        let used: BTreeSet<String> = source_files().iter().flat_map(|s| sqs_calls(s)).collect();
        let listed: BTreeSet<String> = SQS_OPERATIONS
            .iter()
            .map(|(call, _)| (*call).to_owned())
            .collect();
        assert_eq!(
            used, listed,
            "SQS_OPERATIONS (src/storage/iam.rs) must list every SQS call of the source, with its IAM action"
        );
    }

    #[test]
    fn a_policy_without_the_queue_actions_or_with_sqs_on_every_queue_is_caught() {
        let shipped: Value = serde_json::from_str(POLICY).unwrap();
        let without_queue = |statements: Value| {
            let mut p = shipped.clone();
            let list = p["Statement"].as_array_mut().unwrap();
            list.retain(|s| !s["Action"].to_string().contains("sqs:"));
            list.extend(statements.as_array().unwrap().iter().cloned());
            p.to_string()
        };
        assert_eq!(
            missing_grants(&without_queue(serde_json::json!([]))),
            [
                "sqs:ChangeMessageVisibility (change_message_visibility needs it)",
                "sqs:DeleteMessage (delete_message needs it)",
                "sqs:GetQueueAttributes (get_queue_attributes needs it)",
                "sqs:ReceiveMessage (receive_message needs it)",
                "sqs:SendMessage (send_message needs it)",
            ]
        );
        let too_wide = without_queue(serde_json::json!([
            {"Effect": "Allow", "Action": "sqs:*", "Resource": "arn:aws:sqs:ap-south-1:1:jobs"},
            {"Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:ReceiveMessage",
              "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"],
             "Resource": "*"}]));
        let missing = missing_grants(&too_wide);
        assert!(
            missing.contains(&"sqs:* must name the jobs queue's ARN only".to_owned()),
            "{missing:?}"
        );
        assert!(
            missing.contains(&"sqs:SendMessage must name the jobs queue's ARN only".to_owned()),
            "{missing:?}"
        );
    }

    #[test]
    fn the_list_names_exactly_the_s3_calls_in_the_source() {
        let mut files = Vec::new();
        rust_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let used: BTreeSet<String> = files
            .iter()
            .flat_map(|f| sdk_calls(&std::fs::read_to_string(f).expect("read source")))
            .collect();
        let listed: BTreeSet<String> = S3_OPERATIONS
            .iter()
            .map(|o| o.sdk_call.to_owned())
            .collect();
        assert_eq!(
            used, listed,
            "S3_OPERATIONS (src/storage/iam.rs) must list every S3 call of the source, with its IAM actions"
        );
    }

    #[test]
    fn the_shipped_policy_grants_every_action_the_code_needs() {
        assert_eq!(
            missing_grants(POLICY),
            Vec::<String>::new(),
            "k8s/iam/finpass-gateway-policy.json"
        );
    }

    /// The check itself catches the gaps the review found (the README policy of before, which
    /// also predates the read side's list, versions and purge).
    #[test]
    fn a_policy_without_list_bucket_delete_or_kms_decrypt_is_caught() {
        let old = r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
             "Resource": "arn:aws:s3:::bucket/*"},
            {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "arn:aws:kms:ap-south-1:1:key/k"},
            {"Effect": "Deny", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::bucket"}]}"#;
        // (It predates the jobs queue too: the SQS gaps are the next test's.)
        let s3_and_kms: Vec<String> = missing_grants(old)
            .into_iter()
            .filter(|m| !m.starts_with("sqs:"))
            .collect();
        assert_eq!(
            s3_and_kms,
            [
                "kms:Decrypt (SSE-KMS needs it)",
                "s3:DeleteObject (delete_object needs it)",
                "s3:DeleteObject (delete_objects needs it)",
                "s3:DeleteObjectVersion (delete_object needs it)",
                "s3:DeleteObjectVersion (delete_objects needs it)",
                "s3:GetBucketLocation (get_bucket_location needs it)",
                "s3:ListBucket (head_bucket needs it)",
                "s3:ListBucket (head_object needs it)",
                "s3:ListBucket (list_objects_v2 needs it)",
                "s3:ListBucketMultipartUploads (list_multipart_uploads needs it)",
                "s3:ListBucketVersions (list_object_versions needs it)",
            ]
        );
    }

    #[test]
    fn the_scan_finds_calls_across_lines_and_skips_tests() {
        let src = "let a = self\n    .client\n    .head_object()\n    .bucket(b);\nclient.clone();\nclient.as_str();\nmy_client.put_object().bucket(b);\n#[cfg(test)]\nclient.get_object().bucket(b);";
        assert_eq!(sdk_calls(src), BTreeSet::from(["head_object".to_owned()]));
    }
}
