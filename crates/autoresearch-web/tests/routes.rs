//! Every route of the dashboard, through the router (`oneshot`), over a
//! real redb ledger: pages and their JSON, actions with and without the
//! token, and bad parameters (a 4xx with a sentence, never a 5xx).

mod common;

use autoresearch_core::{OutcomeStatus, Tick};
use autoresearch_web::router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::http::*;
use common::*;
use serde_json::{Value, json};
use tower::ServiceExt;

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
