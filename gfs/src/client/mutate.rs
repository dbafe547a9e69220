//! One mutation (a piece of a write, or a record append) of one chunk, carried through failures: lease,
//! push along `[primary, secondaries..]`, then the write or append at the primary; and `Commit`, which
//! makes acknowledged mutations visible and reports stale replicas.
//!
//! What each failure means for the next attempt:
//! - a replica the push or the mutation names as failed (`Downstream`, `QuorumFailed`): left out of the
//!   lease's chains and retried at once while a majority of the lease's replicas remains; otherwise the
//!   ones left out are reported stale and a new lease is asked for;
//! - the primary unreachable, timing out, or unable to hold the chunk (`Corrupt`, `Unavailable`):
//!   reported stale, new lease;
//! - fewer than a majority of the lease's replicas usable before the mutation (some never resolved), or
//!   holding it after: the missing ones reported stale, new lease;
//! - the lease out of step with the replicas (`StaleVersion`, `NotFound`, a refused token): new lease;
//! - anything passing (`BufferFull`, pushed data expired, the master unreachable): back off, retry;
//! - a request that cannot succeed: fail now.
//!
//! Every replica left out of a mutation that was acknowledged missed it, so the mutation's caller
//! reports them stale with its `Commit`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::lease::{ChunkLease, NoChain};
use super::retry::Retry;
use super::{GfsClient, GfsError};
use crate::dataplane::{AppendOutcome, ClientError, ErrorCode};
use crate::rpc::messages::{CommitRequest, LeaseRequest, StaleReplica};

#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Write { chunk_offset: u64 },
    Append,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Applied by a majority, at this offset in the chunk.
    Written { chunk_offset: u64 },
    /// The record did not fit; the chunk was padded to its end.
    ChunkFull,
}

pub(super) struct Applied {
    pub lease: Arc<ChunkLease>,
    pub outcome: Outcome,
}

/// What a failed attempt means for the next one.
enum Failure {
    /// Replicas were left out and the lease still has a majority: try again now.
    Excluded,
    /// The lease cannot take the mutation: report `stale`, drop it, back off, ask for a new one.
    Relet {
        error: GfsError,
        stale: Vec<String>,
    },
    /// Back off and try again.
    Transient(GfsError),
    Fatal(GfsError),
}

