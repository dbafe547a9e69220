//! The storage service end to end, through the gateway, on real everything: a private nats-server,
//! PostgreSQL, a GFS cluster of `edd gfs` processes, the auth service and the gateway.

use std::time::Duration;

use bytes::Bytes;
use edd_it::{eventually, services, world::next_json, world::scopes, World};
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use ring::digest::{Context, SHA256};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;

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

/// Every route on alice's private namespace, as (method, path, body).
fn alices_routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/storage/namespaces/secret", None),
        ("PUT", "/storage/namespaces/secret", Some(json!({"visibility": "public"}))),
        ("DELETE", "/storage/namespaces/secret", None),
        ("GET", "/storage/files?namespace=secret", None),
        ("GET", "/storage/secret/doc.txt", None),
        ("GET", "/storage/download/secret/doc.txt", None),
        ("POST", "/storage/secret/new.txt", None),
        ("DELETE", "/storage/secret/doc.txt", None),
        ("POST", "/storage/share", Some(json!({"namespace": "secret", "path": "doc.txt"}))),
    ]
}

async fn call(w: &World, method: &str, path: &str, token: Option<&str>, body: &Option<Value>) -> StatusCode {
    let mut req = w.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), path, token);
    req = match body {
        Some(body) => req.json(body),
        None if method == "POST" => req.body("intruder"),
        None => req,
    };
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn another_user_reaches_nothing_of_alices_with_any_kind_of_token() {
    let w = storage_world(&[]).await;
    let (alice, alice_session) = w.user("alice").await;
    let (bob, bob_session) = w.user("bob").await;
    w.create_namespace(&alice_session, "secret", "private").await;
    let (status, body) = w.upload(&alice_session, "/storage/secret/doc.txt", "top secret").await;
    assert_eq!(status, StatusCode::CREATED, "{body} {}", w.storage().log());

    // Bob's three kinds of credential, each with every storage right over his own things.
    let all = scopes(&[(&format!("storage.{bob}"), &["create", "read", "update", "delete"])]);
    let bob_token = w.token(&bob_session, "t", all.clone()).await;
    let sa_id = w.service_account(&bob_session, "ci", all).await;
    let bob_sa = w.service_account_token(&bob_session, &sa_id, json!({"name": "d", "expires_in": "30d"})).await;
    w.accepted(&bob_token).await;
    w.accepted(&bob_sa).await;

    for (method, path, body) in alices_routes() {
        for (kind, token) in [("session", &bob_session), ("api token", &bob_token), ("service account", &bob_sa)] {
            let status = call(&w, method, path, Some(token), &body).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "bob's {kind}: {method} {path}");
        }
        // Anonymous reads of a private file are 404 like bob's (existence not confirmed); the rest
        // need a credential before anything else.
        let anonymous =
            if method == "GET" && path.ends_with("doc.txt") { StatusCode::NOT_FOUND } else { StatusCode::UNAUTHORIZED };
        assert_eq!(call(&w, method, path, None, &body).await, anonymous, "anonymous: {method} {path}");
    }
    // Bob does not see alice's namespace among his, nor can he take its name in any case.
    let mine = w.api.get("/storage/namespaces", &bob_session).await.unwrap();
    assert_eq!(mine.body, json!([]));
    let a = w.api.post("/storage/namespaces", &bob_session, json!({"name": "SECRET"})).await.unwrap();
    assert_eq!(a.status, StatusCode::CONFLICT, "{:?}", a.body);

    // Alice's own token without the storage scope: 403 naming the scope; read-only reads but no more.
    let unscoped = w.token(&alice_session, "none", scopes(&[(&format!("compute.{alice}"), &["read"])])).await;
    let read_only = scopes(&[(&format!("storage.{alice}.files.secret"), &["read"])]);
    let reader = w.token(&alice_session, "ro", read_only).await;
    w.accepted(&reader).await;
    eventually(Duration::from_secs(10), "the unscoped token to be known", || async {
        Ok((w.get("/storage/secret/doc.txt", Some(&unscoped), &[]).await.status() == StatusCode::FORBIDDEN)
            .then_some(()))
    })
    .await
    .unwrap();
    let resp = w.get("/storage/secret/doc.txt", Some(&reader), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_bytes(resp).await, b"top secret");
    assert_eq!(w.upload(&reader, "/storage/secret/other.txt", "x").await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&w, "DELETE", "/storage/secret/doc.txt", Some(&reader), &None).await, StatusCode::FORBIDDEN);
    assert_eq!(call(&w, "GET", "/storage/namespaces", Some(&reader), &None).await, StatusCode::FORBIDDEN);
    // A token that may create files but not delete them cannot destroy one by overwriting it.
    let create_only = scopes(&[(&format!("storage.{alice}.files.secret"), &["create", "read"])]);
    let creator = w.token(&alice_session, "co", create_only).await;
    w.accepted(&creator).await;
    assert_eq!(w.upload(&creator, "/storage/secret/fresh.txt", "new").await.0, StatusCode::CREATED);
    assert_eq!(w.upload(&creator, "/storage/secret/doc.txt?overwrite=true", "gone").await.0, StatusCode::FORBIDDEN);

    // Anyone signed in sees the file system's health; only administrators see where its master is.
    let status = w.api.get("/storage/status", &bob_session).await.unwrap();
    assert_eq!(status.status, StatusCode::OK, "{:?}", status.body);
    assert_eq!(status.body["healthy"], true);
    assert_eq!(status.body["chunkservers_live"], 3);
    assert!(status.body.get("active_master").is_none());
    let status = w.api.get("/storage/status", &w.admin).await.unwrap();
    assert_eq!(status.body["active_master"], w.gfs().master_addrs[0].as_str());

    // Public: anyone with the link reads; nobody else lists, writes or deletes.
    let a = w.api.put("/storage/namespaces/secret", &alice_session, json!({"visibility": "public"})).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["visibility"], "public");
    let resp = w.get("/storage/secret/doc.txt", None, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "cache-control"), "public, no-cache");
    assert_eq!(w.get("/storage/secret/doc.txt", Some(&bob_token), &[]).await.status(), StatusCode::OK);
    assert_eq!(
        call(&w, "GET", "/storage/files?namespace=secret", Some(&bob_session), &None).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(&w, "POST", "/storage/secret/x.txt", Some(&bob_session), &None).await, StatusCode::NOT_FOUND);
    assert_eq!(call(&w, "DELETE", "/storage/secret/doc.txt", Some(&bob_sa), &None).await, StatusCode::NOT_FOUND);
    assert_eq!(w.api.get("/storage/namespaces", &bob_session).await.unwrap().body, json!([]));

    // Admin views list everything, to administrators only.
    assert_eq!(w.api.get("/admin/namespaces", &bob_session).await.unwrap().status, StatusCode::FORBIDDEN);
    let all = w.api.get("/admin/namespaces", &w.admin).await.unwrap();
    assert_eq!(all.body[0]["name"], "secret");
    assert_eq!(all.body[0]["owner"], alice);
    let files = w.api.get("/admin/files?namespace=secret", &w.admin).await.unwrap();
    assert_eq!(files.body["files"][0]["path"], "doc.txt");
}

