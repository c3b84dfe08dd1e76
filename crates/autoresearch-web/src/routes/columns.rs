//! The experiment page's chart window (zoom) and the attempts table's
//! extra columns: metrics by name, and parameters (`param:NAME`) read from
//! the candidates' diffs through the [`crate::Params`] the server was given.

use super::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// The prefix of a parameter column in `?cols=`.
pub(super) const PARAM: &str = "param:";
/// The longest time a page waits for the parameters of its rows.
const PARAMS_WAIT: Duration = Duration::from_secs(3);
/// Parameters read at once (each may be a git process).
const PARAMS_AT_ONCE: usize = 4;
/// Commits whose parameters are kept (then the cache starts again).
const PARAMS_KEPT: usize = 20_000;

impl PageQuery {
    /// The chart's window over `attempts` attempts: 400 for a bound that
    /// is not a whole number, or `from` after `to`.
    pub(super) fn window(&self, attempts: usize) -> Result<chart::Window, WebError> {
        let bound = |name: &str, v: &Option<String>| match v.as_deref().filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(t) => t.parse::<usize>().map(Some).map_err(|_| {
                WebError::BadRequest(format!(
                    "{name} {t:?} is not an attempt number (a whole number from 1)"
                ))
            }),
        };
        let (from, to) = (bound("from", &self.from)?, bound("to", &self.to)?);
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(WebError::BadRequest(format!(
                "the chart's window from {f} to {t} is empty: from must not be after to"
            )));
        }
        Ok(chart::Window::clamp(from, to, attempts))
    }

    /// The extra metric columns asked for, each one of `known`: 400 for
    /// another name (saying which exist).
    pub(super) fn columns(&self, known: &[String]) -> Result<Vec<String>, WebError> {
        let mut out: Vec<String> = Vec::new();
        for c in self
            .cols
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            if let Some(name) = c.strip_prefix(PARAM) {
                if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control)
                {
                    return Err(WebError::BadRequest(format!(
                        "column {c:?} names no parameter: param:NAME, NAME at most 100 bytes"
                    )));
                }
            } else if !known.iter().any(|k| k == c) {
                return Err(WebError::BadRequest(format!(
                    "column {c:?} is not a metric of this world (it has: {}; a parameter is param:NAME)",
                    known.join(", ")
                )));
            }
            if !out.iter().any(|o| o == c) {
                out.push(c.to_string());
            }
        }
        if out.len() > 20 {
            return Err(WebError::BadRequest(
                "at most 20 extra columns can be shown".into(),
            ));
        }
        Ok(out)
    }
}

/// The chart alone as SVG (HTML fragment), for the page's zoom to swap in.
pub(super) async fn chart_svg(
    State(s): State<Arc<AppState>>,
    Path(world): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, WebError> {
    let tick = q.tick()?;
    let (_, idx) = viewed(&s, &world, tick).await?;
    let window = q.window(idx.runs.len())?;
    let metric = idx.metric(&s.config.metric);
    let chart = s.chart(
        &idx,
        metric.as_ref().map(|(m, min)| (m.as_str(), *min)),
        window,
    );
    Ok(Html(chart.svg.clone()))
}

/// Every numeric output name a stored Result of the world still has.
pub(super) fn metric_columns(idx: &WorldIndex) -> Vec<String> {
    idx.metric_names_in_use().map(str::to_string).collect()
}

/// Each table row's values in `columns`, printed.
pub(super) fn column_values(
    idx: &WorldIndex,
    table: &TableView,
    columns: &[String],
) -> Vec<Vec<String>> {
    if columns.is_empty() {
        return Vec::new();
    }
    table
        .rows
        .iter()
        .map(|r| {
            let row = idx.run(&r.run_id).map(|(_, row)| row);
            columns
                .iter()
                .map(|c| match c.starts_with(PARAM) {
                    true => String::new(),
                    false => fmt_metric(row.and_then(|row| row.metric(c))),
                })
                .collect()
        })
        .collect()
}

/// What reading a row's parameters needs: the experiment's repository,
/// the candidate's base and commit.
pub(super) struct ParamsWanted {
    repo: String,
    base: String,
    commit: String,
}

/// The parameter reads the table's rows need (rows without a commit, a
/// base or a repository have none).
pub(super) fn params_wanted(idx: &WorldIndex, table: &TableView) -> Vec<Option<ParamsWanted>> {
    table
        .rows
        .iter()
        .map(|r| {
            let (_, row) = idx.run(&r.run_id)?;
            let o = row.outcome.as_ref()?;
            let repo = idx
                .experiments
                .iter()
                .find(|e| e.name == row.run.experiment_name)
                .map(|e| e.repo_url.clone())?;
            (!repo.is_empty() && !o.base_commit.is_empty() && !row.run.commit_hash.is_empty()).then(
                || ParamsWanted {
                    repo,
                    base: o.base_commit.clone(),
                    commit: row.run.commit_hash.clone(),
                },
            )
        })
        .collect()
}

/// Each wanted row's parameters (empty where none could be read within
/// [`PARAMS_WAIT`]), from the state's cache or `params`.
pub(super) async fn load_params(
    s: &AppState,
    params: &Arc<dyn crate::Params>,
    wanted: &[Option<ParamsWanted>],
) -> Vec<Arc<BTreeMap<String, String>>> {
    use futures_util::StreamExt;
    let missing: Vec<(String, String, String)> = {
        let cache = lock(&s.params);
        wanted
            .iter()
            .flatten()
            .filter(|w| !cache.contains_key(&w.commit))
            .map(|w| (w.repo.clone(), w.base.clone(), w.commit.clone()))
            .collect()
    };
    let provider = params.clone();
    let mut reads = futures_util::stream::iter(missing)
        .map(move |(repo, base, commit)| {
            let provider = provider.clone();
            async move {
                let p = provider.params(&repo, &base, &commit).await;
                (commit, p.unwrap_or_default())
            }
        })
        .buffer_unordered(PARAMS_AT_ONCE);
    let fetch = async {
        while let Some((commit, p)) = reads.next().await {
            let mut cache = lock(&s.params);
            if cache.len() >= PARAMS_KEPT {
                cache.clear();
            }
            cache.insert(commit, Arc::new(p));
        }
    };
    let _ = tokio::time::timeout(PARAMS_WAIT, fetch).await;
    let cache = lock(&s.params);
    wanted
        .iter()
        .map(|w| {
            w.as_ref()
                .and_then(|w| cache.get(&w.commit).cloned())
                .unwrap_or_default()
        })
        .collect()
}
