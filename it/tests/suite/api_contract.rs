//! Every service keeps its HTTP contract: schemathesis (PyPI, pinned by `ensure_schemathesis` in
//! deploy/local/lib.sh) reads each running service's `GET /openapi.json`, generates requests from
//! it — valid and invalid — with a real credential, and checks every answer: no 5xx, and no
//! response that breaks the service's own document (status, content type, body schema).

use std::{path::PathBuf, time::Duration};

use edd_it::{services, World};
use reqwest::StatusCode;

/// The schemathesis executable, or `None` (with a message) where it is not installed; under CI it
/// must be (`deploy/local/test.sh` installs it).
fn schemathesis() -> Option<PathBuf> {
    let bin = std::env::var_os("EDD_SCHEMATHESIS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.edd/st/bin/st")));
    if bin.exists() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "schemathesis is not installed at {} (run `source deploy/local/lib.sh && ensure_schemathesis`)",
        bin.display()
    );
    eprintln!("skipped: schemathesis is not installed at {}; deploy/local/test.sh installs it", bin.display());
    None
}

/// Runs schemathesis against `base` with the document `base/openapi.json` serves and `headers`
/// (`Name: value`); fails the test with schemathesis' own report unless every check passed.
async fn keeps_its_contract(st: &PathBuf, service: &str, base: &str, headers: &[String]) {
    // The document is the one the service serves, not the one in docs/: what runs is what is checked.
    let mut request = reqwest::Client::new().get(format!("{base}/openapi.json"));
    for header in headers {
        let (name, value) = header.split_once(": ").unwrap();
        request = request.header(name, value);
    }
    let doc = request.send().await.unwrap();
    assert_eq!(doc.status(), StatusCode::OK, "{service} serves no /openapi.json");
    let file = std::env::temp_dir().join(format!("edd-contract-{service}-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, doc.bytes().await.unwrap()).unwrap();

    let mut cmd = tokio::process::Command::new(st);
    cmd.arg("run")
        .arg(&file)
        .args(["--url", base])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        // Bounded and repeatable: a fixed number of cases per operation from a fixed seed (a time
        // budget would make the number of cases depend on the machine's load).
        .args(["--max-examples", "15", "--request-timeout", "10"])
        // An SSE stream answers 200 and stays open until the request times out: every case would
        // cost the whole timeout. The streams have their own tests (notify_live, storage).
        .args(["--exclude-path-regex", "^/sse/"])
        .args(["--phases", "examples,coverage,fuzzing", "--workers", "1", "--seed", "1"])
        .args(["--no-color", "--suppress-health-check", "all", "--generation-database", "none"])
        .env("NO_COLOR", "1")
        // Whatever schemathesis keeps between runs stays out of the repository.
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true);
    for header in headers {
        cmd.args(["-H", header]);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("schemathesis hung").unwrap();
    let _ = std::fs::remove_file(&file);
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{service} breaks its OpenAPI contract (schemathesis {}):\n{report}", out.status);
    // A run that tested nothing would pass too: make sure operations were exercised.
    assert!(!report.contains("No operations"), "{service}: schemathesis found nothing to test:\n{report}");
}

/// The platform with a user's session, for the contract tests.
async fn world() -> (World, String) {
    let w = World::builder().storage(&[]).notify(services::notify_config()).gateway().start().await;
    let (_, session) = w.user("ada").await;
    (w, session)
}

#[tokio::test]
async fn auth_keeps_its_openapi_contract() {
    let Some(st) = schemathesis() else { return };
    let (w, session) = world().await;
    keeps_its_contract(&st, "auth", &w.auth_service.url, &[format!("Authorization: Bearer {session}")]).await;
}

#[tokio::test]
async fn storage_keeps_its_openapi_contract() {
    let Some(st) = schemathesis() else { return };
    let (w, session) = world().await;
    keeps_its_contract(&st, "storage", &w.storage().url, &[format!("Authorization: Bearer {session}")]).await;
}

#[tokio::test]
async fn notify_keeps_its_openapi_contract() {
    let Some(st) = schemathesis() else { return };
    let (w, session) = world().await;
    keeps_its_contract(&st, "notify", &w.notify().url, &[format!("Authorization: Bearer {session}")]).await;
}

#[tokio::test]
async fn the_gateway_admin_api_keeps_its_openapi_contract() {
    let Some(st) = schemathesis() else { return };
    let (w, _) = world().await;
    // The admin API answers on the gateway's own host, for administrators.
    let headers = [format!("Authorization: Bearer {}", w.admin), "Host: gateway.localhost".to_owned()];
    keeps_its_contract(&st, "gateway", &w.gateway().url, &headers).await;
}
