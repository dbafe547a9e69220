//! Chunkserver tests: a real chunkserver ([`run`]) on 127.0.0.1 against a fake master — a small
//! [`MasterApi`] served with [`rpc::serve`](crate::rpc::serve) on an ephemeral port that records every
//! heartbeat, folds the chunk reports into its view of each server (as a real master would: a full
//! report replaces it, a delta amends it) and hands out the orders a test queues. Every wait is on a
//! condition, with a deadline.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::clone::{Accepted, Cloner};
use super::*;
use crate::chunk::{ChunkHandle, ChunkVersion};
use crate::dataplane::{CapabilityToken, ChunkRef, ClientConfig, DataClient, TokenOp};
use crate::rpc::messages::{self, *};
use crate::rpc::{Authenticator, MasterApi, ServeOptions};
use crate::test_support::{eventually, pattern, Impostor, TempDir};

const KEY: &[u8] = &[0x42; 32];
const CLIENT_SECRET: &[u8] = b"client-secret-for-tests-0123";
/// How long any awaited condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

fn cluster_key() -> ClusterKey {
    ClusterKey::new(KEY).expect("key")
}

fn token(op: TokenOp, handle: ChunkHandle, version: u64) -> CapabilityToken {
    CapabilityToken::mint_for(&cluster_key(), op, handle, ChunkVersion(version), Duration::from_secs(300))
}

fn data_client() -> DataClient {
    DataClient::new(ClientConfig { reply_timeout: Duration::from_secs(20), ..ClientConfig::default() })
}

// ---- the fake master ------------------------------------------------------------------------------

/// What the master knows of one server's chunks: handle → (version, length).
type View = BTreeMap<u64, (u64, u64)>;

#[derive(Default)]
struct FakeMaster {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    heartbeats: Vec<Heartbeat>,
    orders: Vec<Order>,
    want_full: bool,
    views: HashMap<String, View>,
    servers: HashMap<String, (String, u64)>,
}

impl FakeMaster {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake master state")
    }

    fn heartbeats(&self) -> Vec<Heartbeat> {
        self.state().heartbeats.clone()
    }

    fn count(&self) -> usize {
        self.state().heartbeats.len()
    }

    /// The heartbeats received after the first `seen`.
    fn since(&self, seen: usize) -> Vec<Heartbeat> {
        self.state().heartbeats.get(seen..).map(<[Heartbeat]>::to_vec).unwrap_or_default()
    }

    fn order(&self, order: Order) {
        self.state().orders.push(order);
    }

    fn ask_full_report(&self) {
        self.state().want_full = true;
    }

    fn view(&self, server_id: &str) -> View {
        self.state().views.get(server_id).cloned().unwrap_or_default()
    }

    fn clones_done(&self) -> Vec<u64> {
        self.state().heartbeats.iter().flat_map(|h| h.clones_done.clone()).collect()
    }
}

macro_rules! not_served {
    ($($fn:ident($req:ty) -> $reply:ty;)+) => {
        $(
            async fn $fn(&self, _: Role, _: $req) -> Result<$reply, tonic::Status> {
                Err(tonic::Status::unimplemented(concat!("the fake master has no ", stringify!($fn))))
            }
        )+
    };
}

impl MasterApi for FakeMaster {
    not_served! {
        create_namespace(NamespaceRequest) -> Empty;
        delete_namespace(NamespaceRequest) -> Empty;
        list_namespaces(Empty) -> NamespaceList;
        create_file(PathRequest) -> FileInfo;
        stat(PathRequest) -> FileInfo;
        list(ListRequest) -> FileList;
        rename(RenameRequest) -> FileInfo;
        delete_file(PathRequest) -> Empty;
        locate(LocateRequest) -> Locations;
        lease_chunk(LeaseRequest) -> Lease;
        commit(CommitRequest) -> Empty;
        report_corrupt(CorruptReport) -> Empty;
    }

