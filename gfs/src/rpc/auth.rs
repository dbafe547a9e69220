//! Who may talk to the master, and how a caller knows the master answered. Chunkservers and masters
//! prove they hold the cluster key, clients (the storage, registry and logs services, `edd gfs`) that
//! they hold the client secret. Neither secret travels.
//!
//! **A call** carries `authorization: Bearer <role>.<unix seconds>.<nonce>.<body digest>.<mac>`: a
//! random 128-bit nonce, the SHA-256 of the request message's bytes, and HMAC-SHA256(secret, domain ‖
//! role ‖ seconds ‖ nonce ‖ digest ‖ method). The master checks the MAC before it reads the body, then
//! that the body is the one digested, and accepts a credential once, within [`SKEW`] of its clock: a
//! captured header is refused on another method, with another body, a second time, and after
//! [`SKEW`]. Nonces seen are kept until their credential expires ([`MAX_NONCES`] at most, after which
//! calls are refused until some expire). A call without a valid credential is answered
//! `UNAUTHENTICATED` and nothing else.
//!
//! **A reply** carries [`REPLY_HEADER`]: HMAC-SHA256(the same secret, reply domain ‖ role ‖ nonce ‖
//! SHA-256 of the reply's bytes ‖ method), so it answers exactly that call. A caller refuses a reply
//! without it — what answers at a master's address without the secret cannot order a chunkserver
//! to delete anything, nor tell a client where a file's chunks are. (Error statuses are not signed:
//! a forged one can only make a call fail, which whoever holds the address can do anyway.)

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};

/// Separates these MACs from the capability tokens the cluster key also signs (and from version 1,
/// whose credentials named neither method, nonce nor body).
const DOMAIN: &[u8] = b"edd-gfs/rpc/2";

/// Separates a master's reply signatures from the callers' credentials.
const REPLY_DOMAIN: &[u8] = b"edd-gfs/rpc-reply/2";

/// How far a credential's time may be from the master's clock (either way).
pub const SKEW: Duration = Duration::from_secs(30);

/// The shortest secret accepted (either kind): 128 bits.
pub const MIN_SECRET: usize = 16;

/// Response metadata key of a master's signature over its reply.
pub const REPLY_HEADER: &str = "x-gfs-reply-mac";

/// Nonces remembered at most (about 48 MiB); past it, calls are refused until some expire.
pub const MAX_NONCES: usize = 1 << 20;

const NONCE_LEN: usize = 16;
const DIGEST_LEN: usize = 32;
/// `Bearer ` and five dot-separated parts, the longest being three of hex.
const MAX_HEADER: usize = 256;

/// What a verified caller is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A chunkserver or master of this cluster (cluster key).
    Peer,
    /// A GFS client (client secret).
    Client,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Client => "client",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("a GFS secret of {len} bytes is too short (at least {MIN_SECRET})")]
    WeakSecret { len: usize },
}

/// Why a master refused a credential (for its log; the caller only sees `UNAUTHENTICATED`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("no credential, or not one of this protocol")]
    Malformed,
    #[error("the credential's time is more than {SKEW:?} away")]
    Expired,
    #[error("the credential does not verify for this method")]
    BadMac,
    #[error("the credential was already used")]
    Replayed,
    #[error("too many credentials in use at once")]
    Busy,
}

/// A secret and the role it proves: signs each call, and checks the master's reply to it.
pub struct Credential {
    role: Role,
    key: hmac::Key,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").field("role", &self.role).finish_non_exhaustive()
    }
}

/// One signed call: its `authorization` header, and what its reply must be signed for.
#[derive(Clone, Debug)]
pub struct SignedCall {
    header: String,
    method: String,
    nonce: [u8; NONCE_LEN],
}

impl SignedCall {
    /// The `authorization` header value.
    pub fn header(&self) -> &str {
        &self.header
    }
}

