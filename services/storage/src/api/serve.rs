//! Answering a GET for a file: conditional requests, ranges, and the headers that make a user's
//! file safe to show on the storage host.

use std::collections::BTreeMap;

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use edd_events::{catalog::storage::Visibility, Token};
use edd_kit::{openapi::IntoParams, problem::PROBLEM_JSON, Problem};
use futures_util::StreamExt as _;
use utoipa::{
    openapi::{
        header::HeaderBuilder,
        schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type},
        ContentBuilder, Ref, RefOr, ResponseBuilder, ResponsesBuilder,
    },
    PartialSchema,
};

use crate::{
    http::{byteranges_framing, content_disposition, http_date, none_match, parse_http_date, parse_range, RangeAnswer},
    names::file_name,
    progress::{check_id, Tracker},
    queries::File,
    state::AppState,
    transfer,
};

/// The conditional and range request headers a GET of a file honours (for the documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "documentation only: file_response reads the headers themselves")]
pub struct FileRequestHeaders {
    /// `bytes=a-b`, `bytes=a-` or `bytes=-n`, or up to 16 of them separated by commas (non-overlapping:
    /// `multipart/byteranges`). A range that is malformed, overlapping or one of too many gets the
    /// whole file; ranges all past the end get 416.
    #[param(rename = "Range", value_type = String, required = false)]
    range: Option<String>,
    /// The `ETag` or `Last-Modified` the client has: the range applies only if it is still current,
    /// else the whole file is sent.
    #[param(rename = "If-Range", value_type = String, required = false)]
    if_range: Option<String>,
    /// Entity tags (`*`, weak ones compared weakly): 304 when one is the file's. Wins over
    /// `If-Modified-Since`.
    #[param(rename = "If-None-Match", value_type = String, required = false)]
    if_none_match: Option<String>,
    /// An HTTP date (IMF-fixdate): 304 when the file is not newer.
    #[param(rename = "If-Modified-Since", value_type = String, required = false)]
    if_modified_since: Option<String>,
}

/// What [`file_response`] answers, for the documentation of the routes it serves
/// (`responses(FileResponses)`); the problem+json errors every route may give are the kit's.
pub struct FileResponses;

impl utoipa::IntoResponses for FileResponses {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let bytes = || {
            let binary = ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)));
            ContentBuilder::new().schema(Some(binary)).build()
        };
        let header =
            |description: &str| HeaderBuilder::new().schema(Some(String::schema())).description(Some(description));
        // What every answer about the file carries, 304 included.
        let about = |response: ResponseBuilder| {
            response
                .header("ETag", header("the file's SHA-256 (hex) in quotes").build())
                .header("Last-Modified", header("when the file was last written, as an HTTP date").build())
                .header(
                    "Cache-Control",
                    header("`private, no-cache`; `public, no-cache` for a public namespace's file at its own URL")
                        .build(),
                )
                .header("Accept-Ranges", header("`bytes`").build())
        };
        // What an answer with the file's bytes carries besides.
        let content = |response: ResponseBuilder| {
            about(response)
                .header(
                    "Content-Disposition",
                    header(
                        "`inline` (`attachment` for a download) with the file name; a non-ASCII name in RFC 8187 \
                         `filename*` too",
                    )
                    .build(),
                )
                .header("X-Content-Type-Options", header("`nosniff`").build())
                .header(
                    "Content-Security-Policy",
                    header("`sandbox`: scripts in the file run without the host's origin").build(),
                )
                .header("Referrer-Policy", header("`no-referrer`").build())
        };
        let problem = || ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
        ResponsesBuilder::new()
            .response(
                "200",
                content(ResponseBuilder::new())
                    .description(
                        "the whole file, in its own content type: declared at upload, else guessed from the \
                         extension, else `application/octet-stream`",
                    )
                    .content("application/octet-stream", bytes())
                    .content("*/*", bytes()),
            )
            .response(
                "206",
                content(ResponseBuilder::new())
                    .description(
                        "one range, in the file's content type with `Content-Range`; several as \
                         `multipart/byteranges` (a part per range, each with its `Content-Type` and `Content-Range`)",
                    )
                    .header("Content-Range", header("one range: `bytes <first>-<last>/<size>`").build())
                    .content("application/octet-stream", bytes())
                    .content("*/*", bytes())
                    .content("multipart/byteranges", bytes()),
            )
            .response(
                "304",
                about(ResponseBuilder::new()).description(
                    "not modified: `If-None-Match` matches the `ETag`, or `If-Modified-Since` is not older",
                ),
            )
            .response(
                "416",
                about(ResponseBuilder::new())
                    .description("every range asked for lies past the end of the file")
                    .header("Content-Range", header("`bytes */<size>`").build())
                    .content(PROBLEM_JSON, problem()),
            )
            .build()
            .into()
    }
}

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
