//! The audit trail: who did what to which client's statements, in S3, append-only.
//!
//! Every store, list, read, content, download-url and delete call records one [`AuditEvent`]
//! and answers only once that event is durable; if it cannot be written the call answers 503
//! `audit_unavailable` and serves nothing (fail closed). Events are JSON lines in objects
//! `{AUDIT_PREFIX}YYYY/MM/DD/{uuid}.jsonl`: each object is new and never rewritten, so replicas
//! never contend and an Object Lock retention can protect them.
//!
//! One S3 PUT per call would double the request rate of a busy gateway, so writes are group
//! committed: one writer task per process takes whatever events are queued, writes them as one
//! object and acknowledges each. Events that arrive while a PUT is in flight wait for it and
//! go together into the next object. There is no timer: an idle gateway pays one small PUT of
//! latency, a busy one one PUT per batch (docs/adr/0003-audit-in-s3.md has the numbers).

mod s3;

use std::{future::Future, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use s3::S3Sink;

use crate::{
    domain::{AuditAction, AuditOutcome, ClientId, Prefix},
    metrics::{AuditWriteOutcome, Metrics},
};

/// Events queued at most; past it `record` waits (back-pressure, not an unbounded queue).
const QUEUE: usize = 4096;
/// Largest batch in events and in bytes (a list event names up to 100 statements).
const MAX_BATCH_EVENTS: usize = 1000;
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Bound on one audit PUT (the SDK's retries included): a hung S3 fails the batch, and its
/// calls answer 503, instead of holding them forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One audited call. Never holds a secret, token or link: ids, names and fixed codes only.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 (UTC).
    pub at: String,
    pub action: AuditAction,
    /// `service:{name}`, `user:{the JWT's client id}` or `anonymous` (authentication off).
    pub caller: String,
    /// The person behind a user token (its `sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The user token's id (`jti`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Where the call came from: the peer's IP, or the first `X-Forwarded-For` hop when the
    /// peer is one of `TRUSTED_PROXIES`; empty for work without a request.
    pub source_address: String,
    pub client_id: String,
    pub statement_ids: Vec<String>,
    pub outcome: AuditOutcome,
    /// The request id of the gateway's logs for this call.
    pub http_request_id: String,
    /// The statement a delete of one statement asked for, whether or not it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_statement_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the audit trail could not be written")]
    Unavailable,
}

/// Where batches go: S3 in production ([`S3Sink`]).
pub trait AuditSink: Send + Sync + 'static {
    /// Writes one new object. The error is for the logs (no secrets in it).
    fn write(&self, key: String, body: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
}

struct Pending {
    line: Vec<u8>,
    action: AuditAction,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// The handle calls record through (cheap to clone; one writer task behind it).
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(sink: impl AuditSink, prefix: Prefix, metrics: Metrics) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(sink, prefix, metrics, rx));
        Self { tx }
    }

    /// Returns once `event` is durable in the audit trail (or it could not be written).
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(&event).map_err(|_| AuditError::Unavailable)?;
        line.push(b'\n');
        let (done, acked) = oneshot::channel();
        self.tx
            .send(Pending {
                line,
                action: event.action,
                done,
            })
            .await
            .map_err(|_| AuditError::Unavailable)?;
        acked.await.map_err(|_| AuditError::Unavailable)?
    }
}

/// Who acts, as the audit trail names them (never a token: names and ids only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `service:{name}`, `user:{client id}` or `anonymous`.
    pub caller: String,
    pub sub: Option<String>,
    pub jti: Option<String>,
    /// Empty for work without a request.
    pub source_address: String,
}

/// The events of one unit of work on one client: an HTTP call, or work without a request
/// (a statement job's step), which names its actor and correlation id itself.
pub struct Recorder<'a> {
    log: &'a AuditLog,
    action: AuditAction,
    actor: Actor,
    client_id: String,
    /// What ties the event to the logs: the HTTP request id, or a job's id.
    correlation_id: String,
    /// The statement a delete of one statement asked for.
    requested_statement_id: Option<String>,
}

impl<'a> Recorder<'a> {
    pub fn new(
        log: &'a AuditLog,
        action: AuditAction,
        actor: Actor,
        client: &ClientId,
        correlation_id: String,
    ) -> Self {
        Self {
            log,
            action,
            actor,
            client_id: client.to_string(),
            correlation_id,
            requested_statement_id: None,
        }
    }

    /// Every event of this recorder names `id` as the statement asked for.
    #[must_use]
    pub fn asking_for(mut self, id: Option<String>) -> Self {
        self.requested_statement_id = id;
        self
    }

    /// Makes the event durable; whatever it records may be answered only after `Ok`.
    pub async fn record(
        &self,
        outcome: AuditOutcome,
        statement_ids: Vec<String>,
    ) -> Result<(), AuditError> {
        let event = AuditEvent {
            at: rfc3339(std::time::SystemTime::now()),
            action: self.action,
            caller: self.actor.caller.clone(),
            sub: self.actor.sub.clone(),
            jti: self.actor.jti.clone(),
            source_address: self.actor.source_address.clone(),
            client_id: self.client_id.clone(),
            statement_ids,
            outcome,
            http_request_id: self.correlation_id.clone(),
            requested_statement_id: self.requested_statement_id.clone(),
        };
        self.log.record(event).await
    }
}

