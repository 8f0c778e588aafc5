use std::time::{Duration, Instant};

use awc::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::types::{Envelope, FetchRequest, FinpassError, FinpassReport};
use crate::{
    config::{FinpassSettings, RetrySettings},
    domain::{ClientId, RequestId},
    metrics::Metrics,
};

const ENDPOINT: &str = "api/v1/services/account-aggregator/fetch-statement-pdf";
/// A Finpass answer is a short JSON list; anything bigger is not one.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How hard to try before giving up (`FINPASS_MAX_ATTEMPTS`, `FINPASS_RETRY_*`,
/// `FINPASS_DEADLINE_MS`).
pub type RetryPolicy = RetrySettings;

/// Exponential backoff with full jitter (AWS architecture blog): spreads retries of many
/// replicas so they do not hit a recovering Finpass in lock-step.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1 << attempt.min(16))
        .min(policy.max_delay);
    exp.mul_f64(fastrand::f64())
}

/// The Finpass client. Holds an `awc::Client`, which is `!Send`, so one is built per worker.
pub struct FinpassClient {
    http: awc::Client,
    endpoint: Url,
    api_key: SecretString,
    api_secret: SecretString,
    attempt_timeout: Duration,
    retry: RetryPolicy,
    metrics: Metrics,
}

impl FinpassClient {
    pub fn new(settings: &FinpassSettings, metrics: Metrics) -> Self {
        let mut base = settings.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        // `join` of a constant relative path onto a validated http(s) URL cannot fail.
        let endpoint = base.join(ENDPOINT).unwrap_or(base);
        let http = awc::Client::builder()
            .disable_redirects()
            .timeout(settings.attempt_timeout)
            .finish();
        Self {
            http,
            endpoint,
            api_key: settings.api_key.clone(),
            api_secret: settings.api_secret.clone(),
            attempt_timeout: settings.attempt_timeout,
            retry: settings.retry,
            metrics,
        }
    }

    /// Asks Finpass for the client's reports, retrying transient failures within the deadline.
    #[tracing::instrument(name = "finpass.fetch_statements", skip_all, fields(attempts))]
    pub async fn fetch_statements(
        &self,
        client_id: &ClientId,
        request_id: Option<&RequestId>,
    ) -> Result<Vec<FinpassReport>, FinpassError> {
        let deadline = Instant::now() + self.retry.deadline;
        let body = FetchRequest {
            client_id: client_id.as_str(),
            request_id: request_id.map(RequestId::as_str),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            tracing::Span::current().record("attempts", attempt);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(FinpassError::Timeout);
            }
            let started = Instant::now();
            let result = match tokio::time::timeout(
                self.attempt_timeout.min(remaining),
                self.attempt(&body),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(FinpassError::Timeout),
            };
            let outcome = result
                .as_ref()
                .map_or_else(FinpassError::outcome, |_| "success");
            self.metrics.finpass_call(outcome, started.elapsed());
            let err = match result {
                Ok(reports) => return Ok(reports),
                Err(e) => e,
            };
            if !err.is_retryable() || attempt >= self.retry.max_attempts {
                return Err(err);
            }
            let delay = match &err {
                FinpassError::RateLimited {
                    retry_after: Some(d),
                } => *d,
                _ => backoff(&self.retry, attempt),
            };
            if Instant::now() + delay >= deadline {
                // Waiting would overrun the deadline: answer now with what we know.
                return Err(match err {
                    FinpassError::RateLimited { .. } => err,
                    _ => FinpassError::Timeout,
                });
            }
            tracing::warn!(attempt, error = %err, delay_ms = delay.as_millis() as u64, "retrying Finpass call");
            self.metrics.finpass_retry(outcome);
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, body: &FetchRequest<'_>) -> Result<Vec<FinpassReport>, FinpassError> {
        let mut resp = self
            .http
            .post(self.endpoint.as_str())
            .insert_header(("x-api-key", self.api_key.expose_secret()))
            .insert_header(("x-api-secret", self.api_secret.expose_secret()))
            .insert_header(("accept", "application/json"))
            .send_json(body)
            .await
            .map_err(|e| match e {
                awc::error::SendRequestError::Timeout => FinpassError::Timeout,
                // The error's Display names neither the URL nor headers.
                other => FinpassError::Transport(other.to_string()),
            })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                awc::error::PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                    FinpassError::Timeout
                }
                _ => FinpassError::Transport("reading the Finpass response failed".to_owned()),
            })?;
        let envelope: Option<Envelope> = serde_json::from_slice(&bytes).ok();
        let message_code = envelope.as_ref().and_then(|e| e.message_code.as_deref());
        match status {
            StatusCode::NOT_FOUND => Err(FinpassError::ClientNotFound),
            _ if message_code == Some("client_not_found") => Err(FinpassError::ClientNotFound),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(FinpassError::Unauthorized),
            StatusCode::TOO_MANY_REQUESTS => Err(FinpassError::RateLimited { retry_after }),
            s if s.is_server_error() => Err(FinpassError::Server { status: s.as_u16() }),
            s if s.is_success() => {
                let envelope = envelope.ok_or(FinpassError::InvalidResponse)?;
                match (envelope.success, envelope.data) {
                    (Some(false), _) | (_, None) => Err(FinpassError::InvalidResponse),
                    (_, Some(data)) => Ok(data.reports.into_iter().map(Into::into).collect()),
                }
            }
            s => Err(FinpassError::Rejected { status: s.as_u16() }),
        }
    }
}
