//! GFS end to end with real processes: `edd gfs master` and `edd gfs chunkserver` children against a
//! private nats-server, driven through the client library, SIGKILLed mid-work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edd_gfs::chunk::CHUNK_SIZE;
use edd_gfs::client::{FileInfo, GfsClient, GfsConfig, GfsError};
use edd_it::gfs::{GfsCluster, Timing};
use edd_it::{eventually, TestEnv};
use ring::digest::{Context, SHA256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const MIB: u64 = 1024 * 1024;

/// Deterministic, incompressible-looking bytes: position `pos` of stream `seed`.
fn pattern(seed: u64, pos: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut word = pos / 8;
    let skip = (pos % 8) as usize;
    while out.len() < len + skip {
        let mut x = word.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        out.extend_from_slice(&x.to_le_bytes());
        word += 1;
    }
    out.drain(..skip);
    out.truncate(len);
    out
}

/// Writes `len` bytes of `pattern(seed)` through the streaming writer; returns their sha256.
async fn write_pattern(gfs: &GfsClient, file: &FileInfo, seed: u64, len: u64) -> anyhow::Result<Vec<u8>> {
    let mut writer = gfs.writer(&file.id, 0);
    let mut sha = Context::new(&SHA256);
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(4 * MIB) as usize;
        let block = pattern(seed, pos, n);
        sha.update(&block);
        writer.write_all(&block).await?;
        pos += n as u64;
    }
    writer.shutdown().await?;
    Ok(sha.finish().as_ref().to_vec())
}

/// Reads `len` bytes at `offset` through the streaming reader; returns their sha256 and count.
async fn read_sha(gfs: &GfsClient, file: &FileInfo, offset: u64, len: Option<u64>) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut reader = gfs.reader(&file.id, offset, len);
    let mut sha = Context::new(&SHA256);
    let mut buf = vec![0; MIB as usize];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        total += n as u64;
    }
    Ok((sha.finish().as_ref().to_vec(), total))
}

fn sha_of(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&SHA256, bytes).as_ref().to_vec()
}

async fn cluster(env: &TestEnv, masters: usize, chunkservers: usize, timing: Timing) -> GfsCluster {
    GfsCluster::start(&env.nats, masters, chunkservers, timing).await.expect("gfs cluster")
}

/// Every `<handle>.chunk` file under a chunkserver's data directory, by handle.
fn chunk_files(dir: &Path) -> HashMap<String, PathBuf> {
    let mut found = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(handle) =
                path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".chunk"))
            {
                found.insert(handle.to_owned(), path);
            }
        }
    }
    found
}

#[tokio::test]
async fn a_3_gib_file_round_trips_byte_identical_with_ranged_reads_at_chunk_boundaries() {
    let env = TestEnv::new().await.expect("env");
    let c = cluster(&env, 1, 3, Timing::default()).await;
    let gfs = c.client().expect("client");
    gfs.create_namespace("big").await.expect("namespace");
    let file = gfs.create("big", "/three-gib.bin").await.expect("create");
    let len = 3 * 1024 * MIB;
    let written = write_pattern(&gfs, &file, 7, len).await.expect("write");
    let file = gfs.stat("big", "/three-gib.bin").await.expect("stat");
    assert_eq!(file.length, len);
    assert_eq!(file.chunk_count as u64, len / CHUNK_SIZE);
    let (read, n) = read_sha(&gfs, &file, 0, None).await.expect("read");
    assert_eq!(n, len);
    assert_eq!(read, written, "sha256 of what was read equals what was written");

    // Ranges straddling each chunk boundary, starting and ending exactly on one, and the file's end.
    for boundary in [CHUNK_SIZE, 2 * CHUNK_SIZE, 47 * CHUNK_SIZE] {
        for (offset, want) in [(boundary - 1000, 3000), (boundary, 100), (boundary - 100, 100)] {
            let got = gfs.read_at(&file.id, offset, want).await.expect("ranged read");
            assert_eq!(got.as_ref(), pattern(7, offset, want as usize).as_slice(), "range {offset}+{want}");
        }
    }
    let tail = gfs.read_at(&file.id, len - 10, 100).await.expect("read past the end is cut");
    assert_eq!(tail.as_ref(), pattern(7, len - 10, 10).as_slice());
    assert!(gfs.read_at(&file.id, len + 1, 1).await.is_err(), "an offset past the length is refused");
}

