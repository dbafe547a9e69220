//! TLS termination: certificates from PEM files, chosen per connection by SNI (an exact name
//! first, then a `*.` wildcard, else the first certificate configured), reloaded when their files
//! change on disk, and the self-signed development certificate for `*.<base domain>`.
//!
//! Reloading polls the files' size and modification time: a handful of `stat`s a second costs
//! nothing, needs no inotify dependency and works on every filesystem (including the symlink swaps
//! Kubernetes uses for mounted secrets). A file caught half-written fails to load; the old
//! certificates stay in service and the next poll tries again.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use edd_kit::Shutdown;
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};

/// A certificate chain and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl FromStr for CertFiles {
    type Err = String;

    /// `cert.pem:key.pem`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (cert, key) = s
            .split_once(':')
            .filter(|(c, k)| !c.is_empty() && !k.is_empty())
            .ok_or_else(|| format!("{s:?} must look like CERT.pem:KEY.pem"))?;
        Ok(Self { cert: cert.into(), key: key.into() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no TLS certificate is configured")]
    NoCertificates,
    #[error("cannot make the development certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One loaded certificate and the DNS names (possibly `*.suffix`) it is for.
struct Loaded {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
}

/// Certificates by name, built once per (re)load.
struct Index {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl Index {
    fn build(loaded: Vec<Loaded>) -> Result<Self, TlsError> {
        let default = loaded.first().ok_or(TlsError::NoCertificates)?.key.clone();
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        // The first file naming a host wins, as the operator listed them.
        for cert in &loaded {
            for name in &cert.names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()).or_insert_with(|| cert.key.clone()),
                    None => exact.entry(name).or_insert_with(|| cert.key.clone()),
                };
            }
        }
        Ok(Self { exact, wildcard, default })
    }

    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        // A wildcard covers exactly one label (RFC 6125 §6.4.3).
        name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)).unwrap_or(&self.default).clone()
    }
}

/// What a file looked like when it was last loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    // `metadata` follows symlinks, so a swapped Kubernetes secret link counts as a change.
    fs::metadata(path).ok().map(|m| Stamp { modified: m.modified().ok(), len: m.len() })
}

/// The gateway's certificates; a rustls certificate resolver that can be reloaded in place.
pub struct CertStore {
    files: Vec<CertFiles>,
    provider: Arc<CryptoProvider>,
    index: RwLock<Arc<Index>>,
    stamps: Mutex<Vec<Option<Stamp>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("files", &self.files).finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads every certificate; any that fails to load fails the whole start.
    pub fn load(files: Vec<CertFiles>) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = Self::stamps(&files);
        let index = Index::build(Self::read_all(&files, &provider)?)?;
        Ok(Arc::new(Self { files, provider, index: RwLock::new(Arc::new(index)), stamps: Mutex::new(stamps) }))
    }

    /// The rustls configuration serving these certificates, offering HTTP/2 and HTTP/1.1 (ALPN).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reloads the certificates if any of their files changed. `Ok(true)` means new ones are in
    /// service; on an error the old ones stay.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = Self::stamps(&self.files);
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *stamps == now {
            return Ok(false);
        }
        let index = Index::build(Self::read_all(&self.files, &self.provider)?)?;
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        *stamps = now;
        Ok(true)
    }

    /// Polls the files every `every` until `shutdown`, swapping in changed certificates.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.wait() => return,
            }
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!("TLS certificates reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "TLS certificates changed but cannot be loaded; keeping the old ones")
                }
                Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
            }
        }
    }

    fn stamps(files: &[CertFiles]) -> Vec<Option<Stamp>> {
        files.iter().flat_map(|f| [stamp(&f.cert), stamp(&f.key)]).collect()
    }

    fn read_all(files: &[CertFiles], provider: &CryptoProvider) -> Result<Vec<Loaded>, TlsError> {
        files.iter().map(|f| read(f, provider)).collect()
    }

    fn current(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().pick(hello.server_name()))
    }
}

fn read(files: &CertFiles, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let invalid = |path: &Path, reason: String| TlsError::Invalid { path: path.to_owned(), reason };
    let cert_pem = fs::read(&files.cert).map_err(|source| TlsError::Read { path: files.cert.clone(), source })?;
    let key_pem = fs::read(&files.key).map_err(|source| TlsError::Read { path: files.key.clone(), source })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    let leaf = chain.first().ok_or_else(|| invalid(&files.cert, "holds no certificate".into()))?;
    let names: Vec<String> = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| invalid(&files.cert, format!("cannot parse the certificate: {e}")))?
        .valid_dns_names()
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err(invalid(&files.cert, "the certificate names no DNS host (subjectAltName)".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(&files.key, format!("not a PEM private key: {e}")))?;
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| invalid(&files.key, format!("does not match {}: {e}", files.cert.display())))?;
    Ok(Loaded { key: Arc::new(key), names })
}

