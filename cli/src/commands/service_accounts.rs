//! `edd sa …`: service accounts, the identities for machines, and their tokens.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::tokens::{print_new_token, print_token_list, render_scopes, ExpiresArg, ScopeArgs};
use crate::client::AuthArgs;
use crate::output::{cell, fields, print_json, table, Output};

#[derive(Args)]
pub struct SaArgs {
    #[command(flatten)]
    output: Output,
    #[command(subcommand)]
    command: SaCommand,
}

#[derive(Subcommand)]
pub enum SaCommand {
    /// Your service accounts.
    #[command(alias = "list")]
    Ls,
    /// Create a service account with the given scopes.
    Create {
        /// 1–64 characters.
        name: String,
        #[command(flatten)]
        scopes: ScopeArgs,
    },
    /// One service account.
    Show { id: String },
    /// Replace a service account's scopes (its tokens follow at once).
    Scopes {
        id: String,
        #[command(flatten)]
        scopes: ScopeArgs,
    },
    /// Delete a service account; its tokens stop working.
    #[command(alias = "delete")]
    Rm { id: String },
    /// Create a token for a service account; prints the secret, which is never shown again.
    Token {
        id: String,
        /// What the token is for.
        #[arg(long, default_value = "edd-cli")]
        name: String,
        #[command(flatten)]
        expires: ExpiresArg,
    },
    /// A service account's tokens (revoke one with `edd tokens rm <id>`).
    Tokens { id: String },
}

pub async fn run(auth: &AuthArgs, args: SaArgs) -> Result<()> {
    let client = auth.client()?;
    let output = args.output;
    match args.command {
        SaCommand::Ls => {
            let answer = client.get(&["api", "service-accounts"]).await?;
            if output.json {
                return print_json(&answer);
            }
            let accounts = answer.as_array().map(Vec::as_slice).unwrap_or_default();
            if accounts.is_empty() {
                println!("no service accounts");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = accounts
                .iter()
                .map(|a| {
                    vec![
                        cell(&a["id"]),
                        cell(&a["name"]),
                        cell(&a["token_count"]),
                        cell(&a["created_at"]),
                        render_scopes(&a["scopes"]),
                    ]
                })
                .collect();
            print!("{}", table(&["ID", "NAME", "TOKENS", "CREATED", "SCOPES"], &rows));
            Ok(())
        }
        SaCommand::Create { name, scopes } => {
            let answer =
                client.post(&["api", "service-accounts"], &json!({ "name": name, "scopes": scopes.to_json() })).await?;
            print_account(&answer, output)
        }
        SaCommand::Show { id } => print_account(&client.get(&["api", "service-accounts", &id]).await?, output),
        SaCommand::Scopes { id, scopes } => {
            let body = json!({ "scopes": scopes.to_json() });
            print_account(&client.put(&["api", "service-accounts", &id, "scopes"], &body).await?, output)
        }
        SaCommand::Rm { id } => {
            let answer = client.delete(&["api", "service-accounts", &id]).await?;
            if output.json {
                return print_json(&answer);
            }
            println!("Deleted service account {id}");
            Ok(())
        }
        SaCommand::Token { id, name, expires } => {
            let mut body = json!({ "name": name });
            if let Some(expires) = expires.expires {
                body["expires_in"] = json!(expires);
            }
            print_new_token(&client.post(&["api", "service-accounts", &id, "tokens"], &body).await?, output)
        }
        SaCommand::Tokens { id } => {
            let answer = client.get(&["api", "service-accounts", &id, "tokens"]).await?;
            print_token_list(&answer, output, "no tokens")
        }
    }
}

/// One `ServiceAccount`.
fn print_account(account: &Value, output: Output) -> Result<()> {
    if output.json {
        return print_json(account);
    }
    print!(
        "{}",
        fields(&[
            ("id", cell(&account["id"])),
            ("name", cell(&account["name"])),
            ("scopes", render_scopes(&account["scopes"])),
            ("tokens", cell(&account["token_count"])),
            ("created", cell(&account["created_at"])),
        ])
    );
    Ok(())
}
