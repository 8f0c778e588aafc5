//! Which report links the gateway may follow.
//!
//! A pre-signed link comes from Finpass, but we still treat it as untrusted input: following
//! an arbitrary URL from a server's response is how SSRF happens. A link is only followed when
//! its scheme, host and port are explicitly allowed. The link's query string is a bearer
//! credential, so [`ReportLink`] and [`RawLink`] never print it: `Display`/`Debug` show the
//! host and path only.

mod address;
mod resolver;

use std::{error::Error as StdError, fmt, net::IpAddr};

use url::Url;

pub use address::{forbidden_reason, is_forbidden};
pub use resolver::PolicyResolver;

/// The policy's rejection inside an error from the download client's connector (the resolver
/// error of `awc::error::ConnectError::Resolver`), if that is what the error is.
pub fn rejection_in(err: &(dyn StdError + 'static)) -> Option<LinkRejection> {
    err.downcast_ref::<LinkRejection>().copied()
}

/// S3 refuses pre-signed URLs valid for longer than this (SigV4's limit: one week).
pub const MAX_PRESIGNED_EXPIRES_SECS: u64 = 604_800;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    #[error("empty host pattern")]
    Empty,
    #[error("invalid port in host pattern")]
    InvalidPort,
    #[error(
        "host patterns may only use '*' as a whole label: leading ('*.', one or more labels) or in the middle (exactly one label)"
    )]
    BadWildcard,
}

/// `host`, `*.domain` or either with `:port`. Without a port only the scheme's default port
/// is allowed, so an allowed host cannot be used to reach some other service on it.
///
/// A leading `*.` matches one or more labels (a bucket name may contain dots); a `*` label in
/// the middle matches exactly one label, which is what S3's regional endpoints need
/// (`*.s3.*.amazonaws.com` is `bucket.s3.<region>.amazonaws.com`). The first and the last two
/// labels after the leading wildcard must be literal, so a pattern cannot cover a whole TLD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-case host, or the suffix after `*.` for wildcards (may hold `*` labels).
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<Self, HostPatternError> {
        let raw = raw.trim().to_ascii_lowercase();
        let (host, port) = match raw.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
                h.to_owned(),
                Some(
                    p.parse::<u16>()
                        .map_err(|_| HostPatternError::InvalidPort)?,
                ),
            ),
            _ => (raw.clone(), None),
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_owned(), true),
            None => (host, false),
        };
        if host.is_empty() {
            return Err(HostPatternError::Empty);
        }
        let labels: Vec<&str> = host.split('.').collect();
        let literal = |l: &&str| !l.contains('*');
        let middle_ok = labels.iter().all(|l| literal(l) || *l == "*");
        let ends_literal = labels.len() >= 3
            && literal(&labels[0])
            && labels[labels.len() - 2..].iter().all(literal);
        if host.contains('*') && !(middle_ok && ends_literal) {
            return Err(HostPatternError::BadWildcard);
        }
        Ok(Self {
            host,
            wildcard,
            port,
        })
    }

    fn matches(&self, host: &str, port: u16, default_port: u16) -> bool {
        self.host_matches(host) && port == self.port.unwrap_or(default_port)
    }

    fn host_matches(&self, host: &str) -> bool {
        let pattern: Vec<&str> = self.host.split('.').collect();
        let labels: Vec<&str> = host.split('.').collect();
        let Some(extra) = labels.len().checked_sub(pattern.len()) else {
            return false;
        };
        if (extra > 0) != self.wildcard || labels.iter().any(|l| l.is_empty()) {
            return false;
        }
        labels[extra..]
            .iter()
            .zip(&pattern)
            .all(|(label, p)| *p == "*" || label == p)
    }

    /// True when the pattern names one host literally (no wildcard at all).
    pub fn is_literal_host(&self, host: &str) -> bool {
        !self.wildcard && !self.host.contains('*') && self.host == host
    }
}

