//! Who may talk to the master: chunkservers and masters prove they hold the cluster key, clients (the
//! storage, registry and logs services, `edd gfs`) prove they hold the client secret. Neither secret
//! travels: a call carries `authorization: Bearer <role>.<unix seconds>.<hex HMAC-SHA256(secret,
//! domain ‖ role ‖ seconds)>`, accepted within [`SKEW`] of the master's clock, so a captured header is
//! worthless minutes later. A call without a valid credential is answered `UNAUTHENTICATED` and
//! nothing else.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

/// Separates these MACs from the capability tokens the cluster key also signs.
const DOMAIN: &[u8] = b"edd-gfs/rpc/1";

/// How far a credential's time may be from the master's clock.
pub const SKEW: Duration = Duration::from_secs(120);

/// The shortest secret accepted (either kind): 128 bits.
pub const MIN_SECRET: usize = 16;

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

/// A secret and the role it proves; makes the `authorization` header for each call.
pub struct Credential {
    role: Role,
    key: hmac::Key,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").field("role", &self.role).finish_non_exhaustive()
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

    /// The `authorization` header value for a call made now.
    pub fn header(&self) -> String {
        self.header_at(SystemTime::now())
    }

    fn header_at(&self, at: SystemTime) -> String {
        let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let tag = hmac::sign(&self.key, &message(self.role, secs));
        format!("Bearer {}.{secs}.{}", self.role.label(), hex(tag.as_ref()))
    }

    fn verify(&self, secs: u64, mac: &[u8]) -> bool {
        hmac::verify(&self.key, &message(self.role, secs), mac).is_ok()
    }
}

/// The master's side: the secrets it accepts.
#[derive(Debug)]
pub struct Authenticator {
    peer: Credential,
    client: Credential,
}

impl Authenticator {
    pub fn new(cluster_key: &[u8], client_secret: &[u8]) -> Result<Authenticator, CredentialError> {
        Ok(Authenticator {
            peer: Credential::new(Role::Peer, cluster_key)?,
            client: Credential::new(Role::Client, client_secret)?,
        })
    }

    /// The role an `authorization` header proves, if any.
    pub fn verify(&self, header: Option<&str>) -> Option<Role> {
        self.verify_at(header?, SystemTime::now())
    }

    fn verify_at(&self, header: &str, now: SystemTime) -> Option<Role> {
        let value = header.strip_prefix("Bearer ")?;
        if value.len() > 128 {
            return None;
        }
        let mut parts = value.splitn(3, '.');
        let (label, secs, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let credential = match label {
            "peer" => &self.peer,
            "client" => &self.client,
            _ => return None,
        };
        let secs: u64 = secs.parse().ok()?;
        let at = UNIX_EPOCH + Duration::from_secs(secs);
        let skew = now.duration_since(at).or_else(|e| Ok::<_, ()>(e.duration())).ok()?;
        if skew > SKEW {
            return None;
        }
        credential.verify(secs, &unhex(mac)?).then_some(credential.role)
    }
}

fn message(role: Role, secs: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 16);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(role.label().as_bytes());
    m.push(0);
    m.extend_from_slice(&secs.to_be_bytes());
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
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
        assert_eq!(auth.verify(Some(&peer.header())), Some(Role::Peer));
        assert_eq!(auth.verify(Some(&client.header())), Some(Role::Client));

        // The client secret cannot claim the peer role, nor a wrong secret either role.
        let forged = Credential::new(Role::Peer, CLIENT).expect("forged");
        assert_eq!(auth.verify(Some(&forged.header())), None);
        let wrong = Credential::new(Role::Client, b"another-secret-0123456789").expect("wrong");
        assert_eq!(auth.verify(Some(&wrong.header())), None);
        assert_eq!(auth.verify(None), None);
        assert_eq!(auth.verify(Some("Bearer")), None);
        assert_eq!(auth.verify(Some("Bearer peer.1.zz")), None);

        // A captured header stops working once it is older than the allowed skew.
        let old = peer.header_at(SystemTime::now() - SKEW - Duration::from_secs(5));
        assert_eq!(auth.verify(Some(&old)), None);
        assert!(!format!("{peer:?}").contains("cluster"));
        assert!(matches!(Credential::new(Role::Peer, b"short"), Err(CredentialError::WeakSecret { len: 5 })));
    }
}
