//! `edd`: the one binary of Edd Cloud.
//!
//! `edd up` runs the platform locally; `edd events …` and `edd projections …` are the operator's view
//! of the event log and the read models built from it; `edd gfs …` runs and uses the file system;
//! `edd login`, `edd sa …`, `edd tokens …` and
//! `edd admin …` are the user's side of the auth service.

mod client;
mod commands;
mod output;
mod platform;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "edd", version, about = "Edd Cloud: a self-hosted cloud platform on an event log")]
struct Cli {
    #[command(flatten)]
    common: edd_kit::CommonArgs,
    #[command(flatten)]
    auth: client::AuthArgs,
    /// Show the log lines of the libraries a command uses (NATS connection notices and the like);
    /// without it, a command that is not a server logs only warnings and errors.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether the command runs a component in the foreground (its logs are its output).
    fn is_server(&self) -> bool {
        use commands::gfs::GfsCommand;
        matches!(self.command, Command::Up(_) | Command::Serve(_))
            || matches!(self.command, Command::Gfs(GfsCommand::Master(_) | GfsCommand::Chunkserver(_)))
    }

    /// The log filter: as given, except that a user command at the default level stays quiet.
    fn log_filter(&self) -> &str {
        if !self.is_server() && !self.verbose && self.common.log_level == edd_kit::config::DEFAULT_LOG_LEVEL {
            "warn"
        } else {
            &self.common.log_level
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform locally, in the foreground (Ctrl-C stops everything).
    Up(Box<commands::up::UpArgs>),
    /// Run one component in the foreground (as Kubernetes does).
    #[command(subcommand)]
    Serve(commands::serve::ServeCommand),
    /// The event log: tail it, generate its schema.
    #[command(subcommand)]
    Events(commands::events::EventsCommand),
    /// The distributed file system: run a master or chunkserver; status, ls, stat, put, get, rm.
    #[command(subcommand)]
    Gfs(commands::gfs::GfsCommand),
    /// Each service's database and its own login role.
    #[command(subcommand)]
    Db(commands::db::DbCommand),
    /// The broker: each component's identity and generated permissions; the streams.
    #[command(subcommand)]
    Nats(commands::nats::NatsCommand),
    /// The services' HTTP contracts: regenerate docs/openapi/.
    #[command(subcommand)]
    Api(commands::api::ApiCommand),
    /// Read models: status, rebuild, skip or resume a halted one.
    #[command(subcommand)]
    Projections(commands::projections::ProjectionsCommand),
    /// Log in to the auth service; the session is kept in ~/.config/edd/config.json.
    Login(commands::account::LoginArgs),
    /// Revoke the session and forget it.
    Logout,
    /// Who the current credential (session or EDD_TOKEN) belongs to.
    Whoami(commands::account::WhoamiArgs),
    /// Administration (an admin's session).
    Admin(commands::admin::AdminArgs),
    /// Service accounts: identities for machines, with scoped tokens.
    Sa(commands::service_accounts::SaArgs),
    /// Personal API tokens.
    Tokens(commands::tokens::TokensArgs),
    /// Files in the storage service: namespaces, ls, put, get, rm, share links, usage.
    Storage(commands::storage::StorageArgs),
    /// Your notifications: list, mark read, watch live, mute categories.
    Notifications(commands::notifications::NotificationsArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    edd_kit::telemetry::init(cli.common.log_format, cli.log_filter());
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let auth = &cli.auth;
    match cli.command {
        Command::Up(args) => commands::up::run(&cli.common, *args).await,
        Command::Serve(cmd) => commands::serve::run(&cli.common, cmd).await,
        Command::Events(cmd) => commands::events::run(&cli.common, cmd).await,
        Command::Api(cmd) => commands::api::run(cmd),
        Command::Db(cmd) => commands::db::run(&cli.common, cmd).await,
        Command::Nats(cmd) => commands::nats::run(&cli.common, cmd).await,
        Command::Projections(cmd) => commands::projections::run(&cli.common, cmd).await,
        Command::Gfs(cmd) => commands::gfs::run(&cli.common, cmd).await,
        Command::Login(args) => commands::account::login(auth, args).await,
        Command::Logout => commands::account::logout(auth).await,
        Command::Whoami(args) => commands::account::whoami(auth, args).await,
        Command::Admin(args) => commands::admin::run(auth, args).await,
        Command::Sa(args) => commands::service_accounts::run(auth, args).await,
        Command::Tokens(args) => commands::tokens::run(auth, args).await,
        Command::Storage(args) => commands::storage::run(auth, args).await,
        Command::Notifications(args) => commands::notifications::run(auth, args).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn json_and_auth_url_go_anywhere_after_their_group() {
        use clap::Parser as _;
        let cli = super::Cli::try_parse_from(["edd", "tokens", "ls", "--json", "--auth-url", "http://x"]).unwrap();
        assert_eq!(cli.auth.auth_url.as_deref(), Some("http://x"));
        let cli = super::Cli::try_parse_from(["edd", "--json", "sa", "ls"]);
        assert!(cli.is_err(), "--json belongs to a command group");
        let cli = super::Cli::try_parse_from(["edd", "sa", "create", "ci"]);
        assert!(cli.is_err(), "--scope is required");
        let cli = super::Cli::try_parse_from(["edd", "sa", "create", "ci", "--scope", "storage.u1"]);
        assert!(cli.is_err(), "a scope needs actions");
    }
}
