//! `edd notifications ls|read|watch|mutes|mute|unmute`: the user's inbox on the notification
//! service, with the same credential as every other command (`EDD_TOKEN` or the `edd login`
//! session). The service is found from the auth URL (`auth.<domain>` → `notifications.<domain>`,
//! or `edd up`'s local port), or given with `--notifications-url` / `EDD_NOTIFICATIONS_URL`.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{ArgGroup, Args, Subcommand};
use futures_util::StreamExt as _;
use reqwest::header;
use serde_json::{json, Value};

use crate::client::{ApiClient, ApiError, AuthArgs};
use crate::output::{cell, print_json, table, Output};

#[derive(Args)]
pub struct NotificationsArgs {
    #[command(flatten)]
    output: Output,
    /// Notification service URL [default: derived from the auth URL].
    #[arg(long, env = "EDD_NOTIFICATIONS_URL", global = true)]
    notifications_url: Option<String>,
    #[command(subcommand)]
    command: NotificationsCommand,
}

#[derive(Subcommand)]
pub enum NotificationsCommand {
    /// Your notifications, newest first (muted ones are hidden).
    #[command(alias = "list")]
    Ls {
        /// How many (at most 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// How many of the newest to skip.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Mark one notification read, or all of them with --all.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
    Read {
        /// The notification's id (see `edd notifications ls`).
        id: Option<String>,
        /// Every notification you have.
        #[arg(long)]
        all: bool,
    },
    /// Print notifications as they arrive, until Ctrl-C (`--json`: one JSON object per line).
    Watch,
    /// Your mutes.
    Mutes,
    /// Stop seeing a category of notifications (or one scope of it, e.g. a namespace).
    Mute {
        category: String,
        #[arg(long)]
        scope: Option<String>,
    },
    /// Lift a mute (exactly the one given: without --scope, the category-wide one).
    Unmute {
        category: String,
        #[arg(long)]
        scope: Option<String>,
    },
}

pub async fn run(auth: &AuthArgs, args: NotificationsArgs) -> Result<()> {
    let client = auth.service_client("notifications", args.notifications_url.as_deref())?;
    let json = args.output.json;
    match args.command {
        NotificationsCommand::Ls { limit, offset } => {
            let (limit, offset) = (limit.to_string(), offset.to_string());
            let answer = client.get_query(&["api", "notifications"], &[("limit", &limit), ("offset", &offset)]).await?;
            if json {
                return print_json(&answer);
            }
            print!("{}", render_list(&answer));
        }
        NotificationsCommand::Read { id: Some(id), .. } => {
            client.post_empty(&["api", "notifications", &id, "read"]).await?;
            if !json {
                println!("marked {id} read");
            }
        }
        NotificationsCommand::Read { id: None, .. } => {
            client.post_empty(&["api", "notifications", "read-all"]).await?;
            if !json {
                println!("marked all read");
            }
        }
        NotificationsCommand::Watch => watch(&client, json).await?,
        NotificationsCommand::Mutes => {
            let answer = client.get(&["api", "notifications", "mutes"]).await?;
            if json {
                return print_json(&answer);
            }
            let rows: Vec<Vec<String>> = answer["mutes"]
                .as_array()
                .map(|list| list.iter().map(|m| vec![cell(&m["category"]), scope_cell(&m["scope"])]).collect())
                .unwrap_or_default();
            print!("{}", table(&["CATEGORY", "SCOPE"], &rows));
        }
        NotificationsCommand::Mute { category, scope } => {
            client.put(&["api", "notifications", "mutes"], &json!({ "category": category, "scope": scope })).await?;
            if !json {
                println!("muted {}", describe(&category, scope.as_deref()));
            }
        }
        NotificationsCommand::Unmute { category, scope } => {
            let mut url = client.url(&["api", "notifications", "mutes"]);
            url.query_pairs_mut().append_pair("category", &category);
            if let Some(scope) = &scope {
                url.query_pairs_mut().append_pair("scope", scope);
            }
            let (http, token) = client.raw();
            let mut request = http.delete(url.clone());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|source| ApiError::Http { url: url.to_string(), source })?;
            client.check(response).await?;
            if !json {
                println!("unmuted {}", describe(&category, scope.as_deref()));
            }
        }
    }
    Ok(())
}

fn describe(category: &str, scope: Option<&str>) -> String {
    match scope {
        Some(scope) => format!("{category} ({scope})"),
        None => category.to_owned(),
    }
}

