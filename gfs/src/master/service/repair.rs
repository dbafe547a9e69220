//! The repair loop: every `repair_interval`, while active, one [`Cluster::repair`] pass — deletes for
//! stale, garbage, corrupt and overdue orphan replicas, clones for under-replicated chunks (once the
//! takeover grace has passed) — then what the pass asked for that needs the log or the chunkservers:
//! adopted versions, fences (a version raise before a chunk is cloned, so no lease — not even one a
//! previous master granted — can write to the version being copied), and `ChunkDeleted` for garbage
//! no live server holds any more.
//!
//! [`Cluster::repair`]: super::cluster::Cluster::repair

use std::sync::Arc;
use std::time::{Duration, Instant};

use edd_events::catalog::gfs as ev;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::error::MasterError;
use super::node::Master;
use crate::chunk::{ChunkHandle, ChunkVersion};
use crate::dataplane::{CapabilityToken, TokenOp};
use crate::rpc::messages::{Order, OrderKind};

pub(super) async fn run_repairs(master: Arc<Master>, mut stop: watch::Receiver<bool>) -> Result<(), MasterError> {
    let mut tick = tokio::time::interval(master.config.repair_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
            _ = tick.tick() => {}
        }
        if master.is_active() {
            master.repair_pass().await;
        }
    }
}

impl Master {
    /// One pass of the repair loop.
    pub async fn repair_pass(&self) {
        let outcome = {
            let meta = self.meta.read().await;
            let mut cluster = self.cluster();
            cluster.repair(&meta, Instant::now(), &self.policy, &|handle, version, source| {
                self.clone_order(handle, version, source)
            })
        };
        if outcome.clones_ordered > 0 {
            tracing::info!(clones = outcome.clones_ordered, "GFS re-replication ordered clones");
        }
        for (handle, version) in outcome.adopt {
            self.adopt(handle, version).await;
        }
        for handle in outcome.fence {
            if let Err(status) = self.fence(handle).await {
                tracing::warn!(%handle, error = %status.message(), "chunk not fenced for its clone; retried next pass");
            }
        }
        for handle in outcome.forget {
            let forgotten = self
                .commit(|meta| {
                    Ok(meta.check_delete_chunk(handle).is_ok().then(|| ev::ChunkDeleted { handle: handle.0 }.into()))
                })
                .await;
            if let Err(status) = forgotten {
                tracing::warn!(%handle, error = %status.message(), "garbage chunk not forgotten; retried next pass");
                break;
            }
        }
    }

    /// A clone order: copy `handle` at `version` from `source`, with a read token good for the whole
    /// time the clone may take.
    fn clone_order(&self, handle: ChunkHandle, version: ChunkVersion, source: &str) -> Order {
        let ttl = self.config.clone_timeout + Duration::from_secs(2);
        let token = CapabilityToken::mint_for(&self.key, TokenOp::Read, handle, version, ttl);
        Order {
            kind: OrderKind::Clone as i32,
            handle: handle.0,
            version: version.0,
            source: source.to_owned(),
            read_token: token.encode().to_vec(),
        }
    }
}
