//! One delivery attempt of a webhook event, and what its answer means.
//!
//! The destination is untrusted in the same way as a report link: the link policy's rules
//! apply. https only; plain http only with `WEBHOOK_ALLOW_HTTP=true` and then only to loopback
//! (tests, the sandbox); no userinfo; no redirect is followed (a 3xx is a failed attempt); and
//! every name is resolved through [`PolicyResolver`], which refuses forbidden addresses
//! (private, loopback, link-local such as cloud metadata) at connect time, so DNS rebinding
//! cannot turn an allowed name into an internal address between the check and the connect.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use awc::{
    error::{ConnectError, SendRequestError},
    http::{StatusCode, header},
};
use url::Url;

use super::sign::{Secret, signature};
use crate::finpass::parse_retry_after_within;
use crate::link_policy::{HostPattern, LinkPolicy, PolicyResolver, is_forbidden, rejection_in};
use crate::outbound;

/// A 2xx answer within this long delivers (Standard Webhooks' recommendation).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest `Retry-After` of a receiver that is honoured as given (a longer one is cut to
/// this): a day, the length of the retry ladder's last step.
pub const MAX_RECEIVER_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx answer within the timeout.
    Delivered { status: u16 },
    /// Anything else but 410: try again later (`retry_after` from a 429/503's `Retry-After`).
    /// `status` is `None` when no answer came (timeout, connection refused, refused address).
    Retry {
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// 410 Gone: the receiver asks for no more deliveries to this job's URL.
    Gone,
}

impl Attempt {
    /// The answer's status, if one came.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered { status } => Some(*status),
            Self::Retry { status, .. } => *status,
            Self::Gone => Some(410),
        }
    }
}

/// Why a destination is refused before any connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("the scheme must be https (http only to loopback with WEBHOOK_ALLOW_HTTP=true)")]
    Scheme,
    #[error("the URL carries user credentials")]
    Userinfo,
    #[error("the URL has no host")]
    NoHost,
    #[error("the host is a forbidden address")]
    ForbiddenAddress,
}

/// The link policy's static rules for a webhook destination (names are checked again at
/// connect time by the client's resolver).
pub fn check_destination(url: &Url, allow_http: bool) -> Result<(), DestinationError> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DestinationError::Userinfo);
    }
    let host = url.host_str().ok_or(DestinationError::NoHost)?;
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let loopback = ip.map_or(host.eq_ignore_ascii_case("localhost"), |ip| {
        ip.is_loopback()
    });
    match url.scheme() {
        "https" => {}
        "http" if allow_http && loopback => {}
        _ => return Err(DestinationError::Scheme),
    }
    if ip.is_some_and(is_forbidden) && !(allow_http && loopback) {
        return Err(DestinationError::ForbiddenAddress);
    }
    Ok(())
}

/// The HTTP client of webhook deliveries, and whether plain http to loopback is admitted.
#[derive(Clone)]
pub struct WebhookClient {
    http: awc::Client,
    allow_http: bool,
}

impl WebhookClient {
    /// A client whose every connection resolves through the link policy; with `allow_http`,
    /// `localhost` is the one name allowed to resolve to a forbidden (loopback) address.
    pub fn new(allow_http: bool) -> Self {
        let literal = if allow_http {
            HostPattern::parse("localhost").ok().into_iter().collect()
        } else {
            Vec::new()
        };
        let resolver = PolicyResolver::new(
            LinkPolicy::new(literal, allow_http),
            Arc::new(HashMap::new()),
        );
        let tcp =
            actix_tls::connect::Connector::new(actix_tls::connect::Resolver::custom(resolver))
                .service();
        let http = awc::Client::builder()
            .connector(outbound::connector(
                awc::Connector::new()
                    .connector(tcp)
                    .timeout(DELIVERY_TIMEOUT),
            ))
            .disable_redirects()
            .finish();
        Self { http, allow_http }
    }

    pub fn allow_http(&self) -> bool {
        self.allow_http
    }

    /// One attempt: POST `body` to `url`, signed with every secret, within `timeout`
    /// ([`DELIVERY_TIMEOUT`] in production; tests shorten it).
    pub async fn deliver(
        &self,
        url: &Url,
        secrets: &[Secret],
        webhook_id: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Attempt {
        let now = SystemTime::now();
        let resp = match self
            .send(url, secrets, webhook_id, body, timeout, now)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                // The host and the cause; never the URL's path or query.
                tracing::info!(error = %e, host = url.host_str().unwrap_or_default(), "webhook attempt got no answer");
                return Attempt::Retry {
                    status: None,
                    retry_after: None,
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Attempt::Delivered {
                status: status.as_u16(),
            };
        }
        if status == StatusCode::GONE {
            return Attempt::Gone;
        }
        let retry_after = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then(|| resp.headers().get(header::RETRY_AFTER))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after_within(v, now, MAX_RECEIVER_RETRY_AFTER));
        Attempt::Retry {
            status: Some(status.as_u16()),
            retry_after,
        }
    }

