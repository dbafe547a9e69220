//! Chunk leases and the version raises behind them (GFS paper §3.1, §4.5).
//!
//! A lease names the primary that orders a chunk's mutations. While one is valid (not expired, its
//! primary alive) it is handed out again as is, with fresh tokens. A new lease first readies the
//! replicas through the data plane's `Prepare` — creating a new chunk at version 1, or raising an
//! existing chunk's current replicas from `v` past every version seen — and only then appends
//! `ChunkAdded` or `VersionBumped`: a crash in between leaves replicas ahead of the log, which their
//! next report adopts if no replica is current any more. A raise is logged only once it reached a
//! majority of the replicas at the old version (see [`plan::raise_holds`]): until then the previous
//! lease may still take writes on the others. A replica that missed a logged raise is recognisably
//! stale from then on.
//!
//! Grants on one chunk are serialized (two concurrent requests never both raise its version); chunk
//! allocation is serialized cluster-wide, because handles must reach the log in increasing order, and
//! a handle once tried is never tried again (a failed allocation may leave empty copies behind).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use edd_events::catalog::gfs as ev;
use edd_events::Token;
use futures_util::future::join_all;
use tonic::Status;

use super::cluster::{ChunkLease, Cluster, CorruptVerdict};
use super::node::{unix_ms, Master};
use super::plan::{self, ServerId};
use crate::chunk::{ChunkHandle, ChunkVersion};
use crate::dataplane::{CapabilityToken, ChunkRef, TokenOp};
use crate::rpc::messages::{Lease, StaleReplica};

/// A write may name a chunk at most this many chunks past the file's last one (each allocated under
/// the cluster-wide allocation lock, so one request allocates at most this many).
pub(super) const MAX_WRITE_GAP: u64 = 1;

/// The chunk a lease request is about, given the file's chunk count; `Err` says why the request is
/// impossible.
///
/// A write names any chunk up to [`MAX_WRITE_GAP`] past the last one (with a gap of 1: at most the
/// chunk count). An append names the last chunk or the chunk count (for a new chunk); an earlier chunk
/// is answered with the last one.
pub(super) fn lease_target(index: u32, append: bool, count: u64) -> Result<u32, String> {
    let wanted = u64::from(index);
    if append {
        return match count {
            0 if wanted == 0 => Ok(0),
            0 => Err(format!("the file is empty: an append names chunk 0, not {wanted}")),
            _ if wanted > count => Err(format!("the file has {count} chunks: an append names at most chunk {count}")),
            _ if wanted + 1 < count => u32::try_from(count - 1).map_err(|_| "too many chunks".to_owned()),
            _ => Ok(index),
        };
    }
    if wanted >= count + MAX_WRITE_GAP {
        return Err(format!("the file has {count} chunks: a write names at most chunk {}", count + MAX_WRITE_GAP - 1));
    }
    Ok(index)
}

impl Master {
    /// `LeaseChunk`: see [`crate::rpc::messages::LeaseRequest`].
    pub async fn lease_chunk(&self, file: &Token, index: u32, append: bool) -> Result<Lease, Status> {
        self.require_active()?;
        let count = self.chunk_count(file).await?;
        let target = lease_target(index, append, count).map_err(Status::invalid_argument)?;
        if u64::from(target) < count {
            return self.lease_existing(file, target, append).await;
        }
        let mut allocating = self.alloc.lock().await;
        // Another request may have allocated while this one waited.
        let count = self.chunk_count(file).await?;
        let target = lease_target(index, append, count).map_err(Status::invalid_argument)?;
        if u64::from(target) < count {
            drop(allocating);
            return self.lease_existing(file, target, append).await;
        }
        let mut lease = None;
        for next in count..=u64::from(target) {
            let next = u32::try_from(next).map_err(|_| Status::invalid_argument("chunk index out of range"))?;
            lease = Some(self.allocate(file, next, append, &mut allocating).await?);
        }
        lease.ok_or_else(|| Status::internal("no chunk was allocated"))
    }

