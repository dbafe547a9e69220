//! Client tests over real TCP on 127.0.0.1: a fake master (`fake_master`, served with `rpc::serve`) over
//! three in-process data servers, each with its own chunk store in a fresh temporary directory. A data
//! server is killed by aborting its serve task, which drops its listener and connections at once.

mod fake_master;

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::fake_master::FakeMaster;
use super::lease::{ChunkLease, NoChain};
use super::write::{pieces, Piece};
use super::*;
use crate::chunk::{ChunkHandle, ChunkStore, CHUNK_SIZE};
use crate::dataplane::{ClusterKey, DataServer, ServerConfig, MAX_RECORD};
use crate::rpc::{Authenticator, ServeOptions};
use crate::test_support::{assert_same, pattern, TempDir};
use crate::tls::testing::Pki;
use crate::tls::Tls;

const CLUSTER_KEY: [u8; 32] = [0x5a; 32];
const CLIENT_SECRET: &[u8] = b"client-secret-of-the-tests";
const MIB: u64 = 1024 * 1024;

/// One data server: a store in its own directory, served on an ephemeral port.
struct Node {
    addr: SocketAddr,
    store: ChunkStore,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

struct Cluster {
    fake: Arc<FakeMaster>,
    master_addr: SocketAddr,
    nodes: Vec<Node>,
    tls: Option<Tls>,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        Cluster::start_with(name, None).await
    }

