//! Job wake-ups on Amazon SQS (`JOBS_QUEUE_URL`): shared by every replica, durable across a
//! pod's death.
//!
//! A wake-up is a message `{"job_id", "not_before_ms"}` sent with `DelaySeconds`. SQS delays
//! at most 15 minutes, so a longer wait is chained: the message is sent with the longest
//! delay, and a receiver that gets it before `not_before_ms` sends it on with what remains and
//! deletes it, without handing it out. A received message is held by its visibility timeout;
//! [`JobQueue::hold`](super::JobQueue::hold) extends it while a step runs, and a worker that
//! dies leaves it to reappear for another replica. A message that cannot be read is left
//! alone: the queue's redrive policy moves it to the dead-letter queue after
//! `maxReceiveCount` receives (k8s/iam/README.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::{
    config::timeout::TimeoutConfig,
    error::{DisplayErrorContext, SdkError},
    types::QueueAttributeName,
};
use serde::{Deserialize, Serialize};

use super::{MAX_BATCH, QueueError, Receipt, Wake};
use crate::config::{S3Connection, SqsSettings};

/// SQS's longest `DelaySeconds`.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// SQS's longest visibility timeout.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// ReceiveMessage's longest long poll: few empty receives, and a wake-up is seen at once.
const LONG_POLL_SECONDS: i32 = 20;
/// A message this early is handed out anyway (the step finds nothing due and re-schedules):
/// replicas' clocks differ a little, and re-sending a message for less than this is waste.
const EARLY_SLACK: Duration = Duration::from_secs(1);

/// One SQS queue of wake-ups; clones share the client.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    /// The queue's visibility timeout (read at start-up): how long a received wake-up is held.
    visibility: Duration,
    /// [`MAX_DELAY`], lowered by tests to see chaining in seconds.
    max_delay: Duration,
}

/// The message body. Only the job id: the record in S3 holds everything else.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    job_id: String,
    /// Unix milliseconds before which the wake-up is not handed out (chained waits).
    not_before_ms: u64,
}

impl SqsQueue {
    /// Connects with the S3 connection's region and credentials chain (IRSA in k8s) and reads
    /// the queue's visibility timeout, so a wrong URL or a missing permission stops the start.
    pub async fn connect(sqs: &SqsSettings, conn: &S3Connection) -> Result<Self, QueueError> {
        let sdk = crate::storage::aws_sdk_config(conn)
            .await
            .map_err(|e| unavailable("configuration", e))?;
        let mut builder = aws_sdk_sqs::config::Builder::from(&sdk).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                // Above the long poll, which holds a ReceiveMessage open for 20 s.
                .operation_attempt_timeout(Duration::from_secs(
                    u64::from(LONG_POLL_SECONDS.unsigned_abs()) + 10,
                ))
                .operation_timeout(Duration::from_secs(90))
                .build(),
        );
        if let Some(endpoint) = &sqs.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        let client = aws_sdk_sqs::Client::from_conf(builder.build());
        let url = sqs.queue_url.to_string();
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|e| sdk_error("GetQueueAttributes", &e))?;
        let visibility = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| unavailable("GetQueueAttributes", "no VisibilityTimeout"))?;
        Ok(Self {
            client,
            url,
            visibility,
            max_delay: MAX_DELAY,
        })
    }

    /// How long a received wake-up stays hidden from other workers.
    pub fn visibility_timeout(&self) -> Duration {
        self.visibility
    }

    pub async fn wake_after(&self, job_id: &str, delay: Duration) -> Result<(), QueueError> {
        let not_before_ms = unix_ms().saturating_add(millis(delay));
        self.send(job_id, not_before_ms, delay).await
    }

    async fn send(
        &self,
        job_id: &str,
        not_before_ms: u64,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_string(&Message {
            job_id: job_id.to_owned(),
            not_before_ms,
        })
        .map_err(|e| unavailable("SendMessage", e))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_seconds(delay, self.max_delay))
            .send()
            .await
            .map_err(|e| sdk_error("SendMessage", &e))?;
        Ok(())
    }

    /// Long-polls until at least one wake-up is due. Early ones (a chained wait) are sent on
    /// with the remaining delay and not returned; unreadable ones are left for the DLQ.
    pub async fn next(&self) -> Result<Vec<Wake>, QueueError> {
        loop {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(i32::try_from(MAX_BATCH).unwrap_or(10))
                .wait_time_seconds(LONG_POLL_SECONDS)
                .send()
                .await
                .map_err(|e| sdk_error("ReceiveMessage", &e))?;
            let mut due = Vec::new();
            for m in out.messages() {
                let Some(receipt) = m.receipt_handle() else {
                    continue;
                };
                let Some(message) = m
                    .body()
                    .and_then(|b| serde_json::from_str::<Message>(b).ok())
                else {
                    // Not ours or corrupt: after maxReceiveCount receives the redrive policy
                    // moves it to the dead-letter queue, where someone can read it.
                    tracing::warn!(
                        message_id = m.message_id(),
                        "job queue message without a readable body left for the dead-letter queue"
                    );
                    continue;
                };
                let remaining =
                    Duration::from_millis(message.not_before_ms.saturating_sub(unix_ms()));
                if remaining > EARLY_SLACK {
                    self.chain(&message, remaining, receipt).await;
                    continue;
                }
                due.push(Wake {
                    job_id: message.job_id,
                    receipt: Receipt::Sqs(receipt.to_owned()),
                });
            }
            if !due.is_empty() {
                return Ok(due);
            }
        }
    }

    /// Sends an early wake-up on with what remains of its wait, then deletes it. If either
    /// fails, the message reappears after its visibility timeout and is tried again: at worst
    /// a duplicate wake-up, which the step shrugs off.
    async fn chain(&self, message: &Message, remaining: Duration, receipt: &str) {
        let sent = self
            .send(&message.job_id, message.not_before_ms, remaining)
            .await;
        let result = match sent {
            Ok(()) => self.delete(receipt).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "chaining a job wake-up failed; it comes back after the visibility timeout");
        }
    }

    pub(super) async fn extend(&self, receipt: &str, by: Duration) -> Result<(), QueueError> {
        let secs = by.min(MAX_VISIBILITY).as_secs().max(1);
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(i32::try_from(secs).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| sdk_error("ChangeMessageVisibility", &e))?;
        Ok(())
    }

    pub(super) async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteMessage", &e))?;
        Ok(())
    }
}

