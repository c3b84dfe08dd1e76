//! The replay view and the "start a replay" action, through the router over
//! a real redb ledger and the real replayer (`autoresearch replay`'s
//! function behind core's `Replayer`); and the experiment page's chart zoom
//! and column chooser. Bad parameters get a clear 4xx, never a 5xx.

mod common;

use autoresearch_core::OutcomeStatus;
use autoresearch_web::router;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const W: &str = "/worlds/autoresearch%3Ademo";
const API: &str = "/api/worlds/autoresearch%3Ademo";

/// An experiment whose keeps lower `score` (the comparator minimizes it):
/// replayed under `scalar:score:max`, decisions change.
async fn fixture() -> (Ledger, Writer) {
    let ledger = Ledger::new();
    let mut w = Writer::start(&ledger, "demo", 10.0).await;
    w.attempt(Some(9.0), OutcomeStatus::Keep, "lower").await; // run-0002
    w.attempt(Some(11.0), OutcomeStatus::Discard, "higher")
        .await; // 3
    w.attempt(None, OutcomeStatus::Crash, "exit 1").await; // 4
    w.attempt(Some(8.0), OutcomeStatus::Keep, "lower").await; // 5
    w.attempt(Some(12.0), OutcomeStatus::Discard, "higher")
        .await; // 6
    (ledger, w)
}

fn app_of(ledger: &Ledger) -> Router {
    router(
        ledger.read_only(),
        ledger.registry.clone(),
        with_actions(ledger.storage.clone(), ledger.registry.clone()),
    )
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let (s, _, b) = send(app, Request::get(uri).body(Body::empty()).unwrap()).await;
    (s, b)
}

