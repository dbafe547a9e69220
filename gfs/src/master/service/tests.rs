//! Unit tests of the master's decisions: placement, repair planning, what a reported replica is
//! worth, orphan grace, lease targets, heartbeat bounds. The network paths are covered by the
//! integration suite (`it/tests/suite/gfs_master_service.rs`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edd_events::catalog::gfs as ev;
use edd_events::Token;
use time::OffsetDateTime;

use super::api::check_heartbeat;
use super::cluster::{ChunkLease, Cluster, CorruptVerdict, Policy};
use super::leases::{lease_target, MAX_WRITE_GAP};
use super::plan::{self, CloneLimits, Disposition, ServerId, ServerLoad, Shortfall};
use crate::chunk::{ChunkHandle, ChunkVersion};
use crate::master::{MasterState, MetaEvent};
use crate::rpc::messages::{ChunkReport, Heartbeat, Order, OrderKind};

const V1: ChunkVersion = ChunkVersion(1);
const V2: ChunkVersion = ChunkVersion(2);
const V3: ChunkVersion = ChunkVersion(3);

fn id(name: &str) -> ServerId {
    ServerId::from(name)
}

fn load(name: &str, free_gib: u64, chunks: usize) -> ServerLoad {
    ServerLoad { id: id(name), free_bytes: free_gib << 30, chunks, incoming: 0 }
}

fn ids(names: &[&str]) -> Vec<ServerId> {
    names.iter().map(|n| id(n)).collect()
}

// ---- placement --------------------------------------------------------------------------------------

#[test]
fn new_replicas_go_to_the_most_free_servers_then_the_least_loaded() {
    let servers = [load("a", 10, 5), load("b", 50, 9), load("c", 50, 2), load("d", 20, 0), load("e", 50, 2)];
    assert_eq!(plan::choose_new_replicas(&servers, 3), ids(&["c", "e", "b"]));
    assert_eq!(plan::choose_new_replicas(&servers[..2], 3), ids(&["b", "a"]), "fewer servers than wanted");
    assert!(plan::choose_new_replicas(&[], 3).is_empty());
}

#[test]
fn spreading_rotates_by_handle_and_keeps_every_item() {
    let mut items = vec![1, 2, 3];
    plan::spread(ChunkHandle(4), &mut items);
    assert_eq!(items, [2, 3, 1]);
    let mut empty: Vec<u8> = Vec::new();
    plan::spread(ChunkHandle(4), &mut empty);
}

// ---- dispositions and orphans -----------------------------------------------------------------------

#[test]
fn a_replica_is_current_stale_ahead_garbage_or_unknown() {
    assert_eq!(plan::disposition(Some(V2), false, V2, true, true), Disposition::Current);
    assert_eq!(plan::disposition(Some(V2), false, V1, true, true), Disposition::Stale);
    assert_eq!(plan::disposition(Some(V2), false, V3, false, true), Disposition::Ahead);
    assert_eq!(plan::disposition(None, true, V2, false, true), Disposition::Garbage);
    assert_eq!(plan::disposition(None, false, V2, false, true), Disposition::Unknown);
}

#[test]
fn a_version_ahead_of_the_log_is_adopted_only_when_no_replica_is_current() {
    // Others still at the logged version may hold writes the raised one lacks: it is stale.
    assert_eq!(plan::disposition(Some(V2), false, V3, true, true), Disposition::Stale);
    // A fresh master waits for every report before it decides.
    assert_eq!(plan::disposition(Some(V2), false, V3, false, false), Disposition::Undecided);
}

#[test]
fn a_raise_is_logged_only_once_a_majority_of_the_replicas_at_the_old_version_took_it() {
    let min = 2;
    // One of three: the other two could still acknowledge writes under the old lease.
    assert!(!plan::raise_holds(1, 3, min));
    assert!(plan::raise_holds(2, 3, min));
    assert!(plan::raise_holds(3, 3, min));
    // A stale replica left out of the raise still counts: two good of four is no majority.
    assert!(!plan::raise_holds(2, 4, min));
    // Two replicas: both.
    assert!(!plan::raise_holds(1, 2, min));
    // A lone survivor can be fenced for repair; nothing at all never holds.
    assert!(plan::raise_holds(1, 1, min));
    assert!(!plan::raise_holds(0, 0, min));
    // The lease minimum holds when there are enough replicas for it.
    assert!(!plan::raise_holds(2, 3, 3));
}

#[test]
fn a_raise_goes_past_every_version_seen() {
    assert_eq!(plan::next_version(V2, None), V3);
    assert_eq!(plan::next_version(V2, Some(V1)), V3);
    assert_eq!(plan::next_version(V2, Some(ChunkVersion(5))), ChunkVersion(6));
}

