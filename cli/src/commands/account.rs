//! `edd login`, `edd logout`, `edd whoami`: the session every other account command sends.

use std::io::{BufRead as _, Write as _};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::json;

use crate::client::{config_path, env_token, ApiClient, ApiError, AuthArgs, Config, Credential};
use crate::output::{cell, fields, print_json, Output};

#[derive(Args)]
pub struct LoginArgs {
    /// Who to log in as [default: asked, suggesting the last one].
    #[arg(long, short)]
    username: Option<String>,
    /// Read the password from the first line of stdin instead of asking for it.
    #[arg(long, requires = "username")]
    password_stdin: bool,
}

#[derive(Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    output: Output,
}

pub async fn login(auth: &AuthArgs, args: LoginArgs) -> Result<()> {
    let path = config_path()?;
    let mut config = Config::load(&path)?;
    let url = auth.url(&config);
    let username = match args.username {
        Some(username) => username,
        None => ask_username(config.username.as_deref())?,
    };
    let password = read_password(args.password_stdin, "Password: ")?;
    let client = ApiClient::new(&url, None)?;
    let answer = client.post(&["api", "login"], &json!({ "username": username, "password": password })).await?;
    let token = answer["token"].as_str().context("the login answer holds no token")?;
    let username = answer["user"]["username"].as_str().unwrap_or(&username).to_owned();
    let expires_at = answer["expires_at"].as_str().map(str::to_owned);

    config.url = Some(url);
    config.token = Some(token.to_owned());
    config.username = Some(username.clone());
    config.expires_at = expires_at.clone();
    config.save(&path)?;
    println!("Logged in as {username} (session expires {})", expires_at.as_deref().unwrap_or("never"));
    if env_token().is_some() {
        eprintln!("note: EDD_TOKEN is set, and commands send it instead of this session until you unset it");
    }
    Ok(())
}

pub async fn logout(auth: &AuthArgs) -> Result<()> {
    let path = config_path()?;
    let mut config = Config::load(&path)?;
    let Some(token) = config.token.take() else {
        println!("Not logged in");
        return Ok(());
    };
    // The session goes back to the service that issued it, whatever --auth-url says.
    let url = config.url.clone().unwrap_or_else(|| auth.url(&config));
    let expires_at = config.expires_at.take();
    let revoked = match ApiClient::new(&url, Some(Credential::Stored(token))) {
        Ok(client) => client.post_empty(&["api", "logout"]).await.map(drop),
        Err(e) => Err(e),
    };
    config.save(&path)?;
    match revoked {
        // 401: the session had expired or was revoked already.
        Ok(()) | Err(ApiError::Problem { status: reqwest::StatusCode::UNAUTHORIZED, .. }) => {
            println!("Logged out{}", config.username.as_deref().map(|u| format!(" {u}")).unwrap_or_default());
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "removed the session from {}, but could not revoke it (it stays valid until {})",
            path.display(),
            expires_at.as_deref().unwrap_or("it expires")
        ))),
    }
}

pub async fn whoami(auth: &AuthArgs, args: WhoamiArgs) -> Result<()> {
    let answer = auth.client()?.get(&["api", "session"]).await?;
    if args.output.json {
        return print_json(&answer);
    }
    let user = &answer["user"];
    let mut who = cell(&user["username"]);
    if let Some(name) = user["display_name"].as_str().filter(|n| !n.is_empty()) {
        who.push_str(&format!(" ({name})"));
    }
    if user["is_admin"].as_bool() == Some(true) {
        who.push_str(", admin");
    }
    let mut lines = vec![("user", who), ("user id", cell(&user["id"])), ("kind", cell(&answer["kind"]))];
    for (label, key) in [("session", "session_id"), ("token", "token_id"), ("service account", "service_account_id")] {
        if let Some(value) = answer.get(key).filter(|v| !v.is_null()) {
            lines.push((label, cell(value)));
        }
    }
    lines.push(("expires", super::tokens::expiry(&answer["expires_at"])));
    print!("{}", fields(&lines));
    Ok(())
}

fn ask_username(last: Option<&str>) -> Result<String> {
    let mut stderr = std::io::stderr();
    match last {
        Some(last) => write!(stderr, "Username [{last}]: ")?,
        None => write!(stderr, "Username: ")?,
    }
    stderr.flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).context("reading the username")? == 0 {
        eprintln!();
    }
    let username = line.trim();
    match (username, last) {
        ("", Some(last)) => Ok(last.to_owned()),
        ("", None) => bail!("no username given"),
        (username, _) => Ok(username.to_owned()),
    }
}

/// A password: the first line of stdin, or asked for without echo.
pub fn read_password(from_stdin: bool, prompt: &str) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        rpassword::prompt_password(prompt).context("reading the password (use --password-stdin without a terminal)")?
    };
    if password.is_empty() {
        bail!("no password given");
    }
    Ok(password)
}
