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
    /// Off the current version while the chunk has current replicas: it missed mutations, or it was
    /// raised by a version raise that was never logged (one that reached too few replicas); delete it
    /// once it stayed so for a while.
    Stale,
    /// Above the current version while no live replica is at the current version: the master raised
    /// the replicas and died before logging it; adopt the reported version.
    Ahead,
    /// Above the current version before the takeover grace is over: other replicas may still report
    /// the current version, so nothing is decided yet.
    Undecided,
    /// A chunk of a deleted file: delete it.
    Garbage,
    /// Neither live nor garbage: an orphan (deleted after a grace period).
    Unknown,
}

/// `live`: the chunk's version if it is live; `garbage`: whether it belongs to a deleted file;
/// `current_held`: whether some live replica is in service at the live version; `settled`: the master
/// had every chunkserver's report (see [`orphan_due`]).
///
/// A version ahead of the log never holds acknowledged data the current replicas lack (no lease is
/// handed out before its raise is logged), while the current replicas may hold writes made under the
/// previous lease after the raise failed on a majority: so it is adopted only when nothing is current.
pub(super) fn disposition(
    live: Option<ChunkVersion>,
    garbage: bool,
    reported: ChunkVersion,
    current_held: bool,
    settled: bool,
) -> Disposition {
    match live {
        Some(current) => match reported.cmp(&current) {
            Ordering::Equal => Disposition::Current,
            Ordering::Less => Disposition::Stale,
            Ordering::Greater if current_held => Disposition::Stale,
            Ordering::Greater if settled => Disposition::Ahead,
            Ordering::Greater => Disposition::Undecided,
        },
        None if garbage => Disposition::Garbage,
        None => Disposition::Unknown,
    }
}

/// Whether a version raise that reached `raised` replicas may be logged, `at_old` being the live
/// replicas that were at the old version (those left out of the raise, a stale one, included).
///
/// Writes under the previous lease need a majority of its replicas; once a majority of them refuse the
/// old version, no write can be acknowledged at it any more, so the replicas left behind hold nothing
/// the raised ones lack. Below that, the raise is not logged: the raised replicas are then ahead of the
/// log and are retired (see [`disposition`]). A lease also needs `min_replicas`; a chunk with fewer
/// live replicas than that (being fenced for repair) needs all of them.
pub(super) fn raise_holds(raised: usize, at_old: usize, min_replicas: usize) -> bool {
    raised > 0 && raised * 2 > at_old && raised >= min_replicas.min(at_old)
}

/// The version the next raise of a chunk at `logged` goes to: above every version any replica was
/// ever seen at or raised to. A raise that was not logged may have left replicas at `logged + 1`
/// while the others took writes at `logged`; raising to that version again would make them current
/// without those writes.
pub(super) fn next_version(logged: ChunkVersion, highest_known: Option<ChunkVersion>) -> ChunkVersion {
    ChunkVersion(logged.max(highest_known.unwrap_or(logged)).0.saturating_add(1))
}

/// The handle for a new chunk: above the last one logged, every one tried before (a failed allocation
/// may have left empty copies behind) and every one a chunkserver reported. `None`: none is left.
pub(super) fn next_handle(last_logged: u64, tried: u64, reported: u64) -> Option<ChunkHandle> {
    last_logged.max(tried).max(reported).checked_add(1).map(ChunkHandle)
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
