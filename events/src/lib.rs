//! `edd-events`: the typed event backbone of Edd Cloud.
//!
//! Every state change in the platform is an [`Envelope`] (CloudEvents 1.0, structured JSON) stored in a
//! NATS JetStream stream. This crate is the one place where subjects, payloads and streams are defined:
//!
//! - [`access`]: each component's NATS identity and the permissions generated from the catalog;
//! - [`catalog`]: the payload types, each tied to its CloudEvents `type`, its subject and its stream;
//! - [`subject`]: subject-safe identifiers and the subjects built from them (never by hand elsewhere);
//! - [`streams`]: the stream specs and an idempotent [`streams::ensure_streams`];
//! - [`store`]: [`EventStore::append`] with optimistic concurrency and uniqueness claims;
//! - [`consume`]: ordered replay and durable, at-least-once reactions with a dead letter;
//! - [`schema`]: JSON Schemas and the AsyncAPI document generated from the types.

pub mod access;
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

pub use access::Credential;

/// Connects to NATS with the settings every Edd component uses: its identity (when given; the
/// platform's brokers refuse anonymous connections), a reply inbox of its own, a name for the
/// server's monitoring pages and unbounded reconnects (a service outlives a NATS restart; callers
/// bound their own waits). A refused credential is logged as an error on every attempt, since the
/// connection keeps retrying in the background.
pub async fn connect(
    url: &str,
    name: &str,
    credential: Option<&Credential>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    options(name, credential).retry_on_initial_connect().connect(url).await
}

/// The connect options of [`connect`], for callers that need more (a connection deadline, no retry).
pub fn options(name: &str, credential: Option<&Credential>) -> async_nats::ConnectOptions {
    let mut options = match credential {
        Some(c) => async_nats::ConnectOptions::with_user_and_password(c.user.clone(), c.password().to_owned())
            .custom_inbox_prefix(access::inbox_prefix(&c.user)),
        None => async_nats::ConnectOptions::new(),
    };
    let user = credential.map(|c| c.user.clone()).unwrap_or_else(|| "anonymous".into());
    options = options.event_callback(move |event| {
        let user = user.clone();
        async move {
            match event {
                async_nats::Event::ServerError(e) => {
                    tracing::error!(nats_user = user, error = %e, "NATS refused a request")
                }
                async_nats::Event::ClientError(e) => tracing::warn!(nats_user = user, error = %e, "NATS client error"),
                _ => {}
            }
        }
    });
    options.name(name).max_reconnects(None)
}
