//! End-to-end tests of a built [`App`] router, driven in memory with `tower::ServiceExt::oneshot`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::Value;
use tower::ServiceExt;

use crate::{AllowedOrigins, App, Metrics, Problem, RequestId};

/// A JSON document of about 4 KiB.
fn big_json() -> Value {
    serde_json::json!({ "items": (0..200).map(|i| format!("item number {i}")).collect::<Vec<_>>() })
}

fn routes() -> Router {
    Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/boom", get(|| async { Err::<(), _>(Problem::internal("db password=hunter2 rejected")) }))
        .route("/panic", get(panics))
        .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }))
        .route("/gone", get(|| async { StatusCode::GONE }))
        .route("/rejected", get(|| async { (StatusCode::BAD_REQUEST, "Connection header did not include 'upgrade'") }))
        .route("/id", get(|Extension(id): Extension<RequestId>| async move { id.as_str().to_owned() }))
        .route("/big", get(|| async { axum::Json(big_json()) }))
        .route("/small", get(|| async { axum::Json(serde_json::json!({"ok": true})) }))
        .route("/big-problem", get(|| async { Problem::bad_request("x".repeat(2000)) }))
        // What storage's downloads look like: a stored file that happens to be JSON.
        .route(
            "/file",
            get(|| async {
                let headers = [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::ETAG, "\"abc\""),
                    (header::ACCEPT_RANGES, "bytes"),
                    (header::CONTENT_DISPOSITION, "attachment"),
                ];
                (headers, big_json().to_string()).into_response()
            }),
        )
        .route("/events", get(|| async { ([(header::CONTENT_TYPE, "text/event-stream")], "data: x\n\n".repeat(500)) }))
}

async fn panics() -> &'static str {
    panic!("secret panic text")
}

fn app() -> Router {
    App::new("test", Metrics::new()).router(routes()).build()
}

async fn send(router: &Router, request: Request<Body>) -> Response {
    router.clone().oneshot(request).await.unwrap()
}

