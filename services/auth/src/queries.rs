//! Reads from the `auth/accounts` projection, shaped as the API answers them.

use edd_events::catalog::auth::ScopeMap;
use serde::Serialize;
use sqlx::{postgres::PgRow, types::Json, PgPool, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::projection::SCHEMA;

/// Most rows a list answers with.
const LIST_LIMIT: i64 = 1000;

/// A user account.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(skip)]
    pub seq: i64,
}

fn user(row: PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        is_admin: row.try_get("is_admin")?,
        created_at: row.try_get("created_at")?,
        seq: row.try_get("seq")?,
    })
}

const USER_COLUMNS: &str = "user_id, username, display_name, is_admin, created_at, seq";

pub async fn user_by_id(pool: &PgPool, id: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query(&format!("SELECT {USER_COLUMNS} FROM {SCHEMA}.users WHERE user_id = $1 AND deleted_at IS NULL"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(user)
        .transpose()
}

pub async fn user_by_name(pool: &PgPool, username: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM {SCHEMA}.users WHERE lower(username) = lower($1) AND deleted_at IS NULL"
    ))
    .bind(username)
    .fetch_optional(pool)
    .await?
    .map(user)
    .transpose()
}

/// Whether a user with this id was ever created (deleted ones included).
pub async fn user_ever_existed(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i32> = sqlx::query_scalar(&format!("SELECT 1 FROM {SCHEMA}.users WHERE user_id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

pub async fn users(pool: &PgPool) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM {SCHEMA}.users WHERE deleted_at IS NULL ORDER BY created_at LIMIT {LIST_LIMIT}"
    ))
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(user)
    .collect()
}

/// An active login session.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    /// The session's user (in the administrators' list only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub username: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// The client address it was created from.
    #[schema(required = true)]
    pub ip: Option<String>,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// Whether this is the session making the request (always `false` in the administrators' list).
    pub current: bool,
    #[serde(skip)]
    pub revoked: bool,
    #[serde(skip)]
    pub seq: i64,
}

fn session(row: PgRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        id: row.try_get("session_id")?,
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        current: false,
        revoked: row.try_get::<Option<OffsetDateTime>, _>("revoked_at")?.is_some(),
        seq: row.try_get("seq")?,
    })
}

const SESSION_SELECT: &str =
    "SELECT s.session_id, s.user_id, u.username, s.created_at, s.expires_at, s.ip, s.user_agent, s.revoked_at, s.seq";

pub async fn session_by_id(pool: &PgPool, id: &str) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query(&format!(
        "{SESSION_SELECT} FROM {SCHEMA}.sessions s LEFT JOIN {SCHEMA}.users u USING (user_id) WHERE s.session_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .map(session)
    .transpose()
}

/// How many active sessions `user_id` has, `keep` aside (all of them, not a page).
pub async fn count_active_sessions(pool: &PgPool, user_id: &str, keep: Option<&str>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {SCHEMA}.sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() AND session_id IS DISTINCT FROM $2"
    ))
    .bind(user_id)
    .bind(keep)
    .fetch_one(pool)
    .await
}

