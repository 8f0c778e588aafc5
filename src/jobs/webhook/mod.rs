//! Signed webhooks of statement jobs (Standard Webhooks v1).
//!
//! - [`sign`]: the `webhook-signature` header, HMAC-SHA256 per secret.
//! - [`endpoints`]: `WEBHOOK_ENDPOINTS_FILE`, where each service caller may be called back.
//! - [`deliver`]: one POST attempt and what it means for the retry ladder.

pub mod deliver;
pub mod endpoints;
pub mod outbox;
pub mod sign;

pub use deliver::{Attempt, DELIVERY_TIMEOUT, WebhookClient, deliver};
pub use endpoints::{Endpoints, EndpointsError};
pub use sign::{Secret, SecretError, signature};

use crate::config::WebhookSettings;

use super::ladder::{Ladder, LadderError};

/// What deliveries need, parsed from [`WebhookSettings`] at start-up. Each delivering thread
/// builds its own [`WebhookClient`] with [`Webhooks::client`] (awc clients are `!Send`).
#[derive(Debug, Clone)]
pub struct Webhooks {
    pub endpoints: Endpoints,
    pub retries: Ladder,
    pub allow_http: bool,
    /// How long an attempt may take ([`DELIVERY_TIMEOUT`]).
    pub timeout: std::time::Duration,
}

/// Why the webhook settings refuse the start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error(transparent)]
    Endpoints(#[from] EndpointsError),
    #[error("WEBHOOK_RETRY_SCHEDULE is invalid: {0}")]
    Retries(#[from] LadderError),
}

impl Webhooks {
    /// Reads the endpoints file and the retry schedule.
    pub fn load(s: &WebhookSettings) -> Result<Self, WebhookConfigError> {
        let endpoints = match &s.endpoints_file {
            Some(path) => Endpoints::load(path, s.allow_http)?,
            None => Endpoints::default(),
        };
        Ok(Self {
            endpoints,
            retries: s.retry_schedule.parse()?,
            allow_http: s.allow_http,
            timeout: DELIVERY_TIMEOUT,
        })
    }

    /// A delivery client with these settings' destination rules.
    pub fn client(&self) -> WebhookClient {
        WebhookClient::new(self.allow_http)
    }
}