#[tokio::test]
async fn deleting_a_user_deletes_their_namespaces_and_files_from_gfs() {
    let w = storage_world(&[]).await;
    let (erin, token) = w.user("erin").await;
    let (_, frank) = w.user("frank").await;
    for ns in ["e1", "e2"] {
        w.create_namespace(&token, ns, "private").await;
        for i in 0..3 {
            assert_eq!(
                w.upload(&token, &format!("/storage/{ns}/f{i}"), piece(i, 0, 100_000)).await.0,
                StatusCode::CREATED
            );
        }
    }
    w.create_namespace(&frank, "frank", "private").await;
    assert_eq!(w.upload(&frank, "/storage/frank/keep", "mine").await.0, StatusCode::CREATED);
    let chunks = w.chunks().await;
    assert_eq!(w.blobs().await.len(), 7);

    let a = w.auth.delete(&format!("/admin/users/{erin}"), &w.admin).await.unwrap();
    assert!(a.status.is_success(), "{:?}", a.body);
    eventually(Duration::from_secs(30), "erin's blobs to be deleted", || async {
        Ok((w.blobs().await.len() == 1).then_some(()))
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "GFS chunk count to drop", || async {
        Ok((w.chunks().await <= chunks - 6).then_some(()))
    })
    .await
    .unwrap();
    let all = w.api.get("/admin/namespaces", &w.admin).await.unwrap();
    let names: Vec<_> = all.body.as_array().unwrap().iter().map(|n| n["name"].clone()).collect();
    assert_eq!(names, vec![json!("frank")]);
    // The deletions are events, one per namespace, saying why.
    let deleted = stored_events(&w, "storage.ns.*.deleted").await;
    assert_eq!(deleted.len(), 2);
    assert!(deleted.iter().all(|e| e["data"]["reason"] == "user_deleted" && e["data"]["files"] == 3));
    // The names are free again.
    let a = w.api.post("/storage/namespaces", &frank, json!({"name": "e1"})).await.unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(a.body["files"], 0);
}

/// The envelopes stored under `filter` in STORAGE.
async fn stored_events(w: &World, filter: &str) -> Vec<Value> {
    let head = edd_events::consume::stream_head(&w.env.js, "STORAGE").await.unwrap();
    let mut out = Vec::new();
    let mut replay = edd_events::consume::replay(&w.env.js, "STORAGE", &[filter.to_owned()], 1).await.unwrap();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(2), replay.next()).await {
        let stored = item.unwrap();
        out.push(serde_json::from_slice(&stored.payload).unwrap());
        if stored.pending == 0 || stored.seq >= head {
            break;
        }
    }
    out
}

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

