//! Which IP addresses a report link may reach: one rule for the resolver (names, at connect
//! time) and for the link policy (IP literals, which never reach a resolver).
//!
//! A report link only ever needs to reach an S3 endpoint, which always has a public unicast
//! address. So every range of the IANA IPv4 and IPv6 Special-Purpose Address Registries is
//! refused, including the few entries marked "globally reachable" (anycast protocol services
//! such as AS112, AMT, PCP and TURN): none of them is object storage, and refusing them costs
//! nothing. Multicast and the deprecated IPv6 blocks (`::/96` IPv4-compatible, `fec0::/10`
//! site-local) are refused too, and so is any IPv6 address outside `2000::/3`, the only block
//! IANA allocates for global unicast, so that a future IETF assignment there is refused by
//! default. Two IPv6 forms carry an IPv4 address and are judged by it: IPv4-mapped
//! (`::ffff:0:0/96`) and NAT64's well-known prefix (`64:ff9b::/96`, RFC 6052), which is how
//! an IPv6-only cluster reaches S3's IPv4 endpoints through DNS64.
//!
//! Registries as of 2025-06: <https://www.iana.org/assignments/iana-ipv4-special-registry>,
//! <https://www.iana.org/assignments/iana-ipv6-special-registry>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `(network, prefix length, why)`; `why` starts with the range, for logs and tests.
type Range<A> = (A, u8, &'static str);

#[rustfmt::skip]
const V4_RANGES: &[Range<Ipv4Addr>] = &[
    (v4(0, 0, 0, 0), 8, "0.0.0.0/8 this network (RFC 791)"),
    (v4(10, 0, 0, 0), 8, "10.0.0.0/8 private use (RFC 1918)"),
    (v4(100, 64, 0, 0), 10, "100.64.0.0/10 shared address space (RFC 6598)"),
    (v4(127, 0, 0, 0), 8, "127.0.0.0/8 loopback (RFC 1122)"),
    (v4(169, 254, 0, 0), 16, "169.254.0.0/16 link local, cloud metadata (RFC 3927)"),
    (v4(172, 16, 0, 0), 12, "172.16.0.0/12 private use (RFC 1918)"),
    // Includes 192.0.0.0/29 (DS-Lite), .8 (dummy), .9 (PCP anycast), .10 (TURN anycast),
    // .170/.171 (NAT64/DNS64 discovery).
    (v4(192, 0, 0, 0), 24, "192.0.0.0/24 IETF protocol assignments (RFC 6890)"),
    (v4(192, 0, 2, 0), 24, "192.0.2.0/24 documentation TEST-NET-1 (RFC 5737)"),
    (v4(192, 31, 196, 0), 24, "192.31.196.0/24 AS112-v4 (RFC 7535)"),
    (v4(192, 52, 193, 0), 24, "192.52.193.0/24 AMT (RFC 7450)"),
    (v4(192, 88, 99, 0), 24, "192.88.99.0/24 6to4 relay anycast, deprecated (RFC 7526)"),
    (v4(192, 168, 0, 0), 16, "192.168.0.0/16 private use (RFC 1918)"),
    (v4(192, 175, 48, 0), 24, "192.175.48.0/24 AS112 direct delegation (RFC 7534)"),
    (v4(198, 18, 0, 0), 15, "198.18.0.0/15 benchmarking (RFC 2544)"),
    (v4(198, 51, 100, 0), 24, "198.51.100.0/24 documentation TEST-NET-2 (RFC 5737)"),
    (v4(203, 0, 113, 0), 24, "203.0.113.0/24 documentation TEST-NET-3 (RFC 5737)"),
    (v4(224, 0, 0, 0), 4, "224.0.0.0/4 multicast (RFC 5771)"),
    // Before 240.0.0.0/4, which contains it, so that it is named.
    (v4(255, 255, 255, 255), 32, "255.255.255.255/32 limited broadcast (RFC 919)"),
    (v4(240, 0, 0, 0), 4, "240.0.0.0/4 reserved (RFC 1112)"),
];

#[rustfmt::skip]
const V6_RANGES: &[Range<Ipv6Addr>] = &[
    // Includes ::/128 (unspecified) and ::1/128 (loopback).
    (v6(0, 0, 0, 0), 96, "::/96 IPv4-compatible, deprecated; unspecified; loopback (RFC 4291)"),
    (v6(0x64, 0xff9b, 1, 0), 48, "64:ff9b:1::/48 local-use IPv4/IPv6 translation (RFC 8215)"),
    (v6(0x100, 0, 0, 0), 64, "100::/64 discard-only (RFC 6666)"),
    (v6(0x100, 0, 0, 1), 64, "100:0:0:1::/64 dummy IPv6 prefix (RFC 9780)"),
    // Includes Teredo (2001::/32), benchmarking (2001:2::/48), ORCHID, AMT, AS112-v6, DRIP.
    (v6(0x2001, 0, 0, 0), 23, "2001::/23 IETF protocol assignments (RFC 2928)"),
    (v6(0x2001, 0xdb8, 0, 0), 32, "2001:db8::/32 documentation (RFC 3849)"),
    (v6(0x2002, 0, 0, 0), 16, "2002::/16 6to4 (RFC 3056)"),
    (v6(0x2620, 0x4f, 0x8000, 0), 48, "2620:4f:8000::/48 AS112 direct delegation (RFC 7534)"),
    (v6(0x3fff, 0, 0, 0), 20, "3fff::/20 documentation (RFC 9637)"),
    (v6(0x5f00, 0, 0, 0), 16, "5f00::/16 segment routing SIDs (RFC 9602)"),
    (v6(0xfc00, 0, 0, 0), 7, "fc00::/7 unique local (RFC 4193)"),
    (v6(0xfe80, 0, 0, 0), 10, "fe80::/10 link-local (RFC 4291)"),
    (v6(0xfec0, 0, 0, 0), 10, "fec0::/10 site-local, deprecated (RFC 3879)"),
    (v6(0xff00, 0, 0, 0), 8, "ff00::/8 multicast (RFC 4291)"),
];

/// 64:ff9b::/96 (RFC 6052): NAT64, the last 32 bits are an IPv4 address.
const NAT64_WELL_KNOWN: Ipv6Addr = v6(0x64, 0xff9b, 0, 0);
/// 2000::/3: the only block IANA allocates for global unicast.
const GLOBAL_UNICAST: Ipv6Addr = v6(0x2000, 0, 0, 0);

const fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// A network given by its first four groups, the other four zero (true of every one here).
const fn v6(a: u16, b: u16, c: u16, d: u16) -> Ipv6Addr {
    Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0)
}

