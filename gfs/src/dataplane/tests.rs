//! Data plane tests over real TCP on 127.0.0.1: each replica is an in-process [`DataServer`] on an
//! ephemeral port with its own [`ChunkStore`] in a fresh temporary directory. A replica is "killed" by
//! aborting its serve task, which drops its listener and every connection at once.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{self, Op, Reply, Request, Response};
use super::*;
use crate::chunk::{ChunkStore, CHUNK_SIZE};
use crate::test_support::{assert_same, pattern, TempDir};

const H: ChunkHandle = ChunkHandle(0x0000_0000_00da_7a01);
const V1: ChunkVersion = ChunkVersion(1);
const C1: ChunkRef = ChunkRef { handle: H, version: V1 };
/// The deadline test servers give a secondary to apply; the tests show writes finish within it.
const REPLICATE: Duration = Duration::from_secs(3);

fn key() -> Arc<ClusterKey> {
    Arc::new(ClusterKey::new(&[0x5a; 32]).expect("key"))
}

fn other_key() -> Arc<ClusterKey> {
    Arc::new(ClusterKey::new(&[0xa5; 32]).expect("key"))
}

fn tok(op: TokenOp, chunk: ChunkRef) -> CapabilityToken {
    CapabilityToken::mint_for(&key(), op, chunk.handle, chunk.version, Duration::from_secs(300))
}

fn client() -> DataClient {
    DataClient::new(ClientConfig {
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(20),
        reply_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    })
}

fn config(key: Arc<ClusterKey>) -> ServerConfig {
    let mut config = ServerConfig::new(key);
    config.deadlines.replicate = REPLICATE;
    config
}

/// One replica: a store in its own directory, served on an ephemeral port.
struct Node {
    addr: SocketAddr,
    store: ChunkStore,
    server: DataServer,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl Node {
    async fn start(name: &str, config: ServerConfig) -> Node {
        Node::start_with(name, config, |server| server).await
    }

    async fn start_with(name: &str, config: ServerConfig, wrap: impl FnOnce(DataServer) -> DataServer) -> Node {
        let dir = TempDir::new(name);
        let store = ChunkStore::open(dir.path()).await.expect("open store");
        store.create(H, V1).await.expect("create chunk");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = wrap(DataServer::new(store.clone(), config));
        let task = tokio::spawn(server.clone().serve(listener, std::future::pending()));
        Node { addr, store, server, task: Some(task), _dir: dir }
    }

    /// Kills the replica: its listener and connections are gone when this returns.
    async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn data_file(&self) -> PathBuf {
        self.store.dir().join(format!("{H}.chunk"))
    }
}

async fn cluster(name: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Node::start(&format!("{name}-{i}"), config(key())).await);
    }
    nodes
}

fn addrs(nodes: &[Node]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.addr).collect()
}

async fn push(client: &DataClient, chain: &[SocketAddr], chunk: ChunkRef, data: &[u8]) -> DataId {
    client.push(chain, chunk, Bytes::copy_from_slice(data), &tok(TokenOp::Push, chunk)).await.expect("push")
}

async fn write(
    client: &DataClient,
    nodes: &[SocketAddr],
    chunk: ChunkRef,
    offset: u64,
    id: DataId,
) -> Result<WriteOutcome, ClientError> {
    client.write(nodes[0], &nodes[1..], chunk, offset, id, &tok(TokenOp::Write, chunk)).await
}

async fn read(
    client: &DataClient,
    addr: SocketAddr,
    chunk: ChunkRef,
    offset: u64,
    len: u64,
) -> Result<Bytes, ClientError> {
    client.read(addr, chunk, offset, len, &tok(TokenOp::Read, chunk)).await
}

/// Checks `want` at `offset` on each node, through the store and through a data plane read.
async fn assert_held(client: &DataClient, nodes: &[&Node], offset: u64, want: &[u8]) {
    for node in nodes {
        let stored = node.store.read(H, offset, want.len() as u64).await.expect("store read");
        assert_same(&stored, want, &format!("store of {}", node.addr));
        let served = read(client, node.addr, C1, offset, want.len() as u64).await.expect("data plane read");
        assert_same(&served, want, &format!("read from {}", node.addr));
    }
}

