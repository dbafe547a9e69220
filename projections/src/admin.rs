//! Operator actions on a halted projection: skip the event it is stuck on (recorded: who, what, why)
//! or resume it (retry the same event, e.g. after deploying a fix).

use sqlx::{Connection, PgPool, Row};

use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no projection named {0} in this database")]
    Unknown(String),
    #[error("projection {name} is not halted (state {state}); nothing to {action}")]
    NotHalted { name: String, state: String, action: &'static str },
    #[error("projection {name} is halted at sequence {failed}, not {asked}; skip only the event it is stuck on")]
    WrongSeq { name: String, failed: u64, asked: u64 },
    #[error("a skip needs an actor and a reason")]
    MissingReason,
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Skips the event a halted projection is stuck on. The skip is recorded in `edd_projections.skips`
/// (and honoured by rebuilds), and the projection continues after it.
pub async fn skip(pool: &PgPool, name: &str, seq: u64, actor: &str, reason: &str) -> Result<(), AdminError> {
    if actor.trim().is_empty() || reason.trim().is_empty() {
        return Err(AdminError::MissingReason);
    }
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT state, failed_seq, failed_error FROM edd_projections.checkpoints WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| AdminError::Unknown(name.to_owned()))?;
    let state: String = row.get(0);
    let failed: Option<i64> = row.get(1);
    let error: Option<String> = row.get(2);
    if state != "halted" {
        return Err(AdminError::NotHalted { name: name.to_owned(), state, action: "skip" });
    }
    let failed = failed.unwrap_or_default() as u64;
    if failed != seq {
        return Err(AdminError::WrongSeq { name: name.to_owned(), failed, asked: seq });
    }
    sqlx::query(
        "INSERT INTO edd_projections.skips (name, seq, error, actor, reason) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name, seq) DO NOTHING",
    )
    .bind(name)
    .bind(seq as i64)
    .bind(error)
    .bind(actor)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE edd_projections.checkpoints SET position = GREATEST(position, $2), state = 'running', \
         failed_seq = NULL, failed_error = NULL, failed_at = NULL, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(seq as i64)
    .execute(&mut *tx)
    .await?;
    store::notify(&mut tx, name, seq).await?;
    tx.commit().await?;
    tracing::warn!(projection = name, seq, actor, reason, "operator skipped an event");
    Ok(())
}

/// Lets a halted projection try its failing event again.
pub async fn resume(pool: &PgPool, name: &str) -> Result<(), AdminError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM edd_projections.checkpoints WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    match state {
        None => return Err(AdminError::Unknown(name.to_owned())),
        Some(s) if s != "halted" => {
            return Err(AdminError::NotHalted { name: name.to_owned(), state: s, action: "resume" })
        }
        Some(_) => {}
    }
    sqlx::query("UPDATE edd_projections.checkpoints SET state = 'running', updated_at = now() WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
