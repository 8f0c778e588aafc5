//! DNS resolution that enforces the link policy at connect time.
//!
//! Checking a name's addresses before the request and then letting the HTTP client resolve it
//! again leaves a window for DNS rebinding. The download client therefore resolves through
//! [`PolicyResolver`], which refuses any answer containing a private, loopback, link-local
//! (169.254.0.0/16: cloud metadata), multicast or otherwise non-public address, unless the
//! host is listed literally in `REPORT_LINK_ALLOWED_HOSTS`. No connection is made.

use std::{
    collections::HashMap,
    error::Error as StdError,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use actix_tls::connect::Resolve;
use futures_util::future::LocalBoxFuture;

use super::LinkPolicy;

/// The resolver refused a host; recognised by the downloader to report `link_rejected`.
#[derive(Debug, thiserror::Error)]
#[error("the report link's host resolves to a forbidden address")]
pub struct ForbiddenAddress;

/// True for every address a report link must not reach.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) embeds an IPv4 address.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return forbidden_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
        || a >= 240 // reserved
}

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
                && addrs.iter().any(|a| is_forbidden(a.ip()))
            {
                return Err(Box::new(ForbiddenAddress) as Box<dyn StdError>);
            }
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(
                is_forbidden(bad.parse().expect("ip")),
                "{bad} must be forbidden"
            );
        }
        for good in [
            "52.219.1.1",
            "3.5.140.2",
            "8.8.8.8",
            "2600:1f18::1",
            "100.128.0.1",
        ] {
            assert!(
                !is_forbidden(good.parse().expect("ip")),
                "{good} must be allowed"
            );
        }
    }
}