    async fn chunk_count(&self, file: &Token) -> Result<u64, Status> {
        let meta = self.meta.read().await;
        let f = meta.file(file).ok_or_else(|| Status::not_found(format!("file {file} does not exist")))?;
        Ok(f.chunks.len() as u64)
    }

    /// A new chunk at the end of `file`: replicas created at version 1 on the best live servers, then
    /// `ChunkAdded`. The caller holds the allocation lock, which guards `tried`: the highest handle
    /// tried so far.
    async fn allocate(&self, file: &Token, index: u32, append: bool, tried: &mut u64) -> Result<Lease, Status> {
        let (policy, wanted) = (self.policy, self.config.min_replicas);
        self.await_reports(|cluster, now| cluster.live_loads(now, &policy).len() >= wanted).await?;
        let last_logged = self.meta.read().await.next_handle().0.saturating_sub(1);
        let handle = plan::next_handle(last_logged, *tried, self.cluster().highest_reported())
            .ok_or_else(|| Status::resource_exhausted("no chunk handle is left"))?;
        // Taken from here on, whatever happens next.
        *tried = handle.0;
        let _chunk = self.chunk_locks.lock(handle).await;
        let candidates = {
            let cluster = self.cluster();
            let loads = cluster.live_loads(Instant::now(), &self.policy);
            let chosen = plan::choose_new_replicas(&loads, self.config.replication);
            sockets(&cluster, chosen)
        };
        if candidates.len() < self.config.min_replicas {
            return Err(Status::unavailable(format!(
                "{} live chunkservers; a new chunk needs at least {}",
                candidates.len(),
                self.config.min_replicas
            )));
        }
        let version = ChunkVersion(1);
        let prepared = self.prepare(handle, ChunkVersion(0), version, candidates).await;
        self.enough(&prepared)?;
        self.cluster().record_prepared(handle, version, &prepared);
        let event = ev::ChunkAdded { file_id: file.clone(), index, handle: handle.0, version: version.0 };
        self.commit(|_| Ok(Some(event.into()))).await?;
        self.grant(handle, index, version, &prepared, append)
    }

    /// The lease on an allocated chunk: the valid one, or a new one with the version raised.
    async fn lease_existing(&self, file: &Token, index: u32, append: bool) -> Result<Lease, Status> {
        let handle = {
            let meta = self.meta.read().await;
            let f = meta.file(file).ok_or_else(|| Status::not_found(format!("file {file} does not exist")))?;
            *f.chunks
                .get(index as usize)
                .ok_or_else(|| Status::not_found(format!("file {file} has no chunk {index}")))?
        };
        let _chunk = self.chunk_locks.lock(handle).await;
        let version = self.live_version(handle).await?;
        let (policy, wanted) = (self.policy, self.config.min_replicas);
        let reported = |cluster: &Cluster, now| cluster.current_replicas(handle, version, now, &policy).len() >= wanted;
        self.await_reports(reported).await?;
        let now = Instant::now();
        let (candidates, at_old) = {
            let cluster = self.cluster();
            if let Some(lease) = cluster.valid_lease(handle, version, now, &self.policy) {
                return self.answer(&cluster, handle, index, lease, append);
            }
            let mut current = cluster.current_replicas(handle, version, now, &self.policy);
            plan::spread(handle, &mut current);
            (sockets(&cluster, current), cluster.live_at(handle, version, now, &self.policy))
        };
        if candidates.len() < self.config.min_replicas {
            return Err(Status::unavailable(format!(
                "chunk {handle} has {} live current replicas; a lease needs {}",
                candidates.len(),
                self.config.min_replicas
            )));
        }
        let raised = self.cluster().next_raise(handle, version);
        let prepared = self.prepare(handle, version, raised, candidates).await;
        self.cluster().record_prepared(handle, raised, &prepared);
        self.enough(&prepared)?;
        self.check_raise(handle, &prepared, at_old)?;
        self.raise(handle, version, raised).await?;
        self.grant(handle, index, raised, &prepared, append)
    }

