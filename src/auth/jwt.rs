//! JWT verification for frontend users: RS256/ES256 only, `iss`, `aud` and `exp` required,
//! keys from a static PEM file or the identity provider's JWKS (refreshed in the background).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet},
};
use url::Url;

use crate::config::{JwtKeySource, JwtSettings};

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("no key for this token")]
    UnknownKey,
    #[error("the token names no client id")]
    MissingClaim,
    #[error("{0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    single: Option<(DecodingKey, Algorithm)>,
}

pub struct JwtVerifier {
    keys: RwLock<Keys>,
    issuer: String,
    audience: String,
    claim: String,
}

impl JwtVerifier {
    pub fn new(settings: &JwtSettings) -> Self {
        let mut keys = Keys::default();
        if let JwtKeySource::Pem(pem) = &settings.source {
            keys.single = Some((pem.key.clone(), pem.algorithm));
        }
        Self {
            keys: RwLock::new(keys),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            claim: settings.client_id_claim.clone(),
        }
    }

    /// Replaces the keys with those of a JWKS document (unsupported keys are skipped).
    pub fn set_jwks(&self, set: &JwkSet) {
        let by_kid = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let alg = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                        Algorithm::ES256
                    }
                    _ => return None,
                };
                Some((
                    jwk.common.key_id.clone()?,
                    (DecodingKey::from_jwk(jwk).ok()?, alg),
                ))
            })
            .collect();
        if let Ok(mut keys) = self.keys.write() {
            keys.by_kid = by_kid;
        }
    }

    /// Verifies the token and returns the client id it grants.
    pub fn verify(&self, token: &str) -> Result<String, JwtError> {
        let header = decode_header(token)?;
        let keys = self.keys.read().map_err(|_| JwtError::UnknownKey)?;
        let (key, alg) = match &header.kid {
            Some(kid) => keys.by_kid.get(kid).or(keys.single.as_ref()),
            None => keys.single.as_ref(),
        }
        .ok_or(JwtError::UnknownKey)?;
        // The algorithm comes from our key, never from the token (no alg confusion, no none).
        let mut validation = Validation::new(*alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        let data = decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)?;
        data.claims
            .get(&self.claim)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(JwtError::MissingClaim)
    }
}

/// Fetches the JWKS once and installs its keys.
pub async fn fetch_jwks(verifier: &JwtVerifier, url: &Url) -> Result<usize, String> {
    let http = awc::Client::builder()
        .disable_redirects()
        .timeout(std::time::Duration::from_secs(10))
        .finish();
    let mut resp = http
        .get(url.as_str())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    let set = resp
        .json::<JwkSet>()
        .limit(1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    verifier.set_jwks(&set);
    Ok(set.keys.len())
}

/// Refreshes the JWKS every [`super::JWKS_REFRESH`], keeping the last good keys when a fetch
/// fails (key rotation at the identity provider shows up within one interval).
pub async fn refresh_jwks_forever(verifier: Arc<JwtVerifier>, url: Url) {
    loop {
        tokio::time::sleep(super::JWKS_REFRESH).await;
        match fetch_jwks(&verifier, &url).await {
            Ok(n) => tracing::info!(keys = n, "JWKS refreshed"),
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys"),
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
            "aa_client_id": "aa_1",
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

        let _ = v.set_jwks(&JwkSet { keys: vec![] });
        assert_eq!(v.verify(&t).ok().as_deref(), Some("aa_1"), "empty set");
        // No usable key: without a `kid` it cannot be selected.
        let _ = v.set_jwks(&JwkSet {
            keys: vec![jwk(None)],
        });
        assert_eq!(v.verify(&t).ok().as_deref(), Some("aa_1"), "unusable set");
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
