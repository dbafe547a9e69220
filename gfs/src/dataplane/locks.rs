//! The primary's per-chunk ordering: one mutation of a chunk at a time, held across the local apply and
//! the replication to the secondaries, so that every replica applies a chunk's mutations in one order
//! and a record append's offset (the chunk's length) cannot be picked twice. Different chunks never wait
//! for each other. Entries are dropped when nobody holds or waits for them, so the map stays as small as
//! the number of chunks being mutated right now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::chunk::ChunkHandle;

#[derive(Debug, Default)]
pub(crate) struct ChunkLocks {
    map: Arc<Mutex<HashMap<ChunkHandle, Arc<AsyncMutex<()>>>>>,
}

/// Held while mutating one chunk.
#[derive(Debug)]
pub(crate) struct ChunkGuard {
    handle: ChunkHandle,
    guard: Option<OwnedMutexGuard<()>>,
    map: Arc<Mutex<HashMap<ChunkHandle, Arc<AsyncMutex<()>>>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one map operation: a poisoned map is still a consistent map.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChunkLocks {
    pub async fn lock(&self, handle: ChunkHandle) -> ChunkGuard {
        let mutex = Arc::clone(locked(&self.map).entry(handle).or_default());
        let guard = mutex.lock_owned().await;
        ChunkGuard { handle, guard: Some(guard), map: Arc::clone(&self.map) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        locked(&self.map).len()
    }
}

impl Drop for ChunkGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = locked(&self.map);
        // Waiters hold a clone (taken under this same map lock), so a count of one means nobody needs it.
        if map.get(&self.handle).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_chunk_at_a_time_and_the_map_empties() {
        let locks = ChunkLocks::default();
        let a = locks.lock(ChunkHandle(1)).await;
        let _other = locks.lock(ChunkHandle(2)).await; // another chunk does not wait
        let waiter = locks.lock(ChunkHandle(1));
        tokio::pin!(waiter);
        assert!(futures_poll_once(&mut waiter).await.is_none(), "the second locker of chunk 1 waits");
        drop(a);
        let b = waiter.await;
        drop(b);
        drop(_other);
        assert_eq!(locks.len(), 0);
    }

    /// Polls a future once, without a runtime helper crate.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        use std::task::Poll;
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }
}
