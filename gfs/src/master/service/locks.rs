//! [`KeyedLocks`]: one async mutex per key, created on demand and dropped when nobody holds or waits
//! for it, so that lease grants on one chunk are serialized while other chunks never wait.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OwnedMutexGuard;

pub(super) struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks { locks: Mutex::new(HashMap::new()) }
    }
}

/// Holds the lock of one key; releasing it forgets the key unless someone else waits for it.
pub(super) struct KeyedGuard<'a, K: Eq + Hash + Clone> {
    owner: &'a KeyedLocks<K>,
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    fn map(&self) -> MutexGuard<'_, HashMap<K, Arc<tokio::sync::Mutex<()>>>> {
        // Each critical section is one map operation: a poisoned map is still consistent.
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn lock(&self, key: K) -> KeyedGuard<'_, K> {
        let mutex = Arc::clone(self.map().entry(key.clone()).or_default());
        let guard = mutex.lock_owned().await;
        KeyedGuard { owner: self, key, guard: Some(guard) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyedGuard<'_, K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.owner.map();
        // Clones are only taken under the map's lock, so a count of one (the map's) means no waiter.
        if map.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_waits_other_keys_do_not_and_released_keys_are_forgotten() {
        let locks = KeyedLocks::<u64>::default();
        let first = locks.lock(1).await;
        // Another key is free at once.
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock(2)).await.expect("other key");
        drop(other);
        // The same key waits until the first holder lets go.
        assert!(tokio::time::timeout(Duration::from_millis(50), locks.lock(1)).await.is_err());
        drop(first);
        let again = tokio::time::timeout(Duration::from_secs(1), locks.lock(1)).await.expect("released");
        drop(again);
        assert_eq!(locks.len(), 0);
    }
}
