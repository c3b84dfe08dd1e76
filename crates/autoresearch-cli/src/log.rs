//! `autoresearch log`: an experiment's attempts as a table, one row an
//! attempt, its parameters and metrics as columns (as DVC's `exp show`),
//! sortable and filterable; `--format tsv` is karpathy's results.tsv and
//! `--format json` the rows for tools.
//!
//! Parameters, by design (documented in the README):
//! - with `--params FILE`, every `key = value` (or `key: value`) line of
//!   that file as the candidate commit holds it (`params.toml`, a YAML or
//!   `.env` file, a Python module of constants);
//! - otherwise the assignments a candidate *changed*: each `+` line of its
//!   diff against its base of the form `NAME = LITERAL` or `NAME: LITERAL`,
//!   where LITERAL is a number, `true`/`false` or a short quoted string
//!   (`MATRIX_LR = 0.04` in karpathy's `train.py`). A parameter the
//!   candidate did not change shows `-`.
//!
//! Both need the experiment's repository; an imported experiment has none
//! and shows metrics only.

use crate::ledger;
use crate::read::{LogFormat, print_table};
use crate::show::{ideas, primary_metric};
use crate::target::TargetArgs;
use anyhow::{Context, bail};
use autoresearch_controller::git::Git;
use autoresearch_core::current;
use autoresearch_core::lifecycle::{Attempt, attempts};
use autoresearch_core::num::fmt_f64_shown;
use autoresearch_core::query::{CurrentReader, QueryError};
use autoresearch_runner::tsv::{self, LogRow};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch log\n  autoresearch log --status keep --sort val_bpb --limit 5\n  \
    autoresearch log --sort score:desc --columns score,LR\n  autoresearch log --params params.toml\n  \
    autoresearch log --world what-if\n  autoresearch log --experiment nanogpt --format tsv > results.tsv\n\n\
    Parameters are the `NAME = value` lines a candidate changed (from its diff), or with\n\
    --params FILE every `key = value` line of FILE at the candidate's commit.\n\
    --limit keeps the first rows after --sort, else the most recent ones."
)]
pub struct LogArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// table for people, tsv for karpathy's results.tsv shape, json for tools.
    #[arg(long, value_enum, default_value = "table")]
    pub format: LogFormat,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Only attempts with this decision: keep, discard, crash, pending, baseline, or undecided.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Sort by a metric or parameter column, ascending; COLUMN:desc for descending.
    #[arg(long, value_name = "COLUMN[:desc]")]
    pub sort: Option<String>,
    /// Show at most N rows.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// The metric and parameter columns to show, in this order (comma-separated).
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Read parameters from this file at each candidate commit instead of from the diffs.
    #[arg(long, value_name = "FILE")]
    pub params: Option<String>,
}

/// The decisions `--status` accepts.
const STATUSES: [&str; 6] = [
    "keep",
    "discard",
    "crash",
    "pending",
    "baseline",
    "undecided",
];

/// A `NAME = LITERAL` or `NAME: LITERAL` assignment in one line of text:
/// the name and the literal, or `None` for any other line.
pub fn assignment(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    let line = ["export ", "const ", "let ", "var "]
        .iter()
        .find_map(|p| line.strip_prefix(p))
        .unwrap_or(line);
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    if name.is_empty()
        || name.len() > 40
        || !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
    {
        return None;
    }
    // An optional type annotation (`lr: float = 0.1`) is left out.
    let rest = rest.trim_start();
    let rest = match rest.strip_prefix(':') {
        Some(r) => match r.split_once('=') {
            Some((ty, v))
                if ty
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                v
            }
            _ => r,
        },
        None => rest.strip_prefix('=').filter(|r| !r.starts_with('='))?,
    };
    // A trailing comment is not part of the value.
    let value = rest.trim();
    let value = match value.find(" #").or_else(|| value.find(" //")) {
        Some(i) if !value.starts_with(['"', '\'']) => value[..i].trim(),
        _ => value,
    };
    let value = value.trim_end_matches([',', ';']).trim();
    let literal = autoresearch_core::num::parse_f64(value).is_some()
        || matches!(value, "true" | "false" | "True" | "False")
        || (value.len() >= 2
            && value.len() <= 42
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\''))));
    literal.then(|| {
        (
            name.to_string(),
            value.trim_matches(['"', '\'']).to_string(),
        )
    })
}

