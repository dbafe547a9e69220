//! Where each projection stands: checkpoint, stream head, lag, rate, state, last failure.

use async_nats::jetstream;
use serde::Serialize;
use sqlx::{PgPool, Row};

use edd_events::consume;

/// One projection's status, as `edd projections status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Status {
    pub name: String,
    pub stream: String,
    pub state: String,
    /// Last stream sequence applied.
    pub position: u64,
    /// Last sequence in the stream (any subject).
    pub stream_head: Option<u64>,
    /// Matching events not yet applied.
    pub lag: Option<u64>,
    pub applied: u64,
    pub skipped_unknown: u64,
    pub events_per_sec: f64,
    pub leader: Option<String>,
    pub failed_seq: Option<u64>,
    pub failed_error: Option<String>,
    pub operator_skips: u64,
}

/// Reads every projection recorded in the database behind `pool`. `filters` gives each projection's
/// subject filters for an exact lag; without them lag is measured against the stream head.
pub async fn read(
    pool: &PgPool,
    js: Option<&jetstream::Context>,
    filters: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<Status>, sqlx::Error> {
    let has_table: bool =
        sqlx::query_scalar("SELECT to_regclass('edd_projections.checkpoints') IS NOT NULL").fetch_one(pool).await?;
    if !has_table {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT c.name, c.stream, c.state, c.position, c.applied, c.skipped_unknown, c.events_per_sec, c.leader, \
                c.failed_seq, c.failed_error, (SELECT count(*) FROM edd_projections.skips s WHERE s.name = c.name) \
         FROM edd_projections.checkpoints c ORDER BY c.name",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.get(0);
        let stream: String = r.get(1);
        let position = r.get::<i64, _>(3) as u64;
        let (stream_head, lag) = match js {
            Some(js) => {
                let head = consume::stream_head(js, &stream).await.ok();
                let lag = match filters(&name) {
                    Some(f) => consume::pending_after(js, &stream, &f, position).await.ok(),
                    None => head.map(|h| h.saturating_sub(position)),
                };
                (head, lag)
            }
            None => (None, None),
        };
        out.push(Status {
            name,
            stream,
            state: r.get(2),
            position,
            stream_head,
            lag,
            applied: r.get::<i64, _>(4) as u64,
            skipped_unknown: r.get::<i64, _>(5) as u64,
            events_per_sec: r.get(6),
            leader: r.get(7),
            failed_seq: r.get::<Option<i64>, _>(8).map(|s| s as u64),
            failed_error: r.get(9),
            operator_skips: r.get::<i64, _>(10) as u64,
        });
    }
    Ok(out)
}

/// A fixed-width table for terminals.
pub fn render_table(rows: &[Status]) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut out = format!(
        "{:<28} {:<10} {:<8} {:>10} {:>10} {:>8} {:>10} {:>8} {:>9}\n",
        "PROJECTION", "STREAM", "STATE", "POSITION", "HEAD", "LAG", "APPLIED", "UNKNOWN", "EVENTS/S"
    );
    for s in rows {
        out.push_str(&format!(
            "{:<28} {:<10} {:<8} {:>10} {:>10} {:>8} {:>10} {:>8} {:>9.0}\n",
            s.name,
            s.stream,
            s.state.to_uppercase(),
            s.position,
            opt(s.stream_head),
            opt(s.lag),
            s.applied,
            s.skipped_unknown,
            s.events_per_sec
        ));
        if let (Some(seq), Some(err)) = (s.failed_seq, &s.failed_error) {
            let verb = if s.state == "halted" { "halted at" } else { "last failure at" };
            out.push_str(&format!("  ! {verb} seq {seq}: {err}\n"));
            if s.state == "halted" {
                out.push_str(&format!(
                    "    fix and `edd projections resume {0}`, or `edd projections skip {0} --seq {seq} --reason …`\n",
                    s.name
                ));
            }
        }
        if s.operator_skips > 0 {
            out.push_str(&format!("  ({} event(s) skipped by operators)\n", s.operator_skips));
        }
    }
    out
}
