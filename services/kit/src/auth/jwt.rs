//! Session tokens: compact JWS (RFC 7515) with EdDSA/Ed25519 signatures (RFC 8037).
//!
//! The auth service signs; every service verifies with the public keys that reach it as
//! `auth.key.*` events. The `typ` claim says what a token is for: services accept only
//! [`SESSION`] tokens, so a token minted for another purpose (a 2FA challenge, a registry pull) is
//! refused everywhere even though its signature is good.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine as _};
use ed25519_dalek::Verifier as _;
use edd_events::Token;
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair as _},
};
use serde::{Deserialize, Serialize};

/// The `typ` claim of a session token.
pub const SESSION: &str = "session";
/// The `typ` claim of a second-factor challenge (issued between password and 2FA; not a login).
pub const TWO_FACTOR_CHALLENGE: &str = "2fa_challenge";
/// The `iss` claim of every token we sign.
pub const ISSUER: &str = "edd-auth";
/// Longest token we look at; anything longer is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The session id; revocations name it.
    pub sid: String,
    /// What the token is for, e.g. [`SESSION`].
    pub typ: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token is signed with an unknown or retired key")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("a {0:?} token is not accepted here")]
    WrongType(String),
    #[error("cannot create a signing key")]
    KeyGeneration,
}

/// The auth service's private signing key.
pub struct SigningKey {
    kid: Token,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// A fresh key and its PKCS#8 encoding, which is what gets stored.
    pub fn generate() -> Result<(Self, Vec<u8>), JwtError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| JwtError::KeyGeneration)?;
        let key = Self::from_pkcs8(Token::random(), pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(kid: Token, pkcs8: &[u8]) -> Result<Self, JwtError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| JwtError::KeyGeneration)?;
        Ok(Self { kid, pair })
    }

    pub fn kid(&self) -> &Token {
        &self.kid
    }

    /// The public key as a JWK `x` value (base64url, no padding).
    pub fn public_key(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    /// Signs `claims` into a compact JWS.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header { alg: "EdDSA".into(), typ: Some("JWT".into()), kid: self.kid.to_string() };
        // Serializing these plain structs cannot fail.
        let header = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let signature = B64.encode(self.pair.sign(signing_input.as_bytes()));
        format!("{signing_input}.{signature}")
    }
}

/// A public key that verifies tokens.
#[derive(Clone, Debug)]
pub struct VerifyingKey {
    key: ed25519_dalek::VerifyingKey,
    x: String,
    /// After this (Unix seconds) the key is forgotten: it was rotated out and its tokens have expired.
    pub accept_until: Option<i64>,
}

impl VerifyingKey {
    /// From a JWK `x` value; `None` if it is not a 32-byte base64url string.
    pub fn from_public_key(x: &str, accept_until: Option<i64>) -> Option<Self> {
        let bytes: [u8; 32] = B64.decode(x).ok()?.try_into().ok()?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
        Some(Self { key, x: x.to_owned(), accept_until })
    }

    /// The JWK `x` value.
    pub fn public_key(&self) -> &str {
        &self.x
    }
}

/// Verifies `token`'s signature with the key its header names (found by `key_for`) and decodes its
/// claims. Checks expiry and type as of `now` (Unix seconds).
pub fn verify<'k>(
    token: &str,
    key_for: impl Fn(&str) -> Option<&'k VerifyingKey>,
    now: i64,
    accepted_type: &str,
) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.splitn(3, '.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let header: Header = serde_json::from_slice(&B64.decode(header).map_err(|_| JwtError::Malformed)?)
        .map_err(|_| JwtError::Malformed)?;
    if header.alg != "EdDSA" {
        return Err(JwtError::Malformed);
    }
    let key = key_for(&header.kid).ok_or(JwtError::UnknownKey)?;
    if key.accept_until.is_some_and(|until| now > until) {
        return Err(JwtError::UnknownKey);
    }
    let signature: [u8; 64] =
        B64.decode(signature).map_err(|_| JwtError::Malformed)?.try_into().map_err(|_| JwtError::Malformed)?;
    let signing_input = &token[..header_len(token)];
    let signature = ed25519_dalek::Signature::from_bytes(&signature);
    key.key.verify(signing_input.as_bytes(), &signature).map_err(|_| JwtError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&B64.decode(payload).map_err(|_| JwtError::Malformed)?)
        .map_err(|_| JwtError::Malformed)?;
    check(&claims, now, accepted_type)?;
    Ok(claims)
}

