//! Where a call came from, for the audit trail: the peer's address, or, when the peer is a
//! reverse proxy listed in `TRUSTED_PROXIES`, the first hop of its `X-Forwarded-For`. From
//! anyone else that header is whatever the caller chose to write, so it is ignored.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The source address of `req` as text (empty when the peer is unknown).
pub fn source_address(req: &HttpRequest, trusted: &[IpNet]) -> String {
    let peer = req.peer_addr().map(|a| canonical(a.ip()));
    let forwarded = || {
        req.headers()
            .get("x-forwarded-for")?
            .to_str()
            .ok()?
            .split(',')
            .next()?
            .trim()
            .parse::<IpAddr>()
            .ok()
    };
    match peer {
        Some(p) if trusted.iter().any(|n| n.contains(&p)) => {
            forwarded().map(canonical).unwrap_or(p).to_string()
        }
        Some(p) => p.to_string(),
        None => String::new(),
    }
}

/// An IPv4 peer seen on a dual-stack socket (`::ffff:10.0.0.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn req(peer: &str, xff: Option<&str>) -> HttpRequest {
        let mut r = TestRequest::default().peer_addr(peer.parse().expect("addr"));
        if let Some(x) = xff {
            r = r.insert_header(("x-forwarded-for", x));
        }
        r.to_http_request()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let via_proxy = req("10.1.2.3:5000", Some("203.0.113.7, 10.9.9.9"));
        assert_eq!(source_address(&via_proxy, &trusted), "203.0.113.7");
        let direct = req("198.51.100.2:5000", Some("203.0.113.7"));
        assert_eq!(source_address(&direct, &trusted), "198.51.100.2");
        let garbage = req("10.1.2.3:5000", Some("not-an-ip"));
        assert_eq!(source_address(&garbage, &trusted), "10.1.2.3");
        assert_eq!(
            source_address(&req("10.1.2.3:5000", None), &trusted),
            "10.1.2.3"
        );
        let mapped = req("[::ffff:10.1.2.3]:5000", Some("2001:db8::1"));
        assert_eq!(source_address(&mapped, &trusted), "2001:db8::1");
        assert_eq!(source_address(&mapped, &[]), "10.1.2.3");
    }
}
