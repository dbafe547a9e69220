//! A GFS cluster of real processes for a test: masters and chunkservers are `edd gfs master` and
//! `edd gfs chunkserver` children on ephemeral ports, against the test's own nats-server, each with
//! its own data directory and log file under a temporary directory. They can be SIGKILLed and
//! restarted (with the same data and port) one by one; everything is killed on drop.
//!
//! [`GfsCluster::start_tls`] runs every process with TLS on both planes: a CA and a certificate for
//! `127.0.0.1`/`localhost` made with rcgen, their PEM files under the cluster's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{eventually, Service};
use anyhow::{bail, Context as _};
use edd_gfs::client::{GfsClient, GfsConfig};
use edd_gfs::tls::Tls;

pub const CLUSTER_KEY: &str = "it-cluster-key-0123456789abcdef";
pub const CLIENT_SECRET: &str = "it-client-secret-0123456789abcdef";

/// The clocks of a test cluster: short, so that deaths and takeovers happen within a test.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease_ttl_secs: u64,
    pub chunkserver_timeout_secs: u64,
    pub orphan_grace_secs: u64,
    pub chunk_lease_secs: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { lease_ttl_secs: 2, chunkserver_timeout_secs: 3, orphan_grace_secs: 3600, chunk_lease_secs: 5 }
    }
}

pub struct GfsCluster {
    dir: PathBuf,
    nats_url: String,
    /// The masters' NATS identity (`gfs-master`).
    nats_credentials: PathBuf,
    timing: Timing,
    /// Master RPC addresses, in the order of `masters`.
    pub master_addrs: Vec<String>,
    masters: Vec<Service>,
    chunkservers: Vec<Service>,
    /// Chunkserver data plane addresses.
    pub chunkserver_addrs: Vec<String>,
    /// With TLS: the CA (PEM) clients trust; the servers' files are `ca.pem`, `cert.pem`, `key.pem`
    /// under `dir`.
    tls_ca: Option<String>,
}

/// Writes a CA and a server certificate it signed for `127.0.0.1` and `localhost` (PEM) into `dir`;
/// returns the CA.
fn write_pki(dir: &Path) -> anyhow::Result<String> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "edd it GFS CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?.signed_by(&key, &ca)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(ca.pem())
}

/// The `edd` binary of the same build as the running executable: beside it (a bench binary in
/// `target/<profile>/`) or one level up (a test in `target/<profile>/deps/`). Built if missing.
pub fn edd_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable location")?;
    if dir.join("edd").exists() {
        return Ok(dir.join("edd"));
    }
    let bin = dir.parent().context("test executable location")?.join("edd");
    if !bin.exists() {
        let status = std::process::Command::new(env!("CARGO")).args(["build", "-p", "edd", "--bin", "edd"]).status()?;
        if !status.success() {
            bail!("building the edd binary failed");
        }
    }
    Ok(bin)
}

