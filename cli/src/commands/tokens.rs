//! `edd tokens ls|create|rm`: personal API tokens; also the `--scope` and `--expires` arguments and
//! the token printing that `edd sa` shares.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::AuthArgs;
use crate::output::{cell, print_json, table, Output};

#[derive(Args)]
pub struct TokensArgs {
    #[command(flatten)]
    output: Output,
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Your personal API tokens (not revoked).
    #[command(alias = "list")]
    Ls,
    /// Create a token; prints the secret, which is never shown again.
    Create {
        name: String,
        #[command(flatten)]
        scopes: ScopeArgs,
        #[command(flatten)]
        expires: ExpiresArg,
    },
    /// Revoke a token (a personal one, or one of your service accounts').
    #[command(alias = "revoke")]
    Rm { id: String },
}

/// `--scope SCOPE=ACTIONS`, repeatable, at least once.
#[derive(Args)]
pub struct ScopeArgs {
    /// A grant, e.g. `storage.<your user id>.files=read,delete` (repeatable; see `edd whoami` for the id).
    #[arg(long = "scope", value_name = "SCOPE=ACTIONS", required = true, value_parser = parse_scope)]
    pub scopes: Vec<Grant>,
}

impl ScopeArgs {
    /// The `{"scopes": …}` body member: scope → actions, repeated scopes merged.
    pub fn to_json(&self) -> Value {
        json!(scope_map(&self.scopes))
    }
}

/// `--expires`; the service's default (90d) when not given.
#[derive(Args)]
pub struct ExpiresArg {
    /// How long the token is good for [default: 90d].
    #[arg(long, value_parser = ["30d", "90d", "365d", "never"])]
    pub expires: Option<String>,
}

/// One `--scope`: a scope and its actions.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub scope: String,
    pub actions: Vec<String>,
}

/// `storage.u1.files=read,delete` → `storage.u1.files` and `[read, delete]`. Whether the scope and
/// actions exist is the service's call; this only checks the shape.
pub fn parse_scope(s: &str) -> Result<Grant, String> {
    let Some((scope, actions)) = s.split_once('=') else {
        return Err(format!("{s:?} has no actions: write SCOPE=ACTION[,ACTION…], e.g. storage.u1.files=read"));
    };
    let scope = scope.trim();
    if scope.is_empty() || scope.chars().any(char::is_whitespace) {
        return Err(format!("{scope:?} is not a scope like storage.u1.files"));
    }
    let mut list: Vec<String> = Vec::new();
    for action in actions.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if !list.iter().any(|a| a == action) {
            list.push(action.to_owned());
        }
    }
    if list.is_empty() {
        return Err(format!("no actions for {scope}: write {scope}=ACTION[,ACTION…]"));
    }
    Ok(Grant { scope: scope.to_owned(), actions: list })
}

/// Grants as the API's map; a scope given twice gets the actions of both.
pub fn scope_map(grants: &[Grant]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for grant in grants {
        let actions = map.entry(grant.scope.clone()).or_default();
        for action in &grant.actions {
            if !actions.contains(action) {
                actions.push(action.clone());
            }
        }
    }
    map
}

/// `{"a":["x","y"],"b":["z"]}` → `a=x,y b=z`, the way `--scope` takes them.
pub fn render_scopes(scopes: &Value) -> String {
    match scopes {
        Value::Object(map) if map.is_empty() => "(none)".to_owned(),
        Value::Object(map) => map
            .iter()
            .map(|(scope, actions)| {
                let actions = match actions {
                    Value::Array(list) => list.iter().map(cell).collect::<Vec<_>>().join(","),
                    other => cell(other),
                };
                format!("{scope}={actions}")
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => cell(other),
    }
}

/// A `[TokenInfo]` answer as a table (the SCOPES column only when some token has its own).
pub fn print_token_list(answer: &Value, output: Output, empty: &str) -> Result<()> {
    if output.json {
        return print_json(answer);
    }
    let tokens = answer.as_array().map(Vec::as_slice).unwrap_or_default();
    if tokens.is_empty() {
        println!("{empty}");
        return Ok(());
    }
    let with_scopes = tokens.iter().any(|t| t.get("scopes").is_some_and(|s| !s.is_null()));
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let mut row = vec![cell(&t["id"]), cell(&t["name"])];
            if with_scopes {
                row.push(render_scopes(&t["scopes"]));
            }
            row.extend([expiry(&t["expires_at"]), cell(&t["created_at"])]);
            row
        })
        .collect();
    let headers: &[&str] = if with_scopes {
        &["ID", "NAME", "SCOPES", "EXPIRES", "CREATED"]
    } else {
        &["ID", "NAME", "EXPIRES", "CREATED"]
    };
    print!("{}", table(headers, &rows));
    Ok(())
}

