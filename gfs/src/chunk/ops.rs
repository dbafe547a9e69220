//! The blocking half of each chunk operation. Each function runs on tokio's blocking pool with the
//! chunk's lock held (exclusive for mutations, shared for reads), does positioned I/O on the data file
//! and keeps the block checksums and the metadata file in step with it.
//!
//! Mutations change the data file first and the metadata last; a mutation that fails after touching the
//! disk quarantines the chunk, because what is on disk is then unknown (a failed fsync may have dropped
//! dirty pages) and serving it could hand out bytes nobody wrote.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use super::block;
use super::error::{ChunkError, QuarantineReason};
use super::layout::Dir;
use super::meta::Meta;
use super::types::{ChunkHandle, ChunkInfo, ChunkVersion};
use super::CHUNK_SIZE;

/// A chunk as its lock protects it.
#[derive(Debug)]
pub(crate) enum ChunkState {
    /// In service; `Meta` matches the metadata file on disk.
    Live(Meta),
    Quarantined(QuarantineReason),
    /// Deleted (or its creation failed); a task that waited for the lock finds this and reports not found.
    Deleted,
}

impl ChunkState {
    fn live(&self, handle: ChunkHandle) -> Result<&Meta, ChunkError> {
        match self {
            ChunkState::Live(meta) => Ok(meta),
            ChunkState::Quarantined(reason) => Err(ChunkError::Quarantined { handle, reason: reason.clone() }),
            ChunkState::Deleted => Err(ChunkError::NotFound(handle)),
        }
    }

    /// Takes the chunk out of service after a mutation failed part-way, and passes the error on.
    fn fail(&mut self, handle: ChunkHandle, error: ChunkError) -> ChunkError {
        tracing::error!(%handle, %error, "chunk mutation failed part-way; quarantining the chunk");
        *self = ChunkState::Quarantined(QuarantineReason::Failed(error.to_string()));
        error
    }
}

/// `offset + len`, if it stays within `limit`.
pub(crate) fn checked_end(handle: ChunkHandle, offset: u64, len: u64, limit: u64) -> Result<u64, ChunkError> {
    offset.checked_add(len).filter(|&end| end <= limit).ok_or(ChunkError::OutOfRange { handle, offset, len, limit })
}

pub(crate) fn create(dir: &Dir, handle: ChunkHandle, version: ChunkVersion) -> Result<Meta, ChunkError> {
    let path = dir.data(handle);
    let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| match e.kind() {
        // A stray file the scan did not adopt (it appeared after open): not ours to overwrite.
        io::ErrorKind::AlreadyExists => ChunkError::Exists(handle),
        _ => ChunkError::io("create", &path, e),
    })?;
    let meta = Meta::empty(handle, version);
    let made = file.sync_all().map_err(|e| ChunkError::io("fsync", &path, e)).and_then(|()| meta.persist(dir));
    if let Err(error) = made {
        // Best effort: whatever is left is reported by the next open as a chunk with missing metadata.
        let _ = fs::remove_file(&path);
        return Err(error);
    }
    Ok(meta)
}

pub(crate) fn write(
    dir: &Dir,
    handle: ChunkHandle,
    state: &mut ChunkState,
    version: ChunkVersion,
    offset: u64,
    data: &[u8],
) -> Result<ChunkInfo, ChunkError> {
    let meta = state.live(handle)?;
    if meta.version != version {
        return Err(ChunkError::StaleVersion { handle, stored: meta.version, requested: version });
    }
    let end = checked_end(handle, offset, data.len() as u64, CHUNK_SIZE)?;
    if data.is_empty() {
        return Ok(meta.info());
    }
    let path = dir.data(handle);
    let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| ChunkError::io("open", &path, e))?;
    // Computed before the file changes, so that a refused write (a corrupt neighbouring block) changes nothing.
    let crcs = updated_crcs(&file, &path, meta, offset, data, end)?;
    let updated = Meta { handle, version, length: meta.length.max(end), crcs };

    let committed = file
        .write_all_at(data, offset)
        .map_err(|e| ChunkError::io("write", &path, e))
        .and_then(|()| file.sync_data().map_err(|e| ChunkError::io("fsync", &path, e)))
        .and_then(|()| updated.persist(dir));
    match committed {
        Ok(()) => {
            let info = updated.info();
            *state = ChunkState::Live(updated);
            Ok(info)
        }
        Err(error) => Err(state.fail(handle, error)),
    }
}