#[tokio::test]
async fn share_links_multipart_uploads_and_a_rebuilt_catalog() {
    let w = storage_world(&[]).await;
    let (_, token) = w.user("gina").await;
    w.create_namespace(&token, "docs", "private").await;

    // Multipart: two files under a directory, types from the parts.
    let boundary = "XyZ123";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.json\"\r\nContent-Type: application/json\r\n\r\n{{\"a\":1}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.bin\"\r\n\r\nBBBB\r\n--{boundary}--\r\n"
    );
    let resp = w
        .request(reqwest::Method::POST, "/storage/upload?namespace=docs&dir=up", Some(&token))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let stored: Value = resp.json().await.unwrap();
    assert_eq!(stored[0]["path"], "up/a.json");
    assert_eq!(stored[0]["content_type"], "application/json");
    assert_eq!(stored[1]["path"], "up/b.bin");
    assert_eq!(stored[1]["sha256"], sha256(b"BBBB"));

    // A share link reads the file without credentials, only with its key, until revoked.
    let a = w
        .api
        .post("/storage/share", &token, json!({"namespace": "docs", "path": "up/a.json", "expires_in_secs": 3600}))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let link = a.body["url"].as_str().unwrap().to_owned();
    let id = a.body["id"].as_str().unwrap().to_owned();
    let path = &link[link.find("/storage/shared/").unwrap()..];
    let resp = w.get(path, None, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_bytes(resp).await, b"{\"a\":1}");
    let forged = format!("{}x", &path[..path.len() - 1]);
    assert_eq!(w.get(&forged, None, &[]).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(w.get(&format!("/storage/shared/{id}"), None, &[]).await.status(), StatusCode::NOT_FOUND);
    let listed = w.api.get("/storage/shares", &token).await.unwrap();
    assert_eq!(listed.body[0]["id"], id.as_str());
    assert!(listed.body[0].get("key").is_none());
    assert_eq!(w.api.delete(&format!("/storage/shares/{id}"), &token).await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(w.get(path, None, &[]).await.status(), StatusCode::GONE);
    // Expired links stop working on their own.
    let a = w
        .api
        .post("/storage/share", &token, json!({"namespace": "docs", "path": "up/b.bin", "expires_in_secs": 1}))
        .await
        .unwrap();
    let link = a.body["url"].as_str().unwrap().to_owned();
    let path = link[link.find("/storage/shared/").unwrap()..].to_owned();
    eventually(Duration::from_secs(10), "the link to expire", || async {
        Ok((w.get(&path, None, &[]).await.status() == StatusCode::GONE).then_some(()))
    })
    .await
    .unwrap();

    // A link is to one file: deleted and uploaded again at the same path, it no longer serves.
    let a = w.api.post("/storage/share", &token, json!({"namespace": "docs", "path": "up/a.json"})).await.unwrap();
    let link = a.body["url"].as_str().unwrap().to_owned();
    let path = link[link.find("/storage/shared/").unwrap()..].to_owned();
    assert_eq!(w.get(&path, None, &[]).await.status(), StatusCode::OK);
    assert_eq!(w.api.delete("/storage/docs/up/a.json", &token).await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(w.upload(&token, "/storage/docs/up/a.json", "{\"a\":2}").await.0, StatusCode::CREATED);
    assert_eq!(w.get(&path, None, &[]).await.status(), StatusCode::GONE);

    // Some history, then a rebuild of the catalog from the log gives the same tables.
    w.create_namespace(&token, "tmp", "public").await;
    assert_eq!(w.upload(&token, "/storage/tmp/x", "x").await.0, StatusCode::CREATED);
    assert_eq!(w.api.delete("/storage/namespaces/tmp", &token).await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(w.api.delete("/storage/docs/up/b.bin", &token).await.unwrap().status, StatusCode::NO_CONTENT);
    let before = catalog_dump(&w).await;
    let report = edd_projections::rebuild::rebuild(
        &w.storage().db().pool,
        &w.env.js,
        &edd_storage::projection::CatalogProjection,
        100,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(report.events >= 8, "{report:?}");
    assert_eq!(catalog_dump(&w).await, before);
    // And the service goes on serving from the rebuilt tables.
    let listed = w.api.get("/storage/files?namespace=docs", &token).await.unwrap();
    assert_eq!(listed.body["files"].as_array().unwrap().len(), 1);
}

/// Every row of the catalog's tables, as text, in a stable order.
async fn catalog_dump(w: &World) -> Vec<String> {
    let mut rows = Vec::new();
    for (table, order) in [("namespaces", "ns_key"), ("files", "ns_id, file_key"), ("shares", "share_id")] {
        let sql = format!("SELECT t::text FROM storage_catalog.{table} t ORDER BY {order}");
        let text: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&w.storage().db().pool).await.unwrap();
        rows.extend(text.into_iter().map(|r| format!("{table}: {r}")));
    }
    rows
}

#[tokio::test]
async fn an_upload_is_announced_on_an_open_websocket_unless_storage_is_muted() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let w = World::builder().storage(&[]).notify(services::notify_config()).gateway().start().await;
    let (hana, token) = w.user("hana").await;
    let notes = w.via("notifications.localhost");
    eventually(Duration::from_secs(15), "the notification service to accept the session", || async {
        Ok((notes.get("/api/notifications/unread-count", &token).await?.status == StatusCode::OK).then_some(()))
    })
    .await
    .unwrap();
    let mut request =
        format!("{}/ws/notifications", w.gateway().url.replacen("http://", "ws://", 1)).into_client_request().unwrap();
    request.headers_mut().insert("host", "notifications.localhost".parse().unwrap());
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    w.create_namespace(&token, "hn", "private").await;
    assert_eq!(w.upload(&token, "/storage/hn/a.txt", "hello").await.0, StatusCode::CREATED);
    let note = next_json(&mut ws).await;
    assert_eq!(note["title"], "File uploaded", "{note}");
    assert_eq!(note["category"], "storage");
    assert_eq!(note["scope"], "hn");

    // Muted: storage's notifications no longer arrive; others still do, in order.
    let a = notes.put("/api/notifications/mutes", &token, json!({"category": "storage"})).await.unwrap();
    assert!(a.status.is_success(), "{:?}", a.body);
    assert_eq!(w.upload(&token, "/storage/hn/b.txt", "muted").await.0, StatusCode::CREATED);
    assert_eq!(w.api.delete("/storage/hn/a.txt", &token).await.unwrap().status, StatusCode::NO_CONTENT);
    services::publish_notification(&w.env, &hana, "Ping", "not muted", "test", None).await.unwrap();
    let note = next_json(&mut ws).await;
    assert_eq!(note["title"], "Ping", "a muted storage notification arrived first: {note}");
    // They were sent (the inbox holds them), only hidden.
    let titles = services::notifications(&w.env, &hana).await.unwrap();
    assert_eq!(titles, ["File uploaded", "File uploaded", "File deleted", "Ping"]);
}
