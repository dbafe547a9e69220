//! Pushed data waiting for the mutation that applies it (the GFS paper's LRU buffer cache, bounded).
//!
//! Space is reserved when a push is accepted and before anything is allocated for it, so the total
//! held (complete entries plus pushes in flight) never exceeds the cap; a push over the cap is refused
//! up front. Entries expire (a client that pushed and never wrote must not pin memory); expired entries
//! are dropped whenever space is asked for, so they never cause a refusal. An entry leaves the buffer
//! when this replica has applied it, or when it expires.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::DataId;
use crate::chunk::ChunkHandle;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BufferError {
    #[error("push buffer full: {len} bytes asked for, {used} of {cap} in use")]
    Full { len: u64, used: u64, cap: u64 },
    #[error("data id already in use")]
    Duplicate,
    #[error("no pushed data by that id (never pushed, expired, or already applied)")]
    Unknown,
    #[error("the pushed data by that id is for another chunk")]
    OtherChunk,
}

#[derive(Debug)]
pub(crate) struct PushBuffer {
    cap: u64,
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes of complete entries plus bytes reserved by pushes in flight.
    used: u64,
    entries: HashMap<DataId, Entry>,
    in_flight: HashSet<DataId>,
}

#[derive(Debug)]
struct Entry {
    handle: ChunkHandle,
    data: Bytes,
    expires: Instant,
}

impl PushBuffer {
    pub fn new(cap: u64, ttl: Duration) -> Arc<PushBuffer> {
        Arc::new(PushBuffer { cap, ttl, state: Mutex::new(State::default()) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything that could panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `len` bytes for the push of `id`; the space is released if the reservation is dropped
    /// without [`Reservation::commit`].
    pub fn reserve(self: &Arc<Self>, id: DataId, len: u64) -> Result<Reservation, BufferError> {
        let mut state = self.state();
        state.purge(Instant::now());
        if state.entries.contains_key(&id) || state.in_flight.contains(&id) {
            return Err(BufferError::Duplicate);
        }
        if state.used.saturating_add(len) > self.cap {
            return Err(BufferError::Full { len, used: state.used, cap: self.cap });
        }
        state.used += len;
        state.in_flight.insert(id);
        Ok(Reservation { buffer: Arc::clone(self), id, len, committed: false })
    }

    /// The data pushed as `id` for `handle` (shared, not copied); it stays until [`remove`](Self::remove).
    pub fn get(&self, id: DataId, handle: ChunkHandle) -> Result<Bytes, BufferError> {
        let mut state = self.state();
        state.purge(Instant::now());
        let entry = state.entries.get(&id).ok_or(BufferError::Unknown)?;
        if entry.handle != handle {
            return Err(BufferError::OtherChunk);
        }
        Ok(entry.data.clone())
    }

    pub fn remove(&self, id: DataId) {
        let mut state = self.state();
        if let Some(entry) = state.entries.remove(&id) {
            state.used -= entry.data.len() as u64;
        }
    }

    /// Bytes held or reserved.
    pub fn used(&self) -> u64 {
        self.state().used
    }
}

impl State {
    fn purge(&mut self, now: Instant) {
        let before = self.entries.len();
        let mut freed = 0;
        self.entries.retain(|_, entry| {
            let keep = entry.expires > now;
            if !keep {
                freed += entry.data.len() as u64;
            }
            keep
        });
        if self.entries.len() != before {
            tracing::debug!(expired = before - self.entries.len(), freed, "push buffer entries expired");
        }
        self.used -= freed;
    }
}

/// Space held for one push in flight.
#[derive(Debug)]
pub(crate) struct Reservation {
    buffer: Arc<PushBuffer>,
    id: DataId,
    len: u64,
    committed: bool,
}

impl Reservation {
    /// Files the received data (exactly the reserved length) under the reservation's id.
    pub fn commit(mut self, handle: ChunkHandle, data: Bytes) {
        debug_assert_eq!(data.len() as u64, self.len);
        let mut state = self.buffer.state();
        state.in_flight.remove(&self.id);
        let expires = Instant::now() + self.buffer.ttl;
        state.entries.insert(self.id, Entry { handle, data, expires });
        self.committed = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.committed {
            let mut state = self.buffer.state();
            state.in_flight.remove(&self.id);
            state.used -= self.len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: ChunkHandle = ChunkHandle(1);

    #[test]
    fn space_is_reserved_up_front_and_released_on_failure_or_removal() {
        let buffer = PushBuffer::new(100, Duration::from_secs(60));
        let a = buffer.reserve(1, 60).expect("fits");
        assert!(matches!(buffer.reserve(2, 41), Err(BufferError::Full { len: 41, used: 60, cap: 100 })));
        assert!(matches!(buffer.reserve(1, 1), Err(BufferError::Duplicate)));
        drop(a);
        assert_eq!(buffer.used(), 0, "an abandoned push gives its space back");
        let b = buffer.reserve(2, 100).expect("all of it");
        b.commit(H, Bytes::from(vec![7; 100]));
        assert!(matches!(buffer.reserve(3, 1), Err(BufferError::Full { .. })));
        assert_eq!(buffer.get(2, ChunkHandle(9)), Err(BufferError::OtherChunk));
        assert_eq!(buffer.get(2, H).expect("held").len(), 100);
        buffer.remove(2);
        assert_eq!(buffer.get(2, H), Err(BufferError::Unknown));
        assert_eq!(buffer.used(), 0);
    }

    #[test]
    fn expired_entries_never_cause_a_refusal() {
        let buffer = PushBuffer::new(100, Duration::ZERO);
        buffer.reserve(1, 100).expect("fits").commit(H, Bytes::from(vec![0; 100]));
        buffer.reserve(2, 100).expect("the expired entry made room");
        assert_eq!(buffer.get(1, H), Err(BufferError::Unknown));
    }
}
