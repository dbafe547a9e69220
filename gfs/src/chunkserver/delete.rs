//! Delete orders, carried out one after another in the background: a garbage collection can order
//! thousands at once, and each costs a directory fsync, which must not hold up the heartbeats that keep
//! this server alive in the master's eyes. The outcome reaches the master through the next chunk
//! report (the chunk is gone from it); an order that could not be carried out is simply given again.
//!
//! An order names the highest version it may remove (0: any). It may arrive late — after the master
//! had a newer copy cloned or raised here — so the version is checked right before deleting, and a
//! copy above the bound is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::chunk::{ChunkError, ChunkHandle, ChunkStore, ChunkVersion};

/// Deletes waiting at most; orders beyond it are dropped (the master repeats them).
const MAX_PENDING: usize = 65_536;

/// One delete (two unlinks and a directory fsync) may take this long before the worker moves on.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands delete orders to the worker. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Deleter {
    tx: mpsc::Sender<ChunkHandle>,
    /// Queued or running, with the version bound of the latest order, so that an order repeated
    /// before it is done is not queued twice (the worker reads the bound when it gets to it).
    pending: Arc<Mutex<HashMap<ChunkHandle, ChunkVersion>>>,
}

impl Deleter {
    /// Starts the worker on `store`; it stops at `stop`.
    pub fn start(store: ChunkStore, stop: watch::Receiver<bool>) -> (Deleter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(MAX_PENDING);
        let deleter = Deleter { tx, pending: Arc::default() };
        let worker = tokio::spawn(work(store, rx, Arc::clone(&deleter.pending), stop));
        (deleter, worker)
    }

    /// Queues the deletion of `handle` if its version is at most `bound` (0: whatever its version). An
    /// order for a handle already queued only replaces its bound.
    pub fn order(&self, handle: ChunkHandle, bound: ChunkVersion) {
        if lock(&self.pending).insert(handle, bound).is_some() {
            return;
        }
        if self.tx.try_send(handle).is_err() {
            lock(&self.pending).remove(&handle);
            tracing::debug!(%handle, "delete queue full; the master will order it again");
        }
    }
}

fn lock(pending: &Mutex<HashMap<ChunkHandle, ChunkVersion>>) -> MutexGuard<'_, HashMap<ChunkHandle, ChunkVersion>> {
    // One insert or remove per critical section: a poisoned set is still a consistent set.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn work(
    store: ChunkStore,
    mut rx: mpsc::Receiver<ChunkHandle>,
    pending: Arc<Mutex<HashMap<ChunkHandle, ChunkVersion>>>,
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
        // Bound 0: the master knows no live version of this chunk (garbage, orphan) — any copy goes.
        let bound = lock(&pending).get(&handle).copied().filter(|bound| bound.0 != 0);
        match tokio::time::timeout(DELETE_TIMEOUT, store.delete_at_most(handle, bound)).await {
            Ok(Ok(None)) => tracing::info!(%handle, "chunk deleted by order of the master"),
            Ok(Ok(Some(kept))) => {
                tracing::info!(%handle, version = %kept, ?bound, "chunk newer than the delete order allows; kept")
            }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    use super::Deleter;
    use crate::chunk::{ChunkHandle, ChunkStore, ChunkVersion};
    use crate::test_support::TempDir;

    #[tokio::test]
    async fn a_delete_order_keeps_a_copy_newer_than_its_bound() {
        let dir = TempDir::new("cs-delete-bound");
        let store = ChunkStore::open(dir.path()).await.expect("store");
        let (recloned, stale, garbage) = (ChunkHandle(1), ChunkHandle(2), ChunkHandle(3));
        for handle in [recloned, stale, garbage] {
            store.create(handle, ChunkVersion(3)).await.expect("create");
        }
        let (_stop_tx, stop) = watch::channel(false);
        let (deleter, worker) = Deleter::start(store.clone(), stop);
        // An order given when the copy was at 2, carried out after a clone at 3 landed: kept.
        deleter.order(recloned, ChunkVersion(2));
        deleter.order(stale, ChunkVersion(3));
        deleter.order(garbage, ChunkVersion(0));
        // One worker, in order: once the last is gone, the first was decided.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.stat(garbage).is_some() || store.stat(stale).is_some() {
            assert!(tokio::time::Instant::now() < deadline, "the deletes were not carried out in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.stat(recloned).map(|info| info.version), Some(ChunkVersion(3)));
        worker.abort();
    }
}
