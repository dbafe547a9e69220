//! The notify service's read models in `notifications_db`:
//!
//! - `notify/inbox` (stream `NOTIFY`, `notify.>`): one row per notification, its id the stream
//!   sequence. The runner commits the rows and its checkpoint in one transaction (exactly-once
//!   effect); `ON CONFLICT DO NOTHING` makes a replayed batch harmless anyway.
//! - `notify/state` (stream `INBOX`, `inbox.>`): read marks (single ids and a per-user read-all
//!   watermark) and mutes, plus `mute_changes`, the INBOX sequence of each user's last mute change,
//!   which lets the live fanout reload only the mutes that moved.
//!
//! Both keep times from the events, so a rebuild reproduces them exactly. Muted notifications are
//! stored like any other and hidden when read (see [`crate::queries`]), so muting never loses one
//! and unmuting shows it again.

use edd_events::{
    catalog::{
        inbox::{MuteRemoved, MuteSet, NotificationsRead},
        notify::Notification,
    },
    RawEvent,
};
use edd_projections::{ApplyError, Outcome, Projection};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use time::OffsetDateTime;

pub const INBOX: &str = "notify/inbox";
/// The schema of `notify/inbox`.
pub const INBOX_SCHEMA: &str = "notify_inbox";
pub const STATE: &str = "notify/state";
/// The schema of `notify/state`.
pub const STATE_SCHEMA: &str = "notify_state";

/// `notify/inbox`: every notification of every user.
pub struct InboxProjection;

const INBOX_MIGRATIONS: &[&str] = &["
CREATE TABLE notifications (
    id bigint PRIMARY KEY,
    user_id text NOT NULL,
    title text NOT NULL,
    message text NOT NULL,
    link text,
    category text NOT NULL,
    scope text,
    created_at timestamptz NOT NULL
);
CREATE INDEX notifications_user ON notifications (user_id, id DESC);
CREATE INDEX notifications_created ON notifications (created_at);
"];

impl Projection for InboxProjection {
    fn name(&self) -> &'static str {
        INBOX
    }
    fn stream(&self) -> &'static str {
        "NOTIFY"
    }
    fn filters(&self) -> Vec<String> {
        vec!["notify.>".into()]
    }
    fn migrations(&self) -> &'static [&'static str] {
        INBOX_MIGRATIONS
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RawEvent,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(async move {
            let skipped = insert_notifications(tx, std::slice::from_ref(event)).await?;
            Ok(if skipped == 0 { Outcome::Applied } else { Outcome::Skipped })
        })
    }
    /// A batch is one `INSERT … SELECT FROM UNNEST`: at 1,000 notifications a second the runner
    /// makes one round trip per batch, not one per notification.
    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<u64, ApplyError>> {
        Box::pin(insert_notifications(tx, events))
    }
}