#[test]
fn a_chunk_handle_is_never_tried_twice() {
    assert_eq!(plan::next_handle(5, 0, 0), Some(ChunkHandle(6)));
    // An allocation of 7 failed: 8 next, though the log still ends at 5.
    assert_eq!(plan::next_handle(5, 7, 0), Some(ChunkHandle(8)));
    // A chunkserver holds an orphan 9 (a previous master's failed allocation).
    assert_eq!(plan::next_handle(5, 7, 9), Some(ChunkHandle(10)));
    assert_eq!(plan::next_handle(u64::MAX, 0, 0), None);
}

#[test]
fn orphans_wait_for_their_grace_and_for_a_settled_master() {
    let seen = Instant::now();
    let grace = Duration::from_secs(60);
    assert!(!plan::orphan_due(seen, seen + Duration::from_secs(59), grace, true));
    assert!(plan::orphan_due(seen, seen + grace, grace, true));
    // A master that just took over never deletes, however old the orphan.
    assert!(!plan::orphan_due(seen, seen + grace * 10, grace, false));
}

// ---- re-replication planning ------------------------------------------------------------------------

fn short(handle: u64, current: &[&str], holders: &[&str]) -> Shortfall {
    Shortfall {
        handle: ChunkHandle(handle),
        version: V1,
        current: ids(current),
        holders: ids(holders),
        in_flight: 0,
        leased: false,
    }
}

fn limits(max_total: usize, in_flight: usize) -> CloneLimits {
    CloneLimits { target: 3, max_total, per_destination: 2, in_flight }
}

#[test]
fn clones_go_to_the_most_urgent_chunks_first_within_the_global_bound() {
    let servers = [load("a", 10, 0), load("b", 10, 0), load("c", 10, 0), load("d", 40, 0), load("e", 30, 0)];
    let two_left = short(1, &["a", "b"], &["a", "b"]);
    let one_left = short(2, &["c"], &["c"]);
    let planned = plan::plan_clones(vec![two_left, one_left], &servers, limits(2, 0));
    // Only two clones allowed: both for the chunk with one replica left, to the emptiest servers.
    let shape: Vec<(u64, &str, &str)> = planned.iter().map(|p| (p.handle.0, &*p.source, &*p.destination)).collect();
    assert_eq!(shape, [(2, "c", "d"), (2, "c", "e")]);
    // Clones already in flight count against the bound.
    let again = plan::plan_clones(vec![short(2, &["c"], &["c"])], &servers, limits(8, 7));
    assert_eq!(again.len(), 1);
}

#[test]
fn clones_never_target_a_holder_and_at_most_two_per_destination() {
    // "x" holds a stale copy, so it may not receive one; "y" is the only other server.
    let servers = [load("a", 10, 0), load("x", 90, 0), load("y", 50, 0)];
    let chunks: Vec<Shortfall> = (1..=4).map(|h| short(h, &["a"], &["a", "x"])).collect();
    let planned = plan::plan_clones(chunks, &servers, limits(100, 0));
    assert!(planned.iter().all(|p| &*p.destination == "y"), "{planned:?}");
    assert_eq!(planned.len(), 2, "two clones per destination at most");
    // Different chunks, not two copies of one chunk to the same server.
    assert_ne!(planned[0].handle, planned[1].handle);
}

#[test]
fn missing_leased_and_satisfied_chunks_are_not_cloned() {
    let servers = [load("a", 10, 0), load("b", 10, 0), load("c", 10, 0), load("d", 10, 0)];
    let missing = short(1, &[], &[]);
    let mut leased = short(2, &["a"], &["a"]);
    leased.leased = true;
    let mut covered = short(3, &["a", "b"], &["a", "b", "c"]);
    covered.in_flight = 1;
    assert!(plan::plan_clones(vec![missing, leased, covered], &servers, limits(8, 0)).is_empty());
}

#[test]
fn several_clones_of_one_chunk_read_from_different_sources() {
    let servers = [load("a", 10, 0), load("b", 10, 0), load("c", 10, 0), load("d", 10, 0), load("e", 10, 0)];
    let chunk = Shortfall {
        handle: ChunkHandle(0),
        version: V1,
        current: ids(&["a", "b"]),
        holders: ids(&["a", "b"]),
        in_flight: 0,
        leased: false,
    };
    let planned = plan::plan_clones(vec![chunk], &servers, CloneLimits { target: 4, ..limits(8, 0) });
    let sources: Vec<&str> = planned.iter().map(|p| &*p.source).collect();
    assert_eq!(sources, ["a", "b"]);
}

// ---- lease targets ----------------------------------------------------------------------------------