/// The assignments a unified diff adds (its `+` lines), last one winning.
pub fn changed_params(diff: &str) -> BTreeMap<String, String> {
    diff.lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .filter_map(|l| assignment(&l[1..]))
        .collect()
}

/// Every assignment of a file's text.
pub fn file_params(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(assignment).collect()
}

/// Each attempt's parameters, by run id (see the module docs). Runs no
/// process when there is no repository. Cost: one git process per
/// attempt with a commit.
fn params_of(
    git: &Git,
    all: &[Attempt],
    file: Option<&str>,
) -> HashMap<String, BTreeMap<String, String>> {
    let mut out = HashMap::new();
    for a in all {
        let commit = &a.run.commit_hash;
        if commit.is_empty() {
            continue;
        }
        let params = match file {
            Some(f) => git
                .run(&["show", &format!("{commit}:{f}")])
                .map(|t| file_params(&t))
                .unwrap_or_default(),
            None => {
                let base = a
                    .outcome
                    .as_ref()
                    .map(|o| o.base_commit.as_str())
                    .unwrap_or("");
                if base.is_empty() || base == commit {
                    continue;
                }
                git.run(&["diff", "-U0", "--no-color", "--no-ext-diff", base, commit])
                    .map(|d| changed_params(&d))
                    .unwrap_or_default()
            }
        };
        out.insert(a.run.run_id.clone(), params);
    }
    out
}

/// A row's decision word, `undecided` when it has none.
fn decision(r: &LogRow) -> &str {
    if r.outcome.is_empty() {
        "undecided"
    } else {
        &r.outcome
    }
}

/// `--sort` parsed: the column and whether descending.
fn sort_key(spec: &str) -> (String, bool) {
    match spec.rsplit_once(':') {
        Some((c, "desc")) => (c.to_string(), true),
        Some((c, "asc")) => (c.to_string(), false),
        _ => (spec.to_string(), false),
    }
}

/// A cell as a number when it reads as one.
fn as_number(v: Option<&str>) -> Option<f64> {
    v.and_then(autoresearch_core::num::parse_f64)
}

/// Rows compared by a column: numbers by value, text by text; rows without
/// the column last whatever the direction.
fn compare_cells(a: Option<&str>, b: Option<&str>, desc: bool) -> Ordering {
    let ord = match (as_number(a), as_number(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => match (a, b) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => return Ordering::Less,
            (None, Some(_)) => return Ordering::Greater,
            (None, None) => Ordering::Equal,
        },
    };
    if desc { ord.reverse() } else { ord }
}

/// What `log` reads before it filters: the attempt log, its attempts,
/// how many attempts the experiment has, its repository and the
/// confirmations of its runs (by run id).
struct Read {
    log: tsv::AttemptLog,
    all: Vec<Attempt>,
    total: usize,
    repo: Option<std::path::PathBuf>,
    confirmations: HashMap<String, autoresearch_core::Confirmation>,
}

