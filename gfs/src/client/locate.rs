//! Where a file's chunks can be read: the master's [`Locations`] answer, checked, cached per file until
//! shortly before its read tokens expire, and dropped as soon as a replica fails a read (the master may
//! know better by then). One answer covers up to [`MAX_LOCATE`] chunks from the index asked for; a
//! read past them asks again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::lease::{lock, usable_until};
use super::GfsError;
use crate::chunk::{ChunkHandle, ChunkVersion};
use crate::dataplane::{CapabilityToken, ChunkRef};
use crate::rpc::messages::Locations;
use crate::rpc::MAX_LOCATE;

/// Files whose locations are kept at most; past it the expired go first, then arbitrary ones.
const MAX_CACHED: usize = 4096;

/// Replicas of one chunk considered at most (the master lists three, a few more while re-replicating).
const MAX_LISTED_REPLICAS: usize = 16;

#[derive(Debug)]
pub(super) struct ChunkReplicas {
    pub chunk: ChunkRef,
    /// Nearest first, as the master listed them.
    pub replicas: Vec<String>,
    pub token: CapabilityToken,
}

#[derive(Debug)]
pub(super) struct FileLocations {
    /// The committed length when the master answered.
    pub length: u64,
    /// The chunk indexes this answer speaks for: `first..end`.
    first: u32,
    end: u32,
    chunks: HashMap<u32, ChunkReplicas>,
    usable_until: Instant,
}

impl FileLocations {
    /// Checks the master's answer to `Locate { first_index: first, count: MAX_LOCATE }`.
    pub fn from_reply(reply: Locations, first: u32) -> Result<FileLocations, GfsError> {
        if reply.chunks.len() > MAX_LOCATE as usize {
            return Err(GfsError::Internal(format!("the master located {} chunks at once", reply.chunks.len())));
        }
        let end = first.saturating_add(MAX_LOCATE).min(reply.chunk_count).max(first);
        let mut chunks = HashMap::with_capacity(reply.chunks.len());
        for location in reply.chunks {
            let token = CapabilityToken::decode(&location.read_token).ok_or_else(|| {
                GfsError::Internal(format!("the master's read token for chunk {} is malformed", location.index))
            })?;
            let mut replicas = location.replicas;
            replicas.truncate(MAX_LISTED_REPLICAS);
            let chunk = ChunkRef { handle: ChunkHandle(location.handle), version: ChunkVersion(location.version) };
            chunks.insert(location.index, ChunkReplicas { chunk, replicas, token });
        }
        Ok(FileLocations {
            length: reply.length,
            first,
            end,
            chunks,
            usable_until: usable_until(reply.tokens_expire_ms),
        })
    }

    pub fn usable(&self) -> bool {
        Instant::now() < self.usable_until
    }

    /// Whether this answer says where chunk `index` is (or that it has no replica at all).
    pub fn covers(&self, index: u32) -> bool {
        (self.first..self.end).contains(&index)
    }

    pub fn chunk(&self, index: u32) -> Option<&ChunkReplicas> {
        self.chunks.get(&index)
    }
}

#[derive(Debug, Default)]
pub(super) struct LocationCache {
    files: Mutex<HashMap<String, Arc<FileLocations>>>,
}

impl LocationCache {
    pub fn get(&self, file: &str) -> Option<Arc<FileLocations>> {
        lock(&self.files).get(file).filter(|l| l.usable()).cloned()
    }

    pub fn insert(&self, file: &str, locations: Arc<FileLocations>) {
        let mut files = lock(&self.files);
        if files.len() >= MAX_CACHED {
            files.retain(|_, l| l.usable());
        }
        if files.len() >= MAX_CACHED {
            if let Some(victim) = files.keys().next().cloned() {
                files.remove(&victim);
            }
        }
        files.insert(file.to_owned(), locations);
    }

    /// Drops `locations` unless a newer answer already replaced them.
    pub fn forget(&self, file: &str, locations: &Arc<FileLocations>) {
        let mut files = lock(&self.files);
        if files.get(file).is_some_and(|cached| Arc::ptr_eq(cached, locations)) {
            files.remove(file);
        }
    }
}
