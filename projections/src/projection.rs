//! What a projection is: a name, its input, its tables and its apply function.

use edd_events::RawEvent;
use futures_util::future::BoxFuture;
use sqlx::PgConnection;

/// What applying one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// A type (or version) this projection does not know: counted, never a crash.
    Skipped,
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event is well-formed but this projection cannot apply it (bad payload, broken invariant).
    #[error("cannot apply event: {0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<edd_events::envelope::DecodeError> for ApplyError {
    fn from(e: edd_events::envelope::DecodeError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl ApplyError {
    /// Whether the failure is the database or the network rather than the event: then the runner
    /// reconnects and tries again instead of counting it against the event.
    pub fn is_infrastructure(&self) -> bool {
        match self {
            Self::Invalid(_) => false,
            Self::Db(sqlx::Error::Database(db)) => {
                // Class 08 (connection), 53 (resources), 57 (operator intervention, e.g. shutdown).
                db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57"))
            }
            Self::Db(_) => true,
        }
    }
}

/// A read model built from events. Implementations are small: SQL in, SQL out.
///
/// `apply` runs inside the runner's transaction with `search_path` set to the projection's schema, so
/// table names are unqualified and the same code fills the live schema or a rebuild.
pub trait Projection: Send + Sync + 'static {
    /// `service/name`, e.g. `auth/users`; also names the schema (`auth_users`).
    fn name(&self) -> &'static str;
    /// The stream it reads.
    fn stream(&self) -> &'static str;
    /// Subject filters within the stream.
    fn filters(&self) -> Vec<String>;
    /// DDL run in order, once each, inside the projection's schema.
    fn migrations(&self) -> &'static [&'static str];
    /// Applies one event.
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, event: &'a RawEvent)
        -> BoxFuture<'a, Result<Outcome, ApplyError>>;

    /// Applies a batch in order. Override to turn a batch into one statement (e.g. `UNNEST` upserts);
    /// the default applies events one by one. Returns how many were skipped.
    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<u64, ApplyError>> {
        Box::pin(async move {
            let mut skipped = 0;
            for event in events {
                if self.apply(&mut *tx, event).await? == Outcome::Skipped {
                    skipped += 1;
                }
            }
            Ok(skipped)
        })
    }
}
