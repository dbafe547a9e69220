//! Snapshots of [`MasterState`]: everything the log has built so far plus the sequence it reached, so a
//! master restarts from the latest snapshot and replays only the events after it.
//!
//! The format is JSON (already in every Edd binary; no new dependency) with one-letter keys, since a
//! million files make the keys most of the bytes. Only the primary data is written — namespaces with
//! their files in path order, and garbage chunks; the path index and the chunk table are rebuilt on
//! restore. Writing streams straight from the state (no intermediate copy), and the order is fixed, so
//! equal states give byte-identical snapshots. A restore checks every invariant the events maintain, so
//! a damaged or hand-edited snapshot is refused instead of becoming a master's truth.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use edd_events::Token;
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use super::names::{validate_namespace, validate_path};
use super::state::{ChunkMeta, FileMeta, MasterState, Namespace};
use crate::chunk::{ChunkHandle, ChunkVersion, CHUNK_SIZE};

/// The snapshot format this code writes and reads. A change that old code cannot read is a new number.
pub const FORMAT: u32 = 1;

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot could not be encoded: {0}")]
    Encode(serde_json::Error),
    #[error("snapshot is not readable: {0}")]
    Decode(serde_json::Error),
    #[error("snapshot has format {found}; this master reads format {FORMAT}")]
    Format { found: u32 },
    #[error("snapshot is inconsistent: {0}")]
    Corrupt(String),
}

impl MasterState {
    /// The state as snapshot bytes, including the last applied sequence.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let out = SnapshotOut {
            format: FORMAT,
            last_seq: self.last_seq,
            last_handle: self.last_handle,
            namespaces: Seq(self.namespaces.iter().map(|(name, ns)| NamespaceOut {
                name,
                created_at: ns.created_at.unix_timestamp_nanos(),
                files: Seq(ns.paths.values().filter_map(|id| self.files.get(id)).map(|f| FileOut {
                    id: f.id.as_str(),
                    path: &f.path,
                    length: f.length,
                    created_at: f.created_at.unix_timestamp_nanos(),
                    modified_at: f.modified_at.unix_timestamp_nanos(),
                    chunks: Seq(f.chunks.iter().map(|h| (h.0, self.chunks.get(h).map_or(0, |c| c.version.0)))),
                })),
            })),
            garbage: Seq(self.garbage.iter().map(|(h, v)| (h.0, v.0))),
        };
        // Sized for ~100 bytes a file, so a big state is not copied over and over while growing.
        let mut bytes = Vec::with_capacity(64 + self.files.len() * 100);
        serde_json::to_writer(&mut bytes, &out).map_err(SnapshotError::Encode)?;
        Ok(bytes)
    }

    /// Rebuilds a state from [`snapshot`](Self::snapshot) bytes.
    pub fn restore(bytes: &[u8]) -> Result<MasterState, SnapshotError> {
        let snap: SnapshotIn<'_> = serde_json::from_slice(bytes).map_err(SnapshotError::Decode)?;
        if snap.format != FORMAT {
            return Err(SnapshotError::Format { found: snap.format });
        }
        let mut state = MasterState { last_seq: snap.last_seq, last_handle: snap.last_handle, ..Default::default() };
        let file_count = snap.namespaces.iter().map(|ns| ns.files.len()).sum();
        state.files.reserve(file_count);
        state.chunks.reserve(file_count);
        for ns in snap.namespaces {
            let (name, namespace) = restore_namespace(&mut state, ns)?;
            if state.namespaces.insert(name.clone(), namespace).is_some() {
                return corrupt(format!("namespace {name} appears twice"));
            }
        }
        for (handle, version) in snap.garbage {
            check_handle(&state, handle, version)?;
            if state.chunks.contains_key(&ChunkHandle(handle)) {
                return corrupt(format!("chunk {} is both live and garbage", ChunkHandle(handle)));
            }
            if state.garbage.insert(ChunkHandle(handle), ChunkVersion(version)).is_some() {
                return corrupt(format!("garbage chunk {} appears twice", ChunkHandle(handle)));
            }
        }
        Ok(state)
    }
}

