//! The notification service's durability: its projections rebuilt from the log give the same rows,
//! a crash mid-publish loses and repeats nothing, a deleted user's inbox is emptied.

use std::{collections::BTreeSet, time::Duration};

use edd_it::{eventually, services::notify_config, World};
use edd_notify::NotifyConfig;
use serde_json::json;

use super::notify::{ids, world, world_with, Notify as _, WAIT};

#[tokio::test]
async fn notify_projections_rebuild_to_the_same_rows() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let (bob, bob_session) = w.user("bob").await;
    let (mut last_ada, mut last_bob) = (0, 0);
    for i in 0..30 {
        let scope = format!("s{}", i % 4);
        if i % 3 == 0 {
            last_bob = w.publish(&bob, &format!("n{i}"), "auth", Some(&scope)).await;
        } else {
            last_ada = w.publish(&ada, &format!("n{i}"), "storage", Some(&scope)).await;
        }
    }
    w.listed(&session, last_ada).await;
    w.listed(&bob_session, last_bob).await;
    let list = w.list(&session, "").await;
    let some = ids(&list)[3];
    w.api.post(&format!("/api/notifications/{some}/read"), &session, json!({})).await.unwrap();
    w.api.post("/api/notifications/read-all", &bob_session, json!({})).await.unwrap();
    w.api.put("/api/notifications/mutes", &session, json!({"category": "storage", "scope": "s1"})).await.unwrap();
    w.api.put("/api/notifications/mutes", &session, json!({"category": "auth"})).await.unwrap();
    w.api.delete("/api/notifications/mutes?category=auth", &session).await.unwrap();
    w.api.put("/api/notifications/mutes", &bob_session, json!({"category": "auth", "scope": "s0"})).await.unwrap();
    let before = (snapshot(&w).await, w.list(&session, "?limit=200").await, w.list(&bob_session, "").await);
    assert!(!before.0.is_empty());

    let pool = &w.notify().db().pool;
    for projection in edd_notify::projections() {
        if projection.name() == "notify/permissions" {
            continue;
        }
        let report =
            edd_projections::rebuild::rebuild(pool, &w.env.js, projection.as_ref(), 7, &mut |_| {}).await.unwrap();
        assert!(report.events > 0, "{}", projection.name());
    }
    let after = (snapshot(&w).await, w.list(&session, "?limit=200").await, w.list(&bob_session, "").await);
    assert_eq!(before, after);
}

/// Every row of both projections, as text, in a stable order.
async fn snapshot(w: &World) -> Vec<String> {
    let mut rows = Vec::new();
    for query in [
        "SELECT row_to_json(t)::text FROM (SELECT * FROM notify_inbox.notifications ORDER BY id) t",
        "SELECT row_to_json(t)::text FROM (SELECT * FROM notify_state.read_marks ORDER BY user_id, id) t",
        "SELECT row_to_json(t)::text FROM (SELECT * FROM notify_state.watermarks ORDER BY user_id) t",
        "SELECT row_to_json(t)::text FROM (SELECT * FROM notify_state.mutes ORDER BY user_id, category, scope) t",
        "SELECT row_to_json(t)::text FROM (SELECT * FROM notify_state.mute_changes ORDER BY user_id) t",
    ] {
        let part: Vec<String> = sqlx::query_scalar(query).fetch_all(&w.notify().db().pool).await.unwrap();
        rows.push(format!("-- {}", part.len()));
        rows.extend(part);
    }
    rows
}

/// The service is killed while notifications are being published and started again on the same
/// database: every published notification is in the inbox exactly once.
#[tokio::test]
async fn a_crash_mid_publish_loses_and_repeats_nothing() {
    let mut w = world().await;
    let (ada, session) = w.user("ada").await;
    const COUNT: usize = 600;
    let (tx, mut progress) = tokio::sync::watch::channel(0usize);
    let env_js = w.env.js.clone();
    let user = ada.clone();
    let publisher = tokio::spawn(async move {
        let events = edd_events::EventStore::new(env_js);
        let mut ids = Vec::with_capacity(COUNT);
        for i in 0..COUNT {
            let note = edd_events::catalog::notify::Notification {
                user_id: edd_events::Token::new(user.clone()).unwrap(),
                title: format!("n{i}"),
                message: "m".into(),
                link: None,
                category: "storage".into(),
                scope: None,
            };
            ids.push(events.publish(&edd_events::Envelope::new("storage", note)).await.unwrap());
            tx.send_replace(i + 1);
        }
        ids
    });
    progress.wait_for(|n| *n >= COUNT / 4).await.unwrap();
    w.notify_mut().kill().await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM notify_inbox.notifications")
        .fetch_one(&w.notify().db().pool)
        .await
        .unwrap_or(0);
    progress.wait_for(|n| *n >= COUNT / 2).await.unwrap();
    w.notify_mut().restart().await.unwrap();
    let published: BTreeSet<u64> = publisher.await.unwrap().into_iter().collect();
    assert_eq!(published.len(), COUNT);
    assert!((applied as usize) < COUNT, "the kill came before the end ({applied} applied)");

    eventually(Duration::from_secs(30), "every notification in the inbox", || async {
        Ok((w.unread(&session).await == COUNT as i64).then_some(()))
    })
    .await
    .unwrap();
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, count(*) OVER (PARTITION BY title) FROM notify_inbox.notifications ORDER BY id")
            .fetch_all(&w.notify().db().pool)
            .await
            .unwrap();
    let stored: BTreeSet<u64> = rows.iter().map(|(id, _)| *id as u64).collect();
    assert_eq!(stored, published, "exactly the published ids");
    assert!(rows.iter().all(|(_, copies)| *copies == 1), "no notification twice");
    let mut listed = BTreeSet::new();
    for offset in (0..COUNT).step_by(200) {
        listed.extend(ids(&w.list(&session, &format!("?limit=200&offset={offset}")).await));
    }
    assert_eq!(listed, published, "and the API lists each once");
}

#[tokio::test]
async fn a_deleted_users_inbox_is_emptied() {
    let w = world_with(NotifyConfig { retention_sweep_secs: 1, ..notify_config() }).await;
    let (gone, token) = w.user("gone").await;
    let (kept, kept_token) = w.user("kept").await;
    let first = w.publish(&gone, "one", "test", None).await;
    w.publish(&gone, "two", "test", None).await;
    let other = w.publish(&kept, "mine", "test", None).await;
    w.listed(&token, first).await;
    w.listed(&kept_token, other).await;

    let a = w.auth.delete(&format!("/admin/users/{gone}"), &w.admin).await.unwrap();
    assert!(a.status.is_success(), "{:?}", a.body);
    let count = |user: String| {
        let pool = w.notify().db().pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notify_inbox.notifications WHERE user_id = $1")
                .bind(user)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    eventually(WAIT, "the deleted user's notifications to go", || async {
        Ok((count(gone.clone()).await == 0).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(count(kept.clone()).await, 1, "another user's inbox is untouched");
}