/// The group-commit loop: wait for one event, take everything else already queued (up to the
/// batch bounds), write it as one object, acknowledge every event of the batch, repeat.
async fn writer(
    sink: impl AuditSink,
    prefix: Prefix,
    metrics: Metrics,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut body = first.line.clone();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_EVENTS {
            match rx.try_recv() {
                Ok(p) if body.len() + p.line.len() > MAX_BATCH_BYTES => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    body.extend_from_slice(&p.line);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let key = object_key(&prefix, std::time::SystemTime::now());
        let result = match tokio::time::timeout(WRITE_TIMEOUT, sink.write(key, body)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, events = batch.len(), "audit write failed; the batch's calls answer 503");
                Err(AuditError::Unavailable)
            }
            Err(_) => {
                tracing::error!(
                    events = batch.len(),
                    "audit write timed out; the batch's calls answer 503"
                );
                Err(AuditError::Unavailable)
            }
        };
        let actions: Vec<AuditAction> = batch.iter().map(|p| p.action).collect();
        metrics.audit_write(
            if result.is_ok() {
                AuditWriteOutcome::Success
            } else {
                AuditWriteOutcome::Error
            },
            &actions,
        );
        for p in batch {
            // A caller that went away no longer waits; its event is written all the same.
            let _ = p.done.send(result.clone());
        }
    }
}

/// `{prefix}YYYY/MM/DD/{uuid}.jsonl` (UTC date): listing one day is one prefix.
fn object_key(prefix: &Prefix, now: std::time::SystemTime) -> String {
    let day = rfc3339(now)
        .get(..10)
        .map(|d| d.replace('-', "/"))
        .unwrap_or_default();
    format!(
        "{}{day}/{}.jsonl",
        prefix.as_str(),
        uuid::Uuid::new_v4().simple()
    )
}

/// RFC 3339 UTC, e.g. `2026-11-28T10:15:30.123Z`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::Notify;

    use super::*;

    /// Records every write; the first one waits until released, so the test controls what
    /// arrives while a write is in flight.
    /// Every (key, body) written.
    type Writes = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

    #[derive(Clone, Default)]
    struct HeldSink {
        writes: Writes,
        started: Arc<Notify>,
        release: Arc<Notify>,
        fail: bool,
    }

    impl AuditSink for HeldSink {
        async fn write(&self, key: String, body: Vec<u8>) -> Result<(), String> {
            let first = self.writes.lock().map(|w| w.is_empty()).unwrap_or(false);
            if let Ok(mut w) = self.writes.lock() {
                w.push((key, body));
            }
            if first {
                self.started.notify_one();
                self.release.notified().await;
            }
            if self.fail {
                Err("refused".into())
            } else {
                Ok(())
            }
        }
    }

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            at: rfc3339(std::time::SystemTime::now()),
            action: AuditAction::Read,
            caller: "service:loans".into(),
            sub: None,
            jti: None,
            source_address: "127.0.0.1".into(),
            client_id: format!("aa_{n}"),
            statement_ids: vec![format!("s{n}")],
            outcome: AuditOutcome::Ok,
            http_request_id: "r".into(),
            requested_statement_id: None,
        }
    }

    fn prefix() -> Prefix {
        Prefix::parse("audit/").expect("prefix")
    }

    /// Events that arrive while a PUT is in flight go together into the next object, and
    /// every caller is answered only after its own object was written.
    #[tokio::test]
    async fn events_queued_during_a_write_share_the_next_object() {
        let sink = HeldSink::default();
        let log = AuditLog::start(sink.clone(), prefix(), Metrics::new());
        let first = tokio::spawn({
            let log = log.clone();
            async move { log.record(event(0)).await }
        });
        sink.started.notified().await;
        let rest: Vec<_> = (1..=5)
            .map(|n| {
                let log = log.clone();
                tokio::spawn(async move { log.record(event(n)).await })
            })
            .collect();
        // Every later event is queued (the channel holds them) before the first write ends.
        while log.tx.capacity() > QUEUE - 5 {
            tokio::task::yield_now().await;
        }
        assert!(
            !first.is_finished(),
            "answered before its event was durable"
        );
        sink.release.notify_one();
        assert_eq!(first.await.expect("join"), Ok(()));
        for r in rest {
            assert_eq!(r.await.expect("join"), Ok(()));
        }
        let writes = sink.writes.lock().expect("writes").clone();
        let lines: Vec<usize> = writes
            .iter()
            .map(|(_, body)| body.iter().filter(|b| **b == b'\n').count())
            .collect();
        assert_eq!(
            lines,
            [1, 5],
            "one object for the first event, one for the rest"
        );
        for (key, body) in &writes {
            assert!(
                key.starts_with("audit/") && key.ends_with(".jsonl"),
                "{key}"
            );
            assert_eq!(key.matches('/').count(), 4, "audit/YYYY/MM/DD/uuid: {key}");
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).expect("json line");
                assert_eq!(v["caller"], "service:loans");
                assert_eq!(v["action"], "read");
            }
        }
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_call_of_its_batch() {
        let sink = HeldSink {
            fail: true,
            ..HeldSink::default()
        };
        let log = AuditLog::start(sink.clone(), prefix(), Metrics::new());
        let first = tokio::spawn({
            let log = log.clone();
            async move { log.record(event(0)).await }
        });
        sink.started.notified().await;
        sink.release.notify_one();
        assert_eq!(first.await.expect("join"), Err(AuditError::Unavailable));
        // The writer keeps going after a failure.
        assert_eq!(log.record(event(1)).await, Err(AuditError::Unavailable));
        assert_eq!(sink.writes.lock().expect("writes").len(), 2);
    }
}
