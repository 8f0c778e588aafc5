//! Settings of the read side: download links, where the audit trail goes. (Who may delete is
//! a scope: `config::auth`.)

use std::time::Duration;

use super::{
    ConfigError,
    reader::{Reader, invalid},
    vars,
};
use crate::domain::Prefix;

#[derive(Debug, Clone)]
pub struct ReadSideSettings {
    /// Lifetime of a pre-signed download link.
    pub download_url_ttl: Duration,
    /// Where audit events go; `None` is the statements bucket.
    pub audit_bucket: Option<String>,
    pub audit_prefix: Prefix,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ReadSideSettings {
    pub(crate) fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let audit_prefix = r.prefix(&vars::AUDIT_PREFIX)?;
        // The sweep reads the index, purges and sweeps never reach the trail.
        super::check_disjoint(&[
            (&vars::AUDIT_PREFIX, &audit_prefix),
            (
                &vars::RETENTION_INDEX_PREFIX,
                &r.prefix(&vars::RETENTION_INDEX_PREFIX)?,
            ),
        ])?;
        Ok(Self {
            download_url_ttl: Duration::from_secs(r.number(&vars::DOWNLOAD_URL_TTL_SECONDS)?),
            audit_bucket: r.optional(&vars::AUDIT_BUCKET)?,
            audit_prefix,
            trusted_proxies: r
                .list(&vars::TRUSTED_PROXIES)?
                .iter()
                .map(|p| parse_net(p))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    invalid(
                        &vars::TRUSTED_PROXIES,
                        "entries must be IP addresses or CIDR blocks",
                    )
                })?,
        })
    }
}

/// `10.0.0.0/8`, or one address (`10.1.2.3`: a /32, or /128).
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}
