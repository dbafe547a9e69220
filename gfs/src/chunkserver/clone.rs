//! Clone orders (re-replication): copy a chunk at a version from another replica.
//!
//! A clone reads the whole chunk from the source (at most 64 MiB in memory) with the read token the
//! master sent, and only then replaces any local copy. The copy is made at version 0 and raised to the
//! ordered version last: the version raise is the commit point, so a copy cut short — by a failure, the
//! deadline or a crash — is at version 0, older than any version the master knows, and so can never be
//! taken for a current replica; the master has it deleted if it is ever reported. While a clone runs, its
//! chunk is left out of the chunk reports ([`Cloner::in_flight`]).
//!
//! At most `max_clones` copy at once; further orders wait their turn (bounded), and an order for a chunk
//! already being cloned is ignored. Every clone ends up in [`Cloner::take_done`], successful or not, so
//! the master can stop counting it as in flight.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::chunk::{ChunkError, ChunkHandle, ChunkStore, ChunkVersion, CHUNK_SIZE};
use crate::dataplane::{CapabilityToken, ChunkRef, ClientConfig, ClientError, DataClient};
use crate::rpc::messages::Order;

/// One clone, from its turn to copy to the copy on disk (64 MiB over a slow link, then an fsync).
const CLONE_DEADLINE: Duration = Duration::from_secs(120);

/// How long an order may wait for its turn; past it the clone counts as failed and the master may order
/// it again.
const QUEUE_WAIT: Duration = Duration::from_secs(300);

/// Clones queued or running at most; orders beyond are refused (and reported done).
const MAX_QUEUED: usize = 64;

/// Resolving the source's address.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The version a copy has until it is complete.
const INCOMPLETE: ChunkVersion = ChunkVersion(0);

/// What became of a clone order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accepted {
    Started,
    /// A clone of this chunk is already queued or running.
    Duplicate,
    /// Malformed, or too many queued: reported done at once.
    Refused,
}

/// Runs clone orders. Cheap to clone; clones share the queue.
#[derive(Clone, Debug)]
pub(crate) struct Cloner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: ChunkStore,
    client: DataClient,
    permits: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: HashSet<ChunkHandle>,
    done: Vec<ChunkHandle>,
    tasks: JoinSet<()>,
}

