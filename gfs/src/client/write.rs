//! [`GfsClient::write_at`]: a positioned write, cut at chunk boundaries and into `write_piece` pieces,
//! each carried through failures on its own (see `mutate`), committed at the end of every chunk and of
//! the write — so when it returns, `stat` shows the new length.

use bytes::Bytes;

use super::mutate::Kind;
use super::{GfsClient, GfsError};
use crate::chunk::CHUNK_SIZE;
use crate::rpc::messages::StaleReplica;

/// The largest file the wire contract can address (chunk indexes are 32 bits).
pub(super) const MAX_FILE_SIZE: u64 = (u32::MAX as u64 + 1) * CHUNK_SIZE;

/// A part of a write that lies within one chunk and is at most a piece long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Piece {
    /// Where it goes in the file.
    pub offset: u64,
    /// Where it starts in the caller's data.
    pub start: usize,
    pub len: usize,
}

impl Piece {
    pub fn end(&self) -> u64 {
        self.offset + self.len as u64
    }
}

/// Cuts `len` bytes written at `offset` into pieces of at most `piece` bytes that never cross a chunk
/// boundary.
pub(super) fn pieces(offset: u64, len: usize, piece: usize) -> Vec<Piece> {
    let mut out = Vec::with_capacity(len / piece.max(1) + 2);
    let mut start = 0;
    while start < len {
        let at = offset + start as u64;
        let to_boundary = CHUNK_SIZE - at % CHUNK_SIZE;
        let n = (len - start).min(piece.max(1)).min(usize::try_from(to_boundary).unwrap_or(usize::MAX));
        out.push(Piece { offset: at, start, len: n });
        start += n;
    }
    out
}

/// Refuses a range the file system cannot address.
pub(super) fn check_range(offset: u64, len: u64) -> Result<(), GfsError> {
    match offset.checked_add(len) {
        Some(end) if end <= MAX_FILE_SIZE => Ok(()),
        _ => Err(GfsError::InvalidArgument(format!(
            "{len} bytes at {offset} end past the largest file ({MAX_FILE_SIZE})"
        ))),
    }
}

impl GfsClient {
    /// Writes `data` at `offset` of the file `file_id` (a write may extend the file by at most one chunk
    /// past its last one; what lies between is read as zeros). When this returns the write is
    /// acknowledged by a majority of each chunk's replicas and committed. A write that fails part-way
    /// leaves the range partly written (the committed length covers the pieces that succeeded).
    pub async fn write_at(&self, file_id: &str, offset: u64, data: Bytes) -> Result<(), GfsError> {
        check_range(offset, data.len() as u64)?;
        let pieces = pieces(offset, data.len(), self.inner.write_piece);
        let mut stale = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            self.write_piece(file_id, piece.offset, data.slice(piece.start..piece.start + piece.len), &mut stale)
                .await?;
            let last = i + 1 == pieces.len();
            if last || piece.end().is_multiple_of(CHUNK_SIZE) || !stale.is_empty() {
                self.commit(file_id, piece.end(), &mut stale).await?;
            }
        }
        Ok(())
    }

    /// Writes one piece (within one chunk), not committed; replicas that missed it go into `stale`.
    pub(super) async fn write_piece(
        &self,
        file_id: &str,
        offset: u64,
        data: Bytes,
        stale: &mut Vec<StaleReplica>,
    ) -> Result<(), GfsError> {
        let index = super::read::chunk_index(offset)?;
        let kind = Kind::Write { chunk_offset: offset % CHUNK_SIZE };
        let mut retry = self.retry("write");
        self.mutate(file_id, index, kind, &data, &mut retry, stale)
            .await
            .map_err(|e| e.context(format_args!("writing {} bytes at {offset} of file {file_id}", data.len())))?;
        Ok(())
    }
}
