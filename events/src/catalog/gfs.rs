//! Events of the GFS master (stream `GFS`): the metadata log — namespaces, files, their chunk handles,
//! committed lengths and chunk versions.
//!
//! This is the master's whole persistent state: a master restarts from a snapshot plus these events,
//! and a standby follows them. Chunk *locations* are deliberately absent: as in the GFS paper they are
//! learned from chunkserver reports, so a replica that moves or dies never needs a log write.
//!
//! Subjects:
//! - `gfs.ns.{hex(namespace)}.…` — a namespace. Names may contain `.`, which a subject token may not,
//!   so the token is the lowercase hex of the name's bytes ([`namespace_key`]), as for auth claims. The
//!   subject is a function of the name, so "create only if absent" is an append with no earlier event.
//! - `gfs.file.{file_id}.…` — a file, under a random [`Token`]; its path is payload, so a rename
//!   never moves the file to another subject.
//! - `gfs.chunk.{handle}.…` — a chunk, under its 64-bit handle written as exactly 16 lowercase hex
//!   digits (the spelling chunkservers use for file names; in payloads too, as a string, because a JSON
//!   number loses precision above 2^53 in many readers).
//!
//! Chunks are 64 MiB: chunk `index` of a file holds bytes `[index × 64 MiB, (index + 1) × 64 MiB)`.
//!
//! Ordering across files (path uniqueness, handle allocation) is the master's job: it appends through
//! [`metadata_log`] with the last sequence it applied, so a deposed master can never write.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::aggregate_event;
use crate::subject::{Aggregate, Subject, Token};

/// The aggregate covering the whole GFS log. The master appends with `Expected::Exactly(last applied
/// sequence)`, which fences it: a master whose view is stale (or that lost its lease) gets a conflict.
pub fn metadata_log() -> Aggregate {
    Aggregate::from_parts(&["gfs"])
}

/// The subject-safe key of a namespace name: lowercase hex of its bytes (case is preserved: `Logs` and
/// `logs` are different namespaces, unlike usernames).
pub fn namespace_key(namespace: &str) -> String {
    namespace.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The canonical spelling of a chunk handle: 16 lowercase hex digits.
pub fn handle_key(handle: u64) -> String {
    format!("{handle:016x}")
}

/// Serializes a `u64` handle as its [`handle_key`] string and reads only that exact spelling back, so
/// one chunk has one name everywhere.
mod handle_hex {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(handle: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&super::handle_key(*handle))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let canonical = text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !canonical {
            // Cut the echo short, so a hostile input cannot bloat logs.
            let shown: String = text.chars().take(40).collect();
            return Err(D::Error::custom(format!("invalid chunk handle {shown:?}: expected 16 lowercase hex digits")));
        }
        u64::from_str_radix(&text, 16).map_err(D::Error::custom)
    }
}

/// The JSON Schema of a handle.
struct HandleSchema;

impl JsonSchema for HandleSchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GfsChunkHandle".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{16}$",
            "description": "A GFS chunk handle: 64 bits as 16 lowercase hex digits"
        })
    }
}

/// A namespace was created; files can be created in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "GfsNamespaceCreated")]
pub struct NamespaceCreated {
    /// `[A-Za-z0-9._-]{1,64}`.
    pub namespace: String,
}

/// An empty namespace was deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "GfsNamespaceDeleted")]
pub struct NamespaceDeleted {
    pub namespace: String,
}

