//! `cargo run --release -p edd-it --bin bench [-- EVENTS]`: the event backbone's figures, each as a
//! ratio to a raw baseline measured in the same process against the same private nats-server and
//! PostgreSQL (the machine is shared and noisy; ratios travel, absolute numbers don't).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use edd_events::{catalog::auth::UserCreated, store::Outgoing, Expected};
use edd_it::{fixtures, TestEnv};
use edd_projections::{Runner, RunnerConfig};
use futures_util::{stream, StreamExt};

const PAYLOAD: usize = 256;
const IN_FLIGHT: usize = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let env = TestEnv::new().await?;
    println!("edd bench events — {events} events, {PAYLOAD}-byte payloads, {IN_FLIGHT} in flight\n");
    println!("{:<44} {:>14} {:>14} {:>8}  goal", "measure", "edd", "raw", "ratio");

    // 1. Append throughput, pipelined.
    let raw = raw_publish_throughput(&env, events / 2).await?;
    let ours = append_throughput(&env, events / 2).await?;
    row("append throughput (events/s)", ours, raw, ours / raw, "≥ 0.85×");

    // 2. Single append ack latency.
    let (raw50, raw99) = raw_publish_latency(&env, 2000).await?;
    let (our50, our99) = append_latency(&env, 2000).await?;
    row("single append p50 (µs)", our50, raw50, our50 / raw50, "");
    row("single append p99 (µs)", our99, raw99, our99 / raw99, "≤ 1.3×");

    // 3. Projection apply (rebuild of an upsert projection) vs raw 500-row batched upserts.
    let seeded = seed_users(&env, events).await?;
    let raw_rows = raw_insert_rate(&env, seeded).await?;
    let (rebuild_rate, rebuild_secs) = rebuild_rate(&env).await?;
    row("projection apply (events/s)", rebuild_rate, raw_rows, rebuild_rate / raw_rows, "≥ 0.9×");
    println!(
        "{:<44} {:>13.1}s  (goal: 1,000,000 events ≤ 25 s; run with 1000000)",
        format!("rebuild of {seeded} events"),
        rebuild_secs
    );

    // 4. Publish → visible in the projection at 1,000 events/s.
    let (p50, p99) = visible_latency(&env, 3000).await?;
    let (c50, c99) = core_delivery_latency(&env, 3000).await?;
    row("publish→visible p50 (ms) vs core NATS", p50, c50, p50 / c50, "");
    row("publish→visible p99 (ms) vs core NATS", p99, c99, p99 / c99, "p99 ≤ 15 ms");
    Ok(())
}

fn row(name: &str, ours: f64, raw: f64, ratio: f64, goal: &str) {
    println!("{name:<44} {ours:>14.1} {raw:>14.1} {ratio:>7.2}×  {goal}");
}

fn payload_user(i: usize) -> UserCreated {
    // Pad the display name so the whole event is about PAYLOAD bytes of data.
    fixtures::user(i, &"x".repeat(PAYLOAD.saturating_sub(64)))
}

async fn raw_publish_throughput(env: &TestEnv, n: usize) -> anyhow::Result<f64> {
    let bytes: bytes::Bytes = serde_json::to_vec(&edd_it::fixtures::envelope(payload_user(0)))?.into();
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let js = env.js.clone();
            let bytes = bytes.clone();
            async move { js.publish(format!("auth.user.raw{i}.created"), bytes).await?.await }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move { r.map(|_| ()).unwrap_or_else(|e| panic!("raw publish failed: {e}")) })
        .await;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn append_throughput(env: &TestEnv, n: usize) -> anyhow::Result<f64> {
    let store = env.events();
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                store.append_one(&edd_it::fixtures::envelope(payload_user(1_000_000 + i)), Expected::NoStream).await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move { r.map(|_| ()).unwrap_or_else(|e| panic!("append failed: {e}")) })
        .await;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

async fn raw_publish_latency(env: &TestEnv, n: usize) -> anyhow::Result<(f64, f64)> {
    let bytes: bytes::Bytes = serde_json::to_vec(&edd_it::fixtures::envelope(payload_user(0)))?.into();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        env.js.publish(format!("auth.user.lat{i}.created"), bytes.clone()).await?.await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentiles(samples))
}