#[tokio::test]
async fn a_chunkserver_killed_mid_write_loses_nothing_and_its_chunks_are_re_replicated() {
    let env = TestEnv::new().await.expect("env");
    let mut c = cluster(&env, 1, 4, Timing::default()).await;
    let gfs = c.client().expect("client");
    gfs.create_namespace("ns").await.expect("namespace");
    let file = gfs.create("ns", "/f").await.expect("create");
    let len = 320 * MIB;
    let (writer_gfs, writer_file) = (gfs.clone(), file.clone());
    let write = tokio::spawn(async move { write_pattern(&writer_gfs, &writer_file, 11, len).await });

    // Kill a chunkserver that holds the file's first chunk once the write is well under way.
    let victim = eventually(Duration::from_secs(120), "the write to pass 64 MiB", || async {
        let f = gfs.stat("ns", "/f").await?;
        if f.length < 64 * MIB {
            return Ok(None);
        }
        let holders: Vec<usize> = (0..4).filter(|&n| !chunk_files(&c.chunkserver_dir(n)).is_empty()).collect();
        Ok(holders.first().copied())
    })
    .await
    .expect("progress");
    c.kill_chunkserver(victim).await.expect("kill");
    let written = write.await.expect("join").unwrap_or_else(|e| panic!("write failed: {e:#}\n{}", c.logs()));

    let file = gfs.stat("ns", "/f").await.expect("stat");
    assert_eq!(file.length, len);
    let (read, n) = read_sha(&gfs, &file, 0, None).await.expect("read");
    assert_eq!((read, n), (written.clone(), len), "every acknowledged byte reads back intact");

    // Once the dead server is declared dead, every chunk gets back to three live replicas.
    c.wait_live(3).await.expect("the victim is declared dead");
    c.wait_fully_replicated(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    let (read, _) = read_sha(&gfs, &file, 0, None).await.expect("read after repair");
    assert_eq!(read, written);
}

/// One record: its writer, its number, and a body that checks itself.
fn record(writer: u64, n: u64, len: usize) -> Vec<u8> {
    let mut body = format!("w{writer:03}-n{n:06}:").into_bytes();
    body.extend(pattern(writer * 1_000_000 + n, 0, len));
    body
}

async fn append_records(
    gfs: GfsClient,
    file: FileInfo,
    writer: u64,
    count: u64,
) -> Result<Vec<(u64, Vec<u8>)>, GfsError> {
    let mut acked = Vec::new();
    for n in 0..count {
        let rec = record(writer, n, 1000 + ((writer * 7919 + n * 104_729) % 300_000) as usize);
        let offset = gfs.append(&file.id, Bytes::from(rec.clone())).await?;
        acked.push((offset, rec));
    }
    Ok(acked)
}

async fn check_records(gfs: &GfsClient, ns: &str, path: &str, acked: &[(u64, Vec<u8>)]) {
    let file = gfs.stat(ns, path).await.expect("stat");
    for (offset, rec) in acked {
        let got = gfs.read_at(&file.id, *offset, rec.len() as u64).await.expect("read record");
        assert_eq!(got.as_ref(), rec.as_slice(), "the record acknowledged at {offset} is intact");
    }
}

#[tokio::test]
async fn concurrent_appenders_find_every_acknowledged_record_intact() {
    let env = TestEnv::new().await.expect("env");
    let c = cluster(&env, 1, 3, Timing::default()).await;
    let admin = c.client().expect("client");
    admin.create_namespace("logs").await.expect("namespace");
    let file = admin.create("logs", "/app.log").await.expect("create");
    let mut tasks = Vec::new();
    for writer in 0..8 {
        // Separate clients: separate caches and connections, as separate services would have.
        let gfs = c.client().expect("client");
        tasks.push(tokio::spawn(append_records(gfs, file.clone(), writer, 60)));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("join").expect("appends"));
    }
    assert_eq!(acked.len(), 8 * 60);
    let mut offsets: Vec<u64> = acked.iter().map(|(o, _)| *o).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), acked.len(), "no two records share an offset");
    assert!(admin.stat("logs", "/app.log").await.expect("stat").chunk_count >= 2, "appends crossed a chunk");
    check_records(&admin, "logs", "/app.log", &acked).await;
}

