//! `gfs-bench`: GFS throughput and master figures beside the limits of this machine, in one run.
//!
//! Starts a private nats-server and a real cluster (`edd gfs master` + three `edd gfs chunkserver`
//! processes, all on this one disk), then measures, in order:
//! 1. the limits: a 1 GiB sequential file write with `fdatasync` (the disk) and a 1 GiB single-stream
//!    loopback TCP copy (the network stack), in this process;
//! 2. a 1 GiB sequential GFS write (RF 3) and read through the client library's streaming adapters;
//! 3. 155 KB files read by 10 concurrent readers (ops/s);
//! 4. master `stat` ops/s, and a master's restart time over 1,000,000 files (events written straight
//!    to the log, then the master restarted: a full replay, then again from its snapshot).
//!
//! Run: `cargo build --release -p edd --bin edd -p edd-it --bin gfs-bench && target/release/gfs-bench`
//! (`--files 1000000 --seconds 10`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use edd_events::catalog::gfs as ev;
use edd_events::{Envelope, Token};
use edd_gfs::client::GfsClient;
use edd_it::bench::{mibs, ratio, Rows};
use edd_it::gfs::{GfsCluster, Timing};
use edd_it::NatsServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const MIB: u64 = 1024 * 1024;

#[derive(Parser, Debug)]
#[command(about = "GFS throughput and master figures beside this machine's disk and loopback limits")]
struct Args {
    /// Bytes of the sequential write and read, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Files for the master restart measurement.
    #[arg(long, default_value_t = 1_000_000)]
    files: u64,
    /// Sequential reads of the file (the median is reported).
    #[arg(long, default_value_t = 3)]
    reads: usize,
    /// Seconds each ops/s measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rows = Rows::new("gfs-bench");
    let scratch = std::env::temp_dir().join(format!("edd-gfs-bench-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&scratch)?;

    let disk = disk_write(&scratch, args.mib * MIB).await?;
    let loopback = loopback_copy(args.mib * MIB).await?;
    rows.push(("disk: sequential write + fdatasync".into(), mibs(disk)));
    rows.push(("loopback: single-stream TCP copy".into(), mibs(loopback)));

    let nats = NatsServer::start().await?;
    let timing =
        Timing { lease_ttl_secs: 5, chunkserver_timeout_secs: 10, orphan_grace_secs: 3600, chunk_lease_secs: 60 };
    let mut cluster = GfsCluster::start(&nats, 1, 3, timing).await?;
    let gfs = cluster.client()?;
    gfs.create_namespace("bench").await?;

    let (write, read) = sequential(&gfs, args.mib * MIB, args.reads).await?;
    rows.push((format!("gfs: {} MiB sequential write, RF 3", args.mib), mibs(write)));
    rows.push(("  goal >= 0.6 x disk / 3".into(), ratio(write, disk / 3.0, 0.6)));
    rows.push((format!("gfs: {} MiB sequential read (median of {})", args.mib, args.reads.max(1)), mibs(read)));
    rows.push(("  goal >= 0.5 x loopback".into(), ratio(read, loopback, 0.5)));

    let small = small_files(&gfs, Duration::from_secs(args.seconds)).await?;
    rows.push(("gfs: 155 KB files, 10 readers".into(), format!("{small:.0} ops/s")));
    rows.push(("  goal >= 10 x 550 ops/s".into(), ratio(small, 550.0, 10.0)));

    let stats = stat_ops(&gfs, Duration::from_secs(args.seconds)).await?;
    rows.push(("master: stat, 10 callers".into(), format!("{stats:.0} ops/s")));

    let (replay, from_snapshot) = restart(&nats, &mut cluster, &gfs, args.files).await?;
    rows.push((format!("master: restart over {} files, full replay", args.files), format!("{replay:.2} s")));
    rows.push((format!("master: restart over {} files, from snapshot", args.files), format!("{from_snapshot:.2} s")));
    rows.push((
        "  goal <= 10 s".into(),
        if from_snapshot.min(replay) <= 10.0 { "met".into() } else { "MISSED".into() },
    ));

    let _ = std::fs::remove_dir_all(&scratch);
    rows.print();
    Ok(())
}

/// Bytes per second of writing `len` bytes to a fresh file and `fdatasync`ing it.
async fn disk_write(dir: &std::path::Path, len: u64) -> anyhow::Result<f64> {
    let path = dir.join("disk-test");
    let block = vec![0x5au8; 8 * MIB as usize];
    let started = Instant::now();
    let mut file = tokio::fs::File::create(&path).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    file.sync_data().await?;
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(len as f64 / secs)
}

/// Bytes per second of one TCP stream over loopback.
async fn loopback_copy(len: u64) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = vec![0u8; MIB as usize];
        let mut total = 0u64;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(total);
            }
            total += n as u64;
        }
    });
    let block = vec![0xa5u8; MIB as usize];
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        stream.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    stream.shutdown().await?;
    let received = sink.await??;
    anyhow::ensure!(received == len, "loopback copy lost bytes");
    Ok(len as f64 / started.elapsed().as_secs_f64())
}

