//! [`MasterState`]: the master's metadata, folded from the `GFS` log.
//!
//! Everything here is pure and synchronous: no I/O, no clocks (times come from event envelopes), no
//! randomness. The same events in the same order give the same state on the active master, on a standby
//! and after a restart from a snapshot. Every change is validated completely before anything is touched,
//! so an impossible event leaves the state as it was.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use edd_events::catalog::gfs as ev;
use edd_events::{RawEvent, Token};
use time::{OffsetDateTime, UtcOffset};

use super::error::{ApplyError, MetaError};
use super::event::MetaEvent;
use super::names::{validate_namespace, validate_path, validate_prefix};
use crate::chunk::{ChunkHandle, ChunkVersion, CHUNK_SIZE};

/// The most files one [`MasterState::list`] call returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// A namespace: a flat, ordered map from path to file.
#[derive(Clone, Debug, PartialEq)]
pub struct Namespace {
    pub(super) created_at: OffsetDateTime,
    /// Ordered, so listing a prefix is a range scan. The key is shared with the file's `path`.
    pub(super) paths: BTreeMap<Arc<str>, Token>,
}

impl Namespace {
    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    pub fn file_count(&self) -> usize {
        self.paths.len()
    }
}

/// What the master knows about a file. Handed out by reference only: it changes through events alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub id: Token,
    pub namespace: Arc<str>,
    pub path: Arc<str>,
    /// Committed bytes (see [`ev::LengthSet`]).
    pub length: u64,
    pub created_at: OffsetDateTime,
    /// When a chunk was last added or the length last grew.
    pub modified_at: OffsetDateTime,
    /// Chunk `i` holds bytes `[i × CHUNK_SIZE, (i + 1) × CHUNK_SIZE)`.
    pub chunks: Vec<ChunkHandle>,
}

/// One chunk of a file, as a client needs it to read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkView {
    pub index: u32,
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
}

/// A live chunk: which file holds it, where, and its current version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChunkMeta {
    pub(super) file: Token,
    pub(super) index: u32,
    pub(super) version: ChunkVersion,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<'a> {
    pub files: Vec<&'a FileMeta>,
    /// Pass as `after` for the next page; `None` when this page is the last.
    pub next: Option<String>,
}

/// The master's metadata: namespaces, files, chunk handles and versions, and the last applied sequence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MasterState {
    /// Stream sequence of the last event applied (0: none).
    pub(super) last_seq: u64,
    /// The highest handle ever allocated; new handles must be above it.
    pub(super) last_handle: u64,
    pub(super) namespaces: BTreeMap<Arc<str>, Namespace>,
    pub(super) files: HashMap<Token, FileMeta>,
    pub(super) chunks: HashMap<ChunkHandle, ChunkMeta>,
    /// Chunks of deleted files, until their replicas are gone ([`ev::ChunkDeleted`]).
    pub(super) garbage: BTreeMap<ChunkHandle, ChunkVersion>,
}

impl MasterState {
    pub fn new() -> Self {
        Self::default()
    }

    // ---- applying the log -------------------------------------------------------------------------

    /// Applies the event stored at stream sequence `seq`. Events at or below the last applied sequence
    /// are ignored, so a replay that overlaps a snapshot or a redelivery is harmless. On error nothing
    /// changed and the sequence did not advance.
    pub fn apply(&mut self, seq: u64, event: &RawEvent) -> Result<(), ApplyError> {
        if seq <= self.last_seq {
            return Ok(());
        }
        let decoded = MetaEvent::decode(seq, event)?;
        self.apply_event(seq, event.envelope.time, &decoded)
    }

    /// Applies an already decoded event stored at `seq` with envelope time `at` (what the active master
    /// does with its own appends, without reading them back).
    pub fn apply_event(&mut self, seq: u64, at: OffsetDateTime, event: &MetaEvent) -> Result<(), ApplyError> {
        if seq <= self.last_seq {
            return Ok(());
        }
        self.check(event).map_err(|source| ApplyError::Rejected { seq, ty: event.ty(), source })?;
        // Normalised so that equality and snapshots don't depend on the writer's offset.
        let at = at.to_offset(UtcOffset::UTC);
        match event {
            MetaEvent::NamespaceCreated(e) => self.namespace_created(e, at),
            MetaEvent::NamespaceDeleted(e) => {
                self.namespaces.remove(e.namespace.as_str());
            }
            MetaEvent::FileCreated(e) => self.file_created(e, at),
            MetaEvent::FileRenamed(e) => self.file_renamed(e),
            MetaEvent::FileDeleted(e) => self.remove_file(&e.file_id),
            MetaEvent::ChunkAdded(e) => self.chunk_added(e, at),
            MetaEvent::LengthSet(e) => {
                if let Some(file) = self.files.get_mut(&e.file_id) {
                    file.length = e.length;
                    file.modified_at = at;
                }
            }
            MetaEvent::VersionBumped(e) => {
                if let Some(chunk) = self.chunks.get_mut(&ChunkHandle(e.handle)) {
                    chunk.version = ChunkVersion(e.version);
                }
            }
            MetaEvent::ChunkDeleted(e) => {
                self.garbage.remove(&ChunkHandle(e.handle));
            }
        }
        self.last_seq = seq;
        Ok(())
    }