const NOT_GLOBAL_UNICAST: &str = "outside 2000::/3, the global unicast block (RFC 4291)";

/// Why a report link must not reach `ip`, or `None` when it may. The answer names the range.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// True for every address a report link must not reach. The one rule, used by both
/// [`super::PolicyResolver`] and [`super::LinkPolicy::check`].
pub fn is_forbidden(ip: IpAddr) -> bool {
    forbidden_reason(ip).is_some()
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u128::from(ip.to_bits());
    V4_RANGES
        .iter()
        .find(|(net, len, _)| in_prefix(bits, u128::from(net.to_bits()), *len, 32))
        .map(|(_, _, why)| *why)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = ip.to_bits();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): the last 32 bits are the IPv4 address.
    if in_prefix(bits, NAT64_WELL_KNOWN.to_bits(), 96, 128) {
        let [.., a, b, c, d] = ip.octets();
        return forbidden_v4(Ipv4Addr::new(a, b, c, d));
    }
    if let Some((_, _, why)) = V6_RANGES
        .iter()
        .find(|(net, len, _)| in_prefix(bits, net.to_bits(), *len, 128))
    {
        return Some(why);
    }
    (!in_prefix(bits, GLOBAL_UNICAST.to_bits(), 3, 128)).then_some(NOT_GLOBAL_UNICAST)
}