#[tokio::test]
async fn push_along_the_chain_then_write_lands_identically_on_all_three() {
    let nodes = cluster("write").await;
    let all = addrs(&nodes);
    let client = client();

    let first = pattern(5 * 1024 * 1024 + 12_345, 1);
    let offset = 70_001; // inside the second 64 KiB block, leaving a zero-filled gap before it
    let id = push(&client, &all, C1, &first).await;
    for node in &nodes {
        assert_eq!(node.server.buffered_bytes(), first.len() as u64, "every replica holds the pushed data");
    }
    let outcome = write(&client, &all, C1, offset, id).await.expect("write");
    assert_eq!(outcome, WriteOutcome { offset, failed: vec![] });
    let mut expected = vec![0; offset as usize];
    expected.extend_from_slice(&first);
    let refs: Vec<&Node> = nodes.iter().collect();
    assert_held(&client, &refs, 0, &expected).await;
    for node in &nodes {
        assert_eq!(node.server.buffered_bytes(), 0, "applied data leaves the buffer");
        assert_eq!(node.store.stat(H).map(|i| i.length), Some(expected.len() as u64));
    }

    // An overwrite straddling block edges, pushed from a reader, on the same (pooled) connections.
    let second = pattern(3 * 65_536 + 777, 2);
    let at = 1_000_000 - 5;
    let id = client
        .push_stream(&all, C1, second.len() as u64, &second[..], &tok(TokenOp::Push, C1))
        .await
        .expect("push_stream");
    write(&client, &all, C1, at as u64, id).await.expect("overwrite");
    expected[at..at + second.len()].copy_from_slice(&second);
    assert_held(&client, &refs, 0, &expected).await;

    // Ranged and streaming reads: an unaligned slice, and a range running past the end.
    let got = read(&client, all[1], C1, 123_457, 2_000_000).await.expect("ranged");
    assert_same(&got, &expected[123_457..2_123_457], "ranged read");
    let mut sink = Vec::new();
    let n = client
        .read_into(all[2], C1, 5_000_000, u64::MAX / 2, &tok(TokenOp::Read, C1), &mut sink)
        .await
        .expect("read_into");
    assert_eq!(n as usize, expected.len() - 5_000_000);
    assert_same(&sink, &expected[5_000_000..], "streamed read");
    // Past this replica's end, within the chunk: no bytes (a hole, or a replica behind; the client
    // knows which). Past the chunk: refused.
    let past = read(&client, all[0], C1, expected.len() as u64 + 1, 1000).await.expect("past the end");
    assert!(past.is_empty(), "{} bytes past the end", past.len());
    let last = read(&client, all[0], C1, CHUNK_SIZE, 1).await.expect("at the chunk's end");
    assert!(last.is_empty());
    let err = read(&client, all[0], C1, CHUNK_SIZE + 1, 1).await.expect_err("past the chunk");
    assert_eq!(err.code(), Some(ErrorCode::OutOfRange));
}

#[tokio::test]
async fn a_secondary_dead_before_the_write_costs_it_the_write_not_the_write_itself() {
    let mut nodes = cluster("dead-before").await;
    let all = addrs(&nodes);
    let client = client();
    let data = pattern(2 * 1024 * 1024 + 3, 3);
    let id = push(&client, &all, C1, &data).await;
    nodes[2].kill().await;

    let started = Instant::now();
    let outcome = write(&client, &all, C1, 0, id).await.expect("2 of 3 is enough");
    assert_eq!(outcome.failed, vec![all[2]], "the dead replica is named");
    assert!(started.elapsed() < REPLICATE, "a refused connection fails at once: {:?}", started.elapsed());
    assert_held(&client, &[&nodes[0], &nodes[1]], 0, &data).await;

    // A push through the dead replica fails promptly and names it.
    let err = client
        .push(&all, C1, Bytes::from_static(b"x"), &tok(TokenOp::Push, C1))
        .await
        .expect_err("the chain is broken");
    assert_eq!((err.code(), err.failed()), (Some(ErrorCode::Downstream), &all[2..]));
    assert_eq!(nodes[0].server.buffered_bytes(), 0, "a failed push leaves nothing behind");
}