/// Write throughput, and the median read throughput over `reads` reads, of one file of `len` bytes
/// (bytes per second).
async fn sequential(gfs: &GfsClient, len: u64, reads: usize) -> anyhow::Result<(f64, f64)> {
    let file = gfs.create("bench", "/sequential.bin").await?;
    let block = vec![0x3cu8; 8 * MIB as usize];
    let started = Instant::now();
    let mut writer = gfs.writer(&file.id, 0);
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        writer.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    writer.shutdown().await?;
    let write = len as f64 / started.elapsed().as_secs_f64();

    let file = gfs.stat("bench", "/sequential.bin").await?;
    anyhow::ensure!(file.length == len, "wrote {len}, stat says {}", file.length);
    let mut rates = Vec::new();
    for _ in 0..reads.max(1) {
        let started = Instant::now();
        let mut reader = gfs.reader(&file.id, 0, None);
        let mut buf = vec![0u8; 8 * MIB as usize];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        anyhow::ensure!(total == len, "read {total} of {len}");
        rates.push(len as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok((write, rates[rates.len() / 2]))
}

/// Whole-file reads of 155 KB files by 10 concurrent readers, per second.
async fn small_files(gfs: &GfsClient, run: Duration) -> anyhow::Result<f64> {
    const SIZE: usize = 155_000;
    const FILES: usize = 100;
    let mut files = Vec::new();
    for n in 0..FILES {
        let file = gfs.create("bench", &format!("/small/{n:04}.bin")).await?;
        gfs.write_at(&file.id, 0, Bytes::from(vec![n as u8; SIZE])).await?;
        files.push(gfs.stat("bench", &format!("/small/{n:04}.bin")).await?);
    }
    let files = Arc::new(files);
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + run;
    let mut readers = Vec::new();
    for r in 0..10 {
        let (gfs, files, ops) = (gfs.clone(), Arc::clone(&files), Arc::clone(&ops));
        readers.push(tokio::spawn(async move {
            let mut n = r * 7;
            while Instant::now() < deadline {
                let file = &files[n % files.len()];
                let bytes = gfs.read_at(&file.id, 0, file.length).await?;
                anyhow::ensure!(bytes.len() == SIZE, "short read");
                ops.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for reader in readers {
        reader.await??;
    }
    Ok(ops.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// `stat` calls per second from 10 concurrent callers.
async fn stat_ops(gfs: &GfsClient, run: Duration) -> anyhow::Result<f64> {
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + run;
    let mut callers = Vec::new();
    for r in 0..10usize {
        let (gfs, ops) = (gfs.clone(), Arc::clone(&ops));
        callers.push(tokio::spawn(async move {
            let mut n = r;
            while Instant::now() < deadline {
                gfs.stat("bench", &format!("/small/{:04}.bin", n % 100)).await?;
                ops.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for caller in callers {
        caller.await??;
    }
    Ok(ops.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Appends `files` file creations straight to the log (as a master would have), then restarts the
/// master twice: the first start replays everything (and then snapshots), the second starts from
/// the snapshot. Returns both times, from process start to answering as the active master.
async fn restart(
    nats: &NatsServer,
    cluster: &mut GfsCluster,
    gfs: &GfsClient,
    files: u64,
) -> anyhow::Result<(f64, f64)> {
    let client = nats.connect_as("gfs-master").await?;
    let js = async_nats::jetstream::new(client);
    cluster.kill_master(0).await?;
    gfs.status().await.err().context("the master is down")?;
    let started = Instant::now();
    let mut acks = Vec::new();
    for n in 0..files {
        let created = ev::FileCreated {
            file_id: Token::random(),
            namespace: "bench".into(),
            path: format!("/million/{:03}/{n:07}.bin", n % 1000),
        };
        let envelope = Envelope::new("gfs-master/bench", created);
        let outgoing = edd_events::store::Outgoing::encode(&envelope)?;
        acks.push(js.publish(outgoing.subject.as_str().to_owned(), outgoing.bytes.clone()).await?);
        if acks.len() >= 4096 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    eprintln!("gfs-bench: {files} file events appended in {:.1} s", started.elapsed().as_secs_f64());

    let mut times = Vec::new();
    for _ in 0..2 {
        // The killed master's election lease must run out first; a restart after a crash waits for it
        // (while a standby would take over), and that wait is not the cost of loading the metadata.
        let kv = js.get_key_value("GFS_MASTER").await?;
        edd_it::eventually(Duration::from_secs(60), "the dead master's lease to expire", || async {
            Ok(kv.get("active").await?.is_none().then_some(()))
        })
        .await?;
        let started = Instant::now();
        cluster.restart_master(0)?;
        if let Err(e) = cluster.wait_active().await {
            return Err(e.context(cluster.logs()));
        }
        times.push(started.elapsed().as_secs_f64());
        let status = gfs.status().await?;
        anyhow::ensure!(status.files >= files, "the restarted master knows {} files", status.files);
        // Let the master write its snapshot before the next restart measures starting from it.
        let snapshot = edd_it::eventually(Duration::from_secs(120), "a snapshot covering the log", || async {
            Ok(snapshot_seq(&js).await.filter(|&seq| seq >= status.last_seq))
        })
        .await;
        if let Err(e) = snapshot {
            return Err(e.context(cluster.logs()));
        }
        cluster.kill_master(0).await?;
    }
    Ok((times[0], times[1]))
}

/// The log sequence the master's latest snapshot covers, if there is one.
async fn snapshot_seq(js: &async_nats::jetstream::Context) -> Option<u64> {
    let store = js.get_object_store("GFS_SNAPSHOTS").await.ok()?;
    let mut object = store.get("latest").await.ok()?;
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.ok()?;
    Some(edd_gfs::master::MasterState::restore(&bytes).ok()?.last_seq())
}
