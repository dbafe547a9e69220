//! `edd storage ls`, `put` and `get`: the files of a namespace, listed, and streamed up and down
//! with progress and SHA-256 verification (downloads resumable).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{header, StatusCode, Url};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use super::{file_segments, hex, human_bytes, size_cell, split_target, summary, time_cell, type_cell};
use crate::client::{ApiClient, ApiError};
use crate::output::{cell, fields, print_json, table, Output};

// ---- listing ---------------------------------------------------------------------------------------

pub(super) async fn ls(
    client: &ApiClient,
    output: Output,
    namespace: &str,
    prefix: Option<&str>,
    all: bool,
) -> Result<()> {
    let limit = if all { "1000" } else { "100" };
    let mut files: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    let more = loop {
        let mut query = vec![("namespace", namespace), ("limit", limit)];
        if let Some(prefix) = prefix {
            query.push(("prefix", prefix));
        }
        if let Some(after) = after.as_deref() {
            query.push(("after", after));
        }
        let page = client.get_query(&["storage", "files"], &query).await?;
        if let Some(list) = page["files"].as_array() {
            files.extend(list.iter().cloned());
        }
        match page["next"].as_str() {
            Some(next) if all => after = Some(next.to_owned()),
            Some(next) => break Some(next.to_owned()),
            None => break None,
        }
    };
    if output.json {
        let mut answer = json!({ "files": files });
        if let Some(next) = more {
            answer["next"] = json!(next);
        }
        return print_json(&answer);
    }
    if files.is_empty() {
        println!("no files in {namespace}{}", prefix.map(|p| format!(" under {p:?}")).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            vec![cell(&f["path"]), size_cell(&f["size"]), type_cell(&f["content_type"]), time_cell(&f["modified_at"])]
        })
        .collect();
    print!("{}", table(&["PATH", "SIZE", "TYPE", "MODIFIED"], &rows));
    if more.is_some() {
        eprintln!("(more files: pass --all to list them all)");
    }
    Ok(())
}

// ---- transfers -------------------------------------------------------------------------------------

/// Bytes read from a local file per piece of an upload.
const UPLOAD_PIECE: usize = 256 * 1024;

