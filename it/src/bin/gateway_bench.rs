//! `gateway-bench`: the gateway's real data path (`Gateway` + `server::serve`, with its per-client
//! limits, metrics and access log) standalone, without NATS or PostgreSQL, for the gateway-vs-nginx
//! benchmark (`deploy/bench/gateway-vs-nginx.sh`).
//!
//! One route: `bench.localhost/` → `http://<backend>`, HTTP/1.1 upstream with pooled keep-alive.
//!
//! Run: `gateway-bench --addr 127.0.0.1:18182 --backend 127.0.0.1:18181 [--access-log FILE]
//! [--https-addr 127.0.0.1:18184 --cert cert.pem --key key.pem]`

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use edd_gateway::{
    clients::ClientLimitsConfig,
    observe::{AccessLogTarget, Observer},
    server::{self, Transport},
    tls::{CertFiles, CertStore},
    workers, Gateway, Options, Route, RouteTable,
};
use edd_kit::{Metrics, Shutdown};
use tokio::net::TcpListener;

/// The host the benchmark's single route answers (wrk sends it with `-H 'Host: ...'`).
const HOST: &str = "bench.localhost";

#[derive(Parser, Debug)]
#[command(about = "The gateway's data path, standalone, with one route to a benchmark backend")]
struct Args {
    /// Plain HTTP listener (HTTP/1.1 and h2c).
    #[arg(long, default_value = "127.0.0.1:18182")]
    addr: SocketAddr,
    /// The backend (`host:port`), reached as `http://<backend>`.
    #[arg(long, default_value = "127.0.0.1:18181")]
    backend: String,
    /// HTTPS listener (HTTP/1.1 and h2 by ALPN); needs `--cert` and `--key`.
    #[arg(long, requires_all = ["cert", "key"])]
    https_addr: Option<SocketAddr>,
    /// PEM certificate chain for `--https-addr`.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key for `--https-addr`.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The access log: `-` (standard output), a file path, or `off`.
    #[arg(long, default_value = "off")]
    access_log: AccessLogTarget,
    /// Per-client-address request rate. The gateway's default (1000/s) would refuse a load
    /// generator on one address, so the benchmark keeps the limiter on but out of reach; 0 turns it
    /// off.
    #[arg(long, default_value_t = 100_000_000)]
    requests_per_sec_per_ip: u32,
    /// Open connections one client address may hold (0: no limit).
    #[arg(long, default_value_t = 256)]
    max_connections_per_ip: usize,
    /// Serving threads, each with its own single-threaded runtime (0: one per core, as the gateway runs).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The control side only (signals, certificate reload); serving runs on the gateway's workers.
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.enable_all();
    runtime.build().context("building the tokio runtime")?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let route = Route::new("bench", HOST, "/", &format!("http://{}", args.backend), false)?;
    let options = Options {
        clients: ClientLimitsConfig {
            max_connections: args.max_connections_per_ip,
            requests_per_sec: args.requests_per_sec_per_ip,
            burst: args.requests_per_sec_per_ip,
        },
        observer: Observer::new(&Metrics::new(), &args.access_log).context("starting the access log")?,
        ..Options::default()
    };
    let gateway = Arc::new(Gateway::new(RouteTable::new(vec![route]), options));
    let limits = server::Limits::default();
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut listeners = Vec::new();

    let listener = TcpListener::bind(args.addr).await.with_context(|| format!("binding {}", args.addr))?;
    eprintln!("gateway-bench: http://{} (Host: {HOST}) -> http://{}", listener.local_addr()?, args.backend);
    listeners.push((listener, Transport::Plain));

    if let (Some(addr), Some(cert), Some(key)) = (args.https_addr, args.cert, args.key) {
        let store = CertStore::load(vec![CertFiles { cert, key }])?;
        let acceptor = tokio_rustls::TlsAcceptor::from(store.server_config()?);
        tasks.spawn(store.watch(Duration::from_secs(2), shutdown.clone()));
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        eprintln!("gateway-bench: https://{} (Host: {HOST})", listener.local_addr()?);
        listeners.push((listener, Transport::Tls(acceptor)));
    }

    // The gateway's own serving model: one single-threaded runtime per worker (default one per core).
    let workers = workers::count(args.workers);
    let serving = tokio::spawn(workers::serve(listeners, gateway, workers, limits, shutdown.clone()));
    edd_kit::shutdown::signal().await;
    trigger.trigger();
    serving.await??;
    while tasks.join_next().await.is_some() {}
    Ok(())
}
