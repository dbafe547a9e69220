//! Optional TLS for both planes (rustls, ring provider, TLS 1.3 only): the control plane (gRPC to
//! the masters) and the data plane (framed TCP to the chunkservers).
//!
//! A [`Tls`] is a CA certificate to trust and, for a server (master, chunkserver), a certificate
//! chain and its key, all PEM files ([`TlsFiles`], or the `EDD_GFS_TLS_*` variables read by
//! [`Tls::from_env`]). When a component has one, it speaks nothing but TLS: its servers refuse a
//! plaintext peer (the handshake fails) and its clients verify every server's certificate against the
//! CA, as the host of the address they dial (an IP address for the data plane, whose addresses are
//! socket addresses), or as one fixed name ([`TlsFiles::server_name`]) when every server of the
//! cluster shares a certificate. Servers do not ask for client certificates: callers are proven by
//! the control plane's credentials and the data plane's capability tokens, as without TLS.
//!
//! Off unless configured (a laptop's `edd up` runs plaintext on 127.0.0.1); the Kubernetes manifests
//! are to turn it on.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// The CA certificate (PEM) clients trust.
pub const CA_FILE_ENV: &str = "EDD_GFS_TLS_CA_FILE";
/// A server's certificate chain (PEM, leaf first).
pub const CERT_FILE_ENV: &str = "EDD_GFS_TLS_CERT_FILE";
/// A server's private key (PEM).
pub const KEY_FILE_ENV: &str = "EDD_GFS_TLS_KEY_FILE";
/// The one name every server's certificate is checked for, instead of each address's host.
pub const SERVER_NAME_ENV: &str = "EDD_GFS_TLS_SERVER_NAME";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn invalid(what: impl Into<String>, reason: impl fmt::Display) -> TlsError {
    TlsError::Invalid { what: what.into(), reason: reason.to_string() }
}

/// Where a component's TLS material is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) to trust (PEM).
    pub ca: PathBuf,
    /// A server's certificate chain (PEM); with `key`, required for masters and chunkservers.
    pub cert: Option<PathBuf>,
    /// A server's private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Check every server's certificate for this name rather than for the host of its address.
    pub server_name: Option<String>,
}

/// A component's TLS: what its clients trust and, for a server, what it presents. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    acceptor: Option<TlsAcceptor>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("serves", &self.acceptor.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

impl Tls {
    /// Loads the files of `files`. A certificate without its key (or the reverse) is an error.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => return Err(invalid("TLS", "a certificate needs its key and a key its certificate")),
        };
        let ca = read(&files.ca)?;
        let tls = Tls::from_pem(&ca, identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())))?;
        match &files.server_name {
            Some(name) => tls.with_server_name(name),
            None => Ok(tls),
        }
    }

    /// TLS from `EDD_GFS_TLS_CA_FILE`, `EDD_GFS_TLS_CERT_FILE`, `EDD_GFS_TLS_KEY_FILE` and
    /// `EDD_GFS_TLS_SERVER_NAME`; `None` when no CA is set (plaintext). A certificate or key without
    /// a CA is an error rather than a silent plaintext start.
    pub fn from_env() -> Result<Option<Tls>, TlsError> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let files = TlsFiles {
            ca: var(CA_FILE_ENV).map(PathBuf::from).unwrap_or_default(),
            cert: var(CERT_FILE_ENV).map(PathBuf::from),
            key: var(KEY_FILE_ENV).map(PathBuf::from),
            server_name: var(SERVER_NAME_ENV).and_then(|v| v.into_string().ok()),
        };
        if files.ca.as_os_str().is_empty() {
            if files.cert.is_some() || files.key.is_some() {
                return Err(invalid(CA_FILE_ENV, "not set, but a TLS certificate or key is"));
            }
            return Ok(None);
        }
        Tls::load(&files).map(Some)
    }

    /// TLS from PEM text: `ca` to trust, and `identity` (certificate chain, key) to serve with.
    pub fn from_pem(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            roots.add(cert.map_err(|e| invalid("the CA certificate", e))?)?;
        }
        if roots.is_empty() {
            return Err(invalid("the CA certificate", "no certificate in it"));
        }
        let client = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let acceptor = match identity {
            None => None,
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("the TLS certificate", e))?;
                if chain.is_empty() {
                    return Err(invalid("the TLS certificate", "no certificate in it"));
                }
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid("the TLS key", e))?;
                let config = ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13])?
                    .with_no_client_auth()
                    .with_single_cert(chain, key)?;
                Some(TlsAcceptor::from(Arc::new(config)))
            }
        };
        Ok(Tls { connector: TlsConnector::from(Arc::new(client)), acceptor, server_name: None })
    }

    /// Checks every server's certificate for `name` instead of the host of its address.
    pub fn with_server_name(mut self, name: &str) -> Result<Tls, TlsError> {
        let name = ServerName::try_from(name.to_owned()).map_err(|e| invalid(SERVER_NAME_ENV, e))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// Whether this can serve (has a certificate and key), as masters and chunkservers must.
    pub fn serves(&self) -> bool {
        self.acceptor.is_some()
    }

    /// The name a server at `host` (a DNS name or an IP address, IPv6 with or without brackets) must
    /// prove.
    fn name_for(&self, host: &str) -> io::Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?} is no TLS server name: {e}")))
    }

    /// The TLS handshake with the server at `host` over `tcp`, its certificate verified.
    pub(crate) async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<client::TlsStream<TcpStream>> {
        let name = self.name_for(host)?;
        self.connector.connect(name, tcp).await
    }

    /// The server's side of the handshake; an error when this has no certificate to serve with.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<server::TlsStream<TcpStream>> {
        match &self.acceptor {
            Some(acceptor) => acceptor.accept(tcp).await,
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "no TLS certificate to serve with")),
        }
    }
}