    /// The chunk's current version, or `NOT_FOUND` if its file was deleted meanwhile.
    async fn live_version(&self, handle: ChunkHandle) -> Result<ChunkVersion, Status> {
        self.meta.read().await.version(handle).ok_or_else(|| Status::not_found(format!("chunk {handle} is not live")))
    }

    /// Appends `VersionBumped` to `raised`, provided the chunk is still at `from`.
    async fn raise(&self, handle: ChunkHandle, from: ChunkVersion, raised: ChunkVersion) -> Result<(), Status> {
        self.commit(|meta| match meta.version(handle) {
            Some(v) if v == from => Ok(Some(ev::VersionBumped { handle: handle.0, version: raised.0 }.into())),
            Some(v) => Err(Status::aborted(format!("chunk {handle} moved to version {v} meanwhile; retry"))),
            None => Err(Status::not_found(format!("chunk {handle} is not live"))),
        })
        .await?;
        Ok(())
    }

    /// Whether a raise that reached `prepared` of the `at_old` live replicas at the old version may be
    /// logged (see [`plan::raise_holds`]); if not, the raised replicas stay ahead of the log.
    fn check_raise(&self, handle: ChunkHandle, prepared: &[ServerId], at_old: usize) -> Result<(), Status> {
        if plan::raise_holds(prepared.len(), at_old, self.config.min_replicas) {
            return Ok(());
        }
        Err(Status::unavailable(format!(
            "the new version of chunk {handle} reached {} of its {at_old} replicas, too few to take it; retry",
            prepared.len()
        )))
    }

    fn enough(&self, prepared: &[ServerId]) -> Result<(), Status> {
        if prepared.len() < self.config.min_replicas {
            return Err(Status::unavailable(format!(
                "only {} replicas could be readied; a lease needs {}",
                prepared.len(),
                self.config.min_replicas
            )));
        }
        Ok(())
    }

    /// Readies `servers` (in parallel, each within the prepare deadline) for `handle` at `to`;
    /// returns those that confirmed, in the given order.
    async fn prepare(
        &self,
        handle: ChunkHandle,
        from: ChunkVersion,
        to: ChunkVersion,
        servers: Vec<(ServerId, SocketAddr)>,
    ) -> Vec<ServerId> {
        // Signed to the second: a little margin past the call's own deadline.
        let ttl = self.config.prepare_timeout + std::time::Duration::from_secs(2);
        let token = CapabilityToken::mint_for(&self.key, TokenOp::Prepare, handle, to, ttl);
        let chunk = ChunkRef { handle, version: to };
        let calls = servers.into_iter().map(|(id, socket)| {
            let token = &token;
            async move {
                let call = self.data.prepare(socket, chunk, from, token);
                match tokio::time::timeout(self.config.prepare_timeout, call).await {
                    Ok(Ok(())) => Some(id),
                    Ok(Err(error)) => {
                        tracing::warn!(server = %id, %handle, %error, "chunk replica could not be readied");
                        None
                    }
                    Err(_) => {
                        tracing::warn!(server = %id, %handle, "chunk replica not readied in time");
                        None
                    }
                }
            }
        });
        join_all(calls).await.into_iter().flatten().collect()
    }

    /// Records a new lease on `prepared` (the first is the primary; the replicas were recorded at
    /// `version` before the log was written) and answers it.
    fn grant(
        &self,
        handle: ChunkHandle,
        index: u32,
        version: ChunkVersion,
        prepared: &[ServerId],
        append: bool,
    ) -> Result<Lease, Status> {
        let Some((primary, secondaries)) = prepared.split_first() else {
            return Err(Status::unavailable(format!("no replica of chunk {handle} could be readied")));
        };
        let lease = ChunkLease {
            version,
            primary: primary.clone(),
            secondaries: secondaries.to_vec(),
            expires: Instant::now() + self.config.chunk_lease,
            expires_at: SystemTime::now() + self.config.chunk_lease,
        };
        let mut cluster = self.cluster();
        let answer = self.answer(&cluster, handle, index, &lease, append)?;
        cluster.grant(handle, lease);
        Ok(answer)
    }

