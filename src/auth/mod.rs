//! Who may call `/v1/*`.
//!
//! Two kinds of callers: internal services with a bearer token (we keep only its SHA-256 and
//! compare in constant time), and frontend users with a JWT from the company's identity
//! provider, whose client-id claim must equal the `client_id` they ask for, so no user can
//! fetch another customer's statements (OWASP API1, BOLA). Every caller is rate limited.
//! With nothing configured the gateway refuses to start unless `AUTH_DISABLED=true`.

mod jwt;
mod rate_limit;

use std::{future::Ready, time::Duration};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use jwt::{JwtKeySource, JwtSettings, JwtVerifier, fetch_jwks, refresh_jwks_forever};
pub use rate_limit::RateLimiter;

use crate::api::ApiError;

/// A service caller: `name:sha256hex(token)`.
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
}

/// Authentication settings (from the environment, see `config`).
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
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Service {
        name: String,
    },
    /// A frontend user, bound to one Account Aggregator client.
    User {
        client_id: String,
    },
    /// Authentication is disabled (sandbox or explicit `AUTH_DISABLED=true`).
    Anonymous,
}

impl Caller {
    /// Bounded metric label: service names are configuration; users are one label.
    pub fn label(&self) -> &str {
        match self {
            Self::Service { name } => name,
            Self::User { .. } => "frontend",
            Self::Anonymous => "anonymous",
        }
    }

    /// BOLA check: a user may only ask for the client their token names.
    pub fn may_access(&self, client_id: &str) -> Result<(), ApiError> {
        match self {
            Self::User { client_id: own } if own != client_id => Err(ApiError::Forbidden),
            _ => Ok(()),
        }
    }

    fn rate_key(&self) -> String {
        match self {
            Self::Service { name } => format!("svc:{name}"),
            Self::User { client_id } => format!("usr:{client_id}"),
            Self::Anonymous => "anonymous".to_owned(),
        }
    }
}

pub struct Authenticator {
    tokens: Vec<ServiceToken>,
    jwt: Option<std::sync::Arc<JwtVerifier>>,
    disabled: bool,
    limiter: RateLimiter,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings, jwt: Option<std::sync::Arc<JwtVerifier>>) -> Self {
        Self {
            tokens: settings.tokens.clone(),
            jwt,
            disabled: settings.disabled,
            limiter: RateLimiter::new(settings.rate_limit_per_minute),
        }
    }

    /// Authenticates the `Authorization` header, then charges the caller's rate limit.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let caller = self.identify(authorization)?;
        if let Err(retry_after) = self.limiter.check(&caller.rate_key()) {
            return Err(ApiError::RateLimited { retry_after });
        }
        Ok(caller)
    }

    fn identify(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        if self.disabled {
            return Ok(Caller::Anonymous);
        }
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        // Three dot-separated parts: a JWT; anything else is a service token.
        if token.split('.').count() == 3
            && let Some(jwt) = &self.jwt
        {
            return jwt
                .verify(token)
                .map(|client_id| Caller::User { client_id })
                .map_err(|e| {
                    tracing::info!(reason = %e, "JWT rejected");
                    ApiError::Unauthorized
                });
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every entry so timing does not reveal which one matched.
        let mut found: Option<&ServiceToken> = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
            .map(|t| Caller::Service {
                name: t.name.clone(),
            })
            .ok_or(ApiError::Unauthorized)
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<Authenticator>>() {
            Some(auth) => {
                let header = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                auth.authenticate(header)
            }
            // Fail closed: a route that asks for a caller never runs unauthenticated.
            None => Err(ApiError::Unauthorized),
        };
        std::future::ready(result)
    }
}

/// How long to wait before JWKS refreshes.
pub const JWKS_REFRESH: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn token_for(name: &str, token: &str) -> ServiceToken {
        ServiceToken::parse(&format!("{name}:{}", hex::encode(Sha256::digest(token))))
            .expect("valid")
    }

    fn auth(tokens: Vec<ServiceToken>) -> Authenticator {
        let settings = AuthSettings {
            tokens,
            rate_limit_per_minute: 1000,
            ..AuthSettings::default()
        };
        Authenticator::new(&settings, None)
    }

    #[test]
    fn service_tokens() {
        let a = auth(vec![
            token_for("loans", "s3cr3t-one"),
            token_for("kyc", "s3cr3t-two"),
        ]);
        assert!(
            matches!(a.authenticate(Some("Bearer s3cr3t-two")), Ok(Caller::Service { name }) if name == "kyc")
        );
        assert!(matches!(
            a.authenticate(Some("Bearer nope")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            a.authenticate(Some("Basic s3cr3t-one")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(a.authenticate(None), Err(ApiError::Unauthorized)));
    }

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
        assert!(
            !format!("{:?}", token_for("svc", "tok")).contains(&hex::encode(Sha256::digest("tok")))
        );
    }

    #[test]
    fn users_only_reach_their_own_client() {
        let user = Caller::User {
            client_id: "aa_1".into(),
        };
        assert!(user.may_access("aa_1").is_ok());
        assert!(matches!(user.may_access("aa_2"), Err(ApiError::Forbidden)));
        assert!(
            Caller::Service { name: "x".into() }
                .may_access("aa_2")
                .is_ok()
        );
    }
}
