//! The bookkeeping tables every service database carries, in schema `edd_projections`, and the
//! statements the runner, rebuild and admin commands share.

use sqlx::{PgConnection, Row};

use crate::projection::Projection;

const BOOKKEEPING: &str = r#"
CREATE SCHEMA IF NOT EXISTS edd_projections;
CREATE TABLE IF NOT EXISTS edd_projections.checkpoints (
    name            text PRIMARY KEY,
    stream          text NOT NULL,
    position        bigint NOT NULL DEFAULT 0,
    state           text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'halted')),
    applied         bigint NOT NULL DEFAULT 0,
    skipped_unknown bigint NOT NULL DEFAULT 0,
    migrations      integer NOT NULL DEFAULT 0,
    failed_seq      bigint,
    failed_error    text,
    failed_at       timestamptz,
    events_per_sec  double precision NOT NULL DEFAULT 0,
    leader          text,
    rebuilt_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS edd_projections.skips (
    name       text NOT NULL,
    seq        bigint NOT NULL,
    event_type text,
    error      text,
    actor      text NOT NULL,
    reason     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, seq)
);
"#;

/// The notification channel carrying `name:position` after every commit.
pub(crate) const CHANNEL: &str = "edd_projections";

/// Creates the bookkeeping tables. Serialized by an advisory lock because `CREATE … IF NOT EXISTS` is
/// not safe against itself when two processes start at once.
pub(crate) async fn ensure_bookkeeping(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_lock(7261001)").execute(&mut *conn).await?;
    let result = sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(BOOKKEEPING)).await;
    sqlx::query("SELECT pg_advisory_unlock(7261001)").execute(&mut *conn).await?;
    result.map(|_| ())
}

/// Registers the projection (no-op when known).
pub(crate) async fn ensure_row(conn: &mut PgConnection, p: &dyn Projection) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO edd_projections.checkpoints (name, stream) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(p.name())
        .bind(p.stream())
        .execute(conn)
        .await?;
    Ok(())
}

/// Runs the migrations `from..` of `p` inside `schema` (created if missing). Returns how many exist.
pub(crate) async fn migrate(
    conn: &mut PgConnection,
    p: &dyn Projection,
    schema: &str,
    from: usize,
) -> Result<usize, sqlx::Error> {
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    sqlx::query(&create).execute(&mut *conn).await?;
    let all: &'static [&'static str] = p.migrations();
    for (i, ddl) in all.iter().copied().enumerate().skip(from) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        set_search_path(&mut tx, schema).await?;
        sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(ddl)).await?;
        tx.commit().await?;
        tracing::info!(projection = p.name(), migration = i + 1, "applied migration");
    }
    Ok(all.len())
}

/// Points unqualified table names at `schema` for the rest of the transaction.
pub(crate) async fn set_search_path(tx: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('search_path', $1, true)").bind(format!("\"{schema}\"")).execute(tx).await?;
    Ok(())
}

/// The checkpoint row, locked until the end of the transaction. Everything that moves a projection's
/// position (apply, skip, rebuild swap) takes this lock first, so they serialize.
pub(crate) struct Locked {
    pub position: u64,
    pub state: String,
    pub migrations: usize,
}

pub(crate) async fn lock_row(tx: &mut PgConnection, name: &str) -> Result<Option<Locked>, sqlx::Error> {
    let row =
        sqlx::query("SELECT position, state, migrations FROM edd_projections.checkpoints WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(tx)
            .await?;
    Ok(row.map(|r| Locked {
        position: r.get::<i64, _>(0) as u64,
        state: r.get(1),
        migrations: r.get::<i32, _>(2) as usize,
    }))
}

/// Records a committed batch and tells listeners.
pub(crate) async fn advance(
    tx: &mut PgConnection,
    name: &str,
    position: u64,
    applied: u64,
    skipped: u64,
    rate: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE edd_projections.checkpoints SET position = $2, applied = applied + $3, \
         skipped_unknown = skipped_unknown + $4, events_per_sec = $5, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(position as i64)
    .bind(applied as i64)
    .bind(skipped as i64)
    .bind(rate)
    .execute(&mut *tx)
    .await?;
    notify(tx, name, position).await
}

pub(crate) async fn notify(tx: &mut PgConnection, name: &str, position: u64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(format!("{name}:{position}")).execute(tx).await?;
    Ok(())
}

/// The sequences an operator chose to skip for `name`; a rebuild honours them too.
pub(crate) async fn skipped_seqs(conn: &mut PgConnection, name: &str) -> Result<Vec<u64>, sqlx::Error> {
    let rows: Vec<i64> = sqlx::query_scalar("SELECT seq FROM edd_projections.skips WHERE name = $1 ORDER BY seq")
        .bind(name)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|s| s as u64).collect())
}

/// A stable 64-bit advisory lock key for a projection name (FNV-1a: no dependency, stable across builds).
pub(crate) fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in b"edd-projection:".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash as i64
}