/// Why a link was refused; the `as_label` values are bounded metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRejection {
    #[error("the report link is not a valid URL")]
    InvalidUrl,
    #[error("the report link's scheme is not allowed")]
    Scheme,
    #[error("the report link carries user credentials")]
    Userinfo,
    #[error("the report link's host is not in REPORT_LINK_ALLOWED_HOSTS")]
    HostNotAllowed,
    #[error("the report link's host resolves to a forbidden address")]
    ForbiddenAddress,
}

impl LinkRejection {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Self; 5] = [
        Self::InvalidUrl,
        Self::Scheme,
        Self::Userinfo,
        Self::HostNotAllowed,
        Self::ForbiddenAddress,
    ];

    /// [`Self::ALL`] as label values (for metric initialisation).
    pub const LABELS: [&'static str; Self::ALL.len()] = {
        let mut out = [""; Self::ALL.len()];
        let mut i = 0;
        while i < out.len() {
            out[i] = Self::ALL[i].as_label();
            i += 1;
        }
        out
    };

    /// The bounded metric label (`reason` of `link_rejections_total`).
    pub const fn as_label(self) -> &'static str {
        match self {
            Self::InvalidUrl => "invalid_url",
            Self::Scheme => "scheme",
            Self::Userinfo => "userinfo",
            Self::HostNotAllowed => "host_not_allowed",
            Self::ForbiddenAddress => "forbidden_address",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LinkPolicy {
    allowed: Vec<HostPattern>,
    allow_http: bool,
}

impl LinkPolicy {
    pub fn new(allowed: Vec<HostPattern>, allow_http: bool) -> Self {
        Self {
            allowed,
            allow_http,
        }
    }

    /// Checks a link from Finpass; only a link that passes can be downloaded.
    pub fn check(&self, raw: &RawLink) -> Result<ReportLink, LinkRejection> {
        let url = Url::parse(&raw.0).map_err(|_| LinkRejection::InvalidUrl)?;
        let default_port = match url.scheme() {
            "https" => 443,
            "http" if self.allow_http => 80,
            _ => return Err(LinkRejection::Scheme),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(LinkRejection::Userinfo);
        }
        let host = url
            .host_str()
            .ok_or(LinkRejection::InvalidUrl)?
            .to_ascii_lowercase();
        let port = url.port().unwrap_or(default_port);
        if !self
            .allowed
            .iter()
            .any(|p| p.matches(&host, port, default_port))
        {
            return Err(LinkRejection::HostNotAllowed);
        }
        // IP literals never reach the resolver, so the address rule is applied here; names are
        // checked by [`PolicyResolver`] at connect time.
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        if ip.is_ok_and(is_forbidden) && !self.host_listed_literally(&host) {
            return Err(LinkRejection::ForbiddenAddress);
        }
        Ok(ReportLink { url })
    }

    /// True when `host` is listed literally, which is how an operator opts a private or
    /// loopback host in (e.g. an S3 endpoint inside the VPC, or the sandbox).
    pub fn host_listed_literally(&self, host: &str) -> bool {
        self.allowed.iter().any(|p| p.is_literal_host(host))
    }
}

/// A link exactly as Finpass sent it. Kept opaque so it cannot be logged by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct RawLink(String);

impl RawLink {
    pub fn new(raw: String) -> Self {
        Self(raw)
    }
}

impl fmt::Debug for RawLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawLink(<redacted>)")
    }
}

/// A link that passed the policy.
#[derive(Clone)]
pub struct ReportLink {
    url: Url,
}

impl ReportLink {
    /// The full URL including its signature: only for the HTTP request itself.
    pub fn expose_url(&self) -> &Url {
        &self.url
    }

    /// The path identifies the report; unlike the query it is stable across fresh links.
    pub fn path(&self) -> &str {
        self.url.path()
    }

    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The report's source: lower-case host with any explicit port, and path. Never the
    /// query, which changes with every fresh link.
    pub fn location(&self) -> (String, String) {
        let host = self.host().to_ascii_lowercase();
        let host = match self.url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        (host, self.url.path().to_owned())
    }

