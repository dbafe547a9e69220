//! Projections the suite and its child processes run: small, but real SQL against real events.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use edd_events::{
    catalog::auth::{UserCreated, UserDeleted, UserUpdated},
    Envelope, Event, RawEvent, Token,
};
use edd_projections::{ApplyError, Outcome, Projection};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;

/// A user as the test events describe it.
#[allow(clippy::expect_used)] // `u<digits>` is always a valid token
pub fn user(n: usize, display_name: &str) -> UserCreated {
    UserCreated {
        user_id: Token::new(format!("u{n}")).expect("valid token"),
        username: format!("user{n}"),
        display_name: display_name.to_owned(),
        is_admin: n.is_multiple_of(7),
    }
}

/// `e` as its owner publishes it (the catalog's publisher of its subject), so consumers that check
/// an event's origin take it.
pub fn envelope<E: Event>(e: E) -> Envelope<E> {
    let source = edd_events::catalog::publishers::publisher_of(e.subject().as_str()).unwrap_or("it");
    Envelope::new(source, e)
}

/// Records every application of every event, without any de-duplication of its own: if the runner
/// ever applied an event twice, `applied` would hold two rows for it and `counter` would be off.
pub struct CountingProjection {
    pub name: &'static str,
    /// Sleep this long inside each batch's transaction, so a kill lands mid-batch.
    pub slow_ms: u64,
}

impl Projection for CountingProjection {
    fn name(&self) -> &'static str {
        self.name
    }
    fn stream(&self) -> &'static str {
        "AUTH"
    }
    fn filters(&self) -> Vec<String> {
        vec!["auth.user.>".into()]
    }
    fn migrations(&self) -> &'static [&'static str] {
        &["CREATE TABLE applied (seq bigint NOT NULL, event_id uuid NOT NULL);
           CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL);
           INSERT INTO counter VALUES (1, 0);"]
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RawEvent,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO applied (seq, event_id) VALUES ($1, $2)")
                .bind(event.stream_seq as i64)
                .bind(event.envelope.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE counter SET n = n + 1 WHERE id = 1").execute(&mut *tx).await?;
            Ok(Outcome::Applied)
        })
    }
    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<u64, ApplyError>> {
        Box::pin(async move {
            if self.slow_ms > 0 {
                sqlx::query("SELECT pg_sleep($1)").bind(self.slow_ms as f64 / 1000.0).execute(&mut *tx).await?;
            }
            for e in events {
                self.apply(&mut *tx, e).await?;
            }
            Ok(0)
        })
    }
}

/// A users table kept by upserts: the shape of most real read models. Events whose display name is
/// `poison` fail until `fixed` is set, to exercise halting, resuming and skipping.
pub struct UsersProjection {
    pub name: &'static str,
    pub fixed: Arc<AtomicBool>,
}

impl UsersProjection {
    pub fn new(name: &'static str) -> Self {
        Self { name, fixed: Arc::new(AtomicBool::new(false)) }
    }
}

impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        self.name
    }
    fn stream(&self) -> &'static str {
        "AUTH"
    }
    fn filters(&self) -> Vec<String> {
        vec!["auth.user.>".into()]
    }
    fn migrations(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE users (user_id text PRIMARY KEY, username text NOT NULL, display_name text NOT NULL, is_admin bool NOT NULL)",
            "ALTER TABLE users ADD COLUMN version bigint NOT NULL DEFAULT 0",
        ]
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RawEvent,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(async move {
            let (user_id, username, display_name, is_admin) = if event.is::<UserCreated>() {
                let e: UserCreated = event.decode()?;
                (e.user_id, e.username, e.display_name, e.is_admin)
            } else if event.is::<UserUpdated>() {
                let e: UserUpdated = event.decode()?;
                (e.user_id, e.username, e.display_name, e.is_admin)
            } else if event.is::<UserDeleted>() {
                let e: UserDeleted = event.decode()?;
                sqlx::query("DELETE FROM users WHERE user_id = $1").bind(e.user_id.as_str()).execute(&mut *tx).await?;
                return Ok(Outcome::Applied);
            } else {
                return Ok(Outcome::Skipped);
            };
            if display_name == "poison" && !self.fixed.load(Ordering::SeqCst) {
                return Err(ApplyError::Invalid("display name 'poison' is not allowed".into()));
            }
            sqlx::query(
                "INSERT INTO users (user_id, username, display_name, is_admin, version) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id) DO UPDATE SET username = EXCLUDED.username,
                   display_name = EXCLUDED.display_name, is_admin = EXCLUDED.is_admin, version = EXCLUDED.version",
            )
            .bind(user_id.as_str())
            .bind(username)
            .bind(display_name)
            .bind(is_admin)
            .bind(event.stream_seq as i64)
            .execute(&mut *tx)
            .await?;
            Ok(Outcome::Applied)
        })
    }
}

/// The users table again, but applying a whole batch as one `UNNEST` upsert: what a hot read model
/// does, and what the benchmark compares with a raw batched `INSERT`.
pub struct BulkUsersProjection {
    pub name: &'static str,
}

impl Projection for BulkUsersProjection {
    fn name(&self) -> &'static str {
        self.name
    }
    fn stream(&self) -> &'static str {
        "AUTH"
    }
    fn filters(&self) -> Vec<String> {
        vec!["auth.user.>".into()]
    }
    fn migrations(&self) -> &'static [&'static str] {
        &["CREATE TABLE users (user_id text PRIMARY KEY, username text NOT NULL, display_name text NOT NULL, is_admin bool NOT NULL, version bigint NOT NULL)"]
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RawEvent,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(async move {
            let skipped = self.apply_batch(tx, std::slice::from_ref(event)).await?;
            Ok(if skipped == 1 { Outcome::Skipped } else { Outcome::Applied })
        })
    }
    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<u64, ApplyError>> {
        Box::pin(async move {
            // Last write per user wins within the batch, as it would one by one.
            let mut rows: std::collections::BTreeMap<String, (String, String, bool, i64)> = Default::default();
            let mut skipped = 0;
            for e in events {
                if e.is::<UserCreated>() {
                    let u: UserCreated = e.decode()?;
                    rows.insert(u.user_id.to_string(), (u.username, u.display_name, u.is_admin, e.stream_seq as i64));
                } else {
                    skipped += 1;
                }
            }
            let mut ids = Vec::with_capacity(rows.len());
            let (mut names, mut displays, mut admins, mut versions) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (id, (name, display, admin, version)) in rows {
                ids.push(id);
                names.push(name);
                displays.push(display);
                admins.push(admin);
                versions.push(version);
            }
            sqlx::query(UPSERT_USERS)
                .bind(ids)
                .bind(names)
                .bind(displays)
                .bind(admins)
                .bind(versions)
                .execute(&mut *tx)
                .await?;
            Ok(skipped)
        })
    }
}

/// One statement for a batch of users; shared by the projection and the raw baseline.
pub const UPSERT_USERS: &str = "INSERT INTO users (user_id, username, display_name, is_admin, version)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[], $5::bigint[])
     ON CONFLICT (user_id) DO UPDATE SET username = EXCLUDED.username, display_name = EXCLUDED.display_name,
       is_admin = EXCLUDED.is_admin, version = EXCLUDED.version";
