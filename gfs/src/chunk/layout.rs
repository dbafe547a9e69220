//! The data directory's layout: which file names belong to which chunk, and the open directory itself
//! (kept open so that renames and creations can be made durable with an fsync of the directory).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::error::ChunkError;
use super::types::ChunkHandle;

/// Held locked (`flock`) while a store has the directory open: two chunkservers on one directory would
/// overwrite each other's metadata.
pub(crate) const LOCK_FILE: &str = "LOCK";

const DATA_SUFFIX: &str = ".chunk";
const META_SUFFIX: &str = ".meta";
const TMP_SUFFIX: &str = ".tmp";
/// Beside a chunk taken out of service while running (the scrubber found a bad block): keeps it out of
/// service across restarts, since its own files may look perfectly consistent.
const QUARANTINE_SUFFIX: &str = ".quarantined";

/// What a file name in the data directory is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Data(ChunkHandle),
    Meta(ChunkHandle),
    /// A temporary file; `Some` when it is a chunk's metadata being replaced (a write was interrupted).
    Tmp(Option<ChunkHandle>),
    /// The mark of a chunk quarantined while running.
    Quarantine(ChunkHandle),
    Lock,
    Other,
}

pub(crate) fn classify(name: &str) -> Entry {
    if name == LOCK_FILE {
        return Entry::Lock;
    }
    if let Some(stem) = name.strip_suffix(TMP_SUFFIX) {
        return Entry::Tmp(stem.strip_suffix(META_SUFFIX).and_then(|h| h.parse().ok()));
    }
    if let Some(handle) = name.strip_suffix(DATA_SUFFIX).and_then(|h| h.parse().ok()) {
        return Entry::Data(handle);
    }
    if let Some(handle) = name.strip_suffix(META_SUFFIX).and_then(|h| h.parse().ok()) {
        return Entry::Meta(handle);
    }
    if let Some(handle) = name.strip_suffix(QUARANTINE_SUFFIX).and_then(|h| h.parse().ok()) {
        return Entry::Quarantine(handle);
    }
    Entry::Other
}

/// The data directory, open.
#[derive(Debug)]
pub(crate) struct Dir {
    path: PathBuf,
    file: File,
}

impl Dir {
    /// Opens (creating it if needed) the directory at `path`.
    pub(crate) fn open(path: &Path) -> Result<Dir, ChunkError> {
        fs::create_dir_all(path).map_err(|e| ChunkError::io("create directory", path, e))?;
        let file = File::open(path).map_err(|e| ChunkError::io("open directory", path, e))?;
        Ok(Dir { path: path.to_path_buf(), file })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn data(&self, handle: ChunkHandle) -> PathBuf {
        self.path.join(format!("{handle}{DATA_SUFFIX}"))
    }

    pub(crate) fn meta(&self, handle: ChunkHandle) -> PathBuf {
        self.path.join(format!("{handle}{META_SUFFIX}"))
    }

    pub(crate) fn meta_tmp(&self, handle: ChunkHandle) -> PathBuf {
        self.path.join(format!("{handle}{META_SUFFIX}{TMP_SUFFIX}"))
    }

    pub(crate) fn quarantine_mark(&self, handle: ChunkHandle) -> PathBuf {
        self.path.join(format!("{handle}{QUARANTINE_SUFFIX}"))
    }

    /// Makes the directory's entries (creations, renames, removals) durable.
    pub(crate) fn sync(&self) -> Result<(), ChunkError> {
        self.file.sync_all().map_err(|e| ChunkError::io("fsync directory", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_by_canonical_handle_and_suffix() {
        let h = ChunkHandle(0x1f);
        assert_eq!(classify("000000000000001f.chunk"), Entry::Data(h));
        assert_eq!(classify("000000000000001f.meta"), Entry::Meta(h));
        assert_eq!(classify("000000000000001f.meta.tmp"), Entry::Tmp(Some(h)));
        assert_eq!(classify("000000000000001f.quarantined"), Entry::Quarantine(h));
        assert_eq!(classify("whatever.tmp"), Entry::Tmp(None));
        assert_eq!(classify("LOCK"), Entry::Lock);
        for other in ["000000000000001F.chunk", "1f.chunk", "000000000000001f.chunk.bak", "lost+found", ".chunk"] {
            assert_eq!(classify(other), Entry::Other, "{other}");
        }
    }
}