/// The development certificate in `dir` for `names`, made (self-signed) on first use and reused
/// while it still covers every name. The key file is readable by its owner only.
///
/// Name every host explicitly: clients refuse a wildcard directly under a top-level name
/// (`*.localhost`), so the wildcard only helps lenient ones.
pub fn dev_certificate(dir: &Path, names: &[String]) -> Result<CertFiles, TlsError> {
    let files = CertFiles { cert: dir.join("dev-cert.pem"), key: dir.join("dev-key.pem") };
    if let Ok(existing) = read(&files, &rustls::crypto::ring::default_provider()) {
        if names.iter().all(|n| existing.names.iter().any(|e| e.eq_ignore_ascii_case(n))) {
            return Ok(files);
        }
    }
    let generated =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Read { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    write_atomically(&files.key, generated.signing_key.serialize_pem().as_bytes(), 0o600)
        .map_err(write_err(&files.key))?;
    write_atomically(&files.cert, generated.cert.pem().as_bytes(), 0o644).map_err(write_err(&files.cert))?;
    Ok(files)
}

/// Writes a sibling temporary file and renames it over `path`, so readers never see half a file.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_for(dir: &Path, stem: &str, names: &[&str]) -> CertFiles {
        let generated =
            rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let files = CertFiles { cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) };
        write_atomically(&files.key, generated.signing_key.serialize_pem().as_bytes(), 0o600).unwrap();
        write_atomically(&files.cert, generated.cert.pem().as_bytes(), 0o644).unwrap();
        files
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edd-tls-{name}-{}", uuid::Uuid::now_v7().simple()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn picks_exact_then_wildcard_then_default() {
        let dir = temp_dir("pick");
        let first = cert_for(&dir, "first", &["first.test"]);
        let wild = cert_for(&dir, "wild", &["*.example.test"]);
        let exact = cert_for(&dir, "exact", &["api.example.test"]);
        let store = CertStore::load(vec![first, wild, exact]).unwrap();
        let index = store.current();
        let leaf = |key: Arc<CertifiedKey>| key.cert[0].clone();
        assert_eq!(leaf(index.pick(Some("api.example.test"))), leaf(index.exact["api.example.test"].clone()));
        assert_eq!(leaf(index.pick(Some("WWW.example.test."))), leaf(index.wildcard["example.test"].clone()));
        // One label only, and unknown names get the default.
        assert_eq!(leaf(index.pick(Some("a.b.example.test"))), leaf(index.default.clone()));
        assert_eq!(leaf(index.pick(None)), leaf(index.exact["first.test"].clone()));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_old_certificate() {
        let dir = temp_dir("reload");
        let files = cert_for(&dir, "site", &["site.test"]);
        let store = CertStore::load(vec![files.clone()]).unwrap();
        assert!(!store.reload_if_changed().unwrap());
        let before = store.current().default.cert[0].clone();

        cert_for(&dir, "site", &["site.test", "other.test"]);
        assert!(store.reload_if_changed().unwrap());
        let after = store.current().default.cert[0].clone();
        assert_ne!(before, after);
        assert!(store.current().exact.contains_key("other.test"));

        fs::write(&files.cert, b"not a certificate").unwrap();
        assert!(matches!(store.reload_if_changed(), Err(TlsError::Invalid { .. })));
        assert_eq!(store.current().default.cert[0], after);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let dir = temp_dir("mismatch");
        let a = cert_for(&dir, "a", &["a.test"]);
        let b = cert_for(&dir, "b", &["b.test"]);
        let err = CertStore::load(vec![CertFiles { cert: a.cert, key: b.key }]).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_dev_certificate_is_made_once_and_again_when_names_are_added() {
        let dir = temp_dir("dev");
        let names = vec!["localhost".to_owned(), "auth.localhost".to_owned()];
        let files = dev_certificate(&dir, &names).unwrap();
        let pem = fs::read(&files.cert).unwrap();
        assert_eq!(dev_certificate(&dir, &names[..1]).unwrap(), files);
        assert_eq!(fs::read(&files.cert).unwrap(), pem, "still covers the names: reused");
        let store = CertStore::load(vec![files.clone()]).unwrap();
        assert!(store.current().exact.contains_key("auth.localhost"));

        let more = vec!["localhost".to_owned(), "auth.localhost".to_owned(), "storage.localhost".to_owned()];
        dev_certificate(&dir, &more).unwrap();
        assert_ne!(fs::read(&files.cert).unwrap(), pem, "a new name: made again");
        fs::remove_dir_all(dir).unwrap();
    }
}
