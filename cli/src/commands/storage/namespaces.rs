//! `edd storage ns …`: list, create, delete and change the visibility of namespaces.

use std::io::IsTerminal as _;

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use super::{size_cell, time_cell, NsCommand, Visibility};
use crate::client::ApiClient;
use crate::output::{cell, print_json, table, Output};

pub(super) async fn run(client: &ApiClient, output: Output, cmd: NsCommand) -> Result<()> {
    match cmd {
        NsCommand::Ls => {
            let answer = client.get(&["storage", "namespaces"]).await?;
            if output.json {
                return print_json(&answer);
            }
            let list = answer.as_array().map(Vec::as_slice).unwrap_or_default();
            if list.is_empty() {
                println!("no namespaces; create one with `edd storage ns create NAME`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|ns| {
                    vec![
                        cell(&ns["name"]),
                        cell(&ns["visibility"]),
                        cell(&ns["files"]),
                        size_cell(&ns["bytes"]),
                        time_cell(&ns["created_at"]),
                    ]
                })
                .collect();
            print!("{}", table(&["NAME", "VISIBILITY", "FILES", "SIZE", "CREATED"], &rows));
            Ok(())
        }
        NsCommand::Create { name, public } => {
            let visibility = if public { Visibility::Public } else { Visibility::Private };
            let body = json!({ "name": name, "visibility": visibility.as_str() });
            let answer = client.post(&["storage", "namespaces"], &body).await?;
            if output.json {
                return print_json(&answer);
            }
            println!("Created {} namespace {}", cell(&answer["visibility"]), cell(&answer["name"]));
            Ok(())
        }
        NsCommand::Rm { name, yes } => {
            if !yes {
                let ns = client.get(&["storage", "namespaces", &name]).await?;
                let question = format!(
                    "Delete namespace {name} and its {} files ({})?",
                    cell(&ns["files"]),
                    size_cell(&ns["bytes"])
                );
                if !confirm(&question)? {
                    bail!("not deleted");
                }
            }
            let answer = client.delete(&["storage", "namespaces", &name]).await?;
            if output.json {
                return print_json(&answer);
            }
            println!("Deleted namespace {name}");
            Ok(())
        }
        NsCommand::Visibility { name, visibility } => {
            let body = json!({ "visibility": visibility.as_str() });
            let answer = client.put(&["storage", "namespaces", &name], &body).await?;
            if output.json {
                return print_json(&answer);
            }
            println!("Namespace {} is {}", cell(&answer["name"]), cell(&answer["visibility"]));
            Ok(())
        }
    }
}

/// Asks `question` on the terminal; without one, refuses (scripts pass `--yes`).
fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} Pass --yes to confirm (standard input is not a terminal)");
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("reading the answer")?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