/// `DelaySeconds` of one hop: the wait rounded up to whole seconds (never early), at most
/// `max` (the rest is chained).
fn delay_seconds(delay: Duration, max: Duration) -> i32 {
    let d = delay.min(max);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

fn unavailable(operation: &'static str, detail: impl ToString) -> QueueError {
    QueueError::Unavailable {
        operation,
        detail: detail.to_string(),
    }
}

/// The SDK's error chain (service code and message, or the connection failure): it names the
/// operation and the queue's answer, never the request's credentials.
fn sdk_error<E, R>(operation: &'static str, e: &SdkError<E, R>) -> QueueError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    unavailable(operation, DisplayErrorContext(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hop_delays_whole_seconds_rounded_up_and_at_most_the_maximum() {
        assert_eq!(delay_seconds(Duration::ZERO, MAX_DELAY), 0);
        assert_eq!(delay_seconds(Duration::from_millis(1), MAX_DELAY), 1);
        assert_eq!(delay_seconds(Duration::from_millis(1500), MAX_DELAY), 2);
        assert_eq!(delay_seconds(Duration::from_secs(900), MAX_DELAY), 900);
        assert_eq!(delay_seconds(Duration::from_secs(6 * 3600), MAX_DELAY), 900);
    }

    #[test]
    fn the_message_body_carries_the_job_and_its_due_time_only() {
        let body = serde_json::to_value(Message {
            job_id: "job_1".to_owned(),
            not_before_ms: 1_700_000_000_000,
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"job_id": "job_1", "not_before_ms": 1_700_000_000_000u64})
        );
    }
}

/// Against a real SQS server: `.ci/moto.sh` runs these with `--ignored` against `moto[server]`
/// (`TEST_SQS_ENDPOINT`); plain `cargo test` has no SQS server and skips them.
#[cfg(test)]
mod against_sqs {
    use super::*;
    use crate::config::S3Credentials;
    use crate::jobs::queue::JobQueue;

    /// A bound for waits that must end, far above the delays used, so a slow machine passes.
    const BOUND: Duration = Duration::from_secs(120);

