//! Who may call `/v1/*`.
//!
//! Two kinds of callers: internal services with a bearer token (we keep only its SHA-256 and
//! compare in constant time), and frontend users with a JWT from the company's identity
//! provider, whose client-id claim must equal the `client_id` they ask for, so no user can
//! fetch another customer's statements (OWASP API1, BOLA). Every caller is rate limited, and
//! so are failed authentications per source address: a source over its budget is refused
//! before its token is even looked at, so token guessing and JWT signature checks are bounded.
//! With nothing configured the gateway refuses to start unless `AUTH_DISABLED=true`.

mod jwt;
mod rate_limit;

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use jwt::{JwksError, JwtVerifier, fetch_jwks, refresh_jwks_forever};
pub use rate_limit::RateLimiter;

use crate::{
    config::{AuthSettings, ServiceToken},
    domain::{Scope, Scopes},
    metrics::{AuthFailure, Metrics},
};

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

/// Which listener a request came in on. The public one (`PUBLIC_LISTEN_ADDR`, behind the
/// internet-facing ingress) serves frontend users only: a service token there is refused as
/// if it were wrong, so a leaked or guessed service token is useless from the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// `LISTEN_ADDR`: every caller, every route (in-cluster).
    Internal,
    /// `PUBLIC_LISTEN_ADDR`: user JWTs only, the routes users may call.
    Public,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An internal service, with the scopes its `CALLER_TOKENS` entry names.
    Service { name: String, scopes: Scopes },
    /// A frontend user, bound to one Account Aggregator client ([`Scopes::USER`] on it).
    User {
        client_id: String,
        /// The person the token names (`sub`), for the audit trail.
        sub: Option<String>,
        /// The token's id (`jti`), when present, for the audit trail.
        jti: Option<String>,
    },
    /// Authentication is disabled (sandbox or explicit `AUTH_DISABLED=true`).
    Anonymous { scopes: Scopes },
}

impl Caller {
    /// Bounded metric label: service names are configuration; users are one label.
    pub fn label(&self) -> &str {
        match self {
            Self::Service { name, .. } => name,
            Self::User { .. } => "frontend",
            Self::Anonymous { .. } => "anonymous",
        }
    }

