//! Free space of the data directory's filesystem, for the master's placement decisions.
//!
//! The standard library has no `statvfs` and the workspace has no crate exposing it (only `libc`, as a
//! dependency of others), so the figure comes from POSIX `df -Pk <dir>`, run with a deadline, at start
//! and then every [`REFRESH`] in the background so that a heartbeat never waits for it. When `df` is
//! missing or its output is not understood, the server reports 0 ("unknown") and says so once in the
//! log.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;

/// How often the figure is refreshed: free space changes by at most a few chunks per second.
const REFRESH: Duration = Duration::from_secs(30);

/// How long `df` may take (a hung network filesystem must not hang the probe).
const DF_TIMEOUT: Duration = Duration::from_secs(5);

/// The latest free-space figure of one directory's filesystem. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct FreeSpace {
    bytes: Arc<AtomicU64>,
}

impl FreeSpace {
    /// Measures `dir` once (within [`DF_TIMEOUT`]), then keeps the figure fresh until `stop`.
    pub async fn start(dir: PathBuf, stop: watch::Receiver<bool>) -> FreeSpace {
        let bytes = Arc::new(AtomicU64::new(0));
        let mut known = measure(&dir, &bytes, true).await;
        let space = FreeSpace { bytes: Arc::clone(&bytes) };
        tokio::spawn(async move {
            let stopping = super::stopped(stop);
            tokio::pin!(stopping);
            loop {
                tokio::select! {
                    () = &mut stopping => return,
                    () = tokio::time::sleep(REFRESH) => known = measure(&dir, &bytes, known).await,
                }
            }
        });
        space
    }

    /// Bytes available to this server on the data directory's filesystem; 0 when unknown.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Stores the figure for `dir`, or 0; returns whether it was known. Logs when it becomes unknown.
async fn measure(dir: &Path, bytes: &AtomicU64, known_before: bool) -> bool {
    let free = df(dir).await;
    bytes.store(free.unwrap_or(0), Ordering::Relaxed);
    if free.is_none() && known_before {
        tracing::warn!(dir = %dir.display(), "free space of the data directory unknown (`df -Pk` failed); reporting 0");
    }
    free.is_some()
}

async fn df(dir: &Path) -> Option<u64> {
    let mut command = Command::new("df");
    command.arg("-Pk").arg(dir).stdin(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(DF_TIMEOUT, command.output()).await.ok()?.ok()?;
    if !output.status.success() {
        return None;
    }
    parse_df(&output.stdout)
}

/// The available bytes in `df -Pk` output: the column before the capacity percentage (counting from
/// it, so a filesystem name with spaces does not shift the columns) of the line after the header.
fn parse_df(output: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(output).ok()?;
    let line = text.lines().nth(1)?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let capacity = fields.iter().position(|f| f.ends_with('%'))?;
    let kib: u64 = fields.get(capacity.checked_sub(1)?)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_output_is_read_from_the_capacity_column_back() {
        let plain = b"Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                      /dev/vda         264212084 13231488  82054400      14% /\n";
        assert_eq!(parse_df(plain), Some(82_054_400 * 1024));
        let spaced = b"Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                       my disk 100 40 60 40% /mnt/my disk\n";
        assert_eq!(parse_df(spaced), Some(60 * 1024));
        for bad in [&b""[..], b"header only\n", b"h\n/dev/x 1 2 lots 3% /\n", b"h\n/dev/x 1 2 3 /\n"] {
            assert_eq!(parse_df(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn the_temp_directory_has_some_free_space() {
        let (_stop_tx, stop) = watch::channel(false);
        let space = FreeSpace::start(std::env::temp_dir(), stop).await;
        assert!(space.bytes() > 0, "df works on this machine");
    }
}
