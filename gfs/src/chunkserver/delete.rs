//! Delete orders, carried out one after another in the background: a garbage collection can order
//! thousands at once, and each costs a directory fsync, which must not hold up the heartbeats that keep
//! this server alive in the master's eyes. The outcome reaches the master through the next chunk
//! report (the chunk is gone from it); an order that could not be carried out is simply given again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::chunk::{ChunkError, ChunkHandle, ChunkStore};

/// Deletes waiting at most; orders beyond it are dropped (the master repeats them).
const MAX_PENDING: usize = 65_536;

/// One delete (two unlinks and a directory fsync) may take this long before the worker moves on.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands delete orders to the worker. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Deleter {
    tx: mpsc::Sender<ChunkHandle>,
    /// Queued or running, so that an order repeated before it is done is not queued twice.
    pending: Arc<Mutex<HashSet<ChunkHandle>>>,
}

impl Deleter {
    /// Starts the worker on `store`; it stops at `stop`.
    pub fn start(store: ChunkStore, stop: watch::Receiver<bool>) -> (Deleter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAX_PENDING);
        let deleter = Deleter { tx, pending: Arc::default() };
        let worker = tokio::spawn(work(store, rx, Arc::clone(&deleter.pending), stop));
        (deleter, worker)
    }

    /// Queues the deletion of `handle` (a no-op if it is already queued).
    pub fn order(&self, handle: ChunkHandle) {
        if !lock(&self.pending).insert(handle) {
            return;
        }
        if self.tx.try_send(handle).is_err() {
            lock(&self.pending).remove(&handle);
            tracing::debug!(%handle, "delete queue full; the master will order it again");
        }
    }
}

fn lock(pending: &Mutex<HashSet<ChunkHandle>>) -> MutexGuard<'_, HashSet<ChunkHandle>> {
    // One insert or remove per critical section: a poisoned set is still a consistent set.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn work(
    store: ChunkStore,
    mut rx: mpsc::Receiver<ChunkHandle>,
    pending: Arc<Mutex<HashSet<ChunkHandle>>>,
    stop: watch::Receiver<bool>,
) {
    let stopping = super::stopped(stop);
    tokio::pin!(stopping);
    loop {
        let handle = tokio::select! {
            () = &mut stopping => return,
            next = rx.recv() => match next {
                Some(handle) => handle,
                None => return,
            },
        };
        match tokio::time::timeout(DELETE_TIMEOUT, store.delete(handle)).await {
            Ok(Ok(())) => tracing::info!(%handle, "chunk deleted by order of the master"),
            // Already gone (deleted twice, or never here): the order is fulfilled.
            Ok(Err(ChunkError::NotFound(_))) => tracing::debug!(%handle, "chunk to delete was not here"),
            Ok(Err(error)) => {
                tracing::warn!(%handle, %error, "deleting a chunk failed; the master will order it again")
            }
            Err(_) => tracing::warn!(%handle, "deleting a chunk took longer than {DELETE_TIMEOUT:?}"),
        }
        lock(&pending).remove(&handle);
    }
}
