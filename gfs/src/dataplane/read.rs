//! Streaming reads: the range goes out in `Piece` frames of at most [`READ_PIECE`] bytes, each read from
//! the store (which verifies every block it touches) while the previous one is on the wire. A checksum
//! failure part-way is sent in band as an `Error` frame (`Corrupt`) in place of the next piece, so the
//! connection stays usable and the client knows to read another replica and report this one.
//!
//! A range is cut at the replica's length; one starting past it (but within a chunk) answers no bytes.

use std::io;

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::error::{ErrorCode, Refusal};
use super::frame::{Read, Reply, Response};
use super::server::{send, Next, Shared};
use super::stream::Stream;
use crate::chunk::{ChunkError, ChunkHandle, ChunkStore, BLOCK_SIZE, CHUNK_SIZE};

/// Bytes per piece: whole checksum blocks (a piece boundary never splits one, so no block is read
/// twice), and few enough that a read's memory stays small whatever its length.
const READ_PIECE: u64 = 16 * BLOCK_SIZE;

pub(crate) async fn serve(shared: &Shared, stream: &mut Stream, id: u64, r: Read) -> io::Result<Next> {
    let d = shared.config.deadlines;
    let total = match range(shared, &r).await {
        Ok(total) => total,
        Err(refusal) => {
            send(stream, id, Reply::Error(refusal), d.header).await?;
            return Ok(Next::Continue);
        }
    };
    send(stream, id, Reply::ReadStart { len: total }, d.header).await?;
    let end = r.offset + total;
    let mut next = (r.offset < end).then(|| fetch(&shared.store, r.handle, r.offset, end));
    while let Some((pos, len, task)) = next.take() {
        let fetched = match task.await {
            Ok(fetched) => fetched,
            Err(error) => Err(ChunkError::Task(error.to_string())),
        };
        let bytes = match fetched {
            Ok(bytes) if bytes.len() as u64 == len => bytes,
            Ok(bytes) => {
                let message = format!("chunk {} gave {} bytes at {pos}, {len} expected", r.handle, bytes.len());
                send(stream, id, Reply::Error(Refusal::new(ErrorCode::Internal, message)), d.header).await?;
                return Ok(Next::Continue);
            }
            Err(error) => {
                if let ChunkError::Corrupt { .. } = error {
                    tracing::error!(%error, "corrupt block found while serving a read");
                }
                send(stream, id, Reply::Error(error.into()), d.header).await?;
                return Ok(Next::Continue);
            }
        };
        // Start on the next piece before this one goes out.
        let after = pos + len;
        next = (after < end).then(|| fetch(&shared.store, r.handle, after, end));
        let header = Response { id, reply: Reply::Piece { len: len as u32 } }.encode();
        let sent = timeout(d.data, async {
            stream.write_all(&header).await?;
            stream.write_all(&bytes).await?;
            stream.flush().await
        });
        match sent.await {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "reader stalled")),
        }
    }
    Ok(Next::Continue)
}

/// The bytes the read will return, after the checks that decide whether it may be served at all.
async fn range(shared: &Shared, r: &Read) -> Result<u64, Refusal> {
    let Some(info) = shared.store.stat(r.handle) else {
        // Not in service: let the store say why (missing, or quarantined).
        shared.store.read(r.handle, 0, 0).await?;
        return Err(ChunkError::NotFound(r.handle).into());
    };
    // A replica at another version missed mutations (or the reader's view is old): never serve it.
    if info.version != r.version {
        return Err(ChunkError::StaleVersion { handle: r.handle, stored: info.version, requested: r.version }.into());
    }
    if r.offset > CHUNK_SIZE {
        return Err(ChunkError::OutOfRange { handle: r.handle, offset: r.offset, len: r.len, limit: CHUNK_SIZE }.into());
    }
    // Past this replica's length is not an error: it may be a hole (a later chunk of the file was
    // written first) that reads as zeros, and the client, not this replica, knows the file's length.
    // An empty answer says "nothing here"; the client reads the rest elsewhere or zero-fills it.
    Ok(r.offset.saturating_add(r.len).min(info.length).saturating_sub(r.offset))
}

type Fetch = JoinHandle<Result<bytes::Bytes, ChunkError>>;

/// Starts reading the piece at `pos` (up to the next piece boundary or `end`) in the background.
fn fetch(store: &ChunkStore, handle: ChunkHandle, pos: u64, end: u64) -> (u64, u64, Fetch) {
    let len = ((pos / READ_PIECE + 1) * READ_PIECE).min(end) - pos;
    let store = store.clone();
    (pos, len, tokio::spawn(async move { store.read(handle, pos, len).await }))
}
