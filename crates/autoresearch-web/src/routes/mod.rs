//! The routes: HTML pages, their JSON twins under `/api`, server-sent
//! events, the two actions, and the embedded assets.

use crate::actions::{ActionError, ActionReceipt, ForkRequest, VoteRequest};
use crate::chart::{self, Chart};
use crate::error::WebError;
use crate::index::{LedgerView, RowClass, WorldIndex};
use crate::view::{
    self, HeadView, Order, ParentView, RowView, TableQuery, TableView, WorldSummary, enc, fmt_age,
    fmt_metric, fmt_time, world_url,
};
use crate::{Access, DashboardConfig, pages};
use autoresearch_core::{
    EvalResult, Outcome, ResultMeta, Run, Tick, Vote, VoteVerdict, WorldId, WorldInfo,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedRwLockReadGuard, watch};

/// Heads of every world, as the live-update task last read them.
type Heads = Arc<HashMap<WorldId, u64>>;

mod actions;
mod columns;
mod replay;
mod run;

use actions::{fork, vote};
use columns::{chart_svg, column_values, metric_columns};
use replay::{CompareKey, replay_json, replay_page, start_replay};
use run::{run_json, run_page};

/// What every handler shares.
pub struct AppState {
    view: LedgerView,
    config: DashboardConfig,
    env: Result<minijinja::Environment<'static>, String>,
    heads: watch::Sender<Heads>,
    polling: AtomicBool,
    charts: Recent<ChartKey, Arc<Chart>>,
    orders: Recent<CacheKey, Order>,
    comparisons: Recent<CompareKey, Arc<crate::compare::Comparison>>,
    /// Parameters read, by candidate commit.
    params: Mutex<HashMap<String, Arc<std::collections::BTreeMap<String, String>>>>,
}

/// What a sort order is computed from: a world at a tick, on a metric.
type CacheKey = (WorldId, Tick, Option<String>);
/// What a chart is computed from: a world at a tick, on a metric, in a window.
type ChartKey = (WorldId, Tick, Option<String>, chart::Window);

/// The last few values computed, by key (a few worlds and ticks at once).
struct Recent<K, V> {
    items: Mutex<Vec<(K, V)>>,
}

/// How many values a [`Recent`] keeps.
const CACHED: usize = 8;

impl<K: PartialEq, V: Clone> Recent<K, V> {
    fn new() -> Self {
        Recent {
            items: Mutex::new(Vec::new()),
        }
    }

    /// The value of `key`, computed by `make` unless kept.
    fn get_or(&self, key: K, make: impl FnOnce() -> V) -> V {
        if let Some((_, v)) = lock(&self.items).iter().find(|(k, _)| *k == key) {
            return v.clone();
        }
        let v = make();
        let mut items = lock(&self.items);
        items.push((key, v.clone()));
        if items.len() > CACHED {
            items.remove(0);
        }
        v
    }
}