    /// Seconds since the Unix epoch after which the link stops working, when the link says so
    /// (`X-Amz-Date` + `X-Amz-Expires`). Lets us ask Finpass for a fresh link instead of
    /// collecting a certain 403.
    ///
    /// Both values are untrusted. Anything out of range (an `X-Amz-Expires` that is not
    /// 0..=604800 decimal seconds, SigV4's limit; a date that is not a real one from 1970 to
    /// 9999) means "expiry unknown", `None`: the link is then tried, and the source's own
    /// answer decides (S3 answers 400 to a pre-signed URL valid for more than a week, and 403,
    /// `link_expired`, to an expired one). Rejecting such links outright would turn a
    /// harmless oddity in a parameter S3 itself checks into a failed report.
    pub fn expires_at(&self) -> Option<u64> {
        let mut date = None;
        let mut expires = None;
        for (k, v) in self.url.query_pairs() {
            match k.as_ref() {
                "X-Amz-Date" => date = parse_amz_date(&v),
                "X-Amz-Expires" => expires = parse_amz_expires(&v),
                _ => {}
            }
        }
        date?.checked_add(expires?)
    }
}

/// `X-Amz-Expires`: decimal digits only (no sign), at most [`MAX_PRESIGNED_EXPIRES_SECS`].
fn parse_amz_expires(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>()
        .ok()
        .filter(|e| *e <= MAX_PRESIGNED_EXPIRES_SECS)
}

impl fmt::Display for ReportLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.url.scheme(), self.host())?;
        if let Some(port) = self.url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(self.url.path())
    }
}

impl fmt::Debug for ReportLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportLink({self})")
    }
}

