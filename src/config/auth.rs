//! Caller authentication settings: service tokens and their scopes, JWT keys, rate limit.
//!
//! Parsing lives here (not in `auth`) so a bad token entry or an unreadable PEM stops the
//! process at start with the variable named, and `auth` only ever sees valid values.

use jsonwebtoken::{Algorithm, DecodingKey};
use url::Url;

use crate::domain::{Scope, Scopes};

use super::{
    ConfigError,
    reader::{Reader, invalid},
    vars::{self, Var},
};

/// A service caller: `name:sha256hex(token)[:scopes]`. Only the hash is kept.
#[derive(Clone)]
pub struct ServiceToken {
    name: String,
    sha256: [u8; 32],
    scopes: Scopes,
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceToken({}, {})", self.name, self.scopes)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenSpecError {
    #[error("entries must look like name:sha256hex or name:sha256hex:scopes")]
    Format,
    #[error("caller names may only use [A-Za-z0-9_-], up to 64 characters")]
    Name,
    #[error("the token hash must be 64 hex digits (sha256 of the token)")]
    Hash,
    #[error("scopes must be one or more of store, read, delete, jobs joined by `+`")]
    Scopes,
}

impl ServiceToken {
    /// Parses `name:sha256hex` or `name:sha256hex:store+read`. Without scopes the caller gets
    /// [`Scopes::SERVICE_DEFAULT`] (what every token could do before scopes). The error never
    /// quotes the entry (it could be a raw token).
    pub fn parse(entry: &str) -> Result<Self, TokenSpecError> {
        let mut parts = entry.trim().splitn(3, ':');
        let (Some(name), Some(hash)) = (parts.next(), parts.next()) else {
            return Err(TokenSpecError::Format);
        };
        let scopes = match parts.next() {
            None => Scopes::SERVICE_DEFAULT,
            Some(spec) => Scopes::parse(spec).map_err(|_| TokenSpecError::Scopes)?,
        };
        if !is_caller_name(name) {
            return Err(TokenSpecError::Name);
        }
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(hash.trim().to_ascii_lowercase(), &mut sha256)
            .map_err(|_| TokenSpecError::Hash)?;
        Ok(Self {
            name: name.to_owned(),
            sha256,
            scopes,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn scopes(&self) -> Scopes {
        self.scopes
    }

    /// `DELETE_CALLERS`, the older way to grant `delete`, adds it here.
    #[must_use]
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scopes = self.scopes.with(scope);
        self
    }

    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
}

/// A parsed static public key: the algorithm comes from the key, never from a token.
#[derive(Clone)]
pub struct PublicKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({:?})", self.algorithm)
    }
}

