//! Settings of statement jobs' webhooks, as given. `jobs::webhook` parses them at start-up
//! (the endpoints file and the retry ladder belong to it; `config` does not import `jobs`), and
//! start-up refuses to run on a bad file or schedule.

use super::{ConfigError, reader::Reader, vars};

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `WEBHOOK_ENDPOINTS_FILE`'s path; `None`: no job may ask for a webhook.
    pub endpoints_file: Option<String>,
    /// `WEBHOOK_ALLOW_HTTP`: plain http to loopback only.
    pub allow_http: bool,
    /// `WEBHOOK_RETRY_SCHEDULE`, unparsed.
    pub retry_schedule: String,
}

impl WebhookSettings {
    pub(crate) fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            endpoints_file: r.optional(&vars::WEBHOOK_ENDPOINTS_FILE)?,
            allow_http: r.bool(&vars::WEBHOOK_ALLOW_HTTP)?,
            retry_schedule: r.string(&vars::WEBHOOK_RETRY_SCHEDULE)?,
        })
    }
}
