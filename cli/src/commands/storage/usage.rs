//! `edd storage usage` and `status`: the user's bytes against the quota, and the file system's health.

use anyhow::Result;

use super::{human_bytes, size_cell};
use crate::client::ApiClient;
use crate::output::{cell, fields, print_json, Output};

pub(super) async fn usage(client: &ApiClient, output: Output) -> Result<()> {
    let answer = client.get(&["storage", "usage"]).await?;
    if output.json {
        return print_json(&answer);
    }
    let quota = match (answer["bytes"].as_u64(), answer["quota_bytes"].as_u64()) {
        (Some(used), Some(quota)) if quota > 0 => {
            format!("{} ({:.1}% used)", human_bytes(quota), used as f64 * 100.0 / quota as f64)
        }
        _ => size_cell(&answer["quota_bytes"]),
    };
    print!(
        "{}",
        fields(&[
            ("used", size_cell(&answer["bytes"])),
            ("files", cell(&answer["files"])),
            ("quota", quota),
            ("largest upload", size_cell(&answer["max_upload_bytes"])),
        ])
    );
    Ok(())
}

pub(super) async fn status(client: &ApiClient, output: Output) -> Result<()> {
    let answer = client.get(&["storage", "status"]).await?;
    if output.json {
        return print_json(&answer);
    }
    let healthy = match answer["healthy"].as_bool() {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => cell(&answer["healthy"]),
    };
    print!(
        "{}",
        fields(&[
            ("healthy", healthy),
            ("active master", cell(&answer["active_master"])),
            (
                "chunkservers",
                format!("{} of {} live", cell(&answer["chunkservers_live"]), cell(&answer["chunkservers"]))
            ),
            ("files", cell(&answer["files"])),
            ("chunks", cell(&answer["chunks"])),
            ("under-replicated", cell(&answer["under_replicated"])),
            ("missing", cell(&answer["missing"])),
        ])
    );
    Ok(())
}