/// True when the top `len` of `width` bits of `addr` equal those of `net`.
fn in_prefix(addr: u128, net: u128, len: u8, width: u32) -> bool {
    let host_bits = width.saturating_sub(u32::from(len));
    addr.checked_shr(host_bits).unwrap_or(0) == net.checked_shr(host_bits).unwrap_or(0)
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
    #[rustfmt::skip]
    const RANGES: &[(&str, &str, &str, &[&str])] = &[
        // IPv4 Special-Purpose Address Registry, plus multicast.
        ("0.0.0.0/8", "0.0.0.0", "0.255.255.255", &["1.0.0.0"]),
        ("10.0.0.0/8", "10.0.0.0", "10.255.255.255", &["9.255.255.255", "11.0.0.0"]),
        ("100.64.0.0/10", "100.64.0.0", "100.127.255.255", &["100.63.255.255", "100.128.0.0"]),
        ("127.0.0.0/8", "127.0.0.0", "127.255.255.255", &["126.255.255.255", "128.0.0.0"]),
        ("169.254.0.0/16", "169.254.0.0", "169.254.255.255", &["169.253.255.255", "169.255.0.0"]),
        ("172.16.0.0/12", "172.16.0.0", "172.31.255.255", &["172.15.255.255", "172.32.0.0"]),
        ("192.0.0.0/24", "192.0.0.0", "192.0.0.255", &["191.255.255.255", "192.0.1.0"]),
        ("192.0.2.0/24", "192.0.2.0", "192.0.2.255", &["192.0.1.255", "192.0.3.0"]),
        ("192.31.196.0/24", "192.31.196.0", "192.31.196.255", &["192.31.195.255", "192.31.197.0"]),
        ("192.52.193.0/24", "192.52.193.0", "192.52.193.255", &["192.52.192.255", "192.52.194.0"]),
        ("192.88.99.0/24", "192.88.99.0", "192.88.99.255", &["192.88.98.255", "192.88.100.0"]),
        ("192.168.0.0/16", "192.168.0.0", "192.168.255.255", &["192.167.255.255", "192.169.0.0"]),
        ("192.175.48.0/24", "192.175.48.0", "192.175.48.255", &["192.175.47.255", "192.175.49.0"]),
        ("198.18.0.0/15", "198.18.0.0", "198.19.255.255", &["198.17.255.255", "198.20.0.0"]),
        ("198.51.100.0/24", "198.51.100.0", "198.51.100.255", &["198.51.99.255", "198.51.101.0"]),
        ("203.0.113.0/24", "203.0.113.0", "203.0.113.255", &["203.0.112.255", "203.0.114.0"]),
        ("224.0.0.0/4", "224.0.0.0", "239.255.255.255", &["223.255.255.255"]),
        ("240.0.0.0/4", "240.0.0.0", "255.255.255.254", &[]),
        ("255.255.255.255/32", "255.255.255.255", "255.255.255.255", &[]),
        // IPv6 Special-Purpose Address Registry, plus the deprecated and multicast blocks.
        ("::/96", "::", "::ffff:ffff", &[]),
        ("64:ff9b:1::/48", "64:ff9b:1::", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff", &[]),
        ("100::/64", "100::", "100::ffff:ffff:ffff:ffff", &[]),
        ("100:0:0:1::/64", "100:0:0:1::", "100::1:ffff:ffff:ffff:ffff", &[]),
        ("2001::/23", "2001::", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", &["2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:200::"]),
        ("2001:db8::/32", "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", &["2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::"]),
        ("2002::/16", "2002::", "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &["2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2003::"]),
        ("2620:4f:8000::/48", "2620:4f:8000::", "2620:4f:8000:ffff:ffff:ffff:ffff:ffff", &["2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", "2620:4f:8001::"]),
        ("3fff::/20", "3fff::", "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", &["3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "3fff:1000::"]),
        ("5f00::/16", "5f00::", "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &[]),
        ("fc00::/7", "fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &[]),
        ("fe80::/10", "fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &[]),
        ("fec0::/10", "fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &[]),
        ("ff00::/8", "ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &[]),
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

    /// Each range ends exactly where the registry says: its first and last addresses fall in
    /// it (by name), the addresses one below and one above do not.
    #[test]
    fn each_range_ends_exactly_at_its_boundary() {
        let mut wrong = Vec::new();
        for (range, first, last, _) in RANGES {
            let first: IpAddr = first.parse().expect("ip");
            let last: IpAddr = last.parse().expect("ip");
            for inside in [first, last] {
                let reason = forbidden_reason(inside).unwrap_or_default();
                if !reason.starts_with(&format!("{range} ")) {
                    wrong.push(format!("{inside}: {reason:?}, expected {range}"));
                }
            }
            for outside in [step(first, -1), step(last, 1)].into_iter().flatten() {
                if let Some(reason) = forbidden_reason(outside)
                    && reason.starts_with(&format!("{range} "))
                {
                    wrong.push(format!("{outside} is outside {range}, got {reason:?}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn ipv6_outside_global_unicast_is_forbidden() {
        for bad in ["1::", "4000::", "8000::1", "e000::", "::1:0:0"] {
            assert_eq!(
                forbidden_reason(bad.parse().expect("ip")),
                Some(NOT_GLOBAL_UNICAST),
                "{bad}"
            );
        }
        assert_eq!(forbidden_reason("2600:1f18::1".parse().expect("ip")), None);
    }

    /// The address `delta` (±1) away, if there is one.
    fn step(ip: IpAddr, delta: i8) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(v4) => {
                let n = u32::from(v4);
                let n = if delta < 0 {
                    n.checked_sub(1)
                } else {
                    n.checked_add(1)
                }?;
                Some(IpAddr::V4(n.into()))
            }
            IpAddr::V6(v6) => {
                let n = u128::from(v6);
                let n = if delta < 0 {
                    n.checked_sub(1)
                } else {
                    n.checked_add(1)
                }?;
                Some(IpAddr::V6(n.into()))
            }
        }
    }
}
