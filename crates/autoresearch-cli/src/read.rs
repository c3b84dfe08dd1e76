//! Reading what is in the ledger: `worlds`, `runs`, `history` and `log`.

use crate::ledger;
use anyhow::{Context, bail};
use autoresearch_core::ledger::state_at;
use autoresearch_core::{Change, Run, RunStatus, Storage, Tick, World, experiment_world_name};
use autoresearch_runner::time::format_ms;
use autoresearch_runner::tsv::{self, AttemptLog};
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
#[command(after_help = "Example:\n  autoresearch worlds --json")]
pub struct WorldsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch runs --world runner-fleet --status running\n  \
    autoresearch runs --world runner-fleet --experiment nanogpt --at 12 --json"
)]
pub struct RunsArgs {
    /// The world to read (e.g. runner-fleet, autoresearch:NAME).
    #[arg(long)]
    pub world: String,
    /// Only runs of this experiment.
    #[arg(long)]
    pub experiment: Option<String>,
    /// Only runs with this status: booting, running, stopping, stopped or crashed.
    #[arg(long)]
    pub status: Option<String>,
    /// Read the world as it was at this tick (time travel).
    #[arg(long)]
    pub at: Option<u64>,
    /// Print JSON rows with the Python engine's column names (run__run_id, ...).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(after_help = "Example:\n  autoresearch history agent-7f3a --world runner-fleet")]
pub struct HistoryArgs {
    /// The run's run_id (the runner's agent_id).
    pub run_id: String,
    /// The world holding the run.
    #[arg(long)]
    pub world: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Table,
    Tsv,
    Json,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  autoresearch log --experiment nanogpt\n  \
    autoresearch log --experiment nanogpt --format tsv > results.tsv")]
pub struct LogArgs {
    /// The experiment (its world is autoresearch:NAME) [default: the name in autoresearch.toml].
    #[arg(long)]
    pub experiment: Option<String>,
    /// The config file naming the experiment, when --experiment is not given.
    #[arg(long, default_value = "autoresearch.toml")]
    pub config: std::path::PathBuf,
    /// table for people, tsv for karpathy's results.tsv shape, json for tools.
    #[arg(long, value_enum, default_value = "table")]
    pub format: LogFormat,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

/// Prints rows as left-aligned columns.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

async fn open_world(
    storage: &Arc<dyn Storage>,
    name: &str,
    at: Option<u64>,
) -> anyhow::Result<World> {
    let registry = ledger::registry();
    let info = storage
        .find_world(name)
        .await
        .with_context(|| format!("looking up world {name:?} in {}", storage.location()))?
        .with_context(|| format!("no world named {name:?} (see `autoresearch worlds`)"))?;
    let world = match at {
        Some(t) => {
            if t > info.head.0 {
                bail!("world {name:?}: tick {t} is beyond its head {}", info.head);
            }
            World::open_at(storage.clone(), registry, info.id, Tick(t)).await
        }
        None => World::open_id(storage.clone(), registry, info.id).await,
    };
    world.with_context(|| format!("opening world {name:?} in {}", storage.location()))
}

pub async fn worlds(ledger_path: &Path, args: WorldsArgs) -> anyhow::Result<ExitCode> {
    let storage = ledger::open_read_only(ledger_path)?;
    let worlds = storage
        .list_worlds()
        .await
        .with_context(|| format!("listing the worlds of {}", storage.location()))?;
    let mut out = Vec::new();
    for w in &worlds {
        let state = state_at(storage.as_ref(), w.id, w.head)
            .await
            .with_context(|| {
                format!(
                    "reading world {:?} at its head {} in {}",
                    w.name,
                    w.head,
                    storage.location()
                )
            })?;
        let parent = w.parent.map(|p| {
            let name = worlds
                .iter()
                .find(|x| x.id == p.parent)
                .map_or_else(|| p.parent.to_string(), |x| x.name.clone());
            (name, p.tick.0)
        });
        out.push(json!({
            "id": w.id.0,
            "name": w.name,
            "head": w.head.0,
            "entities": state.entities.len(),
            "parent": parent.as_ref().map(|p| p.0.clone()),
            "fork_tick": parent.as_ref().map(|p| p.1),
            "created_at_ms": w.created_at_ms,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|w| {
            let cell = |k: &str| match &w[k] {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            vec![
                cell("name"),
                cell("head"),
                cell("entities"),
                cell("parent"),
                cell("fork_tick"),
            ]
        })
        .collect();
    print_table(&["NAME", "HEAD", "ENTITIES", "PARENT", "FORK TICK"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// A run as a row with the Python engine's column names.
pub fn run_columns(run: &Run) -> Value {
    json!({
        "run__run_id": run.run_id,
        "run__experiment_name": run.experiment_name,
        "run__vm_name": run.vm_name,
        "run__status": run.status,
        "run__harness": run.harness,
        "run__repo_url": run.repo_url,
        "run__branch": run.branch,
        "run__task": run.task,
        "run__started_at_ms": run.started_at_ms,
        "run__finished_at_ms": run.finished_at_ms,
        "run__agent_name": run.agent_name,
        "run__workspace_path": run.workspace_path,
        "run__commit_hash": run.commit_hash,
    })
}

/// A run's report as columns with the Python engine's names
/// (`runreport__run_id`, `runreport__exit_status`, ...).
pub fn report_columns(report: &autoresearch_runner::RunReport) -> serde_json::Map<String, Value> {
    match serde_json::to_value(report) {
        Ok(Value::Object(o)) => o
            .into_iter()
            .map(|(k, v)| (format!("runreport__{k}"), v))
            .collect(),
        _ => serde_json::Map::new(),
    }
}

pub async fn runs(ledger_path: &Path, args: RunsArgs) -> anyhow::Result<ExitCode> {
    if let Some(s) = &args.status {
        s.parse::<RunStatus>().context("--status")?;
    }
    let storage = ledger::open_read_only(ledger_path)?;
    let world = open_world(&storage, &args.world, args.at).await?;
    let found = world.find_all::<Run>(|r| {
        args.experiment
            .as_ref()
            .is_none_or(|e| &r.experiment_name == e)
            && args.status.as_ref().is_none_or(|s| &r.status == s)
    });
    if args.json {
        let rows: Vec<Value> = found
            .iter()
            .map(|(e, r)| {
                let mut row = run_columns(r);
                if let (Value::Object(o), Some(report)) =
                    (&mut row, world.get::<autoresearch_runner::RunReport>(*e))
                {
                    o.extend(report_columns(&report));
                }
                row
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let runs: Vec<Run> = found.into_iter().map(|(_, r)| r).collect();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.run_id.clone(),
                r.experiment_name.clone(),
                r.status.clone(),
                r.harness.clone(),
                format_ms(r.started_at_ms),
                format_ms(r.finished_at_ms),
                tsv::short_commit(&r.commit_hash).to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "RUN_ID",
            "EXPERIMENT",
            "STATUS",
            "HARNESS",
            "STARTED",
            "FINISHED",
            "COMMIT",
        ],
        &rows,
    );
    eprintln!(
        "{} runs in {} at tick {}",
        runs.len(),
        args.world,
        world.tick()
    );
    Ok(ExitCode::SUCCESS)
}

/// The fields of `new` that differ from `old`, as `field: old -> new`.
fn field_diff(old: &Value, new: &Value) -> String {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return new.to_string();
    };
    let mut parts = Vec::new();
    for (k, v) in n {
        if o.get(k) != Some(v) {
            let before = o.get(k).map_or("-".to_string(), Value::to_string);
            parts.push(format!("{k}: {before} -> {v}"));
        }
    }
    if parts.is_empty() {
        "(unchanged)".to_string()
    } else {
        parts.join(", ")
    }
}

pub async fn history(ledger_path: &Path, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let storage = ledger::open_read_only(ledger_path)?;
    let world = open_world(&storage, &args.world, None).await?;
    let (entity, _) = world
        .run_by_id(&args.run_id)
        .with_context(|| format!("no run {:?} in world {:?}", args.run_id, args.world))?;
    let changes = world
        .history(entity)
        .await
        .with_context(|| format!("reading the history of run {:?}", args.run_id))?;
    let registry = world.registry().clone();
    let mut entries = Vec::new();
    let mut last: std::collections::HashMap<String, Value> = Default::default();
    for c in changes {
        let (kind, component, value) = match &c.change {
            Change::Spawn { .. } => ("spawn", None, None),
            Change::Despawn { .. } => ("despawn", None, None),
            Change::Remove { component, .. } => ("remove", Some(component.clone()), None),
            Change::Set {
                component, value, ..
            } => {
                let v = registry
                    .to_json(world.id(), component, value)
                    .with_context(|| format!("decoding {component} at tick {}", c.tick))?;
                ("set", Some(component.clone()), Some(v))
            }
        };
        let summary = match (&component, &value) {
            (Some(comp), Some(v)) => match last.insert(comp.clone(), v.clone()) {
                Some(old) => format!("{comp} {}", field_diff(&old, v)),
                None => format!("{comp} {v}"),
            },
            (Some(comp), None) => comp.clone(),
            _ => String::new(),
        };
        entries.push((c.tick.0, c.at_ms, kind, component, value, summary));
    }
    if args.json {
        let rows: Vec<Value> = entries
            .iter()
            .map(|(tick, at_ms, kind, comp, value, _)| {
                json!({"tick": tick, "at_ms": at_ms, "change": kind, "component": comp, "value": value})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries
        .into_iter()
        .map(|(tick, at_ms, kind, _, _, summary)| {
            vec![
                tick.to_string(),
                format_ms(at_ms),
                kind.to_string(),
                summary,
            ]
        })
        .collect();
    print_table(&["TICK", "TIME", "CHANGE", "WHAT"], &rows);
    Ok(ExitCode::SUCCESS)
}

fn log_table(log: &AttemptLog) {
    let mut header = vec!["RUN_ID".to_string(), "COMMIT".to_string()];
    header.extend(log.columns.iter().cloned());
    header.push("STATUS".to_string());
    header.push("DESCRIPTION".to_string());
    header.push("REASON".to_string());
    let rows: Vec<Vec<String>> = log
        .rows
        .iter()
        .map(|r| {
            let mut row = vec![r.run_id.clone(), tsv::short_commit(&r.commit).to_string()];
            for c in &log.columns {
                row.push(match r.values.get(c) {
                    None => "-".to_string(),
                    v => log.format_value(c, v),
                });
            }
            let status = if r.outcome.is_empty() {
                format!("({})", r.run_status)
            } else {
                r.outcome.clone()
            };
            row.push(status);
            row.push(r.description.replace(['\t', '\n'], " "));
            row.push(r.reason.replace(['\t', '\n'], " "));
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print_table(&header, &rows);
}

pub async fn log(ledger_path: &Path, args: LogArgs) -> anyhow::Result<ExitCode> {
    let experiment = crate::compare_cmds::experiment_name(args.experiment, &args.config)?;
    let storage = ledger::open_read_only(ledger_path)?;
    let world_name = experiment_world_name(&experiment);
    let world = open_world(&storage, &world_name, None)
        .await
        .with_context(|| format!("experiment {experiment:?}"))?;
    let mut log = tsv::attempt_log(&world, &experiment);
    // A world the loop wrote records its comparator in each Outcome: its
    // first objective is the metric karpathy's results.tsv puts first.
    let latest_spec = autoresearch_core::lifecycle::attempts(&world, &experiment)
        .into_iter()
        .rev()
        .filter_map(|a| a.outcome.map(|o| o.comparator))
        .find(|c| !c.is_empty());
    if let Some((metric, direction)) = latest_spec
        .and_then(|spec| autoresearch_compare::CompareSpec::parse(&spec).ok())
        .and_then(|spec| spec.objectives().into_iter().next())
    {
        log.prefer_metric(&metric, Some(direction.long()));
    }
    let format = if args.json {
        LogFormat::Json
    } else {
        args.format
    };
    match format {
        LogFormat::Json => println!("{}", serde_json::to_string_pretty(&log)?),
        LogFormat::Tsv => {
            let (text, skipped) = log.to_tsv();
            print!("{text}");
            if skipped > 0 {
                eprintln!(
                    "note: {skipped} undecided attempts (pending, or no outcome yet) are not in the TSV"
                );
            }
        }
        LogFormat::Table => log_table(&log),
    }
    Ok(ExitCode::SUCCESS)
}