    async fn send(
        &self,
        url: &Url,
        secrets: &[Secret],
        webhook_id: &str,
        body: &[u8],
        timeout: Duration,
        now: SystemTime,
    ) -> Result<awc::ClientResponse, SendError> {
        check_destination(url, self.allow_http)?;
        let timestamp = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.http
            .post(url.as_str())
            .timeout(timeout)
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header(("webhook-id", webhook_id))
            .insert_header(("webhook-timestamp", timestamp.to_string()))
            .insert_header((
                "webhook-signature",
                signature(secrets, webhook_id, timestamp, body),
            ))
            .send_body(body.to_vec())
            .await
            .map_err(|e| match e {
                SendRequestError::Timeout => SendError::Timeout,
                SendRequestError::Connect(ConnectError::Resolver(e))
                    if rejection_in(&*e).is_some() =>
                {
                    SendError::RefusedAddress
                }
                // Display of a send error names the failure, never the URL.
                other => SendError::Transport(other.to_string()),
            })
    }
}

/// Why an attempt got no answer (logged; the ladder treats them alike).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum SendError {
    #[error("destination refused: {0}")]
    Destination(#[from] DestinationError),
    #[error("the host resolves to a forbidden address")]
    RefusedAddress,
    #[error("no answer within the timeout")]
    Timeout,
    #[error("{0}")]
    Transport(String),
}

/// One attempt with [`WebhookClient::deliver`] (the contract's free-function form).
pub async fn deliver(
    client: &WebhookClient,
    url: &Url,
    secrets: &[Secret],
    webhook_id: &str,
    body: &[u8],
) -> Attempt {
    client
        .deliver(url, secrets, webhook_id, body, DELIVERY_TIMEOUT)
        .await
}

#[cfg(test)]
mod tests {
    //! Deliveries to a real HTTP receiver on loopback (no mocks); each route answers one way a
    //! receiver can. Signatures are checked with the `standardwebhooks` crate.

    use std::sync::Mutex;

    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use base64::{Engine, engine::general_purpose::STANDARD};

    use super::*;

    /// What the receiver got: path, headers, body.
    type Seen = Arc<Mutex<Vec<(String, http::HeaderMap, Vec<u8>)>>>;

    fn secret_text(fill: u8) -> String {
        format!("whsec_{}", STANDARD.encode([fill; 32]))
    }

