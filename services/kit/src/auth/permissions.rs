//! The permissions projection every service runs: from the `AUTH` stream it keeps what local
//! authorization needs — users (admin flag, deleted), API-token hashes, service-account scopes,
//! revoked sessions, each user's "sessions issued before T are void" [cutoff](super::cutoff) and the
//! public signing keys (revoked ones marked) — restricted to the service's own scope root.
//!
//! Every row carries `seq`, the stream sequence of the last event that touched it, so the
//! [`Authorizer`](super::Authorizer) can load only what changed since its last look.

use edd_events::{
    catalog::auth::{
        IdentityDeleted, IdentityUpdated, SessionRevoked, SessionsRevoked, SigningKeyAdded, SigningKeyRetired,
        SigningKeyRevoked, TokenCreated, TokenRevoked, UserCreated, UserDeleted, UserUpdated,
    },
    RawEvent,
};
use edd_projections::{ApplyError, Outcome, Projection};
use futures_util::future::BoxFuture;
use sqlx::{types::Json, PgConnection, Row};

use super::{cutoff::Cutoff, scope};

/// The subjects the projection reads.
pub const FILTERS: &[&str] =
    &["auth.user.>", "auth.session.*.revoked", "auth.identity.>", "auth.token.>", "auth.key.>"];

/// `<service>/permissions`, keeping scopes under `root` (all scopes when `None`, as auth does).
#[derive(Clone, Copy, Debug)]
pub struct PermissionsProjection {
    pub name: &'static str,
    pub root: Option<&'static str>,
}

impl PermissionsProjection {
    pub const fn new(name: &'static str, root: Option<&'static str>) -> Self {
        Self { name, root }
    }
}

const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE users (
    user_id text PRIMARY KEY,
    is_admin boolean NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    seq bigint NOT NULL
);
CREATE TABLE service_accounts (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    scopes jsonb NOT NULL,
    version bigint NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    seq bigint NOT NULL
);
CREATE TABLE tokens (
    token_id text PRIMARY KEY,
    sha256 text NOT NULL UNIQUE,
    owner text NOT NULL,
    service_account_id text,
    scopes jsonb,
    expires_at timestamptz,
    revoked boolean NOT NULL DEFAULT false,
    seq bigint NOT NULL
);
CREATE TABLE revoked_sessions (
    session_id text PRIMARY KEY,
    user_id text NOT NULL,
    expires_at timestamptz NOT NULL,
    seq bigint NOT NULL
);
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    alg text NOT NULL,
    public_key text NOT NULL,
    accept_until timestamptz,
    seq bigint NOT NULL
);
CREATE INDEX users_seq ON users (seq);
CREATE INDEX service_accounts_seq ON service_accounts (seq);
CREATE INDEX tokens_seq ON tokens (seq);
CREATE INDEX revoked_sessions_seq ON revoked_sessions (seq);
CREATE INDEX signing_keys_seq ON signing_keys (seq);
",
    "
ALTER TABLE signing_keys ADD COLUMN revoked boolean NOT NULL DEFAULT false;
CREATE TABLE session_cutoffs (
    user_id text PRIMARY KEY,
    before bigint NOT NULL,
    keep text,
    keep_floor bigint NOT NULL,
    seq bigint NOT NULL
);
CREATE INDEX session_cutoffs_seq ON session_cutoffs (seq);
",
];

impl Projection for PermissionsProjection {
    fn name(&self) -> &'static str {
        self.name
    }
    fn stream(&self) -> &'static str {
        "AUTH"
    }
    fn filters(&self) -> Vec<String> {
        FILTERS.iter().map(|f| f.to_string()).collect()
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RawEvent,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(apply(self.root, tx, event))
    }
}

