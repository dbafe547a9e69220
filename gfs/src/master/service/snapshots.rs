//! Snapshots in the JetStream object store `GFS_SNAPSHOTS`: the active master writes the state there
//! every `snapshot_every` events and at a clean shutdown, so a start replays only the events after the
//! snapshot. A snapshot is an optimisation, never the truth: one that is missing, unreadable or ahead
//! of the stream means a full replay, and a failed write is logged and retried at the next occasion.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::object_store::{GetErrorKind, ObjectStore};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::error::MasterError;
use super::node::Master;
use crate::master::MasterState;

/// The bucket, and the one object in it (overwritten each time; the object store keeps no history).
pub(super) const BUCKET: &str = "GFS_SNAPSHOTS";
pub(super) const OBJECT: &str = "latest";

/// Reading or writing a snapshot (about 130 MiB for a million files).
const TRANSFER_DEADLINE: Duration = Duration::from_secs(300);

/// The latest snapshot, if there is a usable one no newer than the stream's `head`.
pub(super) async fn load(store: &ObjectStore, head: u64) -> Option<MasterState> {
    let read = async {
        let mut object = match store.get(OBJECT).await {
            Ok(object) => object,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut bytes = Vec::with_capacity(object.info().size);
        object.read_to_end(&mut bytes).await.map_err(|e| e.to_string())?;
        Ok(Some(bytes))
    };
    let bytes = match tokio::time::timeout(TRANSFER_DEADLINE, read).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => return None,
        Ok(Err(error)) => {
            tracing::warn!(%error, "GFS snapshot unreadable; replaying the whole log");
            return None;
        }
        Err(_) => {
            tracing::warn!("GFS snapshot not read within {TRANSFER_DEADLINE:?}; replaying the whole log");
            return None;
        }
    };
    let restored = tokio::task::spawn_blocking(move || MasterState::restore(&bytes)).await;
    match restored {
        Ok(Ok(state)) if state.last_seq() <= head => {
            tracing::info!(last_seq = state.last_seq(), "GFS master restored its snapshot");
            Some(state)
        }
        Ok(Ok(state)) => {
            // From another life of the stream: its events are not the ones in the log now.
            tracing::warn!(snapshot = state.last_seq(), head, "GFS snapshot is ahead of the log; ignored");
            None
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "GFS snapshot cannot be restored; replaying the whole log");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "GFS snapshot restore failed; replaying the whole log");
            None
        }
    }
}

impl Master {
    /// Writes a snapshot of the current state. Serializing holds a read lock (commands wait for it,
    /// reads do not) on the blocking pool; the upload holds nothing.
    pub async fn save_snapshot(&self) -> Result<u64, String> {
        let _one = self.snapshot_lock.lock().await;
        let state = Arc::clone(&self.meta).read_owned().await;
        self.since_snapshot.store(0, Ordering::Relaxed);
        let encoded = tokio::task::spawn_blocking(move || (state.last_seq(), state.snapshot())).await;
        let (seq, bytes) = match encoded {
            Ok((seq, Ok(bytes))) => (seq, bytes),
            Ok((_, Err(e))) => return Err(e.to_string()),
            Err(e) => return Err(format!("snapshot task failed: {e}")),
        };
        let size = bytes.len();
        match tokio::time::timeout(TRANSFER_DEADLINE, self.snapshots.put(OBJECT, &mut bytes.as_slice())).await {
            Ok(Ok(_)) => {
                tracing::info!(last_seq = seq, bytes = size, "GFS snapshot written");
                Ok(seq)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("not written within {TRANSFER_DEADLINE:?}")),
        }
    }
}

/// Writes a snapshot whenever enough events were applied while this master is active. Also checks
/// every few seconds: events counted while it was a standby (or replayed at start) are due once it
/// becomes active, and no notification says so.
pub(super) async fn run_snapshots(master: Arc<Master>, mut stop: watch::Receiver<bool>) -> Result<(), MasterError> {
    let mut check = tokio::time::interval(Duration::from_secs(5));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
            () = master.snapshot_due.notified() => {}
            _ = check.tick() => {}
        }
        let due = master.since_snapshot.load(Ordering::Relaxed) >= master.config.snapshot_every;
        if !due || !master.is_active() {
            continue;
        }
        if let Err(error) = master.save_snapshot().await {
            tracing::warn!(%error, "GFS snapshot failed; the master carries on");
        }
    }
}