async fn get_path(router: &Router, path: &str) -> Response {
    send(router, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn body_text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Asserts a problem+json response with `status` and returns its parsed body.
async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    let json: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(json["status"], status.as_u16());
    json
}

#[tokio::test]
async fn healthz_is_ok() {
    let response = get_path(&app(), "/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let json: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(json, serde_json::json!({"status": "ok", "service": "test"}));
}

#[tokio::test]
async fn unknown_path_is_problem_404() {
    let json = problem(get_path(&app(), "/nope").await, StatusCode::NOT_FOUND).await;
    assert_eq!(json["title"], "Not Found");
}

#[tokio::test]
async fn wrong_method_is_problem_405_with_allow() {
    let response = send(&app(), Request::delete("/items/1").body(Body::empty()).unwrap()).await;
    assert!(response.headers().contains_key(header::ALLOW));
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn bare_status_from_handler_becomes_problem() {
    problem(get_path(&app(), "/gone").await, StatusCode::GONE).await;
}

#[tokio::test]
async fn valid_request_id_is_echoed() {
    let request = Request::get("/healthz").header("x-request-id", "client-id_1.2").body(Body::empty()).unwrap();
    let response = send(&app(), request).await;
    assert_eq!(response.headers()["x-request-id"], "client-id_1.2");
}

#[tokio::test]
async fn invalid_request_id_is_replaced() {
    for bad in ["bad id!".to_owned(), "a".repeat(200)] {
        let request = Request::get("/healthz").header("x-request-id", bad.as_str()).body(Body::empty()).unwrap();
        let response = send(&app(), request).await;
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    }
}

#[tokio::test]
async fn missing_request_id_is_generated() {
    let response = get_path(&app(), "/healthz").await;
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

#[tokio::test]
async fn handlers_see_the_request_id_the_client_gets() {
    let request = Request::get("/id").header("x-request-id", "client-id_1.2").body(Body::empty()).unwrap();
    let response = send(&app(), request).await;
    assert_eq!(body_text(response).await, "client-id_1.2");

    let request = Request::get("/id").header("x-request-id", "bad id!").body(Body::empty()).unwrap();
    let response = send(&app(), request).await;
    let header = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(body_text(response).await, header);
    assert_eq!(uuid::Uuid::parse_str(&header).unwrap().get_version_num(), 7);
}

#[tokio::test]
async fn framework_answers_carry_the_request_id() {
    for path in ["/panic", "/nope"] {
        let request = Request::get(path).header("x-request-id", "req-7").body(Body::empty()).unwrap();
        let response = send(&app(), request).await;
        assert_eq!(response.headers()["x-request-id"], "req-7", "{path}");
    }
}

#[tokio::test]
async fn body_over_limit_is_problem_413() {
    let router = App::new("test", Metrics::new()).router(routes()).body_limit(16).build();
    let small = send(&router, Request::post("/echo").body(Body::from("tiny")).unwrap()).await;
    assert_eq!(small.status(), StatusCode::OK);

    let big = send(&router, Request::post("/echo").body(Body::from(vec![b'x'; 17])).unwrap()).await;
    problem(big, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn failing_readiness_check_is_named_in_503() {
    let router = App::new("test", Metrics::new())
        .readiness("nats", || async { Ok::<_, String>(()) })
        .readiness("postgres", || async { Err::<(), _>("connection refused to db-0") })
        .build();
    let json = problem(get_path(&router, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(json["checks"]["postgres"], "failing");
    assert_eq!(json["checks"]["nats"], "ok");
    assert!(json["detail"].as_str().unwrap().contains("postgres"));
    assert!(!json.to_string().contains("db-0"));
}

#[tokio::test]
async fn passing_readiness_checks_are_200() {
    let router = App::new("test", Metrics::new()).readiness("nats", || async { Ok::<_, String>(()) }).build();
    let response = get_path(&router, "/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route() {
    let router = app();
    get_path(&router, "/items/42").await;
    get_path(&router, "/items/43").await;
    get_path(&router, "/nope/1").await;

    let response = get_path(&router, "/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    // Without an `Accept` asking for OpenMetrics: the Prometheus text format (see metrics.rs).
    assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = body_text(response).await;
    assert!(text.contains(r#"http_requests_total{method="GET",route="/items/{id}",status_class="2xx"} 2"#), "{text}");
    assert!(text.contains(r#"http_requests_total{method="GET",route="unmatched",status_class="4xx"} 1"#), "{text}");
    assert!(!text.contains("/items/42"), "{text}");
}

#[tokio::test]
async fn internal_problem_does_not_leak_detail() {
    let response = get_path(&app(), "/boom").await;
    let json = problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(!json.to_string().contains("hunter2"));
}

#[tokio::test]
async fn panic_is_problem_500_without_message() {
    let response = get_path(&app(), "/panic").await;
    let json = problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(!json.to_string().contains("secret panic text"));
}

#[tokio::test]
async fn slow_handler_times_out_with_problem_503() {
    let router = App::new("test", Metrics::new()).router(routes()).request_timeout(Duration::from_millis(50)).build();
    let json = problem(get_path(&router, "/slow").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(json["detail"], "the request did not complete within 0.05 s");
}

#[tokio::test]
async fn a_streamed_body_is_not_cut_by_the_timeout() {
    let router = App::new("test", Metrics::new())
        .router(Router::new().route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::unfold(0, |n| async move {
                    if n == 3 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    Some((Ok::<_, std::io::Error>(Bytes::from("chunk ")), n + 1))
                });
                Body::from_stream(chunks)
            }),
        ))
        .request_timeout(Duration::from_millis(50))
        .build();
    let response = get_path(&router, "/stream").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "chunk chunk chunk ");
}

fn cors_app() -> Router {
    let origins = AllowedOrigins::new("example.com", &["https://app.other.org".to_owned()]);
    App::new("test", Metrics::new()).router(routes()).cors(origins).build()
}

fn preflight(origin: &str) -> Request<Body> {
    Request::options("/items/1")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type,if-match")
        .body(Body::empty())
        .unwrap()
}

fn header_list(headers: &HeaderMap, name: header::HeaderName) -> Vec<String> {
    let value = headers.get(name).map_or("", |v| v.to_str().unwrap());
    value.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect()
}

#[tokio::test]
async fn a_platform_origin_passes_the_preflight_with_credentials() {
    let response = send(&cors_app(), preflight("https://cloud.example.com")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://cloud.example.com");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let methods = header_list(headers, header::ACCESS_CONTROL_ALLOW_METHODS);
    for m in ["get", "post", "put", "delete", "patch"] {
        assert!(methods.contains(&m.to_owned()), "{methods:?}");
    }
    let allowed = header_list(headers, header::ACCESS_CONTROL_ALLOW_HEADERS);
    for h in [
        "authorization",
        "content-type",
        "x-request-id",
        "x-requested-with",
        "range",
        "if-match",
        "if-none-match",
        "if-range",
    ] {
        assert!(allowed.contains(&h.to_owned()), "{allowed:?}");
    }
    assert!(header_list(headers, header::VARY).contains(&"origin".to_owned()));
    assert!(headers.contains_key(header::ACCESS_CONTROL_MAX_AGE));
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers() {
    for origin in ["https://evil.org", "https://example.com.evil.org", "null", "http://app.other.org"] {
        let response = send(&cors_app(), preflight(origin)).await;
        let headers = response.headers();
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{origin}: {headers:?}");
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS), "{origin}: {headers:?}");
    }
}

#[tokio::test]
async fn cors_answers_expose_the_headers_pages_read_even_on_errors() {
    for (path, status) in [("/items/1", StatusCode::OK), ("/nope", StatusCode::NOT_FOUND)] {
        let request = Request::get(path).header(header::ORIGIN, "https://app.other.org").body(Body::empty()).unwrap();
        let response = send(&cors_app(), request).await;
        assert_eq!(response.status(), status);
        let headers = response.headers();
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.other.org");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let exposed = header_list(headers, header::ACCESS_CONTROL_EXPOSE_HEADERS);
        for h in ["content-range", "etag", "x-request-id", "retry-after"] {
            assert!(exposed.contains(&h.to_owned()), "{exposed:?}");
        }
    }
}

fn echo(headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::post("/echo");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from("hi")).unwrap()
}

#[tokio::test]
async fn a_cookie_request_that_changes_state_needs_x_requested_with() {
    let refused = send(&cors_app(), echo(&[("cookie", "token=abc"), ("origin", "https://cloud.example.com")])).await;
    // The page of the platform can read the refusal.
    assert_eq!(refused.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://cloud.example.com");
    let body = problem(refused, StatusCode::FORBIDDEN).await;
    assert_eq!(body["header"], "X-Requested-With");
    for allowed in [
        echo(&[("cookie", "token=abc"), ("x-requested-with", "edd")]),
        echo(&[("cookie", "token=abc"), ("authorization", "Bearer abc")]),
        echo(&[]),
    ] {
        let response = send(&app(), allowed).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_text(response).await, "hi");
    }
    // Reads are not affected.
    let read = Request::get("/items/1").header("cookie", "token=abc").body(Body::empty()).unwrap();
    assert_eq!(send(&app(), read).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_the_cors_option_no_cors_headers() {
    let response = send(&app(), preflight("https://cloud.example.com")).await;
    assert!(!response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
}

async fn get_gzip(router: &Router, path: &str) -> Response {
    send(router, Request::get(path).header(header::ACCEPT_ENCODING, "gzip, br").body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn large_json_and_problems_are_gzipped() {
    for path in ["/big", "/big-problem"] {
        let response = get_gzip(&app(), path).await;
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip", "{path}");
        assert!(header_list(response.headers(), header::VARY).contains(&"accept-encoding".to_owned()));
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert_eq!(body[..2], [0x1f, 0x8b], "{path}: a gzip member");
        assert!(body.len() < 1500, "{path}: {} bytes", body.len());
    }
    // A client that does not ask gets the identity.
    let response = get_path(&app(), "/big").await;
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
    assert_eq!(serde_json::from_str::<Value>(&body_text(response).await).unwrap(), big_json());
}

#[tokio::test]
async fn small_json_files_and_streams_are_not_compressed() {
    let file = big_json().to_string();
    for path in ["/small", "/file", "/events", "/healthz"] {
        let response = get_gzip(&app(), path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(!response.headers().contains_key(header::CONTENT_ENCODING), "{path}: {:?}", response.headers());
        if path == "/file" {
            assert_eq!(response.headers()[header::ACCEPT_RANGES], "bytes");
            assert_eq!(body_text(response).await, file, "byte for byte");
        }
    }
}

#[tokio::test]
async fn a_plain_text_rejection_becomes_a_problem_with_its_words() {
    let response = get_path(&app(), "/rejected").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(crate::problem::is_problem(&response), "{:?}", response.headers());
    let json: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(json["status"], 400);
    assert_eq!(json["detail"], "Connection header did not include 'upgrade'");
}

/// The shared pipeline's cost per request, in release mode:
/// `cargo test --release -p edd-kit --lib pipeline_overhead -- --ignored --nocapture`.
/// 50 000 `GET /healthz` through a built [`App`], body read, median of 3 runs; once with no
/// subscriber (spans disabled) and once with the services' JSON log format written to a sink.
/// The time is this thread's CPU time (`/proc/thread-self/schedstat`; the test runtime has one
/// thread), so other work on the machine does not count.
#[tokio::test]
#[ignore = "a measurement, not a check: run it in release mode"]
async fn pipeline_overhead() {
    const REQUESTS: u32 = 50_000;
    fn cpu_ns() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        stat.split_whitespace().next().unwrap().parse().unwrap()
    }
    async fn run(router: &Router) -> f64 {
        let started = cpu_ns();
        for _ in 0..REQUESTS {
            let response = get_path(router, "/healthz").await;
            assert_eq!(response.status(), StatusCode::OK);
            axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        }
        (cpu_ns() - started) as f64 / 1e3 / f64::from(REQUESTS)
    }
    async fn median(router: &Router) -> f64 {
        run(router).await; // warm-up
        let mut runs = [run(router).await, run(router).await, run(router).await];
        runs.sort_by(f64::total_cmp);
        runs[1]
    }
    let apps = [("App::build()", app()), ("App::build() with .cors(…)", cors_app())];
    for (name, router) in &apps {
        let quiet = median(router).await;
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::sink)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let logged = median(router).await;
        println!("{name}: {quiet:.2} µs/request without a subscriber, {logged:.2} µs/request with JSON logs");
    }
}