fn progress(total: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    let template = match total {
        Some(_) => "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        None => "{spinner} {bytes} {binary_bytes_per_sec}",
    };
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// A failed request as the account commands report it: unreachable, or the transport's error.
fn transport_error(client: &ApiClient, url: &Url, error: reqwest::Error) -> ApiError {
    if error.is_connect() {
        let mut cause: &(dyn std::error::Error + 'static) = &error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        ApiError::Unreachable {
            url: client.url(&[]).as_str().trim_end_matches('/').to_owned(),
            reason: cause.to_string(),
        }
    } else {
        ApiError::Http { url: url.to_string(), source: error }
    }
}

/// A request with the credential, when there is one.
fn request(client: &ApiClient, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
    let (http, token) = client.raw();
    let request = http.request(method, url);
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Whether `path` exists in `ns` (a missing namespace is the API's 404).
async fn file_exists(client: &ApiClient, ns: &str, path: &str) -> Result<bool> {
    let page = client.get_query(&["storage", "files"], &[("namespace", ns), ("prefix", path), ("limit", "1")]).await?;
    Ok(page["files"].as_array().and_then(|f| f.first()).is_some_and(|f| f["path"].as_str() == Some(path)))
}

/// What an upload's body has seen: the SHA-256 of the bytes handed to the connection, and how many.
#[derive(Clone)]
struct Sent {
    digest: Arc<Mutex<ring::digest::Context>>,
    bytes: Arc<AtomicU64>,
}

impl Sent {
    fn new() -> Self {
        Self {
            digest: Arc::new(Mutex::new(ring::digest::Context::new(&ring::digest::SHA256))),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    fn record(&self, piece: &[u8]) {
        self.digest.lock().unwrap_or_else(|e| e.into_inner()).update(piece);
        self.bytes.fetch_add(piece.len() as u64, Ordering::Relaxed);
    }

    fn sha256(&self) -> String {
        let context = self.digest.lock().unwrap_or_else(|e| e.into_inner()).clone();
        hex(context.finish().as_ref())
    }
}

/// The local file as a stream of pieces, never more than one in memory: exactly `len` bytes when the
/// length is known (a file that shrinks meanwhile is an error; one that grows is cut there).
fn upload_body(
    reader: Box<dyn AsyncRead + Unpin + Send>,
    len: Option<u64>,
    sent: Sent,
    bar: ProgressBar,
) -> reqwest::Body {
    let pieces = futures_util::stream::try_unfold((reader, 0u64), move |(mut reader, done)| {
        let sent = sent.clone();
        let bar = bar.clone();
        async move {
            let want = match len {
                Some(len) => usize::try_from(len - done).unwrap_or(UPLOAD_PIECE).min(UPLOAD_PIECE),
                None => UPLOAD_PIECE,
            };
            if want == 0 {
                return Ok(None);
            }
            let mut piece = vec![0u8; want];
            let n = reader.read(&mut piece).await?;
            if n == 0 {
                return match len {
                    Some(len) if done < len => Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the file shrank to {done} bytes while being sent ({len} were announced)"),
                    )),
                    _ => Ok(None),
                };
            }
            piece.truncate(n);
            sent.record(&piece);
            bar.inc(n as u64);
            Ok::<_, std::io::Error>(Some((piece, (reader, done + n as u64))))
        }
    });
    reqwest::Body::wrap_stream(pieces)
}

pub(super) async fn put(
    client: &ApiClient,
    output: Output,
    source: &Path,
    target: &str,
    overwrite: bool,
) -> Result<()> {
    let (ns, path) = split_target(target)?;
    let (reader, len): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = if source.as_os_str() == "-" {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(source).await.with_context(|| format!("cannot open {}", source.display()))?;
        let meta = file.metadata().await.with_context(|| format!("cannot read {}", source.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", source.display());
        }
        (Box::new(file), Some(meta.len()))
    };
    // The service would refuse it too, but only once the body is on its way.
    if !overwrite && file_exists(client, ns, path).await? {
        bail!("{ns}/{path} exists (use --overwrite to replace it)");
    }

    let mut url = client.url(&file_segments(&["storage", ns], path));
    if overwrite {
        url.query_pairs_mut().append_pair("overwrite", "true");
    }
    let sent = Sent::new();
    let bar = progress(len, output.json);
    let started = Instant::now();
    let mut upload = request(client, reqwest::Method::POST, url.clone())
        .header(header::ACCEPT, "application/json")
        // Generic, so the service guesses the type from the path.
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(upload_body(reader, len, sent.clone(), bar.clone()));
    if let Some(len) = len {
        upload = upload.header(header::CONTENT_LENGTH, len);
    }
    let answer = async {
        let response = upload.send().await.map_err(|e| transport_error(client, &url, e))?;
        let response = client.check(response).await?;
        let status = response.status();
        let view: Value = response.json().await.with_context(|| format!("{status} from {url}, but not a file"))?;
        anyhow::Ok(view)
    }
    .await;
    bar.finish_and_clear();
    let view = answer.with_context(|| format!("uploading {} to {ns}/{path}", source.display()))?;

    let bytes = sent.bytes.load(Ordering::Relaxed);
    let local = sent.sha256();
    let stored = view["sha256"].as_str().unwrap_or_default();
    if stored != local || view["size"].as_u64() != Some(bytes) {
        bail!(
            "{ns}/{path} was stored with {} bytes and SHA-256 {stored}, but {bytes} bytes with SHA-256 {local} \
             were sent: upload it again",
            cell(&view["size"])
        );
    }
    if output.json {
        return print_json(&view);
    }
    eprintln!("uploaded {ns}/{path}: {}", summary(bytes, started));
    print!("{}", fields(&[("sha256", local), ("type", cell(&view["content_type"])), ("size", human_bytes(bytes))]));
    Ok(())
}

/// `<target><suffix>`.
fn with_suffix(target: &Path, suffix: &str) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `"abc"` or `W/"abc"` → `abc`.
fn etag_value(etag: &str) -> &str {
    let etag = etag.trim();
    etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"')
}

/// `bytes 100-199/200` → (100, 200).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// `bytes */200` → 200.
fn unsatisfied_length(value: &str) -> Option<u64> {
    value.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

fn header_str(response: &reqwest::Response, name: header::HeaderName) -> Option<&str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// How a download into `.partial` starts.
enum Start {
    /// From the beginning: the whole file is in the body.
    Fresh(reqwest::Response),
    /// After the `.partial`'s bytes: the rest of the same file is in the body.
    Append(reqwest::Response, u64),
    /// The `.partial` already holds the whole file.
    Complete(u64),
}

pub(super) async fn get(client: &ApiClient, output: Output, source: &str, target: Option<PathBuf>) -> Result<()> {
    let (ns, path) = split_target(source)?;
    let url = client.url(&file_segments(&["storage", "download", ns], path));
    let name = path.rsplit('/').next().unwrap_or(path);
    let target = match target {
        None => PathBuf::from(name),
        Some(dir) if dir.is_dir() => dir.join(name),
        Some(target) => target,
    };
    if target.as_os_str() == "-" {
        return get_to_stdout(client, &url, ns, path).await;
    }
    let partial = with_suffix(&target, ".partial");
    // The entity tag of the file the `.partial` holds the start of: only that file may be resumed.
    let etag_file = with_suffix(&target, ".partial.etag");

    let resume = match tokio::fs::metadata(&partial).await {
        Ok(meta) if meta.is_file() && meta.len() > 0 => match tokio::fs::read_to_string(&etag_file).await {
            Ok(etag) if !etag.trim().is_empty() => Some((meta.len(), etag.trim().to_owned())),
            _ => {
                eprintln!("{} is not from a download this command can resume; starting over", partial.display());
                None
            }
        },
        _ => None,
    };

    let mut start = None;
    if let Some((len, etag)) = &resume {
        let response = request(client, reqwest::Method::GET, url.clone())
            .header(header::RANGE, format!("bytes={len}-"))
            .header(header::IF_RANGE, etag.as_str())
            .send()
            .await
            .map_err(|e| transport_error(client, &url, e))?;
        start = match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                match header_str(&response, header::CONTENT_RANGE).and_then(parse_content_range) {
                    Some((from, _)) if from == *len => Some(Start::Append(response, *len)),
                    _ => None,
                }
            }
            // The range is past the end of the same file: the `.partial` is whole, or too long.
            StatusCode::RANGE_NOT_SATISFIABLE => {
                match header_str(&response, header::CONTENT_RANGE).and_then(unsatisfied_length) {
                    Some(size) if size == *len => Some(Start::Complete(*len)),
                    _ => None,
                }
            }
            // The file changed since the `.partial` was started: the whole new one is coming.
            status if status.is_success() => Some(Start::Fresh(response)),
            _ => Some(Start::Fresh(client.check(response).await?)),
        };
    }
    let start = match start {
        Some(start) => start,
        None => {
            let response = request(client, reqwest::Method::GET, url.clone())
                .send()
                .await
                .map_err(|e| transport_error(client, &url, e))?;
            Start::Fresh(client.check(response).await?)
        }
    };

    let started = Instant::now();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let (response, etag, from) = match start {
        Start::Fresh(response) => {
            let etag = header_str(&response, header::ETAG).map(str::to_owned);
            if resume.is_some() {
                eprintln!("{ns}/{path} changed since {} was started; starting over", partial.display());
            }
            match &etag {
                Some(etag) => tokio::fs::write(&etag_file, etag)
                    .await
                    .with_context(|| format!("cannot write {}", etag_file.display()))?,
                None => {
                    let _ = tokio::fs::remove_file(&etag_file).await;
                }
            }
            (Some(response), etag, 0)
        }
        Start::Append(response, len) => (Some(response), resume.map(|(_, etag)| etag), len),
        Start::Complete(len) => (None, resume.map(|(_, etag)| etag), len),
    };
    let total = match &response {
        Some(r) if r.status() == StatusCode::PARTIAL_CONTENT => {
            header_str(r, header::CONTENT_RANGE).and_then(parse_content_range).map(|(_, total)| total)
        }
        Some(r) => r.content_length(),
        None => Some(from),
    };

    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(from == 0)
        .open(&partial)
        .await
        .with_context(|| format!("cannot open {}", partial.display()))?;
    if from > 0 {
        // The digest covers the whole file, so the resumed part is checked with the rest.
        let mut buf = vec![0u8; 1024 * 1024];
        let mut hashed = 0u64;
        while hashed < from {
            let n = file.read(&mut buf).await.with_context(|| format!("reading {}", partial.display()))?;
            if n == 0 {
                break;
            }
            let n = usize::try_from(from - hashed).map_or(n, |left| n.min(left));
            digest.update(&buf[..n]);
            hashed += n as u64;
        }
        if hashed != from {
            bail!("{} changed while being resumed; run the command again", partial.display());
        }
        // Anything past `from` (a file that grew meanwhile) is not what the range continues.
        file.set_len(from).await.with_context(|| format!("writing {}", partial.display()))?;
        file.seek(std::io::SeekFrom::Start(from)).await?;
        if !output.json {
            eprintln!("resuming {ns}/{path} after {}", human_bytes(from));
        }
    }

    let bar = progress(total, output.json);
    bar.set_position(from);
    bar.reset_eta();
    let mut received = 0u64;
    if let Some(mut response) = response {
        let copied = async {
            while let Some(piece) = response.chunk().await.map_err(|e| transport_error(client, &url, e))? {
                file.write_all(&piece).await.with_context(|| format!("writing {}", partial.display()))?;
                digest.update(&piece);
                received += piece.len() as u64;
                bar.inc(piece.len() as u64);
            }
            file.flush().await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = copied {
            bar.abandon();
            let _ = file.flush().await;
            let hint = if etag.is_some() { "; run the same command again to resume" } else { "" };
            return Err(e.context(format!(
                "downloading {ns}/{path}: stopped after {} in {}{hint}",
                human_bytes(from + received),
                partial.display()
            )));
        }
    }
    bar.finish_and_clear();
    file.sync_all().await.with_context(|| format!("writing {}", partial.display()))?;
    drop(file);

    let size = from + received;
    let sha256 = hex(digest.finish().as_ref());
    if let Some(total) = total.filter(|t| *t != size) {
        discard(&partial, &etag_file).await;
        bail!("downloaded {size} bytes of {ns}/{path}, expected {total}; run the command again");
    }
    if let Some(expected) = etag.as_deref().map(etag_value).filter(|e| *e != sha256) {
        discard(&partial, &etag_file).await;
        bail!("{ns}/{path} arrived with SHA-256 {sha256}, but the service has {expected}; run the command again");
    }
    tokio::fs::rename(&partial, &target)
        .await
        .with_context(|| format!("cannot move {} to {}", partial.display(), target.display()))?;
    let _ = tokio::fs::remove_file(&etag_file).await;

    if output.json {
        return print_json(&json!({
            "namespace": ns, "path": path, "file": target.display().to_string(), "size": size,
            "sha256": sha256, "resumed_from": from, "verified": etag.is_some(),
        }));
    }
    eprintln!("downloaded {ns}/{path} to {}: {}", target.display(), summary(received, started));
    Ok(())
}

/// Removes a `.partial` that cannot be finished, and its entity tag.
async fn discard(partial: &Path, etag_file: &Path) {
    let _ = tokio::fs::remove_file(partial).await;
    let _ = tokio::fs::remove_file(etag_file).await;
}

/// A download to standard output: not resumable, but checked the same way.
async fn get_to_stdout(client: &ApiClient, url: &Url, ns: &str, path: &str) -> Result<()> {
    let response =
        request(client, reqwest::Method::GET, url.clone()).send().await.map_err(|e| transport_error(client, url, e))?;
    let mut response = client.check(response).await?;
    let etag = header_str(&response, header::ETAG).map(str::to_owned);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut out = tokio::io::stdout();
    while let Some(piece) = response.chunk().await.map_err(|e| transport_error(client, url, e))? {
        out.write_all(&piece).await?;
        digest.update(&piece);
    }
    out.flush().await?;
    let sha256 = hex(digest.finish().as_ref());
    if let Some(expected) = etag.as_deref().map(etag_value).filter(|e| *e != sha256) {
        bail!("{ns}/{path} arrived with SHA-256 {sha256}, but the service has {expected}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_tags_parse() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(unsatisfied_length("bytes */200"), Some(200));
        assert_eq!(etag_value("\"abc\""), "abc");
        assert_eq!(etag_value("W/\"abc\""), "abc");
    }
}
