//! Events of the auth service (stream `AUTH`): users, sessions, service accounts, API tokens, and the
//! uniqueness claims that keep usernames unique without a central lock.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::aggregate_event;
use crate::subject::{Aggregate, Subject, Token};

/// Scope → allowed actions, e.g. `"storage.u1.files": ["read"]`.
pub type ScopeMap = BTreeMap<String, Vec<String>>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserCreated {
    pub user_id: Token,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
}
aggregate_event!(
    UserCreated,
    "auth.user.created.v1",
    "AUTH",
    "auth.user.{user_id}.created",
    "A user account was created.",
    ["auth", "user"],
    user_id,
    "created"
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserUpdated {
    pub user_id: Token,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
}
aggregate_event!(
    UserUpdated,
    "auth.user.updated.v1",
    "AUTH",
    "auth.user.{user_id}.updated",
    "A user's profile or admin flag changed; carries the full new state.",
    ["auth", "user"],
    user_id,
    "updated"
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserDeleted {
    pub user_id: Token,
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub is_admin: bool,
}
aggregate_event!(
    UserDeleted,
    "auth.user.deleted.v1",
    "AUTH",
    "auth.user.{user_id}.deleted",
    "A user account was deleted; services remove what the user owned.",
    ["auth", "user"],
    user_id,
    "deleted"
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionCreated {
    pub session_id: Token,
    pub user_id: Token,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub expires_at: OffsetDateTime,
    /// Where the login came from, for the user's session list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}
aggregate_event!(
    SessionCreated,
    "auth.session.created.v1",
    "AUTH",
    "auth.session.{session_id}.created",
    "A login created a session (JWT `sid`).",
    ["auth", "session"],
    session_id,
    "created"
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRevoked {
    pub session_id: Token,
    pub user_id: Token,
    /// Services keep the revocation until the session would have expired anyway.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub expires_at: OffsetDateTime,
}
aggregate_event!(
    SessionRevoked,
    "auth.session.revoked.v1",
    "AUTH",
    "auth.session.{session_id}.revoked",
    "A session was logged out or revoked; its token stops working everywhere.",
    ["auth", "session"],
    session_id,
    "revoked"
);

/// Every session of a user issued before `before` is revoked at once, whatever their number: one
/// event, which services keep as a per-user watermark ("sessions issued before T are void") rather
/// than one revocation per session. `keep` names one session that survives (the one that changed
/// the password); a later event without it ends that one too.
///
/// `before` is compared with a session token's `iat` (whole seconds): a token is void when
/// `iat < before`. The auth service picks the next whole second and answers only once the clock has
/// passed it, so every token issued before the request is void and every one issued after it the
/// request was answered is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionsRevoked {
    pub user_id: Token,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub before: OffsetDateTime,
    /// The one session spared, if any (a password change keeps the caller's own session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Token>,
}
aggregate_event!(
    SessionsRevoked,
    "auth.user.sessions_revoked.v1",
    "AUTH",
    "auth.user.{user_id}.sessions_revoked",
    "Every session of a user issued before `before` (but `keep`) was revoked; one event for all of them.",
    ["auth", "user"],
    user_id,
    "sessions_revoked"
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityUpdated {
    pub service_account_id: Token,
    pub user_id: Token,
    pub name: String,
    pub scopes: ScopeMap,
    /// Increases with every change, so a consumer can ignore stale updates.
    pub version: u64,
}
aggregate_event!(
    IdentityUpdated,
    "auth.identity.updated.v1",
    "AUTH",
    "auth.identity.{service_account_id}.updated",
    "A service account was created or its scopes changed; carries the full scope map.",
    ["auth", "identity"],
    service_account_id,
    "updated"
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityDeleted {
    pub service_account_id: Token,
    pub user_id: Token,
    pub version: u64,
}
aggregate_event!(
    IdentityDeleted,
    "auth.identity.deleted.v1",
    "AUTH",
    "auth.identity.{service_account_id}.deleted",
    "A service account was deleted; its tokens stop working.",
    ["auth", "identity"],
    service_account_id,
    "deleted"
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenCreated {
    pub token_id: Token,
    /// The user who owns the token.
    pub owner: Token,
    /// What the owner called it.
    #[serde(default)]
    pub name: String,
    /// Hex SHA-256 of the opaque token; the token itself never enters the log.
    pub sha256: String,
    /// Scopes of a personal token; absent when the token acts for a service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<ScopeMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_id: Option<Token>,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<OffsetDateTime>,
}
aggregate_event!(
    TokenCreated,
    "auth.token.created.v1",
    "AUTH",
    "auth.token.{token_id}.created",
    "An API token was issued (only its SHA-256 is recorded).",
    ["auth", "token"],
    token_id,
    "created"
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenRevoked {
    pub token_id: Token,
    pub owner: Token,
}
aggregate_event!(
    TokenRevoked,
    "auth.token.revoked.v1",
    "AUTH",
    "auth.token.{token_id}.revoked",
    "An API token was revoked.",
    ["auth", "token"],
    token_id,
    "revoked"
);

/// A new session-signing key. Services accept JWTs whose header names `kid` once this arrives; the
/// private half never leaves the auth service's database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SigningKeyAdded {
    pub kid: Token,
    /// JWS algorithm; `EdDSA` (Ed25519).
    pub alg: String,
    /// The raw 32-byte Ed25519 public key, base64url without padding (the JWK `x`).
    pub public_key: String,
}
aggregate_event!(
    SigningKeyAdded,
    "auth.key.added.v1",
    "AUTH",
    "auth.key.{kid}.added",
    "A session-signing key was added; its public half verifies new session tokens.",
    ["auth", "key"],
    kid,
    "added"
);

/// A key that signs no more tokens. Tokens it signed stay valid until `accept_until` (the rotation
/// time plus the longest session lifetime), after which services forget the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SigningKeyRetired {
    pub kid: Token,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub accept_until: OffsetDateTime,
}
aggregate_event!(
    SigningKeyRetired,
    "auth.key.retired.v1",
    "AUTH",
    "auth.key.{kid}.retired",
    "A session-signing key was rotated out; tokens it signed work until `accept_until`.",
    ["auth", "key"],
    kid,
    "retired"
);

/// A session-signing key revoked at once (a compromise): every token it signed stops working
/// everywhere, cached or not, and it never verifies again. Unlike [`SigningKeyRetired`] there is no
/// grace; the auth service rotates first when the key was the active one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SigningKeyRevoked {
    pub kid: Token,
}
aggregate_event!(
    SigningKeyRevoked,
    "auth.key.revoked.v1",
    "AUTH",
    "auth.key.{kid}.revoked",
    "A session-signing key was revoked; every token it signed stops working at once.",
    ["auth", "key"],
    kid,
    "revoked"
);

/// A uniqueness claim: the first `ClaimMade` on `auth.claim.{kind}.{key}` wins, because it is appended
/// with "no earlier event on this exact subject". The key is the hex of the normalized value, so any
/// value (dots, capitals, unicode) maps to one subject-safe token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClaimMade {
    /// What is claimed, e.g. `username`.
    pub kind: Token,
    /// The claimed value as the user wrote it.
    pub value: String,
    /// Who holds it (a user id, a namespace id, …).
    pub owner: String,
}

/// Gives a claimed value back, so a later claim may take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClaimReleased {
    pub kind: Token,
    pub value: String,
    pub owner: String,
}

/// The subject-safe key of a claimed value: lowercase hex of its lowercased UTF-8 bytes. Claims are
/// case-insensitive so `Ada` and `ada` cannot both exist.
pub fn claim_key(value: &str) -> String {
    value.to_lowercase().bytes().map(|b| format!("{b:02x}")).collect()
}

fn claim_subject(kind: &Token, value: &str, verb: &str) -> Subject {
    Subject::from_parts(&["auth", "claim", kind.as_str(), &claim_key(value), verb])
}

impl super::Event for ClaimMade {
    const TYPE: &'static str = "auth.claim.made.v1";
    const STREAM: &'static str = "AUTH";
    const SUBJECT_PATTERN: &'static str = "auth.claim.{kind}.{hex(value)}.made";
    const SUMMARY: &'static str = "A unique name was claimed; the first claim on a subject wins.";
    fn subject(&self) -> Subject {
        claim_subject(&self.kind, &self.value, "made")
    }
    fn aggregate(&self) -> Option<Aggregate> {
        Some(Aggregate::from_parts(&["auth", "claim", self.kind.as_str(), &claim_key(&self.value)]))
    }
    fn aggregate_id(&self) -> Option<String> {
        Some(claim_key(&self.value))
    }
}

impl super::Event for ClaimReleased {
    const TYPE: &'static str = "auth.claim.released.v1";
    const STREAM: &'static str = "AUTH";
    const SUBJECT_PATTERN: &'static str = "auth.claim.{kind}.{hex(value)}.released";
    const SUMMARY: &'static str = "A claimed name was given back.";
    fn subject(&self) -> Subject {
        claim_subject(&self.kind, &self.value, "released")
    }
    fn aggregate(&self) -> Option<Aggregate> {
        Some(Aggregate::from_parts(&["auth", "claim", self.kind.as_str(), &claim_key(&self.value)]))
    }
    fn aggregate_id(&self) -> Option<String> {
        Some(claim_key(&self.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Event;

    #[test]
    fn subjects_follow_the_contract() {
        let u = UserCreated {
            user_id: Token::new("u1").unwrap(),
            username: "ada".into(),
            display_name: "Ada".into(),
            is_admin: false,
        };
        assert_eq!(u.subject().as_str(), "auth.user.u1.created");
        assert_eq!(u.aggregate().unwrap().filter(), "auth.user.u1.>");
        // Revoking all sessions is part of the user's aggregate, and one subject per user.
        let all =
            SessionsRevoked { user_id: Token::new("u1").unwrap(), before: OffsetDateTime::UNIX_EPOCH, keep: None };
        assert_eq!(all.subject().as_str(), "auth.user.u1.sessions_revoked");
        assert_eq!(all.aggregate().unwrap().filter(), "auth.user.u1.>");
        let key = SigningKeyRevoked { kid: Token::new("k1").unwrap() };
        assert_eq!(key.subject().as_str(), "auth.key.k1.revoked");
    }

    #[test]
    fn claim_keys_are_case_insensitive_and_subject_safe() {
        assert_eq!(claim_key("Ada"), claim_key("ada"));
        assert!(Token::new(claim_key("a.b*c> d")).is_ok());
        let c = ClaimMade { kind: Token::new("username").unwrap(), value: "Ada".into(), owner: "u1".into() };
        assert_eq!(c.subject().as_str(), "auth.claim.username.616461.made");
        assert_eq!(c.aggregate().unwrap().filter(), "auth.claim.username.616461.>");
    }
}