    /// A cluster whose master and data servers serve `tls` only (when set).
    async fn start_with(name: &str, tls: Option<Tls>) -> Cluster {
        let key = Arc::new(ClusterKey::new(&CLUSTER_KEY).expect("key"));
        let mut nodes = Vec::new();
        for i in 0..3 {
            let dir = TempDir::new(&format!("client-{name}-{i}"));
            let store = ChunkStore::open(dir.path()).await.expect("open store");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let mut config = ServerConfig::new(Arc::clone(&key));
            config.deadlines.replicate = Duration::from_secs(3);
            config.tls = tls.clone();
            let server = DataServer::new(store.clone(), config);
            let task = tokio::spawn(server.serve(listener, std::future::pending()));
            nodes.push(Node { addr, store, task: Some(task), _dir: dir });
        }
        let servers = nodes.iter().map(|n| n.addr.to_string()).collect();
        let fake = Arc::new(FakeMaster::new(key, servers, tls.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind master");
        let master_addr = listener.local_addr().expect("master addr");
        let auth = Arc::new(Authenticator::new(&CLUSTER_KEY, CLIENT_SECRET).expect("auth"));
        let serving = rpc::serve_with(
            listener,
            Arc::clone(&fake),
            auth,
            ServeOptions::default(),
            tls.clone(),
            std::future::pending(),
        );
        tokio::spawn(serving);
        Cluster { fake, master_addr, nodes, tls }
    }

    fn config(&self) -> GfsConfig {
        let mut config = GfsConfig::new(vec![self.master_addr.to_string()], CLIENT_SECRET.to_vec());
        config.master.failover_timeout = Duration::from_secs(5);
        config.data.connect_timeout = Duration::from_secs(2);
        config.data.io_timeout = Duration::from_secs(10);
        config.data.reply_timeout = Duration::from_secs(20);
        config.retry_deadline = Duration::from_secs(20);
        config
    }

    fn client(&self) -> GfsClient {
        GfsClient::new(self.config()).expect("client")
    }

    /// Kills data server `i`: its listener and connections are gone when this returns.
    async fn kill(&mut self, i: usize) {
        if let Some(task) = self.nodes[i].task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn name(&self, i: usize) -> String {
        self.nodes[i].addr.to_string()
    }

    async fn stale_reported(&self) -> Vec<String> {
        self.fake.commits().await.into_iter().flat_map(|c| c.stale).map(|s| s.addr).collect()
    }
}

/// Creates the namespace `ns` and an empty file `path` in it; answers the file's id.
async fn with_file(client: &GfsClient, path: &str) -> String {
    client.create_namespace("ns").await.expect("namespace");
    client.create("ns", path).await.expect("create").id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_across_a_chunk_boundary_reads_back_identically_and_reads_stop_at_the_committed_length() {
    let cluster = Cluster::start("boundary").await;
    let client = cluster.client();
    let id = with_file(&client, "big").await;
    let data = pattern((CHUNK_SIZE + 3 * MIB) as usize, 1);
    client.write_at(&id, 0, Bytes::from(data.clone())).await.expect("write");

    let info = client.stat("ns", "big").await.expect("stat");
    assert_eq!((info.length, info.chunk_count), (data.len() as u64, 2));
    let lengths: Vec<u64> = cluster.fake.commits().await.iter().map(|c| c.length).collect();
    assert!(lengths.contains(&CHUNK_SIZE), "a commit at the end of the first chunk: {lengths:?}");
    assert_eq!(lengths.last(), Some(&(data.len() as u64)));
    assert_eq!(cluster.fake.lease_requests().await, 2, "one lease per chunk, cached across its nine pieces");

    // The whole file, streamed; a range across the boundary; ranges cut at the committed length.
    let mut whole = Vec::new();
    let n = client.read_to(&id, 0, u64::MAX, &mut whole).await.expect("read_to");
    assert_eq!(n, data.len() as u64);
    assert_same(&whole, &data, "whole file");
    let from = (CHUNK_SIZE - 100_000) as usize;
    let across = client.read_at(&id, from as u64, 300_000).await.expect("across");
    assert_same(&across, &data[from..from + 300_000], "across the boundary");
    let tail = client.read_at(&id, data.len() as u64 - 10, 1000).await.expect("tail");
    assert_same(&tail, &data[data.len() - 10..], "cut at the length");
    let at_end = client.read_at(&id, data.len() as u64, 1000).await.expect("at the end");
    assert!(at_end.is_empty());
    let past = client.read_at(&id, data.len() as u64 + 1, 1).await.expect_err("past the end");
    assert!(matches!(past, GfsError::InvalidArgument(_)), "{past}");

    // An overwrite in the middle of the first chunk is visible to the next read.
    let patch = pattern(70_000, 2);
    client.write_at(&id, 5_000_000, Bytes::from(patch.clone())).await.expect("overwrite");
    let got = client.read_at(&id, 5_000_000 - 10, 70_020).await.expect("read patch");
    assert_same(&got[..10], &data[5_000_000 - 10..5_000_000], "before the patch");
    assert_same(&got[10..70_010], &patch, "the patch");
    assert_same(&got[70_010..], &data[5_070_000..5_070_010], "after the patch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_left_in_a_chunk_by_a_write_to_the_next_one_reads_as_zeros() {
    let cluster = Cluster::start("hole").await;
    let client = cluster.client();
    let id = with_file(&client, "sparse").await;
    let head = pattern(100, 7);
    client.write_at(&id, 0, Bytes::from(head.clone())).await.expect("write the head");
    let tail = pattern(1000, 8);
    client.write_at(&id, CHUNK_SIZE + 10, Bytes::from(tail.clone())).await.expect("write into chunk 1");

    // Every replica of chunk 0 holds 100 bytes; the rest of it, up to chunk 1, is a hole.
    let started = Instant::now();
    let inside = client.read_at(&id, 200, 10).await.expect("read inside the hole");
    assert_eq!(&inside[..], &[0; 10], "a hole reads as zeros");
    assert!(started.elapsed() < Duration::from_secs(5), "answered at once, not after retries");
    let across = client.read_at(&id, 50, 100).await.expect("read across the head's end");
    assert_same(&across[..50], &head[50..], "the head");
    assert_eq!(&across[50..], &[0; 50], "then the hole");
    let into_next = client.read_at(&id, CHUNK_SIZE - 5, 1015).await.expect("read into chunk 1");
    assert_eq!(&into_next[..15], &[0; 15], "the hole's end and chunk 1's own gap");
    assert_same(&into_next[15..], &tail, "chunk 1's data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_reader_adapters_copy_byte_identical_across_a_chunk_boundary() {
    let cluster = Cluster::start("adapters").await;
    let mut config = cluster.config();
    // An odd piece size: pieces must still end exactly at the chunk boundary.
    config.write_piece = MIB as usize + 17;
    let client = GfsClient::new(config).expect("client");
    let id = with_file(&client, "stream").await;
    let start = CHUNK_SIZE - 2 * MIB - 5;
    let data = pattern((5 * MIB + 123) as usize, 3);

    let mut writer = client.writer(&id, start);
    let copied = tokio::io::copy(&mut &data[..], &mut writer).await.expect("copy in");
    writer.shutdown().await.expect("shutdown");
    assert_eq!(copied, data.len() as u64);
    let info = client.stat("ns", "stream").await.expect("stat");
    assert_eq!((info.length, info.chunk_count), (start + data.len() as u64, 2), "shutdown committed everything");
    let lengths: Vec<u64> = cluster.fake.commits().await.iter().map(|c| c.length).collect();
    assert!(lengths.contains(&CHUNK_SIZE), "the writer commits at the end of a chunk: {lengths:?}");
    assert!(writer.write_all(b"more").await.is_err(), "a shut writer takes nothing more");

    let mut reader = client.reader(&id, start, None);
    let mut got = Vec::new();
    tokio::io::copy(&mut reader, &mut got).await.expect("copy out");
    assert_same(&got, &data, "read back through the reader");

    let boundary = (CHUNK_SIZE - start) as usize;
    let mut reader = client.reader(&id, CHUNK_SIZE - 1000, Some(2000));
    let mut got = Vec::new();
    reader.read_to_end(&mut got).await.expect("ranged reader");
    assert_same(&got, &data[boundary - 1000..boundary + 1000], "ranged reader across the boundary");

    // What lies before the first write is a hole of zeros.
    let hole = client.read_at(&id, start - 4096, 4096).await.expect("hole");
    assert!(hole.iter().all(|&b| b == 0));

    // A reader past the end fails; one at the end is empty.
    let mut reader = client.reader(&id, info.length + 1, None);
    assert!(reader.read_to_end(&mut Vec::new()).await.is_err());
    let mut reader = client.reader(&id, info.length, None);
    assert_eq!(reader.read_to_end(&mut Vec::new()).await.expect("at the end"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_secondary_costs_it_the_write_not_the_write_itself() {
    let mut cluster = Cluster::start("dead-secondary").await;
    let client = cluster.client();
    let id = with_file(&client, "f").await;
    let first = pattern(MIB as usize, 4);
    client.write_at(&id, 0, Bytes::from(first.clone())).await.expect("first write");
    assert!(cluster.stale_reported().await.is_empty());

    cluster.kill(1).await;
    let second = pattern(2 * MIB as usize, 5);
    client.write_at(&id, MIB, Bytes::from(second.clone())).await.expect("write with a dead secondary");
    assert_eq!(cluster.stale_reported().await, vec![cluster.name(1)], "the dead secondary is reported stale");
    let chunk = cluster.fake.chunk(&id, 0).await.expect("chunk");
    assert_eq!(chunk.replicas, vec![cluster.name(0), cluster.name(2)]);

    let got = client.read_at(&id, 0, 3 * MIB).await.expect("read");
    assert_same(&got[..MIB as usize], &first, "first write");
    assert_same(&got[MIB as usize..], &second, "second write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_is_reported_stale_and_a_new_lease_taken() {
    let mut cluster = Cluster::start("dead-primary").await;
    let client = cluster.client();
    let id = with_file(&client, "f").await;
    let first = pattern(MIB as usize, 6);
    client.write_at(&id, 0, Bytes::from(first.clone())).await.expect("first write");
    let before = cluster.fake.chunk(&id, 0).await.expect("chunk");

    cluster.kill(0).await;
    let second = pattern(MIB as usize, 7);
    client.write_at(&id, MIB, Bytes::from(second.clone())).await.expect("write with a dead primary");
    assert!(cluster.stale_reported().await.contains(&cluster.name(0)), "the dead primary is reported stale");
    let after = cluster.fake.chunk(&id, 0).await.expect("chunk");
    assert!(after.version > before.version, "a new lease raised the version: {before:?} -> {after:?}");
    assert_eq!(after.replicas, vec![cluster.name(1), cluster.name(2)]);
    // The replicas still in service are at the new version; the dead one was left behind.
    for node in &cluster.nodes[1..] {
        assert_eq!(node.store.stat(ChunkHandle(after.handle)).map(|c| c.version.0), Some(after.version));
    }

    let got = client.read_at(&id, 0, 2 * MIB).await.expect("read");
    assert_same(&got[..MIB as usize], &first, "first write");
    assert_same(&got[MIB as usize..], &second, "second write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_replica_is_reported_and_the_read_served_by_another() {
    let cluster = Cluster::start("corrupt").await;
    let client = cluster.client();
    let id = with_file(&client, "f").await;
    let data = pattern(2 * MIB as usize, 8);
    client.write_at(&id, 0, Bytes::from(data.clone())).await.expect("write");
    let chunk = cluster.fake.chunk(&id, 0).await.expect("chunk");

    // Flip a byte 1 MiB in on the second replica: the first piece of its read goes out before that.
    let victim = &cluster.nodes[1];
    let path = victim.store.dir().join(format!("{}.chunk", ChunkHandle(chunk.handle)));
    let file = OpenOptions::new().read(true).write(true).open(path).expect("open chunk file");
    let mut byte = [0];
    file.read_exact_at(&mut byte, MIB + 5).expect("read byte");
    file.write_all_at(&[byte[0] ^ 0x10], MIB + 5).expect("flip");
    drop(file);

    // Reads rotate their first replica: within three reads one starts at the corrupt one.
    let mut seen = cluster.fake.corrupt_seen();
    for round in 0..3 {
        let got = client.read_at(&id, 0, data.len() as u64).await.expect("read");
        assert_same(&got, &data, &format!("read {round}"));
    }
    tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|&n| n > 0))
        .await
        .expect("a corrupt report within 10 s")
        .expect("fake master alive");
    let reports = cluster.fake.corrupt_reports().await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!((reports[0].handle, reports[0].version), (chunk.handle, chunk.version));
    assert_eq!(reports[0].addr, cluster.name(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_from_eight_tasks_each_land_at_the_offset_they_were_given() {
    let cluster = Cluster::start("append").await;
    let client = cluster.client();
    let id = with_file(&client, "log").await;
    // 8 × 10 records of 0.5–1.4 MiB: past the first chunk, so some meet a full chunk and move on.
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let (client, id) = (client.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut landed = Vec::new();
            for i in 0..10u64 {
                let seed = task * 100 + i;
                let record = Bytes::from(pattern((MIB / 2 + seed * 9_973 % MIB) as usize, seed));
                let offset = client.append(&id, record.clone()).await.expect("append");
                landed.push((offset, record));
            }
            landed
        }));
    }
    let mut landed = Vec::new();
    for task in tasks {
        landed.extend(task.await.expect("task"));
    }
    landed.sort_by_key(|(offset, _)| *offset);
    for pair in landed.windows(2) {
        assert!(pair[0].0 + pair[0].1.len() as u64 <= pair[1].0, "records overlap at {}", pair[1].0);
    }
    let info = client.stat("ns", "log").await.expect("stat");
    assert!(info.chunk_count >= 2, "the appends filled a chunk: {info:?}");
    for (offset, record) in &landed {
        let end = offset + record.len() as u64;
        assert!(end <= info.length, "record at {offset} is committed");
        assert_eq!(offset / CHUNK_SIZE, (end - 1) / CHUNK_SIZE, "a record never straddles chunks");
        let got = client.read_at(&id, *offset, record.len() as u64).await.expect("read record");
        assert_same(&got, record, &format!("record at {offset}"));
    }
}

#[tokio::test]
async fn a_record_over_max_record_or_empty_is_refused_before_anything_is_asked() {
    let cluster = Cluster::start("too-large").await;
    let client = cluster.client();
    let id = with_file(&client, "f").await;
    let err = client.append(&id, Bytes::from(vec![0; MAX_RECORD as usize + 1])).await.expect_err("too large");
    assert!(matches!(err, GfsError::InvalidArgument(_)), "{err}");
    let err = client.append(&id, Bytes::new()).await.expect_err("empty");
    assert!(matches!(err, GfsError::InvalidArgument(_)), "{err}");
    assert_eq!(cluster.fake.lease_requests().await, 0);
    let offset = client.append(&id, Bytes::from(vec![7; MAX_RECORD as usize])).await.expect("a record of MAX_RECORD");
    assert_eq!(offset, 0);
}

#[tokio::test]
async fn with_every_replica_down_operations_fail_within_the_retry_deadline() {
    let mut cluster = Cluster::start("all-down").await;
    let mut config = cluster.config();
    config.retry_deadline = Duration::from_secs(2);
    let client = GfsClient::new(config).expect("client");
    let id = with_file(&client, "f").await;
    client.write_at(&id, 0, Bytes::from(pattern(100_000, 9))).await.expect("write");
    for i in 0..3 {
        cluster.kill(i).await;
    }

    let started = Instant::now();
    let err = client.write_at(&id, 0, Bytes::from_static(b"lost")).await.expect_err("nothing to write to");
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());

    let started = Instant::now();
    let err = client.read_at(&id, 0, 100).await.expect_err("nothing to read from");
    assert!(matches!(err, GfsError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("no replica could serve"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());

    // The adapters say so too: a writer's shutdown never reports unacknowledged bytes as written.
    let mut writer = client.writer(&id, 0);
    writer.write_all(b"lost as well").await.expect("buffered");
    let err = writer.shutdown().await.expect_err("shutdown with nothing to write to");
    // Unavailable, or timed out when the deadline passed inside an attempt.
    let transient = [std::io::ErrorKind::ConnectionAborted, std::io::ErrorKind::TimedOut];
    assert!(transient.contains(&err.kind()), "{err}");
    assert!(writer.flush().await.is_err(), "the failure sticks");
    let mut reader = client.reader(&id, 0, None);
    assert!(reader.read_to_end(&mut Vec::new()).await.is_err());
}

#[tokio::test]
async fn metadata_calls_pass_through_with_the_masters_answers() {
    let cluster = Cluster::start("metadata").await;
    let client = cluster.client();
    client.create_namespace("ns").await.expect("namespace");
    let err = client.create_namespace("ns").await.expect_err("twice");
    assert!(matches!(&err, GfsError::AlreadyExists(m) if m.contains("ns")), "{err}");
    for path in ["a/1", "a/2", "b/1"] {
        client.create("ns", path).await.expect("create");
    }
    let (page, next) = client.list("ns", "a/", None, 1).await.expect("list");
    assert_eq!((page.len(), page[0].path.as_str(), next.as_deref()), (1, "a/1", Some("a/1")));
    let (page, next) = client.list("ns", "a/", next.as_deref(), 1).await.expect("list 2");
    assert_eq!((page[0].path.as_str(), next), ("a/2", None));
    let moved = client.rename("ns", "a/1", "b/1", false).await.expect_err("taken");
    assert!(matches!(moved, GfsError::AlreadyExists(_)));
    let moved = client.rename("ns", "a/1", "b/1", true).await.expect("replace");
    assert_eq!(moved.path, "b/1");
    client.delete("ns", "b/1").await.expect("delete");
    assert!(matches!(client.stat("ns", "b/1").await, Err(GfsError::NotFound(_))));
    let namespaces = client.namespaces().await.expect("namespaces");
    assert_eq!((namespaces[0].name.as_str(), namespaces[0].file_count), ("ns", 1));
    assert!(matches!(client.delete_namespace("ns").await, Err(GfsError::FailedPrecondition(_))));
    assert_eq!(client.status().await.expect("status").files, 1);

    // A wrong secret is refused by the master, and said so.
    let mut config = cluster.config();
    config.client_secret = b"not-the-client-secret".to_vec();
    let stranger = GfsClient::new(config).expect("client");
    assert!(matches!(stranger.namespaces().await, Err(GfsError::PermissionDenied(_))));
}

#[test]
fn pieces_never_cross_a_chunk_and_never_exceed_the_piece_size() {
    let piece = 3 * MIB as usize;
    let start = CHUNK_SIZE - 4 * MIB - 1;
    let len = 10 * MIB as usize;
    let cut = pieces(start, len, piece);
    assert_eq!(cut.iter().map(|p| p.len).sum::<usize>(), len);
    let mut expected_start = 0;
    for p in &cut {
        assert_eq!(p.start, expected_start);
        assert_eq!(p.offset, start + p.start as u64);
        assert!(p.len <= piece && p.len > 0);
        assert_eq!(p.offset / CHUNK_SIZE, (p.end() - 1) / CHUNK_SIZE, "{p:?} crosses a chunk");
        expected_start += p.len;
    }
    assert!(cut.iter().any(|p| p.end() == CHUNK_SIZE), "one piece ends at the boundary");
    assert_eq!(cut[1], Piece { offset: start + piece as u64, start: piece, len: MIB as usize + 1 });
    assert!(pieces(5, 0, piece).is_empty());
    assert!(write::check_range(write::MAX_FILE_SIZE - 1, 2).is_err());
    assert!(write::check_range(u64::MAX, 1).is_err());
}

#[test]
fn master_codes_become_error_kinds_that_keep_the_message() {
    let cases = [
        (tonic::Status::not_found("no file at ns:x"), "NotFound"),
        (tonic::Status::already_exists("x exists"), "AlreadyExists"),
        (tonic::Status::invalid_argument("bad path"), "InvalidArgument"),
        (tonic::Status::unavailable("standby"), "Unavailable"),
        (tonic::Status::aborted("fenced"), "Unavailable"),
        (tonic::Status::deadline_exceeded("slow"), "Timeout"),
        (tonic::Status::unauthenticated("who"), "PermissionDenied"),
        (tonic::Status::failed_precondition("not empty"), "FailedPrecondition"),
        (tonic::Status::internal("bug"), "Internal"),
    ];
    for (status, kind) in cases {
        let message = status.message().to_owned();
        let error = GfsError::from(status);
        assert!(format!("{error:?}").starts_with(kind), "{error:?} is not {kind}");
        assert!(error.to_string().contains(&message), "{error} lost {message:?}");
    }
    assert!(GfsError::Unavailable(String::new()).is_transient());
    assert!(!GfsError::NotFound(String::new()).is_transient());
    let io: std::io::Error = GfsError::NotFound("gone".into()).into();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn bad_configs_are_refused_and_the_secret_is_never_printed() {
    let config = GfsConfig::new(vec!["127.0.0.1:9000".into()], b"super-secret-value-0123".to_vec());
    assert!(!format!("{config:?}").contains("super-secret"));
    let client = GfsClient::new(config.clone()).expect("client");
    assert!(!format!("{client:?}").contains("super-secret"));
    let refused = |change: fn(&mut GfsConfig)| {
        let mut bad = config.clone();
        change(&mut bad);
        matches!(GfsClient::new(bad), Err(GfsError::InvalidArgument(_)))
    };
    assert!(refused(|c| c.masters.clear()));
    assert!(refused(|c| c.client_secret = b"short".to_vec()));
    assert!(refused(|c| c.write_piece = 0));
    assert!(refused(|c| c.write_piece = CHUNK_SIZE as usize + 1));
    assert!(refused(|c| c.retry_deadline = Duration::ZERO));
}

#[tokio::test]
async fn a_lease_goes_on_without_a_replica_only_while_a_majority_remains_in_its_chain() {
    let lease = |secondaries: Vec<&str>| rpc::messages::Lease {
        index: 0,
        handle: 1,
        version: 1,
        primary: "127.0.0.1:1".into(),
        secondaries: secondaries.into_iter().map(String::from).collect(),
        push_token: vec![0; 40],
        mutate_token: vec![0; 40],
        expires_ms: i64::MAX / 2,
    };
    let wait = Duration::from_secs(1);
    let three = ChunkLease::from_reply(lease(vec!["127.0.0.1:2", "127.0.0.1:3"]), wait).await.expect("lease");
    assert!(three.exclude(&["127.0.0.1:3".into()]), "2 of 3 is a majority");
    let (primary, secondaries) = three.chain().expect("chain");
    assert_eq!((primary.port(), secondaries.iter().map(|a| a.port()).collect::<Vec<_>>()), (1, vec![2]));
    assert!(!three.exclude(&["127.0.0.1:2".into()]), "1 of 3 is not");
    assert_eq!(three.excluded(), vec!["127.0.0.1:3".to_owned(), "127.0.0.1:2".into()]);

    let two = ChunkLease::from_reply(lease(vec!["127.0.0.1:2"]), wait).await.expect("lease");
    assert!(!two.exclude(&["127.0.0.1:2".into()]), "1 of 2 is not a majority");
    let primary_gone = ChunkLease::from_reply(lease(vec!["127.0.0.1:2", "127.0.0.1:3"]), wait).await.expect("lease");
    assert!(!primary_gone.exclude(&["127.0.0.1:1".into()]), "nothing goes on without the primary");
    assert_eq!(primary_gone.chain(), Err(NoChain::PrimaryLost));
    assert!(primary_gone.exclude(&[]) == primary_gone.chain().is_ok());
    assert_eq!(three.chain(), Err(NoChain::TooFewReplicas { usable: 1, needed: 2 }), "no chain of 1 of 3");

    // Secondaries that do not resolve start out excluded, and count against the majority.
    let one_unresolved = ChunkLease::from_reply(lease(vec!["127.0.0.1:2", "no-port"]), wait).await.expect("lease");
    let (_, secondaries) = one_unresolved.chain().expect("2 of 3 is a chain");
    assert_eq!(secondaries.iter().map(|a| a.port()).collect::<Vec<_>>(), vec![2]);
    assert_eq!(one_unresolved.excluded(), vec!["no-port".to_owned()], "reported stale with the next commit");
    let two_unresolved = ChunkLease::from_reply(lease(vec!["no-port-a", "no-port-b"]), wait).await.expect("lease");
    assert_eq!(
        two_unresolved.chain(),
        Err(NoChain::TooFewReplicas { usable: 1, needed: 2 }),
        "a write on the primary alone would be acknowledged by 1 of 3 replicas"
    );
    let mut unresolved_primary = lease(vec!["127.0.0.1:2", "127.0.0.1:3"]);
    unresolved_primary.primary = "no-port".into();
    let unresolved_primary = ChunkLease::from_reply(unresolved_primary, wait).await.expect("lease");
    assert_eq!(unresolved_primary.chain(), Err(NoChain::PrimaryLost));

    let repeated = ChunkLease::from_reply(lease(vec!["127.0.0.1:1"]), wait).await;
    assert!(matches!(repeated, Err(GfsError::Internal(_))), "a replica listed twice is a broken answer");
    let mut bad_token = lease(vec![]);
    bad_token.push_token = vec![1, 2, 3];
    assert!(ChunkLease::from_reply(bad_token, wait).await.is_err());
}

// ---- TLS ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_file_is_written_and_read_back_and_clients_without_the_ca_or_tls_are_refused() {
    let pki = Pki::new();
    let cluster = Cluster::start_with("tls", Some(pki.server())).await;
    let mut config = cluster.config();
    config.tls = Some(pki.client());
    let client = GfsClient::new(config).expect("client");
    let id = with_file(&client, "secret").await;
    // Two chunks: pushes forwarded down the chain, primaries replicating to secondaries, all over TLS.
    let data = pattern((CHUNK_SIZE + MIB) as usize, 7);
    client.write_at(&id, 0, Bytes::from(data.clone())).await.expect("write over TLS");
    let back = client.read_at(&id, 0, data.len() as u64).await.expect("read over TLS");
    assert_same(&back, &data, "read back over TLS");

    // Plaintext to a TLS master: no handshake, so no master there.
    let mut plain = cluster.config();
    plain.master.failover_timeout = Duration::from_millis(500);
    plain.tls = None;
    let error = GfsClient::new(plain).expect("client").stat("ns", "secret").await.expect_err("plaintext refused");
    assert!(matches!(error, GfsError::Unavailable(_)), "{error:?}");

    // TLS, but trusting another CA: the master's certificate does not verify.
    let mut stranger = cluster.config();
    stranger.master.failover_timeout = Duration::from_millis(500);
    stranger.tls = Some(Pki::new().client());
    let error = GfsClient::new(stranger).expect("client").stat("ns", "secret").await.expect_err("wrong CA refused");
    assert!(matches!(error, GfsError::Unavailable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_plane_refuses_plaintext_both_ways_when_tls_is_configured() {
    let pki = Pki::new();
    let secure = Cluster::start_with("tls-data", Some(pki.server())).await;
    let plain = Cluster::start("tls-data-plain").await;
    assert!(secure.tls.is_some() && plain.tls.is_none());
    let key = ClusterKey::new(&CLUSTER_KEY).expect("key");
    let ping = crate::dataplane::CapabilityToken::mint_for(
        &key,
        crate::dataplane::TokenOp::Ping,
        ChunkHandle(0),
        crate::chunk::ChunkVersion(0),
        Duration::from_secs(60),
    );
    let config = dataplane::ClientConfig { connect_timeout: Duration::from_secs(2), ..Default::default() };
    let tls_client = DataClient::new(config).with_tls(Some(pki.client()));
    let plain_client = DataClient::new(config);
    let stranger = DataClient::new(config).with_tls(Some(Pki::new().client()));

    tls_client.ping(secure.nodes[0].addr, &ping).await.expect("TLS to TLS");
    plain_client.ping(plain.nodes[0].addr, &ping).await.expect("plaintext to plaintext");
    assert!(plain_client.ping(secure.nodes[0].addr, &ping).await.is_err(), "plaintext to a TLS server");
    assert!(tls_client.ping(plain.nodes[0].addr, &ping).await.is_err(), "a TLS client to a plaintext server");
    assert!(stranger.ping(secure.nodes[0].addr, &ping).await.is_err(), "a TLS client trusting another CA");

    // The control plane the same way: a TLS client finds no master at a plaintext one.
    let mut config = plain.config();
    config.master.failover_timeout = Duration::from_millis(500);
    config.tls = Some(pki.client());
    let error = GfsClient::new(config).expect("client").namespaces().await.expect_err("no TLS master there");
    assert!(matches!(error, GfsError::Unavailable(_)), "{error:?}");
}