#[tokio::test]
async fn appends_survive_a_chunkserver_killed_during_commits() {
    let env = TestEnv::new().await.expect("env");
    let mut c = cluster(&env, 1, 4, Timing::default()).await;
    let gfs = c.client().expect("client");
    gfs.create_namespace("logs").await.expect("namespace");
    let file = gfs.create("logs", "/events").await.expect("create");
    let mut tasks = Vec::new();
    for writer in 0..4 {
        tasks.push(tokio::spawn(append_records(c.client().expect("client"), file.clone(), writer, 200)));
    }
    eventually(Duration::from_secs(60), "appends under way", || async {
        Ok((gfs.stat("logs", "/events").await?.length > 8 * MIB).then_some(()))
    })
    .await
    .expect("progress");
    let victim = (0..4).find(|&n| !chunk_files(&c.chunkserver_dir(n)).is_empty()).expect("a replica holder");
    c.kill_chunkserver(victim).await.expect("kill");
    let length_at_kill = gfs.stat("logs", "/events").await.expect("stat").length;
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("join").unwrap_or_else(|e| panic!("appends failed: {e:#}\n{}", c.logs())));
    }
    assert_eq!(acked.len(), 4 * 200, "every append was eventually acknowledged");
    assert!(acked.iter().any(|(offset, _)| *offset > length_at_kill), "appends went on after the kill");
    check_records(&gfs, "logs", "/events", &acked).await;
}