#[test]
fn lease_targets_follow_the_request_rules() {
    // Writes: any chunk up to the chunk count (one new chunk at most).
    assert_eq!(MAX_WRITE_GAP, 1);
    assert_eq!(lease_target(0, false, 0), Ok(0));
    assert!(lease_target(1, false, 0).is_err());
    assert_eq!(lease_target(1, false, 2), Ok(1));
    assert_eq!(lease_target(2, false, 2), Ok(2));
    assert!(lease_target(3, false, 2).is_err());
    // Appends: the last chunk, the next one, and an earlier one means the last.
    assert_eq!(lease_target(0, true, 0), Ok(0));
    assert!(lease_target(1, true, 0).is_err());
    assert_eq!(lease_target(2, true, 3), Ok(2));
    assert_eq!(lease_target(3, true, 3), Ok(3));
    assert_eq!(lease_target(0, true, 3), Ok(2));
    assert!(lease_target(4, true, 3).is_err());
}

// ---- heartbeats against a real state ----------------------------------------------------------------

/// A state with one file holding `live` chunks (handle, version) and one deleted file whose chunks
/// (`garbage`) are garbage. Handles must be increasing, garbage ones above live ones.
fn state(live: &[(u64, u64)], garbage: &[u64]) -> MasterState {
    let mut state = MasterState::new();
    let mut seq = 0;
    let mut apply = |state: &mut MasterState, event: MetaEvent| {
        seq += 1;
        state.apply_event(seq, OffsetDateTime::UNIX_EPOCH, &event).expect("apply");
    };
    let tok = |s: &str| Token::new(s).expect("token");
    apply(&mut state, ev::NamespaceCreated { namespace: "ns".into() }.into());
    for (file, path) in [("live", "/live"), ("gone", "/gone")] {
        apply(&mut state, ev::FileCreated { file_id: tok(file), namespace: "ns".into(), path: path.into() }.into());
    }
    for (index, &(handle, version)) in live.iter().enumerate() {
        let index = u32::try_from(index).expect("index");
        apply(&mut state, ev::ChunkAdded { file_id: tok("live"), index, handle, version: 1 }.into());
        if version > 1 {
            apply(&mut state, ev::VersionBumped { handle, version }.into());
        }
    }
    for (index, &handle) in garbage.iter().enumerate() {
        let index = u32::try_from(index).expect("index");
        apply(&mut state, ev::ChunkAdded { file_id: tok("gone"), index, handle, version: 1 }.into());
    }
    let deleted = ev::FileDeleted { file_id: tok("gone"), namespace: "ns".into(), path: "/gone".into() };
    apply(&mut state, deleted.into());
    state
}

fn policy() -> Policy {
    Policy {
        chunkserver_timeout: Duration::from_secs(10),
        orphan_grace: Duration::from_secs(60),
        replication: 3,
        max_clones_in_flight: 8,
        clone_timeout: Duration::from_secs(120),
        min_replicas: 2,
        chunk_lease: Duration::from_secs(10),
    }
}

fn heartbeat(server: &str, full: bool, chunks: &[(u64, u64)]) -> Heartbeat {
    Heartbeat {
        server_id: server.into(),
        data_addr: format!("{server}.gfs:9080"),
        full,
        chunks: chunks.iter().map(|&(handle, version)| ChunkReport { handle, version, length: 0 }).collect(),
        free_bytes: 100 << 30,
        ..Heartbeat::default()
    }
}

fn socket() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9080))
}

/// The delete orders as (handle, version bound), by handle.
fn delete_bounds(orders: &[Order]) -> Vec<(u64, u64)> {
    let mut found: Vec<(u64, u64)> =
        orders.iter().filter(|o| o.kind == OrderKind::Delete as i32).map(|o| (o.handle, o.version)).collect();
    found.sort_unstable();
    found
}

fn deletes(orders: &[Order]) -> Vec<u64> {
    let mut handles: Vec<u64> =
        orders.iter().filter(|o| o.kind == OrderKind::Delete as i32).map(|o| o.handle).collect();
    handles.sort_unstable();
    handles
}

#[test]
fn an_unknown_server_is_asked_for_a_full_report_before_anything_counts() {
    let meta = state(&[(1, 1)], &[]);
    let mut cluster = Cluster::default();
    let t0 = Instant::now();
    cluster.reset(Some(t0));
    let out = cluster.heartbeat(&meta, &heartbeat("a", false, &[(1, 1)]), socket(), t0, &policy());
    assert!(out.reply.want_full_report);
    assert!(cluster.current_replicas(ChunkHandle(1), V1, t0, &policy()).is_empty());
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &[(1, 1)]), socket(), t0, &policy());
    assert!(!out.reply.want_full_report);
    assert_eq!(cluster.current_replicas(ChunkHandle(1), V1, t0, &policy()), ids(&["a"]));
}

