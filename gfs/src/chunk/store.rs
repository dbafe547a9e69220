//! [`ChunkStore`]: the async face of the chunk store, and its locking.
//!
//! Each chunk has its own `RwLock`: mutations of one chunk are serialized (a write's read-modify of a
//! partial block must not interleave with another's), reads of one chunk share it, and different chunks
//! never wait for each other. The lock is taken on the async side and moved into the blocking task that
//! does the I/O, so a caller that gives up (drops the future) cannot leave a write half-recorded: the task
//! finishes, metadata included, and releases the lock itself. Heartbeat summaries ([`ChunkStore::report`],
//! [`ChunkStore::stat`]) come from a copy updated after each operation, so they never wait for an fsync.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::RwLock;

use super::error::{ChunkError, QuarantineReason};
use super::layout::{Dir, LOCK_FILE};
use super::ops::{self, ChunkState};
use super::scan;
use super::types::{ChunkHandle, ChunkInfo, ChunkVersion};
use super::CHUNK_SIZE;

/// The chunks in one data directory. Cheap to clone; clones share the chunks and their locks.
#[derive(Clone, Debug)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

/// What [`ChunkStore::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Chunks put in service.
    pub served: usize,
    /// Chunks found but not served; they stay listed by [`ChunkStore::quarantined`] until deleted.
    pub quarantined: Vec<Quarantined>,
    /// Leftover files that were removed: temporary files (interrupted metadata updates) and the
    /// quarantine marks of chunks whose deletion was interrupted.
    pub removed_tmp: Vec<PathBuf>,
    /// Files that belong to no chunk, left alone.
    pub ignored: Vec<PathBuf>,
}

/// A chunk kept out of service, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub handle: ChunkHandle,
    pub reason: QuarantineReason,
}

#[derive(Debug)]
struct Inner {
    dir: Dir,
    /// Holds the directory's lock for as long as the store lives.
    _lock: File,
    chunks: Mutex<HashMap<ChunkHandle, Arc<Slot>>>,
    report: OpenReport,
}

#[derive(Debug)]
struct Slot {
    /// The last settled state, readable without the chunk's lock.
    status: Mutex<Status>,
    state: Arc<RwLock<ChunkState>>,
}

#[derive(Clone, Debug)]
enum Status {
    Creating,
    Live(ChunkInfo),
    Quarantined(QuarantineReason),
    Deleted,
}

