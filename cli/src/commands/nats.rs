//! `edd nats`: the broker's side of the platform — each component's identity, the permissions
//! generated for it from the event catalog, and the streams.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use edd_events::access;

#[derive(Subcommand)]
pub enum NatsCommand {
    /// Write every component's credential (kept where one exists; 0600) and the server's
    /// authorization, generated from the event catalog, to `<home>/nats/identities`. Start
    /// nats-server with `-c <that>/server.conf`; `edd up` does this by itself.
    Config {
        #[arg(long, env = "EDD_HOME", default_value = ".edd")]
        home: PathBuf,
    },
    /// Show what each identity may publish and subscribe to.
    Permissions {
        /// Only this identity (auth, gateway, storage, notify, gfs-master, edd).
        identity: Option<String>,
    },
    /// Create every stream, or update its settings, as the operator (`edd up` does this first; a
    /// cluster runs it once per release).
    Streams {
        /// Stream replicas (1 on a laptop, 3 on a cluster).
        #[arg(long, env = "EDD_STREAM_REPLICAS", default_value_t = 1)]
        replicas: usize,
    },
}

pub async fn run(common: &edd_kit::CommonArgs, cmd: NatsCommand) -> Result<()> {
    match cmd {
        NatsCommand::Config { home } => {
            let dir = home.join(edd_kit::config::NATS_IDENTITIES_DIR);
            let credentials =
                access::generate(&dir, &[]).with_context(|| format!("writing the identities in {}", dir.display()))?;
            println!("server configuration: {}", access::server_config_path(&dir).display());
            for name in credentials.keys() {
                println!("credential of {name}: {}", access::credential_path(&dir, name).display());
            }
            Ok(())
        }
        NatsCommand::Permissions { identity } => {
            let chosen: Vec<_> =
                access::IDENTITIES.iter().filter(|i| identity.as_deref().is_none_or(|n| n == i.name)).collect();
            if chosen.is_empty() {
                anyhow::bail!("no identity {:?}", identity.unwrap_or_default());
            }
            for i in chosen {
                let p = i.permissions();
                println!("{}\n  publish:   {}\n  subscribe: {}", i.name, p.publish.join(" "), p.subscribe.join(" "));
            }
            Ok(())
        }
        NatsCommand::Streams { replicas } => {
            let js = super::connect_nats(&common.nats_url).await?;
            edd_events::streams::ensure_streams(&js, edd_events::streams::ALL, replicas).await?;
            println!("streams: {}", edd_events::streams::ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", "));
            Ok(())
        }
    }
}
