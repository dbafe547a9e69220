//! `edd gfs …`: run a GFS master or chunkserver in the foreground, and the operator's and user's view
//! of the file system (`status`, `ls`, `stat`, `put`, `get`, `rm`, namespaces).
//!
//! Secrets come from `EDD_GFS_CLUSTER_KEY[_FILE]` (masters and chunkservers) and
//! `EDD_GFS_CLIENT_SECRET[_FILE]` (clients); on a laptop, where `edd up` generated them, from
//! `<EDD_HOME>/gfs/cluster-key` and `<EDD_HOME>/gfs/client-secret`.
//!
//! TLS for both planes is off unless a CA is given ([`TlsArgs`]: `--tls-ca`, `--tls-cert`,
//! `--tls-key`, or `EDD_GFS_TLS_CA_FILE`, `EDD_GFS_TLS_CERT_FILE`, `EDD_GFS_TLS_KEY_FILE`); masters
//! and chunkservers then also need their certificate and key, and every command speaks only TLS.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use edd_gfs::client::{FileInfo, GfsClient, GfsConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use crate::output::{self, Output};

/// Where a local master listens (`edd up`, and the client commands' default).
pub const MASTER_ADDR: &str = "127.0.0.1:19000";
/// The data ports of `edd up`'s three chunkservers.
pub const CHUNKSERVER_ADDRS: [&str; 3] = ["127.0.0.1:19080", "127.0.0.1:19180", "127.0.0.1:19280"];

#[derive(Subcommand)]
pub enum GfsCommand {
    /// Run a master (metadata on the JetStream stream GFS; a second one is a standby).
    Master(Box<MasterArgs>),
    /// Run a chunkserver (chunks under --data-dir).
    Chunkserver(Box<ChunkserverArgs>),
    /// Masters, chunkservers (live or dead) and chunks lacking replicas.
    Status(ClientArgs),
    /// Namespaces, or the files of NAMESPACE[:/prefix].
    Ls(LsArgs),
    /// One file: NAMESPACE:/path.
    Stat(PathArgs),
    /// Upload a local file (or - for stdin) to NAMESPACE:/path.
    Put(PutArgs),
    /// Download NAMESPACE:/path to a local file (or - for stdout).
    Get(GetArgs),
    /// Delete NAMESPACE:/path (its chunks are collected lazily).
    Rm(PathArgs),
    /// Create a namespace.
    Mkns(NamespaceArgs),
    /// Delete an empty namespace.
    Rmns(NamespaceArgs),
}

#[derive(Args)]
pub struct MasterArgs {
    /// RPC listen address.
    #[arg(long, env = "EDD_GFS_MASTER_ADDR", default_value = "0.0.0.0:9000")]
    listen: String,
    /// The address clients and chunkservers reach this master at [default: the listen address].
    #[arg(long, env = "EDD_GFS_ADVERTISE")]
    advertise: Option<String>,
    /// This master's id (unique among the masters) (default: `master-<listen port>`).
    #[arg(long, env = "EDD_GFS_MASTER_ID")]
    id: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    timing: MasterTiming,
    /// Copies of the GFS stream, the election bucket and the snapshot bucket (3 on a cluster).
    #[arg(long, env = "EDD_STREAM_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Local state, for the generated secrets of a laptop setup.
    #[arg(long, env = "EDD_HOME", default_value = ".edd")]
    home: PathBuf,
}

/// The master's clocks, in seconds (flags or environment).
#[derive(Args, Clone, Copy)]
pub struct MasterTiming {
    /// The active master's lease in JetStream KV; a standby takes over within about this long.
    #[arg(long, env = "EDD_GFS_LEASE_TTL_SECS", default_value_t = 10)]
    lease_ttl_secs: u64,
    /// A chunkserver silent this long is dead and its chunks are re-replicated.
    #[arg(long, env = "EDD_GFS_CHUNKSERVER_TIMEOUT_SECS", default_value_t = 15)]
    chunkserver_timeout_secs: u64,
    /// Chunks no file owns are deleted this long after a chunkserver first reports them.
    #[arg(long, env = "EDD_GFS_ORPHAN_GRACE_SECS", default_value_t = 3600)]
    orphan_grace_secs: u64,
    /// A primary's lease on a chunk; a chunk being written is re-replicated once its lease ends.
    #[arg(long, env = "EDD_GFS_CHUNK_LEASE_SECS", default_value_t = 60)]
    chunk_lease_secs: u64,
}