    /// Whether `event` would apply now. Commands call this on the exact event they are about to append.
    pub fn check(&self, event: &MetaEvent) -> Result<(), MetaError> {
        match event {
            MetaEvent::NamespaceCreated(e) => self.check_create_namespace(&e.namespace),
            MetaEvent::NamespaceDeleted(e) => self.check_delete_namespace(&e.namespace),
            MetaEvent::FileCreated(e) => {
                self.check_create(&e.namespace, &e.path)?;
                match self.files.contains_key(&e.file_id) {
                    true => Err(MetaError::FileIdTaken(e.file_id.clone())),
                    false => Ok(()),
                }
            }
            MetaEvent::FileRenamed(e) => self.check_renamed(e),
            MetaEvent::FileDeleted(e) => self.file_at(&e.file_id, &e.namespace, &e.path).map(drop),
            MetaEvent::ChunkAdded(e) => self.check_chunk_added(e),
            MetaEvent::LengthSet(e) => self.check_set_length(&e.file_id, e.length),
            MetaEvent::VersionBumped(e) => self.check_bump(ChunkHandle(e.handle), ChunkVersion(e.version)),
            MetaEvent::ChunkDeleted(e) => self.check_delete_chunk(ChunkHandle(e.handle)),
        }
    }

    fn namespace_created(&mut self, e: &ev::NamespaceCreated, at: OffsetDateTime) {
        let namespace = Namespace { created_at: at, paths: BTreeMap::new() };
        self.namespaces.insert(Arc::from(e.namespace.as_str()), namespace);
    }

    fn file_created(&mut self, e: &ev::FileCreated, at: OffsetDateTime) {
        // The file shares the namespace's name rather than holding a copy per file.
        let Some((name, _)) = self.namespaces.get_key_value(e.namespace.as_str()) else { return };
        let name = name.clone();
        let Some(namespace) = self.namespaces.get_mut(&name) else { return };
        let path: Arc<str> = Arc::from(e.path.as_str());
        namespace.paths.insert(path.clone(), e.file_id.clone());
        let file = FileMeta {
            id: e.file_id.clone(),
            namespace: name,
            path,
            length: 0,
            created_at: at,
            modified_at: at,
            chunks: Vec::new(),
        };
        self.files.insert(e.file_id.clone(), file);
    }

    fn file_renamed(&mut self, e: &ev::FileRenamed) {
        if let Some(replaced) = &e.replaced {
            self.remove_file(replaced);
        }
        let Some(file) = self.files.get_mut(&e.file_id) else { return };
        let Some(namespace) = self.namespaces.get_mut(&*file.namespace) else { return };
        namespace.paths.remove(&*file.path);
        let path: Arc<str> = Arc::from(e.to.as_str());
        namespace.paths.insert(path.clone(), e.file_id.clone());
        file.path = path;
    }

    /// Removes a file from its namespace; its chunks become garbage.
    fn remove_file(&mut self, id: &Token) {
        let Some(file) = self.files.remove(id) else { return };
        if let Some(namespace) = self.namespaces.get_mut(&*file.namespace) {
            namespace.paths.remove(&*file.path);
        }
        for handle in file.chunks {
            if let Some(chunk) = self.chunks.remove(&handle) {
                self.garbage.insert(handle, chunk.version);
            }
        }
    }

    fn chunk_added(&mut self, e: &ev::ChunkAdded, at: OffsetDateTime) {
        let Some(file) = self.files.get_mut(&e.file_id) else { return };
        let handle = ChunkHandle(e.handle);
        file.chunks.push(handle);
        file.modified_at = at;
        self.chunks
            .insert(handle, ChunkMeta { file: e.file_id.clone(), index: e.index, version: ChunkVersion(e.version) });
        self.last_handle = self.last_handle.max(e.handle);
    }

    // ---- checks for commands ----------------------------------------------------------------------

    pub fn check_create_namespace(&self, namespace: &str) -> Result<(), MetaError> {
        validate_namespace(namespace)?;
        match self.namespaces.contains_key(namespace) {
            true => Err(MetaError::NamespaceExists(namespace.to_owned())),
            false => Ok(()),
        }
    }

