//! Moving bytes between a client and GFS without holding a file in memory: uploads are written to a
//! fresh blob piece by piece while their SHA-256 is computed, downloads are read from GFS as the
//! client takes them.

use std::{fmt::Display, time::Duration};

use bytes::Bytes;
use edd_events::Token;
use edd_gfs::client::{GfsClient, GfsError};
use edd_kit::Problem;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::{
    progress::Tracker,
    queries::Namespace,
    state::{AppState, GFS_NAMESPACE},
};

/// How much of an upload may arrive, and what exceeding it means.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The per-request maximum (413 beyond).
    pub max_upload: u64,
    /// What is left of the owner's quota (507 beyond).
    pub quota_room: u64,
    pub quota: u64,
    /// Longest wait for the next piece of the body.
    pub idle: Duration,
    /// When the whole upload must be in.
    pub deadline: tokio::time::Instant,
}

impl Limits {
    /// Refuses a declared size before anything is written.
    pub fn check_declared(&self, size: u64) -> Result<(), Problem> {
        self.check(size)
    }

    fn check(&self, size: u64) -> Result<(), Problem> {
        if size > self.max_upload {
            return Err(Problem::payload_too_large(format!(
                "uploads are limited to {} bytes; this one is {size} bytes or more",
                self.max_upload
            ))
            .with_extension("max_upload_bytes", self.max_upload));
        }
        if size > self.quota_room {
            return Err(insufficient_storage(format!(
                "the upload needs {size} bytes and {} bytes of your {}-byte quota are left",
                self.quota_room, self.quota
            ))
            .with_extension("quota_bytes", self.quota)
            .with_extension("available_bytes", self.quota_room));
        }
        Ok(())
    }
}

/// 507: the user's quota is exhausted.
pub fn insufficient_storage(detail: String) -> Problem {
    Problem::new(axum::http::StatusCode::INSUFFICIENT_STORAGE).with_title("Quota exceeded").with_detail(detail)
}

/// An upload written to GFS and committed there.
#[derive(Debug)]
pub struct Stored {
    pub blob: String,
    pub blob_id: String,
    pub size: u64,
    pub sha256: String,
}

/// Writes `body` to a new blob of `ns`. On any failure the blob is deleted before returning, so a
/// refused or interrupted upload leaves nothing (a crash leaves it to the sweeper).
pub async fn upload<S, E>(
    state: &AppState,
    ns: &Namespace,
    body: S,
    limits: Limits,
    tracker: &mut Tracker,
) -> Result<Stored, Problem>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let blob = format!("/{}/{}{}", ns.ns_id, Token::random(), Token::random());
    let info = state.gfs.create(GFS_NAMESPACE, &blob).await?;
    match pump(&state.gfs, &info.id, body, limits, tracker).await {
        Ok((size, sha256)) => Ok(Stored { blob, blob_id: info.id, size, sha256 }),
        Err(problem) => {
            state.delete_blob(&blob).await;
            Err(problem)
        }
    }
}

async fn pump<S, E>(
    gfs: &GfsClient,
    file_id: &str,
    mut body: S,
    limits: Limits,
    tracker: &mut Tracker,
) -> Result<(u64, String), Problem>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let mut writer = gfs.writer(file_id, 0);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    let write_failed = |e: std::io::Error| match e.into_inner().map(|inner| inner.downcast::<GfsError>()) {
        Some(Ok(gfs)) => Problem::from(*gfs),
        _ => Problem::unavailable("the file system failed during the upload; retry").with_retry_after(2),
    };
    loop {
        let wait = limits.idle.min(limits.deadline.saturating_duration_since(tokio::time::Instant::now()));
        let piece = tokio::time::timeout(wait, body.next()).await.map_err(|_| {
            let detail = if tokio::time::Instant::now() >= limits.deadline {
                "the upload took longer than allowed and was abandoned".to_owned()
            } else {
                format!("nothing arrived for {} s; the upload was abandoned", limits.idle.as_secs())
            };
            Problem::new(axum::http::StatusCode::REQUEST_TIMEOUT).with_detail(detail)
        })?;
        let Some(piece) = piece else { break };
        let piece = piece.map_err(|e| Problem::bad_request(format!("the upload was cut off: {e}")))?;
        size += piece.len() as u64;
        limits.check(size)?;
        digest.update(&piece);
        tracker.advance(piece.len() as u64);
        writer.write_all(&piece).await.map_err(write_failed)?;
    }
    writer.shutdown().await.map_err(write_failed)?;
    Ok((size, hex(digest.finish().as_ref())))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `len` bytes of the blob `blob_id` from `start`, read as the client takes it: the GFS