#[derive(Args)]
pub struct ChunkserverArgs {
    /// Data plane listen address (clients and peer replicas).
    #[arg(long, env = "EDD_GFS_CHUNKSERVER_ADDR", default_value = "0.0.0.0:9080")]
    listen: String,
    /// The address clients and peers reach this chunkserver at [default: the listen address].
    #[arg(long, env = "EDD_GFS_ADVERTISE")]
    advertise: Option<String>,
    /// Where chunks are stored.
    #[arg(long, env = "EDD_GFS_DATA_DIR")]
    data_dir: PathBuf,
    /// The masters' RPC addresses, comma-separated.
    #[arg(long, env = "EDD_GFS_MASTERS", value_delimiter = ',', default_value = MASTER_ADDR)]
    masters: Vec<String>,
    /// Seconds between heartbeats.
    #[arg(long, env = "EDD_GFS_HEARTBEAT_SECS", default_value_t = 1)]
    heartbeat_secs: u64,
    /// Open data-plane connections at most (clients and peers); one more is closed at once.
    #[arg(long, env = "EDD_GFS_MAX_CONNECTIONS", default_value_t = edd_gfs::dataplane::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    #[command(flatten)]
    tls: TlsArgs,
    /// Local state, for the generated secrets of a laptop setup.
    #[arg(long, env = "EDD_HOME", default_value = ".edd")]
    home: PathBuf,
}

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The masters' RPC addresses, comma-separated.
    #[arg(long, env = "EDD_GFS_MASTERS", value_delimiter = ',', default_value = MASTER_ADDR, global = true)]
    masters: Vec<String>,
    /// Local state, for the client secret `edd up` generated.
    #[arg(long, env = "EDD_HOME", default_value = ".edd", global = true)]
    home: PathBuf,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    output: Output,
}

/// TLS for the control and data planes; off unless `--tls-ca` is given.
#[derive(Args, Clone, Default)]
pub struct TlsArgs {
    /// CA certificate (PEM) that masters' and chunkservers' certificates must chain to; turns TLS on
    /// (plaintext is then refused both ways).
    #[arg(long = "tls-ca", env = "EDD_GFS_TLS_CA_FILE")]
    tls_ca: Option<PathBuf>,
    /// This master's or chunkserver's certificate chain (PEM); required with --tls-ca for them.
    #[arg(long = "tls-cert", env = "EDD_GFS_TLS_CERT_FILE", requires = "tls_ca")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", env = "EDD_GFS_TLS_KEY_FILE", requires = "tls_ca")]
    tls_key: Option<PathBuf>,
    /// Check every server's certificate for this name instead of the host of its address.
    #[arg(long = "tls-server-name", env = "EDD_GFS_TLS_SERVER_NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The TLS these flags describe, `None` without a CA.
    pub fn load(&self) -> Result<Option<edd_gfs::tls::Tls>> {
        let non_empty = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        let Some(ca) = non_empty(&self.tls_ca) else { return Ok(None) };
        let files = edd_gfs::tls::TlsFiles {
            ca,
            cert: non_empty(&self.tls_cert),
            key: non_empty(&self.tls_key),
            server_name: self.tls_server_name.clone().filter(|n| !n.is_empty()),
        };
        Ok(Some(edd_gfs::tls::Tls::load(&files).context("GFS TLS")?))
    }

    /// [`load`](Self::load), for a master or chunkserver: with a CA, a certificate and key are needed.
    fn load_server(&self) -> Result<Option<edd_gfs::tls::Tls>> {
        let tls = self.load()?;
        if tls.as_ref().is_some_and(|tls| !tls.serves()) {
            bail!("GFS TLS: a server needs --tls-cert and --tls-key (EDD_GFS_TLS_CERT_FILE, EDD_GFS_TLS_KEY_FILE)");
        }
        Ok(tls)
    }
}