#[test]
fn full_reports_sort_replicas_into_locations_deletes_adoptions_and_orphans() {
    // Chunk 1 at v2, chunk 2 at v1, chunk 3 at v1; chunk 10 is garbage; chunk 99 unknown.
    let meta = state(&[(1, 2), (2, 1), (3, 1)], &[10]);
    let mut cluster = Cluster::default();
    let t0 = Instant::now();
    cluster.reset(Some(t0));
    let p = policy();
    let report = [(1, 1), (2, 1), (3, 5), (10, 1), (99, 1)];
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &report), socket(), t0, &p);
    // Garbage (10) is deleted at once; the stale replica (1 at v1 < v2) only once it stayed stale for a
    // chunkserver timeout (a report may be older than a version raise); the orphan (99) after its grace.
    assert_eq!(deletes(&out.reply.orders), [10]);
    // Chunk 3 is ahead of the log and nothing else is current, but other servers may not have
    // reported yet: it is adopted once the master settled (below).
    assert!(out.adopt.is_empty());
    assert_eq!(cluster.current_replicas(ChunkHandle(2), V1, t0, &p), ids(&["a"]));
    assert!(cluster.current_replicas(ChunkHandle(1), V2, t0, &p).is_empty(), "a stale replica is no location");

    // A delete is not repeated on every heartbeat.
    let out = cluster.heartbeat(&meta, &heartbeat("a", false, &[]), socket(), t0 + Duration::from_secs(5), &p);
    assert!(deletes(&out.reply.orders).is_empty());
    // Full reports that keep saying the same (periodic ones) do not restart the clock.
    let confirmed = t0 + p.chunkserver_timeout;
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &report), socket(), confirmed, &p);
    assert_eq!(deletes(&out.reply.orders), [1]);
    assert_eq!(out.adopt, [(ChunkHandle(3), ChunkVersion(5))]);

    let noop = |_: ChunkHandle, _: ChunkVersion, _: &str| Order::default();
    let mut at = confirmed;
    while at + Duration::from_secs(5) < t0 + p.orphan_grace {
        at += Duration::from_secs(5);
        cluster.repair(&meta, at, &p, &noop);
        let out = cluster.heartbeat(&meta, &heartbeat("a", false, &[]), socket(), at, &p);
        assert!(!deletes(&out.reply.orders).contains(&99), "deleted at {:?}", at - t0);
    }
    let due = t0 + p.orphan_grace;
    cluster.repair(&meta, due, &p, &noop);
    let out = cluster.heartbeat(&meta, &heartbeat("a", false, &[]), socket(), due, &p);
    // (Deletes the server never carried out are ordered again every 30 s: 10 is among them here.)
    assert!(deletes(&out.reply.orders).contains(&99), "{:?}", out.reply.orders);
}

#[test]
fn a_stale_report_corrected_by_the_next_one_deletes_nothing() {
    // The log says version 2; a report built before the raise says 1, the next one 2.
    let meta = state(&[(1, 2)], &[]);
    let mut cluster = Cluster::default();
    let p = policy();
    let t0 = Instant::now();
    cluster.reset(Some(t0));
    let noop = |_: ChunkHandle, _: ChunkVersion, _: &str| Order::default();
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &[(1, 1)]), socket(), t0, &p);
    assert!(deletes(&out.reply.orders).is_empty());
    cluster.repair(&meta, t0 + Duration::from_secs(1), &p, &noop);
    let out = cluster.heartbeat(&meta, &heartbeat("a", false, &[(1, 2)]), socket(), t0 + Duration::from_secs(5), &p);
    assert!(deletes(&out.reply.orders).is_empty());
    let later = t0 + p.chunkserver_timeout * 2;
    cluster.heartbeat(&meta, &heartbeat("a", false, &[]), socket(), t0 + p.chunkserver_timeout, &p);
    cluster.repair(&meta, later, &p, &noop);
    let out = cluster.heartbeat(&meta, &heartbeat("a", false, &[]), socket(), later, &p);
    assert!(deletes(&out.reply.orders).is_empty(), "{:?}", out.reply.orders);
    assert_eq!(cluster.current_replicas(ChunkHandle(1), V2, later, &p), ids(&["a"]));
}