/// The checks that depend on time and type, repeated for cached tokens.
pub fn check(claims: &Claims, now: i64, accepted_type: &str) -> Result<(), JwtError> {
    if claims.typ != accepted_type {
        return Err(JwtError::WrongType(claims.typ.clone()));
    }
    if claims.iss != ISSUER {
        return Err(JwtError::Malformed);
    }
    if now >= claims.exp {
        return Err(JwtError::Expired);
    }
    Ok(())
}

/// Length of `header.payload` (the signed part) in a compact JWS.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(typ: &str, exp: i64) -> Claims {
        Claims { iss: ISSUER.into(), sub: "u1".into(), sid: "s1".into(), typ: typ.into(), iat: 0, exp }
    }

    #[test]
    fn signs_and_verifies() {
        let (key, pkcs8) = SigningKey::generate().unwrap();
        let verifying = VerifyingKey::from_public_key(&key.public_key(), None).unwrap();
        let token = key.sign(&claims(SESSION, 100));
        let kid = key.kid().to_string();
        let find = |k: &str| (k == kid).then_some(&verifying);
        assert_eq!(verify(&token, find, 50, SESSION).unwrap().sub, "u1");
        assert_eq!(verify(&token, find, 100, SESSION), Err(JwtError::Expired));

        // The stored key signs the same way after a restart.
        let again = SigningKey::from_pkcs8(key.kid().clone(), &pkcs8).unwrap();
        assert_eq!(verify(&again.sign(&claims(SESSION, 100)), find, 50, SESSION).unwrap().sid, "s1");
    }

    #[test]
    fn refuses_other_types_tampering_and_unknown_keys() {
        let (key, _) = SigningKey::generate().unwrap();
        let verifying = VerifyingKey::from_public_key(&key.public_key(), None).unwrap();
        let kid = key.kid().to_string();
        let find = |k: &str| (k == kid).then_some(&verifying);

        let challenge = key.sign(&claims(TWO_FACTOR_CHALLENGE, 100));
        assert_eq!(verify(&challenge, find, 50, SESSION), Err(JwtError::WrongType(TWO_FACTOR_CHALLENGE.into())));

        let token = key.sign(&claims(SESSION, 100));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(serde_json::to_vec(&Claims { sub: "admin".into(), ..claims(SESSION, 100) }).unwrap());
        parts[1] = &forged;
        assert_eq!(verify(&parts.join("."), find, 50, SESSION), Err(JwtError::BadSignature));

        let (other, _) = SigningKey::generate().unwrap();
        assert_eq!(verify(&other.sign(&claims(SESSION, 100)), find, 50, SESSION), Err(JwtError::UnknownKey));
        assert_eq!(verify("a.b", find, 50, SESSION), Err(JwtError::Malformed));
        assert_eq!(verify(&"x".repeat(MAX_TOKEN_BYTES + 1), find, 50, SESSION), Err(JwtError::Malformed));

        let retired = VerifyingKey::from_public_key(&key.public_key(), Some(60)).unwrap();
        let find_retired = |k: &str| (k == kid).then_some(&retired);
        assert!(verify(&token, find_retired, 50, SESSION).is_ok());
        assert_eq!(verify(&token, find_retired, 61, SESSION), Err(JwtError::UnknownKey));
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore = "a measurement, run with --release --ignored --nocapture"]
    fn verify_cost() {
        let (key, _) = SigningKey::generate().unwrap();
        let verifying = VerifyingKey::from_public_key(&key.public_key(), None).unwrap();
        let kid = key.kid().to_string();
        let token = key.sign(&Claims {
            iss: ISSUER.into(),
            sub: "u1".into(),
            sid: "s1".into(),
            typ: SESSION.into(),
            iat: 0,
            exp: i64::MAX,
        });
        let n = 5000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            verify(&token, |k| (k == kid).then_some(&verifying), 1, SESSION).unwrap();
        }
        println!("jwt::verify {:.1} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
}
