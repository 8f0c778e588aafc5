//! Caller authentication settings: service tokens, JWT keys, rate limit.
//!
//! Parsing lives here (not in `auth`) so a bad token entry or an unreadable PEM stops the
//! process at start with the variable named, and `auth` only ever sees valid values.

use jsonwebtoken::{Algorithm, DecodingKey};
use url::Url;

use super::{
    ConfigError,
    reader::{Reader, invalid},
    vars::{self, Var},
};

/// A service caller: `name:sha256hex(token)`. Only the hash is kept.
#[derive(Clone)]
pub struct ServiceToken {
    name: String,
    sha256: [u8; 32],
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceToken({})", self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenSpecError {
    #[error("entries must look like name:sha256hex")]
    Format,
    #[error("caller names may only use [A-Za-z0-9_-], up to 64 characters")]
    Name,
    #[error("the token hash must be 64 hex digits (sha256 of the token)")]
    Hash,
}

impl ServiceToken {
    /// Parses `name:sha256hex`. The error never quotes the entry (it could be a raw token).
    pub fn parse(entry: &str) -> Result<Self, TokenSpecError> {
        let (name, hash) = entry.trim().split_once(':').ok_or(TokenSpecError::Format)?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(TokenSpecError::Name);
        }
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(hash.trim().to_ascii_lowercase(), &mut sha256)
            .map_err(|_| TokenSpecError::Hash)?;
        Ok(Self {
            name: name.to_owned(),
            sha256,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
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
}

#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub tokens: Vec<ServiceToken>,
    pub jwt: Option<JwtSettings>,
    pub disabled: bool,
    pub rate_limit_per_minute: u32,
}

impl AuthSettings {
    pub fn configured(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    pub(crate) fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
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
        let settings = Self {
            tokens,
            jwt: read_jwt(r)?,
            disabled: r.bool(&vars::AUTH_DISABLED)?,
            rate_limit_per_minute: u32::try_from(r.number(&vars::RATE_LIMIT_PER_MINUTE)?)
                .map_err(|e| invalid(&vars::RATE_LIMIT_PER_MINUTE, e))?,
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

fn token(var: &Var, entry: &str) -> Result<ServiceToken, ConfigError> {
    ServiceToken::parse(entry).map_err(|e| invalid(var, e))
}

fn read_jwt(r: &Reader<'_>) -> Result<Option<JwtSettings>, ConfigError> {
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
            JwtKeySource::JwksUrl(url.parse().map_err(|e| invalid(&vars::JWT_JWKS_URL, e))?)
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
    }
}
