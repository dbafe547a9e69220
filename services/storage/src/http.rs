//! The HTTP details of serving files: `Range`, `If-None-Match`/`If-Modified-Since`, HTTP dates and
//! `Content-Disposition`. Pure functions, so each rule is tested on its own.

use time::{format_description::BorrowedFormatItem, macros::format_description, OffsetDateTime, PrimitiveDateTime};

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range (absent, not `bytes=`, malformed, overlapping or too many ranges): the whole
    /// file, 200 — which RFC 9110 allows for any range request.
    Full,
    /// One satisfiable range `[start, end]` (inclusive), 206.
    Partial { start: u64, end: u64 },
    /// Several satisfiable, non-overlapping ranges in the order asked, 206 `multipart/byteranges`.
    Multiple(Vec<(u64, u64)>),
    /// Well-formed ranges all past the end: 416.
    Unsatisfiable,
}

/// Most ranges one request may ask for (more is answered with the whole file).
pub const MAX_RANGES: usize = 16;

/// One `a-b`, `a-` or `-n` of a file of `size` bytes: `Err(())` when malformed, `Ok(None)` when it
/// lies past the end.
fn parse_one(spec: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let (first, last) = spec.trim().split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().map_err(|_| ());
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        (true, true) => return Err(()),
        // The last n bytes.
        (true, false) => {
            let n = parse(last)?;
            if n == 0 || size == 0 {
                return Ok(None);
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, true) => (parse(first)?, size.saturating_sub(1)),
        (false, false) => {
            let (start, end) = (parse(first)?, parse(last)?);
            if end < start {
                return Err(());
            }
            (start, end.min(size.saturating_sub(1)))
        }
    };
    Ok((start < size).then_some((start, end)))
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n` and lists of them.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeAnswer::Full };
    let specs: Vec<&str> = spec.split(',').collect();
    if specs.len() > MAX_RANGES {
        return RangeAnswer::Full;
    }
    let mut ranges = Vec::with_capacity(specs.len());
    for spec in specs {
        match parse_one(spec, size) {
            Err(()) => return RangeAnswer::Full,
            Ok(None) => {}
            Ok(Some(range)) => ranges.push(range),
        }
    }
    // Overlapping ranges would send the same bytes more than once: the whole file instead.
    let mut sorted = ranges.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[1].0 <= w[0].1) {
        return RangeAnswer::Full;
    }
    match ranges.len() {
        0 => RangeAnswer::Unsatisfiable,
        1 => RangeAnswer::Partial { start: ranges[0].0, end: ranges[0].1 },
        _ => RangeAnswer::Multiple(ranges),
    }
}

/// The part headers of a `multipart/byteranges` body, one per range, and its closing delimiter.
pub fn byteranges_framing(
    boundary: &str,
    content_type: &str,
    ranges: &[(u64, u64)],
    size: u64,
) -> (Vec<String>, String) {
    let heads = ranges
        .iter()
        .map(|(start, end)| {
            format!(
                "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n"
            )
        })
        .collect();
    (heads, format!("\r\n--{boundary}--\r\n"))
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
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Multiple(vec![(0, 1), (3, 4)]));
        assert_eq!(parse_range(Some("bytes=8-, 0-0"), 10), Multiple(vec![(8, 9), (0, 0)]));
        assert_eq!(parse_range(Some("bytes=0-1,50-60"), 10), Partial { start: 0, end: 1 });
        assert_eq!(parse_range(Some("bytes=0-5,3-4"), 10), Full, "overlapping");
        assert_eq!(parse_range(Some(&format!("bytes={}", vec!["0-0"; 17].join(","))), 10), Full);
        assert_eq!(parse_range(Some("bytes=20-30,40-"), 10), Unsatisfiable);
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