/// The `n` newest attempts of `experiment` from the ledger's current
/// state, in recorded order: O(n) whatever the history. The metric
/// columns are those of these attempts (a column only older attempts have
/// is not shown); the confirmations are those of these runs, or a sign
/// that the experiment has some (its CONFIRM column).
async fn read_newest(
    target: &crate::target::Target,
    r: &CurrentReader,
    experiment: &str,
    n: usize,
) -> anyhow::Result<Read> {
    let mut runs = r.newest_runs(experiment, n).await?;
    runs.reverse();
    let all = r.attempts(runs).await?;
    let total = r.tally().await?.experiment(experiment).attempts as usize;
    let record = r.experiment(experiment).await?.map(|(_, e)| e);
    let mut confirmations = HashMap::new();
    for a in &all {
        for (_, c) in r
            .joined::<autoresearch_core::Confirmation>(current::CONFIRMATION_OF, &a.run.run_id)
            .await?
        {
            confirmations.insert(c.run_id.clone(), c);
        }
    }
    if confirmations.is_empty() {
        // Any confirmation in the world gives the table its column.
        let any = r
            .read(vec![r.values_read::<autoresearch_core::Confirmation>(
                false,
                None,
                Some(1),
            )?])
            .await?;
        if let Some(current::CurrentAnswer::Values(v)) = any.first()
            && let Some((_, bytes)) = v.first()
        {
            let c: autoresearch_core::Confirmation = ledger::registry()
                .decode(r.world(), bytes)
                .map_err(QueryError::from)?;
            confirmations.insert(c.run_id.clone(), c);
        }
    }
    Ok(Read {
        log: tsv::attempt_log_of(experiment, record.as_ref(), all.clone()),
        all,
        total,
        repo: target.repo_of(record.as_ref()),
        confirmations,
    })
}

