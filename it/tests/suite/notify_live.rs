//! Live connections to the notification service: per-user limits and allowed origins, a slow client
//! dropped rather than buffered, pings that find dead clients, revocations that end connections.

use edd_it::{
    eventually,
    services::{notify_config, publish_notification},
};
use edd_notify::NotifyConfig;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::notify::{world, world_with, ws_connect, Notify as _, WAIT};

#[tokio::test]
async fn live_connections_are_limited_per_user_and_checked_for_origin() {
    let w = world().await;
    let (_, session) = w.user("ada").await;
    let (_, bob) = w.user("bob").await;

    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(w.ws(Some(&session), Some("http://cloud.localhost:18080")).await.unwrap());
    }
    let _sse1 = w.sse(Some(&session), None).await.unwrap();
    let _sse2 = w.sse(Some(&session), Some("https://localhost")).await.unwrap();
    assert_eq!(w.ws(Some(&session), None).await.err(), Some(429), "a 6th WebSocket");
    assert_eq!(w.sse(Some(&session), None).await.err(), Some(429), "a 6th SSE stream");
    let refused = w.api.call("GET", "/ws/notifications", Some(&session), None).await.unwrap();
    assert!(refused.status.is_client_error());
    // Another user has their own allowance.
    let _bobs = w.ws(Some(&bob), None).await.unwrap();

    // Close one: a new one is accepted once the service has seen it go.
    let mut closing = sockets.pop().unwrap();
    closing.close(None).await.unwrap();
    drop(closing);
    let again = eventually(WAIT, "a freed slot", || async { Ok(w.ws(Some(&session), None).await.ok()) }).await.unwrap();
    sockets.push(again);

    // Origins that are not the platform's are refused, whatever the credential.
    let (_, carol) = w.user("carol").await;
    for origin in ["https://evil.example", "http://localhost.evil.example", "null"] {
        assert_eq!(w.ws(Some(&carol), Some(origin)).await.err(), Some(403), "{origin}");
        assert_eq!(w.sse(Some(&carol), Some(origin)).await.err(), Some(403), "{origin}");
    }
    assert!(w.ws(Some(&carol), Some("http://notifications.localhost")).await.is_ok());
}

/// A WebSocket that never reads, while notifications keep coming: its queue fills and the service
/// drops it, instead of buffering for it; a healthy socket of the same user gets every one.
#[tokio::test]
async fn a_slow_client_is_dropped_not_buffered() {
    let w = world_with(NotifyConfig { send_queue: 256, ..notify_config() }).await;
    let (ada, session) = w.user("ada").await;
    // A small receive buffer, so the stall reaches the service quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = w.gateway().url.trim_start_matches("http://").parse().unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut slow = ws_connect(&w.gateway().url, Some(&session), None, Some(stream)).await.unwrap();
    let mut healthy = w.ws(Some(&session), None).await.unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = healthy.next().await {
            if let Message::Text(text) = message {
                let v: Value = serde_json::from_str(&text).unwrap();
                if seen_tx.send(v["id"].as_u64().unwrap()).is_err() {
                    return;
                }
            }
        }
    });

    let body = "x".repeat(4000);
    let mut published = Vec::new();
    let dropped = "notify_slow_clients_dropped_total";
    while w.metric(dropped).await < 1.0 {
        assert!(published.len() < 20_000, "the slow client was never dropped");
        for _ in 0..100 {
            let id = publish_notification(&w.env, &ada, "big", &body, "storage", None).await.unwrap();
            published.push(id);
        }
    }
    let last = *published.last().unwrap();
    assert_eq!(w.metric(dropped).await, 1.0, "only the slow one");
    let live = eventually(WAIT, "the service to count one connection", || async {
        let n = w.metric("notify_live_connections").await;
        Ok((n == 1.0).then_some(n))
    })
    .await
    .unwrap();
    assert_eq!(live, 1.0);

    // The slow client, reading at last, gets what was in flight and then the end of the connection.
    let mut got = 0usize;
    let ended = loop {
        match tokio::time::timeout(WAIT, slow.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => got += 1,
            Ok(Some(Ok(Message::Close(frame)))) => break format!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => break format!("error: {e}"),
            Ok(None) => break "end of stream".to_owned(),
            Err(_) => panic!("the slow connection is still open after {got} messages"),
        }
    };
    assert!(got < published.len(), "the slow client got {got} of {} ({ended})", published.len());

    // The healthy one got every notification, in order.
    let mut received = Vec::new();
    while received.last() != Some(&last) {
        let id = tokio::time::timeout(WAIT, seen.recv()).await.expect("the healthy socket keeps up").unwrap();
        received.push(id);
    }
    assert_eq!(received, published);
    reader.abort();
}

/// Pings find dead clients (one that answers none is closed after two intervals) and a revoked
/// credential ends its live connections, while a client that reads stays connected.
#[tokio::test]
async fn pings_and_revocations_end_live_connections() {
    let w = world_with(NotifyConfig { ping_interval_secs: 1, ..notify_config() }).await;
    let (ada, session) = w.user("ada").await;
    let created = w
        .auth
        .post("/api/tokens", &session, json!({"name": "live", "scopes": { format!("notifications.{ada}"): ["read"] }}))
        .await
        .unwrap();
    let token = created.body["token"].as_str().unwrap().to_owned();
    let token_id = created.body["id"].as_str().unwrap().to_owned();
    w.accepted(&token).await;

    // A reader that answers pings (the client library does, as long as it reads).
    let mut alive = w.ws(Some(&session), None).await.unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = alive.next().await {
            if let Message::Text(text) = message {
                let _ = seen_tx.send(serde_json::from_str::<Value>(&text).unwrap());
            }
        }
    });
    let mut deaf = w.ws(Some(&session), None).await.unwrap();
    let mut revoked = w.ws(Some(&token), None).await.unwrap();
    // It reads (so it answers pings) until it is closed, and reports the close code.
    let revoked = tokio::spawn(async move {
        loop {
            match revoked.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return Some(u16::from(frame.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    });

    eventually(WAIT, "the deaf client to be closed", || async {
        Ok((w.metric("notify_ping_timeouts_total").await >= 1.0).then_some(()))
    })
    .await
    .unwrap();
    let a = w.auth.delete(&format!("/api/tokens/{token_id}"), &session).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    // The revoked token's socket is closed with a policy code, pings and all.
    let code = tokio::time::timeout(WAIT, revoked).await.expect("closed in time").unwrap();
    assert_eq!(code, Some(1008));
    assert_eq!(w.metric("notify_connections_revoked_total").await, 1.0);
    assert_eq!(w.metric("notify_ping_timeouts_total").await, 1.0, "only the deaf one missed pings");
    // The deaf one's connection ends (after what was in flight: a few pings and the close).
    loop {
        match tokio::time::timeout(WAIT, deaf.next()).await.expect("ended in time") {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    // The reading client is still there and still gets notifications.
    let id = w.publish(&ada, "still here", "storage", None).await;
    let got = tokio::time::timeout(WAIT, seen.recv()).await.unwrap().unwrap();
    assert_eq!(got["id"], id);
    assert_eq!(w.metric("notify_live_connections").await, 1.0);
    reader.abort();
}