async fn get_json(app: &Router, uri: &str) -> Value {
    let (status, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// What an error answer says: the JSON's `error`, or the HTML page's text
/// with its quotes unescaped.
fn said(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => v["error"].as_str().unwrap_or_default().to_string(),
        Err(_) => body.replace("&quot;", "\"").replace("&amp;", "&"),
    }
}

fn post(uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

/// Starts a replay of the fixture under `spec`; returns the receipt.
async fn start(app: &Router, body: Value) -> Value {
    let (status, headers, text) = send(
        app,
        post(&format!("{API}/replays"), Some(TOKEN), &body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let receipt: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        headers.get(header::LOCATION).unwrap().to_str().unwrap(),
        receipt["url"].as_str().unwrap()
    );
    receipt
}

#[tokio::test]
async fn a_replay_started_from_the_dashboard_is_compared_with_its_source() {
    let (ledger, _w) = fixture().await;
    let app = app_of(&ledger);
    let receipt = start(&app, json!({"comparator": "scalar:score:max"})).await;
    let fork = receipt["world"].as_str().unwrap();
    assert_eq!(fork, "demo-replay-scalar");
    assert_eq!(
        receipt["url"],
        "/worlds/demo-replay-scalar/replay?with=autoresearch%3Ademo"
    );
    // Maximizing, 9 < 10 is no keep, 11 > 10 is one, 8 is not, 12 > 11 is:
    // four of the six attempts flip (the baseline stays, the crash too).
    assert_eq!(receipt["detail"]["candidates"], 6, "{receipt}");
    let changed_by_replay = receipt["detail"]["changed"].as_u64().unwrap();
    assert_eq!(changed_by_replay, 4, "{receipt}");

    // The JSON view: every attempt matched, the same changes the replay counted.
    let j = get_json(&app, "/api/worlds/demo-replay-scalar/replay").await;
    let v = &j["view"];
    assert_eq!(v["a"]["world"], "autoresearch:demo");
    assert_eq!(v["b"]["world"], "demo-replay-scalar");
    assert_eq!(v["attempts"], 6);
    assert_eq!(v["shared"], 6);
    assert_eq!(v["changed"].as_u64().unwrap(), changed_by_replay);
    let changed: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["changed"] == true)
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["run-0002", "run-0003", "run-0005", "run-0006"]);
    let row3 = &v["rows"][2];
    assert_eq!(row3["a"]["class"], "discard");
    assert_eq!(row3["b"]["class"], "keep");
    assert_eq!(row3["metric"], 11.0);
    // Both kept step lines: A went 10 -> 9 -> 8, B 10 -> 11 -> 12.
    assert_eq!(j["steps_a"], json!([[1, 10.0], [2, 9.0], [5, 8.0]]));
    assert_eq!(j["steps_b"], json!([[1, 10.0], [3, 11.0], [6, 12.0]]));

    // Only the changed rows, paged.
    let j = get_json(
        &app,
        "/api/worlds/demo-replay-scalar/replay?show=changed&per=3&page=2",
    )
    .await;
    assert_eq!(j["view"]["total"], 4);
    assert_eq!(j["view"]["pages"], 2);
    assert_eq!(j["view"]["rows"][0]["run_id"], "run-0006");
    assert!(j["view"]["next"].is_null());

    // The page: both lines, the changes marked in the chart and the table.
    let (status, html) = get(&app, receipt["url"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(r#"class="steps""#) && html.contains(r#"class="steps-b""#));
    assert_eq!(html.matches(r#"<line class="changed""#).count(), 4);
    assert_eq!(html.matches(r#"<tr class="changed""#).count(), 4);
    assert!(html.contains(r#"<strong id="changed-count">4</strong>"#));

    // The source's page links the fork's replay view.
    let (_, page) = get(&app, W).await;
    assert!(
        page.contains(r#"href="/worlds/demo-replay-scalar/replay?with=autoresearch%3Ademo""#),
        "no compare link in the fork tree"
    );
    assert!(page.contains(r#"id="start-replay""#));
    let (_, fork_page) = get(&app, "/worlds/demo-replay-scalar").await;
    assert!(fork_page.contains(r#"id="compare-parent" href="/worlds/demo-replay-scalar/replay""#));

    // A second replay under the same kind gets the next free name; one
    // from a later tick re-decides fewer candidates.
    let again = start(&app, json!({"comparator": "scalar:score:max", "from": 4})).await;
    assert_eq!(again["world"], "demo-replay-scalar-2");
    assert!(
        again["detail"]["candidates"].as_u64().unwrap() < 6,
        "{again}"
    );
}

#[tokio::test]
async fn starting_a_replay_is_refused_without_the_token_and_for_bad_requests() {
    let (ledger, w) = fixture().await;
    let app = app_of(&ledger);
    let uri = format!("{API}/replays");
    let body = r#"{"comparator": "scalar:score:max"}"#;
    let cases: &[(Option<&str>, &str, &str, StatusCode, &str)] = &[
        (
            None,
            &uri,
            body,
            StatusCode::UNAUTHORIZED,
            "needs the dashboard's token",
        ),
        (
            Some("wrong"),
            &uri,
            body,
            StatusCode::FORBIDDEN,
            "does not match",
        ),
        (
            Some(TOKEN),
            &uri,
            "{}",
            StatusCode::BAD_REQUEST,
            "needs a comparator spec",
        ),
        (
            Some(TOKEN),
            &uri,
            r#"{"comparator": "bogus:x"}"#,
            StatusCode::BAD_REQUEST,
            "spec \"bogus:x\": unknown comparator kind",
        ),
        (
            Some(TOKEN),
            &uri,
            r#"{"comparator": "scalar:score:sideways"}"#,
            StatusCode::BAD_REQUEST,
            "scalar:score:sideways",
        ),
        (
            Some(TOKEN),
            &uri,
            r#"{"comparator": "scalar:score:max", "from": 999}"#,
            StatusCode::BAD_REQUEST,
            "ticks run from 1",
        ),
        (
            Some(TOKEN),
            &uri,
            r#"{"comparator": "scalar:score:max", "from": 0}"#,
            StatusCode::BAD_REQUEST,
            "ticks run from 1",
        ),
        (
            Some(TOKEN),
            &uri,
            r#"{"comparator": "scalar:score:max", "extra": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            Some(TOKEN),
            &uri,
            "not json",
            StatusCode::BAD_REQUEST,
            "JSON body",
        ),
        (
            Some(TOKEN),
            &uri,
            r#"{"comparator": "scalar:score:max", "name": "autoresearch:demo"}"#,
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            Some(TOKEN),
            "/api/worlds/nope/replays",
            body,
            StatusCode::NOT_FOUND,
            "nope",
        ),
    ];
    for (token, uri, body, want, says) in cases {
        let (status, _, text) = send(&app, post(uri, *token, body)).await;
        assert_eq!(status, *want, "{uri} {body}: {text}");
        assert!(
            said(&text).contains(says),
            "{uri} {body}: {text} lacks {says:?}"
        );
    }
    // A dashboard given no replayer refuses it, and does not offer it.
    let no_replayer = router(
        ledger.read_only(),
        ledger.registry.clone(),
        autoresearch_web::DashboardConfig {
            replayer: None,
            ..with_actions(ledger.storage.clone(), ledger.registry.clone())
        },
    );
    let (status, _, text) = send(&no_replayer, post(&uri, Some(TOKEN), body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(said(&text).contains("without a replayer"), "{text}");
    let (_, page) = get(&no_replayer, W).await;
    assert!(
        !page.contains("start-replay"),
        "a page offers replays without a replayer"
    );
    // A read-only dashboard refuses it even with the token.
    let ro = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let (status, _, text) = send(&ro, post(&uri, Some(TOKEN), body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("read-only"));
    let (_, page) = get(&ro, W).await;
    assert!(
        !page.contains("start-replay"),
        "a read-only page offers replays"
    );
    // Nothing was written: one world, at the tick the fixture left it.
    let worlds = get_json(&app, "/api/worlds").await;
    assert_eq!(worlds["worlds"].as_array().unwrap().len(), 1, "{worlds}");
    assert_eq!(worlds["worlds"][0]["tick"], w.tick().0);
}

#[tokio::test]
async fn the_replay_view_answers_bad_parameters_with_a_clear_4xx() {
    let (ledger, _w) = fixture().await;
    let app = app_of(&ledger);
    start(
        &app,
        json!({"comparator": "scalar:score:max", "name": "flip"}),
    )
    .await;
    let cases: &[(&str, StatusCode, &str)] = &[
        ("/worlds/nope/replay", StatusCode::NOT_FOUND, "nope"),
        (
            "/worlds/flip/replay?with=nope",
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            "/worlds/flip/replay?with=flip",
            StatusCode::BAD_REQUEST,
            "compared with itself",
        ),
        (
            &format!("{W}/replay"),
            StatusCode::BAD_REQUEST,
            "is not a fork",
        ),
        (
            "/worlds/flip/replay?show=some",
            StatusCode::BAD_REQUEST,
            "show \"some\"",
        ),
        (
            "/worlds/flip/replay?page=0",
            StatusCode::BAD_REQUEST,
            "page \"0\"",
        ),
        (
            "/worlds/flip/replay?page=9",
            StatusCode::BAD_REQUEST,
            "past the last page",
        ),
        (
            "/worlds/flip/replay?per=100000",
            StatusCode::BAD_REQUEST,
            "per",
        ),
        (
            "/api/worlds/flip/replay?page=x",
            StatusCode::BAD_REQUEST,
            "page \"x\"",
        ),
    ];
    for (uri, want, says) in cases {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, *want, "{uri}: {body}");
        assert!(said(&body).contains(says), "{uri}: {body} lacks {says:?}");
    }
    // Compared the other way round, with an explicit `with`.
    let j = get_json(&app, &format!("{API}/replay?with=flip")).await;
    assert_eq!(j["view"]["a"]["world"], "flip");
    assert_eq!(j["view"]["changed"], 4);
}

#[tokio::test]
async fn the_chart_zooms_to_a_window_of_attempts() {
    let (ledger, _w) = fixture().await;
    let app = app_of(&ledger);
    let j = get_json(&app, &format!("{API}/chart?from=3&to=5")).await;
    let chart = &j["chart"];
    assert_eq!(chart["window"], json!({"from": 3, "to": 5}));
    assert_eq!(chart["attempts"], 3);
    assert_eq!(chart["total"], 6);
    let ns: Vec<u64> = chart["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [3, 4, 5]);
    // The step line opens at the head carried in (run 2's 9.0).
    assert_eq!(chart["steps"], json!([[3, 9.0], [5, 8.0]]));
    // Bounds past the history are clamped; the whole is the default.
    let j = get_json(&app, &format!("{API}/chart?from=4&to=99")).await;
    assert_eq!(j["chart"]["window"], json!({"from": 4, "to": 6}));
    let j = get_json(&app, &format!("{API}/chart")).await;
    assert_eq!(j["chart"]["window"], json!({"from": 1, "to": 6}));
    // The SVG alone, for the page's script, and the zoomed page.
    let (status, svg) = get(&app, &format!("{W}/chart?from=2&to=4")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        svg.starts_with("<svg") && svg.contains(r#"data-from="2" data-to="4""#),
        "{svg}"
    );
    assert_eq!(
        svg.matches("<circle").count() + svg.matches(r#"class="pt x"#).count(),
        3
    );
    let (_, page) = get(&app, &format!("{W}?from=2&to=4")).await;
    assert!(page.contains("attempts 2–4 of 6"));
    assert!(
        page.contains(r#"id="zoom-reset">"#),
        "no reset button when zoomed"
    );
    for (q, says) in [
        ("from=x", "from \"x\""),
        ("to=-1", "to \"-1\""),
        ("from=5&to=2", "from must not be after to"),
    ] {
        for uri in [
            format!("{API}/chart?{q}"),
            format!("{W}?{q}"),
            format!("{W}/chart?{q}"),
        ] {
            let (status, body) = get(&app, &uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert!(said(&body).contains(says), "{uri}: {body}");
        }
    }
}

#[tokio::test]
async fn the_attempts_table_shows_the_metric_columns_chosen() {
    let (ledger, _w) = fixture().await;
    let app = app_of(&ledger);
    let (_, page) = get(&app, W).await;
    // The chooser offers every metric the Results have.
    assert!(page.contains(r#"class="col-choice" value="score""#));
    assert!(page.contains(r#"class="col-choice" value="loss""#));
    assert!(!page.contains(r#"<th class="num extra">"#));
    let (_, page) = get(&app, &format!("{W}?cols=loss&per=2")).await;
    assert!(page.contains(r#"<th class="num extra">loss</th>"#));
    // Newest first: run 6 (score 12, loss 24), run 5 (loss 16).
    assert!(page.contains(r#"<td class="num extra">24</td>"#), "{page}");
    assert!(page.contains(r#"<td class="num extra">16</td>"#));
    // Paging links keep the columns.
    assert!(
        page.contains("?cols=loss&amp;per=2&amp;page=2"),
        "next page drops the columns"
    );
    let j = get_json(
        &app,
        &format!("{API}/attempts?cols=loss,score&status=crash"),
    )
    .await;
    assert_eq!(j["columns"], json!(["loss", "score"]));
    assert_eq!(j["column_values"], json!([["", ""]]));
    // Parameters need a reader (the CLI's reads diffs); this one has none.
    for (q, says) in [
        ("params=1", "reads no parameters"),
        ("cols=param:lr", "reads no parameters"),
        ("params=yes", "params \"yes\" is not 1"),
        ("cols=param:", "names no parameter"),
    ] {
        let (status, body) = get(&app, &format!("{W}?{q}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert!(said(&body).contains(says), "{q}: {body}");
    }
    for uri in [
        format!("{W}?cols=nope"),
        format!("{API}/attempts?cols=loss,nope"),
    ] {
        let (status, body) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(
            said(&body).contains("column \"nope\" is not a metric"),
            "{uri}: {body}"
        );
    }
}
