//! The auth service's private tables (schema `auth_private`): password hashes and signing keys.
//!
//! These are deliberately *not* projections: secrets never enter the event log, so they cannot be
//! rebuilt by replay. Back up `auth_db` for them; everything else in it can be replayed.

use sqlx::{PgPool, Row};

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS auth_private;
CREATE TABLE IF NOT EXISTS auth_private.credentials (
    user_id text PRIMARY KEY,
    phc text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS auth_private.signing_keys (
    kid text PRIMARY KEY,
    pkcs8 bytea NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'active', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_key ON auth_private.signing_keys (state) WHERE state = 'active';
";

/// Serializes schema creation and key creation between replicas.
const LOCK: i64 = 0x6564_645f_6175_7468; // "edd_auth"

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCK).execute(&mut *tx).await?;
    sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(SCHEMA)).await?;
    tx.commit().await
}

pub async fn set_password(pool: &PgPool, user_id: &str, phc: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO auth_private.credentials (user_id, phc) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET phc = EXCLUDED.phc, updated_at = now()",
    )
    .bind(user_id)
    .bind(phc)
    .execute(pool)
    .await
    .map(drop)
}

pub async fn password(pool: &PgPool, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT phc FROM auth_private.credentials WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

pub async fn delete_password(pool: &PgPool, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM auth_private.credentials WHERE user_id = $1").bind(user_id).execute(pool).await.map(drop)
}

/// A stored private key.
pub struct StoredKey {
    pub kid: String,
    pub pkcs8: Vec<u8>,
}

fn stored(row: sqlx::postgres::PgRow) -> Result<StoredKey, sqlx::Error> {
    Ok(StoredKey { kid: row.try_get("kid")?, pkcs8: row.try_get("pkcs8")? })
}

pub async fn active_key(pool: &PgPool) -> Result<Option<StoredKey>, sqlx::Error> {
    sqlx::query("SELECT kid, pkcs8 FROM auth_private.signing_keys WHERE state = 'active'")
        .fetch_optional(pool)
        .await?
        .map(stored)
        .transpose()
}

/// The active key, after storing `candidate` as active if there is none (first start).
pub async fn ensure_active_key(pool: &PgPool, candidate: StoredKey) -> Result<StoredKey, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCK).execute(&mut *tx).await?;
    let existing = sqlx::query("SELECT kid, pkcs8 FROM auth_private.signing_keys WHERE state = 'active'")
        .fetch_optional(&mut *tx)
        .await?;
    let key = match existing {
        Some(row) => stored(row)?,
        None => {
            sqlx::query("INSERT INTO auth_private.signing_keys (kid, pkcs8, state) VALUES ($1, $2, 'active')")
                .bind(&candidate.kid)
                .bind(&candidate.pkcs8)
                .execute(&mut *tx)
                .await?;
            candidate
        }
    };
    tx.commit().await?;
    Ok(key)
}

/// The state of key `kid` (`pending`, `active` or `retired`), if it is ours.
pub async fn key_state(pool: &PgPool, kid: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT state FROM auth_private.signing_keys WHERE kid = $1")
        .bind(kid)
        .fetch_optional(pool)
        .await
}

pub async fn insert_pending_key(pool: &PgPool, key: &StoredKey) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO auth_private.signing_keys (kid, pkcs8, state) VALUES ($1, $2, 'pending')")
        .bind(&key.kid)
        .bind(&key.pkcs8)
        .execute(pool)
        .await
        .map(drop)
}

/// Makes `kid` the active key and retires the previous one, whose kid is returned.
pub async fn activate_key(pool: &PgPool, kid: &str) -> Result<Option<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCK).execute(&mut *tx).await?;
    let old: Option<String> = sqlx::query_scalar(
        "UPDATE auth_private.signing_keys SET state = 'retired', retired_at = now() WHERE state = 'active' RETURNING kid",
    )
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query("UPDATE auth_private.signing_keys SET state = 'active' WHERE kid = $1")
        .bind(kid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(old)
}
