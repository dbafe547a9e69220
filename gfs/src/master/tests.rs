//! Event sequences through the state machine: transitions, refusals, replays, listing and snapshots.

use edd_events::catalog::gfs as ev;
use edd_events::{Envelope, Event, RawEvent, Token};
use time::OffsetDateTime;

use super::*;
use crate::chunk::{ChunkHandle, ChunkVersion, CHUNK_SIZE};

fn tok(s: &str) -> Token {
    Token::new(s).expect("valid token")
}

/// An event as the master reads it back from JetStream: envelope JSON parsed into a [`RawEvent`].
fn raw<E: Event>(seq: u64, event: E) -> RawEvent {
    let envelope = Envelope::new("gfs", event);
    let bytes = serde_json::to_vec(&envelope).expect("encode");
    RawEvent::parse(seq, envelope.data.subject().as_str(), &bytes).expect("parse")
}

/// A log and the state that follows it.
#[derive(Default)]
struct Log {
    state: MasterState,
    events: Vec<RawEvent>,
}

impl Log {
    /// Appends `event` at the next sequence and applies it; a refused event is not kept.
    fn push<E: Event>(&mut self, event: E) -> Result<(), ApplyError> {
        let seq = self.events.last().map_or(1, |e| e.stream_seq + 1);
        let raw = raw(seq, event);
        self.state.apply(seq, &raw)?;
        self.events.push(raw);
        Ok(())
    }

    fn ok<E: Event>(&mut self, event: E) {
        if let Err(e) = self.push(event) {
            panic!("expected to apply: {e}");
        }
    }

