//! TLS termination with real handshakes: SNI choosing among several certificates (exact names over
//! wildcards), HTTP/2 negotiated by ALPN and carried to an HTTP/1.1 upstream, and a certificate
//! replaced on disk being served without a restart.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use edd_gateway::{
    server::Transport,
    tls::{write_atomically, CertFiles, CertStore},
    Options, Route,
};
use edd_it::eventually;
use edd_kit::Shutdown;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use serde_json::Value;

use super::gateway::{echo_backend, start_with, test_limits};

/// Writes a fresh self-signed certificate for `names` to `<dir>/<stem>.{pem,key}`; returns the files
/// and the certificate's DER, to compare with what a handshake presents.
pub(crate) fn certificate(dir: &Path, stem: &str, names: &[&str]) -> (CertFiles, Vec<u8>) {
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let files = CertFiles { cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) };
    write_atomically(&files.key, generated.signing_key.serialize_pem().as_bytes(), 0o600).unwrap();
    write_atomically(&files.cert, generated.cert.pem().as_bytes(), 0o644).unwrap();
    (files, generated.cert.der().to_vec())
}

/// A TLS client that accepts the gateway's development certificate (any certificate), offering
/// `alpn`.
pub(crate) fn trusting_any_certificate(alpn: &[&[u8]]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Trusts whatever the server presents: these tests check *which* certificate is served; the
/// signatures of the handshake are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Answer {
    certificate: Vec<u8>,
    alpn: Option<Vec<u8>>,
    status: hyper::StatusCode,
    body: Value,
}

/// One HTTP/2 request over TLS to `addr`, naming `sni`.
async fn h2_get(addr: std::net::SocketAddr, sni: &str, path: &str) -> Answer {
    let config = trusting_any_certificate(&[b"h2", b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    let certificate = session.peer_certificates().unwrap()[0].to_vec();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(format!("https://{sni}{path}")).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer { certificate, alpn, status, body: serde_json::from_slice(&body).unwrap_or(Value::Null) }
}

pub(crate) fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edd-gw-tls-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn sni_picks_the_certificate_and_h2_is_carried_to_an_http1_upstream() {
    let dir = temp_dir();
    let (wild, wild_der) = certificate(&dir, "wild", &["*.example.test"]);
    let (api, api_der) = certificate(&dir, "api", &["api.example.test"]);
    let (other, other_der) = certificate(&dir, "other", &["other.test"]);
    let store = CertStore::load(vec![other, wild, api]).unwrap();
    let echo = echo_backend("echo").await;
    let routes = vec![Route::new("example", "*.example.test", "/", &format!("http://{echo}"), false).unwrap()];
    let acceptor = tokio_rustls::TlsAcceptor::from(store.server_config().unwrap());
    let gw = start_with(routes, Options::default(), Transport::Tls(acceptor), test_limits()).await;

    let exact = h2_get(gw.addr, "api.example.test", "/hello").await;
    assert_eq!(exact.certificate, api_der, "the exact name wins over the wildcard");
    assert_eq!(exact.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(exact.status, hyper::StatusCode::OK);
    assert_eq!(exact.body["path"], "/hello");
    assert_eq!(exact.body["proto"], "https");
    assert_eq!(exact.body["fhost"], "api.example.test");

    let wildcard = h2_get(gw.addr, "www.example.test", "/").await;
    assert_eq!(wildcard.certificate, wild_der);
    assert_eq!(wildcard.body["backend"], "echo");

    // No certificate names it: the first one configured answers, and no route does.
    let unknown = h2_get(gw.addr, "unknown.test", "/").await;
    assert_eq!(unknown.certificate, other_der);
    assert_eq!(unknown.status, hyper::StatusCode::NOT_FOUND);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let dir = temp_dir();
    let (site, old_der) = certificate(&dir, "site", &["site.test"]);
    let store = CertStore::load(vec![site]).unwrap();
    let (_trigger, shutdown) = Shutdown::new();
    tokio::spawn(store.clone().watch(Duration::from_millis(50), shutdown));
    let echo = echo_backend("echo").await;
    let routes = vec![Route::new("site", "site.test", "/", &format!("http://{echo}"), false).unwrap()];
    let acceptor = tokio_rustls::TlsAcceptor::from(store.server_config().unwrap());
    let gw = start_with(routes, Options::default(), Transport::Tls(acceptor), test_limits()).await;
    assert_eq!(h2_get(gw.addr, "site.test", "/").await.certificate, old_der);

    // A file that is not (yet) a certificate is not taken; the old one goes on being served.
    std::fs::write(dir.join("site.pem"), b"-----BEGIN CERTIFICATE-----\nnot yet\n").unwrap();
    let during = h2_get(gw.addr, "site.test", "/").await;
    assert_eq!((during.certificate, during.status), (old_der.clone(), hyper::StatusCode::OK));

    let (_, new_der) = certificate(&dir, "site", &["site.test"]);
    eventually(Duration::from_secs(5), "the new certificate is served", || async {
        let answer = h2_get(gw.addr, "site.test", "/").await;
        Ok((answer.certificate == new_der).then_some(()))
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
