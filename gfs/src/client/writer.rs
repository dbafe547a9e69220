//! [`GfsWriter`]: sequential writes from an offset of a file as a `tokio::io::AsyncWrite`.
//!
//! Bytes gather in a buffer of one piece ([`GfsConfig::write_piece`](super::GfsConfig::write_piece),
//! cut short at a chunk boundary so that a piece is one lease's mutation). A full piece is written by a
//! background task while the next one fills: at most two pieces are held. Commits are batched: a piece
//! that ends a chunk commits, so does one whose write found stale replicas, and `flush` and `shutdown`
//! commit whatever is acknowledged — so `poll_flush` and `poll_shutdown` are ready only once every byte
//! written is acknowledged by a majority of its chunk's replicas and committed.
//!
//! After a failure every call answers the same error: what was in flight may or may not be written.
//! Dropping the writer without `shutdown` loses the buffered bytes (a piece already handed to the task
//! still completes, within the retry deadline).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::task::JoinHandle;

use super::write::check_range;
use super::{GfsClient, GfsError};
use crate::chunk::CHUNK_SIZE;

pub struct GfsWriter {
    client: GfsClient,
    file: Arc<str>,
    /// The file offset of the buffer's first byte.
    pos: u64,
    buffer: BytesMut,
    job: Option<Job>,
    /// The end of acknowledged pieces not yet committed.
    uncommitted: Option<u64>,
    failed: Option<GfsError>,
    shut_down: bool,
}

/// A piece (or a commit alone) being carried out; answers whether it committed up to `end`.
struct Job {
    task: JoinHandle<Result<bool, GfsError>>,
    end: u64,
}

impl GfsClient {
    /// A writer of the file `file_id` from `offset` on. Call `shutdown` (or `flush`) to know that what
    /// was written is durable and committed.
    pub fn writer(&self, file_id: &str, offset: u64) -> GfsWriter {
        GfsWriter {
            client: self.clone(),
            file: Arc::from(file_id),
            pos: offset,
            buffer: BytesMut::new(),
            job: None,
            uncommitted: None,
            failed: None,
            shut_down: false,
        }
    }
}

impl GfsWriter {
    /// How many bytes the current piece holds: a piece, or less where the chunk ends.
    fn capacity(&self) -> usize {
        let to_boundary = CHUNK_SIZE - self.pos % CHUNK_SIZE;
        self.client.inner.write_piece.min(usize::try_from(to_boundary).unwrap_or(usize::MAX))
    }

    fn check_usable(&self) -> io::Result<()> {
        if let Some(error) = &self.failed {
            return Err(error.duplicate().into());
        }
        if self.shut_down {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the GFS writer was shut down"));
        }
        Ok(())
    }

    /// Hands the buffered piece to a task; with `commit`, the task commits after it.
    fn submit_piece(&mut self, commit: bool) {
        let data = std::mem::take(&mut self.buffer).freeze();
        let offset = self.pos;
        self.pos += data.len() as u64;
        let commit = (commit || self.pos.is_multiple_of(CHUNK_SIZE)).then_some(self.pos);
        self.start(offset, data, commit);
    }

    fn start(&mut self, offset: u64, data: Bytes, commit: Option<u64>) {
        let end = offset + data.len() as u64;
        let (client, file) = (self.client.clone(), Arc::clone(&self.file));
        let task = tokio::spawn(async move { run(client, file, offset, data, commit).await });
        self.job = Some(Job { task, end: commit.unwrap_or(end) });
    }

    /// Waits for the task in flight, if any, and takes in its outcome.
    fn poll_job(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(job) = &mut self.job else { return Poll::Ready(Ok(())) };
        let joined = ready!(Pin::new(&mut job.task).poll(cx));
        let end = job.end;
        self.job = None;
        let error = match joined {
            Ok(Ok(true)) => {
                self.uncommitted = None;
                return Poll::Ready(Ok(()));
            }
            Ok(Ok(false)) => {
                self.uncommitted = Some(end);
                return Poll::Ready(Ok(()));
            }
            Ok(Err(error)) => error,
            Err(join) => GfsError::Internal(format!("the GFS writer's task failed: {join}")),
        };
        let answer = error.duplicate().into();
        self.failed = Some(error);
        Poll::Ready(Err(answer))
    }
}

/// One job of a writer: the piece `data` at `offset` (if any), then a commit up to `commit` (if asked,
/// or if the piece found stale replicas, which the master must hear of at once). Answers whether it
/// committed.
async fn run(
    client: GfsClient,
    file: Arc<str>,
    offset: u64,
    data: Bytes,
    commit: Option<u64>,
) -> Result<bool, GfsError> {
    let mut stale = Vec::new();
    let end = offset + data.len() as u64;
    if !data.is_empty() {
        client.write_piece(&file, offset, data, &mut stale).await?;
    }
    match commit.or((!stale.is_empty()).then_some(end)) {
        Some(length) => {
            client.commit(&file, length, &mut stale).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

impl AsyncWrite for GfsWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check_usable()?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.buffer.len() >= this.capacity() {
            ready!(this.poll_job(cx))?;
            this.submit_piece(false);
        }
        let capacity = this.capacity();
        let n = buf.len().min(capacity - this.buffer.len());
        check_range(this.pos, (this.buffer.len() + n) as u64)?;
        if this.buffer.capacity() == 0 {
            this.buffer.reserve(capacity);
        }
        this.buffer.extend_from_slice(&buf[..n]);
        if this.buffer.len() == capacity && this.job.is_none() {
            this.submit_piece(false);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(error) = &this.failed {
            return Poll::Ready(Err(error.duplicate().into()));
        }
        loop {
            ready!(this.poll_job(cx))?;
            if !this.buffer.is_empty() {
                this.submit_piece(true);
            } else if let Some(end) = this.uncommitted {
                this.start(end, Bytes::new(), Some(end));
            } else {
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        self.shut_down = true;
        Poll::Ready(Ok(()))
    }
}

impl std::fmt::Debug for GfsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GfsWriter")
            .field("file", &self.file)
            .field("pos", &self.pos)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}
