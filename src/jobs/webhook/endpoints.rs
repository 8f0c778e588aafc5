//! `WEBHOOK_ENDPOINTS_FILE`: where each service caller may be called back, and with which
//! secrets. The file is a mounted secret, one destination a line:
//!
//! ```text
//! # caller   URL prefix                          secret            [second secret, a rotation]
//! loans      https://loans.internal.example/hooks/  whsec_...        whsec_...
//! ```
//!
//! A job's `webhook_url` must lie under one of its caller's prefixes (same scheme, host and
//! port; the path under the prefix's path). Errors name the line, never its secrets; a bad file
//! refuses the start, because a half-read allow-list would fail jobs hours later instead.

use std::fmt;

use url::Url;

use super::deliver::{DestinationError, check_destination};
use super::sign::{Secret, SecretError};

/// One allowed destination.
#[derive(Clone)]
struct Endpoint {
    caller: String,
    prefix: Url,
    secrets: Vec<Secret>,
}

/// The parsed file. `Debug` shows callers and prefixes, never secrets.
#[derive(Clone, Default)]
pub struct Endpoints(Vec<Endpoint>);

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected `caller url-prefix secret [second-secret]`, found {0} fields")]
    Fields(usize),
    #[error("the URL prefix is not a URL")]
    Url,
    #[error("the URL prefix may not carry a query or a fragment")]
    QueryOrFragment,
    #[error("the URL prefix is not an allowed destination: {0}")]
    Destination(#[from] DestinationError),
    #[error("secret {index}: {error}")]
    Secret { index: usize, error: SecretError },
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("cannot read WEBHOOK_ENDPOINTS_FILE: {0}")]
    Read(std::io::ErrorKind),
    #[error("WEBHOOK_ENDPOINTS_FILE line {line}: {error}")]
    Line { line: usize, error: LineError },
}

impl Endpoints {
    /// Reads and parses the file at `path`.
    pub fn load(path: &str, allow_http: bool) -> Result<Self, EndpointsError> {
        let text = std::fs::read_to_string(path).map_err(|e| EndpointsError::Read(e.kind()))?;
        Self::parse(&text, allow_http)
    }

    /// Parses the file's text; `allow_http` is `WEBHOOK_ALLOW_HTTP` (plain http to loopback).
    pub fn parse(text: &str, allow_http: bool) -> Result<Self, EndpointsError> {
        let mut out = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(
                parse_line(line, allow_http)
                    .map_err(|error| EndpointsError::Line { line: i + 1, error })?,
            );
        }
        Ok(Self(out))
    }

    /// The secrets to sign with when `caller` asks to be called at `url`, or `None` when `url`
    /// lies under none of the caller's prefixes. The longest matching prefix wins.
    pub fn secrets_for(&self, caller: &str, url: &Url) -> Option<&[Secret]> {
        self.0
            .iter()
            .filter(|e| e.caller == caller && under(url, &e.prefix))
            .max_by_key(|e| e.prefix.path().len())
            .map(|e| e.secrets.as_slice())
    }

    /// True when no destination is configured (no job can ask for a webhook).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a destination; for the sandbox, which admits its own demo receiver.
    pub fn with(mut self, caller: &str, prefix: Url, secrets: Vec<Secret>) -> Self {
        self.0.push(Endpoint {
            caller: caller.to_owned(),
            prefix,
            secrets,
        });
        self
    }
}

fn parse_line(line: &str, allow_http: bool) -> Result<Endpoint, LineError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [caller, prefix, secrets @ ..] = fields.as_slice() else {
        return Err(LineError::Fields(fields.len()));
    };
    if !(1..=2).contains(&secrets.len()) {
        return Err(LineError::Fields(fields.len()));
    }
    let prefix = Url::parse(prefix).map_err(|_| LineError::Url)?;
    if prefix.query().is_some() || prefix.fragment().is_some() {
        return Err(LineError::QueryOrFragment);
    }
    check_destination(&prefix, allow_http)?;
    let secrets = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Secret::parse(s).map_err(|error| LineError::Secret {
                index: i + 1,
                error,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Endpoint {
        caller: (*caller).to_owned(),
        prefix,
        secrets,
    })
}

