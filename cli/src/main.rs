//! `edd`: the one binary of Edd Cloud.
//!
//! `edd up` runs the platform locally; `edd events …` and `edd projections …` are the operator's view
//! of the event log and the read models built from it.

mod commands;
mod platform;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "edd", version, about = "Edd Cloud: a self-hosted cloud platform on an event log")]
struct Cli {
    #[command(flatten)]
    common: edd_kit::CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform locally, in the foreground (Ctrl-C stops everything).
    Up(commands::up::UpArgs),
    /// The event log: tail it, generate its schema.
    #[command(subcommand)]
    Events(commands::events::EventsCommand),
    /// Read models: status, rebuild, skip or resume a halted one.
    #[command(subcommand)]
    Projections(commands::projections::ProjectionsCommand),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    edd_kit::telemetry::init(cli.common.log_format, &cli.common.log_level);
    match cli.command {
        Command::Up(args) => commands::up::run(&cli.common, args).await,
        Command::Events(cmd) => commands::events::run(&cli.common, cmd).await,
        Command::Projections(cmd) => commands::projections::run(&cli.common, cmd).await,
    }
}