    /// Pushes an event that must be refused, and checks that the refusal changed nothing.
    fn refused<E: Event>(&mut self, event: E) -> MetaError {
        let before = self.state.clone();
        match self.push(event) {
            Err(ApplyError::Rejected { source, .. }) => {
                assert_eq!(self.state, before, "a refused event must not change the state");
                source
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn ns(name: &str) -> ev::NamespaceCreated {
    ev::NamespaceCreated { namespace: name.into() }
}

fn create(id: &str, namespace: &str, path: &str) -> ev::FileCreated {
    ev::FileCreated { file_id: tok(id), namespace: namespace.into(), path: path.into() }
}

fn add_chunk(file: &str, index: u32, handle: u64) -> ev::ChunkAdded {
    ev::ChunkAdded { file_id: tok(file), index, handle, version: 1 }
}

fn rename(id: &str, from: &str, to: &str, replaced: Option<&str>) -> ev::FileRenamed {
    ev::FileRenamed {
        file_id: tok(id),
        namespace: "ns".into(),
        from: from.into(),
        to: to.into(),
        replaced: replaced.map(tok),
    }
}

fn delete(id: &str, path: &str) -> ev::FileDeleted {
    ev::FileDeleted { file_id: tok(id), namespace: "ns".into(), path: path.into() }
}

fn paths(page: &Page<'_>) -> Vec<String> {
    page.files.iter().map(|f| f.path.to_string()).collect()
}

/// One namespace `ns` with `/a` (f1: two chunks, 70 MiB committed) and `/b` (f2: one chunk, empty).
fn populated() -> Log {
    let mut log = Log::default();
    log.ok(ns("ns"));
    log.ok(create("f1", "ns", "/a"));
    log.ok(create("f2", "ns", "/b"));
    log.ok(add_chunk("f1", 0, 1));
    log.ok(add_chunk("f1", 1, 2));
    log.ok(add_chunk("f2", 0, 3));
    log.ok(ev::LengthSet { file_id: tok("f1"), length: 70 << 20 });
    log.ok(ev::VersionBumped { handle: 2, version: 2 });
    log
}

#[test]
fn namespaces_are_created_once_and_deleted_when_empty() {
    let mut log = Log::default();
    log.ok(ns("logs.v1"));
    assert_eq!(log.refused(ns("logs.v1")), MetaError::NamespaceExists("logs.v1".into()));
    assert!(matches!(log.refused(ns("bad/name")), MetaError::BadNamespace { .. }));
    log.ok(create("f1", "logs.v1", "/x"));
    assert_eq!(
        log.refused(ev::NamespaceDeleted { namespace: "logs.v1".into() }),
        MetaError::NamespaceNotEmpty { namespace: "logs.v1".into(), files: 1 }
    );
    log.ok(delete_in("f1", "logs.v1", "/x"));
    log.ok(ev::NamespaceDeleted { namespace: "logs.v1".into() });
    assert!(log.state.namespace("logs.v1").is_none());
    assert_eq!(
        log.refused(ev::NamespaceDeleted { namespace: "logs.v1".into() }),
        MetaError::NoNamespace("logs.v1".into())
    );
    // A deleted name can be taken again.
    log.ok(ns("logs.v1"));
    assert_eq!(log.state.namespaces().map(|(n, _)| n).collect::<Vec<_>>(), ["logs.v1"]);
}

fn delete_in(id: &str, namespace: &str, path: &str) -> ev::FileDeleted {
    ev::FileDeleted { file_id: tok(id), namespace: namespace.into(), path: path.into() }
}

#[test]
fn files_are_created_at_free_valid_paths_in_existing_namespaces() {
    let mut log = Log::default();
    assert_eq!(log.refused(create("f1", "ns", "/a")), MetaError::NoNamespace("ns".into()));
    log.ok(ns("ns"));
    log.ok(create("f1", "ns", "/a"));
    assert_eq!(
        log.refused(create("f2", "ns", "/a")),
        MetaError::FileExists { namespace: "ns".into(), path: "/a".into() }
    );
    assert_eq!(log.refused(create("f1", "ns", "/other")), MetaError::FileIdTaken(tok("f1")));
    assert!(matches!(log.refused(create("f3", "ns", "/a/../b")), MetaError::BadPath(_)));
    assert!(matches!(log.refused(create("f3", "ns", &format!("/{}", "x".repeat(4096)))), MetaError::BadPath(_)));

    let file = log.state.stat("ns", "/a").expect("stat");
    assert_eq!((file.id.as_str(), &*file.namespace, &*file.path, file.length), ("f1", "ns", "/a", 0));
    assert!(file.chunks.is_empty());
    assert_eq!(file.created_at, log.events[1].envelope.time, "creation time is the envelope's");
    assert_eq!(log.state.stat("ns", "/nope"), Err(MetaError::NoPath { namespace: "ns".into(), path: "/nope".into() }));
    assert_eq!(log.state.stat("other", "/a"), Err(MetaError::NoNamespace("other".into())));

    // The command-side checks agree with apply.
    assert_eq!(log.state.check_create("ns", "/b"), Ok(()));
    assert!(log.state.check_create("ns", "/a").is_err());
    assert!(log.state.check(&create("f9", "ns", "/a").into()).is_err());
}

#[test]
fn chunks_are_dense_with_fresh_handles_and_growing_versions() {
    let mut log = populated();
    let s = &log.state;
    let views = s.chunks(&tok("f1")).expect("chunks");
    assert_eq!(
        views,
        [
            ChunkView { index: 0, handle: ChunkHandle(1), version: ChunkVersion(1) },
            ChunkView { index: 1, handle: ChunkHandle(2), version: ChunkVersion(2) },
        ]
    );
    assert_eq!(s.chunk(&tok("f1"), 1), Some(views[1]));
    assert_eq!(s.chunk(&tok("f1"), 2), None);
    let (file, index) = s.file_of(ChunkHandle(3)).expect("owner");
    assert_eq!((file.id.as_str(), index), ("f2", 0));
    assert_eq!(s.version(ChunkHandle(2)), Some(ChunkVersion(2)));
    assert_eq!(s.version(ChunkHandle(99)), None);
    assert_eq!(s.next_handle(), ChunkHandle(4));
    assert_eq!(s.chunk_count(), 3);

    // Not the next index; a handle at or below the high-water mark; version 0.
    assert_eq!(log.refused(add_chunk("f2", 2, 4)), MetaError::ChunkIndex { file: tok("f2"), index: 2, next: 1 });
    assert_eq!(
        log.refused(add_chunk("f2", 1, 3)),
        MetaError::StaleHandle { handle: ChunkHandle(3), last: ChunkHandle(3) }
    );
    assert_eq!(
        log.refused(ev::ChunkAdded { file_id: tok("f2"), index: 1, handle: 4, version: 0 }),
        MetaError::ZeroVersion
    );
    assert_eq!(log.refused(add_chunk("zz", 0, 4)), MetaError::NoFile(tok("zz")));
    // Handles may skip; the next one must still be above the highest.
    log.ok(add_chunk("f2", 1, 10));
    assert_eq!(log.state.next_handle(), ChunkHandle(11));

    // Versions only grow.
    assert_eq!(
        log.refused(ev::VersionBumped { handle: 2, version: 2 }),
        MetaError::VersionNotRaised { handle: ChunkHandle(2), current: ChunkVersion(2), proposed: ChunkVersion(2) }
    );
    assert_eq!(log.refused(ev::VersionBumped { handle: 77, version: 5 }), MetaError::NoChunk(ChunkHandle(77)));
    log.ok(ev::VersionBumped { handle: 2, version: 5 });
    assert_eq!(log.state.version(ChunkHandle(2)), Some(ChunkVersion(5)));
}

#[test]
fn lengths_grow_within_the_allocated_chunks() {
    let mut log = populated();
    assert_eq!(log.state.stat("ns", "/a").expect("stat").length, 70 << 20);
    assert_eq!(
        log.refused(ev::LengthSet { file_id: tok("f1"), length: 2 * CHUNK_SIZE + 1 }),
        MetaError::LengthBeyondChunks {
            file: tok("f1"),
            length: 2 * CHUNK_SIZE + 1,
            chunks: 2,
            capacity: 2 * CHUNK_SIZE
        }
    );
    assert_eq!(
        log.refused(ev::LengthSet { file_id: tok("f1"), length: 1 }),
        MetaError::LengthShrinks { file: tok("f1"), current: 70 << 20, proposed: 1 }
    );
    let created = log.state.stat("ns", "/a").expect("stat").created_at;
    log.ok(ev::LengthSet { file_id: tok("f1"), length: 2 * CHUNK_SIZE });
    log.ok(ev::LengthSet { file_id: tok("f1"), length: 2 * CHUNK_SIZE }); // the same length again is fine
    let file = log.state.stat("ns", "/a").expect("stat");
    assert_eq!(file.length, 2 * CHUNK_SIZE);
    assert_eq!(file.created_at, created);
    assert_eq!(file.modified_at, log.events.last().expect("event").envelope.time);
    // An empty file has no room at all.
    log.ok(create("f3", "ns", "/c"));
    assert!(matches!(
        log.refused(ev::LengthSet { file_id: tok("f3"), length: 1 }),
        MetaError::LengthBeyondChunks { .. }
    ));
}

#[test]
fn renames_move_paths_and_may_replace_atomically() {
    let mut log = populated();
    log.ok(rename("f1", "/a", "/z", None));
    assert!(log.state.stat("ns", "/a").is_err());
    let moved = log.state.stat("ns", "/z").expect("moved");
    assert_eq!((moved.id.as_str(), moved.length, moved.chunks.len()), ("f1", 70 << 20, 2));
    assert_eq!(log.state.file_of(ChunkHandle(1)).expect("owner").0.path.as_ref(), "/z");

    // The event must say where the file is, and the target must be free unless the event replaces it.
    assert!(matches!(log.refused(rename("f1", "/a", "/y", None)), MetaError::Mismatch { .. }));
    assert_eq!(
        log.refused(rename("f1", "/z", "/b", None)),
        MetaError::FileExists { namespace: "ns".into(), path: "/b".into() }
    );
    assert_eq!(
        log.refused(rename("f1", "/z", "/b", Some("f9"))),
        MetaError::ReplaceMismatch { file: tok("f1"), expected: Some(tok("f9")), actual: Some(tok("f2")) }
    );
    assert_eq!(
        log.refused(rename("f1", "/z", "/free", Some("f2"))),
        MetaError::ReplaceMismatch { file: tok("f1"), expected: Some(tok("f2")), actual: None }
    );
    assert!(
        log.refused(rename("f1", "/z", "/z", None))
            == MetaError::FileExists { namespace: "ns".into(), path: "/z".into() }
    );
    assert!(matches!(log.refused(rename("f1", "/z", "/z", Some("f1"))), MetaError::ReplaceMismatch { .. }));
    assert!(matches!(log.refused(rename("f1", "/z", "/../b", None)), MetaError::BadPath(_)));

    // The command-side check computes what the event must say.
    assert_eq!(log.state.check_rename("ns", "/z", "/b", true), Ok((tok("f1"), Some(tok("f2")))));
    assert!(log.state.check_rename("ns", "/z", "/b", false).is_err());
    assert_eq!(log.state.check_rename("ns", "/z", "/q", false), Ok((tok("f1"), None)));

    // Replace: f2 disappears with the same event and its chunk becomes garbage.
    log.ok(rename("f1", "/z", "/b", Some("f2")));
    assert_eq!(log.state.stat("ns", "/b").expect("stat").id, tok("f1"));
    assert!(log.state.file(&tok("f2")).is_none());
    assert!(log.state.is_garbage(ChunkHandle(3)));
    assert_eq!(log.state.file_count(), 1);
    assert_eq!(paths(&log.state.list("ns", "", None, 10).expect("list")), ["/b"]);
}

#[test]
fn deleted_files_leave_garbage_until_their_chunks_are_forgotten() {
    let mut log = populated();
    assert!(matches!(log.refused(delete("f1", "/b")), MetaError::Mismatch { .. }));
    assert_eq!(
        log.refused(ev::ChunkDeleted { handle: 1 }),
        MetaError::ChunkInUse { handle: ChunkHandle(1), file: tok("f1") }
    );
    log.ok(delete("f1", "/a"));
    assert!(log.state.stat("ns", "/a").is_err());
    assert_eq!(log.state.chunks(&tok("f1")), Err(MetaError::NoFile(tok("f1"))));
    assert_eq!(log.state.file_of(ChunkHandle(1)), None);
    assert_eq!(log.state.version(ChunkHandle(2)), None);
    assert_eq!(
        log.state.garbage().collect::<Vec<_>>(),
        [(ChunkHandle(1), ChunkVersion(1)), (ChunkHandle(2), ChunkVersion(2))]
    );
    // Garbage cannot be leased.
    assert_eq!(log.refused(ev::VersionBumped { handle: 1, version: 9 }), MetaError::NoChunk(ChunkHandle(1)));
    log.ok(ev::ChunkDeleted { handle: 1 });
    assert!(!log.state.is_garbage(ChunkHandle(1)));
    assert_eq!(log.refused(ev::ChunkDeleted { handle: 1 }), MetaError::NoChunk(ChunkHandle(1)));
    // The path is free again, but a forgotten handle is never handed out again.
    log.ok(create("f4", "ns", "/a"));
    assert_eq!(
        log.refused(add_chunk("f4", 0, 1)),
        MetaError::StaleHandle { handle: ChunkHandle(1), last: ChunkHandle(3) }
    );
    log.ok(add_chunk("f4", 0, 4));
}

#[test]
fn replays_at_or_below_the_last_sequence_are_ignored() {
    let log = populated();
    let mut again = MasterState::new();
    for event in &log.events {
        again.apply(event.stream_seq, event).expect("apply");
        again.apply(event.stream_seq, event).expect("the same event twice is a no-op");
    }
    assert_eq!(again, log.state);
    // Replaying the whole log over a state that has it changes nothing, even events that would now be
    // refused (creating an existing namespace).
    for event in &log.events {
        again.apply(event.stream_seq, event).expect("replay");
    }
    assert_eq!(again, log.state);
    assert_eq!(again.last_seq(), log.events.len() as u64);

    // Sequences may have gaps (other subjects of the stream, refused appends).
    let mut gappy = MasterState::new();
    for (i, event) in log.events.iter().enumerate() {
        gappy.apply(10 * (i as u64 + 1), event).expect("apply");
    }
    assert_eq!(gappy.last_seq(), 10 * log.events.len() as u64);
}

#[test]
fn unknown_and_malformed_events_are_errors_that_change_nothing() {
    let mut log = populated();
    let before = log.state.clone();
    let mut envelope = serde_json::to_value(Envelope::new("gfs", ns("x"))).expect("encode");
    envelope["type"] = "gfs.ns.created.v9".into();
    let unknown = RawEvent::parse(100, "gfs.ns.78.created", envelope.to_string().as_bytes()).expect("parse");
    assert!(matches!(log.state.apply(100, &unknown), Err(ApplyError::UnknownType { seq: 100, .. })));

    envelope["type"] = ev::NamespaceCreated::TYPE.into();
    envelope["data"] = serde_json::json!({ "nothing": true });
    let malformed = RawEvent::parse(101, "gfs.ns.78.created", envelope.to_string().as_bytes()).expect("parse");
    let err = log.state.apply(101, &malformed).expect_err("malformed");
    assert!(matches!(err, ApplyError::Decode { seq: 101, .. }), "{err}");
    assert_eq!(log.state, before);

    let rejected = log.push(ns("ns")).expect_err("duplicate");
    assert!(rejected.to_string().contains("namespace ns already exists"), "{rejected}");
}

#[test]
fn listing_pages_through_a_prefix_in_path_order() {
    let mut log = Log::default();
    log.ok(ns("ns"));
    log.ok(ns("other"));
    for i in 0..25 {
        log.ok(create(&format!("a{i}"), "ns", &format!("/dir/{i:02}")));
    }
    log.ok(create("b", "ns", "/dir0"));
    log.ok(create("c", "ns", "/dis"));
    log.ok(create("d", "ns", "/a"));
    log.ok(create("e", "other", "/dir/00"));
    let s = &log.state;

    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = s.list("ns", "/dir/", after.as_deref(), 10).expect("list");
        pages += 1;
        seen.extend(paths(&page));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..25).map(|i| format!("/dir/{i:02}")).collect::<Vec<_>>());

    assert_eq!(paths(&s.list("ns", "/dir", None, 100).expect("list")).len(), 26, "a prefix is not a directory");
    assert_eq!(paths(&s.list("ns", "", None, 3).expect("list")), ["/a", "/dir/00", "/dir/01"]);
    // A cursor before the prefix starts at the prefix; one past it ends the listing.
    assert_eq!(paths(&s.list("ns", "/dir/", Some("/a"), 2).expect("list")), ["/dir/00", "/dir/01"]);
    assert_eq!(paths(&s.list("ns", "/dir/", Some("/dir/24"), 2).expect("list")), Vec::<String>::new());
    // Exactly `limit` left: no next page.
    assert_eq!(s.list("ns", "/dir/", Some("/dir/19"), 5).expect("list").next, None);
    assert_eq!(s.list("ns", "/dir/", Some("/dir/18"), 5).expect("list").next.as_deref(), Some("/dir/23"));
    // Limits are clamped, namespaces are separate, bad input is refused.
    assert_eq!(s.list("ns", "/dir/", None, 0).expect("list").files.len(), 1);
    assert_eq!(s.list("ns", "/dir/", None, usize::MAX).expect("list").files.len(), 25);
    assert_eq!(paths(&s.list("other", "", None, 10).expect("list")), ["/dir/00"]);
    assert_eq!(s.list("nope", "", None, 10), Err(MetaError::NoNamespace("nope".into())));
    assert!(s.list("ns", "/\0", None, 10).is_err());
    assert!(s.list("ns", &"x".repeat(4097), None, 10).is_err());
}

#[test]
fn snapshots_restore_to_an_equal_state_and_the_tail_replays_on_top() {
    let mut log = populated();
    log.ok(ns("empty.ns"));
    log.ok(create("f3", "ns", "/dir/ünï cödé"));
    log.ok(delete("f2", "/b"));
    let middle = log.state.clone();
    let bytes = middle.snapshot().expect("snapshot");
    let restored = MasterState::restore(&bytes).expect("restore");
    assert_eq!(restored, middle);
    assert_eq!(restored.snapshot().expect("snapshot"), bytes, "snapshots are deterministic");
    assert_eq!(restored.last_seq(), middle.last_seq());
    assert!(restored.is_garbage(ChunkHandle(3)));
    assert_eq!(restored.next_handle(), ChunkHandle(4));

    // More events after the snapshot; a restart restores and replays the whole log (the part the
    // snapshot already has is ignored) and ends where the live state is.
    log.ok(add_chunk("f3", 0, 4));
    log.ok(ev::VersionBumped { handle: 4, version: 2 });
    log.ok(rename("f3", "/dir/ünï cödé", "/a", Some("f1")));
    log.ok(ev::ChunkDeleted { handle: 3 });
    let mut restarted = MasterState::restore(&bytes).expect("restore");
    for event in &log.events {
        restarted.apply(event.stream_seq, event).expect("replay");
    }
    assert_eq!(restarted, log.state);
    assert_eq!(
        MasterState::restore(&MasterState::new().snapshot().expect("empty")).expect("restore"),
        MasterState::new()
    );
}

#[test]
fn damaged_snapshots_are_refused() {
    let state = populated().state;
    let good: serde_json::Value = serde_json::from_slice(&state.snapshot().expect("snapshot")).expect("json");
    let restore = |v: &serde_json::Value| MasterState::restore(v.to_string().as_bytes());
    assert!(restore(&good).is_ok());

    let mut v = good.clone();
    v["f"] = 2.into();
    assert!(matches!(restore(&v), Err(SnapshotError::Format { found: 2 })));
    assert!(matches!(MasterState::restore(b"{\"f\":1"), Err(SnapshotError::Decode(_))));

    type Damage = fn(&mut serde_json::Value);
    let damage: [(&str, Damage); 7] = [
        ("duplicate path", |v| v["n"][0]["f"][1]["p"] = "/a".into()),
        ("duplicate file id", |v| v["n"][0]["f"][1]["i"] = "f1".into()),
        ("bad path", |v| v["n"][0]["f"][0]["p"] = "/../etc".into()),
        ("handle above the high-water mark", |v| v["h"] = 2.into()),
        ("chunk in two files", |v| v["n"][0]["f"][1]["k"][0][0] = 1.into()),
        ("length past the chunks", |v| v["n"][0]["f"][1]["l"] = (CHUNK_SIZE + 1).into()),
        ("version 0", |v| v["n"][0]["f"][0]["k"][0][1] = 0.into()),
    ];
    for (what, f) in damage {
        let mut v = good.clone();
        f(&mut v);
        assert!(matches!(restore(&v), Err(SnapshotError::Corrupt(_))), "{what}: {:?}", restore(&v).map(drop));
    }
}

#[test]
fn times_are_normalised_to_utc() {
    let mut state = MasterState::new();
    let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time").to_offset(time::macros::offset!(+2));
    state.apply_event(1, at, &ns("ns").into()).expect("apply");
    let created = state.namespace("ns").expect("ns").created_at();
    assert_eq!(created, at);
    assert!(created.offset().is_utc());
}