/// The chunk's block checksums once `data` is written at `offset` (ending at `end`).
///
/// Blocks the write covers whole are summed straight from `data`. A block it covers in part (at either
/// end, or the old last block when the write lands past the end and leaves a zero-filled gap) is read,
/// checked against its old checksum, patched and summed again — checking first, as the GFS paper says,
/// so that a new checksum never blesses corruption in the bytes the write did not replace.
fn updated_crcs(
    file: &File,
    path: &Path,
    meta: &Meta,
    offset: u64,
    data: &[u8],
    end: u64,
) -> Result<Vec<u32>, ChunkError> {
    let (old_len, new_len) = (meta.length, meta.length.max(end));
    let mut crcs = meta.crcs.clone();
    crcs.resize(block::count(new_len), 0);
    for b in block::index(offset.min(old_len))..=block::index(end - 1) {
        let (bs, be) = (block::start(b), block::end(b, new_len));
        crcs[b] = if offset <= bs && be <= end {
            crc32c::crc32c(&data[(bs - offset) as usize..(be - offset) as usize])
        } else {
            let mut buf = vec![0; (be - bs) as usize];
            if bs < old_len {
                let old = &mut buf[..(block::end(b, old_len) - bs) as usize];
                read_verified(meta.handle, file, path, b, old, meta.crcs[b])?;
            }
            let (ws, we) = (bs.max(offset), be.min(end));
            if ws < we {
                buf[(ws - bs) as usize..(we - bs) as usize]
                    .copy_from_slice(&data[(ws - offset) as usize..(we - offset) as usize]);
            }
            crc32c::crc32c(&buf)
        };
    }
    Ok(crcs)
}

/// Reads block `b` (as many bytes as `buf` holds) and checks it against `expected`.
fn read_verified(
    handle: ChunkHandle,
    file: &File,
    path: &Path,
    b: usize,
    buf: &mut [u8],
    expected: u32,
) -> Result<(), ChunkError> {
    let n = block::read_full_at(file, buf, block::start(b)).map_err(|e| ChunkError::io("read", path, e))?;
    if n < buf.len() || crc32c::crc32c(buf) != expected {
        return Err(ChunkError::Corrupt { handle, block: b as u32 });
    }
    Ok(())
}

/// Reads `[offset, offset + len)` clamped to the chunk's length; an `offset` past the length is refused.
/// The whole blocks around the range are read in one call and each is verified before any byte is returned.
pub(crate) fn read(
    dir: &Dir,
    handle: ChunkHandle,
    state: &ChunkState,
    offset: u64,
    len: u64,
) -> Result<Bytes, ChunkError> {
    let meta = state.live(handle)?;
    if offset > meta.length {
        return Err(ChunkError::OutOfRange { handle, offset, len, limit: meta.length });
    }
    let end = offset.saturating_add(len).min(meta.length);
    if end == offset {
        return Ok(Bytes::new());
    }
    let (first, last) = (block::index(offset), block::index(end - 1));
    let (start, stop) = (block::start(first), block::end(last, meta.length));
    let path = dir.data(handle);
    let mut file = File::open(&path).map_err(|e| ChunkError::io("open", &path, e))?;
    // Read into spare capacity: zeroing a buffer the read overwrites anyway cost as much as checksumming.
    let mut buf = Vec::with_capacity((stop - start) as usize);
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.take(stop - start).read_to_end(&mut buf))
        .map_err(|e| ChunkError::io("read", &path, e))?;
    let n = buf.len();
    for b in first..=last {
        let (lo, hi) = ((block::start(b) - start) as usize, (block::end(b, meta.length) - start) as usize);
        if hi > n || crc32c::crc32c(&buf[lo..hi]) != meta.crcs[b] {
            return Err(ChunkError::Corrupt { handle, block: b as u32 });
        }
    }
    Ok(Bytes::from(buf).slice((offset - start) as usize..(end - start) as usize))
}

pub(crate) fn verify(dir: &Dir, handle: ChunkHandle, state: &ChunkState) -> Result<ChunkInfo, ChunkError> {
    let meta = state.live(handle)?;
    verify_meta(dir, meta)?;
    Ok(meta.info())
}