    /// Only an empty namespace can be deleted: deleting files is explicit, one event each.
    pub fn check_delete_namespace(&self, namespace: &str) -> Result<(), MetaError> {
        let files = self.namespace_of(namespace)?.paths.len();
        match files {
            0 => Ok(()),
            files => Err(MetaError::NamespaceNotEmpty { namespace: namespace.to_owned(), files }),
        }
    }

    /// Whether a file can be created at `namespace:path`.
    pub fn check_create(&self, namespace: &str, path: &str) -> Result<(), MetaError> {
        validate_path(path)?;
        match self.namespace_of(namespace)?.paths.contains_key(path) {
            true => Err(MetaError::FileExists { namespace: namespace.to_owned(), path: path.to_owned() }),
            false => Ok(()),
        }
    }

    /// Whether the file at `from` can move to `to`; returns the file's id and, when `replace` allows
    /// it and `to` is taken, the id of the file the rename would delete (the event's `replaced`).
    pub fn check_rename(
        &self,
        namespace: &str,
        from: &str,
        to: &str,
        replace: bool,
    ) -> Result<(Token, Option<Token>), MetaError> {
        let file = self.stat(namespace, from)?;
        validate_path(to)?;
        match self.namespace_of(namespace)?.paths.get(to) {
            None => Ok((file.id.clone(), None)),
            Some(other) if replace && *other != file.id => Ok((file.id.clone(), Some(other.clone()))),
            Some(_) => Err(MetaError::FileExists { namespace: namespace.to_owned(), path: to.to_owned() }),
        }
    }

    fn check_renamed(&self, e: &ev::FileRenamed) -> Result<(), MetaError> {
        self.file_at(&e.file_id, &e.namespace, &e.from)?;
        validate_path(&e.to)?;
        let occupant = self.namespace_of(&e.namespace)?.paths.get(e.to.as_str());
        match (occupant, &e.replaced) {
            (None, None) => Ok(()),
            (Some(o), Some(r)) if o == r && *o != e.file_id => Ok(()),
            (Some(_), None) => Err(MetaError::FileExists { namespace: e.namespace.clone(), path: e.to.clone() }),
            (occupant, replaced) => Err(MetaError::ReplaceMismatch {
                file: e.file_id.clone(),
                expected: replaced.clone(),
                actual: occupant.cloned(),
            }),
        }
    }

    fn check_chunk_added(&self, e: &ev::ChunkAdded) -> Result<(), MetaError> {
        let file = self.file_of_id(&e.file_id)?;
        let next = file.chunks.len() as u64;
        if u64::from(e.index) != next {
            return Err(MetaError::ChunkIndex { file: e.file_id.clone(), index: e.index, next });
        }
        if e.handle <= self.last_handle {
            return Err(MetaError::StaleHandle { handle: ChunkHandle(e.handle), last: ChunkHandle(self.last_handle) });
        }
        if e.version == 0 {
            return Err(MetaError::ZeroVersion);
        }
        Ok(())
    }

    /// Whether the committed length of `file` can become `length`.
    pub fn check_set_length(&self, file: &Token, length: u64) -> Result<(), MetaError> {
        let meta = self.file_of_id(file)?;
        let capacity = (meta.chunks.len() as u64).saturating_mul(CHUNK_SIZE);
        if length > capacity {
            return Err(MetaError::LengthBeyondChunks {
                file: file.clone(),
                length,
                chunks: meta.chunks.len(),
                capacity,
            });
        }
        if length < meta.length {
            return Err(MetaError::LengthShrinks { file: file.clone(), current: meta.length, proposed: length });
        }
        Ok(())
    }