#[test]
fn a_master_that_just_took_over_deletes_no_orphan() {
    let meta = state(&[], &[]);
    let mut cluster = Cluster::default();
    let p = policy();
    let t0 = Instant::now();
    // An orphan first seen long before this master took over: its grace is over, the takeover's is not.
    let took_over = t0 + p.orphan_grace * 2;
    cluster.reset(Some(took_over));
    cluster.heartbeat(&meta, &heartbeat("a", true, &[(99, 1)]), socket(), t0, &p);
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &[(99, 1)]), socket(), took_over, &p);
    assert!(deletes(&out.reply.orders).is_empty());
    // Once every server had the time to report, the orphan goes.
    let settled = took_over + p.chunkserver_timeout;
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &[(99, 1)]), socket(), settled, &p);
    assert_eq!(deletes(&out.reply.orders), [99]);
}

#[test]
fn quarantined_dead_and_corrupt_replicas_are_never_locations() {
    let meta = state(&[(1, 1)], &[]);
    let mut cluster = Cluster::default();
    let p = policy();
    let t0 = Instant::now();
    cluster.reset(Some(t0));
    for server in ["a", "b", "c"] {
        let mut hb = heartbeat(server, true, &[(1, 1)]);
        if server == "c" {
            hb.chunks.clear();
            hb.quarantined = vec![1];
        }
        cluster.heartbeat(&meta, &hb, socket(), t0, &p);
    }
    assert_eq!(cluster.current_replicas(ChunkHandle(1), V1, t0, &p), ids(&["a", "b"]));
    // "c"'s quarantined copy is deleted: others are current.
    let out = cluster.heartbeat(&meta, &heartbeat("c", false, &[]), socket(), t0, &p);
    assert!(out.reply.orders.is_empty(), "already ordered in the full report");

    // "b" is found corrupt by a reader: not listed from then on, deleted at its next heartbeat.
    let b = id("b");
    cluster.condemn(&b, ChunkHandle(1), t0);
    assert_eq!(cluster.current_replicas(ChunkHandle(1), V1, t0, &p), ids(&["a"]));
    let out = cluster.heartbeat(&meta, &heartbeat("b", false, &[]), socket(), t0, &p);
    assert_eq!(deletes(&out.reply.orders), [1]);

    // "a" falls silent: past the timeout it is dead and no longer listed.
    let late = t0 + p.chunkserver_timeout + Duration::from_secs(1);
    assert!(cluster.current_replicas(ChunkHandle(1), V1, late, &p).is_empty());
}

#[test]
fn repair_orders_clones_only_once_settled_and_tracks_them_until_done() {
    let meta = state(&[(1, 1)], &[]);
    let mut cluster = Cluster::default();
    let p = policy();
    let t0 = Instant::now();
    cluster.reset(Some(t0));
    cluster.heartbeat(&meta, &heartbeat("a", true, &[(1, 1)]), socket(), t0, &p);
    for server in ["b", "c"] {
        cluster.heartbeat(&meta, &heartbeat(server, true, &[]), socket(), t0, &p);
    }
    let order = |handle: ChunkHandle, version: ChunkVersion, source: &str| Order {
        kind: OrderKind::Clone as i32,
        handle: handle.0,
        version: version.0,
        source: source.to_owned(),
        read_token: Vec::new(),
    };
    // Within the takeover grace: nothing is cloned.
    assert_eq!(cluster.repair(&meta, t0 + Duration::from_secs(1), &p, &order).clones_ordered, 0);

    // Settled: the chunk is first to be fenced (its version raised, so no lease can write to the
    // version being copied); once it is, clones are ordered.
    let settled = t0 + p.chunkserver_timeout;
    for server in ["a", "b", "c"] {
        cluster.heartbeat(&meta, &heartbeat(server, false, &[]), socket(), settled, &p);
    }
    let pass = cluster.repair(&meta, settled, &p, &order);
    assert_eq!((pass.fence.as_slice(), pass.clones_ordered), ([ChunkHandle(1)].as_slice(), 0));
    cluster.fenced_at(ChunkHandle(1), V1);
    assert_eq!(cluster.repair(&meta, settled, &p, &order).clones_ordered, 2);
    assert_eq!(cluster.clones_in_flight(), 2);
    // In flight: the next pass orders nothing more.
    assert_eq!(cluster.repair(&meta, settled, &p, &order).clones_ordered, 0);

    let out = cluster.heartbeat(&meta, &heartbeat("b", false, &[]), socket(), settled, &p);
    let clone = out.reply.orders.iter().find(|o| o.kind == OrderKind::Clone as i32).expect("clone order");
    assert_eq!((clone.handle, clone.version, clone.source.as_str()), (1, 1, "a.gfs:9080"));
    // "b" reports the copy: done, and a location.
    cluster.heartbeat(&meta, &heartbeat("b", false, &[(1, 1)]), socket(), settled, &p);
    assert_eq!(cluster.clones_in_flight(), 1);
    assert_eq!(cluster.current_replicas(ChunkHandle(1), V1, settled, &p), ids(&["a", "b"]));
    // "c" says its clone is done (here: failed): no longer in flight, so it is planned again.
    let mut done = heartbeat("c", false, &[]);
    done.clones_done = vec![1];
    cluster.heartbeat(&meta, &done, socket(), settled, &p);
    assert_eq!(cluster.clones_in_flight(), 0);
    assert_eq!(cluster.repair(&meta, settled, &p, &order).clones_ordered, 1);
}

