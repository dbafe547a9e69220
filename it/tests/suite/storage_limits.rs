//! Storage's limits, answered with problem details: the upload size limit (announced or streamed),
//! the quota (with uploads racing for its last bytes), bad names and paths, and refusals storage
//! gives before reading a body reaching the client through the gateway as they are.

use std::time::Duration;

use bytes::Bytes;
use edd_it::eventually;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::json;

use super::storage::{storage_world, Storage as _, MIB};

#[tokio::test]
async fn quotas_and_size_limits_are_enforced_with_problem_details() {
    let w = storage_world(&[
        ("EDD_STORAGE_QUOTA_BYTES", MIB.to_string()),
        ("EDD_STORAGE_MAX_UPLOAD_BYTES", (512 * 1024).to_string()),
    ])
    .await;
    let (_, token) = w.user("carol").await;
    w.create_namespace(&token, "q", "private").await;

    // Announced too large: refused before a byte is stored.
    let (status, problem) = w.upload(&token, "/storage/q/big", vec![0u8; 600 * 1024]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert_eq!(problem["max_upload_bytes"], 512 * 1024);
    // Streamed without a length: cut off once past the limit.
    let stream =
        futures_util::stream::iter((0..6).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 100 * 1024]))));
    let (status, _) = w.upload(&token, "/storage/q/streamed", reqwest::Body::wrap_stream(stream)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Three uploads at once, each fitting what was free when it started: together they do not fit,
    // and exactly one is refused (each finished upload is checked against the others already in).
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(3));
    let mut racing = Vec::new();
    for i in 0..3u8 {
        let gate = gate.clone();
        let pieces = futures_util::stream::iter(0..2).then(move |half| {
            let gate = gate.clone();
            async move {
                if half == 1 {
                    gate.wait().await;
                }
                Ok::<_, std::io::Error>(Bytes::from(vec![i; 200 * 1024]))
            }
        });
        let req = w.request(reqwest::Method::POST, &format!("/storage/q/race-{i}"), Some(&token));
        racing.push(tokio::spawn(async move {
            req.body(reqwest::Body::wrap_stream(pieces)).send().await.map(|r| r.status())
        }));
    }
    let mut outcomes = Vec::new();
    for r in racing {
        outcomes.push(r.await.unwrap().unwrap());
    }
    outcomes.sort();
    assert_eq!(outcomes, [StatusCode::CREATED, StatusCode::CREATED, StatusCode::INSUFFICIENT_STORAGE]);
    assert_eq!(w.api.get("/storage/usage", &token).await.unwrap().body["bytes"], 800 * 1024);
    for i in 0..3 {
        let _ = w.api.delete(&format!("/storage/q/race-{i}"), &token).await.unwrap();
    }

    // The quota: two files fit, the third does not.
    for name in ["a", "b"] {
        assert_eq!(w.upload(&token, &format!("/storage/q/{name}"), vec![2u8; 400 * 1024]).await.0, StatusCode::CREATED);
    }
    let (status, problem) = w.upload(&token, "/storage/q/c", vec![3u8; 400 * 1024]).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{problem}");
    assert_eq!(problem["title"], "Quota exceeded");
    assert_eq!(problem["quota_bytes"], MIB);
    let usage = w.api.get("/storage/usage", &token).await.unwrap();
    assert_eq!(usage.body["bytes"], 800 * 1024);
    // Replacing a file counts its new size, not both.
    assert_eq!(w.upload(&token, "/storage/q/a?overwrite=true", vec![4u8; 500 * 1024]).await.0, StatusCode::OK);
    // Refused uploads left nothing in GFS.
    eventually(Duration::from_secs(10), "refused uploads' blobs to be gone", || async {
        Ok((w.blobs().await.len() == 2).then_some(()))
    })
    .await
    .unwrap();

    // Bad names and paths are 400s.
    for bad in ["a b", "a.b", "upload"] {
        let a = w.api.post("/storage/namespaces", &token, json!({"name": bad})).await.unwrap();
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // (`..` segments never get here: clients and the gateway resolve them.)
    assert_eq!(w.upload(&token, "/storage/q/a//b", "x").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(w.upload(&token, "/storage/q/a%0Ab", "x").await.0, StatusCode::BAD_REQUEST);
}

/// An upstream's early answer reaches the client: uploads storage refuses before reading their
/// bodies — a 429 from the per-user upload limit, a 413 for an announced size past the limit, a 401
/// without a credential — come back through the gateway as storage's problem, never as a 502.
#[tokio::test]
async fn early_answers_reach_the_client_through_the_gateway() {
    let w = storage_world(&[("EDD_STORAGE_MAX_UPLOAD_BYTES", (8 * MIB).to_string())]).await;
    let (_, token) = w.user("erin").await;
    w.create_namespace(&token, "e", "private").await;
    let answer = |resp: reqwest::Response| async move {
        let status = resp.status();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        (status, content_type, body)
    };

    // 48 uploads of one user, 16 at a time: storage runs 4 of them at once and refuses the others
    // as soon as it has their heads.
    let answers: Vec<_> = futures_util::stream::iter(0..48u8)
        .map(|i| {
            let req = w.request(reqwest::Method::POST, &format!("/storage/e/f-{i}"), Some(&token));
            async move { answer(req.body(vec![i; 4 * MIB]).send().await.expect("an answer")).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut refused = 0;
    for (status, content_type, body) in &answers {
        if status.is_success() {
            continue;
        }
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(content_type.starts_with("application/problem+json"), "{content_type}");
        assert_eq!(body["status"], 429, "{body}");
        refused += 1;
    }
    assert!(refused > 0, "no upload was refused: the test tested nothing");

    // Announced past the upload limit, and without a credential: refused before a byte is read.
    for _ in 0..8 {
        let req = w.request(reqwest::Method::POST, "/storage/e/big", Some(&token));
        let (status, _, body) = answer(req.body(vec![0u8; 16 * MIB]).send().await.expect("an answer")).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["max_upload_bytes"], 8 * MIB, "not storage's answer: {body}");
        let req = w.request(reqwest::Method::POST, "/storage/e/anonymous", None);
        let (status, content_type, body) = answer(req.body(vec![0u8; 16 * MIB]).send().await.expect("an answer")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(content_type.starts_with("application/problem+json"), "{content_type}");
    }
}
