//! The event catalog: every payload type, its CloudEvents `type`, its subject and its stream.
//!
//! Adding an event means adding a struct and one [`Event`] impl here; stream membership, schemas and
//! the AsyncAPI document follow from it. Payloads evolve only by adding optional fields; a breaking
//! change is a new type with a new version suffix (`….v2`), and consumers skip versions they don't know.

pub mod auth;
pub mod cluster;
pub mod gateway;
pub mod gfs;
pub mod inbox;
pub mod logs;
pub mod notify;
pub mod publishers;
pub mod storage;

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};

use crate::subject::{Aggregate, Subject};

/// A payload that can be published: it knows its type, stream and subject.
pub trait Event: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// Versioned CloudEvents type, e.g. `auth.user.created.v1`.
    const TYPE: &'static str;
    /// The stream that stores it (see [`crate::streams`]).
    const STREAM: &'static str;
    /// The subject with placeholders, for documentation: `auth.user.{user_id}.created`.
    const SUBJECT_PATTERN: &'static str;
    /// One line for the AsyncAPI document.
    const SUMMARY: &'static str;

    /// The concrete subject of this event.
    fn subject(&self) -> Subject;

    /// The aggregate it belongs to, for optimistic concurrency; `None` for telemetry and work items.
    fn aggregate(&self) -> Option<Aggregate>;

    /// The CloudEvents `subject` attribute: the id of the thing the event is about.
    fn aggregate_id(&self) -> Option<String>;
}

/// What the schema generator needs to know about one event type.
pub struct EventInfo {
    pub ty: &'static str,
    pub stream: &'static str,
    pub subject_pattern: &'static str,
    pub summary: &'static str,
    pub name: String,
    /// Adds the payload's schema to a generator and returns a reference to it.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Whether a payload decodes as this type (the error says why not).
    pub decodes: fn(&serde_json::Value) -> Result<(), String>,
}

impl EventInfo {
    pub fn of<E: Event>() -> Self {
        Self {
            ty: E::TYPE,
            stream: E::STREAM,
            subject_pattern: E::SUBJECT_PATTERN,
            summary: E::SUMMARY,
            name: E::schema_name().into_owned(),
            schema: |generator| generator.subschema_for::<E>(),
            decodes: |data| E::deserialize(data).map(drop).map_err(|e| e.to_string()),
        }
    }

    /// The subject pattern as a NATS filter: each `{placeholder}` token becomes `*`.
    pub fn filter(&self) -> String {
        self.subject_pattern
            .split('.')
            .map(|token| if token.starts_with('{') { "*" } else { token })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// The catalog's entry for CloudEvents type `ty`, looked up in a table built once (consumers check
/// every message they read against it).
pub fn lookup(ty: &str) -> Option<&'static EventInfo> {
    static BY_TYPE: std::sync::OnceLock<std::collections::HashMap<&'static str, EventInfo>> =
        std::sync::OnceLock::new();
    BY_TYPE.get_or_init(|| all().into_iter().map(|info| (info.ty, info)).collect()).get(ty)
}

/// Every event type in the catalog, in a stable order.
pub fn all() -> Vec<EventInfo> {
    vec![
        EventInfo::of::<auth::UserCreated>(),
        EventInfo::of::<auth::UserUpdated>(),
        EventInfo::of::<auth::UserDeleted>(),
        EventInfo::of::<auth::SessionCreated>(),
        EventInfo::of::<auth::SessionRevoked>(),
        EventInfo::of::<auth::SessionsRevoked>(),
        EventInfo::of::<auth::IdentityUpdated>(),
        EventInfo::of::<auth::IdentityDeleted>(),
        EventInfo::of::<auth::TokenCreated>(),
        EventInfo::of::<auth::TokenRevoked>(),
        EventInfo::of::<auth::SigningKeyAdded>(),
        EventInfo::of::<auth::SigningKeyRetired>(),
        EventInfo::of::<auth::SigningKeyRevoked>(),
        EventInfo::of::<auth::ClaimMade>(),
        EventInfo::of::<auth::ClaimReleased>(),
        EventInfo::of::<gateway::RouteCreated>(),
        EventInfo::of::<gateway::RouteDeleted>(),
        EventInfo::of::<gfs::NamespaceCreated>(),
        EventInfo::of::<gfs::NamespaceDeleted>(),
        EventInfo::of::<gfs::FileCreated>(),
        EventInfo::of::<gfs::FileRenamed>(),
        EventInfo::of::<gfs::FileDeleted>(),
        EventInfo::of::<gfs::ChunkAdded>(),
        EventInfo::of::<gfs::LengthSet>(),
        EventInfo::of::<gfs::VersionBumped>(),
        EventInfo::of::<gfs::ChunkDeleted>(),
        EventInfo::of::<storage::NamespaceCreated>(),
        EventInfo::of::<storage::NamespaceUpdated>(),
        EventInfo::of::<storage::NamespaceDeleted>(),
        EventInfo::of::<storage::FileUploaded>(),
        EventInfo::of::<storage::FileDeleted>(),
        EventInfo::of::<storage::ShareCreated>(),
        EventInfo::of::<storage::ShareRevoked>(),
        EventInfo::of::<notify::Notification>(),
        EventInfo::of::<inbox::NotificationsRead>(),
        EventInfo::of::<inbox::MuteSet>(),
        EventInfo::of::<inbox::MuteRemoved>(),
        EventInfo::of::<cluster::NodeMetrics>(),
        EventInfo::of::<cluster::PodStatus>(),
        EventInfo::of::<logs::ErrorLogged>(),
    ]
}

/// Implements [`Event`] for a payload whose subject is `<prefix>.<id>.<verb>` and whose aggregate is
/// `<prefix>.<id>.>`. Keeps the catalog a table rather than pages of identical impls.
macro_rules! aggregate_event {
    ($ty:ty, $type:literal, $stream:literal, $pattern:literal, $summary:literal,
     [$($prefix:literal),+], $id:ident, $verb:literal) => {
        impl $crate::catalog::Event for $ty {
            const TYPE: &'static str = $type;
            const STREAM: &'static str = $stream;
            const SUBJECT_PATTERN: &'static str = $pattern;
            const SUMMARY: &'static str = $summary;
            fn subject(&self) -> $crate::subject::Subject {
                $crate::subject::Subject::from_parts(&[$($prefix,)+ self.$id.as_str(), $verb])
            }
            fn aggregate(&self) -> Option<$crate::subject::Aggregate> {
                Some($crate::subject::Aggregate::from_parts(&[$($prefix,)+ self.$id.as_str()]))
            }
            fn aggregate_id(&self) -> Option<String> {
                Some(self.$id.to_string())
            }
        }
    };
}
pub(crate) use aggregate_event;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn types_are_unique_and_versioned() {
        let all = all();
        let types: HashSet<_> = all.iter().map(|e| e.ty).collect();
        assert_eq!(types.len(), all.len());
        for e in &all {
            assert!(e.ty.rsplit('.').next().is_some_and(|v| v.starts_with('v')), "{}", e.ty);
        }
    }

    #[test]
    fn every_event_lives_in_a_stream_that_captures_its_subject() {
        for e in all() {
            let spec = crate::streams::spec(e.stream).expect("stream exists");
            let root = e.subject_pattern.split('.').next().unwrap();
            assert!(spec.subjects.iter().any(|s| s.starts_with(root)), "{} not in {}", e.ty, spec.name);
        }
    }
}
