//! The metadata file `<handle>.meta`: a chunk's version, its length and the CRC32C of each of its blocks.
//!
//! Layout, little-endian, at most 4,136 bytes:
//!
//! ```text
//! magic "EDDGFSM1" (8) · handle u64 · version u64 · length u64 · block count u32
//! · block CRC32C u32 × count · CRC32C of every preceding byte u32
//! ```
//!
//! The trailing checksum makes a torn or bit-rotten file detectable; the handle inside guards against a
//! file copied under the wrong name. A new version of the file is written beside the old one
//! (`<handle>.meta.tmp`), fsynced, renamed over it and the directory fsynced: a crash leaves the old
//! metadata or the new, never a mix, and a leftover `.tmp` marks a write that was cut short.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use super::block;
use super::error::ChunkError;
use super::layout::Dir;
use super::types::{ChunkHandle, ChunkInfo, ChunkVersion};
use super::{BLOCKS_PER_CHUNK, CHUNK_SIZE};

const MAGIC: &[u8; 8] = b"EDDGFSM1";
const HEADER_LEN: usize = 8 + 8 + 8 + 8 + 4;
const SEAL_LEN: usize = 4;
/// The largest valid file: a full chunk's checksums. Anything longer is refused before it is read.
pub(crate) const MAX_LEN: usize = HEADER_LEN + 4 * BLOCKS_PER_CHUNK + SEAL_LEN;

/// A chunk's metadata. Invariant (checked on decode, kept by every update): `crcs.len()` is the number
/// of blocks in `length` bytes, and `length <= CHUNK_SIZE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub length: u64,
    pub crcs: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MetaError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0} bytes is not a possible metadata size")]
    Size(u64),
    #[error("not a chunk metadata file (bad magic)")]
    Magic,
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Seal { stored: u32, computed: u32 },
    #[error("length {0} exceeds the chunk size")]
    Length(u64),
    #[error("{count} block checksums for a length of {length} bytes")]
    Blocks { length: u64, count: u32 },
    #[error("the file describes chunk {0}")]
    Handle(ChunkHandle),
}

impl Meta {
    pub(crate) fn empty(handle: ChunkHandle, version: ChunkVersion) -> Meta {
        Meta { handle, version, length: 0, crcs: Vec::new() }
    }

    pub(crate) fn info(&self) -> ChunkInfo {
        ChunkInfo { handle: self.handle, version: self.version, length: self.length }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4 * self.crcs.len() + SEAL_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.handle.0.to_le_bytes());
        out.extend_from_slice(&self.version.0.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        // At most BLOCKS_PER_CHUNK by the invariant, so the cast cannot truncate.
        out.extend_from_slice(&(self.crcs.len() as u32).to_le_bytes());
        for crc in &self.crcs {
            out.extend_from_slice(&crc.to_le_bytes());
        }
        let seal = crc32c::crc32c(&out);
        out.extend_from_slice(&seal.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Meta, MetaError> {
        if bytes.len() < HEADER_LEN + SEAL_LEN || bytes.len() > MAX_LEN {
            return Err(MetaError::Size(bytes.len() as u64));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(MetaError::Magic);
        }
        // The seal first: no field of a torn file is believed, not even its block count.
        let (body, seal) = bytes.split_at(bytes.len() - SEAL_LEN);
        let (stored, computed) = (le_u32(seal, 0), crc32c::crc32c(body));
        if stored != computed {
            return Err(MetaError::Seal { stored, computed });
        }
        let handle = ChunkHandle(le_u64(body, 8));
        let version = ChunkVersion(le_u64(body, 16));
        let length = le_u64(body, 24);
        let count = le_u32(body, 32);
        if length > CHUNK_SIZE {
            return Err(MetaError::Length(length));
        }
        if count as usize != block::count(length) || body.len() != HEADER_LEN + 4 * count as usize {
            return Err(MetaError::Blocks { length, count });
        }
        let crcs = body[HEADER_LEN..].chunks_exact(4).map(|c| le_u32(c, 0)).collect();
        Ok(Meta { handle, version, length, crcs })
    }

    /// Reads and checks the metadata file at `path`, which must describe `handle`.
    pub(crate) fn load(path: &Path, handle: ChunkHandle) -> Result<Meta, MetaError> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        if size > MAX_LEN as u64 {
            return Err(MetaError::Size(size));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(MAX_LEN as u64 + 1).read_to_end(&mut bytes)?;
        let meta = Meta::decode(&bytes)?;
        if meta.handle != handle {
            return Err(MetaError::Handle(meta.handle));
        }
        Ok(meta)
    }

    /// Replaces the chunk's metadata file atomically and durably (tmp, fsync, rename, fsync directory).
    pub(crate) fn persist(&self, dir: &Dir) -> Result<(), ChunkError> {
        let tmp = dir.meta_tmp(self.handle);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| ChunkError::io("create", &tmp, e))?;
        file.write_all(&self.encode()).map_err(|e| ChunkError::io("write", &tmp, e))?;
        file.sync_all().map_err(|e| ChunkError::io("fsync", &tmp, e))?;
        drop(file);
        let path = dir.meta(self.handle);
        std::fs::rename(&tmp, &path).map_err(|e| ChunkError::io("rename into", &path, e))?;
        dir.sync()
    }
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::BLOCK_SIZE;

    fn sample(length: u64) -> Meta {
        let crcs = (0..block::count(length) as u32).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
        Meta { handle: ChunkHandle(0xfeed), version: ChunkVersion(3), length, crcs }
    }

    #[test]
    fn round_trip_from_empty_to_full() {
        for length in [0, 1, BLOCK_SIZE, BLOCK_SIZE + 1, CHUNK_SIZE] {
            let meta = sample(length);
            let bytes = meta.encode();
            assert!(bytes.len() <= MAX_LEN);
            assert_eq!(Meta::decode(&bytes).expect("decode"), meta);
        }
        assert_eq!(sample(CHUNK_SIZE).encode().len(), MAX_LEN);
    }

    #[test]
    fn any_flipped_bit_or_truncation_is_refused() {
        let bytes = sample(3 * BLOCK_SIZE + 5).encode();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(Meta::decode(&bad).is_err(), "flip at {at}");
        }
        for len in 0..bytes.len() {
            assert!(Meta::decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn inconsistent_fields_are_refused_even_when_sealed() {
        let mut meta = sample(2 * BLOCK_SIZE);
        meta.crcs.push(0);
        assert!(matches!(Meta::decode(&meta.encode()), Err(MetaError::Blocks { .. })));
        let mut meta = sample(0);
        meta.length = CHUNK_SIZE + 1;
        assert!(matches!(Meta::decode(&meta.encode()), Err(MetaError::Length(_))));
    }
}
