//! The event store against a real nats-server: concurrency, claims, de-duplication, streams, reactors.

use std::{sync::atomic::Ordering, time::Duration};

use edd_events::{
    catalog::auth::{UserCreated, UserUpdated},
    consume::{Outcome, Reactor, ReactorConfig},
    store::{AppendError, Outgoing},
    Envelope, Event, Expected, Token,
};
use edd_it::{eventually, fixtures, TestEnv};
use futures_util::future::join_all;

#[tokio::test]
async fn racing_writers_on_one_aggregate_exactly_one_wins() {
    let env = TestEnv::new().await.unwrap();
    let store = env.events();
    let created = fixtures::envelope(fixtures::user(1, "Ada"));
    let seq = store.append_one(&created, Expected::NoStream).await.unwrap();

    // Both writers saw `seq` and both try to update.
    let update = |name: &str| {
        let e = UserUpdated {
            user_id: Token::new("u1").unwrap(),
            username: "user1".into(),
            display_name: name.into(),
            is_admin: false,
        };
        fixtures::envelope(e)
    };
    let (a, b) = (update("A"), update("B"));
    let (ra, rb) =
        tokio::join!(store.append_one(&a, Expected::Exactly(seq)), store.append_one(&b, Expected::Exactly(seq)));
    let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{ra:?} {rb:?}");
    let loser = if ra.is_err() { ra } else { rb };
    assert!(matches!(loser, Err(AppendError::Conflict { .. })), "{loser:?}");

    // A stale expectation conflicts; NoStream on an existing aggregate conflicts.
    let again = store.append_one(&update("C"), Expected::Exactly(seq)).await;
    assert!(matches!(again, Err(AppendError::Conflict { .. })));
    let dup = store.append_one(&fixtures::envelope(fixtures::user(1, "Other")), Expected::NoStream).await;
    assert!(matches!(dup, Err(AppendError::Conflict { .. })));
    // Another aggregate is unaffected by this one's sequence.
    store.append_one(&fixtures::envelope(fixtures::user(2, "Bo")), Expected::NoStream).await.unwrap();
}

#[tokio::test]
async fn hundred_racing_claims_on_one_username_one_wins() {
    let env = TestEnv::new().await.unwrap();
    let store = env.events();
    let kind = Token::new("username").unwrap();
    let claims = (0..100).map(|i| {
        let store = store.clone();
        let kind = kind.clone();
        // Different spellings of one name: claims are case-insensitive.
        let value = if i % 2 == 0 { "Ada" } else { "ada" };
        async move { store.claim("auth", &kind, value, &format!("owner{i}")).await }
    });
    let results = join_all(claims).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1);
    assert!(results.iter().filter(|r| r.is_err()).all(|r| matches!(r, Err(AppendError::Conflict { .. }))));

    // Released, it can be claimed again — once.
    let winner = results.iter().position(|r| r.is_ok()).unwrap();
    store.release("auth", &kind, "ada", &format!("owner{winner}")).await.unwrap();
    assert!(store.claim("auth", &kind, "ADA", "newcomer").await.is_ok());
    assert!(matches!(store.claim("auth", &kind, "ada", "late").await, Err(AppendError::Conflict { .. })));
}

/// A message that is not an event of ours on a claim's subjects says nothing about the claim: on a
/// free value it does not take it, after a claim it does not free it, and neither blocks the next
/// claim or release.
#[tokio::test]
async fn garbage_on_a_claim_neither_takes_nor_frees_it() {
    let env = TestEnv::new().await.unwrap();
    let store = env.events();
    let kind = Token::new("username").unwrap();
    let made = |value: &str| edd_events::catalog::auth::ClaimMade {
        kind: kind.clone(),
        value: value.into(),
        owner: String::new(),
    };
    let garbage = |value: &str| {
        let subject = made(value).subject().to_string();
        let js = env.js.clone();
        async move {
            js.publish(subject.clone(), "garbage".into()).await.unwrap().await.unwrap();
            // And an event "from" a component that may not publish claims.
            let forged = serde_json::to_vec(&Envelope::new("storage", made("x"))).unwrap();
            js.publish(subject, forged.into()).await.unwrap().await.unwrap();
        }
    };

    // Garbage first: the value is still free, and claimed once.
    garbage("grace").await;
    assert_eq!(store.claim_holder(&kind, "grace").await.unwrap(), None);
    store.claim("auth", &kind, "grace", "owner1").await.unwrap();
    assert!(matches!(store.claim("auth", &kind, "Grace", "owner2").await, Err(AppendError::Conflict { .. })));

    // Garbage after the claim: still held by its owner, still taken.
    garbage("grace").await;
    let holder = store.claim_holder(&kind, "grace").await.unwrap().expect("the claim is held");
    assert_eq!(holder.owner, "owner1");
    assert!(matches!(store.claim("auth", &kind, "grace", "owner2").await, Err(AppendError::Conflict { .. })));
    // Released as it stands (the garbage after it is no change): free again, and garbage after the
    // release does not take it.
    store.release_stale("auth", &kind, "grace", &holder).await.unwrap();
    garbage("grace").await;
    assert_eq!(store.claim_holder(&kind, "grace").await.unwrap(), None);
    store.claim("auth", &kind, "grace", "owner3").await.unwrap();
    assert_eq!(store.claim_holder(&kind, "grace").await.unwrap().unwrap().owner, "owner3");
}