pub async fn log(ledger_path: &Path, args: LogArgs) -> anyhow::Result<ExitCode> {
    if let Some(s) = &args.status
        && !STATUSES.contains(&s.as_str())
    {
        bail!("--status {s:?}: expected one of {}", STATUSES.join(", "));
    }
    let target = args.target.resolve(ledger_path).await?;
    let experiment = target.experiment()?.to_string();
    // `--limit N` in recorded order reads only the N newest attempts from
    // the ledger's current state, when it keeps one.
    let newest = args
        .limit
        .filter(|_| args.sort.is_none() && args.status.is_none());
    let mut fast = None;
    if let Some(n) = newest
        && let Some(r) = crate::current_read::reader(&target).await
    {
        match read_newest(&target, &r, &experiment, n).await {
            Err(e) if crate::current_read::from_ledger(&e) => {
                crate::current_read::fell_back(&target, &e);
            }
            other => fast = Some(other?),
        }
    }
    let Read {
        mut log,
        all,
        total,
        repo,
        confirmations,
    } = match fast {
        Some(read) => read,
        None => {
            let world = target
                .open(None)
                .await
                .with_context(|| format!("experiment {experiment:?}"))?;
            let log = tsv::attempt_log(&world, &experiment);
            Read {
                total: log.rows.len(),
                log,
                all: attempts(&world, &experiment),
                repo: target.repo(&world),
                confirmations: crate::decision_view::confirmations(&world),
            }
        }
    };
    // A world the loop wrote records its comparator in each Outcome: its
    // first objective is the metric karpathy's results.tsv puts first.
    if let Some((metric, lower)) = primary_metric(&all) {
        log.prefer_metric(&metric, Some(if lower { "minimize" } else { "maximize" }));
    }
    let format = if args.json {
        LogFormat::Json
    } else {
        args.format
    };
    let git = repo.map(Git::new);
    let (params, the_ideas) = match (&git, format) {
        (Some(g), LogFormat::Table) => {
            let g = g.clone();
            let (all2, file) = (all.clone(), args.params.clone());
            tokio::task::spawn_blocking(move || {
                (
                    params_of(&g, &all2, file.as_deref()),
                    ideas(Some(&g), &all2),
                )
            })
            .await?
        }
        (None, _) if args.params.is_some() => bail!(
            "--params needs the experiment's repository; none is known for world {:?}",
            target.world
        ),
        _ => (HashMap::new(), HashMap::new()),
    };
    let param_columns: Vec<String> = {
        let mut names: Vec<String> = params.values().flat_map(|p| p.keys().cloned()).collect();
        names.sort();
        names.dedup();
        names.retain(|n| !log.columns.contains(n));
        names
    };
    let cell = |r: &LogRow, c: &str| -> Option<String> {
        if let Some(v) = params.get(&r.run_id).and_then(|p| p.get(c)) {
            return Some(v.clone());
        }
        // An imported file's decimals are kept; the loop's numbers are shown
        // without the float noise of a mean (`fmt_f64_shown`: a measured
        // value prints as the evaluator printed it).
        match r.values.get(c)? {
            Value::Number(n) if !log.decimals.contains_key(c) => {
                Some(n.as_f64().map_or_else(|| n.to_string(), fmt_f64_shown))
            }
            v => Some(log.format_value(c, Some(v))),
        }
    };
    // Filter, sort, limit: the same rows in every format.
    // By reference: only the rows printed are cloned (a million rows of a
    // long experiment cost more to copy than to print fifty).
    let mut rows: Vec<&LogRow> = log
        .rows
        .iter()
        .filter(|r| args.status.as_deref().is_none_or(|s| decision(r) == s))
        .collect();
    if let Some(spec) = &args.sort {
        let (column, desc) = sort_key(spec);
        if !log.columns.contains(&column) && !param_columns.contains(&column) {
            bail!(
                "--sort {column:?}: no such column (metrics: {}; parameters: {})",
                log.columns.join(", "),
                if param_columns.is_empty() {
                    "none".into()
                } else {
                    param_columns.join(", ")
                }
            );
        }
        rows.sort_by(|a, b| {
            compare_cells(
                cell(a, &column).as_deref(),
                cell(b, &column).as_deref(),
                desc,
            )
        });
    }
    if let Some(n) = args.limit {
        if args.sort.is_some() {
            rows.truncate(n);
        } else {
            let skip = rows.len().saturating_sub(n);
            rows.drain(..skip);
        }
    }
    let columns: Vec<String> = match &args.columns {
        Some(wanted) => {
            for c in wanted {
                if !log.columns.contains(c) && !param_columns.contains(c) {
                    bail!(
                        "--columns {c:?}: no such column (metrics: {}; parameters: {})",
                        log.columns.join(", "),
                        if param_columns.is_empty() {
                            "none".into()
                        } else {
                            param_columns.join(", ")
                        }
                    );
                }
            }
            wanted.clone()
        }
        None => param_columns
            .iter()
            .chain(log.columns.iter())
            .cloned()
            .collect(),
    };
    let filtered = rows.len() != total || args.sort.is_some();
    match format {
        LogFormat::Json => {
            let picked = rows.into_iter().cloned().collect();
            let mut shown = log;
            shown.rows = picked;
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        LogFormat::Tsv => {
            let picked = rows.into_iter().cloned().collect();
            let mut shown = log;
            shown.rows = picked;
            if filtered {
                // A filtered file keeps no imported layout lines.
                shown.file = shown.file.map(|mut f| {
                    f.kept.clear();
                    f.preamble = 0;
                    f
                });
            }
            let (text, skipped) = shown.to_tsv();
            print!("{text}");
            if skipped > 0 {
                eprintln!(
                    "note: {skipped} undecided attempts (pending, or no outcome yet) are not in the TSV"
                );
            }
        }
        LogFormat::Table => {
            let printed: std::collections::HashSet<&str> =
                rows.iter().map(|r| r.run_id.as_str()).collect();
            let by_id: HashMap<&str, &Attempt> = all
                .iter()
                .filter(|a| printed.contains(a.run.run_id.as_str()))
                .map(|a| (a.run.run_id.as_str(), a))
                .collect();
            // Only experiments with a held-out confirmation get its column.
            let confirm = !confirmations.is_empty();
            let mut header = vec!["RUN_ID".to_string(), "COMMIT".to_string()];
            header.extend(columns.iter().map(|c| c.to_string()));
            if confirm {
                header.push("CONFIRM".to_string());
            }
            header.extend([
                "STATUS".to_string(),
                "IDEA".to_string(),
                "REASON".to_string(),
            ]);
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut row = vec![r.run_id.clone(), tsv::short_commit(&r.commit).to_string()];
                    for c in &columns {
                        row.push(cell(r, c).unwrap_or_else(|| "-".into()));
                    }
                    if confirm {
                        row.push(crate::decision_view::confirm_cell(
                            &confirmations,
                            &r.run_id,
                        ));
                    }
                    row.push(if r.outcome.is_empty() {
                        format!("({})", r.run_status)
                    } else {
                        r.outcome.clone()
                    });
                    let a = by_id.get(r.run_id.as_str());
                    // An imported row's description is its idea; the loop's is the reason.
                    let imported = a.is_some_and(|a| {
                        a.outcome.is_none()
                            || a.results.iter().any(|x| x.evaluator == "results.tsv")
                    });
                    let (the_idea, reason) = if imported {
                        // Its reason only when the file had a `reason`
                        // column (else the import stored the description).
                        let reason = a
                            .and_then(|a| a.outcome.as_ref())
                            .map(|o| o.reason.clone())
                            .filter(|why| *why != r.description)
                            .unwrap_or_default();
                        (r.description.clone(), reason)
                    } else {
                        (
                            // The commit's subject from git; without the
                            // repository (moved, another user's), the
                            // description stored with the run.
                            the_ideas
                                .get(&r.run_id)
                                .cloned()
                                .unwrap_or_else(|| r.description.clone()),
                            a.and_then(|a| a.outcome.as_ref())
                                .map(|o| o.reason.clone())
                                .unwrap_or_default(),
                        )
                    };
                    let clean = |s: String| {
                        if s.is_empty() {
                            "-".to_string()
                        } else {
                            s.replace(['\t', '\n'], " ")
                        }
                    };
                    row.push(clean(the_idea));
                    row.push(clean(reason));
                    row
                })
                .collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            if let Some(f) = &target.fork_of {
                eprintln!(
                    "world {} is a fork of {} at tick {}",
                    target.world, f.parent, f.tick
                );
            }
            print_table(&header, &table);
            if filtered || args.limit.is_some() {
                eprintln!("{} of {total} attempts shown", rows.len());
            }
            if all.iter().any(|a| a.final_results().count() > 1) {
                eprintln!(
                    "metrics are each attempt's mean over its samples (`autoresearch show RUN` lists every sample)"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_are_names_and_literals() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("MATRIX_LR = 0.04", Some(("MATRIX_LR", "0.04"))),
            ("DEPTH = 8  # layers", Some(("DEPTH", "8"))),
            ("lr: 3e-4", Some(("lr", "3e-4"))),
            ("lr: float = 0.1", Some(("lr", "0.1"))),
            ("export BATCH=64", Some(("BATCH", "64"))),
            ("act = \"gelu\"", Some(("act", "gelu"))),
            ("use_flash = True", Some(("use_flash", "True"))),
            ("const WIDTH = 512;", Some(("WIDTH", "512"))),
            ("x = compute(3)", None),
            ("if a == 3:", None),
            ("a == 3", None),
            ("# lr = 0.1", None),
            ("", None),
            (
                "name = \"a very long string that is certainly not a parameter at all\"",
                None,
            ),
        ];
        for (line, want) in cases {
            let got = assignment(line);
            let want = want.map(|(k, v)| (k.to_string(), v.to_string()));
            assert_eq!(got, want, "{line:?}");
        }
    }

    #[test]
    fn a_diff_gives_the_changed_assignments() {
        let diff = "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -3 +3 @@\n-MATRIX_LR = 0.02\n+MATRIX_LR = 0.04\n@@ -9,0 +10 @@\n+    x = model(y)\n+WARMUP = 100\n";
        let p = changed_params(diff);
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            vec![
                ("MATRIX_LR".to_string(), "0.04".to_string()),
                ("WARMUP".to_string(), "100".to_string())
            ]
        );
    }

    #[test]
    fn sorting_puts_numbers_in_order_and_missing_last() {
        let mut v = vec![Some("10"), None, Some("9.5"), Some("100")];
        v.sort_by(|a, b| compare_cells(*a, *b, false));
        assert_eq!(v, vec![Some("9.5"), Some("10"), Some("100"), None]);
        v.sort_by(|a, b| compare_cells(*a, *b, true));
        assert_eq!(v, vec![Some("100"), Some("10"), Some("9.5"), None]);
    }
}
