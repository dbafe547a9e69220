//! The master's metadata log against a real nats-server: GFS events appended through the event store,
//! fenced on the whole log, read back in order and folded into a [`MasterState`] that matches the
//! writer's — the path a master restart and a standby take.

use edd_events::catalog::gfs as ev;
use edd_events::consume::{replay, stream_head};
use edd_events::store::{AppendError, Outgoing};
use edd_events::{Envelope, Event, EventStore, Expected, RawEvent, Token};
use edd_gfs::chunk::{ChunkHandle, ChunkVersion};
use edd_gfs::master::{MasterState, MetaEvent};
use edd_it::TestEnv;
use futures_util::StreamExt;

/// What a master command does: check the event, append it fenced on the last applied sequence, apply it.
async fn commit<E>(store: &EventStore, state: &mut MasterState, event: E) -> Result<u64, AppendError>
where
    E: Event + Clone + Into<MetaEvent>,
{
    let meta: MetaEvent = event.clone().into();
    state.check(&meta).expect("a command appends only events that apply");
    let envelope = Envelope::new("gfs-master/test", event);
    let expected = match state.last_seq() {
        0 => Expected::NoStream,
        seq => Expected::Exactly(seq),
    };
    let seq = store.append(&ev::metadata_log(), expected, &[Outgoing::encode(&envelope)?]).await?.last_seq;
    state.apply_event(seq, envelope.time, &meta).expect("apply own event");
    Ok(seq)
}

/// Folds the whole `GFS` stream, from `after + 1`, into `state`.
async fn follow(env: &TestEnv, state: &mut MasterState) {
    let head = stream_head(&env.js, "GFS").await.expect("head");
    let mut messages = replay(&env.js, "GFS", &["gfs.>".to_owned()], state.last_seq() + 1).await.expect("replay");
    while state.last_seq() < head {
        let stored = messages.next().await.expect("more events").expect("event");
        let raw = RawEvent::parse(stored.seq, &stored.subject, &stored.payload).expect("envelope");
        state.apply(stored.seq, &raw).expect("apply");
    }
}

#[tokio::test]
async fn metadata_round_trips_through_jetstream_and_stale_writers_are_fenced() {
    let env = TestEnv::new().await.expect("test env");
    let store = env.events();
    let mut master = MasterState::new();
    let tok = |s: &str| Token::new(s).expect("token");

    commit(&store, &mut master, ev::NamespaceCreated { namespace: "logs.app".into() }).await.expect("ns");
    for (id, path) in [("f1", "/2026/11/a.log"), ("f2", "/2026/11/b.log")] {
        let created = ev::FileCreated { file_id: tok(id), namespace: "logs.app".into(), path: path.into() };
        commit(&store, &mut master, created).await.expect("create");
    }
    let handle = master.next_handle();
    commit(&store, &mut master, ev::ChunkAdded { file_id: tok("f1"), index: 0, handle: handle.0, version: 1 })
        .await
        .expect("chunk");
    // A handle past 2^53 travels exactly (as text, not as a JSON number).
    let big = u64::MAX - 7;
    commit(&store, &mut master, ev::ChunkAdded { file_id: tok("f2"), index: 0, handle: big, version: 1 })
        .await
        .expect("chunk");
    commit(&store, &mut master, ev::VersionBumped { handle: big, version: 2 }).await.expect("bump");
    commit(&store, &mut master, ev::LengthSet { file_id: tok("f2"), length: 4096 }).await.expect("length");
    let snapshot = master.snapshot().expect("snapshot");
    let rename = ev::FileRenamed {
        file_id: tok("f2"),
        namespace: "logs.app".into(),
        from: "/2026/11/b.log".into(),
        to: "/2026/11/a.log".into(),
        replaced: Some(tok("f1")),
    };
    commit(&store, &mut master, rename).await.expect("rename");
    commit(&store, &mut master, ev::ChunkDeleted { handle: handle.0 }).await.expect("forget garbage");

    // A master that missed the last event (deposed, or racing) cannot append: the stream refuses it.
    let late = Envelope::new("gfs-master/test", ev::LengthSet { file_id: tok("f2"), length: 8192 });
    let stale = store
        .append(
            &ev::metadata_log(),
            Expected::Exactly(master.last_seq() - 1),
            &[Outgoing::encode(&late).expect("encode")],
        )
        .await;
    assert!(matches!(stale, Err(AppendError::Conflict { .. })), "{stale:?}");
    // Nor can one that believes the log is empty.
    let fresh =
        store.append(&ev::metadata_log(), Expected::NoStream, &[Outgoing::encode(&late).expect("encode")]).await;
    assert!(matches!(fresh, Err(AppendError::Conflict { .. })), "{fresh:?}");

    // A standby replaying the stream from the start, and a restart from the snapshot plus the tail,
    // both end in exactly the writer's state.
    let mut standby = MasterState::new();
    follow(&env, &mut standby).await;
    assert_eq!(standby, master);
    let mut restarted = MasterState::restore(&snapshot).expect("restore");
    assert!(restarted.last_seq() < master.last_seq());
    follow(&env, &mut restarted).await;
    assert_eq!(restarted, master);

    let file = restarted.stat("logs.app", "/2026/11/a.log").expect("stat");
    assert_eq!((file.id.as_str(), file.length), ("f2", 4096));
    assert_eq!(restarted.version(ChunkHandle(big)), Some(ChunkVersion(2)));
    assert_eq!(restarted.garbage().count(), 0);
}