#[tokio::test]
async fn a_secondary_that_dies_or_hangs_during_the_write_is_bounded_by_its_deadline() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut nodes = cluster("dies-during").await;
    nodes.push(Node::start_with("dies-during-hang", config(key()), |s| s.stalling_applies(tx)).await);
    let client = Arc::new(client());

    // Dies mid-apply: the primary sees the connection drop and does not wait for the deadline.
    let chain = vec![nodes[0].addr, nodes[1].addr, nodes[3].addr];
    let data = pattern(3 * 1024 * 1024 + 99, 4);
    let id = push(&client, &chain, C1, &data).await;
    let started = Instant::now();
    let writing = {
        let (client, chain) = (Arc::clone(&client), chain.clone());
        tokio::spawn(async move { write(&client, &chain, C1, 4096, id).await })
    };
    rx.recv().await.expect("the hanging replica got the apply");
    nodes[3].kill().await;
    let outcome = writing.await.expect("join").expect("acknowledged by 2 of 3");
    assert_eq!(outcome, WriteOutcome { offset: 4096, failed: vec![chain[2]] });
    assert!(started.elapsed() < REPLICATE, "no wait for the deadline: {:?}", started.elapsed());
    let mut expected = vec![0; 4096];
    expected.extend_from_slice(&data);
    assert_held(&client, &[&nodes[0], &nodes[1]], 0, &expected).await;

    // Hangs mid-apply and stays up: the deadline ends the wait.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hung = Node::start_with("dies-during-hang2", config(key()), |s| s.stalling_applies(tx)).await;
    let chain = vec![nodes[0].addr, nodes[1].addr, hung.addr];
    let data = pattern(100_000, 5);
    let id = push(&client, &chain, C1, &data).await;
    let started = Instant::now();
    let outcome = write(&client, &chain, C1, 0, id).await.expect("acknowledged by 2 of 3");
    let took = started.elapsed();
    assert_eq!(outcome.failed, vec![hung.addr]);
    assert!(rx.try_recv().is_ok(), "the apply reached the hung replica");
    assert!(took >= REPLICATE && took < REPLICATE * 3, "bounded by the replicate deadline: {took:?}");
    expected[..data.len()].copy_from_slice(&data);
    assert_held(&client, &[&nodes[0], &nodes[1]], 0, &expected).await;
}

#[tokio::test]
async fn two_dead_secondaries_fail_the_write() {
    let mut nodes = cluster("two-dead").await;
    let all = addrs(&nodes);
    let client = client();
    let id = push(&client, &all, C1, &pattern(1000, 6)).await;
    nodes[1].kill().await;
    nodes[2].kill().await;
    let err = write(&client, &all, C1, 0, id).await.expect_err("1 of 3 is not a quorum");
    assert_eq!(err.code(), Some(ErrorCode::QuorumFailed), "{err}");
    assert_eq!(err.failed(), &all[1..]);
}

#[tokio::test]
async fn concurrent_record_appends_land_whole_and_apart_on_every_replica() {
    let nodes = cluster("append").await;
    let all = addrs(&nodes);
    let client = Arc::new(client());
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let (client, all) = (Arc::clone(&client), all.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for r in 0..4u64 {
                let record = pattern(1_000 + ((c * 7 + r * 13) as usize * 9_973) % 200_000, c * 100 + r);
                let id = push(&client, &all, C1, &record).await;
                let outcome =
                    client.append(all[0], &all[1..], C1, id, &tok(TokenOp::Append, C1)).await.expect("append");
                let AppendOutcome::Appended(WriteOutcome { offset, failed }) = outcome else {
                    panic!("the chunk has room");
                };
                assert!(failed.is_empty());
                mine.push((offset, record));
            }
            mine
        }));
    }
    let mut records = Vec::new();
    for task in tasks {
        records.extend(task.await.expect("client task"));
    }
    records.sort_by_key(|(offset, _)| *offset);
    for pair in records.windows(2) {
        assert!(pair[0].0 + pair[0].1.len() as u64 <= pair[1].0, "records overlap at {}", pair[1].0);
    }
    for (offset, record) in &records {
        assert_held(&client, &[&nodes[0], &nodes[1], &nodes[2]], *offset, record).await;
    }
}