/// Parses `YYYYMMDDTHHMMSSZ` (the `X-Amz-Date` format) into seconds since the epoch.
///
/// Strict, because the input is untrusted: ASCII digits only (`str::parse` would take a
/// `+`), a real calendar date (no 30 February) from 1970-01-01 to 9999-12-31, so that the
/// arithmetic below can neither underflow nor overflow. `None` otherwise.
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        let digits = b.get(r)?;
        digits.iter().try_fold(0u64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1970..=9999).contains(&y) || !(1..=days_in_month).contains(&d) {
        return None;
    }
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm); with y >= 1970 every step is in
    // range, and checked arithmetic makes that a guarantee rather than an argument.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    days.checked_mul(86_400)?
        .checked_add(hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &str, http: bool) -> LinkPolicy {
        let allowed = hosts
            .split(',')
            .map(|h| HostPattern::parse(h).expect("valid"))
            .collect();
        LinkPolicy::new(allowed, http)
    }

    fn check(p: &LinkPolicy, url: &str) -> Result<ReportLink, LinkRejection> {
        p.check(&RawLink::new(url.to_owned()))
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let p = policy("*.amazonaws.com", false);
        assert!(check(&p, "https://b.s3.amazonaws.com/x.pdf?sig=1").is_ok());
        assert!(check(&p, "https://B.S3.AMAZONAWS.COM/x.pdf").is_ok());
        assert_eq!(
            check(&p, "https://amazonaws.com/x").err(),
            Some(LinkRejection::HostNotAllowed)
        );
        assert_eq!(
            check(&p, "https://evilamazonaws.com/x").err(),
            Some(LinkRejection::HostNotAllowed)
        );
        assert_eq!(
            check(&p, "https://amazonaws.com.evil.io/x").err(),
            Some(LinkRejection::HostNotAllowed)
        );
    }

    #[test]
    fn a_middle_wildcard_matches_exactly_one_label() {
        let p = policy("*.s3.*.amazonaws.com", false);
        assert!(check(&p, "https://b.s3.ap-south-1.amazonaws.com/x.pdf").is_ok());
        assert!(check(&p, "https://a.b.s3.us-east-1.amazonaws.com/x.pdf").is_ok());
        for host in [
            "s3.ap-south-1.amazonaws.com",
            "b.s3.amazonaws.com",
            "b.s3.dualstack.ap-south-1.amazonaws.com",
            "b.s3..amazonaws.com",
            "b.elb.ap-south-1.amazonaws.com",
        ] {
            assert_eq!(
                check(&p, &format!("https://{host}/x")).err(),
                Some(LinkRejection::HostNotAllowed),
                "{host}"
            );
        }
        for bad in [
            "*",
            "*.*.com",
            "a*.s3.amazonaws.com",
            "s3.*",
            "*.s3.amazonaws.*",
            "x.*.*",
        ] {
            assert_eq!(
                HostPattern::parse(bad).err(),
                Some(HostPatternError::BadWildcard),
                "{bad}"
            );
        }
        assert!(
            !HostPattern::parse("s3.*.amazonaws.com")
                .expect("valid")
                .is_literal_host("s3.*.amazonaws.com")
        );
    }

    #[test]
    fn scheme_userinfo_and_port_rules() {
        let p = policy("*.amazonaws.com,127.0.0.1:9000", false);
        assert_eq!(
            check(&p, "http://b.s3.amazonaws.com/x").err(),
            Some(LinkRejection::Scheme)
        );
        assert_eq!(
            check(&p, "file:///etc/passwd").err(),
            Some(LinkRejection::Scheme)
        );
        assert_eq!(
            check(&p, "https://u:p@b.s3.amazonaws.com/x").err(),
            Some(LinkRejection::Userinfo)
        );
        assert_eq!(
            check(&p, "https://b.s3.amazonaws.com:8443/x").err(),
            Some(LinkRejection::HostNotAllowed)
        );
        assert!(check(&p, "https://127.0.0.1:9000/x").is_ok());
        assert_eq!(
            check(&p, "not a url").err(),
            Some(LinkRejection::InvalidUrl)
        );
        let http = policy("127.0.0.1:9000", true);
        assert!(check(&http, "http://127.0.0.1:9000/x").is_ok());
        assert_eq!(
            check(&http, "http://127.0.0.1/x").err(),
            Some(LinkRejection::HostNotAllowed)
        );
    }

    #[test]
    fn forbidden_ip_literals_need_a_literal_listing() {
        // A wildcard that happens to match an IP literal does not opt it in.
        let p = policy("*.254.169.254,*.0.0.1:9000", true);
        assert_eq!(
            check(&p, "http://169.254.169.254/latest/meta-data").err(),
            Some(LinkRejection::ForbiddenAddress)
        );
        assert_eq!(
            check(&p, "http://127.0.0.1:9000/x.pdf").err(),
            Some(LinkRejection::ForbiddenAddress)
        );
        let listed = policy("127.0.0.1:9000", true);
        assert!(check(&listed, "http://127.0.0.1:9000/x.pdf").is_ok());
    }

    #[test]
    fn display_and_debug_hide_the_signature() {
        let p = policy("*.amazonaws.com", false);
        let link = check(
            &p,
            "https://b.s3.amazonaws.com/a/b.pdf?X-Amz-Signature=deadbeef",
        )
        .expect("ok");
        assert_eq!(link.to_string(), "https://b.s3.amazonaws.com/a/b.pdf");
        assert!(!format!("{link:?}").contains("deadbeef"));
        assert!(
            !format!(
                "{:?}",
                RawLink::new("https://x/?X-Amz-Signature=deadbeef".into())
            )
            .contains("dead")
        );
    }

    #[test]
    fn expiry_is_read_from_the_signature_parameters() {
        let p = policy("*.amazonaws.com", false);
        let link = check(
            &p,
            "https://b.s3.amazonaws.com/x.pdf?X-Amz-Date=20260216T100109Z&X-Amz-Expires=600",
        )
        .expect("ok");
        // 2026-02-16T10:01:09Z = 1771236069
        assert_eq!(link.expires_at(), Some(1_771_236_069 + 600));
    }

    fn link_with(p: &LinkPolicy, date: &str, expires: &str) -> ReportLink {
        check(
            p,
            &format!("https://b.s3.amazonaws.com/x.pdf?X-Amz-Date={date}&X-Amz-Expires={expires}"),
        )
        .expect("ok")
    }

    #[test]
    fn an_out_of_range_x_amz_expires_means_expiry_unknown() {
        let p = policy("*.amazonaws.com", false);
        for expires in [
            "18446744073709551615",
            "18446744073709551616",
            "604801",
            "-1",
            "%2B600",
            "",
        ] {
            assert_eq!(
                link_with(&p, "20260216T100109Z", expires).expires_at(),
                None,
                "X-Amz-Expires={expires}"
            );
        }
        // SigV4's limit, one week, is still read.
        assert_eq!(
            link_with(&p, "20260216T100109Z", "604800").expires_at(),
            Some(1_771_236_069 + 604_800)
        );
    }

    #[test]
    fn an_out_of_range_x_amz_date_means_expiry_unknown() {
        for date in [
            "00000101T000000Z",
            "19691231T235959Z",
            "00000229T000000Z",
            "20260230T000000Z",
            "20250229T000000Z",
            "2026+216T100109Z",
            "2026021\u{0}T100109Z",
        ] {
            assert_eq!(parse_amz_date(date), None, "{date:?}");
        }
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20240229T000000Z"), Some(1_709_164_800));
        assert_eq!(parse_amz_date("99991231T235959Z"), Some(253_402_300_799));
        let p = policy("*.amazonaws.com", false);
        assert_eq!(
            link_with(&p, "99991231T235959Z", "604800").expires_at(),
            Some(253_402_300_799 + 604_800)
        );
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        /// `secs` as `X-Amz-Date`, formatted by an independent implementation.
        fn amz(secs: i64) -> String {
            let t = aws_smithy_types::DateTime::from_secs(secs)
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .expect("in range");
            t.replace(['-', ':'], "")
                .chars()
                .take(15)
                .collect::<String>()
                + "Z"
        }

        proptest! {
            #[test]
            fn parse_amz_date_never_panics(s in "\\PC{0,20}") {
                let _ = parse_amz_date(&s);
            }

            #[test]
            fn parse_amz_date_never_panics_on_any_amz_shaped_date(
                y in 0u32..=9999, m in 0u32..=13, d in 0u32..=32,
                hh in 0u32..=24, mm in 0u32..=60, ss in 0u32..=61,
            ) {
                let s = format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z");
                if let Some(t) = parse_amz_date(&s) {
                    prop_assert!((1970..=9999).contains(&y) && (1..=12).contains(&m));
                    prop_assert!(t <= 253_402_300_799);
                }
            }

            #[test]
            fn parse_amz_date_agrees_with_smithy(secs in 0i64..=253_402_300_799) {
                prop_assert_eq!(parse_amz_date(&amz(secs)), u64::try_from(secs).ok());
            }

            #[test]
            fn expires_at_never_panics(
                date in prop_oneof!["\\PC{0,20}", "[0-9]{8}T[0-9]{6}Z"],
                expires in prop_oneof![
                    "\\PC{0,24}",
                    any::<u64>().prop_map(|n| n.to_string()),
                    any::<u128>().prop_map(|n| n.to_string()),
                ],
            ) {
                let p = policy("*.amazonaws.com", false);
                let mut url = Url::parse("https://b.s3.amazonaws.com/x.pdf").expect("url");
                url.query_pairs_mut()
                    .append_pair("X-Amz-Date", &date)
                    .append_pair("X-Amz-Expires", &expires);
                if let Ok(link) = p.check(&RawLink::new(url.into()))
                    && let Some(t) = link.expires_at()
                {
                    prop_assert!(t <= 253_402_300_799 + 604_800);
                }
            }
        }
    }
}
