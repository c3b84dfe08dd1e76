//! The HTTP side of the route tests: requests through the router
//! (`oneshot`), and the fixture experiment they read.

use super::*;
use autoresearch_core::OutcomeStatus;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

/// An experiment with every kind of attempt: baseline, keeps, discards, a
/// crash, two pending runs, a run in flight; and a fork of it.
pub async fn fixture() -> (Ledger, Writer) {
    let ledger = Ledger::new();
    let mut w = Writer::start(&ledger, "demo", 10.0).await;
    w.attempt(Some(9.0), OutcomeStatus::Keep, "better by 1")
        .await; // run-0002
    w.attempt(Some(9.5), OutcomeStatus::Discard, "worse than head")
        .await; // 3
    w.attempt(None, OutcomeStatus::Crash, "evaluator exited 1")
        .await; // 4
    w.attempt(Some(8.0), OutcomeStatus::Keep, "better by 1 again")
        .await; // 5
    w.pending(7.9).await; // 6
    w.pending(8.1).await; // 7
    w.in_flight().await; // 8
    (ledger, w)
}

pub async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

pub async fn get(app: &Router, uri: &str) -> (StatusCode, String, String) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub async fn get_json(app: &Router, uri: &str) -> Value {
    let (status, ctype, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert!(ctype.starts_with("application/json"), "{uri}: {ctype}");
    serde_json::from_str(&body).unwrap()
}

pub async fn get_html(app: &Router, uri: &str) -> String {
    let (status, ctype, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert!(ctype.starts_with("text/html"), "{uri}: {ctype}");
    body
}

pub fn post(uri: &str, token: Option<&str>, body: Value) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

pub const W: &str = "/worlds/autoresearch%3Ademo";
pub const API: &str = "/api/worlds/autoresearch%3Ademo";

pub fn run_ids(table: &Value) -> Vec<String> {
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect()
}