#[test]
fn a_leased_chunk_waits_for_its_lease_unless_it_is_below_the_lease_minimum() {
    let meta = state(&[(1, 1)], &[]);
    let mut cluster = Cluster::default();
    let p = policy();
    let t0 = Instant::now();
    cluster.reset(Some(t0));
    let settled = t0 + p.chunkserver_timeout;
    for (server, chunks) in [("a", &[(1, 1)][..]), ("b", &[(1, 1)][..]), ("c", &[][..])] {
        cluster.heartbeat(&meta, &heartbeat(server, true, chunks), socket(), settled, &p);
    }
    let lease = ChunkLease {
        version: V1,
        primary: id("a"),
        secondaries: ids(&["b"]),
        expires: settled + Duration::from_secs(60),
        expires_at: std::time::SystemTime::now() + Duration::from_secs(60),
    };
    cluster.grant(ChunkHandle(1), lease);
    let noop = |_: ChunkHandle, _: ChunkVersion, _: &str| Order::default();
    // Two current replicas: writes go on; the clone waits for the lease to end.
    assert!(cluster.repair(&meta, settled, &p, &noop).fence.is_empty());
    // One found corrupt: below the lease minimum, the chunk is fenced at once.
    cluster.condemn(&id("b"), ChunkHandle(1), settled);
    assert_eq!(cluster.repair(&meta, settled, &p, &noop).fence, [ChunkHandle(1)]);
}

#[test]
fn garbage_is_deleted_everywhere_then_forgotten_once_settled() {
    let meta = state(&[], &[10]);
    let mut cluster = Cluster::default();
    let p = policy();
    let t0 = Instant::now();
    cluster.reset(Some(t0));
    cluster.heartbeat(&meta, &heartbeat("a", true, &[(10, 1)]), socket(), t0, &p);
    let noop = |_: ChunkHandle, _: ChunkVersion, _: &str| Order::default();
    let settled = t0 + p.chunkserver_timeout;
    cluster.heartbeat(&meta, &heartbeat("a", false, &[]), socket(), settled, &p);
    assert!(cluster.repair(&meta, settled, &p, &noop).forget.is_empty(), "a live server still holds it");
    let mut removed = heartbeat("a", false, &[]);
    removed.removed = vec![10];
    cluster.heartbeat(&meta, &removed, socket(), settled, &p);
    assert_eq!(cluster.repair(&meta, settled, &p, &noop).forget, [ChunkHandle(10)]);
    // Not before the takeover grace.
    let mut fresh = Cluster::default();
    fresh.reset(Some(t0));
    assert!(fresh.repair(&meta, t0, &p, &noop).forget.is_empty());
}

#[test]
fn a_chunk_with_fewer_current_replicas_is_counted_under_replicated_or_missing() {
    let meta = state(&[(1, 1), (2, 1)], &[]);
    let mut cluster = Cluster::default();
    let p = policy();
    let t0 = Instant::now();
    cluster.reset(Some(t0));
    cluster.heartbeat(&meta, &heartbeat("a", true, &[(1, 1)]), socket(), t0, &p);
    let health = cluster.health(&meta, t0, &p);
    assert_eq!((health.under_replicated, health.missing), (2, 1));
}

#[test]
fn heartbeats_are_bounded_before_use() {
    let good = heartbeat("cs-1", true, &[]);
    assert!(check_heartbeat(&good).is_ok());
    for bad in [heartbeat("", true, &[]), heartbeat(&"x".repeat(200), true, &[]), heartbeat("a b", true, &[])] {
        assert!(check_heartbeat(&bad).is_err());
    }
    let mut no_port = heartbeat("cs-1", true, &[]);
    no_port.data_addr = "somewhere".into();
    assert!(check_heartbeat(&no_port).is_err());
}

// ---- review fixes: versions ahead, delete bounds, takeover leases, corrupt reports, handles ----------

/// A cluster whose master took over at `t0` and settled, with `reports` (server, chunks) taken at the
/// moment it settled.
fn settled_cluster(meta: &MasterState, t0: Instant, reports: &[(&str, &[(u64, u64)])]) -> (Cluster, Instant) {
    let mut cluster = Cluster::default();
    let p = policy();
    cluster.reset(Some(t0));
    let settled = t0 + p.chunk_lease;
    for (server, chunks) in reports {
        cluster.heartbeat(meta, &heartbeat(server, true, chunks), socket(), settled, &p);
    }
    (cluster, settled)
}