impl GfsClient {
    /// Has `data` applied to chunk `index` of `file` by a majority of its replicas. Replicas that missed
    /// it are added to `stale` for the caller's `Commit`.
    pub(super) async fn mutate(
        &self,
        file: &str,
        index: u32,
        kind: Kind,
        data: &Bytes,
        retry: &mut Retry,
        stale: &mut Vec<StaleReplica>,
    ) -> Result<Applied, GfsError> {
        let append = matches!(kind, Kind::Append);
        loop {
            retry.check()?;
            let lease = match retry.bounded(self.lease(file, index, append)).await {
                Ok(lease) => lease,
                Err(error) if error.is_transient() => {
                    retry.wait(error).await?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let attempt = match retry.bounded(async { Ok(self.attempt(&lease, kind, data).await) }).await {
                Ok(attempt) => attempt,
                Err(error) => Err(Failure::Transient(error)),
            };
            match attempt {
                Ok((outcome, missed)) => {
                    add_stale(stale, missed.iter().map(|name| lease.stale(name)));
                    return Ok(Applied { lease, outcome });
                }
                // Bounded: each time, the lease loses a replica, and it has at most a handful.
                Err(Failure::Excluded) => continue,
                Err(Failure::Relet { error, stale: names }) => {
                    tracing::warn!(file, chunk = %lease.chunk.handle, %error, stale = ?names, "gfs lease given up");
                    self.inner.leases.forget(file, append, &lease);
                    if !names.is_empty() {
                        add_stale(stale, names.iter().map(|name| lease.stale(name)));
                        self.report_stale(file, stale, retry).await;
                    }
                    retry.wait(error).await?;
                }
                Err(Failure::Transient(error)) => retry.wait(error).await?,
                Err(Failure::Fatal(error)) => return Err(error),
            }
        }
    }

    /// The cached lease on chunk `index` of `file`, or a new one from the master.
    async fn lease(&self, file: &str, index: u32, append: bool) -> Result<Arc<ChunkLease>, GfsError> {
        if let Some(lease) = self.inner.leases.get(file, index, append) {
            return Ok(lease);
        }
        let reply = self.inner.master.lease_chunk(LeaseRequest { file_id: file.to_owned(), index, append }).await?;
        let lease = Arc::new(ChunkLease::from_reply(reply, self.inner.data.config().connect_timeout).await?);
        if !append && lease.index != index {
            return Err(GfsError::Internal(format!("asked for a lease on chunk {index}, got chunk {}", lease.index)));
        }
        self.inner.leases.insert(file, append, Arc::clone(&lease));
        if append {
            // The master answers with the file's last chunk: start there next time.
            self.inner.leases.set_append_hint(file, lease.index);
        }
        Ok(lease)
    }

    /// One push and mutation under `lease`; on success, the outcome and the replicas that missed it.
    async fn attempt(&self, lease: &ChunkLease, kind: Kind, data: &Bytes) -> Result<(Outcome, Vec<String>), Failure> {
        let (primary, secondaries) = match lease.chain() {
            Ok(chain) => chain,
            Err(NoChain::PrimaryLost) => {
                let mut stale = lease.excluded();
                if !stale.contains(&lease.primary.name) {
                    stale.push(lease.primary.name.clone());
                }
                let error = GfsError::Unavailable(format!("the primary {} cannot be reached", lease.primary.name));
                return Err(Failure::Relet { error, stale });
            }
            Err(NoChain::TooFewReplicas { usable, needed }) => {
                let error = GfsError::Unavailable(format!(
                    "only {usable} of the {} replicas of chunk {} are usable; a mutation needs {needed}",
                    lease.replicas(),
                    lease.chunk.handle
                ));
                return Err(Failure::Relet { error, stale: lease.excluded() });
            }
        };
        let chain: Vec<SocketAddr> = std::iter::once(primary).chain(secondaries.iter().copied()).collect();
        let data_plane = &self.inner.data;
        let data_id = data_plane
            .push(&chain, lease.chunk, data.clone(), &lease.push_token)
            .await
            .map_err(|e| classify(lease, primary, e))?;
        let token = &lease.mutate_token;
        let (outcome, failed) = match kind {
            Kind::Write { chunk_offset } => {
                let written = data_plane
                    .write(primary, &secondaries, lease.chunk, chunk_offset, data_id, token)
                    .await
                    .map_err(|e| classify(lease, primary, e))?;
                (Outcome::Written { chunk_offset: written.offset }, written.failed)
            }
            Kind::Append => {
                match data_plane
                    .append(primary, &secondaries, lease.chunk, data_id, token)
                    .await
                    .map_err(|e| classify(lease, primary, e))?
                {
                    AppendOutcome::Appended(written) => {
                        (Outcome::Written { chunk_offset: written.offset }, written.failed)
                    }
                    AppendOutcome::ChunkFull { failed } => (Outcome::ChunkFull, failed),
                }
            }
        };
        let failed: Vec<String> = failed.into_iter().map(|addr| lease.name_of(addr)).collect();
        // They missed this mutation: keep them out of the lease's later ones too. Every replica left out
        // of the lease, now or before, missed it.
        if !lease.exclude(&failed) {
            // The primary's quorum counts only the chain it was sent: a chain that was a bare majority
            // of a larger lease can confirm a mutation held by fewer than a majority of the lease's
            // replicas. Not acknowledged: a new lease and another attempt rewrite it.
            let error = GfsError::Unavailable(format!(
                "chunk {}: the mutation reached fewer than {} of its {} replicas",
                lease.chunk.handle,
                lease.majority(),
                lease.replicas()
            ));
            return Err(Failure::Relet { error, stale: lease.excluded() });
        }
        Ok((outcome, lease.excluded()))
    }

    /// Makes acknowledged mutations up to `length` visible and reports `stale` replicas (then cleared),
    /// retrying until the deadline. A stale report the master refuses (it would leave the chunk without
    /// a current replica) is dropped rather than failing an acknowledged write.
    pub(super) async fn commit(&self, file: &str, length: u64, stale: &mut Vec<StaleReplica>) -> Result<(), GfsError> {
        let mut retry = self.retry("commit");
        loop {
            let request = CommitRequest { file_id: file.to_owned(), length, stale: stale.clone() };
            match retry.bounded(async { Ok(self.inner.master.commit(request).await?) }).await {
                Ok(_) => {
                    self.committed_stale(file, stale);
                    return Ok(());
                }
                Err(error) if error.is_transient() => retry.wait(error).await?,
                Err(error) if !stale.is_empty() => {
                    tracing::warn!(file, %error, ?stale, "gfs master refused a stale report; committing without it");
                    stale.clear();
                }
                Err(error) => return Err(error.context(format_args!("committing {length} bytes of file {file}"))),
            }
        }
    }

    /// Reports `stale` now (best effort: what fails goes with the next `Commit`).
    pub(super) async fn report_stale(&self, file: &str, stale: &mut Vec<StaleReplica>, retry: &Retry) {
        let request = CommitRequest { file_id: file.to_owned(), length: 0, stale: stale.clone() };
        match retry.bounded(async { Ok(self.inner.master.commit(request).await?) }).await {
            Ok(_) => self.committed_stale(file, stale),
            Err(error) => tracing::warn!(file, %error, "gfs stale report failed; it goes with the next commit"),
        }
    }

    /// The master raised the version of each reported chunk: the leases held on them are void.
    fn committed_stale(&self, file: &str, stale: &mut Vec<StaleReplica>) {
        for report in stale.drain(..) {
            self.inner.leases.forget_chunk(file, report.handle);
        }
    }
}

/// What a data-plane failure under `lease` (whose primary is at `primary`) means for the next attempt.
fn classify(lease: &ChunkLease, primary: SocketAddr, error: ClientError) -> Failure {
    let chunk = lease.chunk.handle;
    let primary_lost = |error: ClientError| {
        let mut stale = lease.excluded();
        if !stale.contains(&lease.primary.name) {
            stale.push(lease.primary.name.clone());
        }
        Failure::Relet { error: GfsError::Unavailable(format!("primary of chunk {chunk}: {error}")), stale }
    };
    let Some(code) = error.code() else {
        return match error {
            ClientError::Invalid(why) => Failure::Fatal(GfsError::Internal(why)),
            // Connect, I/O, a timeout or a broken answer: all from the primary, the only replica we talk to.
            other => primary_lost(other),
        };
    };
    match code {
        ErrorCode::Downstream | ErrorCode::QuorumFailed => {
            let names: Vec<String> =
                error.failed().iter().filter(|&&addr| addr != primary).map(|&addr| lease.name_of(addr)).collect();
            if names.is_empty() {
                Failure::Transient(GfsError::Unavailable(error.to_string()))
            } else if lease.exclude(&names) {
                tracing::warn!(chunk = %chunk, failed = ?names, %error, "gfs replicas left out of the lease");
                Failure::Excluded
            } else {
                let error = GfsError::Unavailable(format!("too few replicas of chunk {chunk} left: {error}"));
                Failure::Relet { error, stale: lease.excluded() }
            }
        }
        ErrorCode::Corrupt | ErrorCode::Unavailable => primary_lost(error),
        ErrorCode::StaleVersion | ErrorCode::NotFound | ErrorCode::Unauthorized => {
            Failure::Relet { error: GfsError::Unavailable(error.to_string()), stale: Vec::new() }
        }
        ErrorCode::BufferFull | ErrorCode::UnknownData | ErrorCode::Internal | ErrorCode::Unknown(_) => {
            Failure::Transient(GfsError::Unavailable(error.to_string()))
        }
        ErrorCode::TooLarge | ErrorCode::BadRequest | ErrorCode::OutOfRange => {
            Failure::Fatal(GfsError::InvalidArgument(error.to_string()))
        }
    }
}

/// Adds reports not already in `stale`.
fn add_stale(stale: &mut Vec<StaleReplica>, reports: impl Iterator<Item = StaleReplica>) {
    for report in reports {
        if !stale.contains(&report) {
            stale.push(report);
        }
    }
}
