//! `storage-bench`: the storage API through the gateway beside the GFS client alone, in one run.
//!
//! Starts a private nats-server and database, a GFS cluster (`edd gfs` processes), the auth service
//! and the gateway in this process, and the storage service as an `edd serve storage` process. Then:
//! 1. the baseline: a 1 GiB file written and read back with the GFS client library directly;
//! 2. the same 1 GiB uploaded and downloaded through the gateway and the storage service (streamed
//!    both ways, SHA-256 computed by the service on the way in) — the ratio to 1.;
//! 3. 155 KB files fetched by 10 concurrent clients through the gateway for `--seconds`: ops/s and
//!    latency percentiles (the original measured 96 ops/s over its network, 550 inside).
//!
//! Run: `cargo build --release -p edd --bin edd -p edd-it --bin storage-bench && target/release/storage-bench`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use edd_it::bench::{mibs, ratio, Rows};
use edd_it::gfs::{GfsCluster, Timing};
use edd_it::services::{self, Api};
use edd_it::TestEnv;
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const MIB: u64 = 1024 * 1024;

#[derive(Parser, Debug)]
#[command(about = "Storage through the gateway beside the GFS client alone")]
struct Args {
    /// Size of the large transfer, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Seconds the small-file measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds of the large transfers (direct, then through); the best of each side is kept.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent clients of the small-file measurement.
    #[arg(long, default_value_t = 10)]
    clients: usize,
}

/// One MiB of bytes that do not compress, shared by every piece of the large transfers.
fn block() -> Bytes {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(MIB as usize);
    while out.len() < MIB as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rows = Rows::new("storage-bench");
    let len = args.mib * MIB;
    let block = block();

    let env = TestEnv::new().await?;
    let timing =
        Timing { lease_ttl_secs: 5, chunkserver_timeout_secs: 10, orphan_grace_secs: 3600, chunk_lease_secs: 60 };
    let gfs = GfsCluster::start(&env.nats, 1, 3, timing).await?;
    gfs.wait_live(3).await?;
    let auth = services::start_auth(&env, services::test_config()).await?;
    let settings = [
        ("EDD_STORAGE_MAX_UPLOAD_BYTES", (len + MIB).to_string()),
        ("EDD_STORAGE_QUOTA_BYTES", (4 * len + 1024 * MIB).to_string()),
        ("EDD_LOG", "warn".to_owned()),
    ];
    let storage = services::start_storage_process(&env, &gfs, &settings).await?;
    let gateway = services::start_gateway_with(&env, &[("auth", &auth.url), ("storage", &storage.url)], |config| {
        config.requests_per_sec_per_ip = 1_000_000;
        config.request_burst_per_ip = 1_000_000;
    })
    .await?;
    let auth_api = Api::via(&gateway.url, "auth.localhost");
    let admin = edd_it::eventually(Duration::from_secs(30), "the gateway to route", || async {
        Ok(auth_api.login(services::ADMIN, services::ADMIN_PASSWORD).await.ok())
    })
    .await?;
    let api = Api::via(&gateway.url, "storage.localhost");
    edd_it::eventually(Duration::from_secs(30), "storage to accept the session", || async {
        Ok((api.get("/storage/usage", &admin).await?.status.is_success()).then_some(()))
    })
    .await?;
    let created = api.post("/storage/namespaces", &admin, serde_json::json!({"name": "bench"})).await?;
    anyhow::ensure!(created.status.is_success(), "creating the namespace: {:?}", created.body);

    // 1 and 2, alternated (direct, through, direct, through) so neither side gets the cold or the warm
    // disk: the best of each is reported.
    let client = gfs.client()?;
    client.create_namespace("direct").await?;
    let http = reqwest::Client::new();
    let (mut direct_write, mut direct_read, mut upload, mut download) = (0f64, 0f64, 0f64, 0f64);
    let mut service_download = 0f64;
    for round in 0..args.rounds.max(1) {
        let (w, r) = direct(&client, &block, args.mib).await?;
        direct_write = direct_write.max(w);
        direct_read = direct_read.max(r);
        let (u, d, s) = through_gateway(&http, (&gateway.url, &storage.url), &admin, &block, args.mib, round).await?;
        upload = upload.max(u);
        download = download.max(d);
        service_download = service_download.max(s);
    }
    rows.push((format!("gfs client: {} MiB write (best of {})", args.mib, args.rounds), mibs(direct_write)));
    rows.push((format!("gfs client: {} MiB read (best of {})", args.mib, args.rounds), mibs(direct_read)));
    rows.push((format!("gateway + storage: {} MiB upload (best of {})", args.mib, args.rounds), mibs(upload)));
    rows.push(("  goal >= 0.8 x gfs client write".into(), ratio(upload, direct_write, 0.8)));
    rows.push((format!("gateway + storage: {} MiB download (best of {})", args.mib, args.rounds), mibs(download)));
    rows.push(("  goal >= 0.8 x gfs client read".into(), ratio(download, direct_read, 0.8)));
    rows.push((format!("storage alone (no gateway): {} MiB download", args.mib), mibs(service_download)));
    rows.push(("  vs gfs client read".into(), format!("{:.2}x", service_download / direct_read)));
    let url = |path: &str| format!("{}{path}", gateway.url);

    // 3. Small files, many clients.
    let small = block.slice(..155_000);
    let files = 100;
    for i in 0..files {
        let resp = http
            .post(url(&format!("/storage/bench/small/{i}.bin")))
            .header("host", "storage.localhost")
            .bearer_auth(&admin)
            .body(small.clone())
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "small upload: {}", resp.status());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (http, stop, token) = (http.clone(), stop.clone(), admin.clone());
        let base = gateway.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let resp = http
                    .get(format!("{base}/storage/bench/small/{}.bin", i % files))
                    .header("host", "storage.localhost")
                    .bearer_auth(&token)
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "small GET: {}", resp.status());
                let body = resp.bytes().await?;
                anyhow::ensure!(body.len() == 155_000, "small GET returned {} bytes", body.len());
                latencies.push(started.elapsed());
                i += 7;
            }
            Ok(latencies)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let ops = latencies.len() as f64 / elapsed;
    rows.push((format!("gateway + storage: 155 KB GETs, {} clients", args.clients), format!("{ops:.0} ops/s")));
    rows.push(("  latency p50 / p99".into(), format!("{:.1} ms / {:.1} ms", ms(pct(0.5)), ms(pct(0.99)))));
    rows.push(("  vs the original inside its cluster (550 ops/s)".into(), format!("{:.1}x", ops / 550.0)));

    rows.print();
    drop(storage);
    Ok(())
}

