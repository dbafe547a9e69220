//! `edd-events`: the typed event backbone of Edd Cloud.
//!
//! Every state change in the platform is an [`Envelope`] (CloudEvents 1.0, structured JSON) stored in a
//! NATS JetStream stream. This crate is the one place where subjects, payloads and streams are defined:
//!
//! - [`catalog`]: the payload types, each tied to its CloudEvents `type`, its subject and its stream;
//! - [`subject`]: subject-safe identifiers and the subjects built from them (never by hand elsewhere);
//! - [`streams`]: the stream specs and an idempotent [`streams::ensure_streams`];
//! - [`store`]: [`EventStore::append`] with optimistic concurrency and uniqueness claims;
//! - [`consume`]: ordered replay and durable, at-least-once reactions with a dead letter;
//! - [`schema`]: JSON Schemas and the AsyncAPI document generated from the types.

pub mod catalog;
pub mod consume;
pub mod envelope;
pub mod schema;
pub mod store;
pub mod streams;
pub mod subject;

pub use catalog::Event;
pub use envelope::{Envelope, RawEvent};
pub use store::{AppendError, Appended, ClaimHolder, EventStore, Expected};
pub use subject::{filter_matches, Aggregate, Subject, SubjectError, Token};

/// Connects to NATS with the settings every Edd component uses: a name for the server's monitoring pages
/// and unbounded reconnects (a service outlives a NATS restart; callers bound their own waits).
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new().name(name).retry_on_initial_connect().max_reconnects(None).connect(url).await
}