/// A `NewToken` answer: the secret alone on stdout (so `$(edd tokens create …)` captures just it),
/// what it is on stderr.
pub fn print_new_token(answer: &Value, output: Output) -> Result<()> {
    if output.json {
        return print_json(answer);
    }
    eprintln!(
        "Created token {} ({}), expires {}. Copy it now, it is not shown again:",
        cell(&answer["id"]),
        cell(&answer["name"]),
        expiry(&answer["expires_at"])
    );
    println!("{}", cell(&answer["token"]));
    Ok(())
}

/// An `expires_at` that may be absent: absent means never.
pub fn expiry(value: &Value) -> String {
    if value.is_null() {
        "never".to_owned()
    } else {
        cell(value)
    }
}

pub async fn run(auth: &AuthArgs, args: TokensArgs) -> Result<()> {
    let client = auth.client()?;
    let output = args.output;
    match args.command {
        TokensCommand::Ls => {
            let answer = client.get(&["api", "tokens"]).await?;
            print_token_list(&answer, output, "no personal API tokens")
        }
        TokensCommand::Create { name, scopes, expires } => {
            let mut body = json!({ "name": name, "scopes": scopes.to_json() });
            if let Some(expires) = expires.expires {
                body["expires_in"] = json!(expires);
            }
            let answer = client.post(&["api", "tokens"], &body).await?;
            print_new_token(&answer, output)
        }
        TokensCommand::Rm { id } => {
            let answer = client.delete(&["api", "tokens", &id]).await?;
            if output.json {
                return print_json(&answer);
            }
            println!("Revoked token {id}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(scope: &str, actions: &[&str]) -> Grant {
        Grant { scope: scope.into(), actions: actions.iter().map(|a| (*a).to_owned()).collect() }
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(parse_scope("storage.u1.files=read,delete"), Ok(grant("storage.u1.files", &["read", "delete"])));
        assert_eq!(parse_scope(" compute.u1 = read , read,create, "), Ok(grant("compute.u1", &["read", "create"])));
        assert!(parse_scope("storage.u1.files").is_err());
        assert!(parse_scope("storage.u1.files=").is_err());
        assert!(parse_scope("storage.u1.files= , ").is_err());
        assert!(parse_scope("=read").is_err());
        assert!(parse_scope("storage u1=read").is_err());
    }

    #[test]
    fn repeated_scopes_merge_into_a_map() {
        let grants = [
            grant("storage.u1.files", &["read"]),
            grant("compute.u1", &["create"]),
            grant("storage.u1.files", &["delete", "read"]),
        ];
        assert_eq!(
            json!(scope_map(&grants)),
            json!({ "compute.u1": ["create"], "storage.u1.files": ["read", "delete"] })
        );
    }

    #[test]
    fn scopes_render_like_the_flag() {
        let scopes = json!({ "compute.u1": ["create"], "storage.u1.files": ["read", "delete"] });
        assert_eq!(render_scopes(&scopes), "compute.u1=create storage.u1.files=read,delete");
        assert_eq!(render_scopes(&json!({})), "(none)");
        assert_eq!(render_scopes(&Value::Null), "-");
    }
}
