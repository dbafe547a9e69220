//! The streams of the platform and an idempotent way to create them.
//!
//! Source-of-truth streams keep events forever and deny delete and purge: once acknowledged, an event
//! can only be added to, never taken away. Telemetry and work streams age out.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// What a stream is for; decides retention and protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The truth of some aggregates: forever, no delete, no purge.
    SourceOfTruth,
    /// Work for a consumer (notifications, dead letters): kept for a while.
    Work,
    /// Metrics and logs: kept briefly.
    Telemetry,
}

/// A stream definition.
#[derive(Clone, Copy, Debug)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    pub kind: Kind,
    /// `None` keeps messages forever.
    pub max_age: Option<Duration>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The largest event we store. Events describe changes; bulk data (files, images) lives in GFS.
pub const MAX_EVENT_BYTES: i32 = 1024 * 1024;

/// Every stream of the platform (ARCHITECTURE §3), plus `DEADLETTER` for reactions that gave up.
pub const ALL: &[StreamSpec] = &[
    StreamSpec { name: "AUTH", subjects: &["auth.>"], kind: Kind::SourceOfTruth, max_age: None },
    StreamSpec { name: "STORAGE", subjects: &["storage.>"], kind: Kind::SourceOfTruth, max_age: None },
    StreamSpec { name: "COMPUTE", subjects: &["compute.>"], kind: Kind::SourceOfTruth, max_age: None },
    StreamSpec { name: "REGISTRY", subjects: &["registry.>"], kind: Kind::SourceOfTruth, max_age: None },
    StreamSpec { name: "GATEWAY", subjects: &["gateway.>"], kind: Kind::SourceOfTruth, max_age: None },
    StreamSpec { name: "GFS", subjects: &["gfs.>"], kind: Kind::SourceOfTruth, max_age: None },
    StreamSpec {
        name: "NOTIFY",
        subjects: &["notify.>"],
        kind: Kind::Work,
        max_age: Some(Duration::from_secs(30 * 24 * 3600)),
    },
    StreamSpec { name: "INBOX", subjects: &["inbox.>"], kind: Kind::SourceOfTruth, max_age: None },
    StreamSpec { name: "CLUSTER", subjects: &["cluster.>"], kind: Kind::Telemetry, max_age: Some(DAY) },
    StreamSpec {
        name: "LOGS",
        subjects: &["log.>"],
        kind: Kind::Telemetry,
        max_age: Some(Duration::from_secs(14 * 24 * 3600)),
    },
    StreamSpec {
        name: "DEADLETTER",
        subjects: &["deadletter.>"],
        kind: Kind::Work,
        max_age: Some(Duration::from_secs(30 * 24 * 3600)),
    },
];

/// The spec of the stream called `name`.
pub fn spec(name: &str) -> Option<&'static StreamSpec> {
    ALL.iter().find(|s| s.name == name)
}

/// The stream whose subjects capture `subject` (by its first token).
pub fn stream_for_subject(subject: &str) -> Option<&'static StreamSpec> {
    let root = subject.split('.').next()?;
    ALL.iter().find(|s| s.subjects.iter().any(|f| f.split('.').next() == Some(root)))
}

impl StreamSpec {
    /// The JetStream configuration for this spec with `replicas` copies (1 locally, 3 in a cluster).
    pub fn config(&self, replicas: usize) -> stream::Config {
        let truth = self.kind == Kind::SourceOfTruth;
        stream::Config {
            name: self.name.to_owned(),
            subjects: self.subjects.iter().map(|s| (*s).to_owned()).collect(),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_age: self.max_age.unwrap_or_default(),
            max_message_size: MAX_EVENT_BYTES,
            // Long enough to cover a client's retries after a NATS restart.
            duplicate_window: Duration::from_secs(120),
            deny_delete: truth,
            deny_purge: truth,
            allow_direct: true,
            allow_atomic_publish: true,
            description: Some(format!("Edd Cloud {:?} stream", self.kind)),
            ..Default::default()
        }
    }
}

/// Why the streams could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("could not create stream {name}: {source}")]
    Create { name: &'static str, source: jetstream::context::CreateStreamError },
    #[error("could not update stream {name}: {source}")]
    Update { name: &'static str, source: jetstream::context::UpdateStreamError },
}

/// Why a component cannot start on this broker.
#[derive(Debug, thiserror::Error)]
pub enum RequireError {
    #[error(
        "stream {0} does not exist: the operator creates the streams (`edd up`, or `edd nats streams` on a cluster)"
    )]
    Missing(String),
    #[error("JetStream did not answer about stream {name} within {timeout:?} (is NATS up, and is this component's credential right?): {error}")]
    Unreachable { name: String, timeout: Duration, error: String },
}

/// Waits (up to `timeout`, NATS may still be starting) until every stream in `names` answers, and
/// fails at once for one that does not exist. Services read streams but do not create them: only
/// the operator and a stream's owner may (see [`crate::access`]).
pub async fn require(js: &jetstream::Context, names: &[&str], timeout: Duration) -> Result<(), RequireError> {
    let deadline = tokio::time::Instant::now() + timeout;
    for name in names {
        loop {
            match js.get_stream(*name).await {
                Ok(_) => break,
                Err(e)
                    if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                {
                    return Err(RequireError::Missing((*name).to_owned()))
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(RequireError::Unreachable { name: (*name).to_owned(), timeout, error: e.to_string() })
                }
                // Not connected yet: the client is retrying in the background.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}

/// Creates every stream in `specs`, or updates it when its settings drifted. Safe to run on every start.
pub async fn ensure_streams(js: &jetstream::Context, specs: &[StreamSpec], replicas: usize) -> Result<(), EnsureError> {
    for spec in specs {
        let want = spec.config(replicas);
        match js.get_stream(spec.name).await {
            Ok(mut existing) => {
                let have = existing.info().await.map(|i| i.config.clone()).ok();
                if have.as_ref().is_some_and(|h| differs(h, &want)) {
                    js.update_stream(&want).await.map_err(|source| EnsureError::Update { name: spec.name, source })?;
                    tracing::info!(stream = spec.name, "updated stream settings");
                }
            }
            Err(_) => {
                js.create_stream(want).await.map_err(|source| EnsureError::Create { name: spec.name, source })?;
                tracing::info!(stream = spec.name, "created stream");
            }
        }
    }
    Ok(())
}

/// Compares only the settings we own, so server-filled defaults don't cause an update on every start.
fn differs(have: &stream::Config, want: &stream::Config) -> bool {
    have.subjects != want.subjects
        || have.max_age != want.max_age
        || have.max_message_size != want.max_message_size
        || have.duplicate_window != want.duplicate_window
        || have.deny_delete != want.deny_delete
        || have.deny_purge != want.deny_purge
        || have.allow_atomic_publish != want.allow_atomic_publish
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_of_truth_streams_are_protected_and_kept_forever() {
        let auth = spec("AUTH").unwrap().config(1);
        assert!(auth.deny_delete && auth.deny_purge);
        assert_eq!(auth.max_age, Duration::ZERO);
        let logs = spec("LOGS").unwrap().config(1);
        assert!(!logs.deny_delete);
        assert_eq!(logs.max_age, Duration::from_secs(14 * 24 * 3600));
    }

    #[test]
    fn subjects_map_to_streams() {
        assert_eq!(stream_for_subject("auth.user.x.created").unwrap().name, "AUTH");
        assert_eq!(stream_for_subject("log.error.gfs").unwrap().name, "LOGS");
        assert!(stream_for_subject("nope.x").is_none());
    }
}
