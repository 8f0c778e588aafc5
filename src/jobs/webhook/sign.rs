//! Standard Webhooks v1 signatures: `v1,` + base64 of HMAC-SHA256 with the secret's decoded
//! bytes over `"{webhook-id}.{webhook-timestamp}.{body}"`. With two secrets (a rotation) the
//! header carries both signatures, space-separated, so a receiver that knows either verifies.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

/// The prefix Standard Webhooks gives a secret.
const PREFIX: &str = "whsec_";

/// A signing secret: `whsec_` + base64 of 24..64 random bytes. Holds the decoded bytes only,
/// zeroed on drop; `Debug` and `Display` never show them.
pub struct Secret(SecretSlice<u8>);

/// Why a secret was refused. Never carries the secret's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with whsec_")]
    Prefix,
    #[error("a webhook secret is whsec_ + standard base64")]
    Base64,
    #[error("a webhook secret decodes to 24..64 bytes (got {0})")]
    Length(usize),
}

impl Secret {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let b64 = text.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let bytes = STANDARD.decode(b64).map_err(|_| SecretError::Base64)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    fn sign(&self, signed: &[&[u8]]) -> String {
        // An HMAC takes a key of any length; the parse bounds it anyway.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        for part in signed {
            mac.update(part);
        }
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self(self.0.expose_secret().to_vec().into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_<redacted>")
    }
}

/// The `webhook-signature` header's value: one `v1,<base64>` per secret, space-separated.
pub fn signature(secrets: &[Secret], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let signed: [&[u8]; 5] = [webhook_id.as_bytes(), b".", ts.as_bytes(), b".", body];
    secrets
        .iter()
        .map(|s| s.sign(&signed))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a `webhook-signature` header against the secrets (any one signature by any one
/// secret verifies), in constant time per comparison. For the sandbox's demo receiver; tests
/// verify with an independent implementation instead.
pub fn verify(
    secrets: &[Secret],
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    use subtle::ConstantTimeEq;
    let expected: Vec<String> = signature(secrets, webhook_id, timestamp, body)
        .split(' ')
        .map(str::to_owned)
        .collect();
    header.split(' ').any(|given| {
        expected
            .iter()
            .any(|e| bool::from(e.as_bytes().ct_eq(given.as_bytes())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (a 24-byte secret).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn secret(bytes: &[u8]) -> String {
        format!("whsec_{}", STANDARD.encode(bytes))
    }

    #[test]
    fn matches_the_specification_example() {
        let s = [Secret::parse(SPEC_SECRET).unwrap()];
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&s, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn parses_only_well_formed_secrets() {
        assert!(Secret::parse(&secret(&[7; 24])).is_ok());
        assert!(Secret::parse(&secret(&[7; 64])).is_ok());
        assert_eq!(
            Secret::parse(&secret(&[7; 23])).err(),
            Some(SecretError::Length(23))
        );
        assert_eq!(
            Secret::parse(&secret(&[7; 65])).err(),
            Some(SecretError::Length(65))
        );
        assert_eq!(
            Secret::parse(&STANDARD.encode([7; 32])).err(),
            Some(SecretError::Prefix)
        );
        assert_eq!(
            Secret::parse("whsec_not base64!").err(),
            Some(SecretError::Base64)
        );
    }

    #[test]
    fn never_prints_the_secret() {
        let text = secret(b"0123456789abcdefghijklmnopqrstuv");
        let s = Secret::parse(&text).unwrap();
        let b64 = text.trim_start_matches("whsec_");
        for shown in [
            format!("{s:?}"),
            s.to_string(),
            format!("{:?}", std::slice::from_ref(&s)),
        ] {
            assert!(!shown.contains(b64) && !shown.contains("0123"), "{shown}");
        }
    }

    #[test]
    fn a_rotation_signs_with_both_and_either_verifies() {
        let old = Secret::parse(&secret(&[1; 32])).unwrap();
        let new = Secret::parse(&secret(&[2; 32])).unwrap();
        let both = [old.clone(), new.clone()];
        let header = signature(&both, "msg_1", 1_700_000_000, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_ne!(parts[0], parts[1]);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert!(verify(&[old], "msg_1", 1_700_000_000, b"{}", &header));
        assert!(verify(
            std::slice::from_ref(&new),
            "msg_1",
            1_700_000_000,
            b"{}",
            &header
        ));
        assert!(!verify(
            std::slice::from_ref(&new),
            "msg_1",
            1_700_000_001,
            b"{}",
            &header
        ));
        assert!(!verify(&[new], "msg_1", 1_700_000_000, b"{ }", &header));
    }

    /// An independent implementation (the `standardwebhooks` crate) accepts our signatures.
    #[test]
    fn the_standardwebhooks_crate_verifies_our_signatures() {
        let text = secret(&[42; 32]);
        let s = [Secret::parse(&text).unwrap()];
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let body = br#"{"type":"statement_job.completed"}"#;
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "msg_abc".parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert(
            "webhook-signature",
            signature(&s, "msg_abc", ts, body).parse().unwrap(),
        );
        let wh = standardwebhooks::Webhook::new(&text).unwrap();
        wh.verify(body, &headers).unwrap();
        headers.insert("webhook-id", "msg_abd".parse().unwrap());
        assert!(wh.verify(body, &headers).is_err());
    }
}