#[derive(Args)]
pub struct LsArgs {
    /// NAMESPACE or NAMESPACE:/prefix; none lists the namespaces.
    target: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct PathArgs {
    /// NAMESPACE:/path
    target: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct NamespaceArgs {
    name: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct PutArgs {
    /// A local file, or - for standard input.
    source: PathBuf,
    /// NAMESPACE:/path
    target: String,
    /// Replace an existing file (atomically).
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct GetArgs {
    /// NAMESPACE:/path
    source: String,
    /// A local file, or - for standard output [default: the file's name].
    target: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(common: &edd_kit::CommonArgs, cmd: GfsCommand) -> Result<()> {
    match cmd {
        GfsCommand::Master(args) => master(common, *args).await,
        GfsCommand::Chunkserver(args) => chunkserver(*args).await,
        GfsCommand::Status(args) => status(args).await,
        GfsCommand::Ls(args) => ls(args).await,
        GfsCommand::Stat(args) => stat(args).await,
        GfsCommand::Put(args) => put(args).await,
        GfsCommand::Get(args) => get(args).await,
        GfsCommand::Rm(args) => {
            let (ns, path) = split_target(&args.target)?;
            client(&args.client)?.delete(ns, path).await?;
            Ok(())
        }
        GfsCommand::Mkns(args) => Ok(client(&args.client)?.create_namespace(&args.name).await?),
        GfsCommand::Rmns(args) => Ok(client(&args.client)?.delete_namespace(&args.name).await?),
    }
}

// ---- secrets --------------------------------------------------------------------------------------

/// `EDD_<NAME>[_FILE]`, else `<home>/gfs/<file>`, else (only when `create`) a new random secret written
/// there with mode 0600.
pub fn local_secret(home: &Path, name: &str, file: &str, create: bool) -> Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(secret) = edd_kit::secret(name)? {
        return Ok(secret.into_bytes());
    }
    let path = home.join("gfs").join(file);
    match std::fs::read_to_string(&path) {
        Ok(secret) => return Ok(secret.trim().as_bytes().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) => bail!(
            "no GFS secret: set EDD_{name} (or EDD_{name}_FILE), or run `edd up` once to generate {} ({e})",
            path.display()
        ),
    }
    std::fs::create_dir_all(path.parent().unwrap_or(home))?;
    let secret = format!("{}{}", edd_events::Token::random(), edd_events::Token::random());
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(out, "{secret}")?;
    Ok(secret.into_bytes())
}

pub fn cluster_key(home: &Path, create: bool) -> Result<Vec<u8>> {
    local_secret(home, "GFS_CLUSTER_KEY", "cluster-key", create)
}

pub fn client_secret(home: &Path, create: bool) -> Result<Vec<u8>> {
    local_secret(home, "GFS_CLIENT_SECRET", "client-secret", create)
}

// ---- running components ---------------------------------------------------------------------------

pub fn master_config(
    id: String,
    advertise: String,
    nats_url: &str,
    home: &Path,
    (timing, replicas): (MasterTiming, usize),
    create_secrets: bool,
) -> Result<edd_gfs::master::service::MasterConfig> {
    Ok(edd_gfs::master::service::MasterConfig {
        id,
        advertise,
        nats_url: nats_url.to_owned(),
        nats_credential: edd_kit::nats_credential("gfs-master")?,
        cluster_key: cluster_key(home, create_secrets)?,
        client_secret: client_secret(home, create_secrets)?,
        lease_ttl: Duration::from_secs(timing.lease_ttl_secs.max(1)),
        chunkserver_timeout: Duration::from_secs(timing.chunkserver_timeout_secs.max(1)),
        orphan_grace: Duration::from_secs(timing.orphan_grace_secs),
        chunk_lease: Duration::from_secs(timing.chunk_lease_secs.max(1)),
        stream_replicas: replicas.max(1),
        ..edd_gfs::master::service::MasterConfig::default()
    })
}

impl Default for MasterTiming {
    fn default() -> Self {
        MasterTiming { lease_ttl_secs: 10, chunkserver_timeout_secs: 15, orphan_grace_secs: 3600, chunk_lease_secs: 60 }
    }
}

pub fn chunkserver_config(
    data_dir: PathBuf,
    advertise: String,
    masters: Vec<String>,
    home: &Path,
    heartbeat: Duration,
    create_secrets: bool,
) -> Result<edd_gfs::chunkserver::ChunkserverConfig> {
    Ok(edd_gfs::chunkserver::ChunkserverConfig {
        data_dir,
        advertise,
        masters,
        cluster_key: cluster_key(home, create_secrets)?,
        heartbeat_interval: heartbeat,
        ..edd_gfs::chunkserver::ChunkserverConfig::default()
    })
}

async fn master(common: &edd_kit::CommonArgs, args: MasterArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (set EDD_GFS_MASTER_ADDR)", args.listen))?;
    let local = listener.local_addr()?;
    let advertise = args.advertise.unwrap_or_else(|| local.to_string());
    let id = args.id.unwrap_or_else(|| format!("master-{}", local.port()));
    let mut config = master_config(id, advertise, &common.nats_url, &args.home, (args.timing, args.replicas), false)?;
    config.tls = args.tls.load_server()?;
    edd_gfs::master::service::run(config, listener, edd_kit::shutdown::signal()).await?;
    Ok(())
}

async fn chunkserver(args: ChunkserverArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (set EDD_GFS_CHUNKSERVER_ADDR)", args.listen))?;
    let advertise = args.advertise.unwrap_or_else(|| listener.local_addr().map(|a| a.to_string()).unwrap_or_default());
    let heartbeat = Duration::from_secs(args.heartbeat_secs.max(1));
    let mut config = chunkserver_config(args.data_dir, advertise, args.masters, &args.home, heartbeat, false)?;
    config.max_connections = args.max_connections.max(1);
    config.tls = args.tls.load_server()?;
    edd_gfs::chunkserver::run(config, listener, edd_kit::shutdown::signal()).await?;
    Ok(())
}

// ---- client commands ------------------------------------------------------------------------------

fn client(args: &ClientArgs) -> Result<GfsClient> {
    let mut config = GfsConfig::new(args.masters.clone(), client_secret(&args.home, false)?);
    config.tls = args.tls.load()?;
    Ok(GfsClient::new(config)?)
}

/// `NAMESPACE:/path` → (namespace, path).
fn split_target(target: &str) -> Result<(&str, &str)> {
    match target.split_once(':') {
        Some((ns, path)) if !ns.is_empty() && path.starts_with('/') => Ok((ns, path)),
        _ => bail!("expected NAMESPACE:/path, got {target:?}"),
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn file_json(f: &FileInfo) -> serde_json::Value {
    json!({
        "id": f.id, "namespace": f.namespace, "path": f.path, "length": f.length,
        "chunks": f.chunk_count, "created": rfc3339(f.created), "modified": rfc3339(f.modified),
    })
}

/// Each configured master on its own: its id, whether it is active, how far it has read the log.
async fn masters(args: &ClientArgs) -> Result<Vec<serde_json::Value>> {
    let secret = client_secret(&args.home, false)?;
    let tls = args.tls.load()?;
    let mut out = Vec::new();
    for addr in &args.masters {
        let mut config = GfsConfig::new(vec![addr.clone()], secret.clone());
        config.master.failover_timeout = Duration::from_secs(2);
        config.master.call_timeout = Duration::from_secs(5);
        config.tls = tls.clone();
        let row = match GfsClient::new(config)?.status().await {
            Ok(s) => json!({"addr": addr, "id": s.master_id, "role": if s.active { "active" } else { "standby" },
                            "last_seq": s.last_seq}),
            Err(e) => json!({"addr": addr, "role": "unreachable", "error": e.to_string()}),
        };
        out.push(row);
    }
    Ok(out)
}

async fn status(args: ClientArgs) -> Result<()> {
    let masters = masters(&args).await?;
    let status = client(&args)?.status().await?;
    let servers: Vec<serde_json::Value> = status
        .chunkservers
        .iter()
        .map(|c| {
            json!({"id": c.id, "addr": c.addr, "alive": c.alive, "chunks": c.chunks,
                   "free_bytes": c.free_bytes, "last_seen_ms_ago": c.last_seen_ms_ago})
        })
        .collect();
    let answer = json!({
        "master": status.master_id, "active": status.active, "active_addr": status.active_addr,
        "last_seq": status.last_seq, "files": status.files, "chunks": status.chunks,
        "under_replicated": status.under_replicated, "missing": status.missing, "garbage": status.garbage,
        "clones_in_flight": status.clones_in_flight, "chunkservers": servers, "masters": masters,
    });
    if args.output.json {
        return output::print_json(&answer);
    }
    print!(
        "{}",
        output::fields(&[
            ("master", format!("{} ({})", status.master_id, if status.active { "active" } else { "standby" })),
            ("active master", status.active_addr.clone()),
            ("log sequence", status.last_seq.to_string()),
            ("files", status.files.to_string()),
            ("chunks", status.chunks.to_string()),
            ("under-replicated", status.under_replicated.to_string()),
            ("missing", status.missing.to_string()),
            ("garbage", status.garbage.to_string()),
            ("clones in flight", status.clones_in_flight.to_string()),
        ])
    );
    let rows: Vec<Vec<String>> = masters
        .iter()
        .map(|m| {
            let field = |k: &str| output::cell(&m[k]);
            vec![field("addr"), field("id"), field("role"), field("last_seq")]
        })
        .collect();
    println!();
    print!("{}", output::table(&["MASTER", "ID", "ROLE", "LOG SEQUENCE"], &rows));
    let rows: Vec<Vec<String>> = status
        .chunkservers
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.addr.clone(),
                if c.alive { "live" } else { "dead" }.to_owned(),
                c.chunks.to_string(),
                format!("{:.1}", c.free_bytes as f64 / GIB),
                format!("{:.1}s", c.last_seen_ms_ago as f64 / 1000.0),
            ]
        })
        .collect();
    println!();
    print!("{}", output::table(&["CHUNKSERVER", "ADDRESS", "STATE", "CHUNKS", "FREE GIB", "LAST SEEN"], &rows));
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

async fn ls(args: LsArgs) -> Result<()> {
    let gfs = client(&args.client)?;
    let json_out = args.client.output.json;
    let Some(target) = args.target else {
        let namespaces = gfs.namespaces().await?;
        if json_out {
            let list: Vec<_> = namespaces
                .iter()
                .map(|n| json!({"name": n.name, "files": n.file_count, "created": rfc3339(n.created)}))
                .collect();
            return output::print_json(&json!(list));
        }
        let rows: Vec<Vec<String>> =
            namespaces.iter().map(|n| vec![n.name.clone(), n.file_count.to_string()]).collect();
        print!("{}", output::table(&["NAMESPACE", "FILES"], &rows));
        return Ok(());
    };
    let (ns, prefix) = target.split_once(':').unwrap_or((&target, ""));
    let mut files = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = gfs.list(ns, prefix, after.as_deref(), 1000).await?;
        files.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if json_out {
        return output::print_json(&json!(files.iter().map(file_json).collect::<Vec<_>>()));
    }
    let rows: Vec<Vec<String>> =
        files.iter().map(|f| vec![f.path.clone(), f.length.to_string(), f.chunk_count.to_string()]).collect();
    print!("{}", output::table(&["PATH", "BYTES", "CHUNKS"], &rows));
    Ok(())
}

async fn stat(args: PathArgs) -> Result<()> {
    let (ns, path) = split_target(&args.target)?;
    let file = client(&args.client)?.stat(ns, path).await?;
    if args.client.output.json {
        return output::print_json(&file_json(&file));
    }
    print!(
        "{}",
        output::fields(&[
            ("path", format!("{}:{}", file.namespace, file.path)),
            ("id", file.id.clone()),
            ("bytes", file.length.to_string()),
            ("chunks", file.chunk_count.to_string()),
            ("created", rfc3339(file.created)),
            ("modified", rfc3339(file.modified)),
        ])
    );
    Ok(())
}

fn progress(total: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Copies `reader` to `writer` in 1 MiB steps, advancing `bar` by what was written.
async fn copy_with_progress<R, W>(mut reader: R, writer: &mut W, bar: &ProgressBar) -> std::io::Result<u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0; 1024 * 1024];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        writer.write_all(&buf[..n]).await?;
        total += n as u64;
        bar.inc(n as u64);
    }
}

fn summary(bytes: u64, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    format!("{:.1} MiB in {secs:.2}s ({:.1} MiB/s)", bytes as f64 / MIB, bytes as f64 / MIB / secs)
}

async fn put(args: PutArgs) -> Result<()> {
    let (ns, path) = split_target(&args.target)?;
    let gfs = client(&args.client)?;
    let quiet = args.client.output.json;
    let (reader, total): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) = if args.source.as_os_str() == "-"
    {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(&args.source)
            .await
            .with_context(|| format!("cannot open {}", args.source.display()))?;
        let len = file.metadata().await?.len();
        (Box::new(file), Some(len))
    };
    if !args.overwrite && gfs.stat(ns, path).await.is_ok() {
        bail!("{ns}:{path} exists (use --overwrite to replace it)");
    }
    // Written under a temporary name and renamed into place: readers see the old file or the whole new
    // one, never a part.
    let temp = format!("{path}.upload-{}", edd_events::Token::random());
    let file = gfs.create(ns, &temp).await?;
    let bar = progress(total, quiet);
    let started = Instant::now();
    let copied = async {
        let mut writer = gfs.writer(&file.id, 0);
        let n = copy_with_progress(reader, &mut writer, &bar).await?;
        writer.shutdown().await?;
        anyhow::Ok(n)
    }
    .await;
    let bytes = match copied {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = gfs.delete(ns, &temp).await;
            return Err(e.context(format!("uploading to {ns}:{path}")));
        }
    };
    let placed = gfs.rename(ns, &temp, path, args.overwrite).await;
    if let Err(e) = placed {
        let _ = gfs.delete(ns, &temp).await;
        return Err(e.into());
    }
    bar.finish_and_clear();
    if quiet {
        return output::print_json(&json!({"namespace": ns, "path": path, "bytes": bytes}));
    }
    eprintln!("uploaded {ns}:{path}: {}", summary(bytes, started));
    Ok(())
}

