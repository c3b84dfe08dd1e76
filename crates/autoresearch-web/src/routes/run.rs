//! The run page and its JSON: a run's samples, decision, votes, ticks,
//! log tails and diff.

use super::*;

/// One Result of a run as the run page shows it.
#[derive(Clone, Debug, Serialize)]
struct SampleView {
    n: usize,
    evaluator: String,
    evaluated_at: String,
    /// Whether it measured the run's final commit (and so counts).
    counts: bool,
    /// Every output but `_meta`, printed.
    outputs: Vec<(String, String)>,
    meta: Option<ResultMeta>,
}

/// A tick in the run's life.
#[derive(Clone, Debug, Serialize)]
struct TickView {
    tick: u64,
    at: String,
    what: String,
    /// The experiment page at that tick.
    url: String,
}

/// The tail of a log file.
#[derive(Clone, Debug, Serialize)]
struct LogTail {
    name: String,
    path: String,
    tail: String,
}

/// Everything the run page shows.
#[derive(Clone, Debug, Serialize)]
struct RunView {
    world: String,
    world_url: String,
    experiment: String,
    tick: u64,
    head_tick: u64,
    live: bool,
    n: usize,
    run: Run,
    class: RowClass,
    phase: &'static str,
    /// What was tried: its Description's subject, else the run's task.
    idea: String,
    /// The Description's full text (subject and body); empty without one.
    description: String,
    /// What the run cost, once charged.
    cost: Option<view::CostView>,
    /// Its held-out confirmation, and the same in a few words.
    confirmation: Option<autoresearch_core::Confirmation>,
    confirm_text: String,
    /// Its scheduler jobs (Slurm ids, states, logs), in submission order.
    jobs: Vec<autoresearch_core::ExecutorJob>,
    metric: Option<String>,
    metric_value: Option<f64>,
    metric_text: String,
    outcome: Option<Outcome>,
    descriptor: String,
    samples: Vec<SampleView>,
    votes: Vec<Vote>,
    ticks: Vec<TickView>,
    logs: Vec<LogTail>,
    /// The candidate's diff against its base, line by line with a class
    /// (`add`, `del`, `hunk`, `meta` or empty) for colouring.
    diff: Vec<(&'static str, String)>,
    can_vote: bool,
    can_fork: bool,
    vote_url: String,
    fork_url: String,
}

/// How much of a log the run page shows.
const TAIL_BYTES: u64 = 4096;

async fn run_view(
    s: &AppState,
    world: &str,
    run: &str,
    q: &PageQuery,
) -> Result<RunView, WebError> {
    let tick = q.tick()?;
    let (info, idx) = viewed(s, world, tick).await?;
    let (pos, row) = idx.run(run).ok_or_else(|| {
        WebError::NotFound(format!(
            "no run {run:?} in world {:?} at tick {}",
            info.name, idx.tick.0
        ))
    })?;
    let metric = idx.metric(&s.config.metric);
    let value = metric.as_ref().and_then(|(m, _)| row.metric(m));
    let (results, run_ticks) = s.view.run_detail(&info, &idx, row).await?;
    let commit = row.run.commit_hash.as_str();
    let samples: Vec<SampleView> = results
        .iter()
        .enumerate()
        .map(|(i, r)| SampleView {
            n: i + 1,
            evaluator: r.evaluator.clone(),
            evaluated_at: fmt_time(r.evaluated_at_ms),
            counts: commit.is_empty() || r.counts_for(commit),
            outputs: r
                .outputs()
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k != EvalResult::META)
                .map(|(k, v)| {
                    let text = match v.as_f64() {
                        Some(x) => autoresearch_core::num::fmt_f64(x),
                        None => v.to_string(),
                    };
                    (k, text)
                })
                .collect(),
            meta: r.meta(),
        })
        .collect();
    let ticks = run_ticks
        .into_iter()
        .map(|(t, at, what)| TickView {
            tick: t.0,
            at: fmt_time(at),
            what,
            url: format!("{}?tick={}", world_url(&info.name), t.0),
        })
        .collect();
    let mut log_paths = Vec::new();
    if let Some(meta) = samples.iter().rev().find_map(|s| s.meta.as_ref()) {
        for (name, path) in [("stdout", &meta.stdout_log), ("stderr", &meta.stderr_log)] {
            if !path.is_empty() {
                log_paths.push((name.to_string(), path.clone()));
            }
        }
    }
    let logs = tokio::task::spawn_blocking(move || {
        log_paths
            .into_iter()
            .filter_map(|(name, path)| {
                tail(std::path::Path::new(&path)).map(|tail| LogTail { name, path, tail })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| WebError::Internal(format!("reading log tails: {e}")))?;
    let diff = match (&s.config.diffs, &row.outcome) {
        (Some(d), Some(o)) if !o.base_commit.is_empty() && !row.run.commit_hash.is_empty() => {
            let repo = idx
                .experiments
                .iter()
                .find(|e| e.name == row.run.experiment_name)
                .map(|e| e.repo_url.clone())
                .unwrap_or_default();
            match repo.is_empty() {
                true => None,
                false => d.diff(&repo, &o.base_commit, &row.run.commit_hash).await,
            }
        }
        _ => None,
    };
    let diff = diff
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let class = if l.starts_with("+++") || l.starts_with("---") || l.starts_with("diff ") {
                "meta"
            } else if l.starts_with('+') {
                "add"
            } else if l.starts_with('-') {
                "del"
            } else if l.starts_with("@@") {
                "hunk"
            } else {
                ""
            };
            (class, l.to_string())
        })
        .collect();
    let actions = matches!(s.config.access, Access::Token { .. });
    let class = row.class();
    let world_enc = enc(&info.name);
    let run_enc = enc(&row.run.run_id);
    Ok(RunView {
        world: info.name.clone(),
        world_url: world_url(&info.name),
        experiment: row.run.experiment_name.clone(),
        tick: idx.tick.0,
        head_tick: info.head.0.max(idx.tick.0),
        live: tick.is_none(),
        n: pos + 1,
        run: row.run.clone(),
        class,
        phase: row.phase().as_str(),
        idea: row.idea().to_string(),
        description: row
            .description()
            .map(|d| d.text.clone())
            .unwrap_or_default(),
        cost: row.cost().map(view::CostView::of),
        confirmation: row.confirmation().cloned(),
        confirm_text: row
            .confirmation()
            .map(|c| {
                let mut t = c.cell();
                if !c.reason.is_empty() {
                    t.push_str(": ");
                    t.push_str(&c.reason);
                }
                t
            })
            .unwrap_or_default(),
        jobs: idx.jobs_of(&row.run.run_id).into_iter().cloned().collect(),
        metric: metric.map(|m| m.0),
        metric_value: value,
        metric_text: fmt_metric(value),
        outcome: row.outcome.clone(),
        descriptor: row
            .outcome
            .as_ref()
            .and_then(|o| o.descriptor().ok())
            .filter(|d| d.as_object().is_some_and(|m| !m.is_empty()))
            .and_then(|d| serde_json::to_string_pretty(&d).ok())
            .unwrap_or_default(),
        samples,
        votes: idx.votes_on(&row.run.run_id).into_iter().cloned().collect(),
        ticks,
        logs,
        diff,
        can_vote: actions && class == RowClass::Pending,
        can_fork: actions && !row.run.commit_hash.is_empty(),
        vote_url: format!("/api/worlds/{world_enc}/runs/{run_enc}/vote"),
        fork_url: format!("/api/worlds/{world_enc}/runs/{run_enc}/fork"),
    })
}

/// The last [`TAIL_BYTES`] of the file at `path`, lossily decoded; `None`
/// when it cannot be read.
fn tail(path: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut buf = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

pub(super) async fn run_page(
    State(s): State<Arc<AppState>>,
    Path((world, run)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, HtmlError> {
    let v = run_view(&s, &world, &run, &q).await?;
    Ok(s.render(
        "run.html",
        minijinja::context! { title => s.config.title, v => v },
    )?)
}

pub(super) async fn run_json(
    State(s): State<Arc<AppState>>,
    Path((world, run)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Result<Response, WebError> {
    Ok(axum::Json(run_view(&s, &world, &run, &q).await?).into_response())
}