impl Credential {
    pub fn new(role: Role, secret: &[u8]) -> Result<Credential, CredentialError> {
        if secret.len() < MIN_SECRET {
            return Err(CredentialError::WeakSecret { len: secret.len() });
        }
        Ok(Credential { role, key: hmac::Key::new(hmac::HMAC_SHA256, secret) })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Signs a call made now of `method` (`Stat`, `Heartbeat`, …) whose request message encodes to
    /// `body`. Sign every attempt anew: the master accepts a credential once.
    pub fn sign(&self, method: &str, body: &[u8]) -> SignedCall {
        self.sign_at(method, body, SystemTime::now())
    }

    pub(crate) fn sign_at(&self, method: &str, body: &[u8], at: SystemTime) -> SignedCall {
        let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut nonce = [0u8; NONCE_LEN];
        // The system's generator does not fail on any platform this runs on; if it ever did, the
        // nonce would repeat and the master would refuse the second call as a replay — fail closed.
        let _ = SystemRandom::new().fill(&mut nonce);
        let digest = sha256(body);
        let tag = hmac::sign(&self.key, &call_message(self.role, secs, &nonce, &digest, method));
        SignedCall {
            header: format!(
                "Bearer {}.{secs}.{}.{}.{}",
                self.role.label(),
                hex(&nonce),
                hex(&digest),
                hex(tag.as_ref())
            ),
            method: method.to_owned(),
            nonce,
        }
    }

    /// Whether `mac` (the reply's [`REPLY_HEADER`]) signs `body` as the answer to `call`.
    pub fn verify_reply(&self, call: &SignedCall, mac: Option<&str>, body: &[u8]) -> bool {
        let Some(mac) = mac.and_then(unhex::<DIGEST_LEN>) else { return false };
        let message = reply_message(self.role, &call.nonce, &sha256(body), &call.method);
        hmac::verify(&self.key, &message, &mac).is_ok()
    }
}

/// A call whose credential verified: who made it, and what its body and reply must match.
#[derive(Clone)]
pub struct Verified {
    role: Role,
    nonce: [u8; NONCE_LEN],
    digest: [u8; DIGEST_LEN],
    method: String,
    key: hmac::Key,
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified").field("role", &self.role).field("method", &self.method).finish_non_exhaustive()
    }
}

impl Verified {
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether `body` is the request the credential was made for.
    pub fn covers(&self, body: &[u8]) -> bool {
        // Not secret (it travels in the header): a plain comparison will do.
        sha256(body) == self.digest
    }

    /// The [`REPLY_HEADER`] value for the reply `body`.
    pub fn sign_reply(&self, body: &[u8]) -> String {
        let tag = hmac::sign(&self.key, &reply_message(self.role, &self.nonce, &sha256(body), &self.method));
        hex(tag.as_ref())
    }
}

/// The master's side: the secrets it accepts, and the nonces already used.
#[derive(Debug)]
pub struct Authenticator {
    peer: Credential,
    client: Credential,
    seen: Mutex<Nonces>,
}

impl Authenticator {
    pub fn new(cluster_key: &[u8], client_secret: &[u8]) -> Result<Authenticator, CredentialError> {
        Ok(Authenticator {
            peer: Credential::new(Role::Peer, cluster_key)?,
            client: Credential::new(Role::Client, client_secret)?,
            seen: Mutex::default(),
        })
    }

    /// Checks the `authorization` header of a call of `method`, and uses its nonce up. The body is
    /// checked afterwards, with [`Verified::covers`].
    pub fn verify(&self, header: Option<&str>, method: &str) -> Result<Verified, Refused> {
        self.verify_at(header.ok_or(Refused::Malformed)?, method, SystemTime::now())
    }