/// `url` is under `prefix`: same scheme, host and port, and the path continues the prefix's
/// path at a segment boundary (`/hooks` admits `/hooks` and `/hooks/a`, not `/hooksevil`).
fn under(url: &Url, prefix: &Url) -> bool {
    if url.scheme() != prefix.scheme()
        || url.host_str() != prefix.host_str()
        || url.port_or_known_default() != prefix.port_or_known_default()
        || url.fragment().is_some()
    {
        return false;
    }
    let (path, base) = (url.path(), prefix.path());
    match path.strip_prefix(base) {
        Some(rest) => base.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|e| format!("{} {} ({} secrets)", e.caller, e.prefix, e.secrets.len())),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD};

    use super::*;

    fn secret(fill: u8) -> String {
        format!("whsec_{}", STANDARD.encode([fill; 32]))
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn finds_the_callers_secrets_under_its_prefixes() {
        let text = format!(
            "# comment\n\n loans https://hooks.example.com/loans/ {a}\nrisk https://risk.example.com/cb {b} {c}\n",
            a = secret(1),
            b = secret(2),
            c = secret(3)
        );
        let e = Endpoints::parse(&text, false).unwrap();
        assert_eq!(
            e.secrets_for("loans", &url("https://hooks.example.com/loans/j?x=1"))
                .map(<[Secret]>::len),
            Some(1)
        );
        assert_eq!(
            e.secrets_for("risk", &url("https://risk.example.com/cb"))
                .map(<[Secret]>::len),
            Some(2)
        );
        assert!(
            e.secrets_for("risk", &url("https://risk.example.com/cb/x"))
                .is_some()
        );
        for (caller, u) in [
            ("loans", "https://hooks.example.com/loansx"),
            ("loans", "https://hooks.example.com/other/"),
            ("loans", "http://hooks.example.com/loans/"),
            ("loans", "https://hooks.example.com:8443/loans/"),
            ("loans", "https://hooks.example.com.evil.io/loans/"),
            ("loans", "https://risk.example.com/cb"),
            ("risk", "https://risk.example.com/cbx"),
            ("risk", "https://risk.example.com/cb#frag"),
            ("other", "https://hooks.example.com/loans/"),
        ] {
            assert!(e.secrets_for(caller, &url(u)).is_none(), "{caller} {u}");
        }
        assert!(
            e.secrets_for("loans", &url("https://hooks.example.com:443/loans/a"))
                .is_some()
        );
    }

    #[test]
    fn errors_name_the_line_never_the_secret() {
        let good = secret(1);
        let short = format!("whsec_{}", STANDARD.encode([9; 16]));
        let cases = [
            (
                format!("a https://h.example.com/ {short}"),
                "decodes to 24..64",
            ),
            (
                format!("a https://h.example.com/ {good} {short}"),
                "secret 2",
            ),
            (
                format!("a https://h.example.com/ {good} {good} {good}"),
                "5 fields",
            ),
            ("a https://h.example.com/".to_owned(), "2 fields"),
            (format!("a h.example.com/ {good}"), "not a URL"),
            (format!("a http://h.example.com/ {good}"), "scheme"),
            (
                format!("a https://u:p@h.example.com/ {good}"),
                "credentials",
            ),
            (format!("a https://h.example.com/?q=1 {good}"), "query"),
            (format!("a https://169.254.169.254/ {good}"), "forbidden"),
            (format!("a https://127.0.0.1/ {good}"), "forbidden"),
        ];
        for (line, why) in cases {
            let text = format!("# header\n\n{line}\n");
            let err = Endpoints::parse(&text, false).unwrap_err().to_string();
            assert!(err.contains("line 3"), "{err}");
            assert!(err.contains(why), "{line}: {err}");
            assert!(
                !err.contains(&good[6..]) && !err.contains(&short[6..]),
                "{err}"
            );
        }
    }

    #[test]
    fn plain_http_only_to_loopback_and_only_when_allowed() {
        let line = |u: &str| format!("svc {u} {}", secret(1));
        assert!(Endpoints::parse(&line("http://127.0.0.1:9000/"), true).is_ok());
        assert!(Endpoints::parse(&line("http://localhost:9000/"), true).is_ok());
        assert!(Endpoints::parse(&line("http://[::1]:9000/"), true).is_ok());
        assert!(Endpoints::parse(&line("http://127.0.0.1:9000/"), false).is_err());
        assert!(Endpoints::parse(&line("http://hooks.example.com/"), true).is_err());
        assert!(Endpoints::parse(&line("http://10.0.0.1/"), true).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let s = secret(7);
        let e = Endpoints::parse(&format!("svc https://h.example.com/ {s}"), false).unwrap();
        let shown = format!("{e:?}");
        assert!(
            shown.contains("svc https://h.example.com/ (1 secrets)"),
            "{shown}"
        );
        assert!(!shown.contains(&s[6..]));
    }
}
