//! The storage service's settings; every flag also reads an `EDD_STORAGE_*` (or `EDD_GFS_*`) variable.

use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct StorageConfig {
    /// The GFS masters' RPC addresses, comma-separated.
    #[arg(long = "gfs-masters", env = "EDD_GFS_MASTERS", value_delimiter = ',', default_value = "127.0.0.1:19000")]
    pub gfs_masters: Vec<String>,
    /// The storage host's public URL (`https://storage.example.com`), which share links name;
    /// without it, a link names the host the request came to.
    #[arg(id = "storage_public_url", long = "storage-public-url", env = "EDD_STORAGE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Bytes each user may store in all their namespaces together.
    #[arg(id = "storage_quota_bytes", long = "storage-quota-bytes", env = "EDD_STORAGE_QUOTA_BYTES", default_value_t = 10 << 30)]
    pub quota_bytes: u64,
    /// Largest single upload.
    #[arg(id = "storage_max_upload_bytes", long = "storage-max-upload-bytes", env = "EDD_STORAGE_MAX_UPLOAD_BYTES", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 5 << 30)]
    pub max_upload_bytes: u64,
    /// Namespaces one user may own.
    #[arg(
        id = "storage_max_namespaces",
        long = "storage-max-namespaces",
        env = "EDD_STORAGE_MAX_NAMESPACES",
        default_value_t = 100
    )]
    pub max_namespaces: u64,
    /// An upload whose client sends nothing for this long is abandoned.
    #[arg(
        id = "storage_idle_timeout_secs",
        long = "storage-idle-timeout-secs",
        env = "EDD_STORAGE_IDLE_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..),
        default_value_t = 60
    )]
    pub idle_timeout_secs: u64,
    /// Longest time one upload may take, start to end (the request is cut then).
    #[arg(id = "storage_upload_deadline_secs", long = "storage-upload-deadline-secs", env = "EDD_STORAGE_UPLOAD_DEADLINE_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 6 * 3600)]
    pub upload_deadline_secs: u64,
    /// Uploads one user may run at once (each holds up to two GFS pieces of memory).
    #[arg(
        id = "storage_max_uploads_per_user",
        long = "storage-max-uploads-per-user",
        env = "EDD_STORAGE_MAX_UPLOADS_PER_USER", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        default_value_t = 4
    )]
    pub max_uploads_per_user: usize,
    /// Uploads this replica runs at once, over all users.
    #[arg(
        id = "storage_max_uploads",
        long = "storage-max-uploads",
        env = "EDD_STORAGE_MAX_UPLOADS", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        default_value_t = 64
    )]
    pub max_uploads: usize,
    /// Longest lifetime of a share link.
    #[arg(id = "storage_max_share_secs", long = "storage-max-share-secs", env = "EDD_STORAGE_MAX_SHARE_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 30 * 24 * 3600)]
    pub max_share_secs: u64,
    /// GFS files no file refers to are deleted once they were created this long ago. Keep it above
    /// the upload deadline: an upload still running is younger, one cut off by a crash is not.
    #[arg(
        id = "storage_sweep_grace_secs",
        long = "storage-sweep-grace-secs",
        env = "EDD_STORAGE_SWEEP_GRACE_SECS",
        default_value_t = 7 * 3600
    )]
    pub sweep_grace_secs: u64,
    /// How often the sweeper looks for such files.
    #[arg(
        id = "storage_sweep_interval_secs",
        long = "storage-sweep-interval-secs",
        env = "EDD_STORAGE_SWEEP_INTERVAL_SECS", value_parser = clap::value_parser!(u64).range(1..),
        default_value_t = 600
    )]
    pub sweep_interval_secs: u64,
}

impl StorageConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn upload_deadline(&self) -> Duration {
        Duration::from_secs(self.upload_deadline_secs)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            gfs_masters: vec!["127.0.0.1:19000".into()],
            public_url: None,
            quota_bytes: 10 << 30,
            max_upload_bytes: 5 << 30,
            max_namespaces: 100,
            idle_timeout_secs: 60,
            upload_deadline_secs: 6 * 3600,
            max_uploads_per_user: 4,
            max_uploads: 64,
            max_share_secs: 30 * 24 * 3600,
            sweep_grace_secs: 7 * 3600,
            sweep_interval_secs: 600,
        }
    }
}
