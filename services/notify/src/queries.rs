//! Reads from the two projections. A notification is *read* when its id is at or below the user's
//! read-all watermark or has a read mark; it is *hidden* while a mute of the user matches it (same
//! category, and the mute has no scope or the same scope).

use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;

/// One inbox entry, as listed and as pushed live (the same JSON either way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Notification)]
pub struct Item {
    /// The notification's id: its sequence in the `NOTIFY` stream (newer ones have higher ids).
    #[schema(minimum = 1)]
    pub id: i64,
    pub title: String,
    pub message: String,
    /// Where the notification points, or `null`.
    #[schema(required = true)]
    pub link: Option<String>,
    /// What kind of notification it is (`storage`, `auth`, …), as mutes name it.
    pub category: String,
    /// What within the category it is about (a namespace, …), or `null`.
    #[schema(required = true)]
    pub scope: Option<String>,
    /// When it was published (RFC 3339, e.g. `2026-11-21T10:00:00.123456Z`).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Whether the user has read it (always `false` when pushed live).
    pub read: bool,
}

/// A mute as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Mute {
    pub category: String,
    /// The one scope muted, or `null`: the whole category.
    #[schema(required = true)]
    pub scope: Option<String>,
}

/// `n` is read for its owner.
const READ: &str = "(n.id <= coalesce((SELECT w.up_to FROM notify_state.watermarks w WHERE w.user_id = n.user_id), 0)
    OR EXISTS (SELECT 1 FROM notify_state.read_marks r WHERE r.user_id = n.user_id AND r.id = n.id))";

/// `n` is hidden by a mute of its owner.
const MUTED: &str = "EXISTS (SELECT 1 FROM notify_state.mutes m WHERE m.user_id = n.user_id
    AND m.category = n.category AND (m.scope IS NULL OR m.scope = n.scope))";

/// The user's visible notifications, newest first.
pub async fn list(pool: &PgPool, user_id: &str, limit: i64, offset: i64) -> Result<Vec<Item>, sqlx::Error> {
    type Row = (i64, String, String, Option<String>, String, Option<String>, OffsetDateTime, bool);
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT n.id, n.title, n.message, n.link, n.category, n.scope, n.created_at, {READ} AS read
         FROM notify_inbox.notifications n
         WHERE n.user_id = $1 AND NOT {MUTED}
         ORDER BY n.id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, title, message, link, category, scope, created_at, read)| Item {
            id,
            title,
            message,
            link,
            category,
            scope,
            created_at,
            read,
        })
        .collect())
}

/// How many visible notifications the user has not read.
pub async fn unread(pool: &PgPool, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM notify_inbox.notifications n WHERE n.user_id = $1 AND NOT {MUTED} AND NOT {READ}"
    ))
    .bind(user_id)
    .fetch_one(pool)
    .await
}

/// Whether notification `id` belongs to `user_id`, and if so whether it is read already.
pub async fn read_state(pool: &PgPool, user_id: &str, id: i64) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT {READ} FROM notify_inbox.notifications n WHERE n.id = $1 AND n.user_id = $2"))
        .bind(id)
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// The newest notification id the user has (read-all marks up to it), and whether any at or
/// below it is still unread.
pub async fn newest(pool: &PgPool, user_id: &str) -> Result<Option<(i64, bool)>, sqlx::Error> {
    let row: Option<(Option<i64>, bool)> = sqlx::query_as(&format!(
        "SELECT max(n.id), coalesce(bool_or(NOT {READ}), false) FROM notify_inbox.notifications n WHERE n.user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(max, unread)| max.map(|m| (m, unread))))
}

/// The user's mutes, by category then scope.
pub async fn mutes(pool: &PgPool, user_id: &str) -> Result<Vec<Mute>, sqlx::Error> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT category, scope FROM notify_state.mutes WHERE user_id = $1 ORDER BY category, scope NULLS FIRST",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(category, scope)| Mute { category, scope }).collect())
}

/// Every mute of the given users (all users when `None`), for the live fanout's copy.
pub async fn mutes_of(pool: &PgPool, users: Option<&[String]>) -> Result<Vec<(String, Mute)>, sqlx::Error> {
    let rows: Vec<(String, String, Option<String>)> = match users {
        Some(users) => {
            sqlx::query_as("SELECT user_id, category, scope FROM notify_state.mutes WHERE user_id = ANY($1)")
                .bind(users)
                .fetch_all(pool)
                .await?
        }
        None => sqlx::query_as("SELECT user_id, category, scope FROM notify_state.mutes").fetch_all(pool).await?,
    };
    Ok(rows.into_iter().map(|(user, category, scope)| (user, Mute { category, scope })).collect())
}

/// Users whose mutes changed after INBOX sequence `after`, and the newest such sequence.
pub async fn mute_changes(pool: &PgPool, after: i64) -> Result<(Vec<String>, i64), sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT user_id, seq FROM notify_state.mute_changes WHERE seq > $1")
        .bind(after)
        .fetch_all(pool)
        .await?;
    let newest = rows.iter().map(|(_, s)| *s).max().unwrap_or(after);
    Ok((rows.into_iter().map(|(u, _)| u).collect(), newest))
}

/// Whether the schemas of both projections exist yet (their runners create them on first lead).
pub async fn ready(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT to_regclass('notify_inbox.notifications') IS NOT NULL AND to_regclass('notify_state.mutes') IS NOT NULL",
    )
    .fetch_one(pool)
    .await
}

/// Most notifications one retention transaction deletes.
const SWEEP_BATCH: i64 = 5_000;

/// Retention: deletes read notifications created before `before`, in batches. Returns how many went.
///
/// Read marks stay (they are `notify/state`'s rows, a few bytes each): a rebuild of `notify/inbox`
/// within the stream's retention brings swept notifications back *read*, and the next sweep removes
/// them again.
pub async fn sweep(pool: &PgPool, before: OffsetDateTime) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let deleted: Vec<(String, i64)> = sqlx::query_as(&format!(
            "WITH doomed AS (
                 SELECT n.id FROM notify_inbox.notifications n
                 WHERE n.created_at < $1 AND {READ} ORDER BY n.id LIMIT $2)
             DELETE FROM notify_inbox.notifications x USING doomed d WHERE x.id = d.id
             RETURNING x.user_id, x.id"
        ))
        .bind(before)
        .bind(SWEEP_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        total += deleted.len() as u64;
        if (deleted.len() as i64) < SWEEP_BATCH {
            return Ok(total);
        }
    }
}

/// Deletes, in batches, the notifications of users the auth service deleted (as the permissions
/// projection has them): their inboxes can no longer be read by anyone. Returns how many went.
/// Like retention this prunes the read model; a rebuild inside the stream's window brings them back
/// until the next sweep.
pub async fn sweep_deleted_users(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM notify_inbox.notifications x WHERE x.id IN (
                 SELECT n.id FROM notify_inbox.notifications n
                 JOIN notify_permissions.users u ON u.user_id = n.user_id AND u.deleted
                 LIMIT $1)",
        )
        .bind(SWEEP_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if (deleted as i64) < SWEEP_BATCH {
            return Ok(total);
        }
    }
}
