//! Reads: [`GfsClient::read_at`] and [`GfsClient::read_to`].
//!
//! A read is cut at the committed length (as of the locations used; a range past the cached length asks
//! the master again first). Each chunk's part comes from one replica — the first one tried rotates
//! across calls, so that readers spread over the replicas — streamed straight into the caller's writer,
//! one data-plane piece at a time. On any error the read goes on from where it stopped on the next
//! replica; a checksum failure is reported to the master (in the background: a read never waits on the
//! master for it). When every replica failed, the locations are asked for again once; then the read
//! fails, with every replica's error in the message.
//!
//! A replica whose chunk ends before the range does (it answers fewer bytes) may be behind, so the rest
//! is read from the others; when none has more, the rest is a hole (a later chunk was written first)
//! and reads as zeros.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::addr::resolve;
use super::locate::{ChunkReplicas, FileLocations};
use super::{GfsClient, GfsError};
use crate::chunk::CHUNK_SIZE;
use crate::dataplane::ErrorCode;
use crate::rpc::messages::{CorruptReport, LocateRequest};
use crate::rpc::MAX_LOCATE;

/// The most [`GfsClient::read_at`] returns at once; longer ranges stream through
/// [`GfsClient::read_to`] or a [`GfsReader`](super::GfsReader).
pub const MAX_READ_AT: u64 = 256 * 1024 * 1024;

/// Zeros for holes, written a slice at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