fn scope_cell(scope: &Value) -> String {
    if scope.is_null() {
        "(all)".to_owned()
    } else {
        cell(scope)
    }
}

/// The list as a table, unread ones marked with `*`, and the unread count under it.
fn render_list(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["notifications"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|n| {
                    let category = match n["scope"].as_str() {
                        Some(scope) => format!("{}/{scope}", cell(&n["category"])),
                        None => cell(&n["category"]),
                    };
                    vec![
                        if n["read"] == true { String::new() } else { "*".to_owned() },
                        cell(&n["id"]),
                        short_time(&n["created_at"]),
                        category,
                        cell(&n["title"]),
                        cell(&n["message"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = table(&["", "ID", "TIME", "CATEGORY", "TITLE", "MESSAGE"], &rows);
    out.push_str(&format!("{} unread\n", cell(&answer["unread"])));
    out
}

/// `2026-11-21T10:00:00.123456Z` → `2026-11-21 10:00:00`.
fn short_time(value: &Value) -> String {
    let Some(s) = value.as_str() else { return cell(value) };
    let s = s.replacen('T', " ", 1);
    s.get(..19).map_or(s.clone(), str::to_owned)
}

/// One notification as a line: `[time] category/scope  title: message  <link>`.
fn render_one(n: &Value) -> String {
    let mut line = format!("[{}] {}", short_time(&n["created_at"]), cell(&n["category"]));
    if let Some(scope) = n["scope"].as_str() {
        line.push('/');
        line.push_str(scope);
    }
    line.push_str(&format!("  {}: {}", cell(&n["title"]), cell(&n["message"])));
    if let Some(link) = n["link"].as_str() {
        line.push_str(&format!("  <{link}>"));
    }
    line
}

/// Follows `GET /sse/notifications`, reconnecting after a dropped connection (notifications sent
/// while disconnected are in `edd notifications ls`). A refused credential or the connection
/// limit ends it.
async fn watch(client: &ApiClient, json: bool) -> Result<()> {
    let url = client.url(&["sse", "notifications"]);
    let (http, token) = client.raw();
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut request = http.get(url.clone()).header(header::ACCEPT, "text/event-stream");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let response = client.check(response).await?;
                if !json {
                    eprintln!("watching {url} (Ctrl-C stops)");
                }
                backoff = Duration::from_secs(1);
                let mut body = response.bytes_stream();
                let mut parser = SseParser::default();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    for data in parser.feed(&chunk) {
                        if json {
                            println!("{data}");
                        } else {
                            let value: Value =
                                serde_json::from_str(&data).context("a notification that is not JSON")?;
                            println!("{}", render_one(&value));
                        }
                    }
                }
                eprintln!("the notification stream ended; reconnecting");
            }
            Err(e) if e.is_connect() => eprintln!("cannot reach {url}: {e}; retrying"),
            Err(e) => bail!(ApiError::Http { url: url.to_string(), source: e }),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// A minimal `text/event-stream` reader: yields each event's data; comments and other fields are
/// skipped.
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                self.data.push(data.strip_prefix(' ').unwrap_or(data).to_owned());
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_parsing_survives_split_chunks_and_comments() {
        let mut p = SseParser::default();
        assert!(p.feed(b": keep-alive\n\nid: 7\nda").is_empty());
        assert_eq!(
            p.feed(b"ta: {\"id\":7}\r\n\r\ndata: a\ndata: b\n\n"),
            vec!["{\"id\":7}".to_owned(), "a\nb".to_owned()]
        );
    }

    #[test]
    fn lists_mark_unread_and_count() {
        let answer = json!({
            "notifications": [
                {"id": 9, "title": "Up", "message": "a.txt", "category": "storage", "scope": "ns",
                 "created_at": "2026-11-21T10:00:00.5Z", "read": false},
                {"id": 3, "title": "Hi", "message": "m", "category": "auth", "scope": null,
                 "created_at": "2026-11-20T09:00:00Z", "read": true}
            ],
            "unread": 1
        });
        let out = render_list(&answer);
        assert!(out.contains("*  9   2026-11-21 10:00:00  storage/ns  Up"), "{out}");
        assert!(out.ends_with("1 unread\n"));
        assert_eq!(render_one(&answer["notifications"][1]), "[2026-11-20 09:00:00] auth  Hi: m");
    }
}