async fn apply(root: Option<&'static str>, tx: &mut PgConnection, event: &RawEvent) -> Result<Outcome, ApplyError> {
    let seq = event.stream_seq as i64;
    if event.is::<UserCreated>() || event.is::<UserUpdated>() {
        let (user_id, is_admin) = if event.is::<UserCreated>() {
            let e: UserCreated = event.decode()?;
            (e.user_id, e.is_admin)
        } else {
            let e: UserUpdated = event.decode()?;
            (e.user_id, e.is_admin)
        };
        sqlx::query(
            "INSERT INTO users (user_id, is_admin, seq) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET is_admin = EXCLUDED.is_admin, seq = EXCLUDED.seq",
        )
        .bind(user_id.as_str())
        .bind(is_admin)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<UserDeleted>() {
        let e: UserDeleted = event.decode()?;
        sqlx::query(
            "INSERT INTO users (user_id, is_admin, deleted, seq) VALUES ($1, false, true, $2)
             ON CONFLICT (user_id) DO UPDATE SET is_admin = false, deleted = true, seq = EXCLUDED.seq",
        )
        .bind(e.user_id.as_str())
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<SessionRevoked>() {
        let e: SessionRevoked = event.decode()?;
        sqlx::query(
            "INSERT INTO revoked_sessions (session_id, user_id, expires_at, seq) VALUES ($1, $2, $3, $4)
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(e.session_id.as_str())
        .bind(e.user_id.as_str())
        .bind(e.expires_at)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<SessionsRevoked>() {
        let e: SessionsRevoked = event.decode()?;
        let row = sqlx::query("SELECT before, keep, keep_floor FROM session_cutoffs WHERE user_id = $1 FOR UPDATE")
            .bind(e.user_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let mut cutoff = Cutoff::of_event(e.before, e.keep.map(String::from));
        if let Some(row) = row {
            let stored = Cutoff { before: row.try_get(0)?, keep: row.try_get(1)?, keep_floor: row.try_get(2)? };
            cutoff = stored.merge(cutoff);
        }
        sqlx::query(
            "INSERT INTO session_cutoffs (user_id, before, keep, keep_floor, seq) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id) DO UPDATE SET before = EXCLUDED.before, keep = EXCLUDED.keep,
                 keep_floor = EXCLUDED.keep_floor, seq = EXCLUDED.seq",
        )
        .bind(e.user_id.as_str())
        .bind(cutoff.before)
        .bind(cutoff.keep)
        .bind(cutoff.keep_floor)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<IdentityUpdated>() {
        let e: IdentityUpdated = event.decode()?;
        sqlx::query(
            "INSERT INTO service_accounts (id, user_id, scopes, version, seq) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET scopes = EXCLUDED.scopes, version = EXCLUDED.version, seq = EXCLUDED.seq
             WHERE service_accounts.version < EXCLUDED.version AND NOT service_accounts.deleted",
        )
        .bind(e.service_account_id.as_str())
        .bind(e.user_id.as_str())
        .bind(Json(scope::restrict(&e.scopes, root)))
        .bind(e.version as i64)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<IdentityDeleted>() {
        let e: IdentityDeleted = event.decode()?;
        sqlx::query(
            "INSERT INTO service_accounts (id, user_id, scopes, version, deleted, seq) VALUES ($1, $2, '{}', $3, true, $4)
             ON CONFLICT (id) DO UPDATE SET deleted = true, scopes = '{}', seq = EXCLUDED.seq",
        )
        .bind(e.service_account_id.as_str())
        .bind(e.user_id.as_str())
        .bind(e.version as i64)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<TokenCreated>() {
        let e: TokenCreated = event.decode()?;
        sqlx::query(
            "INSERT INTO tokens (token_id, sha256, owner, service_account_id, scopes, expires_at, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (token_id) DO NOTHING",
        )
        .bind(e.token_id.as_str())
        .bind(&e.sha256)
        .bind(e.owner.as_str())
        .bind(e.service_account_id.as_ref().map(|t| t.as_str()))
        .bind(e.scopes.as_ref().map(|s| Json(scope::restrict(s, root))))
        .bind(e.expires_at)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<TokenRevoked>() {
        let e: TokenRevoked = event.decode()?;
        sqlx::query("UPDATE tokens SET revoked = true, seq = $2 WHERE token_id = $1")
            .bind(e.token_id.as_str())
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    } else if event.is::<SigningKeyAdded>() {
        let e: SigningKeyAdded = event.decode()?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, public_key, seq) VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING",
        )
        .bind(e.kid.as_str())
        .bind(&e.alg)
        .bind(&e.public_key)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<SigningKeyRetired>() {
        let e: SigningKeyRetired = event.decode()?;
        sqlx::query("UPDATE signing_keys SET accept_until = $2, seq = $3 WHERE kid = $1")
            .bind(e.kid.as_str())
            .bind(e.accept_until)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    } else if event.is::<SigningKeyRevoked>() {
        let e: SigningKeyRevoked = event.decode()?;
        sqlx::query("UPDATE signing_keys SET revoked = true, seq = $2 WHERE kid = $1")
            .bind(e.kid.as_str())
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    } else {
        return Ok(Outcome::Skipped);
    }
    Ok(Outcome::Applied)
}
