//! `edd api schema`: each service's HTTP contract (OpenAPI 3.1, derived from its handlers) written
//! to `docs/openapi/<service>.json`; a test fails when a committed document is stale.

use anyhow::{Context as _, Result};
use clap::Subcommand;

use crate::platform;

#[derive(Subcommand)]
pub enum ApiCommand {
    /// Regenerate `docs/openapi/<service>.json` for every service (or print one with `--stdout SERVICE`).
    Schema {
        #[arg(long, default_value = "docs/openapi")]
        out: std::path::PathBuf,
        /// Print this service's document instead of writing the files.
        #[arg(long, value_name = "SERVICE")]
        stdout: Option<String>,
    },
}

/// Every service's document, as committed: `(service, pretty JSON)`.
pub fn documents() -> Vec<(&'static str, String)> {
    platform::SERVICES.iter().filter_map(|s| s.openapi.map(|doc| (s.name, edd_kit::openapi::to_json(&doc())))).collect()
}

pub fn run(cmd: ApiCommand) -> Result<()> {
    let ApiCommand::Schema { out, stdout } = cmd;
    let documents = documents();
    if let Some(service) = stdout {
        let (_, doc) = documents
            .iter()
            .find(|(name, _)| *name == service)
            .with_context(|| format!("no HTTP API for {service:?}; services with one: {}", names(&documents)))?;
        print!("{doc}");
        return Ok(());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (name, doc) in &documents {
        let path = out.join(format!("{name}.json"));
        std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn names(documents: &[(&str, String)]) -> String {
    documents.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    /// `docs/openapi/*.json` must be what the code generates; run `edd api schema` after changing
    /// a handler's route, parameters or bodies.
    #[test]
    fn committed_documents_are_current() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi");
        let documents = super::documents();
        assert!(!documents.is_empty());
        for (name, generated) in documents {
            let path = format!("{dir}/{name}.json");
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(committed == generated, "{path} is stale: run `cargo run -p edd -- api schema`");
        }
    }
}