#[test]
fn a_replica_raised_alone_is_retired_not_adopted_while_others_are_current() {
    // The log says 5; a raise to 6 reached only "a" and was not logged; "b" and "c" may since have
    // acknowledged writes under the old lease.
    let meta = state(&[(1, 5)], &[]);
    let p = policy();
    let t0 = Instant::now();
    let (mut cluster, settled) = settled_cluster(&meta, t0, &[("b", &[(1, 5)]), ("c", &[(1, 5)])]);
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &[(1, 6)]), socket(), settled, &p);
    assert!(out.adopt.is_empty(), "{:?}", out.adopt);
    let noop = |_: ChunkHandle, _: ChunkVersion, _: &str| Order::default();
    assert!(cluster.repair(&meta, settled, &p, &noop).adopt.is_empty());
    assert_eq!(cluster.current_replicas(ChunkHandle(1), ChunkVersion(5), settled, &p), ids(&["b", "c"]));
    // Like a stale one, it goes once it stayed so for a chunkserver timeout, and only at version 6.
    let later = settled + p.chunkserver_timeout;
    cluster.repair(&meta, later, &p, &noop);
    let out = cluster.heartbeat(&meta, &heartbeat("a", false, &[]), socket(), later, &p);
    assert_eq!(delete_bounds(&out.reply.orders), [(1, 6)]);
}

#[test]
fn a_version_ahead_is_adopted_once_settled_when_nothing_is_current() {
    // Every replica was raised to 6 and the master died before logging it.
    let meta = state(&[(1, 5)], &[]);
    let p = policy();
    let t0 = Instant::now();
    let mut cluster = Cluster::default();
    cluster.reset(Some(t0));
    // The first report after a takeover: the others may still say 5.
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &[(1, 6)]), socket(), t0, &p);
    assert!(out.adopt.is_empty());
    let settled = t0 + p.chunkserver_timeout;
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &[(1, 6)]), socket(), settled, &p);
    assert_eq!(out.adopt, [(ChunkHandle(1), ChunkVersion(6))]);
}

#[test]
fn the_next_raise_skips_versions_replicas_were_raised_to_without_the_log() {
    let meta = state(&[(1, 5)], &[]);
    let t0 = Instant::now();
    let (mut cluster, _) = settled_cluster(&meta, t0, &[("a", &[(1, 6)]), ("b", &[(1, 5)])]);
    // "a" is at 6 without the writes "b" may have taken at 5: the raise must not make it current.
    assert_eq!(cluster.next_raise(ChunkHandle(1), ChunkVersion(5)), ChunkVersion(7));
    // A raise tried (and maybe half done) is not tried again at the same version.
    assert_eq!(cluster.next_raise(ChunkHandle(1), ChunkVersion(5)), ChunkVersion(8));
}

#[test]
fn the_replicas_at_the_old_version_include_corrupt_ones_that_still_take_writes() {
    let meta = state(&[(1, 1)], &[]);
    let p = policy();
    let t0 = Instant::now();
    let (mut cluster, settled) = settled_cluster(&meta, t0, &[("a", &[(1, 1)]), ("b", &[(1, 1)]), ("c", &[(1, 2)])]);
    cluster.condemn(&id("b"), ChunkHandle(1), settled);
    assert_eq!(cluster.current_replicas(ChunkHandle(1), V1, settled, &p), ids(&["a"]));
    assert_eq!(cluster.live_at(ChunkHandle(1), V1, settled, &p), 2);
    // So a fence that raises "a" alone is not logged while "b" is there.
    assert!(!plan::raise_holds(1, cluster.live_at(ChunkHandle(1), V1, settled, &p), p.min_replicas));
}

#[test]
fn right_after_a_takeover_every_chunk_may_be_leased() {
    // Two current replicas (enough for a lease), one short of the target.
    let meta = state(&[(1, 1)], &[]);
    let p = Policy { chunk_lease: Duration::from_secs(30), ..policy() };
    let t0 = Instant::now();
    let mut cluster = Cluster::default();
    cluster.reset(Some(t0));
    let settled = t0 + p.chunkserver_timeout;
    for (server, chunks) in [("a", &[(1, 1)][..]), ("b", &[(1, 1)][..]), ("c", &[][..])] {
        cluster.heartbeat(&meta, &heartbeat(server, true, chunks), socket(), settled, &p);
    }
    let noop = |_: ChunkHandle, _: ChunkVersion, _: &str| Order::default();
    // Settled, but a lease the previous master granted may still be in use: not fenced.
    assert!(cluster.repair(&meta, settled, &p, &noop).fence.is_empty());
    let free = t0 + p.chunk_lease;
    for (server, chunks) in [("a", &[(1, 1)][..]), ("b", &[(1, 1)][..]), ("c", &[][..])] {
        cluster.heartbeat(&meta, &heartbeat(server, true, chunks), socket(), free, &p);
    }
    assert_eq!(cluster.repair(&meta, free, &p, &noop).fence, [ChunkHandle(1)]);
}