impl AppState {
    /// The state of a dashboard over `view`.
    pub fn new(view: LedgerView, config: DashboardConfig) -> AppState {
        AppState {
            view,
            config,
            env: pages::environment().map_err(|e| format!("{e:#}")),
            heads: watch::Sender::new(Arc::new(HashMap::new())),
            polling: AtomicBool::new(false),
            charts: Recent::new(),
            orders: Recent::new(),
            comparisons: Recent::new(),
            params: Mutex::new(HashMap::new()),
        }
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<Html<String>, WebError> {
        let env = self
            .env
            .as_ref()
            .map_err(|e| WebError::Internal(format!("the dashboard's templates: {e}")))?;
        pages::render(env, name, ctx).map(Html)
    }

    /// Indexes every world in the background, so that the first visitor
    /// of a large world does not wait for its index (seconds at a million
    /// attempts). A failure is logged; the page that needs the world
    /// tries again and reports it.
    fn warm(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let Some(state) = weak.upgrade() else { return };
            let worlds = match state.view.worlds().await {
                Ok(w) => w,
                Err(e) => return tracing::warn!("indexing the ledger: {e}"),
            };
            drop(state);
            for info in worlds {
                let Some(state) = weak.upgrade() else { return };
                if let Err(e) = state.view.live(&info).await {
                    tracing::warn!("indexing world {:?}: {e}", info.name);
                }
            }
        });
    }

    /// Starts the live-update task unless it runs. It reads every world's
    /// head from the catalogue each poll interval while anyone listens, and
    /// ends when no one does.
    fn ensure_poller(self: &Arc<Self>) {
        if self.polling.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = self.config.poll_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(state) = weak.upgrade() else { break };
                if state.heads.receiver_count() == 0 {
                    state.polling.store(false, Ordering::SeqCst);
                    // A listener that came in between finds no task: take it back.
                    if state.heads.receiver_count() == 0
                        || state.polling.swap(true, Ordering::SeqCst)
                    {
                        break;
                    }
                }
                match state.view.worlds().await {
                    Ok(worlds) => {
                        let heads: HashMap<WorldId, u64> =
                            worlds.iter().map(|w| (w.id, w.head.0)).collect();
                        state.heads.send_if_modified(|old| {
                            let changed = **old != heads;
                            if changed {
                                *old = Arc::new(heads);
                            }
                            changed
                        });
                    }
                    Err(e) => tracing::warn!("dashboard live updates: {e}"),
                }
            }
        });
    }

    fn chart(
        &self,
        idx: &WorldIndex,
        metric: Option<(&str, bool)>,
        window: chart::Window,
    ) -> Arc<Chart> {
        let key = (
            idx.info.id,
            idx.tick,
            metric.map(|(m, _)| m.to_string()),
            window,
        );
        self.charts
            .get_or(key, || Arc::new(chart::chart(idx, metric, window)))
    }

    fn best_order(&self, idx: &WorldIndex, metric: Option<(&str, bool)>) -> Order {
        let key = (idx.info.id, idx.tick, metric.map(|(m, _)| m.to_string()));
        self.orders.get_or(key, || view::best_order(idx, metric))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The router of a dashboard; starts indexing every world in the background.
pub fn router(state: Arc<AppState>) -> Router {
    state.warm();
    Router::new()
        .route("/", get(worlds_page))
        .route("/worlds/{world}", get(experiment_page))
        .route("/worlds/{world}/live", get(experiment_live))
        .route("/worlds/{world}/events", get(events))
        .route("/worlds/{world}/runs/{run}", get(run_page))
        .route("/worlds/{world}/replay", get(replay_page))
        .route("/worlds/{world}/chart", get(chart_svg))
        .route("/api/worlds", get(worlds_json))
        .route("/api/worlds/{world}", get(experiment_json))
        .route("/api/worlds/{world}/attempts", get(attempts_json))
        .route("/api/worlds/{world}/chart", get(chart_json))
        .route("/api/worlds/{world}/runs/{run}", get(run_json))
        .route("/api/worlds/{world}/runs/{run}/vote", post(vote))
        .route("/api/worlds/{world}/runs/{run}/fork", post(fork))
        .route("/api/worlds/{world}/replay", get(replay_json))
        .route("/api/worlds/{world}/replays", post(start_replay))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .fallback(not_found)
        .with_state(state)
}

/// An error shown as a small HTML page (the pages' routes).
struct HtmlError(WebError);

impl From<WebError> for HtmlError {
    fn from(e: WebError) -> Self {
        HtmlError(e)
    }
}

impl IntoResponse for HtmlError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status.is_server_error() {
            tracing::warn!("{}", self.0);
        }
        let msg = pages::escape_html(&self.0.to_string());
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} · autoresearch</title>\
             <link rel=\"stylesheet\" href=\"/assets/style.css\"></head><body><main>\
             <h1>{code}</h1><p class=\"error\">{msg}</p><p><a href=\"/\">all experiments</a></p>\
             </main></body></html>",
            code = status.as_u16()
        );
        (status, Html(body)).into_response()
    }
}

async fn not_found() -> WebError {
    WebError::NotFound("no such page".into())
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::APP_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLE_CSS,
    )
}

// ---------------------------------------------------------------- worlds

async fn world_summaries(s: &AppState) -> Result<Vec<WorldSummary>, WebError> {
    let worlds = s.view.worlds().await?;
    let mut out = Vec::with_capacity(worlds.len());
    for info in &worlds {
        let live = s.view.live(info).await?;
        let idx = live.read().await;
        let metric = idx.metric(&s.config.metric);
        let metric_ref = metric.as_ref().map(|(m, min)| (m.as_str(), *min));
        let head = view::head_view(&idx, metric_ref.map(|(m, _)| m));
        out.push(WorldSummary {
            world: info.name.clone(),
            url: world_url(&info.name),
            experiment: idx.experiment_name(),
            tick: idx.tick.0,
            parent: view::parent_view(info, &worlds),
            head_commit: head.as_ref().map(|h| h.commit.clone()).unwrap_or_default(),
            head_metric: head.as_ref().and_then(|h| h.metric),
            head_metric_text: head.map(|h| h.metric_text).unwrap_or_default(),
            metric: metric.map(|(m, _)| m),
            counts: idx.counts.clone(),
            last_activity_ms: idx.at_ms,
            last_activity: fmt_age(idx.at_ms),
        });
    }
    Ok(out)
}

