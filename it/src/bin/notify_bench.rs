//! `notify-bench`: notification publish → WebSocket delivery latency through the gateway, against
//! a raw NATS core subscription to the very same messages, in the same run.
//!
//! In one process, on a private nats-server and database (like the tests): the auth service, the
//! notification service and the gateway (its per-client connection and request limits lifted, as
//! 1,000 clients share one address here). `--users` users each open `--sockets-per-user`
//! WebSockets through the gateway. Then notifications are published at `--rate` per second for
//! `--seconds` (after a one-second warm-up) to random users, the way other services publish them
//! (`EventStore::publish` of an `Envelope`), each carrying its send time. Every WebSocket client
//! records publish → receive; a core NATS subscriber on `notify.>` records the same for the raw
//! messages, which is the baseline.
//!
//! Run: `cargo build --release -p edd-it --bin notify-bench && $CARGO_TARGET_DIR/release/notify-bench`
//! with `EDD_NATS_SERVER_BIN` and PostgreSQL as for the tests. Needs about 4 file descriptors per
//! socket (client, gateway both sides, service): `ulimit -n` of 8192 or more for 1,000 sockets.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use edd_events::{catalog::notify::Notification, Token};
use edd_it::{
    eventually,
    services::{start_auth, start_gateway_with, start_notify, test_config, Api, ADMIN, ADMIN_PASSWORD},
    TestEnv,
};
use futures_util::StreamExt as _;
use rand_free::Rng;
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, http::HeaderValue, Message};

const HOST: &str = "notifications.localhost";

#[derive(Parser, Debug)]
#[command(about = "Notification publish → WebSocket delivery latency through the gateway")]
struct Args {
    /// Users, each with its own WebSockets.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// WebSockets per user (the service allows 5 by default).
    #[arg(long, default_value_t = 1)]
    sockets_per_user: usize,
    /// Notifications per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of measured publishing (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// Latencies in microseconds, from every receiver.
#[derive(Default)]
struct Samples {
    edd: Mutex<Vec<u64>>,
    raw: Mutex<Vec<u64>>,
    delivered: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(limit) = open_files_limit() {
        let needed = (args.users * args.sockets_per_user * 4 + 512) as u64;
        anyhow::ensure!(limit >= needed, "open-files limit {limit} < {needed}: raise it with `ulimit -n {needed}`");
    }
    let env = TestEnv::new().await?;
    let auth = start_auth(&env, test_config()).await?;
    let notify = start_notify(&env, edd_notify::NotifyConfig::default()).await?;
    let gateway = start_gateway_with(&env, &[("auth", &auth.url), ("notifications", &notify.url)], |config| {
        config.max_connections_per_ip = 0;
        config.requests_per_sec_per_ip = 0;
    })
    .await?;
    let api = Api::new(&auth.url);
    let admin = api.login(ADMIN, ADMIN_PASSWORD).await?;

    eprintln!("creating {} users…", args.users);
    let users = create_users(&api, &admin, args.users).await?;
    let notes = Api::via(&gateway.url, HOST);
    let last = &users.last().context("at least one user")?.1;
    eventually(Duration::from_secs(60), "the notification service to know the users", || async {
        Ok((notes.get("/api/notifications/unread-count", last).await?.status == StatusCode::OK).then_some(()))
    })
    .await?;