/// Checks every block of the chunk `meta` describes, 1 MiB at a time; the first bad block is the error.
pub(crate) fn verify_meta(dir: &Dir, meta: &Meta) -> Result<(), ChunkError> {
    const BLOCKS_PER_READ: usize = 16;
    let path = dir.data(meta.handle);
    let file = File::open(&path).map_err(|e| ChunkError::io("open", &path, e))?;
    let mut buf = Vec::new();
    for first in (0..meta.crcs.len()).step_by(BLOCKS_PER_READ) {
        let last = (first + BLOCKS_PER_READ).min(meta.crcs.len()) - 1;
        let start = block::start(first);
        buf.resize((block::end(last, meta.length) - start) as usize, 0);
        let n = block::read_full_at(&file, &mut buf, start).map_err(|e| ChunkError::io("read", &path, e))?;
        for b in first..=last {
            let (lo, hi) = ((block::start(b) - start) as usize, (block::end(b, meta.length) - start) as usize);
            if hi > n || crc32c::crc32c(&buf[lo..hi]) != meta.crcs[b] {
                return Err(ChunkError::Corrupt { handle: meta.handle, block: b as u32 });
            }
        }
    }
    Ok(())
}

pub(crate) fn set_version(
    dir: &Dir,
    handle: ChunkHandle,
    state: &mut ChunkState,
    version: ChunkVersion,
) -> Result<ChunkInfo, ChunkError> {
    let meta = state.live(handle)?;
    if version < meta.version {
        return Err(ChunkError::VersionRegression { handle, current: meta.version, requested: version });
    }
    if version == meta.version {
        // The master repeats an order it is not sure arrived; repeating it changes nothing.
        return Ok(meta.info());
    }
    let updated = Meta { version, ..meta.clone() };
    match updated.persist(dir) {
        Ok(()) => {
            let info = updated.info();
            *state = ChunkState::Live(updated);
            Ok(info)
        }
        Err(error) => Err(state.fail(handle, error)),
    }
}

/// Takes the chunk out of service for `reason` and marks it so on disk, so that it stays out after a
/// restart. A chunk already quarantined keeps its first reason but gets the mark all the same.
pub(crate) fn quarantine(
    dir: &Dir,
    handle: ChunkHandle,
    state: &mut ChunkState,
    reason: QuarantineReason,
) -> Result<(), ChunkError> {
    if matches!(state, ChunkState::Live(_)) {
        // Out of service before the mark is written: if the mark fails, nothing is served until the
        // restart all the same.
        *state = ChunkState::Quarantined(reason);
    }
    let text = match state {
        ChunkState::Quarantined(first) => first.to_string(),
        _ => return Err(ChunkError::NotFound(handle)),
    };
    let path = dir.quarantine_mark(handle);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| ChunkError::io("create", &path, e))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| ChunkError::io("write", &path, e))?;
    dir.sync()
}

/// The reason recorded in a quarantine mark (at most [`MAX_MARK`] bytes of it).
pub(crate) fn read_mark(path: &Path) -> Result<String, ChunkError> {
    let file = File::open(path).map_err(|e| ChunkError::io("open", path, e))?;
    let mut text = Vec::new();
    file.take(MAX_MARK).read_to_end(&mut text).map_err(|e| ChunkError::io("read", path, e))?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The most of a quarantine mark read back: a reason is a line, and a mark is not trusted input.
const MAX_MARK: u64 = 4096;

/// Removes the chunk's files, live or quarantined.
pub(crate) fn delete(dir: &Dir, handle: ChunkHandle, state: &mut ChunkState) -> Result<(), ChunkError> {
    if matches!(state, ChunkState::Deleted) {
        return Err(ChunkError::NotFound(handle));
    }
    // Metadata first: a crash part-way leaves a data file without metadata, which is never served.
    // The quarantine mark last: a mark left alone by a crash is removed by the next open.
    let removed = [dir.meta(handle), dir.meta_tmp(handle), dir.data(handle), dir.quarantine_mark(handle)]
        .iter()
        .try_for_each(|path| match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ChunkError::io("remove", path, e)),
            _ => Ok(()),
        })
        .and_then(|()| dir.sync());
    match removed {
        Ok(()) => {
            *state = ChunkState::Deleted;
            Ok(())
        }
        // Left quarantined: the master's next delete order tries again.
        Err(error) => Err(state.fail(handle, error)),
    }
}