    /// The wire form of `lease`, with tokens good until it expires.
    fn answer(
        &self,
        cluster: &Cluster,
        handle: ChunkHandle,
        index: u32,
        lease: &ChunkLease,
        append: bool,
    ) -> Result<Lease, Status> {
        let addr = |id: &ServerId| cluster.server(id).map(|s| s.addr.clone());
        let primary = addr(&lease.primary).ok_or_else(|| Status::unavailable("the lease's primary is gone; retry"))?;
        let secondaries = lease.secondaries.iter().filter_map(addr).collect();
        let mint = |op| CapabilityToken::mint(&self.key, op, handle, lease.version, lease.expires_at).encode().to_vec();
        let mutate = if append { TokenOp::Append } else { TokenOp::Write };
        Ok(Lease {
            index,
            handle: handle.0,
            version: lease.version.0,
            primary,
            secondaries,
            push_token: mint(TokenOp::Push),
            mutate_token: mint(mutate),
            expires_ms: unix_ms(lease.expires_at),
        })
    }

    // ---- stale and corrupt replicas ---------------------------------------------------------------

    /// Takes replicas that missed acknowledged mutations of `file`'s chunks out of service: each
    /// affected chunk's remaining current replicas are raised to a new version and its lease dropped.
    pub async fn retire_stale(&self, file: &Token, stale: &[StaleReplica]) -> Result<(), Status> {
        let mut by_chunk: BTreeMap<ChunkHandle, Vec<&StaleReplica>> = BTreeMap::new();
        for replica in stale {
            by_chunk.entry(ChunkHandle(replica.handle)).or_default().push(replica);
        }
        for (handle, replicas) in by_chunk {
            self.retire_stale_chunk(file, handle, &replicas).await?;
        }
        Ok(())
    }

    async fn retire_stale_chunk(
        &self,
        file: &Token,
        handle: ChunkHandle,
        stale: &[&StaleReplica],
    ) -> Result<(), Status> {
        let _chunk = self.chunk_locks.lock(handle).await;
        let version = {
            let meta = self.meta.read().await;
            match meta.file_of(handle) {
                Some((owner, _)) if owner.id == *file => {}
                _ => {
                    return Err(Status::invalid_argument(format!("chunk {handle} is not a live chunk of file {file}")))
                }
            }
            meta.version(handle).ok_or_else(|| Status::not_found(format!("chunk {handle} is not live")))?
        };
        let now = Instant::now();
        let (good, at_old) = {
            let cluster = self.cluster();
            let current = cluster.current_replicas(handle, version, now, &self.policy);
            // A replica that missed a mutation at an older version and is current now was raised after
            // it missed it (a raise can overtake a write still replicating under an older lease): it
            // lacks that mutation all the same.
            let stale: Vec<ServerId> = stale
                .iter()
                .filter(|r| r.version <= version.0)
                .filter_map(|r| cluster.server_at(&r.addr))
                .filter(|id| current.contains(id))
                .collect();
            if stale.is_empty() {
                return Ok(());
            }
            let good: Vec<ServerId> = current.into_iter().filter(|id| !stale.contains(id)).collect();
            // The stale ones still take writes at the old version: they count against the raise.
            let at_old = cluster.live_at(handle, version, now, &self.policy);
            if !plan::raise_holds(good.len(), at_old, self.config.min_replicas) {
                return Err(Status::failed_precondition(format!(
                    "retiring those replicas would leave chunk {handle} with {} of its {at_old} replicas",
                    good.len()
                )));
            }
            (sockets(&cluster, good), at_old)
        };
        let raised = self.cluster().next_raise(handle, version);
        let prepared = self.prepare(handle, version, raised, good).await;
        self.cluster().record_prepared(handle, raised, &prepared);
        self.check_raise(handle, &prepared, at_old)?;
        self.raise(handle, version, raised).await?;
        self.cluster().revoke(handle);
        Ok(())
    }