#[tokio::test]
async fn a_flipped_byte_on_disk_is_read_around_reported_and_repaired() {
    let env = TestEnv::new().await.expect("env");
    let c = cluster(&env, 1, 3, Timing::default()).await;
    let gfs = c.client().expect("client");
    gfs.create_namespace("ns").await.expect("namespace");
    let file = gfs.create("ns", "/f").await.expect("create");
    let data = pattern(3, 0, 5 * MIB as usize);
    gfs.write_at(&file.id, 0, Bytes::from(data.clone())).await.expect("write");
    let file = gfs.stat("ns", "/f").await.expect("stat");

    // Corrupt every replica but one, in different blocks, so the read must fail over.
    let mut corrupted = Vec::new();
    for n in 0..2 {
        let files = chunk_files(&c.chunkserver_dir(n));
        let (_, path) = files.iter().next().expect("a replica on every server");
        let mut bytes = std::fs::read(path).expect("chunk file");
        let at = (n + 1) * 1_000_000;
        bytes[at] ^= 0x5a;
        std::fs::write(path, &bytes).expect("flip");
        corrupted.push(path.clone());
    }
    for _ in 0..3 {
        let got = gfs.read_at(&file.id, 0, data.len() as u64).await.expect("read fails over");
        assert_eq!(sha_of(&got), sha_of(&data), "the read returns the written bytes");
    }
    // Reported and repaired: the corrupt copies are replaced by good clones.
    eventually(Duration::from_secs(60), "the corrupt replicas to be replaced", || async {
        let good = corrupted.iter().all(|p| match std::fs::read(p) {
            Ok(bytes) => bytes.len() >= data.len() && sha_of(&bytes[..data.len()]) == sha_of(&data),
            Err(_) => false,
        });
        Ok(good.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    c.wait_fully_replicated(Duration::from_secs(30)).await.expect("replicated");
}

#[tokio::test]
async fn the_master_restarts_and_a_standby_takes_over_with_metadata_intact() {
    let env = TestEnv::new().await.expect("env");
    let mut c = cluster(&env, 2, 3, Timing::default()).await;
    let gfs = c.client().expect("client");
    gfs.create_namespace("ns").await.expect("namespace");
    let first = gfs.create("ns", "/before").await.expect("create");
    let data = pattern(5, 0, 3 * MIB as usize);
    gfs.write_at(&first.id, 0, Bytes::from(data.clone())).await.expect("write");
    assert_eq!(c.wait_active().await.expect("active"), c.master_addrs[0]);

    // The active master dies; the standby takes over and serves the same metadata; writes resume.
    c.kill_master(0).await.expect("kill");
    let active = c.wait_active().await.expect("takeover");
    assert_eq!(active, c.master_addrs[1]);
    let before = gfs.stat("ns", "/before").await.expect("stat after takeover");
    assert_eq!((before.id.clone(), before.length), (first.id.clone(), data.len() as u64));
    assert_eq!(gfs.read_at(&before.id, 0, before.length).await.expect("read").as_ref(), data.as_slice());
    let after = gfs.create("ns", "/after").await.expect("create after takeover");
    gfs.write_at(&after.id, 0, Bytes::from(data.clone())).await.unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));

    // The old master comes back as a standby; when the new active one dies, it takes over again.
    c.restart_master(0).expect("restart");
    c.kill_master(1).await.expect("kill");
    assert_eq!(c.wait_active().await.expect("takeover back"), c.master_addrs[0]);
    let files = gfs.list("ns", "/", None, 100).await.expect("list").0;
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/after", "/before"]);
    let after = gfs.stat("ns", "/after").await.expect("stat");
    assert_eq!(gfs.read_at(&after.id, 0, after.length).await.expect("read").as_ref(), data.as_slice());
}

#[tokio::test]
async fn a_restarted_chunkserver_with_an_old_replica_is_not_served_and_is_collected() {
    let env = TestEnv::new().await.expect("env");
    let mut c = cluster(&env, 1, 3, Timing::default()).await;
    let gfs = c.client().expect("client");
    gfs.create_namespace("ns").await.expect("namespace");
    let file = gfs.create("ns", "/f").await.expect("create");
    let old = pattern(1, 0, MIB as usize);
    gfs.write_at(&file.id, 0, Bytes::from(old)).await.expect("first write");
    let (handle, stale_path) = chunk_files(&c.chunkserver_dir(2)).into_iter().next().expect("replica on server 3");
    let stale_meta = stale_path.with_extension("meta");
    let stale_bytes = std::fs::read(&stale_meta).expect("meta");

    // Server 3 dies; the chunk is overwritten while it is away (the master raises the version).
    c.kill_chunkserver(2).await.expect("kill");
    let new = pattern(2, 0, MIB as usize);
    gfs.write_at(&file.id, 0, Bytes::from(new.clone())).await.unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    c.restart_chunkserver(2).expect("restart");
    c.wait_live(3).await.expect("back");

    // Its replica is never served: every read returns the new bytes.
    for _ in 0..6 {
        let file = gfs.stat("ns", "/f").await.expect("stat");
        assert_eq!(gfs.read_at(&file.id, 0, MIB).await.expect("read").as_ref(), new.as_slice());
    }
    // And it is collected: the stale copy is deleted (and a current one cloned in its place).
    eventually(Duration::from_secs(60), "the stale replica to be replaced", || async {
        let meta = std::fs::read(&stale_meta).ok();
        Ok((meta.as_deref() != Some(stale_bytes.as_slice())).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    c.wait_fully_replicated(Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    let current = chunk_files(&c.chunkserver_dir(2));
    if let Some(path) = current.get(&handle) {
        let bytes = std::fs::read(path).expect("chunk");
        assert_eq!(&bytes[..new.len()], new.as_slice(), "the copy on server 3 is now the current one");
    }
}

#[tokio::test]
async fn orphan_chunks_are_deleted_only_after_the_grace_period() {
    let env = TestEnv::new().await.expect("env");
    let grace = 8;
    let mut c = cluster(&env, 1, 3, Timing { orphan_grace_secs: grace, ..Timing::default() }).await;
    // A chunk no file owns, left on server 1's disk (as a crash between creating a replica and
    // recording the chunk would leave it).
    c.kill_chunkserver(0).await.expect("stop");
    let chunks = c.chunkserver_dir(0).join("chunks");
    {
        let store = edd_gfs::chunk::ChunkStore::open(&chunks).await.expect("store");
        let orphan = edd_gfs::chunk::ChunkHandle(0x00ff_0000_0000_0001);
        store.create(orphan, edd_gfs::chunk::ChunkVersion(1)).await.expect("create orphan");
        store.write(orphan, edd_gfs::chunk::ChunkVersion(1), 0, Bytes::from_static(b"orphan")).await.expect("write");
    }
    let orphan_file = chunks.join("00ff000000000001.chunk");
    let server_dir = c.chunkserver_dir(0);
    let orphan_exists = || chunk_files(&server_dir).contains_key("00ff000000000001");
    assert!(orphan_exists(), "{}", orphan_file.display());
    let restarted = Instant::now();
    c.restart_chunkserver(0).expect("restart");
    c.wait_live(3).await.expect("registered");
    assert!(orphan_exists(), "a reported orphan survives until its grace period has passed");
    eventually(Duration::from_secs(grace * 4), "the orphan to be collected", || async {
        Ok((!orphan_exists()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    assert!(restarted.elapsed() >= Duration::from_secs(grace), "collected after {:?}", restarted.elapsed());
}

#[tokio::test]
async fn peers_without_valid_credentials_or_tokens_are_refused() {
    let env = TestEnv::new().await.expect("env");
    let mut c = cluster(&env, 1, 3, Timing::default()).await;

    // A client with the wrong secret gets nothing from the master.
    let intruder = GfsClient::new(GfsConfig::new(c.master_addrs.clone(), b"not-the-client-secret-0123456789".to_vec()))
        .expect("client");
    let refused = intruder.namespaces().await;
    assert!(matches!(refused, Err(GfsError::PermissionDenied(_))), "{refused:?}");

    // A chunkserver with the wrong cluster key never joins.
    let n = c.add_chunkserver_with_key(b"wrong-cluster-key-0123456789abcd").expect("spawn");
    let gfs = c.client().expect("client");
    let joined = eventually(Duration::from_secs(5), "the impostor to join", || async {
        let status = gfs.status().await?;
        Ok((status.chunkservers.len() > 3).then_some(()))
    })
    .await;
    assert!(joined.is_err(), "a chunkserver with the wrong cluster key registered");
    assert!(c.logs().contains("UNAUTHENTICATED") || c.logs().contains("nauthenticated"), "chunkserver {n}");

    // The data plane refuses a read with a forged token.
    gfs.create_namespace("ns").await.expect("namespace");
    let file = gfs.create("ns", "/f").await.expect("create");
    gfs.write_at(&file.id, 0, Bytes::from_static(b"secret bytes")).await.expect("write");
    let (handle, _) = chunk_files(&c.chunkserver_dir(0)).into_iter().next().expect("replica");
    let handle = edd_gfs::chunk::ChunkHandle(u64::from_str_radix(&handle, 16).expect("hex"));
    let forged_key = edd_gfs::dataplane::ClusterKey::new(b"forged-key-0123456789abcdef").expect("key");
    let token = edd_gfs::dataplane::CapabilityToken::mint_for(
        &forged_key,
        edd_gfs::dataplane::TokenOp::Read,
        handle,
        edd_gfs::chunk::ChunkVersion(1),
        Duration::from_secs(60),
    );
    let data = edd_gfs::dataplane::DataClient::new(edd_gfs::dataplane::ClientConfig::default());
    let addr = c.chunkserver_addrs[0].parse().expect("addr");
    let chunk = edd_gfs::dataplane::ChunkRef { handle, version: edd_gfs::chunk::ChunkVersion(1) };
    let read = data.read(addr, chunk, 0, 12, &token).await;
    assert_eq!(read.err().and_then(|e| e.code()), Some(edd_gfs::dataplane::ErrorCode::Unauthorized));
}

#[tokio::test]
async fn a_write_survives_nats_dying_under_the_master_and_nothing_acknowledged_is_lost() {
    let mut env = TestEnv::new().await.expect("env");
    let c = cluster(&env, 1, 3, Timing::default()).await;
    let gfs = c.client().expect("client");
    gfs.create_namespace("ns").await.expect("namespace");
    let file = gfs.create("ns", "/f").await.expect("create");
    let len = 256 * MIB;
    let (writer_gfs, writer_file) = (gfs.clone(), file.clone());
    let write = tokio::spawn(async move { write_pattern(&writer_gfs, &writer_file, 13, len).await });
    eventually(Duration::from_secs(120), "the write to pass 64 MiB", || async {
        Ok((gfs.stat("ns", "/f").await?.length >= 64 * MIB).then_some(()))
    })
    .await
    .expect("progress");

    // The log goes away under the master: it cannot record chunks or lengths, and gives up being active.
    env.nats.kill().await.expect("kill nats");
    eventually(Duration::from_secs(30), "the master to step down", || async {
        Ok(gfs.status().await.ok().filter(|s| !s.active).map(drop))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));
    env.nats.restart().await.expect("restart nats");

    // The writer's retries carry it through; everything reads back.
    let written = write.await.expect("join").unwrap_or_else(|e| panic!("write failed: {e:#}\n{}", c.logs()));
    let file = gfs.stat("ns", "/f").await.expect("stat");
    assert_eq!(file.length, len);
    let (read, n) = read_sha(&gfs, &file, 0, None).await.expect("read");
    assert_eq!((read, n), (written, len), "every acknowledged byte reads back intact");
}

#[tokio::test]
async fn over_tls_files_round_trip_and_plaintext_or_a_foreign_ca_is_refused() {
    let env = TestEnv::new().await.expect("env");
    let c = GfsCluster::start_tls(&env.nats, 1, 3, Timing::default()).await.expect("gfs cluster over TLS");
    // Registered over TLS (heartbeats); the master prepared replicas over the TLS data plane.
    let gfs = c.client().expect("client");
    gfs.create_namespace("tls").await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let file = gfs.create("tls", "/f").await.expect("create");
    let len = CHUNK_SIZE + 6 * MIB; // two chunks
    let written = write_pattern(&gfs, &file, 3, len).await.expect("write over TLS");
    let (read, read_len) = read_sha(&gfs, &file, 0, None).await.expect("read over TLS");
    assert_eq!((read, read_len), (written, len), "read back over TLS");

    let short = |mut config: GfsConfig| {
        config.master.failover_timeout = Duration::from_secs(1);
        GfsClient::new(config).expect("client")
    };
    let plain = short(GfsConfig::new(c.master_addrs.clone(), edd_it::gfs::CLIENT_SECRET.as_bytes().to_vec()));
    let refused = plain.namespaces().await;
    assert!(matches!(refused, Err(GfsError::Unavailable(_))), "plaintext: {refused:?}");

    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let mut config = GfsConfig::new(c.master_addrs.clone(), edd_it::gfs::CLIENT_SECRET.as_bytes().to_vec());
    config.tls = Some(edd_gfs::tls::Tls::from_pem(stranger.cert.pem().as_bytes(), None).expect("tls"));
    let refused = short(config).namespaces().await;
    assert!(matches!(refused, Err(GfsError::Unavailable(_))), "another CA: {refused:?}");
}