/// A port nothing listens on right now (bound and released; a process started next takes it).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl GfsCluster {
    /// `masters` masters (the first becomes active; the others are standbys) and `chunkservers`
    /// chunkservers; returns once a master is active and every chunkserver is live.
    pub async fn start(
        nats: &crate::NatsServer,
        masters: usize,
        chunkservers: usize,
        timing: Timing,
    ) -> anyhow::Result<Self> {
        Self::start_with(nats, masters, chunkservers, timing, false).await
    }

    /// [`start`](Self::start), every process with TLS on both planes (plaintext refused).
    pub async fn start_tls(
        nats: &crate::NatsServer,
        masters: usize,
        chunkservers: usize,
        timing: Timing,
    ) -> anyhow::Result<Self> {
        Self::start_with(nats, masters, chunkservers, timing, true).await
    }

    async fn start_with(
        nats: &crate::NatsServer,
        masters: usize,
        chunkservers: usize,
        timing: Timing,
        tls: bool,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("edd-it-gfs-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir)?;
        let tls_ca = if tls { Some(write_pki(&dir)?) } else { None };
        let mut cluster = GfsCluster {
            dir,
            nats_url: nats.url(),
            nats_credentials: nats.credential_file("gfs-master"),
            timing,
            master_addrs: Vec::new(),
            masters: Vec::new(),
            chunkservers: Vec::new(),
            chunkserver_addrs: Vec::new(),
            tls_ca,
        };
        for n in 0..masters {
            cluster.master_addrs.push(format!("127.0.0.1:{}", free_port()?));
            let addr = cluster.master_addrs[n].clone();
            let name = format!("master-{}", n + 1);
            let args: Vec<String> = ["gfs", "master", "--listen", &addr, "--advertise", &addr, "--id", &name]
                .into_iter()
                .map(String::from)
                .collect();
            let node = cluster.spawn(&name, &addr, &args, None)?;
            cluster.masters.push(node);
            if n == 0 {
                // The first master wins the election before any standby exists.
                if let Err(e) = cluster.wait_active().await {
                    return Err(e.context(cluster.logs()));
                }
            }
        }
        for _ in 0..chunkservers {
            cluster.add_chunkserver()?;
        }
        if let Err(e) = cluster.wait_live(chunkservers).await {
            return Err(e.context(cluster.logs()));
        }
        Ok(cluster)
    }

    /// Starts one more chunkserver (not waiting for it to register).
    pub fn add_chunkserver(&mut self) -> anyhow::Result<usize> {
        self.add_chunkserver_keyed(None)
    }

    /// Starts a chunkserver that holds the wrong cluster key.
    pub fn add_chunkserver_with_key(&mut self, key: &[u8]) -> anyhow::Result<usize> {
        self.add_chunkserver_keyed(Some(key.to_vec()))
    }

    fn add_chunkserver_keyed(&mut self, cluster_key: Option<Vec<u8>>) -> anyhow::Result<usize> {
        let n = self.chunkservers.len();
        let addr = format!("127.0.0.1:{}", free_port()?);
        let data = self.dir.join(format!("chunkserver-{}", n + 1));
        let args = vec![
            "gfs".to_owned(),
            "chunkserver".to_owned(),
            "--listen".to_owned(),
            addr.clone(),
            "--advertise".to_owned(),
            addr.clone(),
            "--data-dir".to_owned(),
            data.display().to_string(),
            "--masters".to_owned(),
            self.master_addrs.join(","),
        ];
        let node = self.spawn(&format!("chunkserver-{}", n + 1), &addr, &args, cluster_key.as_deref())?;
        self.chunkservers.push(node);
        self.chunkserver_addrs.push(addr);
        Ok(n)
    }

    /// Starts `edd <args>` as node `name` listening at `addr`, its output in `<name>.log`.
    fn spawn(&self, name: &str, addr: &str, args: &[String], cluster_key: Option<&[u8]>) -> anyhow::Result<Service> {
        let mut command = std::process::Command::new(edd_binary()?);
        command
            .args(["--log-format", "pretty", "--log-level", "info"])
            .args(args)
            .env("EDD_NATS_URL", &self.nats_url)
            .env("EDD_NATS_CREDENTIALS_FILE", &self.nats_credentials)
            .env("EDD_HOME", &self.dir)
            .env("EDD_GFS_CLUSTER_KEY", cluster_key.unwrap_or(CLUSTER_KEY.as_bytes()).escape_ascii().to_string())
            .env("EDD_GFS_CLIENT_SECRET", CLIENT_SECRET)
            .env("EDD_GFS_LEASE_TTL_SECS", self.timing.lease_ttl_secs.to_string())
            .env("EDD_GFS_CHUNKSERVER_TIMEOUT_SECS", self.timing.chunkserver_timeout_secs.to_string())
            .env("EDD_GFS_ORPHAN_GRACE_SECS", self.timing.orphan_grace_secs.to_string())
            .env("EDD_GFS_CHUNK_LEASE_SECS", self.timing.chunk_lease_secs.to_string());
        if self.tls_ca.is_some() {
            command
                .env("EDD_GFS_TLS_CA_FILE", self.dir.join("ca.pem"))
                .env("EDD_GFS_TLS_CERT_FILE", self.dir.join("cert.pem"))
                .env("EDD_GFS_TLS_KEY_FILE", self.dir.join("key.pem"));
        }
        Service::process(name, format!("http://{addr}"), command, self.dir.join(format!("{name}.log")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A chunkserver's data directory (its chunks are under `chunks/`).
    pub fn chunkserver_dir(&self, n: usize) -> PathBuf {
        self.dir.join(format!("chunkserver-{}", n + 1))
    }

    /// A client of this cluster, with short deadlines so a test sees failures quickly.
    /// Over TLS when the cluster runs it.
    pub fn client(&self) -> anyhow::Result<GfsClient> {
        let tls = match &self.tls_ca {
            Some(ca) => Some(Tls::from_pem(ca.as_bytes(), None)?),
            None => None,
        };
        self.client_with(tls)
    }

    /// A client with `tls` (or plaintext), whatever the cluster runs.
    pub fn client_with(&self, tls: Option<Tls>) -> anyhow::Result<GfsClient> {
        let mut config = GfsConfig::new(self.master_addrs.clone(), CLIENT_SECRET.as_bytes().to_vec());
        config.tls = tls;
        Ok(GfsClient::new(config)?)
    }

    /// SIGKILLs chunkserver `n`, as a crash would.
    pub async fn kill_chunkserver(&mut self, n: usize) -> anyhow::Result<()> {
        self.chunkservers[n].kill().await
    }

    /// Starts chunkserver `n` again with the same data directory and address.
    pub fn restart_chunkserver(&mut self, n: usize) -> anyhow::Result<()> {
        self.chunkservers[n].respawn()
    }

    pub async fn kill_master(&mut self, n: usize) -> anyhow::Result<()> {
        self.masters[n].kill().await
    }

    pub fn restart_master(&mut self, n: usize) -> anyhow::Result<()> {
        self.masters[n].respawn()
    }

    /// Waits until some master answers as the active one; returns its address.
    pub async fn wait_active(&self) -> anyhow::Result<String> {
        let client = self.client()?;
        eventually(Duration::from_secs(60), "an active GFS master", || async {
            let status = client.status().await?;
            Ok(status.active.then_some(status.active_addr))
        })
        .await
    }

    /// Waits until the active master counts `n` live chunkservers.
    pub async fn wait_live(&self, n: usize) -> anyhow::Result<()> {
        let client = self.client()?;
        eventually(Duration::from_secs(60), &format!("{n} live chunkservers"), || async {
            let status = client.status().await?;
            let live = status.chunkservers.iter().filter(|c| c.alive).count();
            Ok((status.active && live == n).then_some(()))
        })
        .await
    }

    /// Waits until no chunk lacks a replica (`under_replicated == 0` and nothing missing).
    pub async fn wait_fully_replicated(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = self.client()?;
        eventually(timeout, "every chunk to have its replicas", || async {
            let status = client.status().await?;
            Ok((status.active && status.under_replicated == 0 && status.missing == 0).then_some(()))
        })
        .await
    }

    /// The last lines of every process log, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in self.masters.iter().chain(&self.chunkservers) {
            let text = node.log();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {} ---\n", node.name()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for GfsCluster {
    fn drop(&mut self) {
        for node in self.masters.iter_mut().chain(self.chunkservers.iter_mut()) {
            node.start_kill();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