    /// Whether a live chunk's version can be raised to `version`.
    pub fn check_bump(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<(), MetaError> {
        let chunk = self.chunks.get(&handle).ok_or(MetaError::NoChunk(handle))?;
        if version <= chunk.version {
            return Err(MetaError::VersionNotRaised { handle, current: chunk.version, proposed: version });
        }
        Ok(())
    }

    /// Whether a chunk can be forgotten: only garbage can.
    pub fn check_delete_chunk(&self, handle: ChunkHandle) -> Result<(), MetaError> {
        if let Some(chunk) = self.chunks.get(&handle) {
            return Err(MetaError::ChunkInUse { handle, file: chunk.file.clone() });
        }
        match self.garbage.contains_key(&handle) {
            true => Ok(()),
            false => Err(MetaError::NoChunk(handle)),
        }
    }

    /// The handle the next [`ev::ChunkAdded`] should carry.
    pub fn next_handle(&self) -> ChunkHandle {
        ChunkHandle(self.last_handle + 1)
    }

    // ---- queries ----------------------------------------------------------------------------------

    /// Stream sequence of the last applied event; a follower resumes after it.
    /// Moves past stream sequence `seq` without a change: a message in the log that is not an event
    /// of ours still occupies its place, and the next append is fenced on the log's last sequence.
    pub fn pass_over(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// Every namespace, in name order.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &Namespace)> {
        self.namespaces.iter().map(|(name, ns)| (&**name, ns))
    }

    /// The file at `namespace:path`.
    pub fn stat(&self, namespace: &str, path: &str) -> Result<&FileMeta, MetaError> {
        let no_path = || MetaError::NoPath { namespace: namespace.to_owned(), path: path.to_owned() };
        let id = self.namespace_of(namespace)?.paths.get(path).ok_or_else(no_path)?;
        self.files.get(id).ok_or_else(no_path)
    }

    pub fn file(&self, id: &Token) -> Option<&FileMeta> {
        self.files.get(id)
    }

    /// Files of `namespace` whose path starts with `prefix`, in path order, after the cursor `after`
    /// (exclusive; `None` for the first page), at most `limit` of them (clamped to 1..=[`MAX_LIST_LIMIT`]).
    pub fn list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<'_>, MetaError> {
        validate_prefix(prefix)?;
        if let Some(after) = after {
            validate_prefix(after)?;
        }
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut files: Vec<&FileMeta> = Vec::with_capacity(limit.min(64));
        let mut next = None;
        let range = self.namespace_of(namespace)?.paths.range::<str, _>((start, Bound::Unbounded));
        for (path, id) in range.take_while(|(path, _)| path.starts_with(prefix)) {
            if files.len() == limit {
                next = files.last().map(|f| f.path.to_string());
                break;
            }
            if let Some(file) = self.files.get(id) {
                files.push(file);
            } else {
                debug_assert!(false, "path {path} indexes missing file {id}");
            }
        }
        Ok(Page { files, next })
    }

    /// The chunks of a file, in order.
    pub fn chunks(&self, file: &Token) -> Result<Vec<ChunkView>, MetaError> {
        let meta = self.file_of_id(file)?;
        Ok(meta
            .chunks
            .iter()
            .filter_map(|handle| {
                let chunk = self.chunks.get(handle)?;
                Some(ChunkView { index: chunk.index, handle: *handle, version: chunk.version })
            })
            .collect())
    }

    /// Chunk `index` of a file, if allocated.
    pub fn chunk(&self, file: &Token, index: u32) -> Option<ChunkView> {
        let handle = *self.files.get(file)?.chunks.get(index as usize)?;
        let chunk = self.chunks.get(&handle)?;
        Some(ChunkView { index, handle, version: chunk.version })
    }

    /// The file holding a live chunk, and the chunk's index in it.
    pub fn file_of(&self, handle: ChunkHandle) -> Option<(&FileMeta, u32)> {
        let chunk = self.chunks.get(&handle)?;
        Some((self.files.get(&chunk.file)?, chunk.index))
    }

    /// The current version of a live chunk; replicas below it are stale.
    pub fn version(&self, handle: ChunkHandle) -> Option<ChunkVersion> {
        self.chunks.get(&handle).map(|c| c.version)
    }

    /// Chunks of deleted files whose replicas are still to be removed, with their last version.
    pub fn garbage(&self) -> impl Iterator<Item = (ChunkHandle, ChunkVersion)> + '_ {
        self.garbage.iter().map(|(h, v)| (*h, *v))
    }

    pub fn is_garbage(&self, handle: ChunkHandle) -> bool {
        self.garbage.contains_key(&handle)
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    fn namespace_of(&self, namespace: &str) -> Result<&Namespace, MetaError> {
        self.namespaces.get(namespace).ok_or_else(|| MetaError::NoNamespace(namespace.to_owned()))
    }

    fn file_of_id(&self, id: &Token) -> Result<&FileMeta, MetaError> {
        self.files.get(id).ok_or_else(|| MetaError::NoFile(id.clone()))
    }

    /// The file `id`, provided it is where an event says it is.
    fn file_at(&self, id: &Token, namespace: &str, path: &str) -> Result<&FileMeta, MetaError> {
        let file = self.file_of_id(id)?;
        if &*file.namespace != namespace || &*file.path != path {
            return Err(MetaError::Mismatch {
                file: id.clone(),
                actual: format!("{}:{}", file.namespace, file.path),
                claimed: format!("{namespace}:{path}"),
            });
        }
        Ok(file)
    }
}
