//! The scrubber (GFS paper §5.2): during idle time, verify every chunk's checksums, so that rarely read
//! chunks do not rot unnoticed until the other replicas are gone too.
//!
//! One chunk per tick, in handle order, wrapping around: the cost is one chunk read per interval however
//! many chunks there are. A chunk that fails is quarantined, not deleted: it drops out of the next chunk
//! report and into the heartbeat's quarantined list, no client is served from it any more, and the
//! master decides — it orders the replica deleted once another current replica exists (cloning one if
//! needed), and keeps it otherwise, because a copy with one bad block may be the last copy there is.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::chunk::{ChunkError, ChunkHandle, ChunkStore, QuarantineReason};

/// One verification (64 MiB read and checksummed) may take this long; a disk slower than that is
/// logged, and the scrubber moves on.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Verifies one chunk every `interval` until `stop`.
pub(crate) async fn run(store: ChunkStore, interval: Duration, stop: watch::Receiver<bool>) {
    let stopping = super::stopped(stop);
    tokio::pin!(stopping);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick fires at once: start one interval after start-up instead.
    ticks.reset();
    let mut last: Option<ChunkHandle> = None;
    loop {
        tokio::select! {
            () = &mut stopping => return,
            _ = ticks.tick() => {}
        }
        let Some(handle) = next_after(&store, last) else { continue };
        last = Some(handle);
        tokio::select! {
            () = &mut stopping => return,
            () = scrub_one(&store, handle) => {}
        }
    }
}

/// The chunk after `last` in handle order, wrapping around.
fn next_after(store: &ChunkStore, last: Option<ChunkHandle>) -> Option<ChunkHandle> {
    let chunks = store.report();
    let after = last.and_then(|last| chunks.iter().find(|c| c.handle > last));
    after.or(chunks.first()).map(|c| c.handle)
}

async fn scrub_one(store: &ChunkStore, handle: ChunkHandle) {
    match tokio::time::timeout(VERIFY_TIMEOUT, store.verify(handle)).await {
        Ok(Ok(_)) => tracing::trace!(%handle, "chunk verified"),
        Ok(Err(ChunkError::Corrupt { handle, block })) => {
            tracing::warn!(%handle, block, "scrubber found a corrupt block; quarantining the replica for the master");
            match store.quarantine(handle, QuarantineReason::Corrupt { block }).await {
                Ok(()) | Err(ChunkError::NotFound(_)) => {}
                Err(error) => tracing::error!(%handle, %error, "marking a corrupt chunk quarantined failed"),
            }
        }
        // Deleted or quarantined since it was picked: nothing to check.
        Ok(Err(ChunkError::NotFound(_) | ChunkError::Quarantined { .. })) => {}
        Ok(Err(error)) => tracing::warn!(%handle, %error, "scrubbing a chunk failed"),
        Err(_) => tracing::warn!(%handle, "verifying a chunk took longer than {VERIFY_TIMEOUT:?}"),
    }
}