impl Slot {
    fn new(state: ChunkState, status: Status) -> Arc<Slot> {
        Arc::new(Slot { status: Mutex::new(status), state: Arc::new(RwLock::new(state)) })
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn status_of(state: &ChunkState) -> Status {
    match state {
        ChunkState::Live(meta) => Status::Live(meta.info()),
        ChunkState::Quarantined(reason) => Status::Quarantined(reason.clone()),
        ChunkState::Deleted => Status::Deleted,
    }
}

impl ChunkStore {
    /// Opens the data directory `dir` (creating it if needed), locks it against a second store, removes
    /// leftover temporary files and checks every chunk's files; see [`OpenReport`] for what it found.
    pub async fn open(dir: impl AsRef<Path>) -> Result<ChunkStore, ChunkError> {
        let dir = dir.as_ref().to_path_buf();
        blocking(move || open_blocking(&dir)).await
    }

    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    /// What [`open`](Self::open) found on disk.
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// Creates an empty chunk at `version`.
    pub async fn create(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<ChunkInfo, ChunkError> {
        // Locked before it is visible: anyone who finds the slot waits until the files exist (or not).
        let slot = Slot::new(ChunkState::Deleted, Status::Creating);
        let mut guard = Arc::clone(&slot.state).write_owned().await;
        {
            let mut chunks = self.inner.chunks();
            if chunks.contains_key(&handle) {
                return Err(ChunkError::Exists(handle));
            }
            chunks.insert(handle, Arc::clone(&slot));
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let created = ops::create(&inner.dir, handle, version);
            let result = created.map(|meta| {
                let info = meta.info();
                *guard = ChunkState::Live(meta);
                info
            });
            inner.settle(handle, &slot, &guard);
            result
        })
        .await
    }

    /// Writes `data` at `offset`, extending the chunk (zero-filling any gap) if it ends past the length.
    /// Returns once data and checksums are on disk. Refused when `version` is not the stored version, or
    /// when the write would end past [`CHUNK_SIZE`]; an empty `data` changes nothing.
    pub async fn write(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        offset: u64,
        data: Bytes,
    ) -> Result<ChunkInfo, ChunkError> {
        // Bounds first: a bad request should not queue behind the chunk's lock.
        ops::checked_end(handle, offset, data.len() as u64, CHUNK_SIZE)?;
        self.mutate(handle, move |dir, state| ops::write(dir, handle, state, version, offset, &data)).await
    }

    /// Reads up to `len` bytes at `offset`, verifying every block touched. A range running past the
    /// chunk's length is cut at the length (an `offset` exactly at the length reads nothing); an `offset`
    /// past it is [`ChunkError::OutOfRange`], as is a `len` or `offset` beyond [`CHUNK_SIZE`].
    pub async fn read(&self, handle: ChunkHandle, offset: u64, len: u64) -> Result<Bytes, ChunkError> {
        if offset > CHUNK_SIZE || len > CHUNK_SIZE {
            return Err(ChunkError::OutOfRange { handle, offset, len, limit: CHUNK_SIZE });
        }
        self.inspect(handle, move |dir, state| ops::read(dir, handle, state, offset, len)).await
    }

    /// Raises the chunk's version (the master granted a new lease). Going back is refused; setting the
    /// current version again is a no-op.
    pub async fn set_version(&self, handle: ChunkHandle, version: ChunkVersion) -> Result<ChunkInfo, ChunkError> {
        self.mutate(handle, move |dir, state| ops::set_version(dir, handle, state, version)).await
    }

    /// Removes the chunk's files; works on quarantined chunks too.
    pub async fn delete(&self, handle: ChunkHandle) -> Result<(), ChunkError> {
        self.mutate(handle, move |dir, state| ops::delete(dir, handle, state)).await
    }

    /// Removes the chunk's files unless it is in service at a version above `bound` (then it is kept and
    /// its version returned). The version is checked under the chunk's lock, so no version raise or clone
    /// can land between the check and the removal. `None` removes any version; a quarantined chunk is
    /// always removed.
    pub async fn delete_at_most(
        &self,
        handle: ChunkHandle,
        bound: Option<ChunkVersion>,
    ) -> Result<Option<ChunkVersion>, ChunkError> {
        self.mutate(handle, move |dir, state| {
            if let (Some(bound), ChunkState::Live(meta)) = (bound, &*state) {
                if meta.version > bound {
                    return Ok(Some(meta.version));
                }
            }
            ops::delete(dir, handle, state).map(|()| None)
        })
        .await
    }

    /// Reads the whole chunk and checks every block: [`ChunkError::Corrupt`] names the first bad one.
    /// The chunk stays in service (its good blocks still read); the caller decides what to do with it.
    pub async fn verify(&self, handle: ChunkHandle) -> Result<ChunkInfo, ChunkError> {
        self.inspect(handle, move |dir, state| ops::verify(dir, handle, state)).await
    }

    /// Takes the chunk out of service for `reason`: it is no longer read, written or reported by
    /// [`report`](Self::report), but listed by [`quarantined`](Self::quarantined) (also after a restart:
    /// a mark on disk keeps it there) until [`delete`](Self::delete) removes it. Its files stay, for the
    /// master to keep if it turns out to be the last copy. Quarantining it again keeps the first reason; an
    /// error means the mark could not be written (the chunk is out of service all the same until a
    /// restart).
    pub async fn quarantine(&self, handle: ChunkHandle, reason: QuarantineReason) -> Result<(), ChunkError> {
        self.mutate(handle, move |dir, state| ops::quarantine(dir, handle, state, reason)).await
    }

    /// Every chunk in service, by handle: the chunk report of a heartbeat.
    pub fn report(&self) -> Vec<ChunkInfo> {
        let mut infos: Vec<ChunkInfo> = self
            .inner
            .chunks()
            .values()
            .filter_map(|slot| match &*slot.status() {
                Status::Live(info) => Some(*info),
                _ => None,
            })
            .collect();
        infos.sort_by_key(|info| info.handle);
        infos
    }

    /// Every chunk kept out of service (found bad at open, or failed since), by handle.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        let mut found: Vec<Quarantined> = self
            .inner
            .chunks()
            .iter()
            .filter_map(|(&handle, slot)| match &*slot.status() {
                Status::Quarantined(reason) => Some(Quarantined { handle, reason: reason.clone() }),
                _ => None,
            })
            .collect();
        found.sort_by_key(|q| q.handle);
        found
    }

    /// The chunk's version and length if it is in service (as of its last completed operation).
    pub fn stat(&self, handle: ChunkHandle) -> Option<ChunkInfo> {
        let slot = self.inner.chunks().get(&handle).cloned()?;
        let status = slot.status();
        match &*status {
            Status::Live(info) => Some(*info),
            _ => None,
        }
    }

    fn slot(&self, handle: ChunkHandle) -> Result<Arc<Slot>, ChunkError> {
        self.inner.chunks().get(&handle).cloned().ok_or(ChunkError::NotFound(handle))
    }

    /// Runs `op` on the blocking pool with the chunk's lock held exclusively, then settles its status.
    async fn mutate<T, F>(&self, handle: ChunkHandle, op: F) -> Result<T, ChunkError>
    where
        T: Send + 'static,
        F: FnOnce(&Dir, &mut ChunkState) -> Result<T, ChunkError> + Send + 'static,
    {
        let slot = self.slot(handle)?;
        let mut guard = Arc::clone(&slot.state).write_owned().await;
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let result = op(&inner.dir, &mut guard);
            inner.settle(handle, &slot, &guard);
            result
        })
        .await
    }

    /// Runs `op` on the blocking pool with the chunk's lock shared.
    async fn inspect<T, F>(&self, handle: ChunkHandle, op: F) -> Result<T, ChunkError>
    where
        T: Send + 'static,
        F: FnOnce(&Dir, &ChunkState) -> Result<T, ChunkError> + Send + 'static,
    {
        let slot = self.slot(handle)?;
        let guard = Arc::clone(&slot.state).read_owned().await;
        let inner = Arc::clone(&self.inner);
        blocking(move || op(&inner.dir, &guard)).await
    }

    /// The lock of one chunk, for tests that hold it to show who waits.
    #[cfg(test)]
    pub(crate) fn lock_of(&self, handle: ChunkHandle) -> Option<Arc<RwLock<ChunkState>>> {
        self.inner.chunks().get(&handle).map(|slot| Arc::clone(&slot.state))
    }
}