impl GfsClient {
    /// Reads up to `len` bytes at `offset` of the file `file_id`: fewer when the committed length ends
    /// first, none when `offset` is the length. An `offset` past the length is
    /// [`GfsError::InvalidArgument`], and so is a range over [`MAX_READ_AT`].
    pub async fn read_at(&self, file_id: &str, offset: u64, len: u64) -> Result<Bytes, GfsError> {
        let (locations, end) = self.plan_read(file_id, offset, len).await?;
        let n = end - offset;
        if n > MAX_READ_AT {
            return Err(GfsError::InvalidArgument(format!(
                "read_at of {n} bytes (at most {MAX_READ_AT}; stream longer ranges with read_to or a reader)"
            )));
        }
        let mut out = Vec::with_capacity(n as usize);
        self.read_range(file_id, locations, offset, end, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// [`read_at`](Self::read_at) into `out`, streamed (never holding more than a data-plane piece),
    /// and without the size limit; returns the bytes written. On an error part of the range may have
    /// been written.
    pub async fn read_to<W: AsyncWrite + Unpin>(
        &self,
        file_id: &str,
        offset: u64,
        len: u64,
        out: &mut W,
    ) -> Result<u64, GfsError> {
        let (locations, end) = self.plan_read(file_id, offset, len).await?;
        self.read_range(file_id, locations, offset, end, out).await?;
        out.flush().await?;
        Ok(end - offset)
    }

    /// The locations to start from and where a read of `len` bytes at `offset` ends.
    pub(super) async fn plan_read(
        &self,
        file: &str,
        offset: u64,
        len: u64,
    ) -> Result<(Arc<FileLocations>, u64), GfsError> {
        let index = chunk_index(offset)?;
        let wanted = offset.saturating_add(len);
        let locations = match self.inner.locations.get(file) {
            Some(cached) if cached.covers(index) && cached.length >= wanted => cached,
            _ => self.locate(file, index).await?,
        };
        if offset > locations.length {
            return Err(GfsError::InvalidArgument(format!(
                "offset {offset} is past the end of file {file} ({} bytes)",
                locations.length
            )));
        }
        Ok((Arc::clone(&locations), wanted.min(locations.length)))
    }

    async fn locate(&self, file: &str, first: u32) -> Result<Arc<FileLocations>, GfsError> {
        let request = LocateRequest { file_id: file.to_owned(), first_index: first, count: MAX_LOCATE };
        let reply = self.inner.master.locate(request).await?;
        let locations = Arc::new(FileLocations::from_reply(reply, first)?);
        self.inner.locations.insert(file, Arc::clone(&locations));
        Ok(locations)
    }

    /// Reads `offset..end` (within the committed length) into `out`, chunk by chunk.
    pub(super) async fn read_range<W: AsyncWrite + Unpin>(
        &self,
        file: &str,
        mut locations: Arc<FileLocations>,
        offset: u64,
        end: u64,
        out: &mut W,
    ) -> Result<(), GfsError> {
        let mut pos = offset;
        while pos < end {
            let index = chunk_index(pos)?;
            if !locations.covers(index) || !locations.usable() {
                locations = self.locate(file, index).await?;
            }
            let chunk_end = end.min((u64::from(index) + 1) * CHUNK_SIZE);
            self.read_chunk(file, &mut locations, index, pos, chunk_end - pos, out).await?;
            pos = chunk_end;
        }
        Ok(())
    }

    /// Reads `len` bytes at file offset `pos`, all within chunk `index`, failing over between replicas.
    async fn read_chunk<W: AsyncWrite + Unpin>(
        &self,
        file: &str,
        locations: &mut Arc<FileLocations>,
        index: u32,
        pos: u64,
        len: u64,
        out: &mut W,
    ) -> Result<(), GfsError> {
        let chunk_offset = pos - u64::from(index) * CHUNK_SIZE;
        let resolve_wait = self.inner.data.config().connect_timeout;
        let mut done = 0;
        let mut relocated = false;
        let mut retry = self.retry("gfs read");
        loop {
            let mut failures = Vec::new();
            let mut corrupt = 0;
            let mut short = false;
            match locations.chunk(index) {
                Some(chunk) if !chunk.replicas.is_empty() => {
                    let n = chunk.replicas.len();
                    let first = self.inner.rotation.fetch_add(1, Ordering::Relaxed);
                    for i in 0..n {
                        let name = &chunk.replicas[(first + i) % n];
                        let addr = match resolve(name, resolve_wait).await {
                            Ok(addr) => addr,
                            Err(why) => {
                                failures.push(format!("{name}: {why}"));
                                continue;
                            }
                        };
                        let mut counted = Counted { inner: &mut *out, written: 0, local_error: None };
                        let at = chunk_offset + done;
                        let result = self
                            .inner
                            .data
                            .read_into(addr, chunk.chunk, at, len - done, &chunk.token, &mut counted)
                            .await;
                        done += counted.written;
                        if let Some(error) = counted.local_error {
                            return Err(GfsError::Io(error));
                        }
                        match result {
                            Ok(_) if done == len => return Ok(()),
                            Ok(_) => short = true,
                            Err(error) => {
                                tracing::warn!(file, chunk = %chunk.chunk.handle, replica = %name, %error, "gfs read failed over");
                                self.inner.locations.forget(file, locations);
                                if error.code() == Some(ErrorCode::Corrupt) {
                                    corrupt += 1;
                                    self.report_corrupt(chunk, name);
                                }
                                failures.push(format!("{name}: {error}"));
                            }
                        }
                    }
                }
                _ => failures.push("no live replica is listed".to_owned()),
            }
            if short && (failures.is_empty() || relocated) {
                return zero_fill(out, len - done).await;
            }
            let what = format!("chunk {index} of file {file}, bytes {}..{}", chunk_offset + done, chunk_offset + len);
            let message = format!("{what}: no replica could serve it ({})", failures.join("; "));
            if corrupt > 0 && corrupt == failures.len() && relocated {
                // Every replica the master lists, twice over, is corrupt: waiting will not help.
                return Err(GfsError::Corrupt(message));
            }
            // No replica answered (all dead, or the master does not know the locations yet, as right
            // after a master takeover): ask the master again, with backoff, until the retry deadline.
            retry.wait(GfsError::Unavailable(message)).await?;
            relocated = true;
            *locations = self.locate(file, index).await?;
        }
    }

    fn report_corrupt(&self, chunk: &ChunkReplicas, replica: &str) {
        let report =
            CorruptReport { handle: chunk.chunk.handle.0, version: chunk.chunk.version.0, addr: replica.to_owned() };
        let master = self.inner.master.clone();
        tokio::spawn(async move {
            let (handle, addr) = (report.handle, report.addr.clone());
            if let Err(error) = master.report_corrupt(report).await {
                tracing::warn!(handle, replica = %addr, %error, "gfs corrupt replica could not be reported");
            }
        });
    }
}

/// The chunk holding file offset `offset`.
pub(super) fn chunk_index(offset: u64) -> Result<u32, GfsError> {
    u32::try_from(offset / CHUNK_SIZE)
        .map_err(|_| GfsError::InvalidArgument(format!("offset {offset} is past the largest file")))
}

async fn zero_fill<W: AsyncWrite + Unpin>(out: &mut W, mut len: u64) -> Result<(), GfsError> {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..n]).await?;
        len -= n as u64;
    }
    Ok(())
}

/// The caller's writer, counting what went into it and keeping its own failures apart from the
/// replica's (the data plane reports both as I/O errors).
struct Counted<'a, W> {
    inner: &'a mut W,
    written: u64,
    local_error: Option<io::Error>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<'_, W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut *this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.written += n as u64;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(error)) => {
                let copy = io::Error::new(error.kind(), error.to_string());
                this.local_error = Some(error);
                Poll::Ready(Err(copy))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
