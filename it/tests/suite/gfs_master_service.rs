//! The GFS master service in process against a real nats-server: three in-process data servers over
//! chunk stores in temporary directories, heartbeats driven by the test (a minimal chunkserver that
//! reports everything it holds and carries out deletes), and a second master as a standby that takes
//! over when the first one dies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edd_gfs::chunk::{ChunkHandle, ChunkStore, ChunkVersion};
use edd_gfs::dataplane::{CapabilityToken, ChunkRef, ClientConfig, ClusterKey, DataClient, DataServer, ServerConfig};
use edd_gfs::master::service::{run, MasterConfig, MasterError};
use edd_gfs::master::MasterState;
use edd_gfs::rpc::messages::{
    ChunkReport, CommitRequest, Empty, FileInfo, Heartbeat, LeaseRequest, LocateRequest, NamespaceRequest, OrderKind,
    PathRequest, StaleReplica,
};
use edd_gfs::rpc::{ClientOptions, Credential, MasterClient, Role, ACTIVE_HEADER, SERVICE, STANDBY_HEADER};
use edd_it::{eventually, TestEnv};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::Code;

const CLUSTER_KEY: &[u8] = b"it-master-cluster-key-0123456789";
const CLIENT_SECRET: &[u8] = b"it-master-client-secret-0123456789";
const LEASE_TTL: Duration = Duration::from_secs(2);

fn config(env: &TestEnv, id: &str, advertise: SocketAddr) -> MasterConfig {
    MasterConfig {
        id: id.into(),
        advertise: advertise.to_string(),
        nats_url: env.nats.url(),
        nats_credential: Some(env.nats.credential("gfs-master").unwrap()),
        cluster_key: CLUSTER_KEY.to_vec(),
        client_secret: CLIENT_SECRET.to_vec(),
        lease_ttl: LEASE_TTL,
        chunkserver_timeout: Duration::from_secs(2),
        repair_interval: Duration::from_millis(200),
        snapshot_every: 3,
        ..MasterConfig::default()
    }
}

fn start_master(config: MasterConfig, listener: TcpListener) -> JoinHandle<Result<(), MasterError>> {
    tokio::spawn(run(config, listener, std::future::pending()))
}

fn client(addrs: &[SocketAddr], role: Role, secret: &[u8]) -> MasterClient {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(10),
        failover_timeout: Duration::from_secs(10),
    };
    let credential = Credential::new(role, secret).expect("credential");
    MasterClient::new(addrs.iter().map(ToString::to_string).collect(), credential, options)
}

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A data server over its own chunk store.
struct Replica {
    id: String,
    addr: SocketAddr,
    store: ChunkStore,
    _dir: TempDir,
    _serving: JoinHandle<std::io::Result<()>>,
}

impl Replica {
    async fn start(n: usize) -> Replica {
        let dir = TempDir(std::env::temp_dir().join(format!("edd-it-gfs-master-{}", uuid::Uuid::now_v7())));
        let store = ChunkStore::open(&dir.0).await.expect("chunk store");
        let key = Arc::new(ClusterKey::new(CLUSTER_KEY).expect("key"));
        let server = DataServer::new(store.clone(), ServerConfig::new(key));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serving = tokio::spawn(server.serve(listener, std::future::pending()));
        Replica { id: format!("cs-{n}"), addr, store, _dir: dir, _serving: serving }
    }

    /// A full report of what the store holds.
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            server_id: self.id.clone(),
            data_addr: self.addr.to_string(),
            full: true,
            chunks: self
                .store
                .report()
                .into_iter()
                .map(|c| ChunkReport { handle: c.handle.0, version: c.version.0, length: c.length })
                .collect(),
            quarantined: self.store.quarantined().into_iter().map(|q| q.handle.0).collect(),
            free_bytes: 100 << 30,
            ..Heartbeat::default()
        }
    }
}