#[tokio::test]
async fn a_record_that_does_not_fit_pads_the_chunk_everywhere_and_says_chunk_full() {
    let nodes = cluster("full").await;
    let all = addrs(&nodes);
    let client = Arc::new(client());
    // Fill the chunk to 1 MiB short of its end on every replica (a sparse gap, quickly written).
    let start = CHUNK_SIZE - 1024 * 1024;
    for node in &nodes {
        node.store.write(H, V1, start - 1, Bytes::from_static(b"#")).await.expect("prefill");
    }
    let mut tasks = Vec::new();
    for c in 0..6u64 {
        let (client, all) = (Arc::clone(&client), all.clone());
        tasks.push(tokio::spawn(async move {
            let record = pattern(300 * 1024, 50 + c);
            let id = push(&client, &all, C1, &record).await;
            let outcome = client.append(all[0], &all[1..], C1, id, &tok(TokenOp::Append, C1)).await.expect("append");
            (outcome, record)
        }));
    }
    let mut appended = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (AppendOutcome::Appended(WriteOutcome { offset, failed }), record) => {
                assert!(failed.is_empty());
                appended.push((offset, record));
            }
            (AppendOutcome::ChunkFull { failed }, _) => assert!(failed.is_empty()),
        }
    }
    assert_eq!(appended.len(), 3, "three 300 KiB records fit in the last MiB, the rest do not");
    appended.sort_by_key(|(offset, _)| *offset);
    let end = appended.iter().map(|(o, r)| o + r.len() as u64).max().expect("some");
    for node in &nodes {
        assert_eq!(node.store.stat(H).map(|i| i.length), Some(CHUNK_SIZE), "{} padded to the end", node.addr);
        let padding = node.store.read(H, end, CHUNK_SIZE - end).await.expect("read padding");
        assert!(padding.iter().all(|&b| b == 0), "padding is zeros");
    }
    for (offset, record) in &appended {
        assert_held(&client, &[&nodes[0], &nodes[1], &nodes[2]], *offset, record).await;
    }
    // A full chunk takes nothing more, without padding anything again.
    let id = push(&client, &all, C1, b"late").await;
    let outcome = client.append(all[0], &all[1..], C1, id, &tok(TokenOp::Append, C1)).await.expect("append");
    assert_eq!(outcome, AppendOutcome::ChunkFull { failed: vec![] });
    // And a record over a quarter chunk is refused outright.
    let big = vec![1; (MAX_RECORD + 1) as usize];
    let id = push(&client, &all, C1, &big).await;
    let err = client.append(all[0], &all[1..], C1, id, &tok(TokenOp::Append, C1)).await.expect_err("too big");
    assert_eq!(err.code(), Some(ErrorCode::TooLarge));
}

#[tokio::test]
async fn stale_versions_are_refused_and_a_stale_secondary_is_reported() {
    let nodes = cluster("stale").await;
    let all = addrs(&nodes);
    let client = client();
    let c2 = ChunkRef { handle: H, version: ChunkVersion(2) };
    // The master bumped the version on the first two replicas; the third missed the lease round.
    for node in &nodes[..2] {
        node.store.set_version(H, c2.version).await.expect("bump");
    }
    let data = pattern(10_000, 7);
    let id = push(&client, &all, C1, &data).await;
    let err = write(&client, &all, C1, 0, id).await.expect_err("the primary is at version 2");
    assert_eq!(err.code(), Some(ErrorCode::StaleVersion));

    let id = push(&client, &all, c2, &data).await;
    let outcome = write(&client, &all, c2, 0, id).await.expect("2 of 3 at version 2");
    assert_eq!(outcome.failed, vec![all[2]], "the stale replica refuses and is named");
    let got = read(&client, all[1], c2, 0, 10_000).await.expect("current replica");
    assert_same(&got, &data, "current replica");
    let err = read(&client, all[2], c2, 0, 10_000).await.expect_err("stale replica");
    assert_eq!(err.code(), Some(ErrorCode::StaleVersion), "a stale replica is never served");
    let err = read(&client, all[0], C1, 0, 10).await.expect_err("old version");
    assert_eq!(err.code(), Some(ErrorCode::StaleVersion));
}

