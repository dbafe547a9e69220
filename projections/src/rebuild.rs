//! Blue/green rebuild: replay the whole stream into a fresh schema while the live one keeps serving,
//! then swap the two in one transaction.
//!
//! The swap locks the projection's checkpoint row, which the live runner also locks for every batch,
//! so the runner pauses for the duration of the swap and then continues from the rebuilt position.
//! Readers see either the old tables or the new ones, never a mix.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use sqlx::{Connection, PgConnection, PgPool};

use edd_events::consume;

use crate::{runner, schema_name, store, Projection};

/// Where a rebuild stands, for progress bars.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Last stream sequence replayed into the new schema.
    pub position: u64,
    /// The stream head when the rebuild started.
    pub head: u64,
    pub events: u64,
}

/// What a finished rebuild did.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    pub events: u64,
    pub skipped_unknown: u64,
    pub operator_skips: u64,
    pub position: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("cannot read the stream: {0}")]
    Stream(#[from] consume::ConsumeError),
    #[error(
        "event at sequence {seq} cannot be applied ({error}); the live projection keeps serving. \
             Fix the code, or record a skip for it, then rebuild again"
    )]
    Poison { seq: u64, error: String },
    #[error("the stream ended before reaching the live position {live}")]
    Short { live: u64 },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Rebuilds `projection` from the start of its stream and swaps it in.
pub async fn rebuild(
    pool: &PgPool,
    js: &jetstream::Context,
    projection: &dyn Projection,
    batch_size: usize,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report, RebuildError> {
    let started = Instant::now();
    let name = projection.name();
    let live = schema_name(name);
    let shadow = format!("{live}__rebuild");
    let mut conn = pool.acquire().await?;
    store::ensure_bookkeeping(&mut conn).await?;
    store::ensure_row(&mut conn, projection).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{shadow}\" CASCADE")).execute(&mut *conn).await?;
    store::migrate(&mut conn, projection, &shadow, 0).await?;
    let skips = store::skipped_seqs(&mut conn, name).await?;

    let filters = projection.filters();
    let head = consume::stream_head(js, projection.stream()).await?;
    let mut pending = consume::pending_after(js, projection.stream(), &filters, 0).await?;
    let mut replay = consume::replay(js, projection.stream(), &filters, 1).await?;
    let mut state = Replayed { position: 0, events: 0, skipped_unknown: 0 };

    // Phase 1: catch up without blocking anyone.
    while pending > 0 {
        let batch = runner::next_batch(&mut replay, batch_size).await?;
        pending = batch.last().map_or(0, |m| m.pending);
        apply(&mut conn, projection, &shadow, &skips, &batch, &mut state).await?;
        progress(Progress { position: state.position, head, events: state.events });
    }

    // Phase 2: under the checkpoint lock, reach the live position and swap.
    let mut tx = conn.begin().await?;
    let row = store::lock_row(&mut tx, name).await?.ok_or(sqlx::Error::RowNotFound)?;
    while state.position < row.position {
        let batch = tokio::time::timeout(Duration::from_secs(10), runner::next_batch(&mut replay, batch_size))
            .await
            .map_err(|_| RebuildError::Short { live: row.position })??;
        apply(&mut tx, projection, &shadow, &skips, &batch, &mut state).await?;
    }
    let live_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(&live)
        .fetch_one(&mut *tx)
        .await?;
    if live_exists {
        let old = format!("{live}__old");
        let swap = format!(
            "DROP SCHEMA IF EXISTS \"{old}\" CASCADE; ALTER SCHEMA \"{live}\" RENAME TO \"{old}\"; \
             ALTER SCHEMA \"{shadow}\" RENAME TO \"{live}\"; DROP SCHEMA \"{old}\" CASCADE;"
        );
        sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(&swap)).await?;
    } else {
        sqlx::query(&format!("ALTER SCHEMA \"{shadow}\" RENAME TO \"{live}\"")).execute(&mut *tx).await?;
    }
    sqlx::query(
        "UPDATE edd_projections.checkpoints SET position = $2, applied = $3, skipped_unknown = $4, migrations = $5, \
         rebuilt_at = now(), updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(state.position as i64)
    .bind((state.events - state.skipped_unknown) as i64)
    .bind(state.skipped_unknown as i64)
    .bind(projection.migrations().len() as i32)
    .execute(&mut *tx)
    .await?;
    store::notify(&mut tx, name, state.position).await?;
    tx.commit().await?;
    progress(Progress { position: state.position, head: head.max(state.position), events: state.events });
    Ok(Report {
        events: state.events,
        skipped_unknown: state.skipped_unknown,
        operator_skips: skips.len() as u64,
        position: state.position,
        elapsed: started.elapsed(),
    })
}

struct Replayed {
    position: u64,
    events: u64,
    skipped_unknown: u64,
}

/// Applies one batch into the shadow schema, in a transaction (or a savepoint of the swap transaction).
async fn apply(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    shadow: &str,
    skips: &[u64],
    batch: &[consume::Stored],
    state: &mut Replayed,
) -> Result<(), RebuildError> {
    let kept: Vec<_> = batch.iter().filter(|m| skips.binary_search(&m.seq).is_err()).cloned().collect();
    // Quarantined messages are passed over here as in the live runner (which recorded them).
    let (events, _foreign) = runner::sort_batch(&kept);
    let mut savepoint = conn.begin().await?;
    store::set_search_path(&mut savepoint, shadow).await?;
    let skipped = projection
        .apply_batch(&mut savepoint, &events)
        .await
        .map_err(|e| RebuildError::Poison { seq: events.first().map_or(0, |e| e.stream_seq), error: e.to_string() })?;
    // Inside the swap transaction this is a savepoint, whose commit releases it into the outer one.
    savepoint.commit().await?;
    state.events += events.len() as u64;
    state.skipped_unknown += skipped;
    if let Some(last) = batch.last() {
        state.position = last.seq;
    }
    Ok(())
}
