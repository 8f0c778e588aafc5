//! `finpass-gateway sandbox-jwt CLIENT_ID`: a frontend user's JWT for trying the public
//! listener and the JWT paths in the sandbox, signed with the test fixture key whose public half
//! is `tests/fixtures/jwt-es256-public.pem`.
//!
//! Why it exists: a frontend holds only a JWT from the company's identity provider, and there is
//! none on a fresh machine. Minting one here (with the crate that verifies them) keeps the README's
//! public-listener walk-through to copy-paste, with no Python or openssl steps. Sandbox-only: the
//! key is a published test key and never ships.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

/// The issuer and audience the README's public-listener snippet configures.
pub const ISSUER: &str = "https://idp.example.com";
pub const AUDIENCE: &str = "finpass-gateway";
/// Within the gateway's default `JWT_MAX_LIFETIME_SECONDS`.
const LIFETIME_SECONDS: u64 = 3600;

const PRIVATE_KEY: &str = include_str!("../../tests/fixtures/jwt-es256-private.pem");

/// An ES256 JWT for a user of `client_id` (claim `aa_client_id`, the default
/// `JWT_CLIENT_ID_CLAIM`), valid for an hour from now.
pub fn user_jwt(client_id: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("sandbox-user-of-{client_id}"),
        "aa_client_id": client_id,
        "iat": now,
        "exp": now + LIFETIME_SECONDS,
    });
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("JWT".into());
    encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(PRIVATE_KEY.as_bytes())?,
    )
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation, decode};

    use super::*;

    #[test]
    fn the_minted_jwt_verifies_with_the_sandbox_public_key_and_names_the_client() {
        let token = user_jwt("aa_demo_ready").expect("mint");
        let public = include_str!("../../tests/fixtures/jwt-es256-public.pem");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        let data = decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_ec_pem(public.as_bytes()).expect("public key"),
            &validation,
        )
        .expect("verifies");
        assert_eq!(data.claims["aa_client_id"], "aa_demo_ready");
        let lifetime = data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, LIFETIME_SECONDS);
    }
}