async fn worlds_json(State(s): State<Arc<AppState>>) -> Result<Response, WebError> {
    let worlds = world_summaries(&s).await?;
    Ok(
        axum::Json(serde_json::json!({ "title": s.config.title, "worlds": worlds }))
            .into_response(),
    )
}

async fn worlds_page(State(s): State<Arc<AppState>>) -> Result<Html<String>, HtmlError> {
    let worlds = world_summaries(&s).await?;
    Ok(s.render(
        "worlds.html",
        minijinja::context! { title => s.config.title, worlds => worlds },
    )?)
}

// ------------------------------------------------------------ experiment

/// The experiment page's query parameters, all optional; each is parsed
/// with a message saying what was wrong.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    tick: Option<String>,
    status: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    page: Option<String>,
    per: Option<String>,
    /// The chart's zoom: the first and last attempt shown.
    from: Option<String>,
    to: Option<String>,
    /// The attempts table's extra columns, comma-separated: metric names
    /// and `param:NAME`s.
    cols: Option<String>,
    /// `1`: read the parameters of the table's rows, to offer their names.
    params: Option<String>,
}

impl PageQuery {
    fn tick(&self) -> Result<Option<Tick>, WebError> {
        match self.tick.as_deref().filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => t
                .parse::<u64>()
                .map(|t| Some(Tick(t)))
                .map_err(|_| WebError::BadRequest(format!("tick {t:?} is not a whole number"))),
        }
    }

    fn table(&self) -> Result<TableQuery, WebError> {
        TableQuery::parse(
            self.status.as_deref(),
            self.q.as_deref(),
            self.sort.as_deref(),
            self.page.as_deref(),
            self.per.as_deref(),
        )
    }
}

/// A world's index as a handler reads it: the live one (read-locked) or a
/// past tick's.
enum Viewed {
    Live(OwnedRwLockReadGuard<WorldIndex>),
    Past(Arc<WorldIndex>),
}

impl std::ops::Deref for Viewed {
    type Target = WorldIndex;
    fn deref(&self) -> &WorldIndex {
        match self {
            Viewed::Live(g) => g,
            Viewed::Past(a) => a,
        }
    }
}

/// The index of world `name` at `tick` (its head when `None`), and the
/// world's catalogue entry.
async fn viewed(
    s: &AppState,
    name: &str,
    tick: Option<Tick>,
) -> Result<(WorldInfo, Viewed), WebError> {
    let info = s.view.world(name).await?;
    let v = match tick {
        Some(t) if t != info.head => Viewed::Past(s.view.at(&info, t).await?),
        _ => Viewed::Live(s.view.live(&info).await?.read_owned().await),
    };
    Ok((info, v))
}

/// A world forked from the one shown.
#[derive(Clone, Debug, Serialize)]
struct ForkView {
    world: String,
    url: String,
    tick: u64,
    head: u64,
    /// Its replay view against the world shown.
    compare_url: String,
}

/// Everything the experiment page shows.
#[derive(Clone, Debug, Serialize)]
struct ExperimentView {
    world: String,
    url: String,
    experiment: String,
    /// The tick shown.
    tick: u64,
    /// The world's head tick.
    head_tick: u64,
    /// Whether the page follows the head (no `tick` asked for).
    live: bool,
    /// When the tick shown was committed.
    at: String,
    last_activity: String,
    parent: Option<ParentView>,
    forks: Vec<ForkView>,
    head: Option<HeadView>,
    metric: Option<String>,
    minimize: bool,
    comparator: String,
    counts: crate::index::Counts,
    /// Every run's cost so far, summed; `None` while nothing was charged.
    cost: Option<view::CostView>,
    /// The experiment's noise model, once the loop recorded one.
    noise: Option<view::NoiseView>,
    /// Runs in flight, each with its scheduler jobs (Slurm ids and states).
    in_flight: Vec<RowView>,
    pending: Vec<RowView>,
    table: TableView,
    /// The extra metric columns shown in the table, and each row's values
    /// in them (by run id's row order), printed.
    columns: Vec<String>,
    column_values: Vec<Vec<String>>,
    /// Every metric name the world's Results have (the column chooser's choices).
    available_columns: Vec<String>,
    /// The parameter names the rows of this page set (read when asked
    /// for with `params=1` or a parameter column), as `param:NAME`.
    available_params: Vec<String>,
    /// Whether parameters can be read at all, and whether they were.
    params_offered: bool,
    params_loaded: bool,
    /// The chart's window, and whether it is zoomed in.
    window: chart::Window,
    zoomed: bool,
    /// The query parameters (columns, zoom) links keep, each ending in `&`.
    keep_query: String,
    statuses: Vec<&'static str>,
    /// Whether actions are offered.
    actions: bool,
    /// Whether "start a replay" is offered (actions, and a replayer).
    can_replay: bool,
}

