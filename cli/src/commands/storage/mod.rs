//! `edd storage …`: the user's side of the storage service — namespaces, files (streamed up and down
//! with progress and SHA-256 verification, downloads resumable), share links, usage and status.
//!
//! The service is at `--storage-url`/`EDD_STORAGE_URL` when given, else next to the auth service
//! (see [`crate::client::service_url`]); requests carry the same credential as the account commands.
//! Files are named `NAMESPACE/PATH`.
//!
//! One module per group of subcommands: [`namespaces`] (`ns …`), [`files`] (`ls`, `put`, `get`),
//! [`shares`] (`share`, `shares`), [`usage`] (`usage`, `status`); `rm` and `unshare` are one call each,
//! here.

mod files;
mod namespaces;
mod shares;
mod usage;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use crate::client::AuthArgs;
use crate::output::{cell, print_json, Output};

#[derive(Args)]
pub struct StorageArgs {
    /// Storage service URL [default: next to the auth service, e.g. http://127.0.0.1:18082].
    #[arg(long, env = "EDD_STORAGE_URL", global = true)]
    storage_url: Option<String>,
    #[command(flatten)]
    output: Output,
    #[command(subcommand)]
    command: StorageCommand,
}

#[derive(Subcommand)]
pub enum StorageCommand {
    /// Namespaces: ls, create, rm, visibility.
    #[command(subcommand)]
    Ns(NsCommand),
    /// The files of a namespace (the first page; --all for every one).
    #[command(alias = "list")]
    Ls {
        namespace: String,
        /// Only paths starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Fetch every page, not only the first.
        #[arg(long)]
        all: bool,
    },
    /// Upload a local file (or - for standard input) to NAMESPACE/PATH.
    Put {
        /// A local file, or - for standard input.
        source: PathBuf,
        /// NAMESPACE/PATH
        target: String,
        /// Replace an existing file.
        #[arg(long)]
        overwrite: bool,
    },
    /// Download NAMESPACE/PATH to a local file (or - for standard output); an interrupted download
    /// resumes where it stopped when run again.
    Get {
        /// NAMESPACE/PATH
        source: String,
        /// A local file or directory, or - for standard output [default: the file's name].
        target: Option<PathBuf>,
    },
    /// Delete NAMESPACE/PATH.
    Rm {
        /// NAMESPACE/PATH
        target: String,
    },
    /// Create a share link to NAMESPACE/PATH: anyone holding it can read the file until it expires.
    Share {
        /// NAMESPACE/PATH
        target: String,
        /// How long the link works: seconds, or a number with s, m, h, d or w [default: 1d].
        #[arg(long, value_parser = parse_duration)]
        expires: Option<u64>,
    },
    /// Your share links, newest first.
    Shares,
    /// Revoke a share link.
    Unshare { id: String },
    /// Your bytes and files against the quota.
    Usage,
    /// The health of the file system behind the service.
    Status,
}

#[derive(Subcommand)]
pub enum NsCommand {
    /// Your namespaces.
    #[command(alias = "list")]
    Ls,
    /// Create a namespace (private unless --public).
    Create {
        name: String,
        /// Anyone may read its files (with the link; namespaces are never listed to others).
        #[arg(long)]
        public: bool,
    },
    /// Delete a namespace and every file in it.
    Rm {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Make a namespace public or private.
    Visibility { name: String, visibility: Visibility },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

pub async fn run(auth: &AuthArgs, args: StorageArgs) -> Result<()> {
    let client = auth.service_client("storage", args.storage_url.as_deref())?;
    let output = args.output;
    match args.command {
        StorageCommand::Ns(cmd) => namespaces::run(&client, output, cmd).await,
        StorageCommand::Ls { namespace, prefix, all } => {
            files::ls(&client, output, &namespace, prefix.as_deref(), all).await
        }
        StorageCommand::Put { source, target, overwrite } => {
            files::put(&client, output, &source, &target, overwrite).await
        }
        StorageCommand::Get { source, target } => files::get(&client, output, &source, target).await,
        StorageCommand::Rm { target } => {
            let (ns, path) = split_target(&target)?;
            let answer = client.delete(&file_segments(&["storage", ns], path)).await?;
            if output.json {
                return print_json(&answer);
            }
            println!("Deleted {ns}/{path}");
            Ok(())
        }
        StorageCommand::Share { target, expires } => shares::share(&client, output, &target, expires).await,
        StorageCommand::Shares => shares::list(&client, output).await,
        StorageCommand::Unshare { id } => {
            let answer = client.delete(&["storage", "shares", &id]).await?;
            if output.json {
                return print_json(&answer);
            }
            println!("Revoked share link {id}");
            Ok(())
        }
        StorageCommand::Usage => usage::usage(&client, output).await,
        StorageCommand::Status => usage::status(&client, output).await,
    }
}

// ---- names and values ------------------------------------------------------------------------------

/// `NAMESPACE/PATH` → (namespace, path): the namespace up to the first `/`, the rest the path, with
/// no empty segment in it.
fn split_target(target: &str) -> Result<(&str, &str)> {
    match target.split_once('/') {
        Some((ns, path)) if !ns.is_empty() && !path.is_empty() && !path.split('/').any(str::is_empty) => Ok((ns, path)),
        Some((ns, path)) if !ns.is_empty() && !path.is_empty() => {
            bail!("{target:?} has an empty path segment (a doubled or trailing /)")
        }
        _ => bail!("expected NAMESPACE/PATH, e.g. photos/2024/cat.jpg; got {target:?}"),
    }
}

/// The URL segments of a file: `prefix` then the path's own segments (each percent-encoded by
/// [`ApiClient::url`](crate::client::ApiClient::url), the slashes kept as separators).
fn file_segments<'a>(prefix: &[&'a str], path: &'a str) -> Vec<&'a str> {
    prefix.iter().copied().chain(path.split('/')).collect()
}

/// `90` (seconds), `30s`, `15m`, `1h`, `2d`, `1w` → seconds; not zero.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let invalid = || format!("{s:?} is not a duration: write seconds, or a number with s, m, h, d or w (e.g. 1h, 2d)");
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(invalid()),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("a duration must be longer than zero".to_owned()),
        Some(secs) => Ok(secs),
        None => Err(format!("{s:?} is too long")),
    }
}