    /// Raises an under-replicated chunk's version on its current replicas before it is cloned: writes
    /// under any earlier lease are refused from then on (a prepare waits for a mutation in progress on
    /// its replica), so the copy cannot miss one.
    pub async fn fence(&self, handle: ChunkHandle) -> Result<(), Status> {
        let _chunk = self.chunk_locks.lock(handle).await;
        let version = self.live_version(handle).await?;
        let (current, at_old, raised) = {
            let mut cluster = self.cluster();
            let now = Instant::now();
            let current = cluster.current_replicas(handle, version, now, &self.policy);
            let at_old = cluster.live_at(handle, version, now, &self.policy);
            let raised = cluster.next_raise(handle, version);
            (sockets(&cluster, current), at_old, raised)
        };
        let prepared = self.prepare(handle, version, raised, current).await;
        self.cluster().record_prepared(handle, raised, &prepared);
        self.check_raise(handle, &prepared, at_old)?;
        self.raise(handle, version, raised).await?;
        self.cluster().fenced_at(handle, raised);
        Ok(())
    }

    /// A reader found the replica at `addr` corrupt while reading at version `read`: it is not listed
    /// any more and is deleted, unless it is the chunk's last current replica (a damaged copy holds more
    /// than none) or the report is about another version than the current one.
    pub async fn condemn(&self, handle: ChunkHandle, addr: &str, read: ChunkVersion) -> Result<(), Status> {
        let Some(version) = self.meta.read().await.version(handle) else { return Ok(()) };
        let verdict = self.cluster().judge_corrupt(addr, handle, read, version, Instant::now(), &self.policy);
        match verdict {
            CorruptVerdict::Ignored => Ok(()),
            CorruptVerdict::Kept => Err(Status::failed_precondition(format!(
                "{addr} holds the last current replica of chunk {handle}; it is kept"
            ))),
            CorruptVerdict::Condemned => {
                tracing::warn!(%addr, %handle, "replica reported corrupt; it will be deleted and replaced");
                Ok(())
            }
        }
    }

    /// Adopts a version a replica reports above the log's (a raise whose append never happened),
    /// provided no live replica is current any more (checked again here: the cluster moves on).
    pub async fn adopt(&self, handle: ChunkHandle, version: ChunkVersion) {
        // Under the chunk's lock: a grant in progress raises versions before it appends.
        let _chunk = self.chunk_locks.lock(handle).await;
        let adopted = self
            .commit(|meta| match meta.version(handle) {
                Some(current) if current < version => {
                    let cluster = self.cluster();
                    let now = Instant::now();
                    let orphaned = cluster.settled(now, &self.policy)
                        && cluster.current_replicas(handle, current, now, &self.policy).is_empty();
                    Ok(orphaned.then(|| ev::VersionBumped { handle: handle.0, version: version.0 }.into()))
                }
                _ => Ok(None),
            })
            .await;
        match adopted {
            Ok(Some(_)) => {
                tracing::info!(%handle, %version, "adopted a chunk version reported above the log's");
                self.cluster().revoke(handle);
            }
            Ok(None) => {}
            Err(status) => tracing::warn!(%handle, %version, error = %status.message(), "chunk version not adopted"),
        }
    }
}

/// The data-plane addresses of `servers` (those still known), in order.
fn sockets(cluster: &Cluster, servers: Vec<ServerId>) -> Vec<(ServerId, SocketAddr)> {
    servers.into_iter().filter_map(|id| cluster.server(&id).map(|s| s.socket).map(|socket| (id, socket))).collect()
}
