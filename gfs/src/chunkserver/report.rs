//! Chunk reports: what a heartbeat says about the chunks, and whether it says all of it.
//!
//! The master's view of this server is what the last *acknowledged* heartbeat told it. A delta is the
//! difference between the store now and that view (chunks new or changed in version or length, chunks
//! gone), so a heartbeat that failed loses nothing — though after a failure the master may have
//! restarted or failed over and know nothing at all, which is why a failure makes the next report full.

use std::collections::{HashMap, HashSet};

use crate::chunk::{ChunkHandle, ChunkInfo, ChunkVersion};
use crate::rpc::messages::ChunkReport;

/// A chunk as the master was last told of it.
type Known = HashMap<ChunkHandle, (ChunkVersion, u64)>;

/// What the master knows of this server's chunks (after the last acknowledged heartbeat).
#[derive(Debug, Default)]
pub(crate) struct ChunkReporter {
    known: Known,
}

/// The chunk part of one heartbeat, and the view the master will have once it is acknowledged.
#[derive(Debug)]
pub(crate) struct Report {
    pub chunks: Vec<ChunkReport>,
    pub removed: Vec<u64>,
    view: Known,
}

impl ChunkReporter {
    /// The report of `current` (the store's chunks, by handle), leaving out `hidden` (chunks being
    /// cloned: not a replica until the copy is complete).
    pub fn report(&self, full: bool, current: &[ChunkInfo], hidden: &HashSet<ChunkHandle>) -> Report {
        let view: Known =
            current.iter().filter(|c| !hidden.contains(&c.handle)).map(|c| (c.handle, (c.version, c.length))).collect();
        let wire = |c: &ChunkInfo| ChunkReport { handle: c.handle.0, version: c.version.0, length: c.length };
        let listed = current.iter().filter(|c| view.contains_key(&c.handle));
        if full {
            return Report { chunks: listed.map(wire).collect(), removed: Vec::new(), view };
        }
        let chunks = listed.filter(|c| self.known.get(&c.handle) != Some(&(c.version, c.length))).map(wire).collect();
        let mut removed: Vec<u64> = self.known.keys().filter(|h| !view.contains_key(h)).map(|h| h.0).collect();
        removed.sort_unstable();
        Report { chunks, removed, view }
    }

    /// The master acknowledged `report`: its view is now the report's.
    pub fn acknowledged(&mut self, report: Report) {
        self.known = report.view;
    }
}

/// When a heartbeat must carry a full report.
#[derive(Debug)]
pub(crate) struct Schedule {
    every: u32,
    /// Start, a failed heartbeat or the master's request.
    must: bool,
    deltas_since_full: u32,
}

impl Schedule {
    /// A full report first, then one every `every` heartbeats (at least 1: every heartbeat).
    pub fn new(every: u32) -> Schedule {
        Schedule { every: every.max(1), must: true, deltas_since_full: 0 }
    }

    pub fn next_is_full(&self) -> bool {
        self.must || self.deltas_since_full + 1 >= self.every
    }

    /// The heartbeat (`full` or not) was answered; `want_full` is the master's request for a full one.
    pub fn answered(&mut self, full: bool, want_full: bool) {
        self.deltas_since_full = if full { 0 } else { self.deltas_since_full.saturating_add(1) };
        self.must = want_full;
    }

    pub fn failed(&mut self) {
        self.must = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(handle: u64, version: u64, length: u64) -> ChunkInfo {
        ChunkInfo { handle: ChunkHandle(handle), version: ChunkVersion(version), length }
    }

    fn wire(handle: u64, version: u64, length: u64) -> ChunkReport {
        ChunkReport { handle, version, length }
    }

    #[test]
    fn deltas_name_what_changed_since_the_last_acknowledged_report() {
        let none = HashSet::new();
        let mut reporter = ChunkReporter::default();
        let first = reporter.report(true, &[info(1, 1, 0), info(2, 3, 10)], &none);
        assert_eq!(first.chunks, vec![wire(1, 1, 0), wire(2, 3, 10)]);
        reporter.acknowledged(first);

        // Nothing changed: an empty delta.
        let idle = reporter.report(false, &[info(1, 1, 0), info(2, 3, 10)], &none);
        assert!(idle.chunks.is_empty() && idle.removed.is_empty(), "{idle:?}");

        // 1 grew, 2 was deleted, 3 is new, 4 got a new version.
        reporter.acknowledged(reporter.report(false, &[info(1, 1, 0), info(2, 3, 10), info(4, 1, 5)], &none));
        let now = [info(1, 1, 700), info(3, 1, 0), info(4, 2, 5)];
        let delta = reporter.report(false, &now, &none);
        assert_eq!(delta.chunks, vec![wire(1, 1, 700), wire(3, 1, 0), wire(4, 2, 5)]);
        assert_eq!(delta.removed, vec![2]);

        // Not acknowledged (the heartbeat failed): the next delta still carries the same changes.
        let again = reporter.report(false, &now, &none);
        assert_eq!((again.chunks, again.removed), (delta.chunks, delta.removed));
        let full = reporter.report(true, &now, &none);
        reporter.acknowledged(full);
        assert!(reporter.report(false, &now, &none).chunks.is_empty());
    }

    #[test]
    fn a_chunk_being_cloned_is_not_reported_until_it_is_complete() {
        let mut reporter = ChunkReporter::default();
        reporter.acknowledged(reporter.report(true, &[info(1, 1, 9)], &HashSet::new()));
        let cloning = HashSet::from([ChunkHandle(1), ChunkHandle(2)]);
        let during = reporter.report(false, &[info(1, 0, 4), info(2, 0, 4)], &cloning);
        assert!(during.chunks.is_empty());
        assert_eq!(during.removed, vec![1], "the replaced copy is gone from the master's view");
        reporter.acknowledged(during);
        let full = reporter.report(true, &[info(1, 0, 4)], &cloning);
        assert!(full.chunks.is_empty(), "{full:?}");
        let after = reporter.report(false, &[info(1, 5, 9), info(2, 5, 9)], &HashSet::new());
        assert_eq!(after.chunks, vec![wire(1, 5, 9), wire(2, 5, 9)]);
    }

    #[test]
    fn full_reports_come_first_every_n_after_a_failure_and_on_request() {
        let mut schedule = Schedule::new(3);
        let mut sent = Vec::new();
        for _ in 0..7 {
            let full = schedule.next_is_full();
            sent.push(full);
            schedule.answered(full, false);
        }
        assert_eq!(sent, [true, false, false, true, false, false, true]);

        assert!(!schedule.next_is_full());
        schedule.failed();
        assert!(schedule.next_is_full());
        schedule.answered(true, false);
        assert!(!schedule.next_is_full());
        schedule.answered(false, true);
        assert!(schedule.next_is_full(), "the master asked for one");

        let mut always = Schedule::new(1);
        always.answered(true, false);
        assert!(always.next_is_full());
    }
}