impl PublicKey {
    /// RSA → RS256, EC P-256 → ES256; anything else is refused.
    pub fn from_pem(pem: &[u8]) -> Option<Self> {
        match DecodingKey::from_ec_pem(pem) {
            Ok(key) => Some(Self {
                key,
                algorithm: Algorithm::ES256,
            }),
            Err(_) => DecodingKey::from_rsa_pem(pem).ok().map(|key| Self {
                key,
                algorithm: Algorithm::RS256,
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub enum JwtKeySource {
    Pem(PublicKey),
    JwksUrl(Url),
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub source: JwtKeySource,
    pub issuer: String,
    pub audience: String,
    /// The claim holding the Account Aggregator client id the user may access.
    pub client_id_claim: String,
    /// Longest `exp - iat` accepted (`JWT_MAX_LIFETIME_SECONDS`).
    pub max_lifetime: std::time::Duration,
}

#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Service callers, each with its final scopes (`DELETE_CALLERS` applied).
    pub tokens: Vec<ServiceToken>,
    pub jwt: Option<JwtSettings>,
    pub disabled: bool,
    /// What the caller may do when authentication is disabled: the service default, plus
    /// `delete` when `DELETE_CALLERS` lists `anonymous` (the sandbox does).
    pub anonymous_scopes: Scopes,
    pub rate_limit_per_minute: u32,
    /// Failed authentications per source address per minute (and their burst).
    pub auth_failures_per_minute: u32,
}

impl AuthSettings {
    pub fn configured(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    pub(crate) fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let disabled = r.bool(&vars::AUTH_DISABLED)?;
        if disabled {
            refuse_auth_settings_when_disabled(r)?;
        }
        let mut tokens = Vec::new();
        for entry in r.list(&vars::CALLER_TOKENS)? {
            tokens.push(token(&vars::CALLER_TOKENS, &entry)?);
        }
        if let Some(path) = r.optional(&vars::CALLER_TOKENS_FILE)? {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(&vars::CALLER_TOKENS_FILE, e))?;
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                tokens.push(token(&vars::CALLER_TOKENS_FILE, line)?);
            }
        }
        let delete_callers = read_delete_callers(r)?;
        let may_delete = |name: &str| delete_callers.iter().any(|c| c == name);
        let tokens = tokens
            .into_iter()
            .map(|t| {
                if may_delete(t.name()) {
                    t.with_scope(Scope::Delete)
                } else {
                    t
                }
            })
            .collect();
        let anonymous_scopes = if may_delete("anonymous") {
            Scopes::SERVICE_DEFAULT.with(Scope::Delete)
        } else {
            Scopes::SERVICE_DEFAULT
        };
        let settings = Self {
            tokens,
            jwt: read_jwt(r)?,
            disabled,
            anonymous_scopes,
            rate_limit_per_minute: u32::try_from(r.number(&vars::RATE_LIMIT_PER_MINUTE)?)
                .map_err(|e| invalid(&vars::RATE_LIMIT_PER_MINUTE, e))?,
            auth_failures_per_minute: u32::try_from(r.number(&vars::AUTH_FAILURES_PER_MINUTE)?)
                .map_err(|e| invalid(&vars::AUTH_FAILURES_PER_MINUTE, e))?,
        };
        if !settings.configured() && !settings.disabled {
            return Err(invalid(
                &vars::CALLER_TOKENS,
                "no caller authentication is configured: set CALLER_TOKENS, CALLER_TOKENS_FILE or JWT_JWKS_URL/JWT_PUBLIC_KEY_FILE (or AUTH_DISABLED=true, never in production)",
            ));
        }
        Ok(settings)
    }
}

/// Authentication settings next to `AUTH_DISABLED=true` mean someone meant to authenticate
/// callers; silently serving everyone instead is the one unsafe way to resolve it.
fn refuse_auth_settings_when_disabled(r: &Reader<'_>) -> Result<(), ConfigError> {
    let mut set = Vec::new();
    for var in [
        &vars::CALLER_TOKENS,
        &vars::CALLER_TOKENS_FILE,
        &vars::JWT_JWKS_URL,
        &vars::JWT_PUBLIC_KEY_FILE,
        &vars::JWT_ISSUER,
        &vars::JWT_AUDIENCE,
    ] {
        if r.optional(var)?.is_some() {
            set.push(var.name);
        }
    }
    if set.is_empty() {
        return Ok(());
    }
    Err(invalid(
        &vars::AUTH_DISABLED,
        format!(
            "is true while {} configure caller authentication: unset one or the other",
            set.join(", ")
        ),
    ))
}

/// `DELETE_CALLERS`: service caller names granted `delete` on top of their entry's scopes (the
/// way to allow deletes before scopes existed; it keeps working). `anonymous` lets an
/// unauthenticated sandbox delete. Frontend users never delete, whatever is listed.
fn read_delete_callers(r: &Reader<'_>) -> Result<Vec<String>, ConfigError> {
    let names = r.list(&vars::DELETE_CALLERS)?;
    if !names.iter().all(|n| is_caller_name(n)) {
        return Err(invalid(
            &vars::DELETE_CALLERS,
            "caller names may only use [A-Za-z0-9_-], up to 64 characters",
        ));
    }
    Ok(names)
}

/// The rule for service caller names (`CALLER_TOKENS` entries and `DELETE_CALLERS`).
fn is_caller_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn token(var: &Var, entry: &str) -> Result<ServiceToken, ConfigError> {
    ServiceToken::parse(entry).map_err(|e| invalid(var, e))
}

fn read_jwt(r: &Reader<'_>) -> Result<Option<JwtSettings>, ConfigError> {
    // Checked even without JWT keys, so a bad value never waits for them to surface.
    let max_lifetime = std::time::Duration::from_secs(r.number(&vars::JWT_MAX_LIFETIME_SECONDS)?);
    let source = match (
        r.optional(&vars::JWT_JWKS_URL)?,
        r.optional(&vars::JWT_PUBLIC_KEY_FILE)?,
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                &vars::JWT_JWKS_URL,
                "set JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE, not both",
            ));
        }
        (Some(url), None) => {
            let url: Url = url.parse().map_err(|e| invalid(&vars::JWT_JWKS_URL, e))?;
            // Whoever can change the keys in transit can sign any user's token. Loopback is
            // allowed for tests and a local identity provider.
            let secure =
                url.scheme() == "https" || (url.scheme() == "http" && super::is_loopback(&url));
            if !secure {
                return Err(invalid(
                    &vars::JWT_JWKS_URL,
                    "must be https (plain http only to a loopback address)",
                ));
            }
            JwtKeySource::JwksUrl(url)
        }
        (None, Some(path)) => {
            let pem = std::fs::read(&path).map_err(|e| invalid(&vars::JWT_PUBLIC_KEY_FILE, e))?;
            JwtKeySource::Pem(PublicKey::from_pem(&pem).ok_or_else(|| {
                invalid(
                    &vars::JWT_PUBLIC_KEY_FILE,
                    "not an RSA or EC P-256 public key in PEM",
                )
            })?)
        }
        (None, None) => return Ok(None),
    };
    let required = |var: &Var| {
        r.optional(var)?
            .ok_or(ConfigError::Missing { var: var.name })
    };
    Ok(Some(JwtSettings {
        source,
        issuer: required(&vars::JWT_ISSUER)?,
        audience: required(&vars::JWT_AUDIENCE)?,
        client_id_claim: r.string(&vars::JWT_CLIENT_ID_CLAIM)?,
        max_lifetime,
    }))
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn token_spec_errors_do_not_quote_input() {
        assert_eq!(
            ServiceToken::parse("raw-token-without-name").err(),
            Some(TokenSpecError::Format)
        );
        assert_eq!(
            ServiceToken::parse("a b:00").err(),
            Some(TokenSpecError::Name)
        );
        assert_eq!(
            ServiceToken::parse("svc:xyz").err(),
            Some(TokenSpecError::Hash)
        );
        let entry = format!("svc:{}", hex::encode(Sha256::digest("tok")));
        let token = ServiceToken::parse(&entry).expect("valid");
        assert!(!format!("{token:?}").contains(&hex::encode(Sha256::digest("tok"))));
        assert_eq!(
            ServiceToken::parse(&format!("{entry}:store+admin")).err(),
            Some(TokenSpecError::Scopes)
        );
        assert_eq!(
            ServiceToken::parse(&format!("{entry}:")).err(),
            Some(TokenSpecError::Scopes)
        );
    }

    #[test]
    fn entries_name_their_scopes_and_default_to_what_tokens_could_do_before() {
        let hash = hex::encode(Sha256::digest("tok"));
        let plain = ServiceToken::parse(&format!("svc:{hash}")).expect("valid");
        assert_eq!(plain.scopes(), Scopes::SERVICE_DEFAULT);
        let scoped = ServiceToken::parse(&format!("svc:{hash}:read+delete")).expect("valid");
        assert_eq!(scoped.scopes().to_string(), "read+delete");
    }
}
