//! The sandbox's demo webhook receiver: what a caller's service does with the gateway's
//! webhooks. It verifies each delivery's signature with an independent implementation of
//! Standard Webhooks (the `standardwebhooks` crate, as a receiver in any language would use its
//! own) and logs the event at INFO: type, job id, `webhook-id`, verified. `--sandbox` admits it
//! as a destination of the sandbox's caller, so a job with `"webhook_url"` set to
//! [`WebhookReceiver::url`] ends in a logged, verified `statement_job.completed`.

use std::{
    net::TcpListener,
    sync::{Arc, Mutex},
};

use actix_web::{HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, web};

/// The demo receiver's signing secret (`whsec_` + base64 of 32 bytes). Sandbox only: it guards
/// nothing real, and the release image is built without the sandbox.
pub const DEMO_SECRET: &str = "whsec_c2FuZGJveC1kZW1vLXdlYmhvb2stc2VjcmV0LTMyYg==";

/// The path the receiver listens on.
pub const PATH: &str = "/webhooks";

/// One event as the receiver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub webhook_id: String,
    pub event_type: String,
    pub job_id: String,
    pub verified: bool,
}

struct State {
    verifier: Option<standardwebhooks::Webhook>,
    received: Mutex<Vec<Received>>,
}

pub struct WebhookReceiver {
    port: u16,
    state: Arc<State>,
    handle: ServerHandle,
}

impl WebhookReceiver {
    /// Starts the receiver on an ephemeral loopback port (call inside an actix system).
    pub fn start() -> std::io::Result<Self> {
        Self::start_on(0)
    }

    /// Starts the receiver on loopback port `port` (0: an ephemeral one), falling back to an
    /// ephemeral port when `port` is taken: `--sandbox` asks for a port beside the API's, so
    /// the README's walk-through can name it.
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).or_else(|_| TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            verifier: standardwebhooks::Webhook::new(DEMO_SECRET).ok(),
            received: Mutex::default(),
        });
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1024 * 1024))
                .route(PATH, web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Ok(Self {
            port,
            state,
            handle,
        })
    }

    /// Where jobs should send their webhooks: `http://127.0.0.1:{port}/webhooks`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{PATH}", self.port)
    }

    /// The `WEBHOOK_ENDPOINTS_FILE` line that admits this receiver for `caller`.
    pub fn endpoints_line(&self, caller: &str) -> String {
        format!("{caller} {} {DEMO_SECRET}\n", self.url())
    }

    /// Every event received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        if let Some(v) = req
            .headers()
            .get(name)
            .and_then(|v| http::HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            headers.insert(name, v);
        }
    }
    let verified = state
        .verifier
        .as_ref()
        .is_some_and(|v| v.verify(&body, &headers).is_ok());
    let webhook_id = header_text(&headers, "webhook-id");
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let got = Received {
        webhook_id,
        event_type: text(&event["type"]),
        job_id: text(&event["data"]["job_id"]),
        verified,
    };
    if verified {
        tracing::info!(
            event_type = %got.event_type,
            job_id = %got.job_id,
            webhook_id = %got.webhook_id,
            verified,
            "demo receiver: webhook received"
        );
    } else {
        tracing::warn!(webhook_id = %got.webhook_id, verified, "demo receiver: signature did not verify");
    }
    if let Ok(mut r) = state.received.lock() {
        r.push(got);
    }
    if verified {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::Unauthorized().finish()
    }
}

fn header_text(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use url::Url;

    use super::*;
    use crate::jobs::webhook::{Attempt, Secret, WebhookClient};

    #[actix_web::test]
    async fn verifies_and_records_each_event() {
        let receiver = WebhookReceiver::start().expect("start");
        let client = WebhookClient::new(true);
        let url = Url::parse(&receiver.url()).expect("url");
        let body = br#"{"type":"statement_job.completed","timestamp":"2026-12-03T19:00:00Z","data":{"job_id":"job_1"}}"#;
        let right = [Secret::parse(DEMO_SECRET).expect("demo secret")];
        let got = client
            .deliver(&url, &right, "msg_1", body, Duration::from_secs(30))
            .await;
        assert_eq!(got, Attempt::Delivered { status: 204 });
        let wrong = [Secret::parse(&format!("whsec_{}", "A".repeat(44))).expect("secret")];
        let got = client
            .deliver(&url, &wrong, "msg_2", body, Duration::from_secs(30))
            .await;
        assert_eq!(got.status(), Some(401));
        assert_eq!(
            receiver.received(),
            [
                Received {
                    webhook_id: "msg_1".into(),
                    event_type: "statement_job.completed".into(),
                    job_id: "job_1".into(),
                    verified: true,
                },
                Received {
                    webhook_id: "msg_2".into(),
                    event_type: "statement_job.completed".into(),
                    job_id: "job_1".into(),
                    verified: false,
                },
            ]
        );
        receiver.stop().await;
    }
}
