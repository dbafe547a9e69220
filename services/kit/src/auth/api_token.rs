//! Opaque API tokens: `edd_` and 52 characters of base32 (256 random bits).
//!
//! The token is shown to its owner once; the platform keeps only its SHA-256, which is what the
//! `auth.token.*.created` event carries and what services look tokens up by.

use ring::{
    digest::{digest, SHA256},
    rand::{SecureRandom, SystemRandom},
};

/// Every API token starts with this, so secret scanners and our extractor recognise it.
pub const PREFIX: &str = "edd_";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A new random token.
pub fn generate() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    let mut out = String::with_capacity(PREFIX.len() + 52);
    out.push_str(PREFIX);
    // 256 bits in 5-bit groups: 52 characters, the last one carrying the final bit.
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    Ok(out)
}

/// Whether `s` has the shape of an API token (it may still be unknown).
pub fn looks_like(s: &str) -> bool {
    s.len() == PREFIX.len() + 52 && s.starts_with(PREFIX) && s[PREFIX.len()..].bytes().all(|b| ALPHABET.contains(&b))
}

/// Lowercase hex SHA-256 of the token: its identity in events and lookups.
pub fn sha256_hex(token: &str) -> String {
    digest(&SHA256, token.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_hashed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(looks_like(&a), "{a}");
        assert!(!looks_like("edd_short"));
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
