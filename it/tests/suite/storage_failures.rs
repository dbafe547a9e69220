//! Uploads that do not go as planned: the client disconnects midway, the storage service is
//! SIGKILLed mid-upload (nothing acknowledged is lost, nothing half-written stays), a chunkserver dies
//! under a big upload.

use std::time::Duration;

use bytes::Bytes;
use edd_it::{eventually, World};
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use ring::digest::{Context, SHA256};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use super::storage::{big_body, body_bytes, hex, piece, sha256, storage_world, Storage as _, MIB};

#[tokio::test]
async fn an_upload_cut_off_midway_or_killed_with_the_service_leaves_nothing_behind() {
    let mut w = storage_world(&[("EDD_STORAGE_SWEEP_GRACE_SECS", "3".to_owned())]).await;
    let (_, token) = w.user("dave").await;
    w.create_namespace(&token, "cut", "private").await;
    assert_eq!(w.upload(&token, "/storage/cut/kept.bin", piece(1, 0, MIB)).await.0, StatusCode::CREATED);
    let baseline = w.chunks().await;

    // The client disconnects after 3 of 10 announced MiB.
    let addr = w.gateway().url.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /storage/cut/partial.bin HTTP/1.1\r\nhost: storage.localhost\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
        10 * MIB
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for i in 0..3 {
        conn.write_all(&piece(2, i, MIB)).await.unwrap();
    }
    conn.flush().await.unwrap();
    eventually(Duration::from_secs(20), "the partial upload's blob to exist", || async {
        Ok((w.blobs().await.len() == 2).then_some(()))
    })
    .await
    .unwrap();
    drop(conn);
    eventually(Duration::from_secs(20), "the partial upload's blob to be deleted", || async {
        Ok((w.blobs().await.len() == 1).then_some(()))
    })
    .await
    .unwrap();
    let listed = w.api.get("/storage/files?namespace=cut", &token).await.unwrap();
    assert_eq!(listed.body["files"].as_array().unwrap().len(), 1, "{:?}", listed.body);

    // The service itself is SIGKILLed mid-upload: nothing acknowledged is lost, and the restarted
    // service sweeps the partial blob.
    let uploading = {
        let (body, _) = big_body(3, 64);
        let req = w.request(reqwest::Method::POST, "/storage/cut/doomed.bin", Some(&token)).body(body);
        tokio::spawn(async move { req.send().await.map(|r| r.status()) })
    };
    eventually(Duration::from_secs(20), "the doomed upload to reach GFS", || async {
        Ok((w.blobs().await.len() == 2).then_some(()))
    })
    .await
    .unwrap();
    w.storage_mut().kill().await.unwrap();
    let outcome = uploading.await.unwrap();
    assert!(
        outcome.as_ref().map_or(true, |s| !s.is_success()),
        "an upload whose service died was acknowledged: {outcome:?}"
    );
    w.storage_mut().restart().await.unwrap();
    eventually(Duration::from_secs(30), "the orphaned blob to be swept", || async {
        Ok((w.blobs().await.len() == 1).then_some(()))
    })
    .await
    .unwrap();
    let listed = w.api.get("/storage/files?namespace=cut", &token).await.unwrap();
    let files = listed.body["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{:?}", listed.body);
    assert_eq!(files[0]["path"], "kept.bin");
    assert_eq!(files[0]["sha256"], sha256(&piece(1, 0, MIB)));
    let resp = w.get("/storage/cut/kept.bin", Some(&token), &[]).await;
    assert_eq!(body_bytes(resp).await, piece(1, 0, MIB));
    eventually(Duration::from_secs(30), "GFS to drop the swept chunks", || async {
        Ok((w.chunks().await <= baseline).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_upload_survives_a_chunkserver_killed_midway() {
    let mut w = World::builder().storage(&[]).chunkservers(4).gateway().start().await;
    let (_, token) = w.user("ivy").await;
    w.create_namespace(&token, "ivy", "private").await;

    // 160 MiB, held after the first 48 until a chunkserver is dead.
    let (reached, mut reached_rx) = tokio::sync::mpsc::channel::<()>(1);
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let mut digest = Context::new(&SHA256);
    for i in 0..160 {
        digest.update(&piece(11, i, MIB));
    }
    let digest = hex(digest.finish().as_ref());
    let pieces = futures_util::stream::iter(0..160u64).then(move |i| {
        let (reached, gate) = (reached.clone(), gate.clone());
        async move {
            if i == 48 {
                let _ = reached.send(()).await;
                gate.notified().await;
            }
            Ok::<_, std::io::Error>(Bytes::from(piece(11, i, MIB)))
        }
    });
    let req =
        w.request(reqwest::Method::POST, "/storage/ivy/big.bin", Some(&token)).header("content-length", 160 * MIB);
    let upload = tokio::spawn(async move {
        let resp = req.body(reqwest::Body::wrap_stream(pieces)).send().await.unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap_or(Value::Null))
    });
    reached_rx.recv().await.unwrap();
    w.gfs_mut().kill_chunkserver(1).await.unwrap();
    release.notify_one();
    let (status, file) = upload.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{file}");
    assert_eq!(file["sha256"], digest);

    let resp = w.get("/storage/ivy/big.bin", Some(&token), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut got = Context::new(&SHA256);
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        got.update(&chunk.unwrap());
    }
    assert_eq!(hex(got.finish().as_ref()), digest);
}