/// Implements [`super::Event`] for a namespace event, keyed by [`namespace_key`].
macro_rules! namespace_event {
    ($ty:ty, $type:literal, $verb:literal, $summary:literal) => {
        impl super::Event for $ty {
            const TYPE: &'static str = $type;
            const STREAM: &'static str = "GFS";
            const SUBJECT_PATTERN: &'static str = concat!("gfs.ns.{hex(namespace)}.", $verb);
            const SUMMARY: &'static str = $summary;
            fn subject(&self) -> Subject {
                Subject::from_parts(&["gfs", "ns", &namespace_key(&self.namespace), $verb])
            }
            fn aggregate(&self) -> Option<Aggregate> {
                Some(Aggregate::from_parts(&["gfs", "ns", &namespace_key(&self.namespace)]))
            }
            fn aggregate_id(&self) -> Option<String> {
                Some(self.namespace.clone())
            }
        }
    };
}
namespace_event!(NamespaceCreated, "gfs.ns.created.v1", "created", "A GFS namespace was created.");
namespace_event!(NamespaceDeleted, "gfs.ns.deleted.v1", "deleted", "An empty GFS namespace was deleted.");

/// A file was created, empty and with no chunks. Its creation time is the envelope's `time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "GfsFileCreated")]
pub struct FileCreated {
    pub file_id: Token,
    pub namespace: String,
    /// Absolute, `/`-separated, at most 4096 bytes, no empty, `.` or `..` segments.
    pub path: String,
}
aggregate_event!(
    FileCreated,
    "gfs.file.created.v1",
    "GFS",
    "gfs.file.{file_id}.created",
    "A GFS file was created (empty, no chunks).",
    ["gfs", "file"],
    file_id,
    "created"
);

/// A file moved to another path of its namespace, atomically. If `replaced` is set, the file that
/// was at `to` is deleted by the same event (write-then-rename replaces a file in one step).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "GfsFileRenamed")]
pub struct FileRenamed {
    pub file_id: Token,
    pub namespace: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Token>,
}
aggregate_event!(
    FileRenamed,
    "gfs.file.renamed.v1",
    "GFS",
    "gfs.file.{file_id}.renamed",
    "A GFS file was renamed within its namespace, possibly replacing the file at the new path.",
    ["gfs", "file"],
    file_id,
    "renamed"
);

/// A file was deleted. Its chunks become garbage: the master has their replicas removed lazily and
/// then records [`ChunkDeleted`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "GfsFileDeleted")]
pub struct FileDeleted {
    pub file_id: Token,
    pub namespace: String,
    pub path: String,
}
aggregate_event!(
    FileDeleted,
    "gfs.file.deleted.v1",
    "GFS",
    "gfs.file.{file_id}.deleted",
    "A GFS file was deleted; its chunks are garbage from now on.",
    ["gfs", "file"],
    file_id,
    "deleted"
);

/// The master allocated the file's next chunk. Chunks are dense: `index` is always the file's current
/// chunk count, and a handle is never used twice (not even after its chunk was deleted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "GfsChunkAdded")]
pub struct ChunkAdded {
    pub file_id: Token,
    pub index: u32,
    /// Globally unique, never 0, larger than every handle allocated before.
    #[serde(with = "handle_hex")]
    #[schemars(with = "HandleSchema")]
    pub handle: u64,
    /// The version the new replicas are created with (≥ 1).
    pub version: u64,
}
aggregate_event!(
    ChunkAdded,
    "gfs.file.chunk_added.v1",
    "GFS",
    "gfs.file.{file_id}.chunk_added",
    "The master allocated a new chunk at the end of a GFS file.",
    ["gfs", "file"],
    file_id,
    "chunk_added"
);

/// Bytes up to `length` are committed (acknowledged by a write quorum). Lengths only grow, and never
/// past the file's allocated chunks; this is what `stat` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "GfsLengthSet")]
pub struct LengthSet {
    pub file_id: Token,
    pub length: u64,
}
aggregate_event!(
    LengthSet,
    "gfs.file.length_set.v1",
    "GFS",
    "gfs.file.{file_id}.length_set",
    "The committed length of a GFS file grew.",
    ["gfs", "file"],
    file_id,
    "length_set"
);

/// The master granted a lease on a chunk and raised its version, so replicas that miss the coming
/// mutations are recognisably stale. Versions only grow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "GfsVersionBumped")]
pub struct VersionBumped {
    #[serde(with = "handle_hex")]
    #[schemars(with = "HandleSchema")]
    pub handle: u64,
    pub version: u64,
}