/// How many pending runs the page lists.
const PENDING_SHOWN: usize = 100;
/// How many runs in flight the page lists (a loop runs a few at once; an
/// import of a fleet may have many).
const IN_FLIGHT_SHOWN: usize = 100;

async fn experiment_view(
    s: &AppState,
    name: &str,
    q: &PageQuery,
) -> Result<(ExperimentView, Arc<Chart>), WebError> {
    let tick = q.tick()?;
    let table_query = q.table()?;
    let (info, idx) = viewed(s, name, tick).await?;
    let metric = idx.metric(&s.config.metric);
    let metric_ref = metric.as_ref().map(|(m, min)| (m.as_str(), *min));
    let world = info.name.as_str();
    let window = q.window(idx.runs.len())?;
    let available_columns = metric_columns(&idx);
    let columns = q.columns(&available_columns)?;
    let table = view::table(&idx, table_query, metric_ref, || {
        s.best_order(&idx, metric_ref)
    })?;
    let column_values = column_values(&idx, &table, &columns);
    let chart = s.chart(&idx, metric_ref, window);
    let zoomed = !window.is_all(idx.runs.len());
    let mut keep_query = String::new();
    if !columns.is_empty() {
        keep_query.push_str(&format!("cols={}&", enc(&columns.join(","))));
    }
    if zoomed {
        keep_query.push_str(&format!("from={}&to={}&", window.from, window.to));
    }
    let rows = |set: &std::collections::BTreeSet<usize>, max: usize| -> Vec<RowView> {
        set.iter()
            .take(max)
            .map(|&p| RowView::of(world, p, &idx.runs[p], metric_ref.map(|(m, _)| m)))
            .collect()
    };
    let worlds = s.view.worlds().await?;
    let forks = worlds
        .iter()
        .filter_map(|w| {
            let p = w.parent?;
            (p.parent == info.id).then(|| ForkView {
                world: w.name.clone(),
                url: world_url(&w.name),
                tick: p.tick.0,
                head: w.head.0,
                compare_url: format!("{}/replay?with={}", world_url(&w.name), enc(&info.name)),
            })
        })
        .collect();
    let v = ExperimentView {
        world: info.name.clone(),
        url: world_url(&info.name),
        experiment: idx.experiment_name(),
        tick: idx.tick.0,
        head_tick: info.head.0.max(idx.tick.0),
        live: tick.is_none(),
        at: fmt_time(idx.at_ms),
        last_activity: fmt_age(idx.at_ms),
        parent: view::parent_view(&info, &worlds),
        forks,
        head: view::head_view(&idx, metric_ref.map(|(m, _)| m)),
        metric: metric.as_ref().map(|(m, _)| m.clone()),
        minimize: metric.as_ref().is_none_or(|(_, m)| *m),
        comparator: idx.comparator.clone(),
        counts: idx.counts.clone(),
        cost: (idx.cost.jobs > 0 || !idx.cost.metrics.is_empty())
            .then(|| view::CostView::of(&idx.cost)),
        noise: idx.noise().map(view::NoiseView::of),
        in_flight: rows(&idx.in_flight, IN_FLIGHT_SHOWN)
            .into_iter()
            .map(|mut r| {
                r.jobs = idx.jobs_of(&r.run_id).into_iter().cloned().collect();
                r
            })
            .collect(),
        pending: rows(&idx.pending, PENDING_SHOWN),
        table,
        columns,
        column_values,
        available_columns,
        available_params: Vec::new(),
        params_offered: s.config.params.is_some(),
        params_loaded: false,
        window,
        zoomed,
        keep_query,
        statuses: RowClass::ALL.iter().map(|c| c.as_str()).collect(),
        actions: matches!(s.config.access, Access::Token { .. }),
        can_replay: matches!(s.config.access, Access::Token { .. }) && s.config.replayer.is_some(),
    };
    let mut v = v;
    let asked = match q.params.as_deref().unwrap_or("") {
        "" | "0" => false,
        "1" => true,
        other => {
            return Err(WebError::BadRequest(format!(
                "params {other:?} is not 1 (read the parameters of the rows shown) or 0"
            )));
        }
    };
    let want_params = asked || v.columns.iter().any(|c| c.starts_with(columns::PARAM));
    if want_params {
        let Some(provider) = s.config.params.clone() else {
            return Err(WebError::BadRequest(
                "this dashboard reads no parameters (it was started without a repository reader)"
                    .into(),
            ));
        };
        let wanted = columns::params_wanted(&idx, &v.table);
        // The index is not held while parameters are read (git processes).
        drop(idx);
        let found = columns::load_params(s, &provider, &wanted).await;
        let mut names = std::collections::BTreeSet::new();
        for p in &found {
            names.extend(p.keys().map(|k| format!("{}{k}", columns::PARAM)));
        }
        for (row, p) in v.column_values.iter_mut().zip(&found) {
            for (cell, c) in row.iter_mut().zip(&v.columns) {
                if let Some(name) = c.strip_prefix(columns::PARAM) {
                    *cell = p.get(name).cloned().unwrap_or_default();
                }
            }
        }
        v.available_params = names.into_iter().collect();
        v.params_loaded = true;
    }
    Ok((v, chart))
}

