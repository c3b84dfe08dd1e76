//! The replay view (two worlds' trajectories compared, changed decisions
//! marked) and the "start a replay" action.

use super::actions::{authorize, parse_body, text_field};
use super::*;
use crate::compare::{CompareRow, Comparison};
use autoresearch_core::{ReplayOrder, ReplayerError};

/// The replay view's query parameters, all optional.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CompareQuery {
    /// The world compared with (world A, the original); default: the
    /// page's world's parent.
    with: Option<String>,
    /// `all` rows (default) or only the `changed` ones.
    show: Option<String>,
    page: Option<String>,
    per: Option<String>,
}

/// One world of a comparison.
#[derive(Clone, Debug, Serialize)]
struct CompareSide {
    world: String,
    url: String,
    tick: u64,
    comparator: String,
    head: Option<HeadView>,
    counts: crate::index::Counts,
}

/// Everything the replay view shows.
#[derive(Clone, Debug, Serialize)]
struct ReplayView {
    experiment: String,
    /// World A: the original trajectory.
    a: CompareSide,
    /// World B: the page's world (a fork or replay of A).
    b: CompareSide,
    /// The tick B was forked from A at, when it was.
    forked_at: Option<u64>,
    metric: Option<String>,
    minimize: bool,
    /// Attempts in either world.
    attempts: usize,
    /// Attempts both hold.
    shared: usize,
    /// Attempts decided differently (keep and baseline alike).
    changed: usize,
    /// `all` or `changed`.
    show: &'static str,
    rows: Vec<CompareRow>,
    /// Rows passing `show`.
    total: usize,
    page: usize,
    per: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
    /// The page's own path and query (for links).
    url: String,
}

/// A comparison of two worlds at two ticks, on a metric.
pub(super) type CompareKey = (WorldId, Tick, WorldId, Tick, Option<String>);

fn side(info: &WorldInfo, idx: &WorldIndex, metric: Option<&str>) -> CompareSide {
    CompareSide {
        world: info.name.clone(),
        url: world_url(&info.name),
        tick: idx.tick.0,
        comparator: idx.comparator.clone(),
        head: view::head_view(idx, metric),
        counts: idx.counts.clone(),
    }
}

async fn replay_view(
    s: &AppState,
    world: &str,
    q: &CompareQuery,
) -> Result<(ReplayView, Arc<Comparison>), WebError> {
    let show = match q.show.as_deref().filter(|v| !v.is_empty()) {
        None | Some("all") => "all",
        Some("changed") => "changed",
        Some(other) => {
            return Err(WebError::BadRequest(format!(
                "show {other:?} is not all or changed"
            )));
        }
    };
    // Page numbers as the attempts table parses them.
    let paging = TableQuery::parse(None, None, None, q.page.as_deref(), q.per.as_deref())?;
    let b_info = s.view.world(world).await?;
    let worlds = s.view.worlds().await?;
    let a_name = match q.with.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
        Some(w) => w.to_string(),
        None => view::parent_view(&b_info, &worlds)
            .map(|p| p.world)
            .ok_or_else(|| {
                WebError::BadRequest(format!(
                    "world {:?} is not a fork: say which world to compare it with (?with=WORLD)",
                    b_info.name
                ))
            })?,
    };
    let a_info = s.view.world(&a_name).await?;
    if a_info.id == b_info.id {
        return Err(WebError::BadRequest(format!(
            "world {:?} compared with itself: give another world in ?with=",
            b_info.name
        )));
    }
    let a_live = s.view.live(&a_info).await?;
    let b_live = s.view.live(&b_info).await?;
    let a = a_live.read().await;
    let b = b_live.read().await;
    let metric = a.metric(&s.config.metric).or(b.metric(&s.config.metric));
    let metric_name = metric.as_ref().map(|(m, _)| m.as_str());
    let key: CompareKey = (
        a.info.id,
        a.tick,
        b.info.id,
        b.tick,
        metric.as_ref().map(|m| m.0.clone()),
    );
    let cmp = s
        .comparisons
        .get_or(key, || Arc::new(Comparison::of(&a, &b, metric_name)));
    let total = if show == "changed" {
        cmp.changed.len()
    } else {
        cmp.pairs.len()
    };
    let pages = total.div_ceil(paging.per).max(1);
    if paging.page > pages {
        return Err(WebError::BadRequest(format!(
            "page {} is past the last page of the comparison (there are {pages} pages of {} rows)",
            paging.page, paging.per
        )));
    }
    let offset = (paging.page - 1) * paging.per;
    let picked: Vec<usize> = if show == "changed" {
        cmp.changed
            .iter()
            .skip(offset)
            .take(paging.per)
            .map(|&i| i as usize)
            .collect()
    } else {
        (offset..(offset + paging.per).min(total)).collect()
    };
    let rows = picked
        .into_iter()
        .filter_map(|i| crate::compare::row(&a, &b, cmp.pairs[i], i + 1, metric_name))
        .collect();
    let base = format!("{}/replay", world_url(&b_info.name));
    let href = |page: usize| {
        let mut parts = vec![format!("with={}", enc(&a_info.name))];
        if show != "all" {
            parts.push(format!("show={show}"));
        }
        if paging.per != view::PER_PAGE {
            parts.push(format!("per={}", paging.per));
        }
        if page != 1 {
            parts.push(format!("page={page}"));
        }
        format!("{base}?{}", parts.join("&"))
    };
    let v = ReplayView {
        experiment: b.experiment_name(),
        forked_at: b_info
            .parent
            .filter(|p| p.parent == a_info.id)
            .map(|p| p.tick.0),
        a: side(&a_info, &a, metric_name),
        b: side(&b_info, &b, metric_name),
        metric: metric.as_ref().map(|(m, _)| m.clone()),
        minimize: metric.as_ref().is_none_or(|(_, m)| *m),
        attempts: cmp.pairs.len(),
        shared: cmp.shared,
        changed: cmp.changed.len(),
        show,
        rows,
        total,
        page: paging.page,
        per: paging.per,
        pages,
        prev: (paging.page > 1).then(|| href(paging.page - 1)),
        next: (paging.page < pages).then(|| href(paging.page + 1)),
        url: href(paging.page),
    };
    Ok((v, cmp))
}

