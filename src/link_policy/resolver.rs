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

    /// One address inside each special-purpose range (its first and last address) and, where
    /// the neighbour is an ordinary public address, the addresses just outside it.
    /// (range, first, last, public neighbours)
    pub(super) const RANGES: &[(&str, &str, &str, &[&str])] = &[
        // IPv4 Special-Purpose Address Registry, plus multicast.
        ("0.0.0.0/8", "0.0.0.0", "0.255.255.255", &["1.0.0.0"]),
        (
            "10.0.0.0/8",
            "10.0.0.0",
            "10.255.255.255",
            &["9.255.255.255", "11.0.0.0"],
        ),
        (
            "100.64.0.0/10",
            "100.64.0.0",
            "100.127.255.255",
            &["100.63.255.255", "100.128.0.0"],
        ),
        (
            "127.0.0.0/8",
            "127.0.0.0",
            "127.255.255.255",
            &["126.255.255.255", "128.0.0.0"],
        ),
        (
            "169.254.0.0/16",
            "169.254.0.0",
            "169.254.255.255",
            &["169.253.255.255", "169.255.0.0"],
        ),
        (
            "172.16.0.0/12",
            "172.16.0.0",
            "172.31.255.255",
            &["172.15.255.255", "172.32.0.0"],
        ),
        (
            "192.0.0.0/24",
            "192.0.0.0",
            "192.0.0.255",
            &["191.255.255.255", "192.0.1.0"],
        ),
        (
            "192.0.2.0/24",
            "192.0.2.0",
            "192.0.2.255",
            &["192.0.1.255", "192.0.3.0"],
        ),
        (
            "192.31.196.0/24",
            "192.31.196.0",
            "192.31.196.255",
            &["192.31.195.255", "192.31.197.0"],
        ),
        (
            "192.52.193.0/24",
            "192.52.193.0",
            "192.52.193.255",
            &["192.52.192.255", "192.52.194.0"],
        ),
        (
            "192.88.99.0/24",
            "192.88.99.0",
            "192.88.99.255",
            &["192.88.98.255", "192.88.100.0"],
        ),
        (
            "192.168.0.0/16",
            "192.168.0.0",
            "192.168.255.255",
            &["192.167.255.255", "192.169.0.0"],
        ),
        (
            "192.175.48.0/24",
            "192.175.48.0",
            "192.175.48.255",
            &["192.175.47.255", "192.175.49.0"],
        ),
        (
            "198.18.0.0/15",
            "198.18.0.0",
            "198.19.255.255",
            &["198.17.255.255", "198.20.0.0"],
        ),
        (
            "198.51.100.0/24",
            "198.51.100.0",
            "198.51.100.255",
            &["198.51.99.255", "198.51.101.0"],
        ),
        (
            "203.0.113.0/24",
            "203.0.113.0",
            "203.0.113.255",
            &["203.0.112.255", "203.0.114.0"],
        ),
        (
            "224.0.0.0/4",
            "224.0.0.0",
            "239.255.255.255",
            &["223.255.255.255"],
        ),
        ("240.0.0.0/4", "240.0.0.0", "255.255.255.254", &[]),
        (
            "255.255.255.255/32",
            "255.255.255.255",
            "255.255.255.255",
            &[],
        ),
        // IPv6 Special-Purpose Address Registry, plus the deprecated and multicast blocks.
        ("::/96", "::", "::ffff:ffff", &[]),
        (
            "64:ff9b:1::/48",
            "64:ff9b:1::",
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            &[],
        ),
        ("100::/64", "100::", "100::ffff:ffff:ffff:ffff", &[]),
        (
            "100:0:0:1::/64",
            "100:0:0:1::",
            "100::1:ffff:ffff:ffff:ffff",
            &[],
        ),
        (
            "2001::/23",
            "2001::",
            "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
            &["2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:200::"],
        ),
        (
            "2001:db8::/32",
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            &["2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::"],
        ),
        (
            "2002::/16",
            "2002::",
            "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            &["2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2003::"],
        ),
        (
            "2620:4f:8000::/48",
            "2620:4f:8000::",
            "2620:4f:8000:ffff:ffff:ffff:ffff:ffff",
            &["2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", "2620:4f:8001::"],
        ),
        (
            "3fff::/20",
            "3fff::",
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            &["3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "3fff:1000::"],
        ),
        (
            "5f00::/16",
            "5f00::",
            "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            &[],
        ),
        (
            "fc00::/7",
            "fc00::",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            &[],
        ),
        (
            "fe80::/10",
            "fe80::",
            "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            &[],
        ),
        (
            "fec0::/10",
            "fec0::",
            "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            &[],
        ),
        (
            "ff00::/8",
            "ff00::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            &[],
        ),
    ];

    #[test]
    fn every_special_purpose_range_is_forbidden() {
        let mut wrong = Vec::new();
        for (range, first, last, public) in RANGES {
            for inside in [first, last] {
                if !is_forbidden(inside.parse().expect("ip")) {
                    wrong.push(format!("{inside} (in {range}) must be forbidden"));
                }
            }
            for outside in *public {
                if is_forbidden(outside.parse().expect("ip")) {
                    wrong.push(format!("{outside} (just outside {range}) must be allowed"));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn embedded_ipv4_is_judged_as_ipv4() {
        // IPv4-mapped and NAT64 (64:ff9b::/96, how IPv6-only clusters reach S3) carry an IPv4
        // address: the IPv4 rules decide.
        for bad in ["::ffff:198.18.0.1", "64:ff9b::c612:1", "64:ff9b::a00:1"] {
            assert!(is_forbidden(bad.parse().expect("ip")), "{bad}");
        }
        for good in ["::ffff:52.219.1.1", "64:ff9b::34db:101"] {
            assert!(!is_forbidden(good.parse().expect("ip")), "{good}");
        }
    }
}
