use std::time::{Duration, Instant, SystemTime};

use awc::http::{StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{
    FinpassOutcome,
    retry_after::parse_retry_after,
    types::{CLIENT_NOT_FOUND, Envelope, FetchRequest, FinpassError, FinpassReport, parse_data},
};
use crate::{
    config::{ClientIdMismatch, FinpassSettings, RetrySettings},
    domain::{ClientId, RequestId},
    metrics::Metrics,
};

const ENDPOINT: &str = "api/v1/services/account-aggregator/fetch-statement-pdf";
/// A Finpass answer is a short JSON list; anything bigger is not one.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Bound on a configured deadline, so that `Instant + deadline` cannot overflow.
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

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
    client_id_mismatch: ClientIdMismatch,
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
        let http = crate::outbound::client_builder()
            .timeout(settings.attempt_timeout)
            .finish();
        Self {
            http,
            endpoint,
            api_key: settings.api_key.clone(),
            api_secret: settings.api_secret.clone(),
            attempt_timeout: settings.attempt_timeout,
            retry: settings.retry,
            client_id_mismatch: settings.client_id_mismatch,
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
        let deadline = Instant::now() + self.retry.deadline.min(MAX_DEADLINE);
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
                .map_or_else(FinpassError::outcome, |_| FinpassOutcome::Success);
            self.metrics
                .finpass_call(outcome.as_str(), started.elapsed());
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
            // Compared as durations: `Instant + delay` is where an untrusted delay overflowed.
            if delay >= deadline.saturating_duration_since(Instant::now()) {
                // Waiting would overrun the deadline: answer now with what we know.
                return Err(match err {
                    FinpassError::RateLimited { .. } => err,
                    _ => FinpassError::Timeout,
                });
            }
            tracing::warn!(
                attempt,
                error = %err,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "retrying Finpass call"
            );
            self.metrics.finpass_retry(outcome.as_str());
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
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
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
        let echoed = envelope
            .as_ref()
            .and_then(|e| e.data.as_ref())
            .and_then(|d| d.get("client_id"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let reports = classify(status, envelope, retry_after)?;
        check_client(echoed.as_deref(), body.client_id, self.client_id_mismatch)?;
        Ok(reports)
    }
}

/// Finpass echoes the client asked for in `data.client_id`. Reports under another id (or
/// under none) may be another customer's, and storing them would file them under this one:
/// refused unless `FINPASS_CLIENT_ID_MISMATCH=warn`. Neither id is logged.
fn check_client(
    echoed: Option<&str>,
    requested: &str,
    policy: ClientIdMismatch,
) -> Result<(), FinpassError> {
    if echoed == Some(requested) {
        return Ok(());
    }
    match policy {
        ClientIdMismatch::Refuse => {
            tracing::warn!(
                echoed = echoed.is_some(),
                "Finpass answered with a data.client_id other than the client asked for; refused, nothing stored"
            );
            Err(FinpassError::ClientMismatch)
        }
        ClientIdMismatch::Warn => {
            tracing::warn!(
                echoed = echoed.is_some(),
                "Finpass answered with a data.client_id other than the client asked for; storing under the client asked for (FINPASS_CLIENT_ID_MISMATCH=warn)"
            );
            Ok(())
        }
    }
}

/// What an answer means. Only a 404 carrying Finpass's own `client_not_found` envelope is an
/// unknown client: a 404 from a wrong base URL or a proxy must not tell callers a customer
/// does not exist.
fn classify(
    status: StatusCode,
    envelope: Option<Envelope>,
    retry_after: Option<Duration>,
) -> Result<Vec<FinpassReport>, FinpassError> {
    let message_code = envelope.as_ref().and_then(|e| e.message_code.as_deref());
    match status {
        StatusCode::NOT_FOUND if message_code == Some(CLIENT_NOT_FOUND) => {
            Err(FinpassError::ClientNotFound)
        }
        StatusCode::NOT_FOUND => Err(FinpassError::EndpointNotFound),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(FinpassError::Unauthorized),
        StatusCode::TOO_MANY_REQUESTS => Err(FinpassError::RateLimited { retry_after }),
        s if s.is_server_error() => Err(FinpassError::Server { status: s.as_u16() }),
        s if s.is_success() => match envelope {
            Some(Envelope {
                success: Some(false),
                ..
            })
            | None => Err(FinpassError::InvalidResponse),
            Some(envelope) => parse_data(envelope.data),
        },
        s => Err(FinpassError::Rejected { status: s.as_u16() }),
    }
}

/// The client against the simulator over real HTTP, one fault mode per test.
#[cfg(all(test, feature = "sandbox"))]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::{
        finpass::{FinpassOutcome, ReportStatus, retry_after::MAX_RETRY_AFTER},
        sandbox::{
            ApiFault, Body, FinpassSandbox, ReportSpec, finpass::API_KEY, finpass::API_SECRET,
        },
    };

    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        deadline: Duration::from_secs(5),
    };

    struct Harness {
        sandbox: FinpassSandbox,
        client: FinpassClient,
        metrics: Metrics,
    }

    fn harness_with(key: &str, attempt_timeout: Duration) -> Harness {
        let sandbox = FinpassSandbox::start().expect("simulator");
        let metrics = Metrics::new();
        let settings = FinpassSettings {
            base_url: Url::parse(&sandbox.base_url()).expect("url"),
            api_key: SecretString::from(key.to_owned()),
            api_secret: SecretString::from(API_SECRET.to_owned()),
            attempt_timeout,
            retry: RETRY,
            client_id_mismatch: ClientIdMismatch::Refuse,
        };
        let client = FinpassClient::new(&settings, metrics.clone());
        Harness {
            sandbox,
            client,
            metrics,
        }
    }

    fn harness() -> Harness {
        harness_with(API_KEY, Duration::from_secs(2))
    }

    impl Harness {
        async fn fetch(&self, client_id: &str) -> Result<Vec<FinpassReport>, FinpassError> {
            let id = ClientId::parse(client_id).expect("client id");
            self.client.fetch_statements(&id, None).await
        }

        /// `finpass_requests_total{outcome}` as rendered.
        fn calls(&self, outcome: FinpassOutcome) -> Option<u64> {
            let series = format!(
                "finpass_gateway_finpass_requests_total{{outcome=\"{}\"}} ",
                outcome.as_str()
            );
            self.metrics
                .render()
                .lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
        }
    }

    #[actix_web::test]
    async fn reads_the_demo_reports() {
        let h = harness();
        let reports = h.fetch("aa_demo_ready").await.expect("reports");
        let got: Vec<_> = reports
            .iter()
            .map(|r| (r.fip_id.as_str(), r.status, r.link.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                ("HDFC-FIP", ReportStatus::Ready, true),
                ("SBI-FIP", ReportStatus::Ready, true)
            ]
        );
        assert_eq!(h.calls(FinpassOutcome::Success), Some(1));
    }

    #[actix_web::test]
    async fn only_the_client_not_found_envelope_is_client_not_found() {
        let h = harness();
        assert!(matches!(
            h.fetch("aa_nobody").await,
            Err(FinpassError::ClientNotFound)
        ));
        h.sandbox.push_api_faults([ApiFault::NotAnEnvelope(404)]);
        assert!(matches!(
            h.fetch("aa_demo_ready").await,
            Err(FinpassError::EndpointNotFound)
        ));
        h.sandbox.push_api_faults([ApiFault::Status(404)]);
        assert!(matches!(
            h.fetch("aa_demo_ready").await,
            Err(FinpassError::EndpointNotFound)
        ));
        assert_eq!(h.sandbox.api_calls(), 3, "a 404 is never retried");
        assert_eq!(h.calls(FinpassOutcome::ClientNotFound), Some(1));
        assert_eq!(h.calls(FinpassOutcome::EndpointNotFound), Some(2));
    }

    #[actix_web::test]
    async fn retries_5xx_and_transport_faults_then_succeeds() {
        let h = harness();
        h.sandbox
            .push_api_faults([ApiFault::Status(502), ApiFault::NotAnEnvelope(503)]);
        assert_eq!(h.fetch("aa_demo_ready").await.expect("reports").len(), 2);
        assert_eq!(h.sandbox.api_calls(), 3);
        assert_eq!(h.calls(FinpassOutcome::ServerError), Some(2));
    }

    #[actix_web::test]
    async fn other_4xx_are_final() {
        let h = harness();
        h.sandbox.push_api_faults([ApiFault::Status(400)]);
        assert!(matches!(
            h.fetch("aa_demo_ready").await,
            Err(FinpassError::Rejected { status: 400 })
        ));
        let wrong = harness_with("not-the-key", Duration::from_secs(2));
        assert!(matches!(
            wrong.fetch("aa_demo_ready").await,
            Err(FinpassError::Unauthorized)
        ));
        assert_eq!(wrong.sandbox.api_calls(), 1);
    }

    #[actix_web::test]
    async fn a_huge_retry_after_is_clamped_not_a_panic() {
        let h = harness();
        h.sandbox.push_api_faults([ApiFault::RateLimited {
            retry_after_secs: u64::MAX,
        }]);
        let started = Instant::now();
        let result = h.fetch("aa_demo_ready").await;
        assert!(
            matches!(result, Err(FinpassError::RateLimited { retry_after: Some(d) }) if d == MAX_RETRY_AFTER),
            "{result:?}"
        );
        assert!(started.elapsed() < RETRY.deadline);
        assert_eq!(h.sandbox.api_calls(), 1);
    }

    #[actix_web::test]
    async fn a_short_retry_after_is_waited_out() {
        let h = harness();
        h.sandbox
            .push_api_faults([ApiFault::RateLimitedRaw("0".to_owned())]);
        assert_eq!(h.fetch("aa_demo_ready").await.expect("reports").len(), 2);
        assert_eq!(h.sandbox.api_calls(), 2);
        assert_eq!(h.calls(FinpassOutcome::RateLimited), Some(1));
    }

    #[actix_web::test]
    async fn broken_answers_are_invalid_responses() {
        let h = harness();
        h.sandbox.push_api_faults([ApiFault::Malformed]);
        for client in ["aa_demo_ready", "aa_demo_empty_data", "aa_demo_null_data"] {
            assert!(
                matches!(h.fetch(client).await, Err(FinpassError::InvalidResponse)),
                "{client}"
            );
        }
        assert_eq!(h.sandbox.api_calls(), 3, "never retried");
        assert_eq!(h.calls(FinpassOutcome::InvalidResponse), Some(3));
    }

    #[actix_web::test]
    async fn one_invalid_report_does_not_hide_the_others() {
        let h = harness();
        let reports = h.fetch("aa_demo_invalid_report").await.expect("reports");
        let got: Vec<_> = reports
            .iter()
            .map(|r| {
                (
                    r.fip_id.as_str(),
                    r.account_number.as_str(),
                    r.status,
                    r.link.is_some(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("HDFC-FIP", "XXXXXXXXXX1234", ReportStatus::Ready, true),
                ("", "XXXXXXXX1111", ReportStatus::Unknown, false),
                ("ICICI-FIP", "", ReportStatus::Unknown, false),
                ("AXIS-FIP", "XXXXXXXX3333", ReportStatus::Unknown, false),
                ("SBI-FIP", "XXXXXXXX9876", ReportStatus::Ready, true),
            ]
        );
    }

    #[actix_web::test]
    async fn a_hang_times_out_each_attempt_within_the_deadline() {
        let h = harness_with(API_KEY, Duration::from_millis(100));
        h.sandbox.set_client(
            "aa_hang",
            vec![ReportSpec::ready("A", "1", Body::pdf(10, 1))],
        );
        h.sandbox.push_api_faults(std::iter::repeat_n(
            ApiFault::Hang(Duration::from_secs(30)),
            4,
        ));
        let started = Instant::now();
        assert!(matches!(
            h.fetch("aa_hang").await,
            Err(FinpassError::Timeout)
        ));
        assert!(started.elapsed() < RETRY.deadline);
        assert_eq!(h.sandbox.api_calls(), 4);
        assert_eq!(h.calls(FinpassOutcome::Timeout), Some(4));
    }
}
