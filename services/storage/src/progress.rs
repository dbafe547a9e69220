//! Transfer progress: a client names its transfer (`?progress=<id>` on an upload or download) and
//! watches `GET /sse/progress?id=<id>` — bytes so far, the total when known, done, error.
//!
//! Progress lives in this process's memory (it is gone when the transfer is), bounded in entries
//! and kept a minute after a transfer ends so a late watcher still sees the outcome. With several
//! replicas, a watcher must reach the replica doing the transfer (sticky routing); documented.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use edd_events::Token;
use edd_kit::Problem;
use serde::Serialize;
use tokio::sync::watch;

/// Transfers tracked at once, over all users, and for one user.
const MAX_ENTRIES: usize = 10_000;
const MAX_PER_USER: usize = 100;
/// How long a finished transfer's outcome stays, and an entry nobody updates at all.
const KEEP_DONE: Duration = Duration::from_secs(60);
const KEEP_IDLE: Duration = Duration::from_secs(3600);
/// Updates are published at most this often (watchers see the latest value anyway).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// What a watcher sees.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Entry {
    tx: watch::Sender<Snapshot>,
    touched: Instant,
}

/// The registry of transfers in progress. Cheap to clone.
#[derive(Clone, Default)]
pub struct Progress {
    entries: Arc<Mutex<HashMap<(Token, String), Entry>>>,
}

/// `[A-Za-z0-9_-]{1,64}`.
pub fn check_id(id: &str) -> Result<(), Problem> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(
            Problem::bad_request("a progress id is 1 to 64 of A-Z a-z 0-9 _ -").with_extension("field", "progress")
        );
    }
    Ok(())
}

impl Progress {
    /// The entry for `(user, id)`, created when missing; `None` when the registry is full.
    fn entry(&self, user: &Token, id: &str) -> Option<watch::Sender<Snapshot>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let key = (user.clone(), id.to_owned());
        if let Some(entry) = entries.get_mut(&key) {
            entry.touched = now;
            return Some(entry.tx.clone());
        }
        let mine = entries.keys().filter(|(u, _)| u == user).count();
        if entries.len() >= MAX_ENTRIES || mine >= MAX_PER_USER {
            entries.retain(|_, e| {
                let age = now.duration_since(e.touched);
                age < KEEP_IDLE && !(e.tx.borrow().done && age > KEEP_DONE)
            });
            let mine = entries.keys().filter(|(u, _)| u == user).count();
            if entries.len() >= MAX_ENTRIES || mine >= MAX_PER_USER {
                return None;
            }
        }
        let tx = watch::channel(Snapshot::default()).0;
        entries.insert(key, Entry { tx: tx.clone(), touched: now });
        Some(tx)
    }

    /// Starts tracking a transfer of `total` bytes (when known). Untracked when the registry is full.
    pub fn start(&self, user: &Token, id: &str, total: Option<u64>) -> Tracker {
        let tx = self.entry(user, id);
        if let Some(tx) = &tx {
            tx.send_replace(Snapshot { bytes: 0, total, done: false, error: None });
        }
        Tracker { tx, bytes: 0, published: Instant::now() }
    }

    /// Follows `(user, id)`, which may start after the watcher arrives.
    pub fn watch(&self, user: &Token, id: &str) -> Result<watch::Receiver<Snapshot>, Problem> {
        self.entry(user, id)
            .map(|tx| tx.subscribe())
            .ok_or_else(|| Problem::unavailable("too many transfers are being tracked").with_retry_after(5))
    }
}

/// The transfer's side: counts bytes, publishes now and then, and the outcome at the end. Dropped
/// without [`finish`](Self::finish), the transfer is reported as interrupted.
pub struct Tracker {
    tx: Option<watch::Sender<Snapshot>>,
    bytes: u64,
    published: Instant,
}

impl Tracker {
    /// Not tracking anything (no id given).
    pub fn none() -> Self {
        Self { tx: None, bytes: 0, published: Instant::now() }
    }

    pub fn advance(&mut self, n: u64) {
        self.bytes += n;
        if let Some(tx) = &self.tx {
            if self.published.elapsed() >= PUBLISH_EVERY {
                self.published = Instant::now();
                let bytes = self.bytes;
                tx.send_modify(|s| s.bytes = bytes);
            }
        }
    }

    pub fn finish(mut self, error: Option<String>) {
        if let Some(tx) = self.tx.take() {
            let bytes = self.bytes;
            tx.send_modify(|s| {
                s.bytes = bytes;
                s.done = true;
                s.error = error;
            });
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let bytes = self.bytes;
            tx.send_modify(|s| {
                s.bytes = bytes;
                s.done = true;
                s.error = Some("the transfer was interrupted".into());
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watcher_sees_the_outcome_even_when_it_arrives_first() {
        let progress = Progress::default();
        let user = Token::new("u1").unwrap();
        let mut rx = progress.watch(&user, "t1").unwrap();
        let mut tracker = progress.start(&user, "t1", Some(10));
        tracker.advance(4);
        tracker.finish(None);
        rx.wait_for(|s| s.done).await.unwrap();
        assert_eq!(*rx.borrow(), Snapshot { bytes: 4, total: Some(10), done: true, error: None });
        // Another user's transfer of the same id is another entry.
        let other = progress.watch(&Token::new("u2").unwrap(), "t1").unwrap();
        assert!(!other.borrow().done);
    }

    #[tokio::test]
    async fn a_dropped_tracker_reports_an_interruption() {
        let progress = Progress::default();
        let user = Token::new("u1").unwrap();
        let rx = progress.watch(&user, "t").unwrap();
        drop(progress.start(&user, "t", None));
        assert!(rx.borrow().error.is_some());
    }

    #[test]
    fn ids_are_bounded() {
        assert!(check_id("abc-1_2").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id(&"a".repeat(65)).is_err());
        assert!(check_id("a b").is_err());
    }
}
