//! Every route of the dashboard, through the router (`oneshot`), over a
//! real redb ledger: pages and their JSON, actions with and without the
//! token, and bad parameters (a 4xx with a sentence, never a 5xx).

mod common;

use autoresearch_core::{OutcomeStatus, Tick, World};
use autoresearch_web::router;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use serde_json::{Value, json};
use tower::ServiceExt;

/// An experiment with every kind of attempt: baseline, keeps, discards, a
/// crash, two pending runs, a run in flight; and a fork of it.
async fn fixture() -> (Ledger, Writer) {
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

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String, String) {
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

async fn get(app: &Router, uri: &str) -> (StatusCode, String, String) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_json(app: &Router, uri: &str) -> Value {
    let (status, ctype, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert!(ctype.starts_with("application/json"), "{uri}: {ctype}");
    serde_json::from_str(&body).unwrap()
}

async fn get_html(app: &Router, uri: &str) -> String {
    let (status, ctype, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert!(ctype.starts_with("text/html"), "{uri}: {ctype}");
    body
}

fn post(uri: &str, token: Option<&str>, body: Value) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

const W: &str = "/worlds/autoresearch%3Ademo";
const API: &str = "/api/worlds/autoresearch%3Ademo";

fn run_ids(table: &Value) -> Vec<String> {
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_worlds_page_lists_each_world_with_head_and_counts() {
    let (ledger, w) = fixture().await;
    w.world.fork(Tick(3), "what-if").await.unwrap();
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let j = get_json(&app, "/api/worlds").await;
    let worlds = j["worlds"].as_array().unwrap();
    assert_eq!(worlds.len(), 2);
    let demo = &worlds[0];
    assert_eq!(demo["world"], "autoresearch:demo");
    assert_eq!(demo["experiment"], "demo");
    assert_eq!(demo["head_commit"], format!("{:040x}", 5));
    assert_eq!(demo["head_metric"], 8.0);
    assert_eq!(demo["metric"], "score");
    assert_eq!(
        demo["counts"],
        json!({"attempts": 8, "keeps": 2, "discards": 1, "crashes": 1, "pending": 2, "baselines": 1, "in_flight": 1})
    );
    assert_eq!(demo["tick"], w.tick().0);
    assert!(demo["last_activity_ms"].as_i64().unwrap() > 0);
    let fork = &worlds[1];
    assert_eq!(fork["world"], "what-if");
    assert_eq!(fork["parent"]["world"], "autoresearch:demo");
    assert_eq!(fork["parent"]["tick"], 3);
    assert_eq!(
        fork["counts"]["attempts"], 2,
        "the fork sees the ticks up to 3"
    );

    let html = get_html(&app, "/").await;
    assert!(html.contains(r#"<a href="/worlds/autoresearch%3Ademo">autoresearch:demo</a>"#));
    assert!(html.contains("fork of"));
    assert!(html.contains(&format!("{:010x}", 0)[..4]));
}

#[tokio::test]
async fn the_experiment_page_shows_summary_chart_table_in_flight_and_pending() {
    let (ledger, w) = fixture().await;
    w.world.fork(Tick(4), "what-if").await.unwrap();
    let app = router(
        ledger.read_only(),
        ledger.registry.clone(),
        with_actions(ledger.storage.clone(), ledger.registry.clone()),
    );
    let j = get_json(&app, API).await;
    assert_eq!(j["experiment"], "demo");
    assert_eq!(j["live"], true);
    assert_eq!(j["tick"], w.tick().0);
    assert_eq!(j["head"]["run_id"], "run-0005");
    assert_eq!(j["head"]["metric"], 8.0);
    assert_eq!(j["minimize"], true);
    assert_eq!(j["counts"]["attempts"], 8);
    assert_eq!(
        run_ids(&j["table"])[..3],
        ["run-0008", "run-0007", "run-0006"]
    );
    assert_eq!(j["table"]["total"], 8);
    let in_flight = j["in_flight"].as_array().unwrap();
    assert_eq!(in_flight.len(), 1);
    assert_eq!(in_flight[0]["run_id"], "run-0008");
    assert_eq!(in_flight[0]["phase"], "proposing");
    assert!(in_flight[0]["elapsed"].as_str().unwrap().starts_with("1m"));
    let pending: Vec<&str> = j["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(pending, ["run-0006", "run-0007"]);
    assert_eq!(j["forks"][0]["world"], "what-if");
    assert_eq!(j["forks"][0]["tick"], 4);
    assert_eq!(j["actions"], true);

    let html = get_html(&app, W).await;
    assert!(html.contains(r#"<svg class="chart""#), "inline chart");
    assert!(html.contains(r#"class="steps""#), "kept step line");
    assert!(html.contains("id=\"tick-slider\""));
    assert!(html.contains(r#"data-verdict="keep""#), "vote buttons");
    assert!(html.contains("idea number 3 &lt;try&gt;"), "escaped idea");
    assert!(!html.contains("idea number 3 <try>"));
    assert!(html.contains(r#"data-events="/worlds/autoresearch%3Ademo/events""#));
    assert!(html.contains("<a href=\"/worlds/what-if\">what-if</a>"));

    let ro = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let html = get_html(&ro, W).await;
    assert!(
        !html.contains("data-verdict"),
        "read-only pages offer no actions"
    );

    let frag = get_html(&app, &format!("{W}/live")).await;
    assert!(frag.starts_with("<section class=\"summary\""));
    assert!(!frag.contains("<html"));
}

#[tokio::test]
async fn the_attempts_table_pages_filters_searches_and_sorts_on_the_server() {
    let (ledger, _w) = fixture().await;
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let page = |q: &str| format!("{API}/attempts?{q}");
    let j = get_json(&app, &page("per=3")).await;
    assert_eq!(run_ids(&j["table"]), ["run-0008", "run-0007", "run-0006"]);
    assert_eq!(j["table"]["pages"], 3);
    assert_eq!(j["table"]["next"], "per=3&page=2");
    let j = get_json(&app, &page("per=3&page=3")).await;
    assert_eq!(run_ids(&j["table"]), ["run-0002", "run-0001"]);
    assert_eq!(j["table"]["next"], Value::Null);
    let j = get_json(&app, &page("sort=old&per=2")).await;
    assert_eq!(run_ids(&j["table"]), ["run-0001", "run-0002"]);
    let j = get_json(&app, &page("status=keep")).await;
    assert_eq!(run_ids(&j["table"]), ["run-0005", "run-0002"]);
    assert_eq!(j["table"]["total"], 2);
    let j = get_json(&app, &page("status=crash")).await;
    assert_eq!(run_ids(&j["table"]), ["run-0004"]);
    let j = get_json(&app, &page("q=EXITED")).await;
    assert_eq!(
        run_ids(&j["table"]),
        ["run-0004"],
        "search is case-insensitive, over reasons"
    );
    let j = get_json(&app, &page("q=idea+number+3")).await;
    assert_eq!(run_ids(&j["table"]), ["run-0003"]);
    let j = get_json(&app, &page("sort=best&per=4")).await;
    assert_eq!(
        run_ids(&j["table"]),
        ["run-0006", "run-0005", "run-0007", "run-0002"],
        "lowest score first"
    );
    let j = get_json(&app, &page("sort=best&status=pending")).await;
    assert_eq!(run_ids(&j["table"]), ["run-0006", "run-0007"]);

    let html = get_html(&app, &format!("{W}?status=keep&per=1")).await;
    assert!(html.contains("run-0005"));
    assert!(!html.contains(">run-0002<"), "one row per page");
    assert!(
        html.contains("?status=keep&amp;per=1&amp;page=2"),
        "next page link keeps the filter"
    );
}

#[tokio::test]
async fn a_past_tick_shows_the_experiment_as_it_was() {
    let (ledger, _w) = fixture().await;
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    // Tick 1: the Experiment; tick 2: the baseline; tick 3: run-0002 kept.
    let j = get_json(&app, &format!("{API}?tick=3")).await;
    assert_eq!(j["live"], false);
    assert_eq!(j["tick"], 3);
    assert_eq!(j["counts"]["attempts"], 2);
    assert_eq!(j["head"]["run_id"], "run-0002");
    assert_eq!(j["pending"], json!([]));
    let html = get_html(&app, &format!("{W}?tick=3")).await;
    assert!(html.contains("as it was at tick 3"));
    assert!(!html.contains("data-events"), "a past tick is not live");
    let j = get_json(&app, &format!("{API}?tick=0")).await;
    assert_eq!(j["counts"]["attempts"], 0);
    let run = get_json(&app, &format!("{API}/runs/run-0002?tick=3")).await;
    assert_eq!(run["tick"], 3);
    assert_eq!(run["outcome"]["status"], "keep");
    let (status, _, body) = get(&app, &format!("{API}/runs/run-0005?tick=3")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("no run \\\"run-0005\\\" in world \\\"autoresearch:demo\\\" at tick 3"));
}

#[tokio::test]
async fn the_chart_json_has_every_point_and_the_kept_steps() {
    let (ledger, _w) = fixture().await;
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let j = get_json(&app, &format!("{API}/chart")).await;
    let chart = &j["chart"];
    assert_eq!(chart["metric"], "score");
    assert_eq!(chart["attempts"], 8);
    assert_eq!(chart["points"].as_array().unwrap().len(), 8);
    assert_eq!(chart["points"][3]["class"], "crash");
    assert_eq!(chart["points"][3]["metric"], Value::Null);
    assert_eq!(chart["steps"], json!([[1, 10.0], [2, 9.0], [5, 8.0]]));
    assert_eq!(chart["columns"], json!([]));
    assert!(chart.get("svg").is_none());
}

#[tokio::test]
async fn a_long_history_is_charted_in_columns_with_every_keep() {
    let ledger = Ledger::new();
    let mut w = Writer::start(&ledger, "long", 100.0).await;
    // Many attempts in few ticks: one tick per 500.
    for batch in 0..5 {
        for i in 0..500 {
            let n = batch * 500 + i;
            let keep = n % 1000 == 999;
            let mut run = autoresearch_core::Run::new(format!("r{n}"), "long");
            run.set_status(autoresearch_core::RunStatus::Stopped);
            let e = w.world.spawn_with(&run).unwrap();
            let score = 100.0 - n as f64 / 100.0;
            w.world
                .spawn_with(&autoresearch_core::EvalResult::new(
                    format!("r{n}"),
                    "eval",
                    &json!({"score": score}),
                    1,
                ))
                .unwrap();
            let status = if keep {
                OutcomeStatus::Keep
            } else {
                OutcomeStatus::Discard
            };
            w.world
                .insert(
                    e,
                    &autoresearch_core::Outcome {
                        run_id: format!("r{n}"),
                        status,
                        comparator: SPEC.into(),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        w.world.commit().await.unwrap();
    }
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let j = get_json(&app, "/api/worlds/autoresearch%3Along/chart").await;
    let chart = &j["chart"];
    assert_eq!(chart["attempts"], 2501);
    let points = chart["points"].as_array().unwrap();
    assert_eq!(
        points.len(),
        3,
        "the baseline and the two keeps, one by one"
    );
    assert_eq!(
        chart["steps"],
        json!([[1, 100.0], [1001, 90.01], [2001, 80.01]])
    );
    assert_eq!(points[1]["run_id"], "r999");
    let cols = chart["columns"].as_array().unwrap();
    assert!(!cols.is_empty() && cols.len() <= 600, "{}", cols.len());
    assert_eq!(cols[0]["from"], 1);
    assert_eq!(cols.last().unwrap()["to"], 2501);
    let html = get_html(&app, "/worlds/autoresearch%3Along").await;
    assert!(html.len() < 400_000, "page of {} bytes", html.len());
    let t = get_json(&app, "/api/worlds/autoresearch%3Along/attempts?page=51").await;
    assert_eq!(
        run_ids(&t["table"]),
        ["run-0001"],
        "the baseline, oldest, last"
    );
}

#[tokio::test]
async fn a_run_page_shows_samples_decision_votes_and_its_ticks() {
    let (ledger, mut w) = fixture().await;
    let app = router(
        ledger.read_only(),
        ledger.registry.clone(),
        with_actions(ledger.storage.clone(), ledger.registry.clone()),
    );
    let j = get_json(&app, &format!("{API}/runs/run-0002")).await;
    assert_eq!(j["run"]["run_id"], "run-0002");
    assert_eq!(j["class"], "keep");
    assert_eq!(j["metric_value"], 9.0);
    assert_eq!(j["outcome"]["reason"], "better by 1");
    assert_eq!(j["outcome"]["comparator"], SPEC);
    assert!(j["descriptor"].as_str().unwrap().contains("candidate"));
    let samples = j["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(
        samples[0]["outputs"],
        json!([["loss", "18"], ["score", "9"]])
    );
    assert_eq!(samples[0]["counts"], true);
    assert_eq!(j["ticks"][0]["tick"], 3);
    assert_eq!(j["ticks"][0]["url"], "/worlds/autoresearch%3Ademo?tick=3");
    assert_eq!(j["can_vote"], false);
    assert_eq!(j["can_fork"], true);

    // A pending run: vote buttons; a vote shows up on it.
    let html = get_html(&app, &format!("{W}/runs/run-0006")).await;
    assert!(html.contains("vote keep"));
    assert!(html.contains("too close to call"));
    let (status, _, body) = send(
        &app,
        post(
            &format!("{API}/runs/run-0006/vote"),
            Some(TOKEN),
            json!({"verdict": "keep", "reason": "looks right", "voter": "ana"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let receipt: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(receipt["message"], "ana voted keep on run run-0006");
    let j = get_json(&app, &format!("{API}/runs/run-0006")).await;
    assert_eq!(j["votes"][0]["voter"], "ana");
    assert_eq!(j["votes"][0]["reason"], "looks right");
    assert_eq!(w.decide_votes().await, 1);
    let j = get_json(&app, &format!("{API}/runs/run-0006")).await;
    assert_eq!(j["class"], "keep");
    assert_eq!(j["outcome"]["reason"], "decided by ana's vote");
    let html = get_html(&app, &format!("{W}/runs/run-0006")).await;
    assert!(
        html.contains("decided by ana&#x27;s vote") || html.contains("decided by ana&#39;s vote"),
        "{html}"
    );
    let e = get_json(&app, API).await;
    assert_eq!(e["head"]["run_id"], "run-0006");
    assert_eq!(e["counts"]["pending"], 1);
}

#[tokio::test]
async fn actions_are_refused_without_the_token_and_on_a_read_only_dashboard() {
    let (ledger, _w) = fixture().await;
    let app = router(
        ledger.read_only(),
        ledger.registry.clone(),
        with_actions(ledger.storage.clone(), ledger.registry.clone()),
    );
    let vote = format!("{API}/runs/run-0006/vote");
    let fork = format!("{API}/runs/run-0005/fork");
    for uri in [&vote, &fork] {
        let (status, _, body) = send(&app, post(uri, None, json!({"verdict": "keep"}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("needs the dashboard's token"));
        let (status, _, body) =
            send(&app, post(uri, Some("wrong"), json!({"verdict": "keep"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("does not match"));
    }
    let ro = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let (status, _, body) = send(&ro, post(&vote, Some(TOKEN), json!({"verdict": "keep"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("read-only"));
    // Nothing was written by any of them.
    let j = get_json(&app, &format!("{API}/runs/run-0006")).await;
    assert_eq!(j["votes"], json!([]));
    assert_eq!(
        get_json(&app, "/api/worlds").await["worlds"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_fork_makes_the_run_head_in_a_new_world() {
    let (ledger, _w) = fixture().await;
    let app = router(
        ledger.read_only(),
        ledger.registry.clone(),
        with_actions(ledger.storage.clone(), ledger.registry.clone()),
    );
    let (status, _, body) = send(
        &app,
        post(
            &format!("{API}/runs/run-0003/fork"),
            Some(TOKEN),
            json!({"at": 4, "name": "if-3-won"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let j = get_json(&app, "/api/worlds/if-3-won").await;
    assert_eq!(j["head"]["run_id"], "run-0003");
    assert_eq!(j["parent"]["tick"], 4);
    assert_eq!(j["counts"]["attempts"], 3);
    let e = get_json(&app, API).await;
    assert_eq!(e["forks"][0]["world"], "if-3-won");
    // The same name again, a run without a commit, a tick past the head.
    let (status, _, body) = send(
        &app,
        post(
            &format!("{API}/runs/run-0003/fork"),
            Some(TOKEN),
            json!({"name": "if-3-won"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, body) = send(
        &app,
        post(&format!("{API}/runs/run-0008/fork"), Some(TOKEN), json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("has no commit"));
    let (status, _, body) = send(
        &app,
        post(
            &format!("{API}/runs/run-0003/fork"),
            Some(TOKEN),
            json!({"at": 999}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("tick 999"));
}

/// `(uri, expected status, words the message must contain)`.
const BAD: &[(&str, u16, &str)] = &[
    (
        "/api/worlds/autoresearch%3Ademo?tick=abc",
        400,
        "tick \\\"abc\\\" is not a whole number",
    ),
    (
        "/api/worlds/autoresearch%3Ademo?tick=99999",
        400,
        "past the head",
    ),
    (
        "/api/worlds/autoresearch%3Ademo?tick=-1",
        400,
        "not a whole number",
    ),
    (
        "/api/worlds/autoresearch%3Ademo?status=bogus",
        400,
        "status \\\"bogus\\\" is not one of",
    ),
    (
        "/api/worlds/autoresearch%3Ademo?sort=up",
        400,
        "sort \\\"up\\\"",
    ),
    (
        "/api/worlds/autoresearch%3Ademo?page=0",
        400,
        "page \\\"0\\\"",
    ),
    (
        "/api/worlds/autoresearch%3Ademo?page=9",
        400,
        "past the last page",
    ),
    (
        "/api/worlds/autoresearch%3Ademo?per=100000",
        400,
        "per \\\"100000\\\"",
    ),
    (
        "/api/worlds/autoresearch%3Ademo/attempts?page=x",
        400,
        "page",
    ),
    (
        "/api/worlds/autoresearch%3Ademo/chart?tick=1e3",
        400,
        "tick",
    ),
    ("/api/worlds/nope", 404, "no world named \\\"nope\\\""),
    ("/api/worlds/nope/chart", 404, "no world"),
    (
        "/api/worlds/autoresearch%3Ademo/runs/nope",
        404,
        "no run \\\"nope\\\"",
    ),
    ("/api/nothing/here", 404, "no such page"),
];

#[tokio::test]
async fn bad_parameters_get_a_clear_4xx() {
    let (ledger, _w) = fixture().await;
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    for (uri, code, words) in BAD {
        let (status, ctype, body) = get(&app, uri).await;
        assert_eq!(status.as_u16(), *code, "{uri}: {body}");
        assert!(ctype.starts_with("application/json"), "{uri}: {ctype}");
        assert!(body.contains(words), "{uri}: {body}");
    }
    // The pages answer in HTML, with the message escaped.
    for uri in [
        "/worlds/%3Cb%3E",
        "/worlds/autoresearch%3Ademo?page=zz",
        "/worlds/autoresearch%3Ademo/runs/%3Cx%3E",
    ] {
        let (status, ctype, body) = get(&app, uri).await;
        assert!(status.is_client_error(), "{uri}: {status}");
        assert!(ctype.starts_with("text/html"), "{uri}: {ctype}");
        assert!(
            !body.contains("<b>") && !body.contains("<x>"),
            "{uri}: {body}"
        );
    }
    // Action bodies.
    let app = router(
        ledger.read_only(),
        ledger.registry.clone(),
        with_actions(ledger.storage.clone(), ledger.registry.clone()),
    );
    let vote = format!("{API}/runs/run-0006/vote");
    let cases: Vec<(Request<Body>, u16, &str)> = vec![
        (
            post(&vote, Some(TOKEN), json!({"verdict": "maybe"})),
            400,
            "verdict \\\"maybe\\\"",
        ),
        (post(&vote, Some(TOKEN), json!({})), 400, "needs a verdict"),
        (
            post(&vote, Some(TOKEN), json!({"verdict": "keep", "extra": 1})),
            400,
            "unknown field",
        ),
        (
            post(
                &vote,
                Some(TOKEN),
                json!({"verdict": "keep", "voter": "x".repeat(500)}),
            ),
            400,
            "voter must be",
        ),
        (
            Request::post(&vote)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::from("{not json"))
                .unwrap(),
            400,
            "JSON body",
        ),
        (
            post(
                &format!("{API}/runs/run-0002/vote"),
                Some(TOKEN),
                json!({"verdict": "keep"}),
            ),
            409,
            "not waiting for votes",
        ),
        (
            post(
                &format!("{API}/runs/nope/vote"),
                Some(TOKEN),
                json!({"verdict": "keep"}),
            ),
            404,
            "no run",
        ),
        (
            post(
                "/api/worlds/nope/runs/x/vote",
                Some(TOKEN),
                json!({"verdict": "keep"}),
            ),
            404,
            "no world",
        ),
        (
            post(
                &format!("{API}/runs/run-0003/fork"),
                Some(TOKEN),
                json!({"at": 0}),
            ),
            400,
            "ticks run from 1",
        ),
        (
            post(
                &format!("{API}/runs/run-0003/fork"),
                Some(TOKEN),
                json!({"at": "x"}),
            ),
            400,
            "JSON body",
        ),
    ];
    for (req, code, words) in cases {
        let uri = req.uri().to_string();
        let (status, _, body) = send(&app, req).await;
        assert_eq!(status.as_u16(), code, "{uri}: {body}");
        assert!(body.contains(words), "{uri}: {body}");
    }
    let j = get_json(&app, &format!("{API}/runs/run-0006")).await;
    assert_eq!(j["votes"], json!([]), "no refused vote was recorded");
}

#[tokio::test]
async fn assets_are_served_from_the_binary() {
    let ledger = Ledger::new();
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let (status, ctype, body) = get(&app, "/assets/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/javascript"));
    assert!(body.contains("EventSource"));
    let (status, ctype, body) = get(&app, "/assets/style.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/css"));
    assert!(body.contains("svg.chart"));
    let html = get_html(&app, "/").await;
    assert!(html.contains("holds no worlds yet"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
}

#[tokio::test]
async fn events_send_the_head_tick_now_and_when_it_moves() {
    use futures_util::StreamExt;
    let (ledger, mut w) = fixture().await;
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let resp = app
        .clone()
        .oneshot(
            Request::get(format!("{W}/events"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    let mut next_event = async || loop {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        let text = String::from_utf8(chunk.to_vec()).unwrap();
        if text.contains("event: tick") {
            return text;
        }
    };
    let first = next_event().await;
    assert!(first.contains(&format!("data: {}", w.tick().0)), "{first}");
    w.attempt(Some(7.0), OutcomeStatus::Keep, "later").await;
    let second = next_event().await;
    assert!(
        second.contains(&format!("data: {}", w.tick().0)),
        "{second}"
    );
    let (status, _, _) = get(&app, "/worlds/nope/events").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_live_index_follows_new_ticks_as_a_fresh_materialization_does() {
    let (ledger, mut w) = fixture().await;
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let before = get_json(&app, API).await;
    assert_eq!(before["counts"]["attempts"], 8);
    // Append ticks of every kind: decisions, a vote, a new head, a run in flight finishing.
    w.attempt(Some(6.0), OutcomeStatus::Keep, "best yet").await;
    let mut world = World::open(
        ledger.storage.clone(),
        ledger.registry.clone(),
        "autoresearch:demo",
    )
    .await
    .unwrap();
    world
        .spawn_with(&autoresearch_core::Vote {
            run_id: "run-0007".into(),
            verdict: autoresearch_core::VoteVerdict::Discard,
            voter: "bo".into(),
            reason: String::new(),
            at_ms: 1,
        })
        .unwrap();
    world.commit().await.unwrap();
    w.decide_votes().await;
    w.in_flight().await;
    let live = get_json(&app, API).await;
    // A second dashboard materializes the head from scratch.
    let fresh_app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let fresh = get_json(&fresh_app, API).await;
    assert_eq!(without_ages(live.clone()), without_ages(fresh));
    assert_eq!(live["counts"]["attempts"], 10);
    assert_eq!(live["counts"]["pending"], 1);
    assert_eq!(live["counts"]["in_flight"], 2);
    assert_eq!(live["head"]["run_id"], "run-0009");
    let live_all = get_json(&app, &format!("{API}/attempts?per=500&sort=best")).await;
    let fresh_all = get_json(&fresh_app, &format!("{API}/attempts?per=500&sort=best")).await;
    assert_eq!(without_ages(live_all), without_ages(fresh_all));
}

/// `v` without the fields that say how long ago something was (they move
/// with the clock between two requests).
fn without_ages(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("elapsed");
                m.remove("last_activity");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

#[tokio::test]
async fn random_changes_keep_the_live_index_equal_to_a_fresh_one() {
    use autoresearch_core::{EvalResult, Outcome, Run, RunStatus, Vote, VoteVerdict};
    let ledger = Ledger::new();
    let mut w = Writer::start(&ledger, "rand", 5.0).await;
    let live = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let mut rng = Rng(17);
    let statuses = [
        OutcomeStatus::Keep,
        OutcomeStatus::Discard,
        OutcomeStatus::Crash,
        OutcomeStatus::Pending,
    ];
    // One change a tick: the choices read the committed state.
    for step in 0..80 {
        let world = &mut w.world;
        {
            let runs = world.find_all::<Run>(|_| true);
            let results = world.find_all::<EvalResult>(|_| true);
            let votes = world.find_all::<Vote>(|_| true);
            let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
            match rng.below(12) {
                0 | 1 => {
                    let mut run = Run::new(format!("x{step}-{}", rng.below(1000)), "rand");
                    run.set_status(RunStatus::Running);
                    if world.run_by_id(&run.run_id).is_none() {
                        world.spawn_with(&run).unwrap();
                    }
                }
                2 if !runs.is_empty() => {
                    let (e, mut run) = runs[pick(&mut rng, runs.len())].clone();
                    run.set_status(RunStatus::Stopped);
                    run.commit_hash = format!("{:040}", rng.below(9));
                    world.insert(e, &run).unwrap();
                    let status = statuses[pick(&mut rng, statuses.len())].clone();
                    world
                        .insert(
                            e,
                            &Outcome {
                                run_id: run.run_id,
                                status,
                                comparator: SPEC.into(),
                                ..Outcome::default()
                            },
                        )
                        .unwrap();
                }
                3 if !runs.is_empty() => {
                    // Results, sometimes for a run id not recorded yet.
                    let run_id = if rng.below(4) == 0 {
                        format!("x{}-{}", step + 1, rng.below(1000))
                    } else {
                        runs[pick(&mut rng, runs.len())].1.run_id.clone()
                    };
                    let score = rng.below(100) as f64 / 10.0;
                    world
                        .spawn_with(&EvalResult::new(run_id, "e", &json!({"score": score}), 1))
                        .unwrap();
                }
                4 if !runs.is_empty() => {
                    let run_id = runs[pick(&mut rng, runs.len())].1.run_id.clone();
                    world
                        .spawn_with(&Vote {
                            run_id,
                            verdict: VoteVerdict::Keep,
                            voter: "v".into(),
                            reason: String::new(),
                            at_ms: 1,
                        })
                        .unwrap();
                }
                5 if !runs.is_empty() => {
                    let (e, _) = runs[pick(&mut rng, runs.len())];
                    world.remove::<Outcome>(e).unwrap();
                }
                6 if !runs.is_empty() && rng.below(3) == 0 => {
                    let (e, _) = runs[pick(&mut rng, runs.len())];
                    world.despawn(e).unwrap();
                }
                7 if !results.is_empty() => {
                    let (e, _) = results[pick(&mut rng, results.len())];
                    world.despawn(e).unwrap();
                }
                8 if !votes.is_empty() => {
                    let (e, _) = votes[pick(&mut rng, votes.len())];
                    world.despawn(e).unwrap();
                }
                9 if !runs.is_empty() => {
                    // A cost set, replaced or removed.
                    let (e, run) = &runs[pick(&mut rng, runs.len())];
                    if rng.below(3) == 0 {
                        world.remove::<autoresearch_core::RunCost>(*e).unwrap();
                    } else {
                        let mut c = autoresearch_core::RunCost::new(&run.run_id);
                        let usage = autoresearch_core::JobUsage {
                            wall_ms: rng.below(5000),
                            cpu_ms: rng.below(5000),
                        };
                        let tokens = rng.below(100) as f64;
                        c.charge(
                            autoresearch_core::CostKind::Evaluate,
                            usage,
                            &[("tokens".into(), tokens)],
                        );
                        world.insert(*e, &c).unwrap();
                    }
                }
                10 if !runs.is_empty() => {
                    // A Description set or removed, a Confirmation set.
                    let (e, run) = &runs[pick(&mut rng, runs.len())];
                    match rng.below(3) {
                        0 => world.remove::<autoresearch_core::Description>(*e).unwrap(),
                        1 => world
                            .insert(
                                *e,
                                &autoresearch_core::Description {
                                    run_id: run.run_id.clone(),
                                    text: format!("idea {step}\nbody"),
                                },
                            )
                            .unwrap(),
                        _ => world
                            .insert(
                                *e,
                                &autoresearch_core::Confirmation {
                                    run_id: run.run_id.clone(),
                                    status: autoresearch_core::ConfirmStatus::Confirmed,
                                    value: Some(step as f64),
                                    ..Default::default()
                                },
                            )
                            .unwrap(),
                    }
                }
                11 if !runs.is_empty() => {
                    // A scheduler job, sometimes moved on or removed.
                    let jobs = world.find_all::<autoresearch_core::ExecutorJob>(|_| true);
                    match (rng.below(3), jobs.is_empty()) {
                        (0, false) => {
                            let (e, _) = jobs[pick(&mut rng, jobs.len())];
                            world.despawn(e).unwrap();
                        }
                        (1, false) => {
                            let (e, mut j) = jobs[pick(&mut rng, jobs.len())].clone();
                            j.state = autoresearch_core::JobState::Completed;
                            world.insert(e, &j).unwrap();
                        }
                        _ => {
                            let run_id = runs[pick(&mut rng, runs.len())].1.run_id.clone();
                            world
                                .spawn_with(&autoresearch_core::ExecutorJob {
                                    run_id,
                                    job_id: format!("{step}"),
                                    state: autoresearch_core::JobState::Running,
                                    ..Default::default()
                                })
                                .unwrap();
                        }
                    }
                }
                _ => {}
            }
        }
        if world.pending().is_empty() {
            continue;
        }
        world.commit().await.unwrap();
        let uri = "/api/worlds/autoresearch%3Arand/attempts?per=500&sort=old";
        let a = get_json(&live, uri).await;
        let fresh = router(ledger.read_only(), ledger.registry.clone(), read_only());
        let b = get_json(&fresh, uri).await;
        assert_eq!(without_ages(a), without_ages(b), "step {step}");
        let a = get_json(&live, "/api/worlds").await;
        let b = get_json(&fresh, "/api/worlds").await;
        assert_eq!(without_ages(a), without_ages(b), "step {step}");
        let exp = "/api/worlds/autoresearch%3Arand";
        let a = without_ages(get_json(&live, exp).await);
        let b = without_ages(get_json(&fresh, exp).await);
        for field in ["cost", "noise", "in_flight"] {
            assert_eq!(a[field], b[field], "step {step}: {field}");
        }
        // A run's page: its ticks from the store and the recent window.
        let runs = w.world.find_all::<Run>(|_| true);
        if !runs.is_empty() {
            let run = &runs[rng.below(runs.len() as u64) as usize].1.run_id;
            let uri = format!("{exp}/runs/{run}");
            let a = get_json(&live, &uri).await;
            let b = get_json(&fresh, &uri).await;
            for field in ["ticks", "samples", "idea", "cost", "confirmation", "jobs"] {
                assert_eq!(a[field], b[field], "step {step}: run {run} {field}");
            }
        }
    }
}

/// Writes what a loop records beside its runs: run-0002's Description,
/// cost and held-out confirmation, run-0005's cost, the experiment's noise
/// model and a Slurm job of the run in flight (run-0008).
async fn record_extras(w: &mut Writer) {
    use autoresearch_core::{
        ConfirmStatus, CostKind, Description, ExecutorJob, JobState, JobUsage, MetricNoise,
        NoiseModel, Run, RunCost,
    };
    let entity = |w: &Writer, id: &str| w.world.find::<Run>(|r| r.run_id == id).unwrap().0;
    let e2 = entity(w, "run-0002");
    let e5 = entity(w, "run-0005");
    w.world
        .insert(
            e2,
            &Description {
                run_id: "run-0002".into(),
                text: "Unroll the inner loop\n\nFour at a time.".into(),
            },
        )
        .unwrap();
    let mut cost = RunCost::new("run-0002");
    let usage = |s: u64| JobUsage {
        wall_ms: s * 1000,
        cpu_ms: s * 500,
    };
    cost.charge(CostKind::Propose, usage(4), &[("tokens".into(), 1200.0)]);
    cost.charge(CostKind::Evaluate, usage(2), &[]);
    w.world.insert(e2, &cost).unwrap();
    let mut cost5 = RunCost::new("run-0005");
    cost5.charge(CostKind::Evaluate, usage(10), &[("tokens".into(), 300.0)]);
    w.world.insert(e5, &cost5).unwrap();
    w.world
        .insert(
            e2,
            &autoresearch_core::Confirmation {
                run_id: "run-0002".into(),
                commit: format!("{:040x}", 2),
                status: ConfirmStatus::Confirmed,
                metric: "held_out".into(),
                value: Some(0.91),
                incumbent_value: Some(0.93),
                reason: "within tolerance".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let (exp, _) = w.world.experiment("demo").unwrap();
    w.world
        .insert(
            exp,
            &NoiseModel {
                experiment_name: "demo".into(),
                metrics: vec![
                    MetricNoise {
                        metric: "score".into(),
                        sigma: 0.25,
                        df: 12,
                        groups: 5,
                        samples: 17,
                        method: "pooled-mad".into(),
                    },
                    MetricNoise {
                        metric: "loss".into(),
                        method: "none".into(),
                        ..Default::default()
                    },
                ],
                updated_at_ms: autoresearch_core::now_ms(),
            },
        )
        .unwrap();
    w.world
        .spawn_with(&ExecutorJob {
            run_id: "run-0008".into(),
            step: "evaluate-0".into(),
            executor: "slurm".into(),
            job_id: "4711_0".into(),
            state: JobState::Running,
            ..Default::default()
        })
        .unwrap();
    w.world.commit().await.unwrap();
}

/// Checks the extras on the experiment and run pages of `app`; `cost_jobs`
/// and `tokens` are the experiment's summed cost.
async fn check_extras(app: &Router, cost_jobs: u64, tokens: f64) {
    let j = get_json(app, API).await;
    assert_eq!(j["cost"]["jobs"], cost_jobs, "{}", j["cost"]);
    assert_eq!(j["cost"]["metrics"]["tokens"], tokens);
    let noise = j["noise"]["metrics"].as_array().unwrap();
    assert_eq!(noise.len(), 1, "only the metric ever repeated: {noise:?}");
    assert_eq!(noise[0]["metric"], "score");
    assert_eq!(noise[0]["sigma"], 0.25);
    assert_eq!(j["in_flight"][0]["run_id"], "run-0008");
    assert_eq!(j["in_flight"][0]["jobs"][0]["job_id"], "4711_0");
    assert_eq!(j["in_flight"][0]["jobs"][0]["state"], "running");
    let row2 = j["table"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == "run-0002")
        .unwrap();
    assert_eq!(
        row2["idea"], "Unroll the inner loop",
        "the Description's subject"
    );
    assert_eq!(row2["confirm"], "ok 0.91");
    let found = get_json(app, &format!("{API}?q=four+AT+a+time")).await;
    assert_eq!(
        run_ids(&found["table"]),
        vec!["run-0002"],
        "search finds the Description's body"
    );

    let html = get_html(app, W).await;
    assert!(
        html.contains("run-0002 · keep: 9\nUnroll the inner loop\n"),
        "the chart's hover shows the idea"
    );
    assert!(html.contains("score σ 0.25 (pooled-mad, df 12 from 5 commits)"));
    assert!(html.contains("slurm 4711_0 evaluate-0 running"));
    assert!(
        html.contains(&format!("tokens {tokens}")),
        "the summed cost"
    );
    assert!(html.contains("Unroll the inner loop"));

    let r = get_json(app, &format!("{API}/runs/run-0002")).await;
    assert_eq!(r["idea"], "Unroll the inner loop");
    assert_eq!(r["description"], "Unroll the inner loop\n\nFour at a time.");
    assert_eq!(r["cost"]["cpu_ms"], 3000);
    assert_eq!(r["cost"]["wall_ms"], 6000);
    assert_eq!(r["cost"]["jobs"], 2);
    assert_eq!(r["confirmation"]["status"], "confirmed");
    assert_eq!(r["confirm_text"], "ok 0.91: within tolerance");
    let html = get_html(app, &format!("{W}/runs/run-0002")).await;
    assert!(html.contains(r#"<p class="idea lead" id="idea">Unroll the inner loop</p>"#));
    assert!(html.contains("Four at a time."));
    assert!(html.contains("CPU 3s (propose 2s, evaluate 1s), wall 6s, 2 jobs; tokens 1200"));
    assert!(html.contains("ok 0.91: within tolerance"));
    let r8 = get_json(app, &format!("{API}/runs/run-0008")).await;
    assert_eq!(r8["jobs"][0]["job_id"], "4711_0");
    assert_eq!(
        r8["idea"], "an idea being tried",
        "the task without a Description"
    );
    assert!(r8["cost"].is_null());
    let html = get_html(app, &format!("{W}/runs/run-0008")).await;
    assert!(html.contains(r#"<td class="mono">4711_0</td>"#));
}

#[tokio::test]
async fn cost_noise_confirmation_jobs_and_the_idea_show_live_and_from_a_fresh_index() {
    let (ledger, mut w) = fixture().await;
    let app = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let j = get_json(&app, API).await;
    assert!(j["cost"].is_null(), "nothing charged yet");
    assert!(j["noise"].is_null());
    let html = get_html(&app, W).await;
    assert!(html.contains("none charged yet"));
    assert!(html.contains("not known yet"));

    // The live index follows the new tick; a new server builds its index
    // from the materialized head: both show the same.
    record_extras(&mut w).await;
    check_extras(&app, 3, 1500.0).await;
    let fresh = router(ledger.read_only(), ledger.registry.clone(), read_only());
    check_extras(&fresh, 3, 1500.0).await;

    // A cost replaced and one removed leave the sum of what is stored.
    let (e5, _) = w
        .world
        .find::<autoresearch_core::Run>(|r| r.run_id == "run-0005")
        .unwrap();
    w.world.remove::<autoresearch_core::RunCost>(e5).unwrap();
    w.world.commit().await.unwrap();
    let j = get_json(&app, API).await;
    assert_eq!(j["cost"]["jobs"], 2);
    assert_eq!(j["cost"]["metrics"]["tokens"], 1200.0);
}

/// The ticks a run page lists for `run`, as numbers.
async fn page_ticks(app: &Router, run: &str, at: Option<u64>) -> Vec<u64> {
    let q = at.map(|t| format!("?tick={t}")).unwrap_or_default();
    let j = get_json(app, &format!("{API}/runs/{run}{q}")).await;
    j["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tick"].as_u64().unwrap())
        .collect()
}

/// The ticks that changed `run`'s entity up to `to`, read through core's
/// `entity_history` (the whole entity index, no window).
async fn true_ticks(ledger: &Ledger, w: &Writer, run: &str, to: u64) -> Vec<u64> {
    let (entity, _) = w
        .world
        .find::<autoresearch_core::Run>(|r| r.run_id == run)
        .unwrap();
    let mut ticks: Vec<u64> = autoresearch_core::ledger::entity_history(
        ledger.storage.as_ref(),
        w.world.id(),
        entity,
        Tick(to),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|c| c.tick.0)
    .collect();
    ticks.dedup();
    ticks
}

#[tokio::test]
async fn a_run_page_lists_the_same_ticks_before_and_inside_the_recent_window() {
    let (ledger, mut w) = fixture().await;
    let live = router(ledger.read_only(), ledger.registry.clone(), read_only());
    assert_eq!(page_ticks(&live, "run-0003", None).await, vec![4]);
    // More ticks than the window holds, then a change to an old run: its
    // page lists ticks from before the window (the store's index) and
    // from inside it (the index's window), for an index that followed the
    // ticks, one built afresh, and one of a past tick.
    for _ in 0..(autoresearch_web::index::RECENT_TICKS + 6) {
        w.attempt(Some(9.9), OutcomeStatus::Discard, "worse").await;
    }
    let (e3, _) = w
        .world
        .find::<autoresearch_core::Run>(|r| r.run_id == "run-0003")
        .unwrap();
    w.world
        .insert(
            e3,
            &autoresearch_core::Description {
                run_id: "run-0003".into(),
                text: "late words".into(),
            },
        )
        .unwrap();
    let head = w.world.commit().await.unwrap().0;
    let fresh = router(ledger.read_only(), ledger.registry.clone(), read_only());
    let want = true_ticks(&ledger, &w, "run-0003", head).await;
    assert_eq!(want, vec![4, head], "recorded, then described");
    assert_eq!(page_ticks(&live, "run-0003", None).await, want);
    assert_eq!(page_ticks(&fresh, "run-0003", None).await, want);
    let past = head - 3;
    assert_eq!(
        page_ticks(&fresh, "run-0003", Some(past)).await,
        true_ticks(&ledger, &w, "run-0003", past).await
    );
    let recent = format!("run-{:04}", w.n - 2);
    let want = true_ticks(&ledger, &w, &recent, head).await;
    assert_eq!(want.len(), 1);
    assert_eq!(page_ticks(&live, &recent, None).await, want);
    assert_eq!(page_ticks(&fresh, &recent, None).await, want);
    let j = get_json(&fresh, &format!("{API}/runs/run-0003")).await;
    assert_eq!(
        j["samples"].as_array().unwrap().len(),
        1,
        "its Result found"
    );
    assert_eq!(j["idea"], "late words");
}