fn restore_namespace(state: &mut MasterState, ns: NamespaceIn<'_>) -> Result<(Arc<str>, Namespace), SnapshotError> {
    validate_namespace(&ns.name).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    let name: Arc<str> = Arc::from(&*ns.name);
    let mut paths = BTreeMap::new();
    for f in ns.files {
        validate_path(&f.path).map_err(|e| SnapshotError::Corrupt(format!("{name}: {e}")))?;
        let id = Token::new(f.id.into_owned()).map_err(|e| SnapshotError::Corrupt(format!("file id: {e}")))?;
        let path: Arc<str> = Arc::from(&*f.path);
        let mut chunks = Vec::with_capacity(f.chunks.len());
        for (index, (handle, version)) in f.chunks.into_iter().enumerate() {
            check_handle(state, handle, version)?;
            let Ok(index) = u32::try_from(index) else { return corrupt(format!("file {id} has too many chunks")) };
            let chunk = ChunkMeta { file: id.clone(), index, version: ChunkVersion(version) };
            if state.chunks.insert(ChunkHandle(handle), chunk).is_some() {
                return corrupt(format!("chunk {} belongs to two files", ChunkHandle(handle)));
            }
            chunks.push(ChunkHandle(handle));
        }
        if f.length > (chunks.len() as u64).saturating_mul(CHUNK_SIZE) {
            return corrupt(format!("file {id} is longer than its chunks"));
        }
        if paths.insert(path.clone(), id.clone()).is_some() {
            return corrupt(format!("{name}:{path} appears twice"));
        }
        let file = FileMeta {
            id: id.clone(),
            namespace: name.clone(),
            path,
            length: f.length,
            created_at: timestamp(f.created_at)?,
            modified_at: timestamp(f.modified_at)?,
            chunks,
        };
        if state.files.insert(id.clone(), file).is_some() {
            return corrupt(format!("file id {id} appears twice"));
        }
    }
    Ok((name, Namespace { created_at: timestamp(ns.created_at)?, paths }))
}

/// A handle must have been allocated (nonzero, not above the high-water mark) and have a version.
fn check_handle(state: &MasterState, handle: u64, version: u64) -> Result<(), SnapshotError> {
    if handle == 0 || handle > state.last_handle {
        return corrupt(format!("chunk {} was never allocated", ChunkHandle(handle)));
    }
    if version == 0 {
        return corrupt(format!("chunk {} has version 0", ChunkHandle(handle)));
    }
    Ok(())
}

fn timestamp(nanos: i128) -> Result<OffsetDateTime, SnapshotError> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| SnapshotError::Corrupt(format!("timestamp: {e}")))
}

fn corrupt<T>(detail: String) -> Result<T, SnapshotError> {
    Err(SnapshotError::Corrupt(detail))
}

/// Serializes the items of a (cheaply cloned) iterator as a sequence, so nothing is collected first.
struct Seq<I>(I);

impl<I> Serialize for Seq<I>
where
    I: Iterator + Clone,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

// The written and the read shapes are the same JSON; the written one borrows from the state, its
// sequences are `Seq`s over the state's maps.
// Keys: f format, s last sequence, h last handle, n namespaces, g garbage [handle, version];
// a namespace: n name, c created (Unix ns), f files; a file: i id, p path, l length, c created,
// m modified, k chunks [handle, version] in index order.

#[derive(Serialize)]
struct SnapshotOut<N, G> {
    #[serde(rename = "f")]
    format: u32,
    #[serde(rename = "s")]
    last_seq: u64,
    #[serde(rename = "h")]
    last_handle: u64,
    #[serde(rename = "n")]
    namespaces: N,
    #[serde(rename = "g")]
    garbage: G,
}

#[derive(Serialize)]
struct NamespaceOut<'a, F> {
    #[serde(rename = "n")]
    name: &'a str,
    #[serde(rename = "c")]
    created_at: i128,
    #[serde(rename = "f")]
    files: F,
}

#[derive(Serialize)]
struct FileOut<'a, K> {
    #[serde(rename = "i")]
    id: &'a str,
    #[serde(rename = "p")]
    path: &'a str,
    #[serde(rename = "l")]
    length: u64,
    #[serde(rename = "c")]
    created_at: i128,
    #[serde(rename = "m")]
    modified_at: i128,
    #[serde(rename = "k")]
    chunks: K,
}

#[derive(Deserialize)]
struct SnapshotIn<'a> {
    #[serde(rename = "f")]
    format: u32,
    #[serde(rename = "s")]
    last_seq: u64,
    #[serde(rename = "h")]
    last_handle: u64,
    #[serde(rename = "n", borrow)]
    namespaces: Vec<NamespaceIn<'a>>,
    #[serde(rename = "g")]
    garbage: Vec<(u64, u64)>,
}

#[derive(Deserialize)]
struct NamespaceIn<'a> {
    #[serde(rename = "n", borrow)]
    name: Cow<'a, str>,
    #[serde(rename = "c")]
    created_at: i128,
    #[serde(rename = "f", borrow)]
    files: Vec<FileIn<'a>>,
}

#[derive(Deserialize)]
struct FileIn<'a> {
    #[serde(rename = "i", borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "p", borrow)]
    path: Cow<'a, str>,
    #[serde(rename = "l")]
    length: u64,
    #[serde(rename = "c")]
    created_at: i128,
    #[serde(rename = "m")]
    modified_at: i128,
    #[serde(rename = "k")]
    chunks: Vec<(u64, u64)>,
}
