//! Session tokens: compact JWS (RFC 7515) with EdDSA/Ed25519 signatures (RFC 8037), signed and
//! verified by `jsonwebtoken` (its `rust_crypto` backend, where ed25519-dalek does the Ed25519).
//!
//! The auth service signs; every service verifies with the public keys that reach it as
//! `auth.key.*` events. The `typ` claim says what a token is for: services accept only
//! [`SESSION`] tokens, so a token minted for another purpose (a 2FA challenge, a registry pull) is
//! refused everywhere even though its signature is good.
//!
//! What the library checks: the header names EdDSA (never `none`, HS*, RS*, ES*), `crit` and `b64`
//! are nothing it does not understand, every part is strict base64url (no padding, no stray trailing
//! bits), and the signature is good. What this module adds: the size limit, before anything is
//! decoded; the `kid`, required, and its key, refused once retired; and the claims ([`check`]:
//! type, issuer, expiry) against the caller's clock with no leeway, the same checks that cached
//! tokens repeat. jsonwebtoken's own expiry check is off: it reads the system clock and allows 60 s.

use std::sync::LazyLock;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine as _};
use edd_events::Token;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
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

/// What jsonwebtoken is asked to check: EdDSA and the signature (and, its default, no `aud`: we
/// never set one). That every claim is there is [`Claims`]' own (serde); their values are [`check`]'s.
static VALIDATION: LazyLock<Validation> = LazyLock::new(|| {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.leeway = 0;
    validation.required_spec_claims.clear();
    validation
});

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
    key: EncodingKey,
    /// The public key as a JWK `x` value.
    x: String,
}

impl SigningKey {
    /// A fresh key and its PKCS#8 encoding, which is what gets stored.
    pub fn generate() -> Result<(Self, Vec<u8>), JwtError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| JwtError::KeyGeneration)?;
        let key = Self::from_pkcs8(Token::random(), pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(kid: Token, pkcs8: &[u8]) -> Result<Self, JwtError> {
        // ring generates the keys (jsonwebtoken does not) and checks a stored one: a PKCS#8 v2
        // document whose public key is the private key's.
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| JwtError::KeyGeneration)?;
        let key = EncodingKey::from_ed_der(pkcs8);
        // Once here, so that `sign` cannot fail later: ring reads some documents that jsonwebtoken's
        // ed25519-dalek does not (an explicitly tagged public key).
        jsonwebtoken::crypto::sign(b"", &key, Algorithm::EdDSA).map_err(|_| JwtError::KeyGeneration)?;
        Ok(Self { kid, key, x: B64.encode(pair.public_key().as_ref()) })
    }

    pub fn kid(&self) -> &Token {
        &self.kid
    }

    /// The public key as a JWK `x` value (base64url, no padding).
    pub fn public_key(&self) -> String {
        self.x.clone()
    }

    /// Signs `claims` into a compact JWS.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header { kid: Some(self.kid.to_string()), ..Header::new(Algorithm::EdDSA) };
        // Cannot fail: `from_pkcs8` signed with this key, and these plain structs serialize. Were it
        // to, the empty string is a token that every service refuses.
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
    }
}

/// A public key that verifies tokens.
#[derive(Clone, Debug)]
pub struct VerifyingKey {
    key: DecodingKey,
    x: String,
    /// After this (Unix seconds) the key is forgotten: it was rotated out and its tokens have expired.
    pub accept_until: Option<i64>,
}