#[tokio::test]
async fn prepare_creates_only_an_absent_chunk_and_raises_only_from_the_stated_version() {
    let node = Node::start("prepare", config(key())).await;
    let client = &client();
    let prepare = |handle: ChunkHandle, version: u64, from: u64| {
        let chunk = ChunkRef { handle, version: ChunkVersion(version) };
        let token = tok(TokenOp::Prepare, chunk);
        async move { client.prepare(node.addr, chunk, ChunkVersion(from), &token).await }
    };
    let fresh = ChunkHandle(H.0 + 1);
    prepare(fresh, 1, 0).await.expect("create an absent chunk");
    assert_eq!(node.store.stat(fresh).map(|i| (i.version, i.length)), Some((V1, 0)));

    // A creation of a chunk that exists fails, whatever its version and content: it would hand out
    // the old bytes as the new chunk's.
    let data = pattern(5000, 9);
    let id = push(client, &[node.addr], C1, &data).await;
    write(client, &[node.addr], C1, 0, id).await.expect("write");
    let err = prepare(H, 1, 0).await.expect_err("create over a chunk with data");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    let err = prepare(fresh, 1, 0).await.expect_err("create twice");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert_eq!(node.store.stat(H).map(|i| (i.version, i.length)), Some((V1, 5000)), "left alone");

    // Raising: from the stored version, or a repeat of the same raise; never from another version.
    prepare(H, 2, 1).await.expect("raise");
    prepare(H, 2, 1).await.expect("the same raise again");
    assert_eq!(node.store.stat(H).map(|i| i.version), Some(ChunkVersion(2)));
    let err = prepare(H, 4, 3).await.expect_err("raise from a version it does not hold");
    assert_eq!(err.code(), Some(ErrorCode::StaleVersion), "{err}");
    let err = prepare(ChunkHandle(H.0 + 2), 2, 1).await.expect_err("raise an absent chunk");
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
}

#[tokio::test]
async fn a_corrupt_replica_answers_corrupt_while_another_serves_the_data() {
    let nodes = cluster("corrupt").await;
    let all = addrs(&nodes);
    let client = client();
    let data = pattern(4 * 1024 * 1024, 8);
    let id = push(&client, &all, C1, &data).await;
    write(&client, &all, C1, 0, id).await.expect("write");
    // Flip a byte 3 MiB in: the first pieces of a whole-chunk read go out before the bad block is met.
    let file = OpenOptions::new().read(true).write(true).open(nodes[1].data_file()).expect("open");
    let mut byte = [0];
    file.read_exact_at(&mut byte, 3 * 1024 * 1024 + 5).expect("read byte");
    file.write_all_at(&[byte[0] ^ 0x40], 3 * 1024 * 1024 + 5).expect("flip");
    drop(file);

    let err = read(&client, all[1], C1, 0, data.len() as u64).await.expect_err("corrupt");
    assert_eq!(err.code(), Some(ErrorCode::Corrupt), "{err}");
    let err = read(&client, all[1], C1, 3 * 1024 * 1024, 10).await.expect_err("corrupt block alone");
    assert_eq!(err.code(), Some(ErrorCode::Corrupt));
    let good = read(&client, all[1], C1, 0, 1024 * 1024).await.expect("the good blocks still read");
    assert_same(&good, &data[..1024 * 1024], "good blocks of the corrupt replica");
    let got = read(&client, all[0], C1, 0, data.len() as u64).await.expect("another replica");
    assert_same(&got, &data, "fail-over replica");
}

/// Sends one raw request on a fresh connection; returns the answer and the connection.
async fn raw(addr: SocketAddr, token: Vec<u8>, op: Op) -> (Reply, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let reply = raw_on(&mut stream, token, op).await;
    (reply, stream)
}

