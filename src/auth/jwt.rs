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
