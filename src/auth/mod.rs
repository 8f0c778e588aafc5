//! Who may call `/v1/*`.
//!
//! Two kinds of callers: internal services with a bearer token (we keep only its SHA-256 and
//! compare in constant time), and frontend users with a JWT from the company's identity
//! provider, whose client-id claim must equal the `client_id` they ask for, so no user can
//! fetch another customer's statements (OWASP API1, BOLA). Every caller is rate limited.
//! With nothing configured the gateway refuses to start unless `AUTH_DISABLED=true`.

mod jwt;
mod rate_limit;

use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use jwt::{JwksError, JwtVerifier, fetch_jwks, refresh_jwks_forever};
pub use rate_limit::RateLimiter;

use crate::config::{AuthSettings, ServiceToken};

/// Why a caller was turned away. The API maps each to its problem+json answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("this caller may not access this client's statements")]
    Forbidden,
    #[error("too many requests from this caller; retry later")]
    RateLimited { retry_after: Duration },
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
        /// The person the token names (`sub`), for the audit trail.
        sub: Option<String>,
        /// The token's id (`jti`), when present, for the audit trail.
        jti: Option<String>,
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
    pub fn may_access(&self, client_id: &str) -> Result<(), AuthError> {
        match self {
            Self::User { client_id: own, .. } if own != client_id => Err(AuthError::Forbidden),
            _ => Ok(()),
        }
    }

    /// Who may purge statements: only service callers named in `DELETE_CALLERS` (and the
    /// unauthenticated sandbox caller if `anonymous` is listed). Frontend users never delete,
    /// not even their own client's statements.
    pub fn may_delete(&self, delete_callers: &[String]) -> Result<(), AuthError> {
        let name = match self {
            Self::Service { name } => name.as_str(),
            Self::Anonymous => "anonymous",
            Self::User { .. } => return Err(AuthError::Forbidden),
        };
        if delete_callers.iter().any(|c| c == name) {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// How the audit trail names this caller: `service:{name}`, `user:{client id of the JWT}`
    /// (so an attempt on another client shows whose token it was) or `anonymous`.
    pub fn audit_name(&self) -> String {
        match self {
            Self::Service { name } => format!("service:{name}"),
            Self::User { client_id, .. } => format!("user:{client_id}"),
            Self::Anonymous => "anonymous".to_owned(),
        }
    }

    /// The person behind a user token, `(sub, jti)`, for the audit trail; nothing for other
    /// callers (a service is named by `audit_name`).
    pub fn person(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Self::User { sub, jti, .. } => (sub.as_deref(), jti.as_deref()),
            _ => (None, None),
        }
    }

    /// The key of the per-caller cap on calls in progress; `None` without a caller identity
    /// (authentication disabled), where only the process-wide bound applies.
    pub fn concurrency_key(&self) -> Option<String> {
        match self {
            Self::Anonymous => None,
            _ => Some(self.rate_key()),
        }
    }

    fn rate_key(&self) -> String {
        match self {
            Self::Service { name } => format!("svc:{name}"),
            Self::User { client_id, .. } => format!("usr:{client_id}"),
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
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let caller = self.identify(authorization).await?;
        if let Err(retry_after) = self.limiter.check(&caller.rate_key()) {
            return Err(AuthError::RateLimited { retry_after });
        }
        Ok(caller)
    }

    /// False while a configured JWKS has not delivered a key yet (readiness waits for it).
    pub fn keys_loaded(&self) -> bool {
        self.jwt.as_ref().is_none_or(|j| j.has_keys())
    }

    async fn identify(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
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
            .ok_or(AuthError::Unauthorized)?;
        // Three dot-separated parts: a JWT; anything else is a service token.
        if token.split('.').count() == 3
            && let Some(jwt) = &self.jwt
        {
            return jwt
                .verify_refreshing(token)
                .await
                .map(|u| Caller::User {
                    client_id: u.client_id,
                    sub: u.sub,
                    jti: u.jti,
                })
                .map_err(|e| {
                    tracing::info!(reason = %e, "JWT rejected");
                    AuthError::Unauthorized
                });
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every entry so timing does not reveal which one matched.
        let mut found: Option<&ServiceToken> = None;
        for t in &self.tokens {
            if bool::from(t.sha256().ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
            .map(|t| Caller::Service {
                name: t.name().to_owned(),
            })
            .ok_or(AuthError::Unauthorized)
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

    #[actix_web::test]
    async fn service_tokens() {
        let a = auth(vec![
            token_for("loans", "s3cr3t-one"),
            token_for("kyc", "s3cr3t-two"),
        ]);
        assert!(
            matches!(a.authenticate(Some("Bearer s3cr3t-two")).await, Ok(Caller::Service { name }) if name == "kyc")
        );
        assert!(matches!(
            a.authenticate(Some("Bearer nope")).await,
            Err(AuthError::Unauthorized)
        ));
        assert!(matches!(
            a.authenticate(Some("Basic s3cr3t-one")).await,
            Err(AuthError::Unauthorized)
        ));
        assert!(matches!(
            a.authenticate(None).await,
            Err(AuthError::Unauthorized)
        ));
        assert_eq!(Caller::Anonymous.concurrency_key(), None);
        assert_eq!(
            Caller::User {
                client_id: "aa_1".into(),
                sub: None,
                jti: None,
            }
            .concurrency_key()
            .as_deref(),
            Some("usr:aa_1")
        );
    }

    #[test]
    fn only_listed_services_delete_and_users_never() {
        let listed = vec!["ops".to_owned(), "anonymous".to_owned()];
        let svc = |n: &str| Caller::Service { name: n.into() };
        assert!(svc("ops").may_delete(&listed).is_ok());
        assert_eq!(svc("loans").may_delete(&listed), Err(AuthError::Forbidden));
        assert!(Caller::Anonymous.may_delete(&listed).is_ok());
        assert_eq!(Caller::Anonymous.may_delete(&[]), Err(AuthError::Forbidden));
        let user = Caller::User {
            client_id: "ops".into(),
            sub: None,
            jti: None,
        };
        assert_eq!(user.may_delete(&listed), Err(AuthError::Forbidden));
    }

    #[test]
    fn users_only_reach_their_own_client() {
        let user = Caller::User {
            client_id: "aa_1".into(),
            sub: None,
            jti: None,
        };
        assert!(user.may_access("aa_1").is_ok());
        assert!(matches!(user.may_access("aa_2"), Err(AuthError::Forbidden)));
        assert!(
            Caller::Service { name: "x".into() }
                .may_access("aa_2")
                .is_ok()
        );
    }
}