/// A garbage chunk (one whose file was deleted) is forgotten: its replicas were removed, and any that
/// still turn up are orphans collected after the grace period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "GfsChunkDeleted")]
pub struct ChunkDeleted {
    #[serde(with = "handle_hex")]
    #[schemars(with = "HandleSchema")]
    pub handle: u64,
}

/// Implements [`super::Event`] for a chunk event, keyed by [`handle_key`].
macro_rules! chunk_event {
    ($ty:ty, $type:literal, $verb:literal, $summary:literal) => {
        impl super::Event for $ty {
            const TYPE: &'static str = $type;
            const STREAM: &'static str = "GFS";
            const SUBJECT_PATTERN: &'static str = concat!("gfs.chunk.{handle}.", $verb);
            const SUMMARY: &'static str = $summary;
            fn subject(&self) -> Subject {
                Subject::from_parts(&["gfs", "chunk", &handle_key(self.handle), $verb])
            }
            fn aggregate(&self) -> Option<Aggregate> {
                Some(Aggregate::from_parts(&["gfs", "chunk", &handle_key(self.handle)]))
            }
            fn aggregate_id(&self) -> Option<String> {
                Some(handle_key(self.handle))
            }
        }
    };
}
chunk_event!(
    VersionBumped,
    "gfs.chunk.version_bumped.v1",
    "version_bumped",
    "A GFS chunk's version was raised as a lease was granted."
);
chunk_event!(ChunkDeleted, "gfs.chunk.deleted.v1", "deleted", "A garbage GFS chunk was forgotten by the master.");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Event;

    #[test]
    fn subjects_follow_the_contract() {
        let ns = NamespaceCreated { namespace: "logs.v1".into() };
        assert_eq!(ns.subject().as_str(), "gfs.ns.6c6f67732e7631.created");
        assert_eq!(ns.aggregate().unwrap().filter(), "gfs.ns.6c6f67732e7631.>");
        assert!(Token::new(namespace_key(&"z".repeat(64))).is_ok(), "the longest name is still a token");

        let f = ChunkAdded { file_id: Token::new("f1").unwrap(), index: 0, handle: 7, version: 1 };
        assert_eq!(f.subject().as_str(), "gfs.file.f1.chunk_added");
        assert_eq!(f.aggregate().unwrap().filter(), "gfs.file.f1.>");

        let c = VersionBumped { handle: 0x2a, version: 3 };
        assert_eq!(c.subject().as_str(), "gfs.chunk.000000000000002a.version_bumped");
        assert_eq!(c.aggregate().unwrap().filter(), "gfs.chunk.000000000000002a.>");
    }

    #[test]
    fn the_metadata_log_contains_every_gfs_subject() {
        let log = metadata_log();
        assert_eq!(log.filter(), "gfs.>");
        assert!(log.contains(&ChunkDeleted { handle: 1 }.subject()));
        assert!(log.contains(&NamespaceDeleted { namespace: "a".into() }.subject()));
    }

    #[test]
    fn handles_travel_as_canonical_hex_strings() {
        let json = serde_json::to_value(ChunkDeleted { handle: u64::MAX - 1 }).unwrap();
        assert_eq!(json, serde_json::json!({ "handle": "fffffffffffffffe" }));
        assert_eq!(serde_json::from_value::<ChunkDeleted>(json).unwrap().handle, u64::MAX - 1);
        for bad in ["2a", "000000000000002A", "+00000000000002a", "0x0000000000002a"] {
            assert!(serde_json::from_value::<ChunkDeleted>(serde_json::json!({ "handle": bad })).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<ChunkDeleted>(serde_json::json!({ "handle": 42 })).is_err());
    }

    #[test]
    fn namespace_keys_are_case_sensitive() {
        assert_ne!(namespace_key("Logs"), namespace_key("logs"));
    }
}
