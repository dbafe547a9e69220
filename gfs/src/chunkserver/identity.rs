//! The chunkserver's stable id: 16 random lowercase hex digits, made on first start and kept in
//! `<data_dir>/server-id`, so the master knows a restarted server (at a new address, even) as the same
//! one holding the same chunks.
//!
//! The file is written once, atomically and durably (temporary file, fsync, rename, directory fsync): a
//! crash can leave no file (a new id is made next time, before any heartbeat went out under the lost
//! one) or the whole id, never half of one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use super::{ChunkserverError, SERVER_ID_FILE};

/// Random bytes in an id (64 bits: no two servers of a cluster will ever draw the same).
const ID_BYTES: usize = 8;

/// Reads the id in `data_dir`, or makes and stores one if there is none.
pub(crate) async fn load_or_create(data_dir: &Path) -> Result<String, ChunkserverError> {
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || load_or_create_blocking(&data_dir))
        .await
        .map_err(|e| ChunkserverError::Task(format!("server id: {e}")))?
}

fn load_or_create_blocking(data_dir: &Path) -> Result<String, ChunkserverError> {
    let path = data_dir.join(SERVER_ID_FILE);
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ChunkserverError::Identity { path, source }
    };
    match fs::read(&path) {
        Ok(bytes) => return parse(&bytes).ok_or(ChunkserverError::BadIdentity { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(&path)(e)),
    }
    let id = new_id().map_err(failed(&path))?;
    let tmp = tmp_path(&path);
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(format!("{id}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(data_dir)?.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(failed(&path)(error));
    }
    tracing::info!(server_id = %id, path = %path.display(), "new chunkserver id");
    Ok(id)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn new_id() -> io::Result<String> {
    let mut bytes = [0u8; ID_BYTES];
    SystemRandom::new().fill(&mut bytes).map_err(|_| io::Error::other("no system randomness"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The id in a file's bytes: exactly the id, optionally followed by one newline.
fn parse(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let id = text.strip_suffix('\n').unwrap_or(text);
    let valid = id.len() == 2 * ID_BYTES && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[tokio::test]
    async fn an_id_is_made_once_and_read_back_after() {
        let dir = TempDir::new("cs-identity");
        let first = load_or_create(dir.path()).await.expect("create");
        assert!(parse(first.as_bytes()).is_some(), "{first}");
        assert_eq!(load_or_create(dir.path()).await.expect("load"), first);
        assert_eq!(fs::read_to_string(dir.file(SERVER_ID_FILE)).expect("file"), format!("{first}\n"));
        assert!(!dir.file("server-id.tmp").exists(), "no temporary file is left");

        let other = TempDir::new("cs-identity-other");
        assert_ne!(load_or_create(other.path()).await.expect("create"), first, "ids are random");
    }

    #[tokio::test]
    async fn a_damaged_id_file_is_refused_not_replaced() {
        let dir = TempDir::new("cs-identity-bad");
        for bad in ["", "0123", "0123456789ABCDEF\n", "0123456789abcdef\n\n", "0123456789abcdefa"] {
            fs::write(dir.file(SERVER_ID_FILE), bad).expect("write");
            let error = load_or_create(dir.path()).await.expect_err(bad);
            assert!(matches!(error, ChunkserverError::BadIdentity { .. }), "{bad:?}: {error}");
            assert_eq!(fs::read_to_string(dir.file(SERVER_ID_FILE)).expect("file"), bad, "left as it was");
        }
    }
}