async fn append_latency(env: &TestEnv, n: usize) -> anyhow::Result<(f64, f64)> {
    let store = env.events();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let event = edd_it::fixtures::envelope(payload_user(2_000_000 + i));
        let t = Instant::now();
        store.append_one(&event, Expected::NoStream).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentiles(samples))
}

/// Appends `n` more users; returns how many user events the stream now holds.
async fn seed_users(env: &TestEnv, n: usize) -> anyhow::Result<usize> {
    let store = env.events();
    stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                let out = Outgoing::encode(&edd_it::fixtures::envelope(payload_user(3_000_000 + i)))?;
                let agg = edd_events::Event::aggregate(&payload_user(3_000_000 + i))
                    .ok_or_else(|| anyhow::anyhow!("no aggregate"))?;
                store.append(&agg, Expected::Any, &[out]).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move { r.unwrap_or_else(|e| panic!("seed failed: {e}")) })
        .await;
    let head = edd_events::consume::stream_head(&env.js, "AUTH").await?;
    Ok(head as usize)
}

/// The same rows, inserted straight from memory in 500-row UNNEST upserts.
async fn raw_insert_rate(env: &TestEnv, n: usize) -> anyhow::Result<f64> {
    let pool = &env.db.pool;
    sqlx::raw_sql("CREATE TABLE raw_users (user_id text PRIMARY KEY, username text NOT NULL, display_name text NOT NULL, is_admin bool NOT NULL, version bigint NOT NULL)").execute(pool).await?;
    let upsert = fixtures::UPSERT_USERS.replace("INSERT INTO users", "INSERT INTO raw_users");
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let users: Vec<_> = chunk.iter().map(|i| payload_user(*i)).collect();
        let mut tx = pool.begin().await?;
        sqlx::query(&upsert)
            .bind(users.iter().map(|u| u.user_id.to_string()).collect::<Vec<_>>())
            .bind(users.iter().map(|u| u.username.clone()).collect::<Vec<_>>())
            .bind(users.iter().map(|u| u.display_name.clone()).collect::<Vec<_>>())
            .bind(users.iter().map(|u| u.is_admin).collect::<Vec<_>>())
            .bind(chunk.iter().map(|i| *i as i64).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn rebuild_rate(env: &TestEnv) -> anyhow::Result<(f64, f64)> {
    let projection = fixtures::BulkUsersProjection { name: "bench/users" };
    let report = edd_projections::rebuild::rebuild(&env.db.pool, &env.js, &projection, 500, &mut |_| {}).await?;
    let secs = report.elapsed.as_secs_f64();
    Ok((report.events as f64 / secs, secs))
}

/// Appends at 1,000/s with a live runner and measures ack → `wait_for` resolving.
async fn visible_latency(env: &TestEnv, n: usize) -> anyhow::Result<(f64, f64)> {
    let config = RunnerConfig { batch_size: 500, ..Default::default() };
    let projection = Arc::new(fixtures::UsersProjection::new("bench/live"));
    let (runner, handle) = Runner::new(env.db.pool.clone(), env.js.clone(), projection, config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    // Let it catch up with what earlier phases appended.
    let head = edd_events::consume::stream_head(&env.js, "AUTH").await?;
    handle.wait_for(head, Duration::from_secs(600)).await?;
    let store = env.events();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut waits = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        let event = edd_it::fixtures::envelope(fixtures::user(4_000_000 + i, "live"));
        let started = Instant::now();
        let seq = store.append_one(&event, Expected::NoStream).await?;
        let handle = handle.clone();
        waits.push(tokio::spawn(async move {
            handle.wait_for(seq, Duration::from_secs(30)).await.map(|_| started.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let mut samples = Vec::with_capacity(n);
    for w in waits {
        samples.push(w.await??);
    }
    let _ = stop.send(());
    Ok(percentiles(samples))
}

/// Baseline: the same rate over plain core NATS, publish → subscriber receipt.
async fn core_delivery_latency(env: &TestEnv, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut sub = env.client.subscribe("bench.core").await?;
    let receiver = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(msg) = sub.next().await else { break };
            let sent: u128 = String::from_utf8_lossy(&msg.payload).parse().unwrap_or(0);
            samples.push((now_nanos() - sent) as f64 / 1e6);
        }
        samples
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..n {
        tick.tick().await;
        env.client.publish("bench.core", now_nanos().to_string().into()).await?;
    }
    env.client.flush().await?;
    Ok(percentiles(receiver.await?))
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}