    /// The one authorisation rule, for every route: the caller holds `scope`, and a frontend
    /// user asks only for the client its token names (BOLA). Users hold [`Scopes::USER`]
    /// (never `delete`); services and the unauthenticated sandbox caller what configuration
    /// gave them (`CALLER_TOKENS` scopes, `DELETE_CALLERS`).
    pub fn may(&self, scope: Scope, client_id: &str) -> Result<(), AuthError> {
        let allowed = match self {
            Self::Service { scopes, .. } | Self::Anonymous { scopes } => scopes.contains(scope),
            Self::User { client_id: own, .. } => own == client_id && Scopes::USER.contains(scope),
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// How the audit trail names this caller: `service:{name}`, `user:{client id of the JWT}`
    /// (so an attempt on another client shows whose token it was) or `anonymous`.
    pub fn audit_name(&self) -> String {
        match self {
            Self::Service { name, .. } => format!("service:{name}"),
            Self::User { client_id, .. } => format!("user:{client_id}"),
            Self::Anonymous { .. } => "anonymous".to_owned(),
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
            Self::Anonymous { .. } => None,
            _ => Some(self.rate_key()),
        }
    }

    fn rate_key(&self) -> String {
        match self {
            Self::Service { name, .. } => format!("svc:{name}"),
            Self::User { client_id, .. } => format!("usr:{client_id}"),
            Self::Anonymous { .. } => "anonymous".to_owned(),
        }
    }
}

pub struct Authenticator {
    tokens: Vec<ServiceToken>,
    jwt: Option<std::sync::Arc<JwtVerifier>>,
    disabled: bool,
    anonymous_scopes: Scopes,
    limiter: RateLimiter,
    /// Failed authentications per source address (`AUTH_FAILURES_PER_MINUTE`).
    failures: RateLimiter,
    metrics: Metrics,
}

impl Authenticator {
    pub fn new(
        settings: &AuthSettings,
        jwt: Option<std::sync::Arc<JwtVerifier>>,
        metrics: Metrics,
    ) -> Self {
        Self {
            tokens: settings.tokens.clone(),
            jwt,
            disabled: settings.disabled,
            anonymous_scopes: settings.anonymous_scopes,
            limiter: RateLimiter::new(settings.rate_limit_per_minute),
            failures: RateLimiter::new(settings.auth_failures_per_minute),
            metrics,
        }
    }

    /// Authenticates the `Authorization` header of a request from `source` (the source
    /// address the audit trail records: the peer, or the first `X-Forwarded-For` hop from a
    /// trusted proxy) that came in on `audience`'s listener, then charges the caller's rate
    /// limit.
    ///
    /// A source that has spent its budget of failed authentications gets 429 before anything
    /// else (no hash, no signature check, no JWKS refresh), whatever it sends; each failure
    /// takes one from its budget. Every refusal is counted and logged, never with the token.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        audience: Audience,
        source: Option<IpAddr>,
    ) -> Result<Caller, AuthError> {
        let source_key = source.map(source_key);
        if let Some(key) = &source_key
            && let Err(retry_after) = self.failures.peek(key)
        {
            self.refused(AuthFailure::RateLimited, audience, source);
            return Err(AuthError::RateLimited { retry_after });
        }
        let caller = match self.identify(authorization, audience).await {
            Ok(caller) => caller,
            Err(reason) => {
                if let Some(key) = &source_key {
                    // One from the budget, owed if already spent by failures that passed
                    // the peek alongside this one; at zero, the next request is refused unchecked.
                    self.failures.charge(key);
                }
                self.refused(reason, audience, source);
                return Err(AuthError::Unauthorized);
            }
        };
        if let Err(retry_after) = self.limiter.check(&caller.rate_key()) {
            return Err(AuthError::RateLimited { retry_after });
        }
        Ok(caller)
    }

    fn refused(&self, reason: AuthFailure, audience: Audience, source: Option<IpAddr>) {
        self.metrics.auth_failure(reason);
        tracing::info!(
            reason = reason.as_str(),
            listener = ?audience,
            source = ?source,
            "authentication refused"
        );
    }

    /// False while a configured JWKS has not delivered a key yet (readiness waits for it).
    pub fn keys_loaded(&self) -> bool {
        self.jwt.as_ref().is_none_or(|j| j.has_keys())
    }

    async fn identify(
        &self,
        authorization: Option<&str>,
        audience: Audience,
    ) -> Result<Caller, AuthFailure> {
        if self.disabled {
            // Configuration refuses a public listener without JWT keys, so this is internal.
            return match audience {
                Audience::Internal => Ok(Caller::Anonymous {
                    scopes: self.anonymous_scopes,
                }),
                Audience::Public => Err(AuthFailure::WrongListener),
            };
        }
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::MissingToken)?;
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
                    AuthFailure::InvalidJwt
                });
        }
        if audience == Audience::Public {
            return Err(AuthFailure::WrongListener);
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
                scopes: t.scopes(),
            })
            .ok_or(AuthFailure::InvalidToken)
    }
}