/// Writes and reads `mib` MiB with the GFS client library; bytes per second of each.
async fn direct(client: &edd_gfs::client::GfsClient, block: &Bytes, mib: u64) -> anyhow::Result<(f64, f64)> {
    let len = mib * MIB;
    let file = client.create("direct", "/big").await?;
    let started = Instant::now();
    let mut writer = client.writer(&file.id, 0);
    for _ in 0..mib {
        writer.write_all(block).await?;
    }
    writer.shutdown().await?;
    let write = len as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut reader = client.reader(&file.id, 0, Some(len));
    let mut buf = vec![0u8; MIB as usize];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    anyhow::ensure!(read == len, "read {read} of {len} bytes");
    let read = len as f64 / started.elapsed().as_secs_f64();
    client.delete("direct", "/big").await?;
    Ok((write, read))
}

/// Uploads and downloads `mib` MiB through the gateway; bytes per second of each.
async fn through_gateway(
    http: &reqwest::Client,
    (gateway, storage): (&str, &str),
    token: &str,
    block: &Bytes,
    mib: u64,
    round: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let len = mib * MIB;
    let path = format!("{gateway}/storage/bench/big-{round}.bin");
    let pieces = {
        let block = block.clone();
        futures_util::stream::iter(0..mib).map(move |_| Ok::<_, std::io::Error>(block.clone()))
    };
    let started = Instant::now();
    let resp = http
        .post(&path)
        .header("host", "storage.localhost")
        .bearer_auth(token)
        .header("content-length", len)
        .body(reqwest::Body::wrap_stream(pieces))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "upload: {} {}", resp.status(), resp.text().await?);
    let upload = len as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let resp = http.get(&path).header("host", "storage.localhost").bearer_auth(token).send().await?;
    anyhow::ensure!(resp.status().is_success(), "download: {}", resp.status());
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        got += chunk?.len() as u64;
    }
    anyhow::ensure!(got == len, "downloaded {got} of {len} bytes");
    let download = len as f64 / started.elapsed().as_secs_f64();
    // The same download from the storage service itself, without the gateway: where the cost is.
    let started = Instant::now();
    let resp = http.get(format!("{storage}/storage/bench/big-{round}.bin")).bearer_auth(token).send().await?;
    anyhow::ensure!(resp.status().is_success(), "direct download: {}", resp.status());
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        got += chunk?.len() as u64;
    }
    anyhow::ensure!(got == len, "downloaded {got} of {len} bytes");
    let service_only = len as f64 / started.elapsed().as_secs_f64();
    let resp = http.delete(&path).header("host", "storage.localhost").bearer_auth(token).send().await?;
    anyhow::ensure!(resp.status().is_success(), "delete: {}", resp.status());
    Ok((upload, download, service_only))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