    async fn heartbeat(&self, role: Role, heartbeat: Heartbeat) -> Result<HeartbeatReply, tonic::Status> {
        assert_eq!(role, Role::Peer);
        let mut state = self.state();
        // A server it does not know sending a delta: ask for everything, as a restarted master does.
        let mut want_full = std::mem::take(&mut state.want_full);
        match state.views.get_mut(&heartbeat.server_id) {
            _ if heartbeat.full => {
                let view = heartbeat.chunks.iter().map(|c| (c.handle, (c.version, c.length))).collect();
                state.views.insert(heartbeat.server_id.clone(), view);
            }
            Some(view) => {
                view.extend(heartbeat.chunks.iter().map(|c| (c.handle, (c.version, c.length))));
                for handle in &heartbeat.removed {
                    view.remove(handle);
                }
            }
            None => want_full = true,
        }
        state.servers.insert(heartbeat.server_id.clone(), (heartbeat.data_addr.clone(), heartbeat.free_bytes));
        state.heartbeats.push(heartbeat);
        let orders = std::mem::take(&mut state.orders);
        Ok(HeartbeatReply { orders, want_full_report: want_full })
    }

    async fn cluster_status(&self, _: Role, _: Empty) -> Result<messages::Status, tonic::Status> {
        let state = self.state();
        let chunkservers = state
            .servers
            .iter()
            .map(|(id, (addr, free_bytes))| ChunkserverInfo {
                id: id.clone(),
                addr: addr.clone(),
                alive: true,
                chunks: state.views.get(id).map_or(0, |v| v.len() as u64),
                free_bytes: *free_bytes,
                last_seen_ms_ago: 0,
            })
            .collect();
        Ok(messages::Status { master_id: "fake".into(), active: true, chunkservers, ..Default::default() })
    }
}

/// A fake master served on a port.
struct MasterServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl MasterServer {
    async fn start(fake: &Arc<FakeMaster>) -> MasterServer {
        MasterServer::on(fake, TcpListener::bind("127.0.0.1:0").await.expect("bind master")).await
    }

    async fn on(fake: &Arc<FakeMaster>, listener: TcpListener) -> MasterServer {
        let addr = listener.local_addr().expect("master addr");
        let auth = Arc::new(Authenticator::new(KEY, CLIENT_SECRET).expect("auth"));
        let options = ServeOptions { shutdown_grace: Duration::from_millis(100), ..ServeOptions::default() };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::rpc::serve(listener, Arc::clone(fake), auth, options, async {
            let _ = stopped.await;
        }));
        MasterServer { addr, stop, task }
    }

    /// Stops it: its port is closed and its connections are gone when this returns.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task).await.expect("master stops").expect("join").expect("serve");
    }
}

/// Binds `addr` again (a port just closed by a server of this test), as `TcpListener::bind` does
/// (address reuse on, so the closed port's connections in TIME_WAIT do not stand in the way).
async fn rebind(addr: SocketAddr) -> TcpListener {
    eventually(WAIT, "the port to be free again", || {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.ok()?;
        socket.set_reuseaddr(true).ok()?;
        socket.bind(addr).ok()?;
        socket.listen(1024).ok()
    })
    .await
}

// ---- the chunkserver under test -------------------------------------------------------------------

fn config(data_dir: &Path, masters: &[SocketAddr]) -> ChunkserverConfig {
    let deadlines = Deadlines { shutdown_grace: Duration::from_secs(1), ..Deadlines::default() };
    ChunkserverConfig {
        data_dir: data_dir.to_path_buf(),
        masters: masters.iter().map(|m| m.to_string()).collect(),
        cluster_key: KEY.to_vec(),
        heartbeat_interval: Duration::from_millis(50),
        scrub_interval: Duration::ZERO,
        deadlines,
        ..ChunkserverConfig::default()
    }
}

struct Chunkserver {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ChunkserverError>>,
}

impl Chunkserver {
    async fn start(mut config: ChunkserverConfig) -> Chunkserver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind data plane");
        let addr = listener.local_addr().expect("addr");
        config.advertise = addr.to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, listener, async {
            let _ = stopped.await;
        }));
        Chunkserver { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let ended = tokio::time::timeout(WAIT, self.task).await.expect("chunkserver stops in time");
        ended.expect("join").expect("chunkserver ends cleanly");
    }
}

