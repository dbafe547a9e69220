//! The shape of namespace names and file paths, checked before anything reaches the log.
//!
//! GFS has no directories (as in the paper): a path is a key in a flat, ordered namespace, and listing
//! is by prefix. The rules below keep every key printable and unambiguous, so two spellings never name
//! one file and no path can look like a traversal to a tool that maps paths onto a real file system.

use super::error::MetaError;

/// The longest path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// The longest namespace name (its hex subject token is then exactly the longest subject token).
pub const MAX_NAMESPACE_LEN: usize = 64;

/// A namespace name is `[A-Za-z0-9._-]{1,64}`, and neither `.` nor `..`.
pub fn validate_namespace(name: &str) -> Result<(), MetaError> {
    let bad = |reason| {
        // Echo at most a little more than a valid name, so hostile input cannot bloat errors and logs.
        Err(MetaError::BadNamespace { name: name.chars().take(MAX_NAMESPACE_LEN + 8).collect(), reason })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAMESPACE_LEN {
        return bad("it is longer than 64 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not names");
    }
    Ok(())
}

/// A path is `/`-separated and absolute (`/a/b.txt`), at most [`MAX_PATH_LEN`] bytes, with no empty,
/// `.` or `..` segment, no trailing `/` and no control characters.
pub fn validate_path(path: &str) -> Result<(), MetaError> {
    if path.len() > MAX_PATH_LEN {
        return Err(MetaError::BadPath("longer than 4096 bytes"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(MetaError::BadPath("must start with '/'"));
    };
    if path.chars().any(char::is_control) {
        return Err(MetaError::BadPath("control characters are not allowed"));
    }
    for segment in rest.split('/') {
        match segment {
            "" => return Err(MetaError::BadPath("empty segment (a '//' or a trailing '/')")),
            "." | ".." => return Err(MetaError::BadPath("'.' and '..' segments are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

/// A listing prefix or cursor: any printable string up to [`MAX_PATH_LEN`] bytes (`""` lists everything).
pub fn validate_prefix(prefix: &str) -> Result<(), MetaError> {
    if prefix.len() > MAX_PATH_LEN {
        return Err(MetaError::BadPath("prefix longer than 4096 bytes"));
    }
    if prefix.chars().any(char::is_control) {
        return Err(MetaError::BadPath("control characters are not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        for ok in ["a", "logs", "registry.blobs", "A-b_c.9", &"x".repeat(64)] {
            assert_eq!(validate_namespace(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", "a*", "a>", &"x".repeat(65)] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
        let Err(MetaError::BadNamespace { name, .. }) = validate_namespace(&"!".repeat(10_000)) else {
            panic!("expected BadNamespace");
        };
        assert!(name.len() < 100, "hostile input is not echoed whole");
    }

    #[test]
    fn paths() {
        for ok in ["/a", "/a/b.txt", "/.hidden", "/a/...", "/ü/日本", "/a b/c", &format!("/{}", "x".repeat(4095))] {
            assert_eq!(validate_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/",
            "a",
            "a/b",
            "//a",
            "/a//b",
            "/a/",
            "/..",
            "/a/../b",
            "/./a",
            "/a/.",
            "/a\0b",
            "/a\nb",
            &format!("/{}", "x".repeat(4096)),
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(validate_prefix(""), Ok(()));
        assert_eq!(validate_prefix("/a/b"), Ok(()));
        assert!(validate_prefix("/a\0").is_err());
        assert!(validate_prefix(&"x".repeat(4097)).is_err());
    }
}
