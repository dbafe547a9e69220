//! The projection runner against real NATS and PostgreSQL: read-your-writes, unknown types, halting,
//! operator skip/resume, status, blue/green rebuild.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use edd_events::{Envelope, Expected, Token};
use edd_it::{eventually, fixtures, TestEnv};
use edd_projections::{admin, rebuild, status, Projection, Runner, RunnerConfig};
use sqlx::Row;
use tokio::sync::oneshot;

fn fast() -> RunnerConfig {
    RunnerConfig {
        retries: 3,
        retry_backoff: Duration::from_millis(10),
        standby_poll: Duration::from_millis(50),
        halted_poll: Duration::from_millis(20),
        ..Default::default()
    }
}

/// Starts a runner in this process; dropping the sender stops it.
fn start(env: &TestEnv, p: Arc<dyn Projection>) -> (edd_projections::Handle, oneshot::Sender<()>) {
    let (runner, handle) = Runner::new(env.db.pool.clone(), env.js.clone(), p, fast());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(runner.run(async {
        let _ = rx.await;
    }));
    (handle, tx)
}

async fn users(env: &TestEnv, schema: &str) -> Vec<(String, String, String, bool, i64)> {
    sqlx::query(&format!(
        "SELECT user_id, username, display_name, is_admin, version FROM {schema}.users ORDER BY user_id"
    ))
    .fetch_all(&env.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

async fn status_of(env: &TestEnv, name: &str) -> edd_projections::Status {
    try_status(env, name).await.unwrap().expect("projection registered")
}

async fn try_status(env: &TestEnv, name: &str) -> anyhow::Result<Option<edd_projections::Status>> {
    let all = status::read(&env.db.pool, Some(&env.js), &|_| Some(vec!["auth.user.>".to_owned()])).await?;
    Ok(all.into_iter().find(|s| s.name == name))
}

/// Waits until the projection is halted and returns its status.
async fn halted(env: &TestEnv, name: &str) -> edd_projections::Status {
    eventually(Duration::from_secs(15), "halt", || async {
        Ok(try_status(env, name).await?.filter(|s| s.state == "halted"))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn wait_for_returns_after_apply_and_times_out_cleanly() {
    let env = TestEnv::new().await.unwrap();
    let (handle, _stop) = start(&env, Arc::new(fixtures::UsersProjection::new("it/users")));
    let seq = env.events().append_one(&fixtures::envelope(fixtures::user(1, "Ada")), Expected::NoStream).await.unwrap();
    handle.wait_for(seq, Duration::from_secs(10)).await.unwrap();
    // Read-your-writes: the row is there the moment wait_for returns.
    assert_eq!(users(&env, "it_users").await.len(), 1);

    let err = handle.wait_for(seq + 100, Duration::from_millis(100)).await.unwrap_err();
    assert!(err.to_string().contains(&format!("not {}", seq + 100)), "{err}");
}

#[tokio::test]
async fn unknown_event_types_are_skipped_and_counted() {
    let env = TestEnv::new().await.unwrap();
    let (handle, _stop) = start(&env, Arc::new(fixtures::UsersProjection::new("it/users")));
    let mut newer = serde_json::to_value(fixtures::envelope(fixtures::user(1, "v9"))).unwrap();
    newer["type"] = "auth.user.created.v9".into();
    env.js.publish("auth.user.u1.created", serde_json::to_vec(&newer).unwrap().into()).await.unwrap().await.unwrap();
    let seq = env.events().append_one(&fixtures::envelope(fixtures::user(2, "Bo")), Expected::NoStream).await.unwrap();
    handle.wait_for(seq, Duration::from_secs(10)).await.unwrap();
    let s = status_of(&env, "it/users").await;
    assert_eq!((s.skipped_unknown, s.applied, s.state.as_str(), s.lag), (1, 1, "running", Some(0)));
    assert_eq!(users(&env, "it_users").await.len(), 1);
}

#[tokio::test]
async fn poison_event_halts_until_skipped_and_the_skip_is_recorded() {
    let env = TestEnv::new().await.unwrap();
    let store = env.events();
    let projection = Arc::new(fixtures::UsersProjection::new("it/users"));
    let (handle, _stop) = start(&env, projection.clone());
    let good = store.append_one(&fixtures::envelope(fixtures::user(1, "Ada")), Expected::NoStream).await.unwrap();
    let bad = store.append_one(&fixtures::envelope(fixtures::user(2, "poison")), Expected::NoStream).await.unwrap();
    let after = store.append_one(&fixtures::envelope(fixtures::user(3, "Cy")), Expected::NoStream).await.unwrap();

    let halted = halted(&env, "it/users").await;
    assert_eq!(halted.failed_seq, Some(bad));
    assert_eq!(halted.position, good, "events before the poison are applied, nothing after");
    assert!(halted.failed_error.as_deref().unwrap().contains("poison"));
    let table = status::render_table(&[halted]);
    assert!(table.contains("HALTED") && table.contains(&format!("halted at seq {bad}")), "{table}");
    // The halt was raised as an alert event.
    let logs = env.js.get_stream("LOGS").await.unwrap();
    let alert = logs.get_last_raw_message_by_subject("log.error.projections").await.unwrap();
    assert!(String::from_utf8_lossy(&alert.payload).contains("it/users"));

    // Skipping needs the exact sequence and a reason.
    assert!(matches!(
        admin::skip(&env.db.pool, "it/users", after, "ops", "x").await,
        Err(admin::AdminError::WrongSeq { .. })
    ));
    assert!(matches!(
        admin::skip(&env.db.pool, "it/users", bad, "ops", " ").await,
        Err(admin::AdminError::MissingReason)
    ));
    admin::skip(&env.db.pool, "it/users", bad, "alice", "bad display name from old client").await.unwrap();
    handle.wait_for(after, Duration::from_secs(10)).await.unwrap();
    let ids: Vec<String> = users(&env, "it_users").await.into_iter().map(|u| u.0).collect();
    assert_eq!(ids, ["u1", "u3"]);
    let (actor, reason): (String, String) =
        sqlx::query_as("SELECT actor, reason FROM edd_projections.skips WHERE name = 'it/users' AND seq = $1")
            .bind(bad as i64)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!((actor.as_str(), reason.as_str()), ("alice", "bad display name from old client"));
    assert_eq!(status_of(&env, "it/users").await.operator_skips, 1);
}

#[tokio::test]
async fn halted_projection_resumes_once_fixed_and_messages_not_of_ours_are_quarantined() {
    let env = TestEnv::new().await.unwrap();
    let store = env.events();
    let projection = Arc::new(fixtures::UsersProjection::new("it/users"));
    let (handle, _stop) = start(&env, projection.clone());
    let bad = store.append_one(&fixtures::envelope(fixtures::user(1, "poison")), Expected::NoStream).await.unwrap();
    halted(&env, "it/users").await;
    projection.fixed.store(true, Ordering::SeqCst);
    admin::resume(&env.db.pool, "it/users").await.unwrap();
    handle.wait_for(bad, Duration::from_secs(10)).await.unwrap();
    assert_eq!(users(&env, "it_users").await[0].2, "poison");

    // Bytes that are not an envelope, an envelope from a component that does not own the subject,
    // and a payload that is not of its type: none is an event of ours. Each is quarantined (a dead
    // letter naming where it came from) and passed over; the projection never halts on them.
    let garbage = env.js.publish("auth.user.zz.created", "{not json".into()).await.unwrap().await.unwrap().sequence;
    let forged = Envelope::new("storage", fixtures::user(3, "forged"));
    let forged = env.js.publish("auth.user.u3.created", serde_json::to_vec(&forged).unwrap().into()).await.unwrap();
    let forged = forged.await.unwrap().sequence;
    let mut wrong = serde_json::to_value(fixtures::envelope(fixtures::user(4, "x"))).unwrap();
    wrong["data"] = serde_json::json!({"user_id": 4});
    let wrong = env.js.publish("auth.user.u4.created", serde_json::to_vec(&wrong).unwrap().into()).await.unwrap();
    let wrong = wrong.await.unwrap().sequence;
    let next = store.append_one(&fixtures::envelope(fixtures::user(2, "Bo")), Expected::NoStream).await.unwrap();
    handle.wait_for(next, Duration::from_secs(10)).await.unwrap();
    let names: Vec<String> = users(&env, "it_users").await.into_iter().map(|u| u.2).collect();
    assert_eq!(names, ["poison", "Bo"], "only our events are applied");
    let s = try_status(&env, "it/users").await.unwrap().unwrap();
    assert_eq!(s.state, "running");

    // The dead letters: the original sequence and why, for each of the three.
    let reasons = eventually(Duration::from_secs(10), "three dead letters", || async {
        let dead = env.js.get_stream("DEADLETTER").await?;
        let state = dead.cached_info().state.clone();
        let mut reasons = std::collections::BTreeMap::new();
        for n in state.first_sequence..=state.last_sequence {
            let Ok(m) = dead.get_raw_message(n).await else { continue };
            if m.subject.as_str() != "deadletter.it_users" {
                continue;
            }
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
            reasons.insert(header("Edd-Original-Sequence"), header("Edd-Error"));
        }
        Ok((reasons.len() >= 3).then_some(reasons))
    })
    .await
    .unwrap();
    for (seq, why) in [(garbage, "not a CloudEvents envelope"), (forged, "may not publish"), (wrong, "does not decode")]
    {
        let reason = reasons.get(&seq.to_string()).unwrap_or_else(|| panic!("no dead letter for {seq}: {reasons:?}"));
        assert!(reason.contains(why), "{seq}: {reason}");
    }
}

#[tokio::test]
async fn rebuild_equals_incremental_while_reads_and_writes_continue() {
    let env = TestEnv::new().await.unwrap();
    let store = env.events();
    let live = Arc::new(fixtures::UsersProjection::new("it/users"));
    let (handle, _stop) = start(&env, live.clone());
    let mut last = 0;
    for i in 0..300 {
        last = store
            .append_one(&fixtures::envelope(fixtures::user(i, &format!("n{i}"))), Expected::NoStream)
            .await
            .unwrap();
    }
    for i in (0..300).step_by(3) {
        let e = edd_events::catalog::auth::UserUpdated {
            user_id: Token::new(format!("u{i}")).unwrap(),
            username: format!("user{i}"),
            display_name: format!("renamed{i}"),
            is_admin: true,
        };
        last = store.append_one(&fixtures::envelope(e), Expected::Any).await.unwrap();
    }
    handle.wait_for(last, Duration::from_secs(20)).await.unwrap();
    let before = users(&env, "it_users").await;

    // Readers hammer the live table during the rebuild; every read must succeed and see a full table.
    let pool = env.db.pool.clone();
    let (stop_reads, mut stopped) = oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut reads = 0u64;
        loop {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM it_users.users").fetch_one(&pool).await.unwrap();
            assert!(n >= 300, "a reader saw {n} rows during the rebuild");
            reads += 1;
            if stopped.try_recv().is_ok() {
                return reads;
            }
        }
    });
    // …and writers keep appending.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 300..400 {
                last =
                    store.append_one(&fixtures::envelope(fixtures::user(i, "late")), Expected::NoStream).await.unwrap();
            }
            last
        })
    };
    let rebuilt = fixtures::UsersProjection::new("it/users");
    let mut updates = 0;
    let report = rebuild::rebuild(&env.db.pool, &env.js, &rebuilt, 200, &mut |_| updates += 1).await.unwrap();
    let last_write = writer.await.unwrap();
    let _ = stop_reads.send(());
    let reads = reader.await.unwrap();
    assert!(reads > 0 && updates > 0);
    assert!(report.events >= 400);

    handle.wait_for(last_write, Duration::from_secs(20)).await.unwrap();
    let after = users(&env, "it_users").await;
    assert_eq!(after.len(), 400);
    assert_eq!(
        &after[..],
        &{
            // The rebuilt table holds what the incremental one held, plus the late writes.
            let mut expected = before.clone();
            let late: Vec<_> = after.iter().filter(|u| u.2 == "late").cloned().collect();
            expected.extend(late);
            expected.sort();
            expected
        }[..]
    );

    // A second, purely incremental projection of the same stream agrees row for row.
    let (h2, _stop2) = start(&env, Arc::new(fixtures::UsersProjection::new("it/users-incremental")));
    h2.wait_for(last_write, Duration::from_secs(20)).await.unwrap();
    assert_eq!(users(&env, "it_users_incremental").await, after);
}