fn page_context(s: &AppState, v: &ExperimentView, chart: &Chart) -> minijinja::Value {
    minijinja::context! {
        title => s.config.title,
        v => v,
        chart => minijinja::Value::from_safe_string(chart.svg.clone()),
        live_query => format!("{}{}", v.keep_query, v.table.query.href(v.table.query.page)),
        live_query_table => v.table.query.href(v.table.query.page),
    }
}

async fn experiment_page(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, HtmlError> {
    let (v, chart) = experiment_view(&s, &world, &q).await?;
    Ok(s.render("experiment.html", page_context(&s, &v, &chart))?)
}

/// The part of the experiment page that changes with new ticks, for the
/// page's script to swap in.
async fn experiment_live(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, WebError> {
    let (v, chart) = experiment_view(&s, &world, &q).await?;
    s.render("live.html", page_context(&s, &v, &chart))
}

async fn experiment_json(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, WebError> {
    let (v, _) = experiment_view(&s, &world, &q).await?;
    Ok(axum::Json(v).into_response())
}

async fn attempts_json(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, WebError> {
    let tick = q.tick()?;
    let table_query = q.table()?;
    let (_, idx) = viewed(&s, &world, tick).await?;
    let metric = idx.metric(&s.config.metric);
    let metric_ref = metric.as_ref().map(|(m, min)| (m.as_str(), *min));
    let columns = q.columns(&metric_columns(&idx))?;
    let table = view::table(&idx, table_query, metric_ref, || {
        s.best_order(&idx, metric_ref)
    })?;
    let values = column_values(&idx, &table, &columns);
    Ok(axum::Json(serde_json::json!({
        "tick": idx.tick.0, "metric": metric.map(|m| m.0), "table": table,
        "columns": columns, "column_values": values,
    }))
    .into_response())
}

async fn chart_json(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, WebError> {
    let tick = q.tick()?;
    let (_, idx) = viewed(&s, &world, tick).await?;
    let window = q.window(idx.runs.len())?;
    let metric = idx.metric(&s.config.metric);
    let chart = s.chart(
        &idx,
        metric.as_ref().map(|(m, min)| (m.as_str(), *min)),
        window,
    );
    Ok(axum::Json(serde_json::json!({ "tick": idx.tick.0, "chart": &*chart })).into_response())
}

/// Server-sent events for world `world`: a `tick` event with the head tick
/// now and whenever it moves.
async fn events(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, WebError> {
    let info = s.view.world(&world).await?;
    let rx = s.heads.subscribe();
    s.ensure_poller();
    let id = info.id;
    let stream = futures_util::stream::unfold(
        (rx, info.head.0, true),
        move |(mut rx, last, first)| async move {
            if first {
                let e = Event::default().event("tick").data(last.to_string());
                return Some((Ok(e), (rx, last, false)));
            }
            loop {
                rx.changed().await.ok()?;
                let now = rx.borrow_and_update().get(&id).copied();
                if let Some(t) = now.filter(|t| *t != last) {
                    let e = Event::default().event("tick").data(t.to_string());
                    return Some((Ok(e), (rx, t, false)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