impl Inner {
    fn chunks(&self) -> MutexGuard<'_, HashMap<ChunkHandle, Arc<Slot>>> {
        // A panic elsewhere cannot leave the map half-updated (each access is a single insert or
        // remove), so a poisoned lock is still a good map.
        self.chunks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the chunk's state after an operation; a deleted chunk leaves the map (unless a new
    /// chunk of the same handle has already replaced it).
    fn settle(&self, handle: ChunkHandle, slot: &Arc<Slot>, state: &ChunkState) {
        let status = status_of(state);
        let deleted = matches!(status, Status::Deleted);
        *slot.status() = status;
        if deleted {
            let mut chunks = self.chunks();
            if chunks.get(&handle).is_some_and(|current| Arc::ptr_eq(current, slot)) {
                chunks.remove(&handle);
            }
        }
    }
}

fn open_blocking(path: &Path) -> Result<ChunkStore, ChunkError> {
    let dir = Dir::open(path)?;
    let lock_path = path.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ChunkError::io("open", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(ChunkError::Locked(path.to_path_buf())),
        Err(TryLockError::Error(e)) => return Err(ChunkError::io("lock", &lock_path, e)),
    }
    let scan = scan::scan(&dir)?;
    let mut report = OpenReport { removed_tmp: scan.removed_tmp, ignored: scan.ignored, ..OpenReport::default() };
    let mut chunks = HashMap::with_capacity(scan.chunks.len());
    for (handle, state) in scan.chunks {
        match &state {
            ChunkState::Live(_) => report.served += 1,
            ChunkState::Quarantined(reason) => report.quarantined.push(Quarantined { handle, reason: reason.clone() }),
            ChunkState::Deleted => continue,
        }
        let status = status_of(&state);
        chunks.insert(handle, Slot::new(state, status));
    }
    tracing::info!(
        dir = %path.display(),
        served = report.served,
        quarantined = report.quarantined.len(),
        removed_tmp = report.removed_tmp.len(),
        "chunk store opened"
    );
    Ok(ChunkStore { inner: Arc::new(Inner { dir, _lock: lock, chunks: Mutex::new(chunks), report }) })
}

/// Runs blocking I/O on tokio's blocking pool. The task is spawned before this returns, not when the
/// future is first polled: a lock moved into `f` is then always released by the task itself.
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ChunkError> + Send + 'static,
) -> impl Future<Output = Result<T, ChunkError>> {
    let task = tokio::task::spawn_blocking(f);
    async move { task.await.map_err(|e| ChunkError::Task(e.to_string()))? }
}