    fn verify_at(&self, header: &str, method: &str, now: SystemTime) -> Result<Verified, Refused> {
        let value = header.strip_prefix("Bearer ").filter(|v| v.len() <= MAX_HEADER).ok_or(Refused::Malformed)?;
        let mut parts = value.split('.');
        let mut next = || parts.next().ok_or(Refused::Malformed);
        let (label, secs, nonce, digest, mac) = (next()?, next()?, next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(Refused::Malformed);
        }
        let credential = match label {
            "peer" => &self.peer,
            "client" => &self.client,
            _ => return Err(Refused::Malformed),
        };
        let secs: u64 = secs.parse().map_err(|_| Refused::Malformed)?;
        let nonce = unhex::<NONCE_LEN>(nonce).ok_or(Refused::Malformed)?;
        let digest = unhex::<DIGEST_LEN>(digest).ok_or(Refused::Malformed)?;
        let mac = unhex::<DIGEST_LEN>(mac).ok_or(Refused::Malformed)?;
        let now_secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if now_secs.abs_diff(secs) > SKEW.as_secs() {
            return Err(Refused::Expired);
        }
        hmac::verify(&credential.key, &call_message(credential.role, secs, &nonce, &digest, method), &mac)
            .map_err(|_| Refused::BadMac)?;
        // Remembered until the credential expires on this clock; only verified nonces are, so a
        // stranger cannot fill the set.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).insert(nonce, secs + SKEW.as_secs(), now_secs)?;
        Ok(Verified { role: credential.role, nonce, digest, method: method.to_owned(), key: credential.key.clone() })
    }
}

/// Nonces of credentials not yet expired, in the order they were used.
#[derive(Debug, Default)]
struct Nonces {
    expiry: HashMap<[u8; NONCE_LEN], u64>,
    order: VecDeque<([u8; NONCE_LEN], u64)>,
}

impl Nonces {
    fn insert(&mut self, nonce: [u8; NONCE_LEN], expires: u64, now: u64) -> Result<(), Refused> {
        while let Some(&(old, at)) = self.order.front() {
            if at >= now && self.order.len() < MAX_NONCES {
                break;
            }
            if at >= now {
                // Full of live nonces: refuse rather than forget one that could then be replayed.
                return Err(Refused::Busy);
            }
            self.order.pop_front();
            self.expiry.remove(&old);
        }
        if self.expiry.get(&nonce).is_some_and(|&at| at >= now) {
            return Err(Refused::Replayed);
        }
        self.expiry.insert(nonce, expires);
        self.order.push_back((nonce, expires));
        Ok(())
    }
}

fn call_message(role: Role, secs: u64, nonce: &[u8], digest: &[u8], method: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 64 + method.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(role.label().as_bytes());
    m.push(0);
    m.extend_from_slice(&secs.to_be_bytes());
    m.extend_from_slice(nonce);
    m.extend_from_slice(digest);
    m.extend_from_slice(method.as_bytes());
    m
}

fn reply_message(role: Role, nonce: &[u8], digest: &[u8], method: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(REPLY_DOMAIN.len() + 64 + method.len());
    m.extend_from_slice(REPLY_DOMAIN);
    m.extend_from_slice(role.label().as_bytes());
    m.push(0);
    m.extend_from_slice(nonce);
    m.extend_from_slice(digest);
    m.extend_from_slice(method.as_bytes());
    m
}