async fn raw_on(stream: &mut TcpStream, token: Vec<u8>, op: Op) -> Reply {
    stream.write_all(&Request { id: 9, token, op }.encode()).await.expect("send");
    let header = frame::read_header(stream).await.expect("answer");
    Response::decode(&header).expect("decode").reply
}

/// Whether the server closed the connection (bounded: a server that keeps it open fails the check).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = [0; 1];
    matches!(tokio::time::timeout(Duration::from_secs(10), stream.read(&mut rest)).await, Ok(Ok(0)))
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_at_every_op_and_the_connection_closed() {
    let nodes = cluster("auth").await;
    let all = addrs(&nodes);
    let client = client();
    let id = push(&client, &all, C1, b"payload").await;
    let ops = [
        Op::Ping,
        Op::Push(frame::Push { data_id: 1, handle: H, version: V1, len: 3, chain: vec![] }),
        Op::Write(frame::Write { handle: H, version: V1, offset: 0, data_id: id, secondaries: all[1..].to_vec() }),
        Op::Append(frame::Append { handle: H, version: V1, data_id: id, secondaries: all[1..].to_vec() }),
        Op::Read(frame::Read { handle: H, version: V1, offset: 0, len: 7 }),
        Op::ApplyWrite(frame::Apply { handle: H, version: V1, offset: 0, data_id: id }),
        Op::ApplyPad(frame::Pad { handle: H, version: V1, offset: CHUNK_SIZE - 10 }),
    ];
    let past = SystemTime::now() - Duration::from_secs(5);
    for op in ops {
        let (scope, handle, version) = op.scope();
        let wrong_op = if scope == TokenOp::Read { TokenOp::Write } else { TokenOp::Read };
        let tokens = [
            ("missing", vec![]),
            ("garbage", vec![7; CapabilityToken::ENCODED_LEN]),
            ("odd length", vec![7; 12]),
            (
                "other key",
                CapabilityToken::mint_for(&other_key(), scope, handle, version, Duration::from_secs(60))
                    .encode()
                    .to_vec(),
            ),
            ("expired", CapabilityToken::mint(&key(), scope, handle, version, past).encode().to_vec()),
            (
                "other op",
                CapabilityToken::mint_for(&key(), wrong_op, handle, version, Duration::from_secs(60)).encode().to_vec(),
            ),
            (
                "other chunk",
                CapabilityToken::mint_for(&key(), scope, ChunkHandle(1), version, Duration::from_secs(60))
                    .encode()
                    .to_vec(),
            ),
        ];
        for (what, token) in tokens {
            let (reply, mut stream) = raw(all[0], token, op.clone()).await;
            let Reply::Error(refusal) = reply else { panic!("{} with a {what} token: {reply:?}", op.name()) };
            assert_eq!(refusal.code, ErrorCode::Unauthorized, "{} with a {what} token", op.name());
            assert!(closed(&mut stream).await, "{} with a {what} token: connection closed", op.name());
        }
    }
    // Nothing was applied or consumed by the refused requests.
    assert_eq!(nodes[0].store.stat(H).map(|i| i.length), Some(0));
    let ping = tok(TokenOp::Ping, ChunkRef { handle: ChunkHandle(0), version: ChunkVersion(0) }).encode().to_vec();
    let (reply, mut stream) = raw(all[0], ping.clone(), Op::Ping).await;
    assert_eq!(reply, Reply::Done, "a valid token is served");
    assert_eq!(raw_on(&mut stream, ping, Op::Ping).await, Reply::Done, "and the connection kept");

    // Server to server: a replica with another cluster key refuses the forwarded push...
    let stranger = Node::start("auth-stranger", config(other_key())).await;
    let chain = [all[0], all[1], stranger.addr];
    let err = client.push(&chain, C1, Bytes::from_static(b"abc"), &tok(TokenOp::Push, C1)).await.expect_err("refused");
    assert_eq!((err.code(), err.failed()), (Some(ErrorCode::Downstream), &chain[2..]), "{err}");
    // ...and the primary's apply (the write stands on the primary and the other secondary).
    let id = push(&client, &all, C1, b"abc").await;
    let outcome = client
        .write(all[0], &[stranger.addr, all[1]], C1, 0, id, &tok(TokenOp::Write, C1))
        .await
        .expect("all[1] holds the data; the stranger refuses the primary's token");
    assert_eq!(outcome.failed, vec![stranger.addr]);
}

