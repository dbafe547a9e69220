//! Capability tokens: what lets a request touch a chunk.
//!
//! A token is `expiry ‖ HMAC-SHA256(cluster key, domain ‖ op ‖ handle ‖ version ‖ expiry)`: it grants one
//! operation on one chunk at one version until it expires. The master will mint them for clients;
//! replicas mint their own (same cluster key) for the steps they take on a client's behalf (forwarding
//! pushed data, having a secondary apply a mutation). Verification needs no state and no round trip.
//! Neither keys nor tokens are ever logged: their `Debug` forms are redacted.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

use crate::chunk::{ChunkHandle, ChunkVersion};

/// Separates these MACs from anything else the cluster key might ever sign.
const DOMAIN: &[u8] = b"edd-gfs/capability/1";

/// The shortest cluster key accepted: 128 bits.
const MIN_KEY: usize = 16;

/// The secret every master and chunkserver of one cluster shares.
pub struct ClusterKey(hmac::Key);

impl ClusterKey {
    /// A key from secret bytes (at least 16, ideally 32 random ones).
    pub fn new(secret: &[u8]) -> Result<ClusterKey, TokenError> {
        if secret.len() < MIN_KEY {
            return Err(TokenError::WeakKey { len: secret.len(), min: MIN_KEY });
        }
        Ok(ClusterKey(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// The operation a token grants; part of the MAC, so a read token cannot authorize a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenOp {
    Ping,
    Push,
    Write,
    Append,
    Read,
    /// A secondary applying a mutation the primary ordered (server to server).
    ApplyWrite,
    /// A secondary padding a chunk the primary found too full for a record (server to server).
    ApplyPad,
    /// The master creating a replica or raising its version for a lease (master to chunkserver).
    Prepare,
}

impl TokenOp {
    fn code(self) -> u8 {
        match self {
            TokenOp::Ping => 1,
            TokenOp::Push => 2,
            TokenOp::Write => 3,
            TokenOp::Append => 4,
            TokenOp::Read => 5,
            TokenOp::ApplyWrite => 6,
            TokenOp::ApplyPad => 7,
            TokenOp::Prepare => 8,
        }
    }
}

/// Why a token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no capability token")]
    Missing,
    /// Malformed, signed with another key, or for another operation, chunk or version.
    #[error("invalid capability token")]
    Invalid,
    #[error("expired capability token")]
    Expired,
    #[error("cluster key of {len} bytes is too short (at least {min})")]
    WeakKey { len: usize, min: usize },
}

/// One operation on one chunk version, until `expires_at`.
#[derive(Clone, PartialEq, Eq)]
pub struct CapabilityToken {
    /// Seconds since the Unix epoch.
    expires_at: u64,
    mac: [u8; 32],
}

impl fmt::Debug for CapabilityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapabilityToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

impl CapabilityToken {
    /// Bytes on the wire: the expiry (8) and the MAC (32).
    pub const ENCODED_LEN: usize = 40;

    /// Signs `op` on `handle` at `version`, valid until `expires_at` (to the second, rounded down).
    pub fn mint(
        key: &ClusterKey,
        op: TokenOp,
        handle: ChunkHandle,
        version: ChunkVersion,
        expires_at: SystemTime,
    ) -> CapabilityToken {
        let expires_at = unix_seconds(expires_at);
        let tag = hmac::sign(&key.0, &message(op, handle, version, expires_at));
        let mut mac = [0; 32];
        mac.copy_from_slice(tag.as_ref());
        CapabilityToken { expires_at, mac }
    }

    /// [`mint`](Self::mint), valid for `ttl` from now.
    pub fn mint_for(
        key: &ClusterKey,
        op: TokenOp,
        handle: ChunkHandle,
        version: ChunkVersion,
        ttl: Duration,
    ) -> CapabilityToken {
        CapabilityToken::mint(key, op, handle, version, SystemTime::now() + ttl)
    }

    /// Checks that the token grants `op` on `handle` at `version` and has not expired at `now`. The MAC
    /// comparison is constant-time (`ring::hmac::verify`).
    pub fn verify(
        &self,
        key: &ClusterKey,
        op: TokenOp,
        handle: ChunkHandle,
        version: ChunkVersion,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        hmac::verify(&key.0, &message(op, handle, version, self.expires_at), &self.mac)
            .map_err(|_| TokenError::Invalid)?;
        if unix_seconds(now) >= self.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_at)
    }

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.expires_at.to_be_bytes());
        out[8..].copy_from_slice(&self.mac);
        out
    }

    /// `None` unless `bytes` has exactly the encoded length.
    pub fn decode(bytes: &[u8]) -> Option<CapabilityToken> {
        let bytes: &[u8; Self::ENCODED_LEN] = bytes.try_into().ok()?;
        let mut expiry = [0; 8];
        expiry.copy_from_slice(&bytes[..8]);
        let mut mac = [0; 32];
        mac.copy_from_slice(&bytes[8..]);
        Some(CapabilityToken { expires_at: u64::from_be_bytes(expiry), mac })
    }
}

