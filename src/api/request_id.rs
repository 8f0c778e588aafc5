//! The id of one HTTP exchange: what the caller sees in `X-Request-Id`, what the logs carry as
//! the root span's `request_id`, what a problem's `instance` names and what the audit event
//! keeps as `http_request_id`. One value, so a caller's support ticket leads to the log lines
//! and the audit record of that exact call.
//!
//! A caller (a frontend, another service, a proxy) may bring its own id so that the exchange
//! can be followed across systems; it is kept when it is 1..=128 visible ASCII characters,
//! which is safe to echo in a header and to log, and replaced by a new UUID otherwise.

use std::fmt;

use actix_web::{
    HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

/// The request and response header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-supplied id kept.
const MAX_LEN: usize = 128;

/// A request id: the caller's (validated) or a new UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestId(String);

impl HttpRequestId {
    /// The caller's id, if it is 1..=128 visible ASCII characters (`!`..=`~`).
    pub fn from_caller(value: &[u8]) -> Option<Self> {
        let usable = (1..=MAX_LEN).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic);
        usable
            .then(|| std::str::from_utf8(value).ok().map(|s| Self(s.to_owned())))
            .flatten()
    }

    /// A new, unique id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The caller's `X-Request-Id` when usable, else a new one.
    pub fn for_request(req: &ServiceRequest) -> Self {
        req.headers()
            .get(&X_REQUEST_ID)
            .and_then(|v| Self::from_caller(v.as_bytes()))
            .unwrap_or_else(Self::generate)
    }

    /// The id of a request that went through the edge middleware (a new one otherwise, which
    /// only a request that bypassed it can get).
    pub fn of(req: &impl HttpMessage) -> Self {
        req.extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(Self::generate)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a response header value (always valid: visible ASCII).
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.0).ok()
    }

    /// The id as an RFC 3986 URI reference, for a problem's `instance`: unchanged for the
    /// ids we generate and for any caller id made of URI characters; the few visible ASCII
    /// characters a URI may not hold (`"<>\^`{|}` and `%` itself) are percent-encoded.
    pub fn as_uri_reference(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for b in self.0.bytes() {
            if matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'%'
            ) {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push(char::from(b));
            }
        }
        out
    }
}

impl fmt::Display for HttpRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The root span of every request, carrying the exchange's [`HttpRequestId`] as `request_id`
/// (tracing-actix-web's default span would carry its own UUID, which callers never see).
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let id = HttpRequestId::of(request);
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "default".to_owned());
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.target = %request.uri().path_and_query().map_or("", |p| p.as_str()),
            http.client_ip = %request.connection_info().realip_remote_addr().unwrap_or(""),
            http.status_code = tracing::field::Empty,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            request_id = %id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_are_kept_only_when_short_visible_ascii() {
        assert_eq!(
            HttpRequestId::from_caller(b"abc-1").map(|i| i.0),
            Some("abc-1".to_owned())
        );
        assert!(HttpRequestId::from_caller(&[b'x'; 128]).is_some());
        for bad in [
            &b""[..],
            &[b'x'; 129],
            b"a b",
            b"a\tb",
            "é".as_bytes(),
            b"a\x7f",
        ] {
            assert_eq!(HttpRequestId::from_caller(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_instance_is_the_id_unless_a_uri_cannot_hold_it() {
        let id = |s: &str| HttpRequestId::from_caller(s.as_bytes()).expect("id");
        let generated = HttpRequestId::generate();
        assert_eq!(generated.as_uri_reference(), generated.as_str());
        assert_eq!(id("a:b/c?d=e#f").as_uri_reference(), "a:b/c?d=e#f");
        assert_eq!(id("a{b}%").as_uri_reference(), "a%7Bb%7D%25");
    }
}