/// Active sessions: of one user, or of everyone (`None`, admin view).
pub async fn active_sessions(pool: &PgPool, user_id: Option<&str>) -> Result<Vec<Session>, sqlx::Error> {
    sqlx::query(&format!(
        "{SESSION_SELECT} FROM {SCHEMA}.sessions s JOIN {SCHEMA}.users u USING (user_id)
         WHERE ($1::text IS NULL OR s.user_id = $1) AND s.revoked_at IS NULL AND s.expires_at > now()
           AND u.deleted_at IS NULL
         ORDER BY s.created_at DESC LIMIT {LIST_LIMIT}"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(session)
    .collect()
}

/// A service account: a named identity with scopes, for programs.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ServiceAccount {
    pub id: String,
    pub name: String,
    /// Scope → allowed actions, e.g. `"storage.u1.files": ["read"]`; its tokens act with these.
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    pub scopes: ScopeMap,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// How many live tokens it has.
    pub token_count: i64,
    #[serde(skip)]
    pub version: i64,
    #[serde(skip)]
    pub seq: i64,
}

fn service_account(row: PgRow) -> Result<ServiceAccount, sqlx::Error> {
    let Json(scopes): Json<ScopeMap> = row.try_get("scopes")?;
    Ok(ServiceAccount {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scopes,
        created_at: row.try_get("created_at")?,
        token_count: row.try_get("token_count")?,
        version: row.try_get("version")?,
        seq: row.try_get("seq")?,
    })
}

const SA_SELECT: &str = "SELECT a.id, a.user_id, a.name, a.scopes, a.created_at, a.version, a.seq,
    (SELECT count(*) FROM auth_accounts.tokens t WHERE t.service_account_id = a.id AND t.revoked_at IS NULL) AS token_count";

/// A live service account owned by `owner`.
pub async fn service_account_of(pool: &PgPool, owner: &str, id: &str) -> Result<Option<ServiceAccount>, sqlx::Error> {
    sqlx::query(&format!(
        "{SA_SELECT} FROM {SCHEMA}.service_accounts a WHERE a.id = $1 AND a.user_id = $2 AND a.deleted_at IS NULL"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await?
    .map(service_account)
    .transpose()
}

pub async fn service_accounts_of(pool: &PgPool, owner: &str) -> Result<Vec<ServiceAccount>, sqlx::Error> {
    sqlx::query(&format!(
        "{SA_SELECT} FROM {SCHEMA}.service_accounts a WHERE a.user_id = $1 AND a.deleted_at IS NULL
         ORDER BY a.created_at LIMIT {LIST_LIMIT}"
    ))
    .bind(owner)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(service_account)
    .collect()
}

/// An API token, without its secret.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// A personal token's scopes: scope → allowed actions (absent on service-account tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, Vec<String>>>, nullable = false)]
    pub scopes: Option<ScopeMap>,
    /// The service account a service-account token acts as (absent on personal tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub service_account_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it stops working; `null` for a token that never expires.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(skip)]
    pub revoked: bool,
    #[serde(skip)]
    pub seq: i64,
}

fn token(row: PgRow) -> Result<TokenInfo, sqlx::Error> {
    let scopes: Option<Json<ScopeMap>> = row.try_get("scopes")?;
    Ok(TokenInfo {
        id: row.try_get("token_id")?,
        name: row.try_get("name")?,
        scopes: scopes.map(|j| j.0),
        service_account_id: row.try_get("service_account_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked: row.try_get::<Option<OffsetDateTime>, _>("revoked_at")?.is_some(),
        seq: row.try_get("seq")?,
    })
}

const TOKEN_SELECT: &str =
    "SELECT token_id, name, scopes, service_account_id, created_at, expires_at, revoked_at, seq FROM auth_accounts.tokens";

/// A token owned by `owner`, revoked or not.
pub async fn token_of(pool: &PgPool, owner: &str, id: &str) -> Result<Option<TokenInfo>, sqlx::Error> {
    sqlx::query(&format!("{TOKEN_SELECT} WHERE token_id = $1 AND owner = $2"))
        .bind(id)
        .bind(owner)
        .fetch_optional(pool)
        .await?
        .map(token)
        .transpose()
}

/// Live tokens of `owner`: personal ones (`service_account` is `None`) or one service account's.
pub async fn tokens_of(
    pool: &PgPool,
    owner: &str,
    service_account: Option<&str>,
) -> Result<Vec<TokenInfo>, sqlx::Error> {
    sqlx::query(&format!(
        "{TOKEN_SELECT} WHERE owner = $1 AND service_account_id IS NOT DISTINCT FROM $2 AND revoked_at IS NULL
         ORDER BY created_at LIMIT {LIST_LIMIT}"
    ))
    .bind(owner)
    .bind(service_account)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(token)
    .collect()
}

/// How many live tokens and service accounts `owner` has, for the per-user limits.
pub async fn counts(pool: &PgPool, owner: &str) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT (SELECT count(*) FROM {SCHEMA}.tokens WHERE owner = $1 AND revoked_at IS NULL) AS tokens,
                (SELECT count(*) FROM {SCHEMA}.service_accounts WHERE user_id = $1 AND deleted_at IS NULL) AS accounts"
    ))
    .bind(owner)
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("tokens")?, row.try_get("accounts")?))
}