async fn get(args: GetArgs) -> Result<()> {
    let (ns, path) = split_target(&args.source)?;
    let gfs = client(&args.client)?;
    let file = gfs.stat(ns, path).await?;
    let target = args.target.unwrap_or_else(|| PathBuf::from(path.rsplit('/').next().unwrap_or("download")));
    let to_stdout = target.as_os_str() == "-";
    let bar = progress(Some(file.length), args.client.output.json || to_stdout);
    let started = Instant::now();
    let reader = gfs.reader(&file.id, 0, None);
    let bytes = if to_stdout {
        let mut out = tokio::io::stdout();
        let n = copy_with_progress(reader, &mut out, &bar).await?;
        out.flush().await?;
        n
    } else {
        // Into a temporary file first, so a failed download never leaves a truncated target behind.
        let partial = {
            let mut name = target.clone().into_os_string();
            name.push(".partial");
            PathBuf::from(name)
        };
        let mut out =
            tokio::fs::File::create(&partial).await.with_context(|| format!("cannot create {}", partial.display()))?;
        let copied = copy_with_progress(reader, &mut out, &bar).await;
        let n = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(anyhow::Error::from(e).context(format!("downloading {ns}:{path}")));
            }
        };
        out.sync_all().await?;
        tokio::fs::rename(&partial, &target).await?;
        n
    };
    bar.finish_and_clear();
    if bytes != file.length {
        bail!("downloaded {bytes} bytes of {ns}:{path}, expected {}", file.length);
    }
    if !to_stdout {
        eprintln!("downloaded {ns}:{path} to {}: {}", target.display(), summary(bytes, started));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_namespace_and_an_absolute_path() {
        assert_eq!(split_target("logs:/a/b").unwrap(), ("logs", "/a/b"));
        assert!(split_target("logs").is_err());
        assert!(split_target(":/a").is_err());
        assert!(split_target("logs:a").is_err());
    }
}
