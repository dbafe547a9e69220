//! The HTTP details of serving files: `Range`, `If-None-Match`/`If-Modified-Since`, HTTP dates and
//! `Content-Disposition`. Pure functions, so each rule is tested on its own.

use time::{format_description::BorrowedFormatItem, macros::format_description, OffsetDateTime, PrimitiveDateTime};

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range (absent, not `bytes=`, several ranges, malformed): the whole file, 200.
    Full,
    /// One satisfiable range `[start, end]` (inclusive), 206.
    Partial { start: u64, end: u64 },
    /// A well-formed range entirely past the end: 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`. Several ranges are answered with the whole file,
/// which RFC 9110 allows and every client understands.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeAnswer::Full };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeAnswer::Full };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        (true, true) => return RangeAnswer::Full,
        // The last n bytes.
        (true, false) => {
            let Some(n) = parse(last) else { return RangeAnswer::Full };
            if n == 0 || size == 0 {
                return RangeAnswer::Unsatisfiable;
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, true) => {
            let Some(start) = parse(first) else { return RangeAnswer::Full };
            (start, size.saturating_sub(1))
        }
        (false, false) => {
            let (Some(start), Some(end)) = (parse(first), parse(last)) else { return RangeAnswer::Full };
            if end < start {
                return RangeAnswer::Full;
            }
            (start, end.min(size.saturating_sub(1)))
        }
    };
    if start >= size {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial { start, end }
}

/// Whether an `If-None-Match` value matches the entity tag `etag` (weak comparison, `*` matches).
pub fn none_match(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

const HTTP_DATE: &[BorrowedFormatItem<'static>] =
    format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(HTTP_DATE).unwrap_or_default()
}

/// Parses an IMF-fixdate (the only form senders may generate).
pub fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(value.trim(), HTTP_DATE).ok().map(PrimitiveDateTime::assume_utc)
}

/// `inline` or `attachment` with the file name: an ASCII fallback and, when needed, the exact name
/// in RFC 8187 encoding.
pub fn content_disposition(kind: &str, name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    if ascii == name {
        return format!("{kind}; filename=\"{name}\"");
    }
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Partial { start: 0, end: 4 });
        assert_eq!(parse_range(Some("bytes=5-"), 10), Partial { start: 5, end: 9 });
        assert_eq!(parse_range(Some("bytes=-3"), 10), Partial { start: 7, end: 9 });
        assert_eq!(parse_range(Some("bytes=-30"), 10), Partial { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Partial { start: 8, end: 9 });
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn etags() {
        assert!(none_match("\"abc\"", "\"abc\""));
        assert!(none_match("W/\"abc\", \"x\"", "\"abc\""));
        assert!(none_match("*", "\"abc\""));
        assert!(!none_match("\"abd\"", "\"abc\""));
    }

    #[test]
    fn dates_round_trip() {
        let at = OffsetDateTime::from_unix_timestamp(784_111_777).unwrap();
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(at));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn dispositions() {
        assert_eq!(content_disposition("inline", "a b.txt"), "inline; filename=\"a b.txt\"");
        assert_eq!(
            content_disposition("attachment", "ü\".txt"),
            "attachment; filename=\"__.txt\"; filename*=UTF-8''%C3%BC%22.txt"
        );
    }
}
