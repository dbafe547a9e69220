//! Block arithmetic — which 64 KiB blocks a byte range touches — and a positioned read that reports a
//! short file instead of failing, so a truncated data file can be named as corruption of a block.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::BLOCK_SIZE;

/// Blocks holding `length` bytes (the last one may be partial).
pub(crate) fn count(length: u64) -> usize {
    length.div_ceil(BLOCK_SIZE) as usize
}

/// The block holding byte `offset`.
pub(crate) fn index(offset: u64) -> usize {
    (offset / BLOCK_SIZE) as usize
}

pub(crate) fn start(block: usize) -> u64 {
    block as u64 * BLOCK_SIZE
}

/// Where `block` ends in a chunk of `length` bytes: a checksum covers only the bytes that exist.
pub(crate) fn end(block: usize, length: u64) -> u64 {
    (start(block) + BLOCK_SIZE).min(length)
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns the bytes read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_arithmetic() {
        assert_eq!(count(0), 0);
        assert_eq!(count(1), 1);
        assert_eq!(count(BLOCK_SIZE), 1);
        assert_eq!(count(BLOCK_SIZE + 1), 2);
        assert_eq!(count(crate::chunk::CHUNK_SIZE), crate::chunk::BLOCKS_PER_CHUNK);
        assert_eq!(index(BLOCK_SIZE - 1), 0);
        assert_eq!(index(BLOCK_SIZE), 1);
        assert_eq!(end(1, BLOCK_SIZE + 10), BLOCK_SIZE + 10);
        assert_eq!(end(0, BLOCK_SIZE + 10), BLOCK_SIZE);
    }
}