impl VerifyingKey {
    /// From a JWK `x` value; `None` if it is not a 32-byte base64url string or not a curve point.
    pub fn from_public_key(x: &str, accept_until: Option<i64>) -> Option<Self> {
        // jsonwebtoken takes any bytes here (and would panic on fewer than 32 when verifying), and
        // reads the point only when it verifies: both are checked now, when the key arrives.
        let bytes: [u8; 32] = B64.decode(x).ok()?.try_into().ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
        let key = DecodingKey::from_ed_components(x).ok()?;
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
    // The header alone, to find the key; `decode` reads it again, with its `crit` and `b64` checks.
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    // `decode` refuses other algorithms too; here, so that they are refused before any key lookup.
    if header.alg != Algorithm::EdDSA {
        return Err(JwtError::Malformed);
    }
    let kid = header.kid.as_deref().ok_or(JwtError::Malformed)?;
    let key = key_for(kid).ok_or(JwtError::UnknownKey)?;
    if key.accept_until.is_some_and(|until| now > until) {
        return Err(JwtError::UnknownKey);
    }
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &VALIDATION)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            _ => JwtError::Malformed,
        })?
        .claims;
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

    // RFC 8037, appendix A: the Ed25519 key of A.1 (`d` private, `x` public) and the JWS of A.4
    // (header `{"alg":"EdDSA"}`, payload "Example of Ed25519 signing").
    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.\
        hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    /// The RFC's key as the PKCS#8 v2 document ring writes and reads.
    fn rfc8037_pkcs8() -> Vec<u8> {
        let mut pkcs8 =
            vec![0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        pkcs8.extend(B64.decode(RFC8037_D).unwrap());
        pkcs8.extend([0x81, 0x21, 0x00]);
        pkcs8.extend(B64.decode(RFC8037_X).unwrap());
        pkcs8
    }

    #[test]
    fn rfc8037_vectors() {
        // A.2: the public key of `d` is `x`.
        let key = SigningKey::from_pkcs8(Token::new("rfc8037").unwrap(), &rfc8037_pkcs8()).unwrap();
        assert_eq!(key.public_key(), RFC8037_X);

        // A.4: Ed25519 is deterministic, so signing the RFC's input gives the RFC's signature.
        let (input, signature) = RFC8037_JWS.rsplit_once('.').unwrap();
        assert_eq!(jsonwebtoken::crypto::sign(input.as_bytes(), &key.key, Algorithm::EdDSA).unwrap(), signature);

        // A.5: the signature verifies with `x`, and not over anything else.
        let verifying = VerifyingKey::from_public_key(RFC8037_X, None).unwrap();
        let good = |input: &str| {
            jsonwebtoken::crypto::verify(signature, input.as_bytes(), &verifying.key, Algorithm::EdDSA).unwrap()
        };
        assert!(good(input));
        assert!(!good(&input.replacen("RXhh", "RXhi", 1)));

        // It is a JWS but not one of ours: it names no key (and its payload is no claims).
        assert_eq!(verify(RFC8037_JWS, |_| Some(&verifying), 50, SESSION), Err(JwtError::Malformed));

        // Our tokens, signed with the RFC's key, verify with its `x`.
        let find = |k: &str| (k == "rfc8037").then_some(&verifying);
        assert_eq!(verify(&key.sign(&claims(SESSION, 100)), find, 50, SESSION).unwrap().sub, "u1");
    }

    #[test]
    fn refuses_stored_keys_that_jsonwebtoken_cannot_sign_with() {
        // The public key tagged [1] EXPLICIT rather than IMPLICIT: ring takes it, ed25519-dalek does not.
        let mut explicit = rfc8037_pkcs8();
        explicit.splice(48..51, [0xa1, 0x23, 0x03, 0x21, 0x00]);
        explicit[1] = 0x53;
        assert!(Ed25519KeyPair::from_pkcs8(&explicit).is_ok());
        assert!(matches!(SigningKey::from_pkcs8(Token::random(), &explicit), Err(JwtError::KeyGeneration)));
    }

    #[test]
    fn refuses_public_keys_that_are_not_ed25519_points() {
        assert!(VerifyingKey::from_public_key(RFC8037_X, None).is_some());
        // Wrong length (jsonwebtoken alone would panic on the short one when verifying, and use the
        // first 32 bytes of the long one).
        assert!(VerifyingKey::from_public_key(&B64.encode([7u8; 31]), None).is_none());
        assert!(VerifyingKey::from_public_key(&B64.encode([7u8; 33]), None).is_none());
        // 32 bytes, but y = 2 has no x on the curve.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(VerifyingKey::from_public_key(&B64.encode(not_a_point), None).is_none());
        // Padded, or in the standard alphabet.
        assert!(VerifyingKey::from_public_key(&format!("{RFC8037_X}="), None).is_none());
        assert!(VerifyingKey::from_public_key(&RFC8037_X.replace('_', "/"), None).is_none());
    }

    /// A fresh key and its verifying half.
    fn keys() -> (SigningKey, VerifyingKey) {
        let (key, _) = SigningKey::generate().unwrap();
        let verifying = VerifyingKey::from_public_key(&key.public_key(), None).unwrap();
        (key, verifying)
    }

    /// `header.payload.signature` from raw parts, signed with `key` over exactly these encodings.
    fn signed(key: &SigningKey, header: &str, payload: &str) -> String {
        let input = format!("{header}.{payload}");
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key.key, Algorithm::EdDSA).unwrap();
        format!("{input}.{signature}")
    }

    /// JSON that base64url-encodes to a string with trailing bits (its length is not a multiple of 3).
    fn json_with_tail(value: serde_json::Value) -> Vec<u8> {
        let mut json = serde_json::to_vec(&value).unwrap();
        if json.len().is_multiple_of(3) {
            json.push(b' ');
        }
        json
    }

    /// The same bytes, encoded non-canonically: the unused low bits of the last character set.
    fn with_trailing_bits(b64: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        assert_ne!(b64.len() % 4, 0, "{b64} has no trailing bits");
        let last = ALPHABET.iter().position(|&c| Some(&c) == b64.as_bytes().last()).unwrap();
        let sloppy = format!("{}{}", &b64[..b64.len() - 1], ALPHABET[last | 1] as char);
        // A lenient decoder reads the same bytes from both, so a verifier using one would accept
        // more than one spelling of a token.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::general_purpose::NO_PAD.with_decode_allow_trailing_bits(true),
        );
        assert_eq!(lenient.decode(&sloppy).unwrap(), B64.decode(b64).unwrap());
        sloppy
    }

    #[test]
    fn refuses_other_algorithms_and_headers_without_a_kid() {
        let (key, verifying) = keys();
        let kid = key.kid().to_string();
        let find = |k: &str| (k == kid).then_some(&verifying);
        let payload = B64.encode(serde_json::to_vec(&claims(SESSION, 100)).unwrap());
        let header = |value: serde_json::Value| B64.encode(serde_json::to_vec(&value).unwrap());

        // The control: these parts, as we build them, verify.
        let ours = signed(&key, &header(serde_json::json!({"alg": "EdDSA", "kid": kid})), &payload);
        assert_eq!(verify(&ours, find, 50, SESSION).unwrap().sub, "u1");

        // `none`, unsigned.
        let none = format!("{}.{payload}.", header(serde_json::json!({"alg": "none", "kid": kid})));
        assert_eq!(verify(&none, find, 50, SESSION), Err(JwtError::Malformed));
        // HS256 keyed with the public key, which every verifier knows (the classic confusion).
        let hs256 = jsonwebtoken::encode(
            &Header { kid: Some(kid.clone()), ..Header::new(Algorithm::HS256) },
            &claims(SESSION, 100),
            &EncodingKey::from_secret(&B64.decode(key.public_key()).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(verify(&hs256, find, 50, SESSION), Err(JwtError::Malformed));
        // Another asymmetric algorithm's name over an Ed25519 signature.
        let es256 = signed(&key, &header(serde_json::json!({"alg": "ES256", "kid": kid})), &payload);
        assert_eq!(verify(&es256, find, 50, SESSION), Err(JwtError::Malformed));
        // No kid, signed with the right key.
        let anonymous = signed(&key, &header(serde_json::json!({"alg": "EdDSA", "typ": "JWT"})), &payload);
        assert_eq!(verify(&anonymous, |_| Some(&verifying), 50, SESSION), Err(JwtError::Malformed));
        // A critical header parameter nobody here understands.
        let critical =
            signed(&key, &header(serde_json::json!({"alg": "EdDSA", "kid": kid, "crit": ["exp"]})), &payload);
        assert_eq!(verify(&critical, find, 50, SESSION), Err(JwtError::Malformed));
    }

    #[test]
    fn refuses_padded_and_non_canonical_base64() {
        let (key, verifying) = keys();
        let kid = key.kid().to_string();
        let find = |k: &str| (k == kid).then_some(&verifying);
        let header = B64.encode(json_with_tail(serde_json::json!({"alg": "EdDSA", "kid": kid})));
        let payload = B64.encode(json_with_tail(serde_json::to_value(claims(SESSION, 100)).unwrap()));

        // The control: canonical parts verify.
        let good = signed(&key, &header, &payload);
        assert_eq!(verify(&good, find, 50, SESSION).unwrap().sub, "u1");

        // The signature: padded, or with trailing bits (a good signature to a lenient decoder).
        assert_eq!(verify(&format!("{good}=="), find, 50, SESSION), Err(JwtError::Malformed));
        let (input, signature) = good.rsplit_once('.').unwrap();
        let sloppy_signature = format!("{input}.{}", with_trailing_bits(signature));
        assert_eq!(verify(&sloppy_signature, find, 50, SESSION), Err(JwtError::Malformed));

        // Header and payload, each signed as they stand, so only their encoding is wrong.
        let pad = |b64: &str| format!("{b64}{}", "=".repeat((4 - b64.len() % 4) % 4));
        for token in [
            signed(&key, &with_trailing_bits(&header), &payload),
            signed(&key, &header, &with_trailing_bits(&payload)),
            signed(&key, &pad(&header), &payload),
            signed(&key, &header, &pad(&payload)),
        ] {
            assert_eq!(verify(&token, find, 50, SESSION), Err(JwtError::Malformed), "{token}");
        }

        // The standard alphabet's `+` and `/` for `-` and `_`: the same bytes, not base64url.
        let token = (0..)
            .map(|i| key.sign(&Claims { sid: format!("s{i}"), ..claims(SESSION, 100) }))
            .find(|t| t.rsplit_once('.').is_some_and(|(_, s)| s.contains(['-', '_'])))
            .unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let standard = format!("{input}.{}", signature.replace('-', "+").replace('_', "/"));
        assert_eq!(verify(&standard, find, 50, SESSION), Err(JwtError::Malformed));
    }

    #[test]
    fn refuses_long_tokens_before_reading_them() {
        let (key, verifying) = keys();
        let looked_up = std::cell::Cell::new(false);
        let find = |_: &str| {
            looked_up.set(true);
            Some(&verifying)
        };
        // Validly signed, but longer than any token we issue.
        let long = key.sign(&Claims { sub: "u".repeat(MAX_TOKEN_BYTES), ..claims(SESSION, 100) });
        assert!(long.len() > MAX_TOKEN_BYTES);
        assert_eq!(verify(&long, find, 50, SESSION), Err(JwtError::Malformed));
        assert!(!looked_up.get(), "the header of an oversized token was read");
    }

    #[test]
    fn expiry_and_issuer_are_ours_not_the_librarys() {
        let (key, verifying) = keys();
        let kid = key.kid().to_string();
        let find = |k: &str| (k == kid).then_some(&verifying);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();

        // Expired 30 s ago by the wall clock: within jsonwebtoken's default 60 s leeway, refused here.
        let just_expired = key.sign(&claims(SESSION, now - 30));
        assert_eq!(verify(&just_expired, find, now, SESSION), Err(JwtError::Expired));
        // The caller's clock decides, not the system's: expired in 1970, good as of 50.
        assert!(verify(&key.sign(&claims(SESSION, 100)), find, 50, SESSION).is_ok());

        let foreign = key.sign(&Claims { iss: "someone-else".into(), ..claims(SESSION, now + 60) });
        assert_eq!(verify(&foreign, find, now, SESSION), Err(JwtError::Malformed));
    }
}

#[cfg(test)]
mod timing {
    use ed25519_dalek::Verifier as _;

    use super::*;

    /// The hand-written verification this module had before jsonwebtoken (header, key, signature,
    /// claims; base64 and serde by hand, ed25519-dalek), kept only as the baseline of the measurement.
    fn hand_written(token: &str, key: &ed25519_dalek::VerifyingKey) -> Option<Claims> {
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            #[allow(dead_code)]
            kid: String,
        }
        let (input, signature) = token.rsplit_once('.')?;
        let (header, payload) = input.split_once('.')?;
        let header: Header = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
        (header.alg == "EdDSA").then_some(())?;
        let signature: [u8; 64] = B64.decode(signature).ok()?.try_into().ok()?;
        key.verify(input.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature)).ok()?;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }

    #[test]
    #[ignore = "a measurement, run with --release --ignored --nocapture"]
    fn verify_cost() {
        let (key, _) = SigningKey::generate().unwrap();
        let verifying = VerifyingKey::from_public_key(&key.public_key(), None).unwrap();
        let dalek: [u8; 32] = B64.decode(key.public_key()).unwrap().try_into().unwrap();
        let dalek = ed25519_dalek::VerifyingKey::from_bytes(&dalek).unwrap();
        let kid = key.kid().to_string();
        let token = key.sign(&Claims {
            iss: ISSUER.into(),
            sub: "u1".into(),
            sid: "s1".into(),
            typ: SESSION.into(),
            iat: 0,
            exp: i64::MAX,
        });
        let n = 20_000;
        let per_call = |f: &dyn Fn()| {
            let t = std::time::Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        };
        // Interleaved, so that both see the same machine; the median of 3 rounds of `n` each.
        let (mut library, mut by_hand) = (vec![], vec![]);
        for _ in 0..3 {
            library.push(per_call(&|| {
                verify(&token, |k| (k == kid).then_some(&verifying), 1, SESSION).unwrap();
            }));
            by_hand.push(per_call(&|| {
                hand_written(&token, &dalek).unwrap();
            }));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[1]
        };
        println!("jwt::verify (jsonwebtoken)  {:.1} µs  {library:.1?}", median(&mut library));
        println!("hand-written JWS baseline   {:.1} µs  {by_hand:.1?}", median(&mut by_hand));
    }
}
