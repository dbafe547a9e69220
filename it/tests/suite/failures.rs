//! Things die mid-way: a projection process is SIGKILLed mid-batch; the leader of two runners dies.
//! Ground truth is the number of events appended; the counting projection would show any event
//! applied twice or lost.

use std::{process::Stdio, time::Duration};

use edd_events::Expected;
use edd_it::{eventually, fixtures, TestEnv};
use tokio::process::{Child, Command};

fn worker(env: &TestEnv, instance: &str, slow_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_projection-worker"))
        .env("EDD_IT_NATS_URL", env.nats.url())
        // It reads AUTH as the auth service's projections do.
        .env("EDD_NATS_CREDENTIALS_FILE", env.nats.credential_file("auth"))
        .env("EDD_IT_ADMIN_URL", env.db.admin_url())
        .env("EDD_IT_DB", &env.db.name)
        .env("EDD_IT_INSTANCE", instance)
        .env("EDD_IT_BATCH", "50")
        .env("EDD_IT_SLOW_MS", slow_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn position(env: &TestEnv) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT position FROM edd_projections.checkpoints WHERE name = 'it/counting'")
        .fetch_optional(&env.db.pool)
        .await
        .unwrap_or(None))
}

async fn leader(env: &TestEnv) -> Option<String> {
    sqlx::query_scalar("SELECT leader FROM edd_projections.checkpoints WHERE name = 'it/counting'")
        .fetch_optional(&env.db.pool)
        .await
        .ok()
        .flatten()
        .flatten()
}

/// Every appended event applied exactly once: one row per sequence, no more, and the counter agrees.
async fn assert_exactly_once(env: &TestEnv, events: i64) {
    let (rows, distinct, counter): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM it_counting.applied), (SELECT count(DISTINCT seq) FROM it_counting.applied), \
                (SELECT n FROM it_counting.counter)",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!((rows, distinct, counter), (events, events, events));
}

async fn append_users(env: &TestEnv, range: std::ops::Range<usize>) -> u64 {
    let store = env.events();
    let mut last = 0;
    for i in range {
        last = store.append_one(&fixtures::envelope(fixtures::user(i, "x")), Expected::NoStream).await.unwrap();
    }
    last
}

#[tokio::test]
async fn projection_sigkilled_mid_batch_applies_every_event_exactly_once() {
    let env = TestEnv::new().await.unwrap();
    let last = append_users(&env, 0..2000).await as i64;
    // Each batch sleeps inside its transaction, so most kills land with a batch open.
    for round in 0..4 {
        let mut child = worker(&env, &format!("w{round}"), 30);
        let start = position(&env).await.unwrap().unwrap_or(0);
        eventually(Duration::from_secs(30), "progress", || async {
            Ok(position(&env).await?.filter(|p| *p > start + 100).map(|_| ()))
        })
        .await
        .unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    assert!(position(&env).await.unwrap().unwrap() < last, "the kills must happen before the end");
    let mut child = worker(&env, "final", 0);
    eventually(Duration::from_secs(60), "catch-up", || async { Ok(position(&env).await?.filter(|p| *p == last)) })
        .await
        .unwrap();
    child.start_kill().unwrap();
    assert_exactly_once(&env, 2000).await;
}

#[tokio::test]
async fn of_two_runners_one_applies_and_the_other_takes_over_when_it_dies() {
    let env = TestEnv::new().await.unwrap();
    append_users(&env, 0..300).await;
    let mut a = worker(&env, "a", 5);
    let mut b = worker(&env, "b", 5);
    let first = eventually(Duration::from_secs(30), "a leader", || async { Ok(leader(&env).await) }).await.unwrap();
    let last = append_users(&env, 300..600).await as i64;
    eventually(Duration::from_secs(30), "catch-up", || async { Ok(position(&env).await?.filter(|p| *p == last)) })
        .await
        .unwrap();
    // Only one applied: exactly once despite two runners.
    assert_exactly_once(&env, 600).await;
    assert_eq!(leader(&env).await.as_deref(), Some(first.as_str()));

    let (dying, survivor) = if first == "a" { (&mut a, "b") } else { (&mut b, "a") };
    dying.start_kill().unwrap();
    dying.wait().await.unwrap();
    let killed_at = tokio::time::Instant::now();
    let last = append_users(&env, 600..700).await as i64;
    eventually(Duration::from_secs(10), "takeover", || async {
        Ok((leader(&env).await.as_deref() == Some(survivor)).then_some(()))
    })
    .await
    .unwrap();
    let takeover = killed_at.elapsed();
    assert!(takeover < Duration::from_secs(5), "takeover took {takeover:?}");
    eventually(Duration::from_secs(30), "catch-up after takeover", || async {
        Ok(position(&env).await?.filter(|p| *p == last))
    })
    .await
    .unwrap();
    assert_exactly_once(&env, 700).await;
}
