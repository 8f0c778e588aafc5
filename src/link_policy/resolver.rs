//! DNS resolution that enforces the link policy at connect time.
//!
//! Checking a name's addresses before the request and then letting the HTTP client resolve it
//! again leaves a window for DNS rebinding. The download client therefore resolves through
//! [`PolicyResolver`], which refuses any answer containing an address [`super::is_forbidden`]
//! refuses
//! (private, loopback, link-local such as cloud metadata, every special-purpose range),
//! unless the host is listed literally in `REPORT_LINK_ALLOWED_HOSTS`. No connection is made.

use std::{
    collections::HashMap,
    error::Error as StdError,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use actix_tls::connect::Resolve;
use futures_util::future::LocalBoxFuture;

use super::{LinkPolicy, LinkRejection, address::forbidden_reason};

/// Resolver for the download client. `pinned` maps names to addresses, like curl's
/// `--resolve`; tests use it to make a public-looking name resolve to loopback.
#[derive(Clone)]
pub struct PolicyResolver {
    policy: LinkPolicy,
    pinned: Arc<HashMap<String, IpAddr>>,
}

impl PolicyResolver {
    pub fn new(policy: LinkPolicy, pinned: Arc<HashMap<String, IpAddr>>) -> Self {
        Self { policy, pinned }
    }
}

impl Resolve for PolicyResolver {
    /// Fails with [`LinkRejection::ForbiddenAddress`] (recognised with
    /// [`super::rejection_in`]) when the policy refuses an address.
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn StdError>>> {
        Box::pin(async move {
            let host = host.to_ascii_lowercase();
            let addrs: Vec<SocketAddr> = match self.pinned.get(&host) {
                Some(ip) => vec![SocketAddr::new(*ip, port)],
                None => tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect(),
            };
            if !self.policy.host_listed_literally(&host)
                && let Some((addr, reason)) = addrs
                    .iter()
                    .find_map(|a| Some((a.ip(), forbidden_reason(a.ip())?)))
            {
                // The host and address, never the link's query.
                tracing::warn!(%host, %addr, reason, "report link host resolves to a forbidden address");
                return Err(Box::new(LinkRejection::ForbiddenAddress) as Box<dyn StdError>);
            }
            Ok(addrs)
        })
    }
}
