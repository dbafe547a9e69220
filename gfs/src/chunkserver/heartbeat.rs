//! The heartbeat loop: tells the master this server is alive, where its data plane is, what it holds
//! (`report`) and how much room it has, and hands the orders in each reply to the delete worker and the
//! cloner.
//!
//! A heartbeat's call is bounded ([`ChunkserverConfig::master_timeout`](super::ChunkserverConfig)) and
//! the loop keeps its pace whatever the master does: a failed heartbeat is logged (once per
//! outage, not once per second) and the next one, a full report, tries again.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::clone::{Accepted, Cloner};
use super::delete::Deleter;
use super::free_space::FreeSpace;
use super::report::{ChunkReporter, Schedule};
use crate::chunk::{ChunkHandle, ChunkStore, ChunkVersion};
use crate::rpc::messages::{Heartbeat, HeartbeatReply, OrderKind};
use crate::rpc::MasterClient;

/// Orders taken from one reply at most (a bounded amount of work per heartbeat; the master repeats
/// what was left out).
const MAX_ORDERS: usize = 10_000;

pub(crate) struct Heartbeater {
    pub master: MasterClient,
    pub store: ChunkStore,
    pub server_id: String,
    pub data_addr: String,
    pub interval: Duration,
    pub full_report_every: u32,
    pub cloner: Cloner,
    pub deleter: Deleter,
    pub free_space: FreeSpace,
}

impl Heartbeater {
    /// Heartbeats until `stop`.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let stopping = super::stopped(stop);
        tokio::pin!(stopping);
        let mut ticks = tokio::time::interval(self.interval);
        // After a slow call, keep the interval between heartbeats rather than firing a burst.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut reporter = ChunkReporter::default();
        let mut schedule = Schedule::new(self.full_report_every);
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = &mut stopping => return,
                _ = ticks.tick() => {}
            }
            let full = schedule.next_is_full();
            let mut report = reporter.report(full, &self.store.report(), &self.cloner.in_flight());
            let clones_done = self.cloner.take_done();
            let heartbeat = Heartbeat {
                server_id: self.server_id.clone(),
                data_addr: self.data_addr.clone(),
                full,
                chunks: std::mem::take(&mut report.chunks),
                removed: std::mem::take(&mut report.removed),
                quarantined: self.store.quarantined().iter().map(|q| q.handle.0).collect(),
                free_bytes: self.free_space.bytes(),
                clones_done: clones_done.iter().map(|h| h.0).collect(),
            };
            let answer = tokio::select! {
                () = &mut stopping => return,
                answer = self.master.heartbeat(heartbeat) => answer,
            };
            match answer {
                Ok(reply) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(down_for_ms = since.elapsed().as_millis() as u64, "master reachable again");
                    }
                    tracing::trace!(full, orders = reply.orders.len(), "heartbeat answered");
                    schedule.answered(full, reply.want_full_report);
                    reporter.acknowledged(report);
                    self.obey(reply);
                }
                Err(status) => {
                    if failing_since.is_none() {
                        failing_since = Some(tokio::time::Instant::now());
                        tracing::warn!(
                            code = ?status.code(), error = status.message(), masters = ?self.master.addrs(),
                            "heartbeat to the master failed; retrying every heartbeat"
                        );
                    } else {
                        tracing::debug!(code = ?status.code(), error = status.message(), "heartbeat failed again");
                    }
                    schedule.failed();
                    self.cloner.restore_done(clones_done);
                }
            }
        }
    }

    fn obey(&self, reply: HeartbeatReply) {
        if reply.orders.len() > MAX_ORDERS {
            tracing::warn!(orders = reply.orders.len(), kept = MAX_ORDERS, "more orders than one heartbeat takes");
        }
        for order in reply.orders.iter().take(MAX_ORDERS) {
            let handle = ChunkHandle(order.handle);
            match OrderKind::try_from(order.kind) {
                Ok(OrderKind::Delete) => self.deleter.order(handle, ChunkVersion(order.version)),
                Ok(OrderKind::Clone) => {
                    if self.cloner.order(order) == Accepted::Duplicate {
                        tracing::debug!(%handle, "clone already under way; order ignored");
                    }
                }
                Ok(OrderKind::Unspecified) | Err(_) => {
                    tracing::warn!(%handle, kind = order.kind, "order of unknown kind ignored");
                }
            }
        }
    }
}