/// Inserts the notifications among `events`; returns how many were of another type.
async fn insert_notifications(tx: &mut PgConnection, events: &[RawEvent]) -> Result<u64, ApplyError> {
    let mut ids = Vec::with_capacity(events.len());
    let mut users = Vec::with_capacity(events.len());
    let mut titles = Vec::with_capacity(events.len());
    let mut messages = Vec::with_capacity(events.len());
    let mut links: Vec<Option<String>> = Vec::with_capacity(events.len());
    let mut categories = Vec::with_capacity(events.len());
    let mut scopes: Vec<Option<String>> = Vec::with_capacity(events.len());
    let mut times: Vec<OffsetDateTime> = Vec::with_capacity(events.len());
    let mut skipped = 0;
    for event in events {
        if !event.is::<Notification>() {
            skipped += 1;
            continue;
        }
        let n: Notification = event.decode()?;
        ids.push(i64::try_from(event.stream_seq).map_err(|_| ApplyError::Invalid("sequence out of range".into()))?);
        users.push(n.user_id.to_string());
        titles.push(n.title);
        messages.push(n.message);
        links.push(n.link);
        categories.push(n.category);
        scopes.push(n.scope);
        times.push(event.envelope.time);
    }
    if !ids.is_empty() {
        sqlx::query(
            "INSERT INTO notifications (id, user_id, title, message, link, category, scope, created_at)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::timestamptz[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&users)
        .bind(&titles)
        .bind(&messages)
        .bind(&links)
        .bind(&categories)
        .bind(&scopes)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
    }
    Ok(skipped)
}

/// `notify/state`: what users did with their notifications.
pub struct StateProjection;

const STATE_MIGRATIONS: &[&str] = &["
CREATE TABLE read_marks (
    user_id text NOT NULL,
    id bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE TABLE watermarks (
    user_id text PRIMARY KEY,
    up_to bigint NOT NULL
);
CREATE TABLE mutes (
    user_id text NOT NULL,
    category text NOT NULL,
    scope text,
    created_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX mutes_key ON mutes (user_id, category, (coalesce(scope, '')));
CREATE TABLE mute_changes (
    user_id text PRIMARY KEY,
    seq bigint NOT NULL
);
CREATE INDEX mute_changes_seq ON mute_changes (seq);
"];

impl Projection for StateProjection {
    fn name(&self) -> &'static str {
        STATE
    }
    fn stream(&self) -> &'static str {
        "INBOX"
    }
    fn filters(&self) -> Vec<String> {
        vec!["inbox.>".into()]
    }
    fn migrations(&self) -> &'static [&'static str] {
        STATE_MIGRATIONS
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RawEvent,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(apply_state(tx, event))
    }
}

async fn apply_state(tx: &mut PgConnection, event: &RawEvent) -> Result<Outcome, ApplyError> {
    let seq = i64::try_from(event.stream_seq).map_err(|_| ApplyError::Invalid("sequence out of range".into()))?;
    if event.is::<NotificationsRead>() {
        let e: NotificationsRead = event.decode()?;
        let ids = e
            .ids
            .iter()
            .map(|id| i64::try_from(*id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ApplyError::Invalid("notification id out of range".into()))?;
        if !ids.is_empty() {
            sqlx::query("INSERT INTO read_marks (user_id, id) SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING")
                .bind(e.user_id.as_str())
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(up_to) = e.up_to {
            let up_to = i64::try_from(up_to).map_err(|_| ApplyError::Invalid("up_to out of range".into()))?;
            sqlx::query(
                "INSERT INTO watermarks (user_id, up_to) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE SET up_to = greatest(watermarks.up_to, EXCLUDED.up_to)",
            )
            .bind(e.user_id.as_str())
            .bind(up_to)
            .execute(&mut *tx)
            .await?;
            // Marks at or below the watermark say nothing more.
            sqlx::query("DELETE FROM read_marks WHERE user_id = $1 AND id <= $2")
                .bind(e.user_id.as_str())
                .bind(up_to)
                .execute(&mut *tx)
                .await?;
        }
    } else if event.is::<MuteSet>() {
        let e: MuteSet = event.decode()?;
        sqlx::query(
            "INSERT INTO mutes (user_id, category, scope, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, category, (coalesce(scope, ''))) DO NOTHING",
        )
        .bind(e.user_id.as_str())
        .bind(&e.category)
        .bind(&e.scope)
        .bind(event.envelope.time)
        .execute(&mut *tx)
        .await?;
        mute_changed(tx, e.user_id.as_str(), seq).await?;
    } else if event.is::<MuteRemoved>() {
        let e: MuteRemoved = event.decode()?;
        sqlx::query("DELETE FROM mutes WHERE user_id = $1 AND category = $2 AND scope IS NOT DISTINCT FROM $3")
            .bind(e.user_id.as_str())
            .bind(&e.category)
            .bind(&e.scope)
            .execute(&mut *tx)
            .await?;
        mute_changed(tx, e.user_id.as_str(), seq).await?;
    } else {
        return Ok(Outcome::Skipped);
    }
    Ok(Outcome::Applied)
}

async fn mute_changed(tx: &mut PgConnection, user_id: &str, seq: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mute_changes (user_id, seq) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET seq = greatest(mute_changes.seq, EXCLUDED.seq)",
    )
    .bind(user_id)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
