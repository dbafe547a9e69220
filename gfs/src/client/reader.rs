//! [`GfsReader`]: a range of a file as a `tokio::io::AsyncRead`.
//!
//! A background task (started on the first read) reads the range in pieces of [`READ_PIECE`] bytes,
//! each ending at a chunk boundary at the latest, [`READ_AHEAD`] pieces at a time (from different
//! replicas, so one chunkserver's disk and checksumming are not the limit), and hands them over in order
//! through a channel of one: at most `READ_AHEAD + 2` pieces are held. Where the range ends is fixed when the task starts: the committed length then, if the
//! caller gave no length (or a longer one). Dropping the reader stops the task.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{GfsClient, GfsError};
use crate::chunk::CHUNK_SIZE;

/// Bytes fetched per step of a [`GfsReader`].
pub const READ_PIECE: u64 = 4 * 1024 * 1024;

/// Pieces fetched at once: the reader holds at most this many plus the one being consumed.
pub const READ_AHEAD: usize = 3;

pub struct GfsReader {
    state: State,
    /// What the caller has not taken yet of the last piece received.
    current: Bytes,
}

enum State {
    NotStarted { client: GfsClient, file: Arc<str>, offset: u64, len: Option<u64> },
    Reading { pieces: mpsc::Receiver<Result<Bytes, GfsError>>, task: JoinHandle<()> },
    Done,
}

impl GfsClient {
    /// A reader of `len` bytes (or up to the end) at `offset` of the file `file_id`.
    pub fn reader(&self, file_id: &str, offset: u64, len: Option<u64>) -> GfsReader {
        GfsReader {
            state: State::NotStarted { client: self.clone(), file: Arc::from(file_id), offset, len },
            current: Bytes::new(),
        }
    }
}

impl GfsReader {
    /// The next piece of the range as fetched, without copying it: the same bytes `read` would give
    /// over one or more calls (what a caller forwarding `Bytes`, such as an HTTP body, wants).
    /// `None` at the end of the range.
    pub async fn next_piece(&mut self) -> Option<Result<Bytes, GfsError>> {
        if !self.current.is_empty() {
            return Some(Ok(std::mem::take(&mut self.current)));
        }
        loop {
            match &mut self.state {
                State::NotStarted { .. } => self.start(),
                State::Reading { pieces, .. } => match pieces.recv().await {
                    Some(Ok(piece)) if piece.is_empty() => continue,
                    Some(Ok(piece)) => return Some(Ok(piece)),
                    Some(Err(error)) => {
                        self.state = State::Done;
                        return Some(Err(error));
                    }
                    None => {
                        self.state = State::Done;
                        return None;
                    }
                },
                State::Done => return None,
            }
        }
    }

    /// Starts the background task, once.
    fn start(&mut self) {
        if let State::NotStarted { client, file, offset, len } = &self.state {
            let (tx, rx) = mpsc::channel(1);
            let task = tokio::spawn(fetch(client.clone(), Arc::clone(file), *offset, *len, tx));
            self.state = State::Reading { pieces: rx, task };
        }
    }
}

impl AsyncRead for GfsReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            // Nothing fits: an empty answer here must not be mistaken for the end of the range.
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                State::NotStarted { .. } => this.start(),
                State::Reading { pieces, .. } => match pieces.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(piece))) => this.current = piece,
                    Poll::Ready(Some(Err(error))) => {
                        this.state = State::Done;
                        return Poll::Ready(Err(error.into()));
                    }
                    Poll::Ready(None) => this.state = State::Done,
                },
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl Drop for GfsReader {
    fn drop(&mut self) {
        if let State::Reading { task, .. } = &self.state {
            task.abort();
        }
    }
}

impl std::fmt::Debug for GfsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GfsReader").field("buffered", &self.current.len()).finish_non_exhaustive()
    }
}

/// The reader's task: sends the range's pieces in order, or one error, then ends.
async fn fetch(
    client: GfsClient,
    file: Arc<str>,
    offset: u64,
    len: Option<u64>,
    tx: mpsc::Sender<Result<Bytes, GfsError>>,
) {
    let end = match client.plan_read(&file, offset, len.unwrap_or(u64::MAX)).await {
        Ok((_, end)) => end,
        Err(error) => {
            let _ = tx.send(Err(error)).await;
            return;
        }
    };
    // The pieces, fetched [`READ_AHEAD`] at a time (each read picks the next replica in rotation, so
    // concurrent pieces come from different chunkservers) and delivered in order.
    let pieces = piece_ranges(offset, end).map(|(pos, n)| {
        let (client, file) = (client.clone(), Arc::clone(&file));
        async move {
            match client.read_at(&file, pos, n).await {
                Ok(piece) if piece.len() as u64 == n => Ok(piece),
                Ok(piece) => Err(GfsError::Internal(format!(
                    "file {file} gave {} bytes at {pos} where {n} are committed",
                    piece.len()
                ))),
                Err(error) => Err(error),
            }
        }
    });
    let mut pieces = futures_util::stream::iter(pieces).buffered(READ_AHEAD);
    while let Some(piece) = pieces.next().await {
        let failed = piece.is_err();
        if tx.send(piece).await.is_err() || failed {
            return;
        }
    }
}

/// `(position, length)` of each piece of `offset..end`: at most [`READ_PIECE`] bytes, never across a
/// chunk boundary.
fn piece_ranges(offset: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let boundary = (pos / CHUNK_SIZE + 1) * CHUNK_SIZE;
        let n = (end - pos).min(READ_PIECE).min(boundary - pos);
        let piece = (pos, n);
        pos += n;
        Some(piece)
    })
}
