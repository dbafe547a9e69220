//! The control plane on the wire: [`serve`] on 127.0.0.1 in front of a small [`MasterApi`], called
//! raw (any `authorization` header, any method, any body) as an attacker holding a captured header
//! would, and [`MasterClient`] against an [`Impostor`] that answers at a master's address without the
//! secrets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Code;

use super::codec::RawCodec;
use super::messages::*;
use super::*;
use crate::test_support::Impostor;

const CLUSTER: &[u8] = b"rpc-test-cluster-key-0123456789";
const CLIENT: &[u8] = b"rpc-test-client-secret-0123456789";

/// Answers `Stat` with the path asked for and counts `DeleteFile`s; nothing else.
#[derive(Default)]
struct Files {
    deleted: AtomicUsize,
}

macro_rules! not_served {
    ($($fn:ident($req:ty) -> $reply:ty;)+) => {
        $(
            async fn $fn(&self, _: Role, _: $req) -> Result<$reply, tonic::Status> {
                Err(tonic::Status::unimplemented(stringify!($fn)))
            }
        )+
    };
}

impl MasterApi for Files {
    not_served! {
        create_namespace(NamespaceRequest) -> Empty;
        delete_namespace(NamespaceRequest) -> Empty;
        list_namespaces(Empty) -> NamespaceList;
        create_file(PathRequest) -> FileInfo;
        list(ListRequest) -> FileList;
        rename(RenameRequest) -> FileInfo;
        locate(LocateRequest) -> Locations;
        lease_chunk(LeaseRequest) -> Lease;
        commit(CommitRequest) -> Empty;
        report_corrupt(CorruptReport) -> Empty;
        cluster_status(Empty) -> messages::Status;
        heartbeat(Heartbeat) -> HeartbeatReply;
    }

    async fn stat(&self, _: Role, request: PathRequest) -> Result<FileInfo, tonic::Status> {
        Ok(FileInfo { namespace: request.namespace, path: request.path, ..FileInfo::default() })
    }

    async fn delete_file(&self, _: Role, _: PathRequest) -> Result<Empty, tonic::Status> {
        self.deleted.fetch_add(1, Ordering::SeqCst);
        Ok(Empty {})
    }
}

struct Master {
    addr: String,
    files: Arc<Files>,
    _stop: oneshot::Sender<()>,
}

async fn master() -> Master {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let files = Arc::new(Files::default());
    let auth = Arc::new(Authenticator::new(CLUSTER, CLIENT).expect("auth"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, Arc::clone(&files), auth, ServeOptions::default(), async {
        let _ = stopped.await;
    }));
    Master { addr, files, _stop: stop }
}

/// One call as sent on the wire: `header` as given, `body` as the request's bytes. The reply's bytes
/// and signature, or the status.
async fn raw(addr: &str, method: &str, header: &str, body: Bytes) -> Result<(Bytes, Option<String>), tonic::Status> {
    let channel = H2Channel::connect(addr).await.expect("connect");
    let mut grpc = tonic::client::Grpc::with_origin(channel, format!("http://{addr}").parse().expect("origin"));
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert("authorization", header.parse().expect("header"));
    let path = format!("/{SERVICE}/{method}").parse().expect("path");
    let response = grpc.unary(request, path, RawCodec).await?;
    let mac = response.metadata().get(REPLY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok((response.into_inner(), mac))
}

fn path(p: &str) -> Bytes {
    Bytes::from(PathRequest { namespace: "ns".into(), path: p.into() }.encode_to_vec())
}

fn client(addrs: &[&str]) -> MasterClient {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(5),
        failover_timeout: Duration::from_millis(500),
    };
    let credential = Credential::new(Role::Client, CLIENT).expect("credential");
    MasterClient::new(addrs.iter().map(|a| (*a).to_owned()).collect(), credential, options)
}

#[tokio::test]
async fn a_captured_credential_is_refused_on_another_method_with_another_body_again_and_once_expired() {
    let master = master().await;
    let credential = Credential::new(Role::Client, CLIENT).expect("credential");
    let captured = credential.sign("Stat", &path("/a"));

    // Replayed on another method, with the very body it was made for: refused, nothing deleted.
    let other_method = raw(&master.addr, "DeleteFile", captured.header(), path("/a")).await;
    assert_eq!(other_method.expect_err("another method").code(), Code::Unauthenticated);
    // On its own method with another body: refused.
    let other_body = raw(&master.addr, "Stat", captured.header(), path("/b")).await;
    assert_eq!(other_body.expect_err("another body").code(), Code::Unauthenticated);
    assert_eq!(master.files.deleted.load(Ordering::SeqCst), 0);

    // A fresh one is served once, and its reply is signed for it.
    let fresh = credential.sign("Stat", &path("/a"));
    let (reply, mac) = raw(&master.addr, "Stat", fresh.header(), path("/a")).await.expect("served");
    assert_eq!(FileInfo::decode(reply.clone()).expect("reply").path, "/a");
    assert!(credential.verify_reply(&fresh, mac.as_deref(), &reply));
    let again = raw(&master.addr, "Stat", fresh.header(), path("/a")).await;
    assert_eq!(again.expect_err("replayed").code(), Code::Unauthenticated);

    // Made a minute ago (within the first version's two minutes): expired.
    let old = credential.sign_at("Stat", &path("/a"), SystemTime::now() - Duration::from_secs(60));
    let expired = raw(&master.addr, "Stat", old.header(), path("/a")).await;
    assert_eq!(expired.expect_err("expired").code(), Code::Unauthenticated);

    // The client makes a new credential for every call, so repeating a call is no replay.
    let client = client(&[&master.addr]);
    let stat = PathRequest { namespace: "ns".into(), path: "/c".into() };
    for _ in 0..3 {
        assert_eq!(client.stat(stat.clone()).await.expect("stat").path, "/c");
    }
}

#[tokio::test]
async fn a_client_refuses_answers_from_an_address_without_the_secret_and_moves_on_to_the_master() {
    let impostor =
        Impostor::start(|_, _| Bytes::from(FileInfo { path: "/forged".into(), ..FileInfo::default() }.encode_to_vec()))
            .await;
    let impostor_addr = impostor.addr.to_string();
    let stat = PathRequest { namespace: "ns".into(), path: "/a".into() };

    let fooled = client(&[&impostor_addr]).stat(stat.clone()).await;
    let refused = fooled.expect_err("an unsigned answer is no answer");
    assert!(refused.message().contains("not signed by a GFS master"), "{refused:?}");

    // Listed first, the impostor costs a failover; the master's own answer is taken.
    let master = master().await;
    let info = client(&[&impostor_addr, &master.addr]).stat(stat).await.expect("the master's answer");
    assert_eq!(info.path, "/a");
}
