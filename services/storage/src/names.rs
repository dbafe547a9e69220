//! What a namespace name and a file path may be, and what a file's content type is.

use edd_kit::Problem;

/// Longest namespace name.
pub const MAX_NAMESPACE_LEN: usize = 63;
/// Longest file path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Names the API's own paths use, which a namespace could otherwise shadow
/// (`/storage/namespaces/…`, `/storage/upload`, …).
const RESERVED: &[&str] = &["namespaces", "files", "upload", "download", "share", "shares", "shared", "status"];

/// `[A-Za-z0-9_-]{1,63}`, not reserved.
///
/// No `.`: a namespace name is the last segment of its scopes (`storage.<uid>.files.<ns>`), and a
/// grant on `a` would otherwise cover `a.b` (grants cover what is below them at each `.`).
pub fn check_namespace(name: &str) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAMESPACE_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if !ok {
        return Err(Problem::bad_request(format!(
            "namespace names are 1 to {MAX_NAMESPACE_LEN} of A-Z a-z 0-9 _ - (no dots: they would break scopes)"
        ))
        .with_extension("field", "name"));
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(Problem::bad_request(format!("{name:?} is reserved by the API")).with_extension("field", "name"));
    }
    Ok(())
}

/// A relative path of `/`-separated segments: no empty, `.` or `..` segment, no control
/// characters or backslashes, at most [`MAX_PATH_LEN`] bytes.
pub fn check_path(path: &str) -> Result<(), Problem> {
    let bad = |why: &str| Problem::bad_request(format!("invalid file path: {why}")).with_extension("field", "path");
    if path.is_empty() {
        return Err(bad("empty"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(bad(&format!("longer than {MAX_PATH_LEN} bytes")));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad("control characters and backslashes are not allowed"));
    }
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(bad("empty, `.` and `..` segments are not allowed"));
    }
    Ok(())
}

/// The last segment of a path, for `Content-Disposition`.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The content type an upload declared, unless it is missing or generic; else a guess from the
/// extension; else `application/octet-stream`.
pub fn content_type(declared: Option<&str>, path: &str) -> String {
    if let Some(declared) = declared.map(str::trim).filter(|d| valid_media_type(d)) {
        if !declared.starts_with("application/octet-stream") && !declared.starts_with("multipart/") {
            return declared.to_owned();
        }
    }
    let ext = file_name(path).rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let guessed = match ext.as_str() {
        "txt" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    };
    guessed.to_owned()
}

/// `type/subtype[; params]` of printable ASCII, at most 255 bytes.
fn valid_media_type(value: &str) -> bool {
    value.len() <= 255 && value.bytes().all(|b| (0x20..0x7f).contains(&b)) && value.split(';').next().is_some_and(|t| {
        let mut parts = t.trim().split('/');
        matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        for ok in ["a", "photos-2024", "A_b-c", &"x".repeat(63)] {
            assert!(check_namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a.b", "a b", "a/b", "ü", &"x".repeat(64), "namespaces", "Upload", "share"] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        for ok in ["a", "a/b/c.txt", "with space/ü.png", ".hidden"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\\b", "a\nb", &"x".repeat(1025)] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Some("image/png"), "x.bin"), "image/png");
        assert_eq!(content_type(Some("application/octet-stream"), "a/b.PNG"), "image/png");
        assert_eq!(content_type(None, "notes.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type(Some("garbage"), "x"), "application/octet-stream");
        assert_eq!(content_type(Some("text/plain\r\nx: y"), "x"), "application/octet-stream");
    }
}