/// The budget key of a source: an IPv4 address, or an IPv6 /64 (one host holds a whole /64,
/// so single IPv6 addresses would be free to rotate through).
fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let net = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
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
            auth_failures_per_minute: 1000,
            ..AuthSettings::default()
        };
        Authenticator::new(&settings, None, Metrics::new())
    }

    #[actix_web::test]
    async fn service_tokens() {
        let a = auth(vec![
            token_for("loans", "s3cr3t-one"),
            token_for("kyc", "s3cr3t-two"),
        ]);
        assert!(
            matches!(a.authenticate(Some("Bearer s3cr3t-two"), Audience::Internal, None).await, Ok(Caller::Service { name, .. }) if name == "kyc")
        );
        assert!(matches!(
            a.authenticate(Some("Bearer nope"), Audience::Internal, None)
                .await,
            Err(AuthError::Unauthorized)
        ));
        assert!(matches!(
            a.authenticate(Some("Basic s3cr3t-one"), Audience::Internal, None)
                .await,
            Err(AuthError::Unauthorized)
        ));
        assert!(matches!(
            a.authenticate(None, Audience::Internal, None).await,
            Err(AuthError::Unauthorized)
        ));
        assert!(
            matches!(
                a.authenticate(Some("Bearer s3cr3t-two"), Audience::Public, None)
                    .await,
                Err(AuthError::Unauthorized)
            ),
            "service tokens are refused on the public listener"
        );
        assert_eq!(
            Caller::Anonymous {
                scopes: Scopes::SERVICE_DEFAULT
            }
            .concurrency_key(),
            None
        );
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

    #[actix_web::test]
    async fn a_source_over_its_failure_budget_is_refused_before_its_token_is_checked() {
        let settings = AuthSettings {
            tokens: vec![token_for("loans", "s3cr3t-one")],
            rate_limit_per_minute: 1000,
            auth_failures_per_minute: 2,
            ..AuthSettings::default()
        };
        let a = Authenticator::new(&settings, None, Metrics::new());
        let (guesser, other): (IpAddr, IpAddr) = (
            "192.0.2.7".parse().expect("ip"),
            "192.0.2.8".parse().expect("ip"),
        );
        let auth = |t: &'static str, ip| a.authenticate(Some(t), Audience::Internal, Some(ip));
        assert_eq!(
            auth("Bearer guess-1", guesser).await,
            Err(AuthError::Unauthorized)
        );
        assert_eq!(
            auth("Bearer guess-2", guesser).await,
            Err(AuthError::Unauthorized)
        );
        assert!(matches!(
            auth("Bearer s3cr3t-one", guesser).await,
            Err(AuthError::RateLimited { .. })
        ));
        assert!(auth("Bearer s3cr3t-one", other).await.is_ok());
        assert_eq!(
            source_key("2001:db8:1:2:3:4:5:6".parse().expect("ip")),
            source_key("2001:db8:1:2:ffff::1".parse().expect("ip")),
        );
        assert_eq!(
            source_key("::ffff:192.0.2.7".parse().expect("ip")),
            "192.0.2.7"
        );
    }

    #[test]
    fn scopes_decide_and_users_never_delete_or_leave_their_client() {
        let svc = |spec: &str| Caller::Service {
            name: "svc".into(),
            scopes: Scopes::parse(spec).expect("scopes"),
        };
        assert!(svc("read").may(Scope::Read, "aa_2").is_ok());
        assert_eq!(
            svc("read").may(Scope::Store, "aa_2"),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            svc("store+read").may(Scope::Delete, "aa_2"),
            Err(AuthError::Forbidden)
        );
        assert!(svc("delete").may(Scope::Delete, "aa_2").is_ok());
        let user = Caller::User {
            client_id: "aa_1".into(),
            sub: None,
            jti: None,
        };
        assert!(user.may(Scope::Store, "aa_1").is_ok());
        assert!(user.may(Scope::Read, "aa_1").is_ok());
        assert_eq!(user.may(Scope::Read, "aa_2"), Err(AuthError::Forbidden));
        assert_eq!(user.may(Scope::Delete, "aa_1"), Err(AuthError::Forbidden));
        assert!(
            user.may(Scope::Jobs, "aa_1").is_ok(),
            "users create and read jobs"
        );
        assert_eq!(user.may(Scope::Jobs, "aa_2"), Err(AuthError::Forbidden));
        let anonymous = Caller::Anonymous {
            scopes: Scopes::SERVICE_DEFAULT,
        };
        assert!(anonymous.may(Scope::Store, "aa_1").is_ok());
        assert_eq!(
            anonymous.may(Scope::Delete, "aa_1"),
            Err(AuthError::Forbidden)
        );
    }
}
