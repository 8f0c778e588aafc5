//! JWT verification for frontend users: RS256/ES256 only, `iss`, `aud`, `exp` and `iat`
//! required, a lifetime (`exp - iat`) of at most `JWT_MAX_LIFETIME_SECONDS`, `typ` (when
//! present) `JWT` or `at+jwt`; keys from a static PEM file or the identity provider's JWKS
//! (refreshed in the background), of which only signature keys are used: `use` other than
//! `sig`, `key_ops` without `verify`, or an `alg` other than the one we verify with make a key
//! unusable (an encryption key must never verify a signature).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    jwk::{
        AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
    },
};
use url::Url;

use crate::config::{JwtKeySource, JwtSettings};

/// Why a fetched key set was not installed (the previous keys stay).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS could not be fetched: {0}")]
    Fetch(String),
    #[error("the JWKS holds no usable key (an RS256 or ES256 P-256 signature key with a kid)")]
    NoUsableKey,
}

/// Refreshes triggered by tokens with an unknown `kid` happen at most this often, so made-up
/// kids cannot make the gateway hammer the identity provider.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("no key for this token")]
    UnknownKey,
    #[error("the token names no client id")]
    MissingClaim,
    #[error("the token's typ is neither JWT nor at+jwt")]
    Type,
    #[error("the token has no iat, or one in the future")]
    IssuedAt,
    #[error("the token's lifetime (exp - iat) exceeds JWT_MAX_LIFETIME_SECONDS")]
    Lifetime,
    #[error("{0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    single: Option<(DecodingKey, Algorithm)>,
}

/// Longest `sub` or `jti` kept for the audit trail.
const MAX_AUDIT_CLAIM: usize = 256;

/// What a verified user token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClaims {
    /// The Account Aggregator client the token grants (`JWT_CLIENT_ID_CLAIM`).
    pub client_id: String,
    /// The person (`sub`), for the audit trail.
    pub sub: Option<String>,
    /// The token's id (`jti`), when the identity provider sets one.
    pub jti: Option<String>,
}

pub struct JwtVerifier {
    keys: RwLock<Keys>,
    issuer: String,
    audience: String,
    claim: String,
    max_lifetime: Duration,
    jwks_url: Option<Url>,
    /// When a token's unknown `kid` last triggered a refresh.
    last_kid_refresh: Mutex<Option<Instant>>,
}

impl JwtVerifier {
    pub fn new(settings: &JwtSettings) -> Self {
        let mut keys = Keys::default();
        if let JwtKeySource::Pem(pem) = &settings.source {
            keys.single = Some((pem.key.clone(), pem.algorithm));
        }
        let jwks_url = match &settings.source {
            JwtKeySource::JwksUrl(url) => Some(url.clone()),
            JwtKeySource::Pem(_) => None,
        };
        Self {
            keys: RwLock::new(keys),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            claim: settings.client_id_claim.clone(),
            max_lifetime: settings.max_lifetime,
            jwks_url,
            last_kid_refresh: Mutex::new(None),
        }
    }

    /// True once there is a key to verify with (readiness waits for the first JWKS).
    pub fn has_keys(&self) -> bool {
        self.keys
            .read()
            .is_ok_and(|k| k.single.is_some() || !k.by_kid.is_empty())
    }

    /// Replaces the keys with the usable ones of a JWKS document ([`usable_key`]). A set
    /// without any usable key is refused and the previous keys stay: an identity provider's
    /// empty or broken answer must not log every user out.
    pub fn set_jwks(&self, set: &JwkSet) -> Result<usize, JwksError> {
        let by_kid: HashMap<String, (DecodingKey, Algorithm)> =
            set.keys.iter().filter_map(usable_key).collect();
        if by_kid.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        let n = by_kid.len();
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.by_kid = by_kid;
        Ok(n)
    }

    /// [`Self::verify`], but a token naming a `kid` we do not know first refreshes the JWKS
    /// (a key the identity provider just rotated in), at most once per
    /// [`UNKNOWN_KID_REFRESH_INTERVAL`].
    pub async fn verify_refreshing(&self, token: &str) -> Result<UserClaims, JwtError> {
        match self.verify_user(token) {
            Err(JwtError::UnknownKey) if self.may_refresh_for_unknown_kid() => {
                if let Some(url) = &self.jwks_url {
                    match fetch_jwks(self, url).await {
                        Ok(n) => tracing::info!(keys = n, "JWKS refreshed for an unknown kid"),
                        Err(e) => {
                            tracing::warn!(error = %e, "JWKS refresh for an unknown kid failed; keeping the previous keys");
                        }
                    }
                }
                self.verify_user(token)
            }
            other => other,
        }
    }

