//! Test support shared by the crate's unit tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A unique directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("edd-gfs-{name}-{}-{nanos}-{n}", std::process::id()));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Bytes that differ from position to position and seed to seed, so a misplaced piece shows.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Equal bytes, or a failure naming the first difference (not two megabyte-long dumps).
#[track_caller]
pub(crate) fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {at}: {} != {}", got[at], want[at]);
    }
}

/// Polls `check` every 10 ms until it gives a value; fails the test after `timeout`. The crate's one
/// polling helper: a test waits on a condition, with a deadline, never on a fixed sleep.
pub(crate) async fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Something answering at a master's address without the cluster key or the client secret: it takes
/// every call, whatever its credential, and answers it with what `answer` makes of the method and the
/// request's bytes — its reply "signed" with no key of the cluster's. Stops when dropped.
pub(crate) struct Impostor {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

type Answer = dyn Fn(&str, bytes::Bytes) -> bytes::Bytes + Send + Sync;

impl Impostor {
    pub(crate) async fn start(answer: impl Fn(&str, bytes::Bytes) -> bytes::Bytes + Send + Sync + 'static) -> Impostor {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind impostor");
        let addr = listener.local_addr().expect("impostor addr");
        let answer: std::sync::Arc<Answer> = std::sync::Arc::new(answer);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(impersonate(stream, std::sync::Arc::clone(&answer)));
            }
        });
        Impostor { addr, task }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn impersonate(stream: tokio::net::TcpStream, answer: std::sync::Arc<Answer>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let answer = std::sync::Arc::clone(&answer);
        let method = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        async move {
            let svc = tower::service_fn(move |r: tonic::Request<bytes::Bytes>| {
                let reply = answer(&method, r.into_inner());
                // The right shape, made without any key of the cluster's.
                let forged: String = ring::digest::digest(&ring::digest::SHA256, &reply)
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let mut response = tonic::Response::new(reply);
                response.metadata_mut().insert(crate::rpc::REPLY_HEADER, forged.parse().expect("header value"));
                async move { Ok::<_, tonic::Status>(response) }
            });
            let mut grpc = tonic::server::Grpc::new(crate::rpc::codec::RawCodec);
            Ok::<_, std::convert::Infallible>(grpc.unary(svc, req).await)
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
