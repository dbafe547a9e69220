//! Mutations: a write or record append at the primary, and the same mutation applied by a secondary.
//!
//! The primary holds the chunk's order lock from before it looks at the chunk until every secondary has
//! answered or run out of time: that is what makes all replicas apply one chunk's mutations in the same
//! order, and what makes a record append's offset (the chunk's length) unique. Under that lock it applies
//! locally (durable when the store returns) while all secondaries apply too, each under
//! [`Deadlines::replicate`](super::Deadlines::replicate): the order is already fixed by the lock, so
//! waiting for the local fsync before starting the remote ones would only add one fsync to every write.
//! A mutation is acknowledged when the primary and enough secondaries for a majority of all replicas
//! (2 of 3) hold it; the secondaries that failed are named in the answer either way, for the master to
//! mark their replicas stale. A mutation that fails on the primary itself is never acknowledged, even if
//! secondaries applied it (an inconsistent region, which the paper's semantics allow for failed
//! mutations and the client's retry overwrites).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::error::{ErrorCode, Refusal};
use super::frame::{Append, Apply, Op, Pad, Prepare, Reply, Write};
use super::server::Shared;
use super::token::TokenOp;
use super::{ChunkRef, DataId, MAX_RECORD};
use crate::chunk::{ChunkError, CHUNK_SIZE};

/// What the secondaries are asked to do.
#[derive(Clone, Copy)]
enum Step {
    Data { offset: u64, data_id: DataId },
    Pad { offset: u64 },
}

pub(crate) async fn write(shared: &Arc<Shared>, w: Write) -> Result<Reply, Refusal> {
    check_secondaries(&w.secondaries)?;
    let chunk = ChunkRef { handle: w.handle, version: w.version };
    let _order = shared.locks.lock(w.handle).await;
    let data = shared.buffer.get(w.data_id, w.handle)?;
    let step = Step::Data { offset: w.offset, data_id: w.data_id };
    let (local, results) = tokio::join!(
        shared.store.write(w.handle, w.version, w.offset, data),
        replicate(shared, chunk, &w.secondaries, step)
    );
    local?;
    shared.buffer.remove(w.data_id);
    let failed = quorum(&w.secondaries, results)?;
    Ok(Reply::Written { offset: w.offset, failed })
}

pub(crate) async fn append(shared: &Arc<Shared>, a: Append) -> Result<Reply, Refusal> {
    check_secondaries(&a.secondaries)?;
    let chunk = ChunkRef { handle: a.handle, version: a.version };
    let _order = shared.locks.lock(a.handle).await;
    let data = shared.buffer.get(a.data_id, a.handle)?;
    let len = data.len() as u64;
    if len > MAX_RECORD {
        return Err(Refusal::new(ErrorCode::TooLarge, format!("a record of {len} bytes is over {MAX_RECORD}")));
    }
    let info = shared.store.stat(a.handle).ok_or(ChunkError::NotFound(a.handle))?;
    if info.version != a.version {
        return Err(ChunkError::StaleVersion { handle: a.handle, stored: info.version, requested: a.version }.into());
    }
    // Under the order lock, and every mutation of this chunk goes through it: the length is current.
    let offset = info.length;
    if offset + len > CHUNK_SIZE {
        // The paper's rule: pad the chunk on every replica so that none of them can take another record,
        // and have the client retry on the next chunk.
        if offset < CHUNK_SIZE {
            shared.store.write(a.handle, a.version, offset, zeros(CHUNK_SIZE - offset)).await?;
        }
        shared.buffer.remove(a.data_id);
        let results = replicate(shared, chunk, &a.secondaries, Step::Pad { offset }).await;
        let failed = failures(&a.secondaries, &results);
        return Ok(Reply::ChunkFull { failed });
    }
    let step = Step::Data { offset, data_id: a.data_id };
    let (local, results) = tokio::join!(
        shared.store.write(a.handle, a.version, offset, data),
        replicate(shared, chunk, &a.secondaries, step)
    );
    local?;
    shared.buffer.remove(a.data_id);
    let failed = quorum(&a.secondaries, results)?;
    Ok(Reply::Written { offset, failed })
}

/// A secondary applies data the primary ordered.
pub(crate) async fn apply(shared: &Arc<Shared>, a: Apply) -> Result<Reply, Refusal> {
    #[cfg(test)]
    if let Some(tx) = &shared.stall_apply {
        let _ = tx.send(());
        std::future::pending::<()>().await;
    }
    let data = shared.buffer.get(a.data_id, a.handle)?;
    shared.store.write(a.handle, a.version, a.offset, data).await?;
    shared.buffer.remove(a.data_id);
    Ok(Reply::Written { offset: a.offset, failed: Vec::new() })
}

/// A secondary pads the chunk from `offset` to its end.
pub(crate) async fn pad(shared: &Arc<Shared>, p: Pad) -> Result<Reply, Refusal> {
    let len = CHUNK_SIZE.checked_sub(p.offset).ok_or(ChunkError::OutOfRange {
        handle: p.handle,
        offset: p.offset,
        len: 0,
        limit: CHUNK_SIZE,
    })?;
    // A primary pads only what a record could not fill; more would be a bug or an attack.
    if len > MAX_RECORD {
        return Err(Refusal::new(ErrorCode::BadRequest, format!("padding of {len} bytes is over a record")));
    }
    if len > 0 {
        shared.store.write(p.handle, p.version, p.offset, zeros(len)).await?;
    }
    Ok(Reply::Written { offset: p.offset, failed: Vec::new() })
}