    fn receiver() -> (u16, Seen) {
        let seen: Seen = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let log = seen.clone();
        let server = HttpServer::new(move || {
            let log = log.clone();
            App::new()
                .app_data(web::Data::new(log))
                .default_service(web::to(
                    |req: HttpRequest, body: web::Bytes, log: web::Data<Seen>| async move {
                        let mut headers = http::HeaderMap::new();
                        for (k, v) in req.headers() {
                            if let (Ok(k), Ok(v)) = (
                                http::HeaderName::from_bytes(k.as_str().as_bytes()),
                                http::HeaderValue::from_bytes(v.as_bytes()),
                            ) {
                                headers.append(k, v);
                            }
                        }
                        log.lock()
                            .unwrap()
                            .push((req.path().to_owned(), headers, body.to_vec()));
                        match req.path() {
                            "/ok" => HttpResponse::NoContent().finish(),
                            "/gone" => HttpResponse::Gone().finish(),
                            "/busy" => HttpResponse::TooManyRequests()
                                .insert_header(("retry-after", "7200"))
                                .finish(),
                            "/unavailable" => HttpResponse::ServiceUnavailable()
                                .insert_header(("retry-after", "3"))
                                .finish(),
                            "/redirect" => HttpResponse::Found()
                                .insert_header(("location", "/ok"))
                                .finish(),
                            "/silent" => {
                                // Never answers: the attempt must end by its own timeout.
                                std::future::pending::<()>().await;
                                HttpResponse::Ok().finish()
                            }
                            _ => HttpResponse::InternalServerError().finish(),
                        }
                    },
                ))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        (port, seen)
    }

    async fn attempt(client: &WebhookClient, port: u16, path: &str) -> Attempt {
        let url = Url::parse(&format!("http://127.0.0.1:{port}{path}")).unwrap();
        let secrets = [Secret::parse(&secret_text(1)).unwrap()];
        client
            .deliver(&url, &secrets, "msg_1", b"{}", Duration::from_secs(30))
            .await
    }

    #[actix_web::test]
    async fn a_2xx_delivers_signed_with_both_secrets_of_a_rotation() {
        let (port, seen) = receiver();
        let client = WebhookClient::new(true);
        let url = Url::parse(&format!("http://127.0.0.1:{port}/ok")).unwrap();
        let secrets = [
            Secret::parse(&secret_text(1)).unwrap(),
            Secret::parse(&secret_text(2)).unwrap(),
        ];
        let body =
            br#"{"type":"statement_job.completed","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
        let got = client
            .deliver(&url, &secrets, "msg_abc", body, Duration::from_secs(30))
            .await;
        assert_eq!(got, Attempt::Delivered { status: 204 });
        let seen = seen.lock().unwrap();
        let (_, headers, got_body) = &seen[0];
        assert_eq!(got_body, body);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["webhook-id"], "msg_abc");
        assert_eq!(
            headers["webhook-signature"]
                .to_str()
                .unwrap()
                .split(' ')
                .count(),
            2
        );
        // Either secret alone verifies (a receiver mid-rotation knows only one of them).
        for fill in [1, 2] {
            standardwebhooks::Webhook::new(&secret_text(fill))
                .unwrap()
                .verify(got_body, headers)
                .unwrap();
        }
        assert!(
            standardwebhooks::Webhook::new(&secret_text(3))
                .unwrap()
                .verify(got_body, headers)
                .is_err()
        );
    }

    #[actix_web::test]
    async fn each_answer_means_what_the_ladder_needs() {
        let (port, seen) = receiver();
        let client = WebhookClient::new(true);
        assert_eq!(attempt(&client, port, "/gone").await, Attempt::Gone);
        assert_eq!(
            attempt(&client, port, "/busy").await,
            Attempt::Retry {
                status: Some(429),
                retry_after: Some(Duration::from_secs(7200))
            }
        );
        assert_eq!(
            attempt(&client, port, "/unavailable").await,
            Attempt::Retry {
                status: Some(503),
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            attempt(&client, port, "/broken").await,
            Attempt::Retry {
                status: Some(500),
                retry_after: None
            }
        );
        // A redirect is a failed attempt, and it is not followed.
        assert_eq!(
            attempt(&client, port, "/redirect").await,
            Attempt::Retry {
                status: Some(302),
                retry_after: None
            }
        );
        let paths: Vec<String> = seen.lock().unwrap().iter().map(|s| s.0.clone()).collect();
        assert_eq!(
            paths,
            ["/gone", "/busy", "/unavailable", "/broken", "/redirect"]
        );
    }

    #[actix_web::test]
    async fn a_receiver_slower_than_the_timeout_is_a_retry() {
        let (port, seen) = receiver();
        let client = WebhookClient::new(true);
        let url = Url::parse(&format!("http://127.0.0.1:{port}/silent")).unwrap();
        let secrets = [Secret::parse(&secret_text(1)).unwrap()];
        let got = client
            .deliver(&url, &secrets, "msg_1", b"{}", Duration::from_millis(300))
            .await;
        assert_eq!(
            got,
            Attempt::Retry {
                status: None,
                retry_after: None
            }
        );
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "the request did reach the receiver"
        );
    }

    #[actix_web::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
        let (port, seen) = receiver();
        // https://localhost passes the static rules; the resolver refuses its address.
        let client = WebhookClient::new(false);
        let url = Url::parse(&format!("https://localhost:{port}/ok")).unwrap();
        let secrets = [Secret::parse(&secret_text(1)).unwrap()];
        let sent = client
            .send(
                &url,
                &secrets,
                "msg_1",
                b"{}",
                Duration::from_secs(30),
                SystemTime::now(),
            )
            .await;
        assert_eq!(sent.err(), Some(SendError::RefusedAddress));
        let got = client
            .deliver(&url, &secrets, "msg_1", b"{}", Duration::from_secs(30))
            .await;
        assert_eq!(
            got,
            Attempt::Retry {
                status: None,
                retry_after: None
            }
        );
        // And plain http is refused outright without WEBHOOK_ALLOW_HTTP.
        assert_eq!(
            attempt(&client, port, "/ok").await,
            Attempt::Retry {
                status: None,
                retry_after: None
            }
        );
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn destination_rules() {
        let ok = |u: &str, h: bool| check_destination(&Url::parse(u).unwrap(), h);
        assert_eq!(ok("https://hooks.example.com/x", false), Ok(()));
        assert_eq!(
            ok("http://hooks.example.com/x", false),
            Err(DestinationError::Scheme)
        );
        assert_eq!(
            ok("http://hooks.example.com/x", true),
            Err(DestinationError::Scheme)
        );
        assert_eq!(
            ok("http://127.0.0.1:1/x", false),
            Err(DestinationError::Scheme)
        );
        assert_eq!(ok("http://127.0.0.1:1/x", true), Ok(()));
        assert_eq!(ok("http://[::1]:1/x", true), Ok(()));
        assert_eq!(ok("http://LOCALHOST:1/x", true), Ok(()));
        assert_eq!(ok("http://10.1.2.3/x", true), Err(DestinationError::Scheme));
        assert_eq!(
            ok("https://169.254.169.254/x", true),
            Err(DestinationError::ForbiddenAddress)
        );
        assert_eq!(
            ok("https://127.0.0.1/x", false),
            Err(DestinationError::ForbiddenAddress)
        );
        assert_eq!(
            ok("https://u@h.example.com/", false),
            Err(DestinationError::Userinfo)
        );
        assert_eq!(
            ok("ftp://h.example.com/", true),
            Err(DestinationError::Scheme)
        );
        assert_eq!(
            ok("file:///etc/passwd", true),
            Err(DestinationError::NoHost)
        );
    }
}