/// The host part of `host:port` (`[v6]:port` keeps its brackets, which [`Tls`] strips).
pub(crate) fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// Test certificates: a CA, and a server certificate it signed for `localhost` and `127.0.0.1`.
#[cfg(test)]
pub(crate) mod testing {
    use super::Tls;

    pub struct Pki {
        pub ca: String,
        pub cert: String,
        pub key: String,
    }

    impl Pki {
        pub fn new() -> Pki {
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca_params.distinguished_name.push(rcgen::DnType::CommonName, "edd gfs test CA");
            let ca_key = rcgen::KeyPair::generate().expect("CA key");
            let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
            let params =
                rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &ca).expect("server certificate");
            Pki { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
        }

        /// What a master or chunkserver runs with.
        pub fn server(&self) -> Tls {
            Tls::from_pem(self.ca.as_bytes(), Some((self.cert.as_bytes(), self.key.as_bytes()))).expect("server TLS")
        }

        /// What a client runs with: the CA only.
        pub fn client(&self) -> Tls {
            Tls::from_pem(self.ca.as_bytes(), None).expect("client TLS")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_names() {
        assert_eq!(host_of("127.0.0.1:9000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9000"), "[::1]");
        assert_eq!(host_of("gfs-master-0.gfs:9000"), "gfs-master-0.gfs");
        let tls = testing::Pki::new().client();
        assert!(tls.name_for("[::1]").is_ok());
        assert!(tls.name_for("127.0.0.1").is_ok());
        assert!(tls.name_for("not a name").is_err());
        let fixed = tls.with_server_name("gfs.internal").expect("name");
        assert_eq!(fixed.name_for("10.0.0.7").expect("name"), ServerName::try_from("gfs.internal").expect("name"));
    }

    #[test]
    fn bad_material_is_refused() {
        let pki = testing::Pki::new();
        assert!(Tls::from_pem(b"", None).is_err());
        assert!(Tls::from_pem(pki.key.as_bytes(), None).is_err());
        assert!(Tls::from_pem(pki.ca.as_bytes(), Some((pki.cert.as_bytes(), b"no key"))).is_err());
        assert!(pki.server().serves() && !pki.client().serves());
        let files = TlsFiles { ca: "/nonexistent/ca.pem".into(), ..TlsFiles::default() };
        assert!(matches!(Tls::load(&files), Err(TlsError::Read { .. })));
        let half = TlsFiles { cert: Some("/x".into()), ..files };
        assert!(matches!(Tls::load(&half), Err(TlsError::Invalid { .. })));
    }
}