/// Puts chunks in the store of `data_dir` before a chunkserver runs on it.
async fn seed(data_dir: &Path, chunks: &[(ChunkHandle, u64, &[u8])]) {
    let store = ChunkStore::open(data_dir.join(CHUNK_DIR)).await.expect("open store");
    for &(handle, version, data) in chunks {
        store.create(handle, ChunkVersion(version)).await.expect("create");
        store.write(handle, ChunkVersion(version), 0, Bytes::copy_from_slice(data)).await.expect("write");
    }
}

fn chunk_file(data_dir: &Path, handle: ChunkHandle, suffix: &str) -> PathBuf {
    data_dir.join(CHUNK_DIR).join(format!("{handle}.{suffix}"))
}

fn wire(handle: ChunkHandle, version: u64, length: u64) -> ChunkReport {
    ChunkReport { handle: handle.0, version, length }
}

fn view_of(chunks: &[(ChunkHandle, u64, u64)]) -> View {
    chunks.iter().map(|&(h, v, l)| (h.0, (v, l))).collect()
}

/// The first heartbeat after the first `seen`, once it arrives.
async fn next_heartbeat(fake: &FakeMaster, seen: usize) -> Heartbeat {
    eventually(WAIT, "a heartbeat", || fake.since(seen).into_iter().next()).await
}

// ---- tests ----------------------------------------------------------------------------------------

const A: ChunkHandle = ChunkHandle(0xa);
const B: ChunkHandle = ChunkHandle(0xb);
const Q: ChunkHandle = ChunkHandle(0x9);