    let t0 = Instant::now();
    let samples = Arc::new(Samples::default());
    let measure_from = Arc::new(AtomicU64::new(u64::MAX));
    eprintln!("opening {} WebSockets through the gateway…", args.users * args.sockets_per_user);
    let ws_url = format!("{}/ws/notifications", gateway.url.replacen("http://", "ws://", 1));
    let mut readers = Vec::new();
    for (_, token) in &users {
        for _ in 0..args.sockets_per_user {
            let mut request = ws_url.as_str().into_client_request()?;
            request.headers_mut().insert("host", HeaderValue::from_static(HOST));
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await.context("opening a WebSocket")?;
            let (samples, from) = (samples.clone(), measure_from.clone());
            readers.push(tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else { continue };
                    let now = t0.elapsed().as_micros() as u64;
                    let Some(sent) = sent_at(text.as_bytes()) else { continue };
                    if sent >= from.load(Ordering::Relaxed) {
                        samples.edd.lock().unwrap_or_else(|e| e.into_inner()).push(now.saturating_sub(sent));
                        samples.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }

    // The baseline: a core NATS subscription to the same subjects, in the same process.
    let mut raw = env.client.subscribe("notify.>").await?;
    env.client.flush().await?;
    let (raw_samples, from) = (samples.clone(), measure_from.clone());
    let raw_reader = tokio::spawn(async move {
        while let Some(msg) = raw.next().await {
            let now = t0.elapsed().as_micros() as u64;
            if let Some(sent) = sent_at(&msg.payload) {
                if sent >= from.load(Ordering::Relaxed) {
                    raw_samples.raw.lock().unwrap_or_else(|e| e.into_inner()).push(now.saturating_sub(sent));
                }
            }
        }
    });

    eprintln!("publishing {} notifications/s for 1 s warm-up + {} s…", args.rate, args.seconds);
    let store = env.events();
    let ids: Vec<Token> = users.iter().map(|(id, _)| Token::new(id.clone())).collect::<Result<_, _>>()?;
    let interval = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
    let total = args.rate * (args.seconds + 1);
    let warmup = args.rate;
    let mut rng = Rng::new(0x5eed);
    let mut acks = Vec::with_capacity(total as usize);
    let start = tokio::time::Instant::now();
    let mut published_measured = 0u64;
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let now = t0.elapsed().as_micros() as u64;
        if i == warmup {
            measure_from.store(now, Ordering::Relaxed);
        }
        if i >= warmup {
            published_measured += 1;
        }
        let user = ids[rng.below(ids.len())].clone();
        let note = Notification {
            user_id: user,
            title: "bench".into(),
            message: format!("t={now}"),
            link: None,
            category: "bench".into(),
            scope: None,
        };
        let store = store.clone();
        acks.push(tokio::spawn(async move { store.publish(&edd_it::fixtures::envelope(note)).await }));
    }
    let mut failed = 0;
    for ack in acks {
        if !matches!(ack.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    let expected = published_measured * args.sockets_per_user as u64;
    let _ = eventually(Duration::from_secs(10), "every delivery", || async {
        Ok((samples.delivered.load(Ordering::Relaxed) >= expected).then_some(()))
    })
    .await;
    for r in readers {
        r.abort();
    }
    raw_reader.abort();

    let edd = summary(&samples.edd.lock().unwrap_or_else(|e| e.into_inner()));
    let raw = summary(&samples.raw.lock().unwrap_or_else(|e| e.into_inner()));
    let metrics = reqwest::get(format!("{}/metrics", notify.url)).await?.text().await?;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("notify_slow_clients_dropped_total "))
        .unwrap_or("0")
        .trim()
        .to_owned();
    println!(
        "edd notify bench — {} users × {} WebSockets through the gateway, {} notifications/s for {} s \
         (after 1 s warm-up)\n",
        args.users, args.sockets_per_user, args.rate, args.seconds
    );
    println!("{:<44} {:>10} {:>10} {:>8}  goal", "publish → receive (ms)", "edd (WS)", "raw NATS", "ratio");
    for (name, ours, base, goal) in
        [("p50", edd.p50, raw.p50, ""), ("p99", edd.p99, raw.p99, "p99 ≤ 20 ms"), ("max", edd.max, raw.max, "")]
    {
        println!("{name:<44} {:>10.2} {:>10.2} {:>7.1}×  {goal}", ours / 1000.0, base / 1000.0, ours / base.max(1.0));
    }
    println!(
        "\ndelivered {} of {} expected ({} publish failures; {} slow clients dropped); raw samples {}",
        samples.delivered.load(Ordering::Relaxed),
        expected,
        failed,
        dropped,
        raw.count
    );
    Ok(())
}

/// `t=<µs>` in the notification's `message`, from a WebSocket item or a raw envelope.
fn sent_at(json: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let message = value.get("message").or_else(|| value.get("data")?.get("message"))?.as_str()?;
    message.strip_prefix("t=")?.parse().ok()
}

struct Summary {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn summary(samples: &[u64]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted.get(((sorted.len().saturating_sub(1)) as f64 * q) as usize).copied().unwrap_or(0) as f64;
    Summary { count: sorted.len(), p50: at(0.5), p99: at(0.99), max: sorted.last().copied().unwrap_or(0) as f64 }
}

/// `n` users created by the admin, each with a session: `(user id, token)`.
async fn create_users(api: &Api, admin: &str, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(n);
    let chunks: Vec<Vec<usize>> = (0..n).collect::<Vec<_>>().chunks(16).map(<[usize]>::to_vec).collect();
    for chunk in chunks {
        let batch = chunk.into_iter().map(|i| {
            let api = api.clone();
            let admin = admin.to_owned();
            async move {
                let name = format!("user{i}");
                let id = api.create_user(&admin, &name, "password-1").await?;
                let token = api.login(&name, "password-1").await?;
                anyhow::Ok((id, token))
            }
        });
        for result in futures_util::future::join_all(batch).await {
            out.push(result?);
        }
    }
    Ok(out)
}

/// The soft `RLIMIT_NOFILE`, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A tiny deterministic generator for picking users (xorshift64*); no dependency needed.
mod rand_free {
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }

        pub fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
        }
    }
}