    fn may_refresh_for_unknown_kid(&self) -> bool {
        if self.jwks_url.is_none() {
            return false;
        }
        let mut last = self
            .last_kid_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < UNKNOWN_KID_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Verifies the token and returns the client id it grants.
    pub fn verify(&self, token: &str) -> Result<String, JwtError> {
        self.verify_user(token).map(|u| u.client_id)
    }

    /// Verifies the token and returns whom it names: the client it grants, and the person
    /// (`sub`, and the token's `jti` when present) for the audit trail.
    pub fn verify_user(&self, token: &str) -> Result<UserClaims, JwtError> {
        let header = decode_header(token)?;
        let keys = self.keys.read().map_err(|_| JwtError::UnknownKey)?;
        let (key, alg) = match &header.kid {
            Some(kid) => keys.by_kid.get(kid).or(keys.single.as_ref()),
            None => keys.single.as_ref(),
        }
        .ok_or(JwtError::UnknownKey)?;
        // RFC 8725 3.11: a token made for another purpose (`dpop+jwt`, `secevent+jwt`, …)
        // must not pass as an access token; identity providers send `JWT` or `at+jwt`.
        if let Some(typ) = &header.typ {
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            if !typ.eq_ignore_ascii_case("JWT") && !typ.eq_ignore_ascii_case("at+jwt") {
                return Err(JwtError::Type);
            }
        }
        // The algorithm comes from our key, never from the token (no alg confusion, no none).
        let mut validation = Validation::new(*alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // A token issued for later (`nbf`) is not valid yet.
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)?;
        self.check_lifetime(&data.claims)?;
        let text = |name: &str| {
            data.claims
                .get(name)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let client_id = text(&self.claim)
            .map(str::to_owned)
            .ok_or(JwtError::MissingClaim)?;
        // Names for the audit trail, not secrets; bounded and printable, whatever the IdP sent.
        let printable = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(MAX_AUDIT_CLAIM)
                .collect()
        };
        Ok(UserClaims {
            client_id,
            sub: text("sub").map(printable),
            jti: text("jti").map(printable),
        })
    }
}

/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;

impl JwtVerifier {
    /// A stolen token is useful until it expires, so the identity provider's lifetime is
    /// bounded here too: `iat` is required, not in the future, and `exp - iat` at most
    /// `JWT_MAX_LIFETIME_SECONDS` (without the `iat` bound, a far-future `iat` would stretch a
    /// short lifetime into years).
    fn check_lifetime(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), JwtError> {
        let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
        let (Some(iat), Some(exp)) = (number("iat"), number("exp")) else {
            return Err(JwtError::IssuedAt);
        };
        if iat > jsonwebtoken::get_current_timestamp() + LEEWAY_SECS {
            return Err(JwtError::IssuedAt);
        }
        if exp.saturating_sub(iat) > self.max_lifetime.as_secs() {
            return Err(JwtError::Lifetime);
        }
        Ok(())
    }
}

/// A JWKS entry we verify with: a signature key (`use`, when present, is `sig`; `key_ops`,
/// when present, include `verify`), RSA (RS256) or EC P-256 (ES256), with a `kid`, and an
/// `alg`, when present, equal to the one we verify with (tokens must carry that `alg` too).
fn usable_key(jwk: &Jwk) -> Option<(String, (DecodingKey, Algorithm))> {
    let common = &jwk.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
        || common
            .key_operations
            .as_ref()
            .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let declared_matches = match common.key_algorithm.as_ref() {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    if !declared_matches {
        return None;
    }
    Some((
        common.key_id.clone()?,
        (DecodingKey::from_jwk(jwk).ok()?, alg),
    ))
}

/// Fetches the JWKS once and installs its usable keys; on any failure the previous keys stay.
pub async fn fetch_jwks(verifier: &JwtVerifier, url: &Url) -> Result<usize, JwksError> {
    let http = crate::outbound::client_builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let fetch = |e: &dyn std::fmt::Display| JwksError::Fetch(e.to_string());
    let mut resp = http.get(url.as_str()).send().await.map_err(|e| fetch(&e))?;
    if !resp.status().is_success() {
        return Err(fetch(&format_args!("HTTP {}", resp.status().as_u16())));
    }
    let set = resp
        .json::<JwkSet>()
        .limit(1 << 20)
        .await
        .map_err(|e| fetch(&e))?;
    verifier.set_jwks(&set)
}

/// Keeps the JWKS current: every [`super::JWKS_REFRESH`] once loaded (key rotation at the
/// identity provider shows up within one interval), and quickly (1 s doubling to 30 s) until
/// the first key set is in, since the pod is not ready before.
pub async fn refresh_jwks_forever(verifier: Arc<JwtVerifier>, url: Url) {
    let mut retry = Duration::from_secs(1);
    loop {
        let wait = if verifier.has_keys() {
            super::JWKS_REFRESH
        } else {
            retry
        };
        tokio::time::sleep(wait).await;
        match fetch_jwks(&verifier, &url).await {
            Ok(n) => tracing::info!(keys = n, "JWKS refreshed"),
            Err(e) => {
                retry = (retry * 2).min(Duration::from_secs(30));
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{EncodingKey, Header, encode, jwk::Jwk};
    use serde_json::json;

    use super::*;

    const PRIVATE: &str = include_str!("../../tests/fixtures/jwt-es256-private.pem");

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtSettings {
            source: JwtKeySource::JwksUrl(
                Url::parse("https://idp.example.com/jwks.json").expect("url"),
            ),
            issuer: "https://idp.example.com".into(),
            audience: "finpass-gateway".into(),
            client_id_claim: "aa_client_id".into(),
            max_lifetime: Duration::from_secs(3600),
        })
    }

    fn key() -> EncodingKey {
        EncodingKey::from_ec_pem(PRIVATE.as_bytes()).expect("key")
    }

    fn jwk(kid: Option<&str>) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&key(), Algorithm::ES256).expect("jwk");
        jwk.common.key_id = kid.map(str::to_owned);
        jwk
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn token(kid: &str, extra: serde_json::Value) -> String {
        let mut claims = json!({
            "iss": "https://idp.example.com", "aud": "finpass-gateway", "exp": now() + 300,
            "iat": now(), "aa_client_id": "aa_1",
        });
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        encode(&header, &claims, &key()).expect("sign")
    }

    #[test]
    fn an_empty_or_unusable_key_set_does_not_replace_the_last_good_one() {
        let v = verifier();
        let _ = v.set_jwks(&JwkSet {
            keys: vec![jwk(Some("k1"))],
        });
        let t = token("k1", json!({}));
        assert_eq!(v.verify(&t).ok().as_deref(), Some("aa_1"));

        assert!(v.set_jwks(&JwkSet { keys: vec![] }).is_err());
        assert_eq!(v.verify(&t).ok().as_deref(), Some("aa_1"), "empty set");
        // No usable key: without a `kid` it cannot be selected.
        let _ = v.set_jwks(&JwkSet {
            keys: vec![jwk(None)],
        });
        assert_eq!(v.verify(&t).ok().as_deref(), Some("aa_1"), "unusable set");
        assert!(v.has_keys());
    }

    #[test]
    fn no_keys_until_a_key_set_is_loaded() {
        let v = verifier();
        assert!(!v.has_keys());
        assert!(matches!(
            v.verify(&token("k1", json!({}))),
            Err(JwtError::UnknownKey)
        ));
    }

    #[test]
    fn unknown_kid_refreshes_are_rate_limited() {
        let v = verifier();
        assert!(v.may_refresh_for_unknown_kid());
        assert!(!v.may_refresh_for_unknown_kid(), "within the interval");
        *v.last_kid_refresh.lock().expect("lock") =
            Instant::now().checked_sub(UNKNOWN_KID_REFRESH_INTERVAL);
        assert!(v.may_refresh_for_unknown_kid(), "after the interval");
    }

    #[test]
    fn tokens_not_valid_yet_are_refused() {
        let v = verifier();
        let _ = v.set_jwks(&JwkSet {
            keys: vec![jwk(Some("k1"))],
        });
        let later = token("k1", json!({"nbf": now() + 3600}));
        assert!(v.verify(&later).is_err(), "nbf an hour from now");
        let now_valid = token("k1", json!({"nbf": now().saturating_sub(10)}));
        assert!(v.verify(&now_valid).is_ok());
    }
}
