//! What every outbound HTTP client of the gateway shares (Finpass, report links, JWKS).
//!
//! - **Idle connections are dropped before the server drops them.** A server closes an idle
//!   keep-alive connection on its own clock; a request written on a connection the server is
//!   closing fails before the server has read it (awc: `Connect(Disconnected)`). awc keeps idle
//!   connections 15 s by default, longer than many servers keep them (actix-web, uvicorn and
//!   Node: 5 s), so the pool here keeps them [`POOL_IDLE`].
//! - **HTTP/1.1 only.** The gateway's calls are one request per connection at a time (one
//!   Finpass call, one report stream), which HTTP/2 would not speed up; without it the h2 0.3
//!   crate that awc links (RUSTSEC-2026-0258, no fixed 0.3 release) is never reached: no
//!   connection ever negotiates `h2` (see `deny.toml`).

use std::{fmt, time::Duration};

use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use actix_web::{
    dev::Service,
    rt::net::{ActixStream, TcpStream},
};
use awc::http::{Uri, Version};

/// How long an idle pooled connection may be reused: below the shortest idle timeout of common
/// servers (5 s: actix-web, uvicorn, Node; S3 ~20 s, nginx 75 s, AWS ALB 60 s), with a second
/// of margin because the two clocks start at different moments (the server's when it wrote an
/// answer, ours when we finished reading it). Reconnecting costs one handshake per gap, which
/// calls this far apart do not notice.
pub const POOL_IDLE: Duration = Duration::from_secs(4);

/// The only HTTP version the gateway speaks outbound.
pub const HTTP_VERSION: Version = Version::HTTP_11;

/// Applies the shared rules (pool idle time, HTTP/1.1) to a connector, whatever TCP connector
/// it carries (report links resolve through the link policy).
pub fn connector<S, Io>(connector: awc::Connector<S>) -> awc::Connector<S>
where
    Io: ActixStream + fmt::Debug + 'static,
    S: Service<ConnectInfo<Uri>, Response = Connection<Uri, Io>, Error = ConnectError>
        + Clone
        + 'static,
{
    connector
        .conn_keep_alive(POOL_IDLE)
        .max_http_version(HTTP_VERSION)
}

/// A client builder on the default TCP connector with the shared rules and no redirects (a
/// redirect would leave the host the caller was configured for).
pub fn client_builder() -> awc::ClientBuilder<
    impl Service<ConnectInfo<Uri>, Response = Connection<Uri, TcpStream>, Error = ConnectError>
    + Clone
    + 'static,
> {
    awc::Client::builder()
        .connector(connector(awc::Connector::new()))
        .disable_redirects()
}
