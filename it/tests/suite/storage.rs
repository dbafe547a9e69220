//! The storage service end to end, through the gateway, on real everything: a private nats-server,
//! PostgreSQL, a GFS cluster of `edd gfs` processes, the auth service and the gateway. Here: a big
//! file up and down (ranges, conditional requests, listing, deletion) and the CLI; who may reach what
//! is in `storage_access`, quotas and size limits in `storage_limits`, uploads cut short or outliving
//! a crash in `storage_failures`, share links, multipart uploads, the catalog's rebuild and live
//! announcements in `storage_sharing`.

use std::time::Duration;

use bytes::Bytes;
use edd_it::{eventually, services, World};
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use ring::digest::{Context, SHA256};
use serde_json::{json, Value};

pub(crate) const MIB: usize = 1024 * 1024;

/// Deterministic bytes: piece `i` of stream `seed`.
pub(crate) fn piece(seed: u64, i: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `pieces` MiB of stream `seed`, as a request body produced on the fly, and its sha256.
pub(crate) fn big_body(seed: u64, pieces: u64) -> (reqwest::Body, String) {
    let mut digest = Context::new(&SHA256);
    for i in 0..pieces {
        digest.update(&piece(seed, i, MIB));
    }
    let stream =
        futures_util::stream::iter(0..pieces).map(move |i| Ok::<_, std::io::Error>(Bytes::from(piece(seed, i, MIB))));
    (reqwest::Body::wrap_stream(stream), hex(digest.finish().as_ref()))
}

pub(crate) fn sha256(data: &[u8]) -> String {
    hex(ring::digest::digest(&SHA256, data).as_ref())
}

/// A storage world: the storage service (an `edd serve storage` process) on a GFS cluster of 3
/// chunkservers, the auth service, and the gateway in front of both; `settings` are extra
/// `EDD_STORAGE_*` settings.
pub(crate) async fn storage_world(settings: &[(&str, String)]) -> World {
    World::builder().storage(settings).gateway().start().await
}

/// The storage service of a world, through its gateway.
pub(crate) trait Storage {
    fn url(&self, path: &str) -> String;
    fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder;
    async fn upload(&self, token: &str, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value);
    async fn get(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> reqwest::Response;
    async fn create_namespace(&self, token: &str, name: &str, visibility: &str);
    /// The blobs GFS holds for the storage service.
    async fn blobs(&self) -> Vec<String>;
    async fn chunks(&self) -> u64;
}

impl Storage for World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway().url)
    }

    fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, self.url(path)).header("host", "storage.localhost");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn upload(&self, token: &str, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let resp = self.request(reqwest::Method::POST, path, Some(token)).body(body).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.request(reqwest::Method::GET, path, token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    async fn create_namespace(&self, token: &str, name: &str, visibility: &str) {
        let a =
            self.api.post("/storage/namespaces", token, json!({"name": name, "visibility": visibility})).await.unwrap();
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    }

    async fn blobs(&self) -> Vec<String> {
        let client = self.gfs().client().unwrap();
        match client.list(edd_storage::GFS_NAMESPACE, "", None, 0).await {
            Ok((files, _)) => files.into_iter().map(|f| f.path).collect(),
            Err(edd_gfs::client::GfsError::NotFound(_)) => Vec::new(),
            Err(e) => panic!("{e}"),
        }
    }

    async fn chunks(&self) -> u64 {
        self.gfs().client().unwrap().status().await.unwrap().chunks
    }
}

pub(crate) async fn body_bytes(resp: reqwest::Response) -> Vec<u8> {
    resp.bytes().await.unwrap().to_vec()
}

pub(crate) fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_200_mib_file_goes_up_and_comes_back_through_the_gateway() {
    let w = storage_world(&[]).await;
    let (alice, token) = w.user("alice").await;
    w.create_namespace(&token, "Photos", "private").await;

    // Watch the upload's progress while it runs.
    let watcher = {
        let req = w
            .request(reqwest::Method::GET, "/sse/progress?id=up-1", Some(&token))
            .header("accept", "text/event-stream");
        tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let mut text = String::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                if text.contains("\"done\":true") {
                    break;
                }
            }
            text
        })
    };
    let rss_before = w.storage().peak_rss_kib().unwrap();
    let (body, digest) = big_body(7, 200);
    let (status, file) = w.upload(&token, "/storage/photos/2024/big.bin?progress=up-1", body).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    assert_eq!(file["size"], 200 * MIB);
    assert_eq!(file["sha256"], digest);
    assert_eq!(file["namespace"], "Photos");
    let progress = tokio::time::timeout(Duration::from_secs(30), watcher).await.unwrap().unwrap();
    assert!(progress.contains(&format!("\"bytes\":{}", 200 * MIB)), "{progress}");

    // Download: the same bytes, streamed.
    let resp = w.get("/storage/download/photos/2024/big.bin", Some(&token), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), (200 * MIB).to_string());
    assert!(header(&resp, "content-disposition").starts_with("attachment; filename=\"big.bin\""));
    let etag = header(&resp, "etag");
    assert_eq!(etag, format!("\"{digest}\""));
    let last_modified = header(&resp, "last-modified");
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");
    let mut got = Context::new(&SHA256);
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        got.update(&chunk.unwrap());
    }
    assert_eq!(hex(got.finish().as_ref()), digest);
    // Streamed both ways: 400 MiB moved through a service whose peak memory grew far less.
    let grown_mib = (w.storage().peak_rss_kib().unwrap() - rss_before) / 1024;
    assert!(grown_mib < 96, "the storage service's peak memory grew by {grown_mib} MiB");

    // Ranges, at a piece boundary and at the end.
    let whole_piece_3 = piece(7, 3, MIB);
    let at = 3 * MIB as u64;
    let resp = w
        .get("/storage/photos/2024/big.bin", Some(&token), &[("range", &format!("bytes={}-{}", at - 10, at + 9))])
        .await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-range"), format!("bytes {}-{}/{}", at - 10, at + 9, 200 * MIB));
    let bytes = body_bytes(resp).await;
    assert_eq!(&bytes[..10], &piece(7, 2, MIB)[MIB - 10..]);
    assert_eq!(&bytes[10..], &whole_piece_3[..10]);
    let resp = w.get("/storage/photos/2024/big.bin", Some(&token), &[("range", "bytes=-5")]).await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body_bytes(resp).await, piece(7, 199, MIB)[MIB - 5..]);
    let resp =
        w.get("/storage/photos/2024/big.bin", Some(&token), &[("range", &format!("bytes={}-", 200 * MIB))]).await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&resp, "content-range"), format!("bytes */{}", 200 * MIB));
    // Several ranges: one multipart/byteranges answer, its length announced exactly.
    let resp =
        w.get("/storage/photos/2024/big.bin", Some(&token), &[("range", &format!("bytes=0-9, {at}-{}", at + 9))]).await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let content_type = header(&resp, "content-type");
    let boundary = content_type.strip_prefix("multipart/byteranges; boundary=").expect("multipart").to_owned();
    let announced: usize = header(&resp, "content-length").parse().unwrap();
    let body = body_bytes(resp).await;
    assert_eq!(body.len(), announced);
    let expected_part = |range: &str, data: &[u8]| {
        let mut part = format!(
            "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {range}/{}\r\n\r\n",
            200 * MIB
        )
        .into_bytes();
        part.extend_from_slice(data);
        part
    };
    let mut expected = expected_part("0-9", &piece(7, 0, MIB)[..10]);
    expected.extend(expected_part(&format!("{at}-{}", at + 9), &whole_piece_3[..10]));
    expected.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    assert_eq!(body, expected);

    // If-Range with another tag: the whole file rather than a piece of something else.
    let resp =
        w.get("/storage/photos/2024/big.bin", Some(&token), &[("range", "bytes=0-9"), ("if-range", "\"other\"")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);

    // Conditional GETs.
    let resp = w.get("/storage/photos/2024/big.bin", Some(&token), &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&resp, "etag"), etag);
    let resp = w.get("/storage/photos/2024/big.bin", Some(&token), &[("if-modified-since", &last_modified)]).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let resp = w.get("/storage/photos/2024/big.bin", Some(&token), &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);

    // A small file: content type from the extension, shown inline but sandboxed.
    let (status, _) = w.upload(&token, "/storage/photos/notes/a.txt", "hello").await;
    assert_eq!(status, StatusCode::CREATED);
    let resp = w.get("/storage/photos/notes/a.txt", Some(&token), &[]).await;
    assert_eq!(header(&resp, "content-type"), "text/plain; charset=utf-8");
    assert!(header(&resp, "content-disposition").starts_with("inline"));
    assert_eq!(header(&resp, "content-security-policy"), "sandbox");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert_eq!(body_bytes(resp).await, b"hello");

    // Overwrite only when asked.
    let (status, problem) = w.upload(&token, "/storage/photos/notes/a.txt", "again").await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let (status, replaced) = w.upload(&token, "/storage/photos/notes/a.txt?overwrite=true", "again").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replaced["sha256"], sha256(b"again"));

    // Listing with pagination.
    let page = w.api.get("/storage/files?namespace=photos&limit=1", &token).await.unwrap();
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    assert_eq!(page.body["files"][0]["path"], "2024/big.bin");
    assert_eq!(page.body["files"][0]["size"], 200 * MIB);
    assert_eq!(page.body["files"][0]["content_type"], "application/octet-stream");
    let next = page.body["next"].as_str().unwrap().to_owned();
    let page = w.api.get(&format!("/storage/files?namespace=photos&limit=1&after={next}"), &token).await.unwrap();
    assert_eq!(page.body["files"][0]["path"], "notes/a.txt");
    assert!(page.body.get("next").is_none());

    // Delete: gone from the listing, the reads and GFS.
    let chunks_before = w.chunks().await;
    assert!(chunks_before >= 4, "{chunks_before}");
    let a = w.api.delete("/storage/photos/2024/big.bin", &token).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    assert_eq!(w.get("/storage/photos/2024/big.bin", Some(&token), &[]).await.status(), StatusCode::NOT_FOUND);
    eventually(Duration::from_secs(30), "the file's chunks to be deleted", || async {
        Ok((w.chunks().await <= chunks_before - 4).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(w.blobs().await.len(), 1, "only a.txt's blob is left");

    // Each change told the owner.
    let titles = services::notifications(&w.env, &alice).await.unwrap();
    assert_eq!(titles.iter().filter(|t| *t == "File uploaded").count(), 3, "{titles:?}");
    assert!(titles.contains(&"File deleted".to_owned()), "{titles:?}");
}

#[tokio::test]
async fn the_cli_puts_lists_gets_resumes_shares_and_removes() {
    let w = storage_world(&[]).await;
    let (_, session) = w.user("joan").await;
    let edd = edd_it::gfs::edd_binary().unwrap();
    let dir = std::env::temp_dir().join(format!("edd-storage-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("data.bin");
    let data: Vec<u8> = (0..5).flat_map(|i| piece(21, i, MIB)).collect();
    std::fs::write(&local, &data).unwrap();
    // `storage.localhost` does not resolve on every machine: the CLI talks to the service directly.
    let run = async |args: &[&str]| {
        let out = tokio::process::Command::new(&edd)
            .args(args)
            .env("EDD_TOKEN", &session)
            .env("EDD_STORAGE_URL", &w.storage().url)
            .env("EDD_AUTH_URL", "http://auth.localhost:1")
            .env("EDD_CONFIG", "/nonexistent/edd-config.json")
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(&["storage", "ns", "create", "jo-files"]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["storage", "put", local.to_str().unwrap(), "jo-files/a/data.bin"]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&sha256(&data)), "the stored sha256 is shown: {out}");
    // Not replaced without --overwrite.
    let (ok, _, err) = run(&["storage", "put", local.to_str().unwrap(), "jo-files/a/data.bin"]).await;
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, out, _) = run(&["storage", "ls", "jo-files", "--json"]).await;
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let files = listed.get("files").unwrap_or(&listed);
    assert_eq!(files[0]["path"], "a/data.bin", "{out}");
    assert_eq!(files[0]["sha256"], sha256(&data));

    // A download cut short leaves a .partial; the next get resumes it and the result is exact.
    let target = dir.join("copy.bin");
    std::fs::write(dir.join("copy.bin.partial"), &data[..2 * MIB]).unwrap();
    let resp = w.get("/storage/jo-files/a/data.bin", Some(&session), &[]).await;
    std::fs::write(dir.join("copy.bin.partial.etag"), header(&resp, "etag")).unwrap();
    drop(resp);
    let (ok, _, err) = run(&["storage", "get", "jo-files/a/data.bin", target.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), data);
    assert!(!dir.join("copy.bin.partial").exists());

    let (ok, out, err) = run(&["storage", "share", "jo-files/a/data.bin", "--expires", "1h"]).await;
    assert!(ok, "{err}");
    let link = out.lines().find(|l| l.contains("/storage/shared/")).unwrap().trim().to_owned();
    let fetched = reqwest::get(&link).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().await.unwrap().len(), data.len());
    let (ok, _, err) = run(&["storage", "rm", "jo-files/a/data.bin"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["storage", "ns", "rm", "jo-files", "--yes"]).await;
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["storage", "ns", "ls", "--json"]).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}
