//! `edd projections status|rebuild|skip|resume`.

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::platform;

#[derive(Subcommand)]
pub enum ProjectionsCommand {
    /// Checkpoint, stream head, lag, rate and state of every projection.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Replay a projection into fresh tables and swap them in; the live tables serve meanwhile.
    Rebuild {
        /// `service/projection`, e.g. `auth/users`.
        name: String,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Skip the event a halted projection is stuck on (recorded with who and why).
    Skip {
        name: String,
        /// The stream sequence it is halted at (see `status`).
        #[arg(long)]
        seq: u64,
        #[arg(long)]
        reason: String,
        /// Who is skipping; defaults to $USER.
        #[arg(long, env = "USER", default_value = "unknown")]
        actor: String,
    },
    /// Let a halted projection try its failing event again (after a fix).
    Resume { name: String },
}

pub async fn run(common: &edd_kit::CommonArgs, cmd: ProjectionsCommand) -> Result<()> {
    match cmd {
        ProjectionsCommand::Status { json } => status(common, json).await,
        ProjectionsCommand::Rebuild { name, batch } => rebuild(common, &name, batch).await,
        ProjectionsCommand::Skip { name, seq, reason, actor } => {
            let pool = pool_for(common, &name).await?;
            edd_projections::admin::skip(&pool, &name, seq, &actor, &reason).await?;
            println!("skipped {name} seq {seq} (recorded as {actor}: {reason})");
            Ok(())
        }
        ProjectionsCommand::Resume { name } => {
            let pool = pool_for(common, &name).await?;
            edd_projections::admin::resume(&pool, &name).await?;
            println!("resumed {name}");
            Ok(())
        }
    }
}

async fn pool_for(common: &edd_kit::CommonArgs, name: &str) -> Result<sqlx::PgPool> {
    let service = name.split('/').next().unwrap_or_default();
    let Some(service) = platform::SERVICES.iter().find(|s| s.name == service) else {
        bail!("no service {service:?}; projection names look like auth/users");
    };
    Ok(edd_projections::ensure_database(&common.database_url, service.database, 2).await?)
}

async fn status(common: &edd_kit::CommonArgs, json: bool) -> Result<()> {
    let js = super::connect_nats(&common.nats_url).await.ok();
    let mut rows = Vec::new();
    for service in platform::SERVICES {
        let pool = edd_projections::ensure_database(&common.database_url, service.database, 2).await?;
        let projections = (service.projections)();
        let filters = |name: &str| projections.iter().find(|p| p.name() == name).map(|p| p.filters());
        rows.extend(edd_projections::status::read(&pool, js.as_ref(), &filters).await?);
        pool.close().await;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no projections have run yet");
    } else {
        print!("{}", edd_projections::status::render_table(&rows));
    }
    if rows.iter().any(|r| r.state == "halted") {
        std::process::exit(2);
    }
    Ok(())
}

async fn rebuild(common: &edd_kit::CommonArgs, name: &str, batch: usize) -> Result<()> {
    let Some((service, projection)) = platform::find(name) else {
        let known = platform::all_names();
        bail!("no projection {name:?}; known: {}", if known.is_empty() { "none yet".into() } else { known.join(", ") });
    };
    let js = super::connect_nats(&common.nats_url).await?;
    let pool = edd_projections::ensure_database(&common.database_url, service.database, 4).await?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} seq  {per_sec}  ETA {eta}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    bar.set_message(name.to_owned());
    let report = edd_projections::rebuild::rebuild(&pool, &js, projection.as_ref(), batch, &mut |p| {
        bar.set_length(p.head);
        bar.set_position(p.position);
    })
    .await?;
    bar.finish_and_clear();
    println!(
        "rebuilt {name}: {} events ({} unknown skipped, {} operator skips) to seq {} in {:.1?} ({:.0} events/s)",
        report.events,
        report.skipped_unknown,
        report.operator_skips,
        report.position,
        report.elapsed,
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