/// Asks every secondary to take `step`, all at once, each under the replicate deadline; returns each
/// secondary with whether it confirmed.
async fn replicate(
    shared: &Arc<Shared>,
    chunk: ChunkRef,
    secondaries: &[SocketAddr],
    step: Step,
) -> Vec<(SocketAddr, bool)> {
    let deadline = shared.config.deadlines.replicate;
    let mut tasks = JoinSet::new();
    for &addr in secondaries {
        let (op, token_op) = match step {
            Step::Data { offset, data_id } => (
                Op::ApplyWrite(Apply { handle: chunk.handle, version: chunk.version, offset, data_id }),
                TokenOp::ApplyWrite,
            ),
            Step::Pad { offset } => {
                (Op::ApplyPad(Pad { handle: chunk.handle, version: chunk.version, offset }), TokenOp::ApplyPad)
            }
        };
        let token = shared.mint(token_op, chunk);
        let shared = Arc::clone(shared);
        tasks.spawn(async move {
            let ok = match timeout(deadline, shared.peers.call(addr, &token, op)).await {
                Ok(Ok(Reply::Written { .. })) => true,
                Ok(Ok(other)) => {
                    tracing::warn!(%addr, handle = %chunk.handle, ?other, "secondary answered oddly");
                    false
                }
                Ok(Err(error)) => {
                    tracing::warn!(%addr, handle = %chunk.handle, %error, "secondary failed to apply");
                    false
                }
                Err(_) => {
                    tracing::warn!(%addr, handle = %chunk.handle, ?deadline, "secondary did not apply in time");
                    false
                }
            };
            (addr, ok)
        });
    }
    let mut results = Vec::with_capacity(secondaries.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            // A panicked task confirmed nothing; its address is then missing and counts as failed.
            Err(error) => tracing::error!(%error, "replication task failed"),
        }
    }
    results
}

/// The secondaries that did not confirm, in the order the client listed them.
fn failures(secondaries: &[SocketAddr], results: &[(SocketAddr, bool)]) -> Vec<SocketAddr> {
    secondaries.iter().copied().filter(|addr| !results.contains(&(*addr, true))).collect()
}

/// The failed secondaries if a majority of all replicas (this primary included) hold the mutation;
/// otherwise the refusal that keeps it unacknowledged.
fn quorum(secondaries: &[SocketAddr], results: Vec<(SocketAddr, bool)>) -> Result<Vec<SocketAddr>, Refusal> {
    let replicas = secondaries.len() + 1;
    let needed = replicas / 2 + 1;
    let acked = 1 + results.iter().filter(|(_, ok)| *ok).count();
    let failed = failures(secondaries, &results);
    if acked < needed {
        let message = format!("only {acked} of {replicas} replicas applied the mutation ({needed} needed)");
        return Err(Refusal::new(ErrorCode::QuorumFailed, message).failed(failed));
    }
    Ok(failed)
}

/// Secondaries must be distinct: one replica counted twice would fake a quorum.
fn check_secondaries(secondaries: &[SocketAddr]) -> Result<(), Refusal> {
    for (i, addr) in secondaries.iter().enumerate() {
        if secondaries[..i].contains(addr) {
            return Err(Refusal::new(ErrorCode::BadRequest, format!("secondary {addr} listed twice")));
        }
    }
    Ok(())
}

/// Zeros for padding (at most a record's worth; the allocator hands out zeroed pages lazily).
fn zeros(len: u64) -> Bytes {
    Bytes::from(vec![0; len as usize])
}

/// Readies this replica for a lease (see [`Prepare`]): under the chunk's order lock, so that no
/// mutation at the old version is half-way through while the version moves.
pub(crate) async fn prepare(shared: &Arc<Shared>, p: Prepare) -> Result<Reply, Refusal> {
    let _order = shared.locks.lock(p.handle).await;
    if p.from.0 == 0 {
        // A creation must create: a chunk already here (live, quarantined, or left over from an
        // earlier allocation of the handle) may hold bytes nobody wrote into the new chunk, and
        // answering success would hand them out as its contents. Refused as `Exists`, whatever its
        // version.
        shared.store.create(p.handle, p.version).await?;
        return Ok(Reply::Done);
    }
    match shared.store.stat(p.handle) {
        None => return Err(ChunkError::NotFound(p.handle).into()),
        Some(info) if info.version == p.version => {}
        Some(info) if info.version == p.from => {
            shared.store.set_version(p.handle, p.version).await?;
        }
        Some(info) => {
            return Err(ChunkError::StaleVersion { handle: p.handle, stored: info.version, requested: p.from }.into())
        }
    }
    Ok(Reply::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect()
    }

    #[test]
    fn a_majority_of_all_replicas_is_needed() {
        let s = addrs(2);
        assert_eq!(quorum(&s, vec![(s[0], true), (s[1], false)]), Ok(vec![s[1]]));
        assert_eq!(quorum(&s, vec![(s[1], true)]), Ok(vec![s[0]]), "a missing answer is a failure");
        let err = quorum(&s, vec![(s[0], false), (s[1], false)]).expect_err("1 of 3");
        assert_eq!((err.code, err.failed), (ErrorCode::QuorumFailed, s.clone()));
        assert_eq!(quorum(&[], vec![]), Ok(vec![]), "a single replica is its own majority");
        let one = addrs(1);
        assert!(quorum(&one, vec![(one[0], false)]).is_err(), "2 replicas need both");
        assert!(check_secondaries(&[s[0], s[0]]).is_err());
    }
}