pub(super) async fn replay_page(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
    Query(q): Query<CompareQuery>,
) -> Result<Html<String>, HtmlError> {
    let (v, cmp) = replay_view(&s, &world, &q).await?;
    let chart = cmp.chart(v.metric.as_deref(), (&v.a.world, &v.b.world));
    let actions = s.config.replayer.is_some() && matches!(s.config.access, Access::Token { .. });
    Ok(s.render(
        "replay.html",
        minijinja::context! {
            title => s.config.title,
            v => v,
            chart => minijinja::Value::from_safe_string(chart.svg),
            actions => actions,
        },
    )?)
}

pub(super) async fn replay_json(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
    Query(q): Query<CompareQuery>,
) -> Result<Response, WebError> {
    let (v, cmp) = replay_view(&s, &world, &q).await?;
    Ok(axum::Json(serde_json::json!({
        "view": v,
        "steps_a": cmp.steps_a,
        "steps_b": cmp.steps_b,
    }))
    .into_response())
}

// ------------------------------------------------------ start a replay

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayBody {
    comparator: Option<String>,
    from: Option<u64>,
    name: Option<String>,
}

/// What starting a replay answers: the receipt and the replay view's path.
#[derive(Debug, Serialize)]
pub(super) struct ReplayReceipt {
    message: String,
    world: String,
    /// The replay view of the new fork against the world replayed.
    url: String,
    detail: serde_json::Value,
}

/// `POST /api/worlds/{world}/replays`: replays the world's experiment
/// under the body's comparator into a new fork (201, its replay view in
/// `Location` and `url`).
pub(super) async fn start_replay(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    authorize(&s, &headers)?;
    let Some(replayer) = s.config.replayer.clone() else {
        return Err(WebError::Forbidden(
            "this dashboard was started without a replayer: it cannot start replays".into(),
        ));
    };
    let body: ReplayBody = parse_body(&body, "replay")?;
    let spec = text_field("comparator", body.comparator, 500)?.ok_or_else(|| {
        WebError::BadRequest(
            "a replay needs a comparator spec: {\"comparator\": \"scalar:score:min\"}".into(),
        )
    })?;
    let name = text_field("name", body.name, 100)?;
    replayer.check_spec(&spec).map_err(replayer_error)?;
    let info = s.view.world(&world).await?;
    if let Some(t) = body.from
        && (t == 0 || t > info.head.0)
    {
        return Err(WebError::BadRequest(format!(
            "cannot replay world {:?} from tick {t}: ticks run from 1 to its head, {}",
            info.name, info.head.0
        )));
    }
    let experiment = {
        let live = s.view.live(&info).await?;
        let idx = live.read().await;
        idx.experiment_name()
    };
    let started = replayer
        .replay(ReplayOrder {
            experiment,
            source_world: info.name.clone(),
            comparator: spec,
            from: body.from.map(Tick),
            fork_name: name,
        })
        .await
        .map_err(replayer_error)?;
    let url = format!(
        "{}/replay?with={}",
        world_url(&started.fork_world),
        enc(&info.name)
    );
    let receipt = ReplayReceipt {
        message: format!(
            "replayed {} from tick {} under {} into {}: {} candidates re-decided, {} differently",
            info.name,
            started.from_tick,
            started.comparator,
            started.fork_world,
            started.candidates,
            started.changed
        ),
        world: started.fork_world.clone(),
        url: url.clone(),
        detail: serde_json::to_value(&started).unwrap_or_default(),
    };
    let mut resp = (StatusCode::CREATED, axum::Json(receipt)).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

fn replayer_error(e: ReplayerError) -> WebError {
    match e {
        ReplayerError::BadSpec(m) => WebError::BadRequest(m),
        ReplayerError::Refused(m) => WebError::Conflict(m),
        ReplayerError::Failed(m) => WebError::Ledger {
            doing: "replaying into a fork".into(),
            message: m,
        },
        other => WebError::Internal(other.to_string()),
    }
}
