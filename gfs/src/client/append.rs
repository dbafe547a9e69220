//! [`GfsClient::append`]: record append, the paper's §3.3. The primary of the file's last chunk picks
//! the offset; a record that does not fit pads that chunk and goes to the next one.
//!
//! At least once: an attempt that failed after the primary may have applied the record somewhere (a
//! timeout, a lost quorum) is retried whole, so the record can appear twice in the file, and a failed
//! attempt can leave an inconsistent region or padding between records. The offset returned is the
//! one whose copy was acknowledged and committed; readers of appended files must skip duplicates and
//! padding (records carrying their own length, checksum and id do).

use bytes::Bytes;

use super::mutate::{Kind, Outcome};
use super::{GfsClient, GfsError};
use crate::chunk::CHUNK_SIZE;
use crate::dataplane::MAX_RECORD;

impl GfsClient {
    /// Appends `record` (1 to [`MAX_RECORD`] bytes) to the file `file_id`; returns the file offset it
    /// was committed at. Concurrent appends (from any number of clients) each get their own offset.
    pub async fn append(&self, file_id: &str, record: Bytes) -> Result<u64, GfsError> {
        let len = record.len() as u64;
        if len == 0 || len > MAX_RECORD {
            return Err(GfsError::InvalidArgument(format!("a record of {len} bytes (1 to {MAX_RECORD})")));
        }
        let leases = &self.inner.leases;
        // The master answers an append naming an earlier chunk with the last one: 0 is always a start.
        let mut index = leases.append_hint(file_id).unwrap_or(0);
        let mut retry = self.retry("record append");
        let mut stale = Vec::new();
        loop {
            let applied = self
                .mutate(file_id, index, Kind::Append, &record, &mut retry, &mut stale)
                .await
                .map_err(|e| e.context(format_args!("appending {len} bytes to file {file_id}")))?;
            let lease = applied.lease;
            match applied.outcome {
                Outcome::Written { chunk_offset } => {
                    leases.set_append_hint(file_id, lease.index);
                    let offset = u64::from(lease.index) * CHUNK_SIZE + chunk_offset;
                    self.commit(file_id, offset + len, &mut stale).await?;
                    return Ok(offset);
                }
                Outcome::ChunkFull => {
                    // The chunk is padded to its end on every replica: nothing more goes into it.
                    leases.forget(file_id, true, &lease);
                    index = lease.index.checked_add(1).ok_or_else(|| {
                        GfsError::InvalidArgument(format!("file {file_id} has no chunk after {}", lease.index))
                    })?;
                    leases.set_append_hint(file_id, index);
                    if !stale.is_empty() {
                        self.report_stale(file_id, &mut stale, &retry).await;
                    }
                    retry.check()?;
                }
            }
        }
    }
}
