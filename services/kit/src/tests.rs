//! End-to-end tests of a built [`App`] router, driven in memory with `tower::ServiceExt::oneshot`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::{App, Metrics, Problem};

fn routes() -> Router {
    Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/boom", get(|| async { Err::<(), _>(Problem::internal("db password=hunter2 rejected")) }))
        .route("/panic", get(panics))
        .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }))
        .route("/gone", get(|| async { StatusCode::GONE }))
        .route("/rejected", get(|| async { (StatusCode::BAD_REQUEST, "Connection header did not include 'upgrade'") }))
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
    problem(get_path(&router, "/slow").await, StatusCode::SERVICE_UNAVAILABLE).await;
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