/// `1536` → `1.5 KiB`; bytes below 1 KiB as they are.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A byte count from the API as a size cell.
fn size_cell(value: &Value) -> String {
    value.as_u64().map_or_else(|| cell(value), human_bytes)
}

/// An RFC 3339 time from the API, to the second (`2024-05-01T12:00:00Z`).
fn time_cell(value: &Value) -> String {
    let format = &time::format_description::well_known::Rfc3339;
    value
        .as_str()
        .and_then(|s| time::OffsetDateTime::parse(s, format).ok())
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(format).ok())
        .unwrap_or_else(|| cell(value))
}

/// `text/plain; charset=utf-8` → `text/plain`.
fn type_cell(value: &Value) -> String {
    let full = cell(value);
    full.split(';').next().unwrap_or_default().trim().to_owned()
}

const MIB: f64 = 1024.0 * 1024.0;

fn summary(bytes: u64, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    format!("{} in {secs:.2}s ({:.1} MiB/s)", human_bytes(bytes), bytes as f64 / MIB / secs)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::client::ApiClient;

    #[test]
    fn targets_are_a_namespace_and_a_path() {
        assert_eq!(split_target("photos/cat.jpg").unwrap(), ("photos", "cat.jpg"));
        assert_eq!(split_target("photos/2024/05/cat.jpg").unwrap(), ("photos", "2024/05/cat.jpg"));
        assert!(split_target("photos").is_err());
        assert!(split_target("photos/").is_err());
        assert!(split_target("/cat.jpg").is_err());
        assert!(split_target("photos//cat.jpg").is_err());
        assert!(split_target("photos/a/").is_err());
        assert_eq!(file_segments(&["storage", "photos"], "a b/c?d"), ["storage", "photos", "a b", "c?d"]);
    }

    #[test]
    fn file_urls_keep_slashes_and_encode_the_rest() {
        let client = ApiClient::new("http://h:1", None).unwrap();
        let url = client.url(&file_segments(&["storage", "download", "ns"], "dir/a b?.txt"));
        assert_eq!(url.as_str(), "http://h:1/storage/download/ns/dir/a%20b%3F.txt");
    }

    /// The group as `main` mounts it, checked on its own.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        _auth: AuthArgs,
        #[command(subcommand)]
        command: Top,
    }

    #[derive(clap::Subcommand)]
    enum Top {
        Storage(StorageArgs),
    }

    fn parse(args: &[&str]) -> Result<StorageArgs, clap::Error> {
        use clap::Parser as _;
        let Top::Storage(args) = Cli::try_parse_from(std::iter::once("edd").chain(args.iter().copied()))?.command;
        Ok(args)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let args = parse(&["storage", "ls", "photos", "--json", "--storage-url", "http://s:1", "--all"]).unwrap();
        assert!(args.output.json);
        assert_eq!(args.storage_url.as_deref(), Some("http://s:1"));
        assert!(matches!(args.command, StorageCommand::Ls { all: true, .. }));
        let args = parse(&["storage", "share", "photos/cat.jpg", "--expires", "2d"]).unwrap();
        assert!(matches!(args.command, StorageCommand::Share { expires: Some(172_800), .. }));
        let args = parse(&["storage", "ns", "visibility", "photos", "public"]).unwrap();
        assert!(matches!(
            args.command,
            StorageCommand::Ns(NsCommand::Visibility { visibility: Visibility::Public, .. })
        ));
        let args = parse(&["storage", "get", "photos/cat.jpg", "-"]).unwrap();
        assert!(matches!(args.command, StorageCommand::Get { target: Some(_), .. }));
        assert!(parse(&["storage", "share", "photos/cat.jpg", "--expires", "soon"]).is_err());
        assert!(parse(&["storage", "ns", "visibility", "photos", "secret"]).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("1w"), Ok(604_800));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("-1h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes_are_human_readable() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn cells_are_short() {
        assert_eq!(type_cell(&json!("text/plain; charset=utf-8")), "text/plain");
        assert_eq!(time_cell(&json!("2024-05-01T12:00:00.123456Z")), "2024-05-01T12:00:00Z");
        assert_eq!(time_cell(&Value::Null), "-");
    }
}