#[tokio::test]
async fn retried_publish_with_same_id_is_stored_once() {
    let env = TestEnv::new().await.unwrap();
    let store = env.events();
    let env_ = fixtures::envelope(fixtures::user(5, "Eve"));
    let out = Outgoing::encode(&env_).unwrap();
    let agg = env_.data.aggregate().unwrap();
    let first = store.append(&agg, Expected::NoStream, std::slice::from_ref(&out)).await.unwrap();
    // The same bytes again, as a client would after losing the ack: same sequence, nothing new stored,
    // even though the expectation (no stream) no longer holds.
    let second = store.append(&agg, Expected::NoStream, std::slice::from_ref(&out)).await.unwrap();
    assert_eq!(first, second);
    let head = edd_events::consume::stream_head(&env.js, "AUTH").await.unwrap();
    assert_eq!(head, first.last_seq);
}

#[tokio::test]
async fn appends_survive_a_nats_restart_without_duplicates() {
    let mut env = TestEnv::new().await.unwrap();
    let store = env.events();
    for i in 0..20 {
        store.append_one(&fixtures::envelope(fixtures::user(i, "x")), Expected::NoStream).await.unwrap();
    }
    env.nats.restart().await.unwrap();
    // The client reconnects by itself; appends resume and the log holds every acknowledged event once.
    for i in 20..40 {
        store.append_one(&fixtures::envelope(fixtures::user(i, "x")), Expected::NoStream).await.unwrap();
    }
    let head = edd_events::consume::stream_head(&env.js, "AUTH").await.unwrap();
    assert_eq!(head, 40);
}

#[tokio::test]
async fn multi_event_appends_are_contiguous_and_checked() {
    let env = TestEnv::new().await.unwrap();
    let store = env.events();
    let created = fixtures::envelope(fixtures::user(9, "Ann"));
    let agg = created.data.aggregate().unwrap();
    let upd = fixtures::envelope(UserUpdated {
        user_id: Token::new("u9").unwrap(),
        username: "user9".into(),
        display_name: "Ann B".into(),
        is_admin: false,
    });
    let out = [Outgoing::encode(&created).unwrap(), Outgoing::encode(&upd).unwrap()];
    let appended = store.append(&agg, Expected::NoStream, &out).await.unwrap();
    assert_eq!(appended.last_seq, appended.first_seq + 1);
    // An event of another aggregate cannot ride along.
    let stray = Outgoing::encode(&fixtures::envelope(fixtures::user(10, "x"))).unwrap();
    let err = store.append(&agg, Expected::Any, &[stray]).await.unwrap_err();
    assert!(matches!(err, AppendError::NotInAggregate { .. }));
}

#[tokio::test]
async fn source_of_truth_streams_refuse_delete_and_purge_and_ensure_is_idempotent() {
    let env = TestEnv::new().await.unwrap();
    edd_events::streams::ensure_streams(&env.js, edd_events::streams::ALL, 1).await.unwrap();
    let seq = env.events().append_one(&fixtures::envelope(fixtures::user(1, "a")), Expected::NoStream).await.unwrap();
    let stream = env.js.get_stream("AUTH").await.unwrap();
    assert!(stream.delete_message(seq).await.is_err(), "delete must be denied");
    assert!(stream.purge().await.is_err(), "purge must be denied");
    assert_eq!(edd_events::consume::stream_head(&env.js, "AUTH").await.unwrap(), seq);
}

#[tokio::test]
async fn oversize_events_are_refused_before_sending() {
    let big = fixtures::user(1, &"x".repeat(2 * 1024 * 1024));
    let err = Outgoing::encode(&Envelope::new("it", big)).unwrap_err();
    assert!(matches!(err, AppendError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn reactor_retries_dead_letters_and_skips_unknown_types() {
    let env = TestEnv::new().await.unwrap();
    let store = env.events();
    store.append_one(&fixtures::envelope(fixtures::user(1, "ok")), Expected::NoStream).await.unwrap();
    store.append_one(&fixtures::envelope(fixtures::user(2, "poison")), Expected::NoStream).await.unwrap();
    // A newer version this reactor doesn't know.
    let mut future = serde_json::to_value(fixtures::envelope(fixtures::user(3, "v9"))).unwrap();
    future["type"] = "auth.user.created.v9".into();
    env.js.publish("auth.user.u3.created", serde_json::to_vec(&future).unwrap().into()).await.unwrap().await.unwrap();

    let mut config = ReactorConfig::new("AUTH", "it-reactor", &["auth.user.>"]);
    config.max_deliver = 3;
    config.backoff = vec![Duration::from_millis(20)];
    let reactor = Reactor::new(env.js.clone(), config);
    let stats = reactor.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(reactor.run(
        |event| async move {
            if !event.is::<UserCreated>() {
                return Ok(Outcome::Skipped);
            }
            let user: UserCreated = event.decode().map_err(|e| e.to_string())?;
            if user.display_name == "poison" {
                return Err("cannot handle poison".into());
            }
            Ok(Outcome::Handled)
        },
        async {
            let _ = stop_rx.await;
        },
    ));

    eventually(Duration::from_secs(10), "dead letter", || async {
        Ok((stats.dead_lettered.load(Ordering::SeqCst) == 1).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(stats.handled.load(Ordering::SeqCst), 1);
    assert_eq!(stats.skipped.load(Ordering::SeqCst), 1);
    assert_eq!(stats.retried.load(Ordering::SeqCst), 2);

    let dl = env.js.get_stream("DEADLETTER").await.unwrap();
    let msg = dl.get_last_raw_message_by_subject("deadletter.it-reactor").await.unwrap();
    assert_eq!(msg.headers.get("Edd-Original-Subject").unwrap().as_str(), "auth.user.u2.created");
    assert!(msg.headers.get("Edd-Error").unwrap().as_str().contains("poison"));
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}
