//! Where a call came from, for the audit trail: the peer's address, or, when the peer is a
//! reverse proxy listed in `TRUSTED_PROXIES`, the first hop of its `X-Forwarded-For`. From
//! anyone else that header is whatever the caller chose to write, so it is ignored.

use std::net::IpAddr;

use actix_web::{HttpRequest, web};
use ipnet::IpNet;

use super::ReadSide;

/// [`source_ip`] with the `TRUSTED_PROXIES` this gateway was configured with.
pub fn source_of(req: &HttpRequest) -> Option<IpAddr> {
    let trusted = req
        .app_data::<web::Data<ReadSide>>()
        .map(|side| side.trusted_proxies.as_slice())
        .unwrap_or_default();
    source_ip(req, trusted)
}

/// The source address of `req`: what the audit trail records, and whose budget a failed
/// authentication spends (behind the ingress the peer is the controller, shared by every
/// user).
pub fn source_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
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
            Some(forwarded().map(canonical).unwrap_or(p))
        }
        peer => peer,
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

    /// The source address as text (empty when the peer is unknown), as the audit trail has it.
    fn source_address(req: &HttpRequest, trusted: &[IpNet]) -> String {
        source_ip(req, trusted).map_or_else(String::new, |ip| ip.to_string())
    }

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