#[derive(Debug, thiserror::Error)]
enum CloneError {
    #[error("cannot resolve the source {0:?}")]
    Resolve(String),
    #[error("reading from the source: {0}")]
    Read(#[from] ClientError),
    #[error("storing the copy: {0}")]
    Store(#[from] ChunkError),
    #[error("no turn to copy within {QUEUE_WAIT:?}")]
    NoTurn,
    #[error("not done within {CLONE_DEADLINE:?}")]
    Deadline,
}

impl Cloner {
    pub fn new(store: ChunkStore, max_clones: usize, tls: Option<crate::tls::Tls>) -> Cloner {
        let client = DataClient::new(ClientConfig {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(30),
            pool_per_addr: 1,
            ..ClientConfig::default()
        })
        .with_tls(tls);
        let permits = Arc::new(Semaphore::new(max_clones.max(1)));
        Cloner { inner: Arc::new(Inner { store, client, permits, state: Mutex::default() }) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each critical section leaves the state whole: a poisoned lock still guards a consistent state.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts (or queues) the clone `order` names.
    pub fn order(&self, order: &Order) -> Accepted {
        let handle = ChunkHandle(order.handle);
        let token = CapabilityToken::decode(&order.read_token);
        let (token, version) = match token {
            Some(token) if order.version > 0 && !order.source.is_empty() => (token, ChunkVersion(order.version)),
            _ => {
                tracing::warn!(%handle, version = order.version, source = %order.source, "malformed clone order refused");
                self.state().done.push(handle);
                return Accepted::Refused;
            }
        };
        let mut state = self.state();
        if state.running.contains(&handle) {
            return Accepted::Duplicate;
        }
        if state.running.len() >= MAX_QUEUED {
            tracing::warn!(%handle, "too many clones queued; order refused");
            state.done.push(handle);
            return Accepted::Refused;
        }
        state.running.insert(handle);
        // Reap the tasks that finished, so the set holds only live ones.
        while state.tasks.try_join_next().is_some() {}
        let finish = Finish { cloner: self.clone(), handle };
        let chunk = ChunkRef { handle, version };
        let source = order.source.clone();
        state.tasks.spawn(async move {
            let started = Instant::now();
            match finish.cloner.clone_chunk(chunk, &source, &token).await {
                Ok(len) => tracing::info!(
                    handle = %chunk.handle, version = %chunk.version, %source, bytes = len,
                    took_ms = started.elapsed().as_millis() as u64, "chunk cloned"
                ),
                Err(error) => tracing::warn!(
                    handle = %chunk.handle, version = %chunk.version, %source, %error, "clone failed"
                ),
            }
            drop(finish);
        });
        Accepted::Started
    }

    /// Chunks being cloned (queued or copying): not reported until their copy is complete.
    pub fn in_flight(&self) -> HashSet<ChunkHandle> {
        self.state().running.clone()
    }

    /// Clones finished (either way) since the last call.
    pub fn take_done(&self) -> Vec<ChunkHandle> {
        std::mem::take(&mut self.state().done)
    }

    /// Puts back clones taken by [`take_done`](Self::take_done) whose heartbeat failed.
    pub fn restore_done(&self, handles: Vec<ChunkHandle>) {
        let mut state = self.state();
        let newer = std::mem::replace(&mut state.done, handles);
        state.done.extend(newer);
    }

    /// Stops every clone (shutdown) and waits (at most `grace`) until they are gone. A copy cut short
    /// stays at version 0 (see the module docs).
    pub async fn abort_all(&self, grace: Duration) {
        // Out of the lock first: an aborted task's `Finish` takes it when the task is dropped.
        let mut tasks = std::mem::take(&mut self.state().tasks);
        tasks.abort_all();
        let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    }

    async fn clone_chunk(&self, chunk: ChunkRef, source: &str, token: &CapabilityToken) -> Result<u64, CloneError> {
        let permit = tokio::time::timeout(QUEUE_WAIT, Arc::clone(&self.inner.permits).acquire_owned())
            .await
            .map_err(|_| CloneError::NoTurn)?
            .map_err(|_| CloneError::NoTurn)?;
        let store = &self.inner.store;
        // Set from just before the copy is created until it is complete: what to remove on failure.
        let mut partial = false;
        let copied = tokio::time::timeout(CLONE_DEADLINE, async {
            let addr = resolve(source).await?;
            let data = self.inner.client.read(addr, chunk, 0, CHUNK_SIZE, token).await?;
            match store.delete(chunk.handle).await {
                Ok(()) => tracing::info!(handle = %chunk.handle, "local copy replaced by a clone"),
                Err(ChunkError::NotFound(_)) => {}
                Err(error) => return Err(error.into()),
            }
            partial = true;
            if let Err(error) = store.create(chunk.handle, INCOMPLETE).await {
                // Someone else's chunk (created since the delete above): not ours to remove.
                partial = !matches!(error, ChunkError::Exists(_));
                return Err(error.into());
            }
            let len = data.len() as u64;
            if !data.is_empty() {
                store.write(chunk.handle, INCOMPLETE, 0, data).await?;
            }
            store.set_version(chunk.handle, chunk.version).await?;
            partial = false;
            Ok(len)
        })
        .await;
        drop(permit);
        let result = copied.unwrap_or(Err(CloneError::Deadline));
        if partial {
            match store.delete(chunk.handle).await {
                Ok(()) | Err(ChunkError::NotFound(_)) => {}
                Err(error) => tracing::warn!(handle = %chunk.handle, %error, "removing a partial clone failed"),
            }
        }
        result
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.state().running.len()
    }
}

/// Marks a clone finished however its task ends (done, failed, panicked or aborted).
struct Finish {
    cloner: Cloner,
    handle: ChunkHandle,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let mut state = self.cloner.state();
        state.running.remove(&self.handle);
        state.done.push(self.handle);
    }
}

async fn resolve(source: &str) -> Result<SocketAddr, CloneError> {
    let unresolved = || CloneError::Resolve(source.chars().take(300).collect());
    let mut addrs = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(source))
        .await
        .map_err(|_| unresolved())?
        .map_err(|_| unresolved())?;
    addrs.next().ok_or_else(unresolved)
}
