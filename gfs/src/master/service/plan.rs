//! The master's placement and repair decisions as pure functions over plain data: which servers get a
//! new chunk, what a reported replica is worth, when an orphan may go, which clones to order. No
//! clocks (times are passed in), no locks, no I/O — so each rule is tested on its own.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chunk::{ChunkHandle, ChunkVersion, CHUNK_SIZE};

/// A chunkserver's stable id, as it names itself in heartbeats.
pub(super) type ServerId = Arc<str>;

/// What placement needs to know about a live chunkserver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ServerLoad {
    pub id: ServerId,
    pub free_bytes: u64,
    pub chunks: usize,
    /// Clones ordered to it and not yet done.
    pub incoming: usize,
}

/// Which server is the better home for one more chunk: more free space, then fewer chunks, then the
/// smaller id (so equal servers are chosen the same way every time).
fn better_home(a: &ServerLoad, b: &ServerLoad) -> Ordering {
    b.free_bytes.cmp(&a.free_bytes).then(a.chunks.cmp(&b.chunks)).then(a.id.cmp(&b.id))
}

/// The servers for a new chunk's replicas: up to `n` of `servers`, best homes first.
pub(super) fn choose_new_replicas(servers: &[ServerLoad], n: usize) -> Vec<ServerId> {
    let mut ranked: Vec<&ServerLoad> = servers.iter().collect();
    ranked.sort_by(|a, b| better_home(a, b));
    ranked.into_iter().take(n).map(|s| s.id.clone()).collect()
}

/// Rotates `items` by the chunk's handle, so that the first replica (the primary, the replica read
/// first) differs from chunk to chunk instead of always being the same server.
pub(super) fn spread<T>(handle: ChunkHandle, items: &mut [T]) {
    if !items.is_empty() {
        let by = (handle.0 % items.len() as u64) as usize;
        items.rotate_left(by);
    }
}

/// What a replica a chunkserver reports is, compared with the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Disposition {
    /// A live chunk at its current version: a location.
    Current,
    /// Below the current version: it missed mutations; delete it.
    Stale,
    /// Above the current version: the master granted a lease and died before logging the raise
    /// (replicas are prepared before the log is written); adopt the reported version.
    Ahead,
    /// A chunk of a deleted file: delete it.
    Garbage,
    /// Neither live nor garbage: an orphan (deleted after a grace period).
    Unknown,
}

/// `live`: the chunk's version if it is live; `garbage`: whether it belongs to a deleted file.
pub(super) fn disposition(live: Option<ChunkVersion>, garbage: bool, reported: ChunkVersion) -> Disposition {
    match live {
        Some(current) => match reported.cmp(&current) {
            Ordering::Equal => Disposition::Current,
            Ordering::Less => Disposition::Stale,
            Ordering::Greater => Disposition::Ahead,
        },
        None if garbage => Disposition::Garbage,
        None => Disposition::Unknown,
    }
}

/// Whether an orphan first seen at `first_seen` may be deleted now. `settled`: the master has been
/// active, with full reports, for its takeover grace — a fresh master never deletes on partial
/// knowledge (the chunk may be one it is allocating right now, or one its log does not have yet).
pub(super) fn orphan_due(first_seen: Instant, now: Instant, grace: Duration, settled: bool) -> bool {
    settled && now.saturating_duration_since(first_seen) >= grace
}

/// A live chunk with fewer current replicas than the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Shortfall {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    /// Live servers holding it at the current version (clone sources).
    pub current: Vec<ServerId>,
    /// Servers that must not receive a copy: every server holding any version of it (stale,
    /// quarantined, condemned ones included) and the destinations of clones in flight.
    pub holders: Vec<ServerId>,
    /// Clones of it in flight.
    pub in_flight: usize,
    /// It has a valid lease: mutations may be under way at this version, and a copy taken now could
    /// miss some while carrying the same version. Cloned after the lease ends.
    pub leased: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CloneLimits {
    /// Replicas wanted per chunk.
    pub target: usize,
    /// Clones in flight cluster-wide, at most.
    pub max_total: usize,
    /// Clones in flight to one destination, at most.
    pub per_destination: usize,
    /// Clones in flight now.
    pub in_flight: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PlannedClone {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub source: ServerId,
    pub destination: ServerId,
}

/// The clones to order now: chunks with the fewest current replicas first (one replica left is more
/// urgent than two), each up to the target, within the cluster-wide and per-destination bounds.
/// Chunks with no current replica cannot be cloned and are skipped, as are leased ones.
pub(super) fn plan_clones(mut short: Vec<Shortfall>, servers: &[ServerLoad], limits: CloneLimits) -> Vec<PlannedClone> {
    short.retain(|s| !s.leased && !s.current.is_empty() && s.current.len() + s.in_flight < limits.target);
    short.sort_by_key(|s| (s.current.len() + s.in_flight, s.handle));
    let mut loads = servers.to_vec();
    let mut budget = limits.max_total.saturating_sub(limits.in_flight);
    let mut planned = Vec::new();
    for chunk in short {
        let wanted = limits.target - chunk.current.len() - chunk.in_flight;
        let mut excluded = chunk.holders.clone();
        for k in 0..wanted {
            if budget == 0 {
                return planned;
            }
            let destination = loads
                .iter_mut()
                .filter(|l| l.incoming < limits.per_destination && !excluded.contains(&l.id))
                .min_by(|a, b| better_home(a, b));
            let Some(destination) = destination else { break };
            destination.incoming += 1;
            destination.chunks += 1;
            destination.free_bytes = destination.free_bytes.saturating_sub(CHUNK_SIZE);
            excluded.push(destination.id.clone());
            // Several clones of one chunk read from different sources.
            let source = chunk.current[(chunk.handle.0 as usize).wrapping_add(k) % chunk.current.len()].clone();
            planned.push(PlannedClone {
                handle: chunk.handle,
                version: chunk.version,
                source,
                destination: destination.id.clone(),
            });
            budget -= 1;
        }
    }
    planned
}