fn sha256(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &[u8] = b"cluster-key-0123456789";
    const CLIENT: &[u8] = b"client-secret-0123456789";

    #[test]
    fn each_secret_proves_its_own_role_and_nothing_else() {
        let auth = Authenticator::new(CLUSTER, CLIENT).expect("auth");
        let peer = Credential::new(Role::Peer, CLUSTER).expect("peer");
        let client = Credential::new(Role::Client, CLIENT).expect("client");
        let role = |header: &str| auth.verify(Some(header), "Stat").map(|v| v.role());
        assert_eq!(role(peer.sign("Stat", b"").header()), Ok(Role::Peer));
        assert_eq!(role(client.sign("Stat", b"").header()), Ok(Role::Client));

        // The client secret cannot claim the peer role, nor a wrong secret either role.
        let forged = Credential::new(Role::Peer, CLIENT).expect("forged");
        assert_eq!(role(forged.sign("Stat", b"").header()), Err(Refused::BadMac));
        let wrong = Credential::new(Role::Client, b"another-secret-0123456789").expect("wrong");
        assert_eq!(role(wrong.sign("Stat", b"").header()), Err(Refused::BadMac));
        assert_eq!(auth.verify(None, "Stat").map(|v| v.role()), Err(Refused::Malformed));
        assert_eq!(role("Bearer"), Err(Refused::Malformed));
        assert_eq!(role("Bearer peer.1.zz"), Err(Refused::Malformed));
        // The first version's shape (role, seconds, MAC) is no credential any more.
        assert_eq!(role(&format!("Bearer peer.1.{}", "0".repeat(64))), Err(Refused::Malformed));
        assert!(!format!("{peer:?}").contains("cluster"));
        assert!(matches!(Credential::new(Role::Peer, b"short"), Err(CredentialError::WeakSecret { len: 5 })));
    }

    #[test]
    fn a_credential_is_good_for_its_method_and_body_once_and_briefly() {
        let auth = Authenticator::new(CLUSTER, CLIENT).expect("auth");
        let client = Credential::new(Role::Client, CLIENT).expect("client");
        let call = client.sign("Stat", b"request");

        // Another method: refused before the body is read.
        assert_eq!(auth.verify(Some(call.header()), "DeleteFile").map(|v| v.role()), Err(Refused::BadMac));
        // Its own method: accepted, and it covers its own body only.
        let verified = auth.verify(Some(call.header()), "Stat").expect("verified");
        assert!(verified.covers(b"request"));
        assert!(!verified.covers(b"another request"));
        // Once.
        assert_eq!(auth.verify(Some(call.header()), "Stat").map(|v| v.role()), Err(Refused::Replayed));

        // A minute old (the first version allowed two): expired, either way.
        let now = SystemTime::now();
        let old = client.sign_at("Stat", b"request", now - SKEW - Duration::from_secs(1));
        assert_eq!(auth.verify(Some(old.header()), "Stat").map(|v| v.role()), Err(Refused::Expired));
        let early = client.sign_at("Stat", b"request", now + SKEW + Duration::from_secs(1));
        assert_eq!(auth.verify(Some(early.header()), "Stat").map(|v| v.role()), Err(Refused::Expired));
        let minute = client.sign_at("Stat", b"request", now - Duration::from_secs(60));
        assert_eq!(auth.verify(Some(minute.header()), "Stat").map(|v| v.role()), Err(Refused::Expired));
        let recent = client.sign_at("Stat", b"request", now - SKEW + Duration::from_secs(2));
        assert!(auth.verify(Some(recent.header()), "Stat").is_ok(), "within the window");
    }

    #[test]
    fn a_reply_is_signed_for_its_call_only() {
        let auth = Authenticator::new(CLUSTER, CLIENT).expect("auth");
        let peer = Credential::new(Role::Peer, CLUSTER).expect("peer");
        let call = peer.sign("Heartbeat", b"beat");
        let verified = auth.verify(Some(call.header()), "Heartbeat").expect("verified");
        let mac = verified.sign_reply(b"orders");
        assert!(peer.verify_reply(&call, Some(&mac), b"orders"));
        assert!(!peer.verify_reply(&call, Some(&mac), b"other orders"), "another reply");
        assert!(!peer.verify_reply(&call, None, b"orders"), "unsigned");
        assert!(!peer.verify_reply(&call, Some("00"), b"orders"), "malformed");
        let later = peer.sign("Heartbeat", b"beat");
        assert!(!peer.verify_reply(&later, Some(&mac), b"orders"), "an old reply to a new call");
        // The same call signed with another secret (the client secret, or a stranger's): refused.
        let client = Credential::new(Role::Client, CLIENT).expect("client");
        let theirs = Verified { key: client.key.clone(), ..verified.clone() };
        assert!(!peer.verify_reply(&call, Some(&theirs.sign_reply(b"orders")), b"orders"));
    }

    #[test]
    fn the_nonce_set_forgets_expired_nonces_and_refuses_when_full_of_live_ones() {
        let mut nonces = Nonces::default();
        nonces.insert([1; NONCE_LEN], 100, 10).expect("first");
        assert_eq!(nonces.insert([1; NONCE_LEN], 100, 50), Err(Refused::Replayed));
        // Expired: forgotten (the credential itself is refused as expired by then anyway).
        nonces.insert([2; NONCE_LEN], 200, 101).expect("second");
        assert_eq!(nonces.expiry.len(), 1);
        assert_eq!(nonces.order.len(), 1);
    }
}
