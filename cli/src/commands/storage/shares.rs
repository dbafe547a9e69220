//! `edd storage share` and `shares`: share links to a file, and the user's links.

use anyhow::Result;
use serde_json::json;

use super::{split_target, time_cell};
use crate::client::ApiClient;
use crate::output::{cell, print_json, table, Output};

pub(super) async fn share(client: &ApiClient, output: Output, target: &str, expires: Option<u64>) -> Result<()> {
    let (ns, path) = split_target(target)?;
    let mut body = json!({ "namespace": ns, "path": path });
    if let Some(secs) = expires {
        body["expires_in_secs"] = json!(secs);
    }
    let answer = client.post(&["storage", "share"], &body).await?;
    if output.json {
        return print_json(&answer);
    }
    // The link alone on stdout, so `$(edd storage share …)` captures just it.
    eprintln!(
        "Share link {} to {ns}/{path}, valid until {} (revoke it with `edd storage unshare {}`):",
        cell(&answer["id"]),
        time_cell(&answer["expires_at"]),
        cell(&answer["id"])
    );
    println!("{}", cell(&answer["url"]));
    Ok(())
}

pub(super) async fn list(client: &ApiClient, output: Output) -> Result<()> {
    let answer = client.get(&["storage", "shares"]).await?;
    if output.json {
        return print_json(&answer);
    }
    let list = answer.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        println!("no share links");
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let expired = s["expires_at"]
                .as_str()
                .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
                .is_some_and(|t| t <= now);
            let state = if s["revoked"].as_bool() == Some(true) {
                "revoked"
            } else if expired {
                "expired"
            } else {
                "active"
            };
            vec![
                cell(&s["id"]),
                format!("{}/{}", cell(&s["namespace"]), cell(&s["path"])),
                state.to_owned(),
                time_cell(&s["created_at"]),
                time_cell(&s["expires_at"]),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "FILE", "STATE", "CREATED", "EXPIRES"], &rows));
    Ok(())
}