/// The chunkservers' side of the control plane, reduced to what this test needs: a full report from
/// every replica every 300 ms, and deletes carried out as ordered.
fn heartbeat_forever(replicas: Arc<Vec<Replica>>, masters: MasterClient) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for replica in replicas.iter() {
                let Ok(reply) = masters.heartbeat(replica.heartbeat()).await else { continue };
                for order in reply.orders {
                    if order.kind == OrderKind::Delete as i32 {
                        let _ = replica.store.delete(ChunkHandle(order.handle)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

/// One `Stat` call to exactly one master, so that a standby's answer (and its metadata) is seen as is
/// rather than failed over.
async fn stat_on(addr: SocketAddr, credential: &Credential, request: PathRequest) -> Result<FileInfo, tonic::Status> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (send, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    tokio::spawn(connection);
    let service = tower::service_fn(move |req: hyper::Request<tonic::body::Body>| {
        let mut send = send.clone();
        async move { send.send_request(req).await }
    });
    let origin: hyper::Uri = format!("http://{addr}").parse().expect("origin");
    let mut grpc = tonic::client::Grpc::with_origin(service, origin);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let signed = credential.sign("Stat", &prost::Message::encode_to_vec(&request));
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert("authorization", signed.header().parse().expect("header"));
    let path = format!("/{SERVICE}/Stat").parse().expect("path");
    grpc.unary(request, path, tonic_prost::ProstCodec::default()).await.map(tonic::Response::into_inner)
}

fn socket(addr: &str) -> SocketAddr {
    addr.parse().expect("replica address")
}

fn token(bytes: &[u8]) -> CapabilityToken {
    CapabilityToken::decode(bytes).expect("token")
}

#[tokio::test]
async fn a_master_serves_files_and_leases_and_its_standby_takes_over_with_the_same_metadata() {
    let env = TestEnv::new().await.expect("test env");
    let (m1_listener, m2_listener) =
        (TcpListener::bind("127.0.0.1:0").await.expect("bind"), TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    let (m1, m2) = (m1_listener.local_addr().expect("addr"), m2_listener.local_addr().expect("addr"));
    let first = start_master(config(&env, "m1", m1), m1_listener);
    let peers = client(&[m1, m2], Role::Peer, CLUSTER_KEY);
    let files = client(&[m1, m2], Role::Client, CLIENT_SECRET);
    eventually(Duration::from_secs(10), "m1 active", || async {
        Ok(files.cluster_status(Empty {}).await.ok().filter(|s| s.active && s.master_id == "m1"))
    })
    .await
    .expect("m1 becomes active");

    let replicas = Arc::new(vec![Replica::start(1).await, Replica::start(2).await, Replica::start(3).await]);
    let heartbeats = heartbeat_forever(Arc::clone(&replicas), peers.clone());
    eventually(Duration::from_secs(10), "three live chunkservers", || async {
        let status = files.cluster_status(Empty {}).await?;
        Ok((status.chunkservers.iter().filter(|c| c.alive).count() == 3).then_some(()))
    })
    .await
    .expect("chunkservers registered");

    // Files and a lease on a new chunk: replicas created at version 1 on every data server.
    files.create_namespace(NamespaceRequest { namespace: "logs".into() }).await.expect("namespace");
    let path = PathRequest { namespace: "logs".into(), path: "/app/a.log".into() };
    let file = files.create_file(path.clone()).await.expect("create");
    assert_eq!(files.create_file(path.clone()).await.expect_err("twice").code(), Code::AlreadyExists);
    let lease =
        files.lease_chunk(LeaseRequest { file_id: file.id.clone(), index: 0, append: false }).await.expect("lease");
    assert_eq!((lease.index, lease.version, lease.secondaries.len()), (0, 1, 2));
    let handle = ChunkHandle(lease.handle);
    for replica in replicas.iter() {
        let info = replica.store.stat(handle).expect("replica created");
        assert_eq!((info.version, info.length), (ChunkVersion(1), 0), "{}", replica.id);
    }
    let mut chain: Vec<SocketAddr> = vec![socket(&lease.primary)];
    chain.extend(lease.secondaries.iter().map(|s| socket(s)));
    let mut sorted_chain = chain.clone();
    sorted_chain.sort();
    let mut all: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    all.sort();
    assert_eq!(sorted_chain, all, "the lease names every replica");

    // A write through the data plane with the lease's tokens, then the committed length.
    let data = Bytes::from_static(b"the first record of a.log\n");
    let chunk = ChunkRef { handle, version: ChunkVersion(lease.version) };
    let dataplane = DataClient::new(ClientConfig::default());
    let pushed = dataplane.push(&chain, chunk, data.clone(), &token(&lease.push_token)).await.expect("push");
    let written =
        dataplane.write(chain[0], &chain[1..], chunk, 0, pushed, &token(&lease.mutate_token)).await.expect("write");
    assert!(written.failed.is_empty(), "{written:?}");
    let length = data.len() as u64;
    files.commit(CommitRequest { file_id: file.id.clone(), length, stale: Vec::new() }).await.expect("commit");
    assert_eq!(files.stat(path.clone()).await.expect("stat").length, length);

    // The same lease while it is valid; locations of all three replicas with a working read token.
    let again =
        files.lease_chunk(LeaseRequest { file_id: file.id.clone(), index: 0, append: false }).await.expect("lease");
    assert_eq!((again.version, &again.primary), (lease.version, &lease.primary));
    let located =
        files.locate(LocateRequest { file_id: file.id.clone(), first_index: 0, count: 0 }).await.expect("locate");
    assert_eq!((located.length, located.chunk_count, located.chunks.len()), (length, 1, 1));
    let mut listed: Vec<SocketAddr> = located.chunks[0].replicas.iter().map(|r| socket(r)).collect();
    listed.sort();
    assert_eq!(listed, all);
    let read = dataplane
        .read(listed[0], chunk, 0, length, &token(&located.chunks[0].read_token))
        .await
        .expect("read with the located token");
    assert_eq!(read, data);

    // A replica that missed a write is reported stale: the other two move to version 2 without it, and
    // it is deleted once it stayed stale for a chunkserver timeout.
    let stale = chain[2];
    let report = StaleReplica { handle: handle.0, version: 1, addr: stale.to_string() };
    files.commit(CommitRequest { file_id: file.id.clone(), length, stale: vec![report] }).await.expect("stale");
    for replica in replicas.iter() {
        let version = replica.store.stat(handle).map(|info| info.version);
        let expected = if replica.addr == stale { ChunkVersion(1) } else { ChunkVersion(2) };
        assert_eq!(version, Some(expected), "{}", replica.id);
    }
    let located =
        files.locate(LocateRequest { file_id: file.id.clone(), first_index: 0, count: 1 }).await.expect("locate");
    assert_eq!((located.chunks[0].version, located.chunks[0].replicas.len()), (2, 2));
    assert!(!located.chunks[0].replicas.contains(&stale.to_string()));
    let stale_replica = replicas.iter().find(|r| r.addr == stale).expect("stale replica");
    eventually(Duration::from_secs(10), "stale replica deleted", || async {
        Ok(stale_replica.store.stat(handle).is_none().then_some(()))
    })
    .await
    .expect("stale replica deleted");
    // Its lease was dropped: the next one raises the version again (the repair loop may have raised it
    // once more meanwhile, to fence the chunk for its re-replication), on the two current replicas.
    let third =
        files.lease_chunk(LeaseRequest { file_id: file.id.clone(), index: 0, append: true }).await.expect("lease");
    assert!(third.version > 2, "version {}", third.version);
    assert_eq!(third.secondaries.len(), 1);
    for replica in replicas.iter().filter(|r| r.addr != stale) {
        assert_eq!(replica.store.stat(handle).map(|i| i.version), Some(ChunkVersion(third.version)), "{}", replica.id);
    }

    // Credentials: a wrong client secret is nobody; a client is no chunkserver.
    let stranger = client(&[m1], Role::Client, b"not-the-client-secret-0123456789");
    assert_eq!(stranger.stat(path.clone()).await.expect_err("wrong secret").code(), Code::Unauthenticated);
    let denied = files.heartbeat(replicas[0].heartbeat()).await.expect_err("client heartbeat");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A standby follows the log, answers UNAVAILABLE naming the active master, and reports itself.
    let second = start_master(config(&env, "m2", m2), m2_listener);
    let standby = client(&[m2], Role::Client, CLIENT_SECRET);
    let active_seq = files.cluster_status(Empty {}).await.expect("status").last_seq;
    eventually(Duration::from_secs(10), "m2 following", || async {
        let status = standby.cluster_status(Empty {}).await?;
        Ok((!status.active && status.active_addr == m1.to_string() && status.last_seq == active_seq).then_some(()))
    })
    .await
    .expect("standby caught up");
    let credential = Credential::new(Role::Client, CLIENT_SECRET).expect("credential");
    let refused = stat_on(m2, &credential, path.clone()).await.expect_err("standby serves no reads");
    assert_eq!(refused.code(), Code::Unavailable);
    let hint = refused.metadata().get(ACTIVE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(hint, Some(m1.to_string()));
    assert!(refused.metadata().contains_key(STANDBY_HEADER), "a standby marks its refusals");

    // The active master dies (its renewals stop with it): the standby takes over within two TTLs.
    first.abort();
    let _ = first.await;
    let died = Instant::now();
    eventually(LEASE_TTL * 2, "m2 active", || async {
        Ok(standby.cluster_status(Empty {}).await.ok().filter(|s| s.active && s.master_id == "m2"))
    })
    .await
    .expect("standby takes over");
    println!("takeover after {:?}", died.elapsed());
    let after = files.stat(path.clone()).await.expect("stat on the new active master");
    assert_eq!((after.id.as_str(), after.length, after.chunk_count), (file.id.as_str(), length, 1));

    // It knows no chunkserver yet: a delta from an unknown one is answered with a request for a full
    // report; the full reports make the replicas locations again.
    let mut probe = replicas[0].heartbeat();
    probe.server_id = "cs-probe".into();
    probe.full = false;
    assert!(peers.heartbeat(probe).await.expect("probe").want_full_report);
    eventually(Duration::from_secs(10), "locations on m2", || async {
        let located = files.locate(LocateRequest { file_id: file.id.clone(), first_index: 0, count: 1 }).await?;
        Ok((located.chunks[0].replicas.len() == 2).then_some(()))
    })
    .await
    .expect("replicas reported to the new master");

    // Deleting the file makes its chunk garbage: every replica is ordered deleted, then the master
    // forgets the chunk.
    files.delete_file(path.clone()).await.expect("delete");
    assert_eq!(files.stat(path.clone()).await.expect_err("deleted").code(), Code::NotFound);
    eventually(Duration::from_secs(15), "garbage collected", || async {
        let status = files.cluster_status(Empty {}).await?;
        let held = replicas.iter().filter(|r| r.store.stat(handle).is_some()).count();
        Ok((held == 0 && status.garbage == 0 && status.chunks == 0).then_some(()))
    })
    .await
    .expect("replicas deleted and the chunk forgotten");

    // The active masters wrote snapshots along the way (every 3 events here); the latest restores.
    let store = env.js.get_object_store("GFS_SNAPSHOTS").await.expect("snapshot bucket");
    let mut snapshot = Vec::new();
    store.get("latest").await.expect("snapshot").read_to_end(&mut snapshot).await.expect("read snapshot");
    let restored = MasterState::restore(&snapshot).expect("restore");
    assert!(restored.last_seq() >= 3, "snapshot at {}", restored.last_seq());
    assert!(restored.namespace("logs").is_some());

    heartbeats.abort();
    second.abort();
}