fn ping_token() -> Vec<u8> {
    tok(TokenOp::Ping, ChunkRef { handle: ChunkHandle(0), version: ChunkVersion(0) }).encode().to_vec()
}

#[tokio::test]
async fn connections_past_the_bound_are_closed_at_once_and_a_freed_slot_is_served_again() {
    let mut bounded = config(key());
    bounded.max_connections = 2;
    let node = Node::start("bound", bounded).await;
    // Two connections, each served (so the server has accepted and counts both).
    let (reply, first) = raw(node.addr, ping_token(), Op::Ping).await;
    assert_eq!(reply, Reply::Done);
    let (reply, _second) = raw(node.addr, ping_token(), Op::Ping).await;
    assert_eq!(reply, Reply::Done);

    // The third is closed before anything is read from it.
    let mut third = TcpStream::connect(node.addr).await.expect("connect");
    let started = Instant::now();
    assert!(closed(&mut third).await, "a connection past the bound is closed");
    println!("connection past the bound closed after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2), "at once, not after a deadline");

    // One closes: a new connection is served again (once the server has seen the close).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(node.addr).await.expect("connect");
        let sent = stream.write_all(&Request { id: 1, token: ping_token(), op: Op::Ping }.encode()).await;
        let answer = match sent {
            Ok(()) => frame::read_header(&mut stream).await.ok(),
            Err(_) => None,
        };
        if let Some(header) = answer {
            assert_eq!(Response::decode(&header).expect("decode").reply, Reply::Done);
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_connection_without_a_valid_first_request_is_closed_within_the_first_frame_deadline() {
    const FIRST: Duration = Duration::from_millis(400);
    let mut strict = config(key());
    strict.deadlines.first_frame = FIRST;
    let node = Node::start("first-frame", strict).await;

    // Silent: closed after the deadline (the idle deadline, two minutes, does not apply).
    let mut silent = TcpStream::connect(node.addr).await.expect("connect");
    let started = Instant::now();
    assert!(closed(&mut silent).await, "a silent connection is closed");
    let silent_after = started.elapsed();
    // A header begun and never finished: the same deadline for all of it (not another 10 s).
    let mut partial = TcpStream::connect(node.addr).await.expect("connect");
    let started = Instant::now();
    partial.write_all(&1000u32.to_be_bytes()).await.expect("length");
    assert!(closed(&mut partial).await, "a connection stuck in its first header is closed");
    let partial_after = started.elapsed();
    println!("closed after {silent_after:?} (silent), {partial_after:?} (partial header); deadline {FIRST:?}");
    for after in [silent_after, partial_after] {
        assert!(after >= FIRST - Duration::from_millis(50) && after < FIRST * 4, "closed after {after:?}");
    }

    // A connection whose first request was valid is kept past that deadline (the idle one applies).
    let (reply, mut served) = raw(node.addr, ping_token(), Op::Ping).await;
    assert_eq!(reply, Reply::Done);
    let mut byte = [0; 1];
    let kept = tokio::time::timeout(FIRST * 3, served.read(&mut byte)).await;
    assert!(kept.is_err(), "a served connection was closed: {kept:?}");
    assert_eq!(raw_on(&mut served, ping_token(), Op::Ping).await, Reply::Done);
}

#[tokio::test]
async fn the_push_buffer_cap_is_enforced_and_space_comes_back() {
    let mut small = config(key());
    small.buffer_cap = 1024 * 1024;
    let capped = Node::start("cap-small", small).await;
    let roomy = Node::start("cap-roomy", config(key())).await;
    let client = client();
    let piece = pattern(600 * 1024, 9);

    let first = push(&client, &[capped.addr], C1, &piece).await;
    let err = client
        .push(&[capped.addr], C1, Bytes::copy_from_slice(&piece), &tok(TokenOp::Push, C1))
        .await
        .expect_err("over the cap");
    assert_eq!(err.code(), Some(ErrorCode::BufferFull), "{err}");
    // Through a chain, the full replica is named.
    let err = client
        .push(&[roomy.addr, capped.addr], C1, Bytes::copy_from_slice(&piece), &tok(TokenOp::Push, C1))
        .await
        .expect_err("over the cap downstream");
    assert_eq!((err.code(), err.failed()), (Some(ErrorCode::Downstream), &[capped.addr][..]));
    assert_eq!(roomy.server.buffered_bytes(), 0, "the failed push released its space upstream too");
    // Applying the first push frees its space.
    client.write(capped.addr, &[], C1, 0, first, &tok(TokenOp::Write, C1)).await.expect("write");
    assert_eq!(capped.server.buffered_bytes(), 0);
    push(&client, &[capped.addr], C1, &piece).await;
    // More than a chunk is refused by the client before anything is sent.
    let err = client
        .push_stream(&[capped.addr], C1, CHUNK_SIZE + 1, &b""[..], &tok(TokenOp::Push, C1))
        .await
        .expect_err("too long");
    assert!(matches!(err, ClientError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn shutdown_stops_serving_promptly() {
    let dir = TempDir::new("shutdown");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(DataServer::new(store, config(key())).serve(listener, async {
        let _ = stop_rx.await;
    }));
    let client = client();
    let ping = tok(TokenOp::Ping, ChunkRef { handle: ChunkHandle(0), version: ChunkVersion(0) });
    client.ping(addr, &ping).await.expect("ping");
    // The client now holds an idle pooled connection; shutdown must not wait for it.
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), serving).await.expect("prompt").expect("join").expect("serve");
    assert!(client.ping(addr, &ping).await.is_err(), "nothing answers after shutdown");
}

/// Throughput: 64 MiB pushed through a 3-replica chain and written, against a raw loopback TCP copy
/// of the same bytes in this process. Run with
/// `cargo nextest run -p edd-gfs --release --run-ignored only --no-capture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly in release mode"]
async fn throughput_of_push_and_write_against_a_raw_loopback_copy() {
    let len = CHUNK_SIZE as usize;
    let data = Bytes::from(pattern(len, 10));

    // Raw copy: one connection, 256 KiB writes, reader discards.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0; 256 * 1024];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                return total;
            }
            total += n;
        }
    });
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    for piece in data.chunks(PIECE) {
        s.write_all(piece).await.expect("write");
    }
    drop(s);
    assert_eq!(sink.await.expect("sink"), len);
    let raw = started.elapsed();

    let nodes = cluster("bench").await;
    let all = addrs(&nodes);
    let client = client();
    let started = Instant::now();
    let id = client.push(&all, C1, data.clone(), &tok(TokenOp::Push, C1)).await.expect("push");
    let pushed = started.elapsed();
    write(&client, &all, C1, 0, id).await.expect("write");
    let total = started.elapsed();

    let mib = len as f64 / (1024.0 * 1024.0);
    println!(
        "64 MiB: raw loopback copy {:.0} MiB/s ({raw:?}); push through 3 replicas {:.0} MiB/s ({pushed:?}); \
         push + write (3 fsynced replicas) {:.0} MiB/s ({total:?})",
        mib / raw.as_secs_f64(),
        mib / pushed.as_secs_f64(),
        mib / total.as_secs_f64(),
    );
    for n in 1..=3 {
        let c = ChunkRef { handle: H, version: V1 };
        let started = Instant::now();
        client.push(&all[..n], c, data.clone(), &tok(TokenOp::Push, c)).await.expect("push");
        println!("push chain {n}: {:?}", started.elapsed());
    }
    let h2 = ChunkHandle(99);
    nodes[0].store.create(h2, V1).await.expect("create");
    let started = Instant::now();
    nodes[0].store.write(h2, V1, 0, data.clone()).await.expect("store write");
    println!("store write 64 MiB: {:?}", started.elapsed());
    let got = read(&client, all[2], C1, 0, len as u64).await.expect("read back");
    assert!(got == data, "the last replica holds the bytes");
}