#[test]
fn delete_orders_carry_the_version_they_may_remove() {
    // Chunk 1 at v3; chunk 10 is garbage.
    let meta = state(&[(1, 3)], &[10]);
    let p = policy();
    let t0 = Instant::now();
    let (mut cluster, settled) = settled_cluster(&meta, t0, &[("b", &[(1, 3)])]);
    let out = cluster.heartbeat(&meta, &heartbeat("a", true, &[(1, 2), (10, 1)]), socket(), settled, &p);
    // Garbage whatever its version.
    assert_eq!(delete_bounds(&out.reply.orders), [(10, 0)]);
    let noop = |_: ChunkHandle, _: ChunkVersion, _: &str| Order::default();
    let later = settled + p.chunkserver_timeout;
    cluster.heartbeat(&meta, &heartbeat("b", false, &[]), socket(), later, &p);
    cluster.repair(&meta, later, &p, &noop);
    let out = cluster.heartbeat(&meta, &heartbeat("a", false, &[]), socket(), later, &p);
    // The stale copy up to the version it was seen at.
    assert_eq!(delete_bounds(&out.reply.orders), [(1, 2)]);
}

#[test]
fn a_queued_delete_is_withdrawn_when_the_replica_turns_current() {
    let meta = state(&[(1, 2)], &[]);
    let p = policy();
    let t0 = Instant::now();
    let (mut cluster, settled) = settled_cluster(&meta, t0, &[("a", &[(1, 1)]), ("b", &[(1, 2)])]);
    let noop = |_: ChunkHandle, _: ChunkVersion, _: &str| Order::default();
    // Stale long enough: a delete is queued for "a"'s next heartbeat...
    let at = settled + p.chunkserver_timeout;
    cluster.heartbeat(&meta, &heartbeat("b", false, &[]), socket(), at, &p);
    cluster.repair(&meta, at, &p, &noop);
    // ...which reports the chunk at the current version (it was raised after all): no delete.
    let out = cluster.heartbeat(&meta, &heartbeat("a", false, &[(1, 2)]), socket(), at, &p);
    assert!(deletes(&out.reply.orders).is_empty(), "{:?}", out.reply.orders);
    assert_eq!(cluster.current_replicas(ChunkHandle(1), V2, at, &p), ids(&["a", "b"]));
}

#[test]
fn a_corrupt_report_about_an_older_version_condemns_nothing() {
    let meta = state(&[(1, 2)], &[]);
    let p = policy();
    let t0 = Instant::now();
    let (mut cluster, at) = settled_cluster(&meta, t0, &[("a", &[(1, 2)]), ("b", &[(1, 2)])]);
    let judge = |cluster: &mut Cluster, addr: &str, read| cluster.judge_corrupt(addr, ChunkHandle(1), read, V2, at, &p);
    // Read at version 1, before the raise: the copy now is another one.
    assert_eq!(judge(&mut cluster, "a.gfs:9080", V1), CorruptVerdict::Ignored);
    assert_eq!(judge(&mut cluster, "nowhere:9080", V2), CorruptVerdict::Ignored);
    assert_eq!(cluster.current_replicas(ChunkHandle(1), V2, at, &p), ids(&["a", "b"]));
    assert_eq!(judge(&mut cluster, "a.gfs:9080", V2), CorruptVerdict::Condemned);
    assert_eq!(judge(&mut cluster, "b.gfs:9080", V2), CorruptVerdict::Kept, "the last current replica");
    assert_eq!(cluster.current_replicas(ChunkHandle(1), V2, at, &p), ids(&["b"]));
}

#[test]
fn reported_handles_raise_the_allocation_floor() {
    let meta = state(&[(1, 1)], &[]);
    let mut cluster = Cluster::default();
    let t0 = Instant::now();
    cluster.reset(Some(t0));
    assert_eq!(cluster.highest_reported(), 0);
    let mut hb = heartbeat("a", true, &[(1, 1), (99, 1)]);
    hb.quarantined = vec![120];
    cluster.heartbeat(&meta, &hb, socket(), t0, &policy());
    assert_eq!(cluster.highest_reported(), 120);
}
