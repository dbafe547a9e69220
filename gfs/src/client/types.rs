//! What the client hands back about files and namespaces: the master's answers with real timestamps.

use time::OffsetDateTime;

use crate::rpc::messages;

/// A file as the master knows it. Data operations name it by [`id`](Self::id), which survives renames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub id: String,
    pub namespace: String,
    pub path: String,
    /// Committed bytes: what a read may return.
    pub length: u64,
    pub created: OffsetDateTime,
    pub modified: OffsetDateTime,
    pub chunk_count: u32,
}

impl From<messages::FileInfo> for FileInfo {
    fn from(f: messages::FileInfo) -> FileInfo {
        FileInfo {
            id: f.id,
            namespace: f.namespace,
            path: f.path,
            length: f.length,
            created: from_unix_ms(f.created_ms),
            modified: from_unix_ms(f.modified_ms),
            chunk_count: f.chunk_count,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub file_count: u64,
    pub created: OffsetDateTime,
}

impl From<messages::NamespaceInfo> for NamespaceInfo {
    fn from(n: messages::NamespaceInfo) -> NamespaceInfo {
        NamespaceInfo { name: n.name, file_count: n.file_count, created: from_unix_ms(n.created_ms) }
    }
}

/// A master timestamp; one outside what `OffsetDateTime` holds (a broken answer) reads as the epoch.
fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
