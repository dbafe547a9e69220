//! Answering a GET for a file: conditional requests, ranges, and the headers that make a user's
//! file safe to show on the storage host.

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use edd_events::{catalog::storage::Visibility, Token};
use edd_kit::Problem;
use futures_util::StreamExt as _;

use crate::{
    http::{byteranges_framing, content_disposition, http_date, none_match, parse_http_date, parse_range, RangeAnswer},
    names::file_name,
    progress::{check_id, Tracker},
    queries::File,
    state::AppState,
    transfer,
};

/// How the browser is to treat the file.
#[derive(Clone, Copy)]
pub enum Disposition {
    Inline,
    Attachment,
}

/// Who reads, for progress tracking (`?progress=` of an authenticated caller).
pub struct Reader<'a> {
    pub user: Option<&'a Token>,
    pub progress: Option<&'a str>,
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The answer to a GET of `file`.
pub fn file_response(
    state: &AppState,
    file: &File,
    visibility: Visibility,
    headers: &HeaderMap,
    disposition: Disposition,
    reader: Reader<'_>,
) -> Result<Response, Problem> {
    let etag = format!("\"{}\"", file.sha256);
    let last_modified = http_date(file.modified_at);
    let mut common = HeaderMap::new();
    let value = |s: &str| HeaderValue::from_str(s).map_err(Problem::internal);
    common.insert(header::ETAG, value(&etag)?);
    common.insert(header::LAST_MODIFIED, value(&last_modified)?);
    common.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(match visibility {
            Visibility::Public => "public, no-cache",
            Visibility::Private => "private, no-cache",
        }),
    );
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    // RFC 9110 §13.2.2: If-None-Match wins over If-Modified-Since.
    let not_modified = match header_str(headers, header::IF_NONE_MATCH) {
        Some(tags) => none_match(tags, &etag),
        None => header_str(headers, header::IF_MODIFIED_SINCE)
            .and_then(parse_http_date)
            .is_some_and(|since| file.modified_at.unix_timestamp() <= since.unix_timestamp()),
    };
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }

    // A range applies only to the representation the client has (If-Range), else the whole file.
    let range_header = match header_str(headers, header::IF_RANGE) {
        Some(if_range) if if_range.trim() != etag && if_range.trim() != last_modified => None,
        _ => header_str(headers, header::RANGE),
    };
    // The pieces of the file to send: the whole, one range, or several as multipart/byteranges.
    let mut content_type = file.content_type.clone();
    let (status, ranges, framing) = match parse_range(range_header, file.size) {
        RangeAnswer::Full => (StatusCode::OK, vec![(0, file.size)], None),
        RangeAnswer::Partial { start, end } => {
            common.insert(header::CONTENT_RANGE, value(&format!("bytes {start}-{end}/{}", file.size))?);
            (StatusCode::PARTIAL_CONTENT, vec![(start, end - start + 1)], None)
        }
        RangeAnswer::Multiple(ranges) => {
            let boundary = format!("edd-{}", edd_events::Token::random());
            let framing = byteranges_framing(&boundary, &file.content_type, &ranges, file.size);
            content_type = format!("multipart/byteranges; boundary={boundary}");
            let pieces = ranges.iter().map(|(start, end)| (*start, end - start + 1)).collect();
            (StatusCode::PARTIAL_CONTENT, pieces, Some(framing))
        }
        RangeAnswer::Unsatisfiable => {
            common.insert(header::CONTENT_RANGE, value(&format!("bytes */{}", file.size))?);
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                common,
                Problem::new(StatusCode::RANGE_NOT_SATISFIABLE)
                    .with_detail(format!("the file has {} bytes", file.size)),
            )
                .into_response());
        }
    };
    let data: u64 = ranges.iter().map(|(_, len)| len).sum();
    let framing_len: u64 = framing
        .as_ref()
        .map_or(0, |(heads, tail)| heads.iter().map(|h| h.len() as u64).sum::<u64>() + tail.len() as u64);

    common.insert(header::CONTENT_TYPE, value(&content_type)?);
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(data + framing_len));
    let kind = match disposition {
        Disposition::Inline => "inline",
        Disposition::Attachment => "attachment",
    };
    common.insert(header::CONTENT_DISPOSITION, value(&content_disposition(kind, file_name(&file.path)))?);
    // Users' files are not the platform's pages: never sniffed, and scripts in them run sandboxed,
    // without the storage host's origin.
    common.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    common.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    // A share link's key is in the URL: links inside the file must not carry it away as a Referer.
    common.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));

    let tracker = match (reader.user, reader.progress) {
        (Some(user), Some(id)) => {
            check_id(id)?;
            state.progress.start(user, id, Some(data))
        }
        _ => Tracker::none(),
    };
    let body = match framing {
        _ if data == 0 => Body::empty(),
        None => Body::from_stream(transfer::download(&state.gfs, &file.blob_id, ranges[0].0, data, tracker)),
        Some((heads, tail)) => {
            // Each part's head, then its bytes from GFS; the closing delimiter last. Progress counts
            // the file's bytes only.
            let gfs = state.gfs.clone();
            let blob = file.blob_id.clone();
            let parts = ranges.into_iter().zip(heads).map(move |((start, len), head)| {
                let head = futures_util::stream::once(async move { Ok(Bytes::from(head)) });
                head.chain(transfer::download(&gfs, &blob, start, len, Tracker::none()))
            });
            let tail = futures_util::stream::once(async move { Ok(Bytes::from(tail)) });
            drop(tracker);
            Body::from_stream(futures_util::stream::iter(parts).flatten().chain(tail))
        }
    };
    Ok((status, common, body).into_response())
}