fn message(op: TokenOp, handle: ChunkHandle, version: ChunkVersion, expires_at: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 25);
    m.extend_from_slice(DOMAIN);
    m.push(op.code());
    m.extend_from_slice(&handle.0.to_be_bytes());
    m.extend_from_slice(&version.0.to_be_bytes());
    m.extend_from_slice(&expires_at.to_be_bytes());
    m
}

/// Seconds since the epoch; a time before it counts as the epoch (and so is long expired).
fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: ChunkHandle = ChunkHandle(7);
    const V: ChunkVersion = ChunkVersion(3);

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::new(&[byte; 32]).expect("key")
    }

    #[test]
    fn a_token_grants_exactly_what_it_names_until_it_expires() {
        let k = key(1);
        let now = SystemTime::now();
        let token = CapabilityToken::mint(&k, TokenOp::Write, H, V, now + Duration::from_secs(60));
        assert_eq!(token.verify(&k, TokenOp::Write, H, V, now), Ok(()));
        let decoded = CapabilityToken::decode(&token.encode()).expect("decode");
        assert_eq!(decoded.verify(&k, TokenOp::Write, H, V, now), Ok(()));

        assert_eq!(token.verify(&key(2), TokenOp::Write, H, V, now), Err(TokenError::Invalid));
        assert_eq!(token.verify(&k, TokenOp::Read, H, V, now), Err(TokenError::Invalid));
        assert_eq!(token.verify(&k, TokenOp::Write, ChunkHandle(8), V, now), Err(TokenError::Invalid));
        assert_eq!(token.verify(&k, TokenOp::Write, H, ChunkVersion(4), now), Err(TokenError::Invalid));
        assert_eq!(token.verify(&k, TokenOp::Write, H, V, now + Duration::from_secs(61)), Err(TokenError::Expired));

        // A longer expiry written over the token's own does not survive the MAC.
        let mut forged = token.encode();
        forged[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        let forged = CapabilityToken::decode(&forged).expect("decode");
        assert_eq!(forged.verify(&k, TokenOp::Write, H, V, now), Err(TokenError::Invalid));
    }

    #[test]
    fn short_keys_and_odd_encodings_are_refused_and_nothing_secret_is_printed() {
        assert!(matches!(ClusterKey::new(&[0; 8]), Err(TokenError::WeakKey { len: 8, .. })));
        assert!(CapabilityToken::decode(&[0; 39]).is_none());
        assert!(CapabilityToken::decode(&[0; 41]).is_none());
        let token = CapabilityToken::mint_for(&key(1), TokenOp::Read, H, V, Duration::from_secs(5));
        let printed = format!("{token:?} {:?}", key(1));
        assert!(!printed.contains("mac") && printed.contains("redacted"), "{printed}");
    }
}