    fn connection() -> (S3Connection, String) {
        let endpoint = std::env::var("TEST_SQS_ENDPOINT")
            .expect("TEST_SQS_ENDPOINT: run these through .ci/moto.sh");
        let conn = S3Connection {
            region: Some(std::env::var("TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into())),
            credentials: Some(S3Credentials {
                access_key_id: "moto-test-access-key".to_owned(),
                secret_access_key: "moto-test-secret-key".to_owned().into(),
                session_token: None,
            }),
            ..S3Connection::default()
        };
        (conn, endpoint)
    }

    /// A fresh queue with this visibility timeout, and the gateway's handle on it.
    async fn fresh_queue(visibility_secs: u32) -> (SqsQueue, aws_sdk_sqs::Client, String) {
        let (conn, endpoint) = connection();
        let sdk = crate::storage::aws_sdk_config(&conn).await.unwrap();
        let admin = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk)
                .endpoint_url(&endpoint)
                .build(),
        );
        let url = admin
            .create_queue()
            .queue_name(format!("jobs-{}", uuid::Uuid::new_v4().simple()))
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_secs.to_string(),
            )
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        let settings = SqsSettings {
            queue_url: url.parse().unwrap(),
            endpoint_url: Some(endpoint),
        };
        let q = SqsQueue::connect(&settings, &conn).await.expect("connect");
        assert_eq!(
            q.visibility_timeout(),
            Duration::from_secs(visibility_secs.into())
        );
        (q, admin, url)
    }

    /// Messages in the queue, visible, delayed or held.
    async fn messages_left(admin: &aws_sdk_sqs::Client, url: &str) -> u64 {
        let out = admin
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes().unwrap();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|a| {
            attrs
                .get(a)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
    }

    async fn next(q: &JobQueue) -> Vec<Wake> {
        tokio::time::timeout(BOUND, q.next())
            .await
            .expect("a wake-up within the bound")
            .expect("receive")
    }

    #[tokio::test]
    #[ignore = "needs an SQS server: .ci/moto.sh"]
    async fn a_wake_up_comes_after_its_delay_and_done_deletes_it() {
        let (q, admin, url) = fresh_queue(30).await;
        let q = JobQueue::Sqs(q);
        let start = std::time::Instant::now();
        q.wake_after("job_a", Duration::from_secs(2)).await.unwrap();
        let wakes = next(&q).await;
        assert!(start.elapsed() >= Duration::from_secs(2) - EARLY_SLACK);
        assert_eq!(wakes.len(), 1);
        assert_eq!(wakes[0].job_id, "job_a");
        for w in wakes {
            w.done(&q).await.unwrap();
        }
        assert_eq!(messages_left(&admin, &url).await, 0);
    }

    #[tokio::test]
    #[ignore = "needs an SQS server: .ci/moto.sh"]
    async fn a_wake_up_not_done_reappears_after_the_visibility_timeout() {
        let (q, _, _) = fresh_queue(1).await;
        let q = JobQueue::Sqs(q);
        q.wake_after("job_b", Duration::ZERO).await.unwrap();
        let first = next(&q).await;
        assert_eq!(first[0].job_id, "job_b");
        drop(first); // the worker died mid-step: no `done`
        let again = next(&q).await;
        assert_eq!(again[0].job_id, "job_b");
    }

    #[tokio::test]
    #[ignore = "needs an SQS server: .ci/moto.sh"]
    async fn a_wait_longer_than_the_longest_delay_is_chained_and_not_handed_out_early() {
        let (mut q, admin, url) = fresh_queue(30).await;
        q.max_delay = Duration::from_secs(1); // SQS's 900 s, scaled down
        let q = JobQueue::Sqs(q);
        let start = std::time::Instant::now();
        q.wake_after("job_c", Duration::from_secs(4)).await.unwrap();
        let wakes = next(&q).await;
        assert!(
            start.elapsed() >= Duration::from_secs(4) - EARLY_SLACK,
            "handed out after {:?}",
            start.elapsed()
        );
        assert_eq!(wakes.len(), 1, "the early hops were not handed out");
        for w in wakes {
            w.done(&q).await.unwrap();
        }
        assert_eq!(messages_left(&admin, &url).await, 0, "no hop left behind");
    }

    #[tokio::test]
    #[ignore = "needs an SQS server: .ci/moto.sh"]
    async fn a_held_wake_up_stays_hidden_from_another_replica_while_its_step_runs() {
        let (q, _, _) = fresh_queue(4).await;
        let other = JobQueue::Sqs(q.clone());
        let q = JobQueue::Sqs(q);
        q.wake_after("job_d", Duration::ZERO).await.unwrap();
        let wakes = next(&q).await;
        // The step runs three visibility timeouts; meanwhile another replica receives nothing.
        let stolen = q
            .hold(&wakes[0], async {
                tokio::time::timeout(Duration::from_secs(12), other.next()).await
            })
            .await;
        assert!(stolen.is_err(), "another replica received the held wake-up");
        for w in wakes {
            w.done(&q).await.unwrap();
        }
    }
}