#[tokio::test]
async fn registers_with_a_full_report_then_sends_deltas_and_keeps_its_id_across_a_restart() {
    let dir = TempDir::new("cs-register");
    let a_data = pattern(1000, 1);
    seed(dir.path(), &[(A, 1, &a_data)]).await;
    // A data file without metadata: quarantined when the store opens.
    fs::write(chunk_file(dir.path(), Q, "chunk"), b"orphan").expect("stray data file");
    let fake = Arc::new(FakeMaster::default());
    let master = MasterServer::start(&fake).await;
    // No periodic full report during the test: every full one below has another cause.
    let config = || ChunkserverConfig { full_report_every: 100_000, ..config(dir.path(), &[master.addr]) };
    let server = Chunkserver::start(config()).await;

    let first = next_heartbeat(&fake, 0).await;
    assert!(first.full, "registration is a full report");
    assert_eq!(first.chunks, vec![wire(A, 1, 1000)]);
    assert_eq!(first.quarantined, vec![Q.0]);
    assert_eq!(first.data_addr, server.addr.to_string());
    assert!(first.free_bytes > 0, "free space is measured");
    assert_eq!(first.server_id.len(), 16, "{}", first.server_id);

    // A chunk made through the data plane (the master readying a replica) appears in a delta.
    let client = data_client();
    let seen = fake.count();
    let b1 = ChunkRef { handle: B, version: ChunkVersion(1) };
    client.prepare(server.addr, b1, ChunkVersion(0), &token(TokenOp::Prepare, B, 1)).await.expect("prepare");
    let delta =
        eventually(WAIT, "a delta naming B", || fake.since(seen).into_iter().find(|h| !h.chunks.is_empty())).await;
    assert!(!delta.full);
    assert_eq!((delta.chunks, delta.removed), (vec![wire(B, 1, 0)], vec![]));

    // A write changes its length: another delta, and the master's folded view matches the store.
    let b_data = pattern(5000, 2);
    let pushed =
        client.push(&[server.addr], b1, Bytes::from(b_data.clone()), &token(TokenOp::Push, B, 1)).await.expect("push");
    client.write(server.addr, &[], b1, 0, pushed, &token(TokenOp::Write, B, 1)).await.expect("write");
    let want = view_of(&[(A, 1, 1000), (B, 1, 5000)]);
    eventually(WAIT, "B's length in the master's view", || (fake.view(&first.server_id) == want).then_some(())).await;
    let later = fake.heartbeats();
    assert!(later[1..].iter().all(|h| !h.full), "only deltas until a full report is due");
    assert!(later[1..].iter().all(|h| h.chunks.iter().all(|c| c.handle != A.0)), "unchanged A is not repeated");

    // The master asks for a full report: the next heartbeat is one.
    let seen = fake.count();
    fake.ask_full_report();
    let full = eventually(WAIT, "a full report", || fake.since(seen).into_iter().find(|h| h.full)).await;
    assert_eq!(full.chunks, vec![wire(A, 1, 1000), wire(B, 1, 5000)]);

    let status = crate::rpc::MasterClient::new(
        vec![master.addr.to_string()],
        Credential::new(Role::Client, CLIENT_SECRET).expect("client credential"),
        crate::rpc::ClientOptions::default(),
    )
    .cluster_status(Empty {})
    .await
    .expect("cluster status");
    assert_eq!(status.chunkservers.len(), 1);
    assert_eq!((status.chunkservers[0].id.as_str(), status.chunkservers[0].chunks), (first.server_id.as_str(), 2));

    // Restarted on the same data directory: the same id, a full report, and the data still there.
    server.stop().await;
    assert_eq!(fs::read_to_string(dir.file(SERVER_ID_FILE)).expect("id file"), format!("{}\n", first.server_id));
    let seen = fake.count();
    let server = Chunkserver::start(config()).await;
    let again = next_heartbeat(&fake, seen).await;
    assert_eq!(again.server_id, first.server_id);
    assert!(again.full);
    assert_eq!(again.chunks, vec![wire(A, 1, 1000), wire(B, 1, 5000)]);
    let read = client.read(server.addr, b1, 0, 1 << 20, &token(TokenOp::Read, B, 1)).await.expect("read B");
    assert_eq!(read, b_data);
    server.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_delete_order_removes_the_chunk_and_one_for_an_absent_chunk_is_harmless() {
    let (e, f, absent) = (ChunkHandle(0xe), ChunkHandle(0xf), ChunkHandle(0xdead));
    let dir = TempDir::new("cs-delete");
    seed(dir.path(), &[(e, 2, b"delete me"), (f, 1, b"keep me")]).await;
    let fake = Arc::new(FakeMaster::default());
    let master = MasterServer::start(&fake).await;
    let server = Chunkserver::start(config(dir.path(), &[master.addr])).await;
    let first = next_heartbeat(&fake, 0).await;
    assert_eq!(first.chunks, vec![wire(e, 2, 9), wire(f, 1, 7)]);

    for handle in [e, absent, e] {
        fake.order(Order { kind: OrderKind::Delete as i32, handle: handle.0, ..Order::default() });
    }
    let removal =
        eventually(WAIT, "e removed", || fake.heartbeats().into_iter().find(|h| h.removed.contains(&e.0))).await;
    assert_eq!(removal.removed, vec![e.0]);
    assert_eq!(fake.view(&first.server_id), view_of(&[(f, 1, 7)]));
    assert!(!chunk_file(dir.path(), e, "chunk").exists() && !chunk_file(dir.path(), e, "meta").exists());
    assert!(chunk_file(dir.path(), f, "chunk").exists());

    // And it goes on heartbeating.
    let seen = fake.count();
    next_heartbeat(&fake, seen + 2).await;
    server.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_delete_order_from_something_without_the_cluster_key_is_refused_and_the_chunk_kept() {
    let dir = TempDir::new("cs-impostor");
    seed(dir.path(), &[(A, 1, b"keep me")]).await;
    // Whatever answers at the master's address: it takes every heartbeat and orders A deleted.
    let beats = Arc::new(Mutex::new(Vec::<Heartbeat>::new()));
    let recorded = Arc::clone(&beats);
    let impostor = Impostor::start(move |method, body| {
        if let (true, Ok(heartbeat)) = (method == "Heartbeat", <Heartbeat as prost::Message>::decode(body)) {
            recorded.lock().expect("beats").push(heartbeat);
        }
        let delete = Order { kind: OrderKind::Delete as i32, handle: A.0, ..Order::default() };
        Bytes::from(prost::Message::encode_to_vec(&HeartbeatReply { orders: vec![delete], want_full_report: false }))
    })
    .await;
    let config = ChunkserverConfig {
        full_report_every: 100_000,
        master_timeout: Duration::from_millis(300),
        ..config(dir.path(), &[impostor.addr])
    };
    let server = Chunkserver::start(config).await;

    // A reply taken would make the next heartbeat a delta; a reply refused is a failed heartbeat, so
    // every one after it is a full report again — and no order of it is carried out.
    let seen = eventually(WAIT, "five heartbeats at the impostor", || {
        let beats = beats.lock().expect("beats");
        (beats.len() >= 5).then(|| beats.clone())
    })
    .await;
    assert!(seen.iter().all(|h| h.full), "a reply without the cluster key was taken: {:?}", seen);
    let a1 = ChunkRef { handle: A, version: ChunkVersion(1) };
    let read = data_client().read(server.addr, a1, 0, 100, &token(TokenOp::Read, A, 1)).await.expect("A still there");
    assert_eq!(&read[..], b"keep me");
    assert!(chunk_file(dir.path(), A, "chunk").exists());
    server.stop().await;
}

#[tokio::test]
async fn a_clone_order_copies_the_chunk_byte_for_byte_at_its_version() {
    let (c, d) = (ChunkHandle(0xc), ChunkHandle(0xd));
    // The source: another replica's data plane holding c at version 3.
    let source_dir = TempDir::new("cs-clone-source");
    let source_store = ChunkStore::open(source_dir.path()).await.expect("source store");
    let content = pattern(1_234_567, 3);
    source_store.create(c, ChunkVersion(3)).await.expect("create");
    source_store.write(c, ChunkVersion(3), 0, Bytes::from(content.clone())).await.expect("write");
    let source_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind source");
    let source = source_listener.local_addr().expect("source addr");
    let source_server = DataServer::new(source_store, ServerConfig::new(Arc::new(cluster_key())));
    let source_task = tokio::spawn(source_server.serve(source_listener, std::future::pending()));

    // This server holds a stale copy of c (version 1), which the clone replaces.
    let dir = TempDir::new("cs-clone");
    seed(dir.path(), &[(c, 1, b"stale")]).await;
    let fake = Arc::new(FakeMaster::default());
    let master = MasterServer::start(&fake).await;
    let server = Chunkserver::start(config(dir.path(), &[master.addr])).await;
    let first = next_heartbeat(&fake, 0).await;
    assert_eq!(first.chunks, vec![wire(c, 1, 5)]);

    let clone = |handle: ChunkHandle, version: u64| Order {
        kind: OrderKind::Clone as i32,
        handle: handle.0,
        version,
        source: source.to_string(),
        read_token: token(TokenOp::Read, handle, version).encode().to_vec(),
    };
    fake.order(clone(c, 3));
    fake.order(clone(c, 3)); // a duplicate while the first runs: ignored
    fake.order(clone(d, 2)); // the source has no d: fails, and is reported done all the same

    eventually(WAIT, "both clones reported done", || {
        let done = fake.clones_done();
        (done.contains(&c.0) && done.contains(&d.0)).then_some(())
    })
    .await;
    let want = view_of(&[(c, 3, content.len() as u64)]);
    eventually(WAIT, "c at version 3 in the master's view", || (fake.view(&first.server_id) == want).then_some(()))
        .await;
    assert_eq!(fake.clones_done().iter().filter(|&&h| h == c.0).count(), 1, "the duplicate order did not run");
    assert!(!chunk_file(dir.path(), d, "chunk").exists(), "a failed clone leaves nothing behind");
    let reported: Vec<ChunkReport> = fake.heartbeats().into_iter().flat_map(|h| h.chunks).collect();
    assert!(reported.iter().all(|r| r.version != 0), "an incomplete copy is never reported: {reported:?}");

    let chunk = ChunkRef { handle: c, version: ChunkVersion(3) };
    let copy =
        data_client().read(server.addr, chunk, 0, 64 << 20, &token(TokenOp::Read, c, 3)).await.expect("read the copy");
    assert!(copy == content, "the copy is byte-identical ({} bytes read)", copy.len());
    server.stop().await;
    master.stop().await;
    source_task.abort();
}

#[tokio::test]
async fn a_clone_already_under_way_is_not_started_twice() {
    let dir = TempDir::new("cs-clone-dup");
    let store = ChunkStore::open(dir.path()).await.expect("store");
    // A source that accepts and never answers: the first clone stays under way.
    let black_hole = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let source = black_hole.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = black_hole.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let cloner = Cloner::new(store, 2, None);
    let order = Order {
        kind: OrderKind::Clone as i32,
        handle: 0x77,
        version: 4,
        source: source.to_string(),
        read_token: token(TokenOp::Read, ChunkHandle(0x77), 4).encode().to_vec(),
    };
    assert_eq!(cloner.order(&order), Accepted::Started);
    eventually(WAIT, "the source is asked", || (accepted.load(Ordering::SeqCst) == 1).then_some(())).await;
    assert_eq!(cloner.order(&order), Accepted::Duplicate);
    assert_eq!(cloner.queued(), 1);
    assert!(cloner.in_flight().contains(&ChunkHandle(0x77)));
    assert!(cloner.take_done().is_empty());

    let malformed = Order { read_token: vec![1, 2, 3], handle: 0x78, ..order };
    assert_eq!(cloner.order(&malformed), Accepted::Refused);
    assert_eq!(cloner.take_done(), vec![ChunkHandle(0x78)], "a refused order is reported done");
    cloner.abort_all(WAIT).await;
    assert_eq!(cloner.take_done(), vec![ChunkHandle(0x77)], "an aborted clone is done");
    assert_eq!(cloner.queued(), 0);
    hole.abort();
}

#[tokio::test]
async fn the_scrubber_quarantines_a_chunk_with_a_flipped_byte_until_the_master_orders_it_deleted() {
    let (good, bad) = (ChunkHandle(0x51), ChunkHandle(0x52));
    let dir = TempDir::new("cs-scrub");
    let good_data = pattern(200_000, 5);
    seed(dir.path(), &[(good, 1, &good_data), (bad, 1, &pattern(300_000, 6))]).await;
    let file = OpenOptions::new().read(true).write(true).open(chunk_file(dir.path(), bad, "chunk")).expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 150_000).expect("read byte");
    file.write_all_at(&[byte[0] ^ 0x01], 150_000).expect("flip byte");
    drop(file);

    let fake = Arc::new(FakeMaster::default());
    let master = MasterServer::start(&fake).await;
    let mut config = config(dir.path(), &[master.addr]);
    config.scrub_interval = Duration::from_millis(20);
    let server = Chunkserver::start(config.clone()).await;
    let id = next_heartbeat(&fake, 0).await.server_id;

    let want = view_of(&[(good, 1, 200_000)]);
    eventually(WAIT, "the corrupt chunk gone from the master's view", || (fake.view(&id) == want).then_some(())).await;
    let seen = fake.count();
    eventually(WAIT, "the corrupt chunk reported quarantined", || {
        fake.since(seen).iter().any(|h| h.quarantined == vec![bad.0]).then_some(())
    })
    .await;
    assert!(chunk_file(dir.path(), bad, "chunk").exists(), "only the master may have the replica deleted");
    assert!(chunk_file(dir.path(), bad, "quarantined").exists(), "the quarantine is marked on disk");
    let client = data_client();
    let bad_chunk = ChunkRef { handle: bad, version: ChunkVersion(1) };
    let refused = client.read(server.addr, bad_chunk, 0, 1000, &token(TokenOp::Read, bad, 1)).await;
    assert!(refused.is_err(), "a quarantined chunk is not served, not even its good blocks");
    let chunk = ChunkRef { handle: good, version: ChunkVersion(1) };
    let read = client.read(server.addr, chunk, 0, 1 << 20, &token(TokenOp::Read, good, 1)).await.expect("read good");
    assert!(read == good_data, "the good chunk is untouched");

    // Still quarantined after a restart, then deleted when the master orders it.
    server.stop().await;
    let server = Chunkserver::start(config).await;
    let seen = fake.count();
    let after =
        eventually(WAIT, "a heartbeat after the restart", || fake.since(seen).into_iter().find(|h| h.full)).await;
    assert_eq!(after.quarantined, vec![bad.0], "the quarantine survives a restart");
    assert_eq!(after.chunks.iter().map(|c| c.handle).collect::<Vec<_>>(), vec![good.0]);
    fake.order(Order { kind: OrderKind::Delete as i32, handle: bad.0, ..Order::default() });
    let files = ["chunk", "meta", "quarantined"].map(|suffix| chunk_file(dir.path(), bad, suffix));
    eventually(WAIT, "the quarantined replica deleted", || files.iter().all(|f| !f.exists()).then_some(())).await;
    let seen = fake.count();
    eventually(WAIT, "no quarantined chunk reported", || {
        fake.since(seen).iter().any(|h| h.quarantined.is_empty()).then_some(())
    })
    .await;
    server.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn heartbeats_reach_a_master_listed_second_with_a_full_report_every_n() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let dir = TempDir::new("cs-failover");
    let fake = Arc::new(FakeMaster::default());
    let master = MasterServer::start(&fake).await;
    let mut config = config(dir.path(), &[dead, master.addr]);
    config.full_report_every = 4;
    let server = Chunkserver::start(config).await;

    let beats = eventually(WAIT, "six heartbeats", || {
        let beats = fake.heartbeats();
        (beats.len() >= 6).then_some(beats)
    })
    .await;
    let full: Vec<bool> = beats[..6].iter().map(|h| h.full).collect();
    assert_eq!(full, [true, false, false, false, true, false]);
    assert!(beats.iter().all(|h| h.server_id == beats[0].server_id));
    server.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn heartbeats_survive_the_master_being_down_for_a_while() {
    let h = ChunkHandle(0x1234);
    let dir = TempDir::new("cs-master-down");
    seed(dir.path(), &[(h, 7, b"still here")]).await;
    let before = Arc::new(FakeMaster::default());
    let master = MasterServer::start(&before).await;
    let addr = master.addr;
    let server = Chunkserver::start(ChunkserverConfig {
        master_timeout: Duration::from_millis(300),
        full_report_every: 100_000,
        ..config(dir.path(), &[addr])
    })
    .await;
    let id = next_heartbeat(&before, 1).await.server_id;

    // The master goes away; its port accepts and drops connections (a master crashing on start-up).
    // One heartbeat makes at most 4 attempts within its 300 ms, so 10 attempts mean heartbeats failed.
    master.stop().await;
    let blackout = rebind(addr).await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    let refuser = tokio::spawn(async move {
        while let Ok((stream, _)) = blackout.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    eventually(WAIT, "attempts while the master is down", || (attempts.load(Ordering::SeqCst) >= 10).then_some(()))
        .await;
    refuser.abort();
    let _ = refuser.await;

    // A new master on the same address: heartbeats resume, the first a full report (a heartbeat
    // failed), so the new master learns the chunks without asking.
    let after = Arc::new(FakeMaster::default());
    let master = MasterServer::on(&after, rebind(addr).await).await;
    let resumed = next_heartbeat(&after, 0).await;
    assert!(resumed.full, "the first heartbeat after a failure is a full report");
    assert_eq!((resumed.server_id.as_str(), resumed.chunks.as_slice()), (id.as_str(), &[wire(h, 7, 10)][..]));
    next_heartbeat(&after, 2).await;
    assert!(after.since(1).iter().all(|b| !b.full), "then deltas again");
    server.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_bad_configuration_is_refused_before_anything_starts() {
    let dir = TempDir::new("cs-config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut weak = config(dir.path(), &["127.0.0.1:1".parse().expect("addr")]);
    weak.cluster_key = b"short".to_vec();
    let error = run(weak.clone(), listener, std::future::pending()).await.expect_err("weak key");
    assert!(matches!(error, ChunkserverError::Key(_)), "{error}");
    assert!(!format!("{weak:?}").contains("short") && format!("{weak:?}").contains("redacted"));

    for broken in [
        ChunkserverConfig { masters: vec![], ..weak.clone() },
        ChunkserverConfig { full_report_every: 0, ..weak.clone() },
        ChunkserverConfig { max_clones: 0, ..weak.clone() },
        ChunkserverConfig { heartbeat_interval: Duration::ZERO, ..weak.clone() },
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let error = run(broken, listener, std::future::pending()).await.expect_err("invalid");
        assert!(matches!(error, ChunkserverError::Config(_)), "{error}");
    }
    assert!(!dir.file(SERVER_ID_FILE).exists(), "nothing was created");
}
