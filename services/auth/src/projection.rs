//! `auth/accounts`: the auth service's read model of users, sessions, service accounts and tokens.
//!
//! Each row keeps `seq`, the stream sequence of the last event of its aggregate, which a command
//! sends back as its expected sequence (optimistic concurrency). Times come from the events, so a
//! rebuild reproduces the tables exactly.

use edd_events::{
    catalog::auth::{
        IdentityDeleted, IdentityUpdated, SessionCreated, SessionRevoked, SessionsRevoked, TokenCreated, TokenRevoked,
        UserCreated, UserDeleted, UserUpdated,
    },
    RawEvent,
};
use edd_projections::{ApplyError, Outcome, Projection};
use futures_util::future::BoxFuture;
use sqlx::{types::Json, PgConnection};

pub const NAME: &str = "auth/accounts";
/// The schema holding its tables.
pub const SCHEMA: &str = "auth_accounts";

pub struct AccountsProjection;

const MIGRATIONS: &[&str] = &["
CREATE TABLE users (
    user_id text PRIMARY KEY,
    username text NOT NULL,
    display_name text NOT NULL,
    is_admin boolean NOT NULL,
    created_at timestamptz NOT NULL,
    deleted_at timestamptz,
    seq bigint NOT NULL
);
CREATE INDEX users_username ON users (lower(username)) WHERE deleted_at IS NULL;
CREATE TABLE sessions (
    session_id text PRIMARY KEY,
    user_id text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    ip text,
    user_agent text,
    seq bigint NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id, created_at);
CREATE TABLE service_accounts (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    name text NOT NULL,
    scopes jsonb NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    deleted_at timestamptz,
    seq bigint NOT NULL
);
CREATE INDEX service_accounts_user ON service_accounts (user_id);
CREATE TABLE tokens (
    token_id text PRIMARY KEY,
    owner text NOT NULL,
    service_account_id text,
    name text NOT NULL,
    scopes jsonb,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    seq bigint NOT NULL
);
CREATE INDEX tokens_owner ON tokens (owner);
"];

impl Projection for AccountsProjection {
    fn name(&self) -> &'static str {
        NAME
    }
    fn stream(&self) -> &'static str {
        "AUTH"
    }
    fn filters(&self) -> Vec<String> {
        ["auth.user.>", "auth.session.>", "auth.identity.>", "auth.token.>"].map(String::from).to_vec()
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RawEvent,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(apply(tx, event))
    }
}

async fn apply(tx: &mut PgConnection, event: &RawEvent) -> Result<Outcome, ApplyError> {
    let seq = event.stream_seq as i64;
    let at = event.envelope.time;
    if event.is::<UserCreated>() {
        let e: UserCreated = event.decode()?;
        sqlx::query(
            "INSERT INTO users (user_id, username, display_name, is_admin, created_at, seq) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(e.user_id.as_str())
        .bind(&e.username)
        .bind(&e.display_name)
        .bind(e.is_admin)
        .bind(at)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<UserUpdated>() {
        let e: UserUpdated = event.decode()?;
        sqlx::query("UPDATE users SET display_name = $2, is_admin = $3, seq = $4 WHERE user_id = $1")
            .bind(e.user_id.as_str())
            .bind(&e.display_name)
            .bind(e.is_admin)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    } else if event.is::<UserDeleted>() {
        let e: UserDeleted = event.decode()?;
        sqlx::query("UPDATE users SET deleted_at = $2, seq = $3 WHERE user_id = $1")
            .bind(e.user_id.as_str())
            .bind(at)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    } else if event.is::<SessionCreated>() {
        let e: SessionCreated = event.decode()?;
        sqlx::query(
            "INSERT INTO sessions (session_id, user_id, created_at, expires_at, ip, user_agent, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(e.session_id.as_str())
        .bind(e.user_id.as_str())
        .bind(at)
        .bind(e.expires_at)
        .bind(&e.ip)
        .bind(&e.user_agent)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<SessionRevoked>() {
        let e: SessionRevoked = event.decode()?;
        sqlx::query("UPDATE sessions SET revoked_at = coalesce(revoked_at, $2), seq = $3 WHERE session_id = $1")
            .bind(e.session_id.as_str())
            .bind(at)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    } else if event.is::<SessionsRevoked>() {
        // One event for all of them. A session created after `before` (by the event's clock) stays
        // listed; services void by the token's own issue time, which is never later than that.
        let e: SessionsRevoked = event.decode()?;
        sqlx::query(
            "UPDATE sessions SET revoked_at = $2, seq = $3
             WHERE user_id = $1 AND revoked_at IS NULL AND created_at < $4 AND session_id IS DISTINCT FROM $5",
        )
        .bind(e.user_id.as_str())
        .bind(at)
        .bind(seq)
        .bind(e.before)
        .bind(e.keep.as_ref().map(|k| k.as_str()))
        .execute(&mut *tx)
        .await?;
        // Part of the user's aggregate: the user's next change expects this sequence.
        sqlx::query("UPDATE users SET seq = $2 WHERE user_id = $1")
            .bind(e.user_id.as_str())
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    } else if event.is::<IdentityUpdated>() {
        let e: IdentityUpdated = event.decode()?;
        sqlx::query(
            "INSERT INTO service_accounts (id, user_id, name, scopes, version, created_at, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, scopes = EXCLUDED.scopes,
                 version = EXCLUDED.version, seq = EXCLUDED.seq",
        )
        .bind(e.service_account_id.as_str())
        .bind(e.user_id.as_str())
        .bind(&e.name)
        .bind(Json(&e.scopes))
        .bind(e.version as i64)
        .bind(at)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<IdentityDeleted>() {
        let e: IdentityDeleted = event.decode()?;
        sqlx::query("UPDATE service_accounts SET deleted_at = $2, version = $3, seq = $4 WHERE id = $1")
            .bind(e.service_account_id.as_str())
            .bind(at)
            .bind(e.version as i64)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    } else if event.is::<TokenCreated>() {
        let e: TokenCreated = event.decode()?;
        sqlx::query(
            "INSERT INTO tokens (token_id, owner, service_account_id, name, scopes, created_at, expires_at, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (token_id) DO NOTHING",
        )
        .bind(e.token_id.as_str())
        .bind(e.owner.as_str())
        .bind(e.service_account_id.as_ref().map(|t| t.as_str()))
        .bind(&e.name)
        .bind(e.scopes.as_ref().map(Json))
        .bind(at)
        .bind(e.expires_at)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    } else if event.is::<TokenRevoked>() {
        let e: TokenRevoked = event.decode()?;
        sqlx::query("UPDATE tokens SET revoked_at = coalesce(revoked_at, $2), seq = $3 WHERE token_id = $1")
            .bind(e.token_id.as_str())
            .bind(at)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    } else {
        return Ok(Outcome::Skipped);
    }
    Ok(Outcome::Applied)
}
