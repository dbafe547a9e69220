//! `edd admin users ls|create|rm`: accounts of everyone, for an admin's session.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::account::read_password;
use crate::client::AuthArgs;
use crate::output::{cell, fields, print_json, table, Output};

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    output: Output,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// User accounts.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Every user.
    #[command(alias = "list")]
    Ls,
    /// Create a user; the password is asked for twice, or read from stdin.
    Create {
        /// 3–32 characters: lowercase letters, digits, `-` and `_`, starting with a letter.
        username: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
        /// The name shown instead of the username.
        #[arg(long)]
        display_name: Option<String>,
        /// Read the password from the first line of stdin instead of asking for it.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user (not yourself).
    #[command(alias = "delete")]
    Rm {
        /// The user's id (see `edd admin users ls`).
        id: String,
    },
}

pub async fn run(auth: &AuthArgs, args: AdminArgs) -> Result<()> {
    let output = args.output;
    let AdminCommand::Users(command) = args.command;
    let client = auth.client()?;
    match command {
        UsersCommand::Ls => {
            let answer = client.get(&["admin", "users"]).await?;
            if output.json {
                return print_json(&answer);
            }
            let users = answer.as_array().map(Vec::as_slice).unwrap_or_default();
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    let admin = if u["is_admin"].as_bool() == Some(true) { "yes" } else { "" };
                    vec![
                        cell(&u["id"]),
                        cell(&u["username"]),
                        cell(&u["display_name"]),
                        admin.to_owned(),
                        cell(&u["created_at"]),
                    ]
                })
                .collect();
            print!("{}", table(&["ID", "USERNAME", "DISPLAY NAME", "ADMIN", "CREATED"], &rows));
            Ok(())
        }
        UsersCommand::Create { username, admin, display_name, password_stdin } => {
            let password = read_password(password_stdin, &format!("Password for {username}: "))?;
            if !password_stdin && read_password(false, "Repeat it: ")? != password {
                bail!("the passwords differ");
            }
            let mut body = json!({ "username": username, "password": password, "is_admin": admin });
            if let Some(display_name) = display_name {
                body["display_name"] = json!(display_name);
            }
            let answer = client.post(&["admin", "users"], &body).await?;
            print_user(&answer, output)
        }
        UsersCommand::Rm { id } => {
            let answer = client.delete(&["admin", "users", &id]).await?;
            if output.json {
                return print_json(&answer);
            }
            println!("Deleted user {id}");
            Ok(())
        }
    }
}

fn print_user(user: &Value, output: Output) -> Result<()> {
    if output.json {
        return print_json(user);
    }
    print!(
        "{}",
        fields(&[
            ("id", cell(&user["id"])),
            ("username", cell(&user["username"])),
            ("display name", cell(&user["display_name"])),
            ("admin", if user["is_admin"].as_bool() == Some(true) { "yes" } else { "no" }.to_owned()),
            ("created", cell(&user["created_at"])),
        ])
    );
    Ok(())
}