/// reader's pieces are handed to the connection as they are, never copied here.
pub fn download(
    gfs: &GfsClient,
    blob_id: &str,
    start: u64,
    len: u64,
    tracker: Tracker,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let reader = Some(gfs.reader(blob_id, start, Some(len)));
    let stream =
        futures_util::stream::unfold((reader, len, Some(tracker)), |(mut reader, left, mut tracker)| async move {
            let finish = |tracker: &mut Option<Tracker>, error: Option<String>| {
                if let Some(t) = tracker.take() {
                    t.finish(error);
                }
            };
            if left == 0 {
                finish(&mut tracker, None);
                return None;
            }
            let failed = |e: std::io::Error, mut tracker: Option<Tracker>| {
                tracing::warn!(error = %e, "download failed midway");
                finish(&mut tracker, Some(e.to_string()));
                // Nothing is left to send: the stream ends after this error.
                Some((Err(e), (None, 0, None)))
            };
            let reader_ref = reader.as_mut()?;
            match reader_ref.next_piece().await {
                Some(Ok(mut piece)) => {
                    if piece.len() as u64 > left {
                        piece.truncate(left as usize);
                    }
                    if let Some(t) = tracker.as_mut() {
                        t.advance(piece.len() as u64);
                    }
                    let left = left - piece.len() as u64;
                    Some((Ok(piece), (reader, left, tracker)))
                }
                Some(Err(e)) => failed(std::io::Error::other(e), tracker),
                None => failed(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the blob ended early"), tracker),
            }
        });
    stream
}

/// Uploads running on this replica, per user and in all: each holds GFS pieces in memory, so both
/// are bounded. Also the locks that make one owner's final quota check and record one step.
pub struct UploadSlots {
    running: std::sync::Mutex<(usize, std::collections::HashMap<Token, usize>)>,
    /// Striped by owner: a fixed number, whatever the number of users.
    commits: Vec<tokio::sync::Mutex<()>>,
}

impl Default for UploadSlots {
    fn default() -> Self {
        Self { running: Default::default(), commits: (0..64).map(|_| tokio::sync::Mutex::new(())).collect() }
    }
}

/// One running upload; dropping it frees the slot.
pub struct UploadSlot {
    slots: std::sync::Arc<UploadSlots>,
    user: Token,
}

impl UploadSlots {
    /// Held while `owner`'s finished upload is checked against the quota and recorded, so two of
    /// their uploads finishing together are checked one after the other (on this replica).
    pub async fn commit_lock(&self, owner: &Token) -> tokio::sync::MutexGuard<'_, ()> {
        let hash = owner.as_str().bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        self.commits[hash % self.commits.len()].lock().await
    }

    pub fn try_start(
        self: &std::sync::Arc<Self>,
        user: &Token,
        per_user: usize,
        total: usize,
    ) -> Result<UploadSlot, Problem> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mine = running.1.get(user).copied().unwrap_or(0);
        if mine >= per_user {
            return Err(Problem::too_many_requests(5)
                .with_detail(format!("you have {mine} uploads running; at most {per_user} at once")));
        }
        if running.0 >= total {
            return Err(Problem::unavailable("too many uploads are running; retry shortly").with_retry_after(5));
        }
        running.0 += 1;
        *running.1.entry(user.clone()).or_default() += 1;
        Ok(UploadSlot { slots: self.clone(), user: user.clone() })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|e| e.into_inner());
        running.0 = running.0.saturating_sub(1);
        if let Some(n) = running.1.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                running.1.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_slots_are_bounded_per_user_and_in_all() {
        let slots = std::sync::Arc::new(UploadSlots::default());
        let (a, b) = (Token::new("a").unwrap(), Token::new("b").unwrap());
        let first = slots.try_start(&a, 2, 3).unwrap();
        let _second = slots.try_start(&a, 2, 3).unwrap();
        assert_eq!(slots.try_start(&a, 2, 3).err().unwrap().status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        let _third = slots.try_start(&b, 2, 3).unwrap();
        assert_eq!(slots.try_start(&b, 2, 3).err().unwrap().status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        drop(first);
        assert!(slots.try_start(&a, 2, 3).is_ok());
    }

    #[test]
    fn limits_name_what_was_exceeded() {
        let limits = Limits {
            max_upload: 100,
            quota_room: 50,
            quota: 1000,
            idle: Duration::from_secs(1),
            deadline: tokio::time::Instant::now(),
        };
        assert!(limits.check(50).is_ok());
        assert_eq!(limits.check(51).unwrap_err().status, axum::http::StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(limits.check(101).unwrap_err().status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}
