//! What `open` finds in the data directory: every chunk's files checked against each other, leftover
//! temporary files removed, and each chunk either put in service or quarantined with a reason.
//!
//! A chunk is quarantined, not dropped, when its metadata is missing, unreadable or fails its checksum,
//! when its data file is missing or not the length the metadata records, or — if a `.meta.tmp` shows a
//! write was cut short — when a full check finds a block that does not match; and a chunk quarantined
//! while the store ran (see `ops::quarantine`) stays quarantined by its mark. Only those interrupted
//! chunks get the full check: reading every chunk at start-up would cost minutes on a full disk, and a
//! bad block elsewhere is still caught by the read that touches it or by the scrubber.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use super::error::{ChunkError, QuarantineReason};
use super::layout::{self, Dir, Entry};
use super::meta::Meta;
use super::ops::{self, ChunkState};
use super::types::ChunkHandle;

/// What a scan found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub chunks: BTreeMap<ChunkHandle, ChunkState>,
    pub removed_tmp: Vec<PathBuf>,
    pub ignored: Vec<PathBuf>,
}

pub(crate) fn scan(dir: &Dir) -> Result<Scan, ChunkError> {
    let (mut data, mut metas, mut interrupted) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut marked = BTreeSet::new();
    let (mut removed_tmp, mut ignored) = (Vec::new(), Vec::new());
    let entries = fs::read_dir(dir.path()).map_err(|e| ChunkError::io("list", dir.path(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ChunkError::io("list", dir.path(), e))?;
        let path = entry.path();
        let is_file = entry.file_type().map_err(|e| ChunkError::io("stat", &path, e))?.is_file();
        let kind = entry.file_name().to_str().filter(|_| is_file).map_or(Entry::Other, layout::classify);
        match kind {
            Entry::Data(handle) => {
                data.insert(handle);
            }
            Entry::Meta(handle) => {
                metas.insert(handle);
            }
            Entry::Tmp(handle) => {
                fs::remove_file(&path).map_err(|e| ChunkError::io("remove", &path, e))?;
                interrupted.extend(handle);
                removed_tmp.push(path);
            }
            Entry::Quarantine(handle) => {
                marked.insert(handle);
            }
            Entry::Lock => {}
            Entry::Other => {
                tracing::warn!(path = %path.display(), "ignoring a file that is not part of any chunk");
                ignored.push(path);
            }
        }
    }
    // A mark without the chunk it marked: a deletion cut short after the chunk's files were gone.
    for &handle in marked.iter().filter(|h| !data.contains(h) && !metas.contains(h)) {
        let path = dir.quarantine_mark(handle);
        fs::remove_file(&path).map_err(|e| ChunkError::io("remove", &path, e))?;
        removed_tmp.push(path);
    }
    if !removed_tmp.is_empty() {
        dir.sync()?;
    }
    let chunks = data
        .union(&metas)
        .map(|&handle| {
            let state = if marked.contains(&handle) {
                let path = dir.quarantine_mark(handle);
                ChunkState::Quarantined(QuarantineReason::Marked(
                    ops::read_mark(&path).unwrap_or_else(|e| format!("unreadable mark ({e})")),
                ))
            } else {
                check(dir, handle, data.contains(&handle), metas.contains(&handle), interrupted.contains(&handle))
            };
            if let ChunkState::Quarantined(reason) = &state {
                tracing::warn!(%handle, %reason, "chunk quarantined at start-up; it will not be served");
            }
            (handle, state)
        })
        .collect();
    removed_tmp.sort();
    ignored.sort();
    Ok(Scan { chunks, removed_tmp, ignored })
}

fn check(dir: &Dir, handle: ChunkHandle, has_data: bool, has_meta: bool, interrupted: bool) -> ChunkState {
    let quarantine = ChunkState::Quarantined;
    match (has_data, has_meta) {
        (true, false) => return quarantine(QuarantineReason::MissingMeta),
        (false, _) => return quarantine(QuarantineReason::MissingData),
        (true, true) => {}
    }
    let meta = match Meta::load(&dir.meta(handle), handle) {
        Ok(meta) => meta,
        Err(e) => return quarantine(QuarantineReason::BadMeta(e.to_string())),
    };
    let path = dir.data(handle);
    let data_len = match fs::metadata(&path) {
        Ok(stat) => stat.len(),
        Err(e) => return quarantine(QuarantineReason::Failed(ChunkError::io("stat", &path, e).to_string())),
    };
    if data_len != meta.length {
        return quarantine(QuarantineReason::LengthMismatch { meta: meta.length, data: data_len });
    }
    if interrupted {
        match ops::verify_meta(dir, &meta) {
            Ok(()) => {}
            Err(ChunkError::Corrupt { block, .. }) => return quarantine(QuarantineReason::Corrupt { block }),
            Err(e) => return quarantine(QuarantineReason::Failed(e.to_string())),
        }
    }
    ChunkState::Live(meta)
}
