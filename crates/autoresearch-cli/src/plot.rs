//! `autoresearch plot`: the progress chart of an experiment, from its world.

use crate::target::TargetArgs;
use anyhow::Context;
use autoresearch_core::EntityId;
use autoresearch_core::lifecycle::world_short_name;
use autoresearch_core::query::{CurrentReader, QueryError};
use autoresearch_plot::{ChartOptions, Format, Progress, Totals, write_chart};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `autoresearch plot`: every attempt's metric in order, kept
/// ones highlighted, discarded ones faint, crashes marked, the running best
/// as a step line.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  autoresearch plot\n  autoresearch plot --experiment tsp --out progress.png\n  autoresearch plot --world replay-scalar --metric val_bpb --out replay.svg\n  autoresearch plot --at 40 --out early.svg"
)]
pub struct PlotArgs {
    /// The experiment and world to chart (e.g. a replay fork).
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where to write the chart: PNG when the name ends in .png, SVG otherwise
    /// [default: {experiment}-progress.svg beside the ledger].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The metric to chart [default: the one the comparator decides on].
    #[arg(long)]
    pub metric: Option<String>,
    /// Chart the experiment as it was at this tick of its world.
    #[arg(long)]
    pub at: Option<u64>,
    /// Image size in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "1400x700", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (100..=10_000).contains(n))
    };
    match s.split_once(['x', 'X']) {
        Some((w, h)) => match (parse(w), parse(h)) {
            (Some(w), Some(h)) => Ok((w, h)),
            _ => Err(format!("size {s:?}: width and height must be 100..=10000")),
        },
        None => Err(format!("size {s:?}: expected WIDTHxHEIGHT, e.g. 1400x700")),
    }
}

pub async fn run(ledger_path: &Path, args: PlotArgs) -> anyhow::Result<()> {
    let target = args.target.resolve(ledger_path).await?;
    let world_name = target.world.clone();
    let experiment = match &target.experiment {
        Some(e) => e.clone(),
        None => world_short_name(&world_name).to_string(),
    };
    let specs = |spec: &str| {
        autoresearch_compare::CompareSpec::parse(spec)
            .map(|s| s.objectives())
            .unwrap_or_default()
    };
    // The head is read from the chart series the ledger keeps, else from
    // its current state; a past tick (`--at`) from the world materialized
    // there. The series' chart comes with its totals, already downsampled.
    let mut fast = None;
    let mut totals = None;
    if args.at.is_none()
        && let Some(r) = crate::current_read::reader(&target).await
    {
        let metric = args.metric.as_deref();
        match read_series(&target, &r, &world_name, &experiment, metric, &specs).await {
            Ok(Some((progress, record, t))) => {
                tracing::debug!(
                    world = %target.world,
                    "charted from the ledger's chart series: {} of {} attempts read in full",
                    progress.points.len(),
                    t.attempts
                );
                fast = Some(((progress, record), r.tick()));
                totals = Some(t);
            }
            Ok(None) => tracing::debug!(
                world = %target.world,
                "the ledger keeps no chart series at this world's head: reading every attempt"
            ),
            Err(e) if crate::current_read::from_ledger(&e) => {
                crate::current_read::fell_back(&target, &e);
            }
            Err(e) => return Err(e),
        }
        if fast.is_none() {
            match read_current(&r, &world_name, &experiment, metric, &specs).await {
                Err(e) if crate::current_read::from_ledger(&e) => {
                    crate::current_read::fell_back(&target, &e);
                }
                other => fast = Some((other?, r.tick())),
            }
        }
    }
    let ((mut progress, record), tick) = match fast {
        Some(read) => read,
        None => {
            let world = target.open(args.at).await?;
            let tick = world.tick();
            let progress = Progress::read(&world, &experiment, args.metric.as_deref(), &specs)
                .with_context(|| format!("charting world {world_name:?} at tick {}", tick.0))?;
            (
                (progress, world.experiment(&experiment).map(|(_, e)| e)),
                tick,
            )
        }
    };
    progress.world = world_name.clone();
    progress.tick = tick.0;
    // A fork (a replay) keeps the attempt numbers of the world it came from
    // and marks the attempts it decided otherwise.
    if let Some(fork) = &target.fork_of
        && let Some(info) = target.storage.find_world(&fork.parent).await?
    {
        let parent = autoresearch_core::World::open_at(
            target.storage.clone(),
            crate::ledger::registry(),
            info.id,
            info.head,
        )
        .await
        .with_context(|| {
            format!(
                "reading world {:?}, which {world_name:?} forks",
                fork.parent
            )
        })?;
        if let Ok(original) = Progress::read(&parent, &experiment, Some(&progress.metric), &specs) {
            progress.align_to(&original, &fork.parent);
        }
    }
    // The loop records the proposer's command as every run's task; the
    // commit's subject line says what the change was.
    if let Some(exp) = &record {
        let commits: Vec<String> = progress
            .points
            .iter()
            .filter(|p| p.mark.is_head() && Progress::label_is_commit(p))
            .map(|p| p.commit.clone())
            .collect();
        let subjects = commit_subjects(Path::new(&exp.repo_url), &commits).await;
        progress.relabel(|p| {
            subjects
                .iter()
                .find(|(hash, _)| hash.starts_with(&p.commit))
                .map(|(_, subject)| subject.clone())
        });
    }
    let out = args.out.clone().unwrap_or_else(|| {
        ledger_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("{experiment}-progress.svg"))
    });
    let options = ChartOptions {
        width: args.size.0,
        height: args.size.1,
        title: None,
    };
    // Every attempt counts; at most MAX_POINTS are drawn.
    let Totals {
        attempts,
        kept,
        crashed,
        best,
    } = match totals {
        Some(t) => t,
        None => {
            let t = progress.totals();
            progress.downsample(MAX_POINTS);
            t
        }
    };
    let format = write_chart(&progress, &out, &options)?;
    let format = match format {
        Format::Svg => "svg",
        Format::Png => "png",
    };
    if args.json {
        let summary = serde_json::json!({
            "path": out,
            "format": format,
            "experiment": experiment,
            "world": world_name,
            "tick": tick.0,
            "metric": progress.metric,
            "attempts": attempts,
            "kept": kept,
            "crashed": crashed,
            "best": best,
            "changed": progress.changed(),
            "comparator": progress.comparator,
            "points": progress.points,
        });
        let mut summary = summary;
        if let Some(d) = &progress.downsampled {
            summary["downsampled"] = serde_json::to_value(d)?;
        }
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let best = best
            .map(|b| format!(", head {} = {}", progress.metric, (b * 1e6).round() / 1e6))
            .unwrap_or_default();
        println!(
            "wrote {} ({attempts} attempts, {kept} kept{best})",
            out.display()
        );
        if let Some(d) = &progress.downsampled {
            println!(
                "downsampled: drew {} of {} attempts (every kept one; the lowest and highest value and the first crash of each of {} buckets of the others)",
                d.drawn, d.attempts, d.buckets
            );
        }
    }
    Ok(())
}

/// The most points a chart draws: more are downsampled
/// ([`Progress::downsample`]), which the output says.
const MAX_POINTS: usize = 6_000;

/// The chart's data and the experiment's record from the ledger's current
/// state (no world materialized). Cost: one pass over the world's Runs,
/// Outcomes, Descriptions, Results and Confirmations.
async fn read_current(
    r: &CurrentReader,
    world_name: &str,
    experiment: &str,
    metric: Option<&str>,
    specs: autoresearch_plot::SpecReader<'_>,
) -> anyhow::Result<(Progress, Option<autoresearch_core::Experiment>)> {
    let attempts = r.all_attempts(experiment).await?;
    let confirmations: HashMap<EntityId, autoresearch_core::Confirmation> = r
        .all::<autoresearch_core::Confirmation>()
        .await?
        .into_iter()
        .collect();
    let record = r.experiment(experiment).await?.map(|(_, e)| e);
    let progress = Progress::from_record(
        experiment,
        record.as_ref(),
        &attempts,
        |a| confirmations.get(&a.entity).cloned(),
        metric,
        specs,
    )
    .with_context(|| format!("charting world {world_name:?} at tick {}", r.tick().0))?;
    Ok((progress, record))
}

/// The chart's data, the experiment's record and the totals of every
/// attempt from the chart series the ledger keeps
/// (`autoresearch_core::series`): the metric chosen from its header, the
/// points to draw from its packed marks and values, and only those
/// attempts read in full from the current state. `None` when the ledger
/// keeps no series for the world's head, or it disagrees with the current
/// state (the caller then reads every attempt). Cost: O(attempts) for the
/// series, O(points drawn) for the rest.
async fn read_series(
    target: &crate::target::Target,
    r: &CurrentReader,
    world_name: &str,
    experiment: &str,
    metric: Option<&str>,
    specs: autoresearch_plot::SpecReader<'_>,
) -> anyhow::Result<Option<(Progress, Option<autoresearch_core::Experiment>, Totals)>> {
    let storage = &target.storage;
    let read =
        |metric: Option<String>| storage.read_series(r.world(), experiment.to_string(), metric);
    let at_reader = |s: Option<autoresearch_core::series::Series>| s.filter(|s| s.tick == r.tick());
    let Some(header) = at_reader(read(None).await.map_err(QueryError::from)?) else {
        return Ok(None);
    };
    let context = || format!("charting world {world_name:?} at tick {}", r.tick().0);
    let record = r.experiment(experiment).await?.map(|(_, e)| e);
    let plan = Progress::plan_series(experiment, record.as_ref(), &header, metric, specs)
        .with_context(context)?;
    let Some(series) = at_reader(
        read(Some(plan.metric().to_string()))
            .await
            .map_err(QueryError::from)?,
    ) else {
        return Ok(None);
    };
    let draw = plan
        .select(experiment, &series, MAX_POINTS)
        .with_context(context)?;
    let entities: Vec<EntityId> = draw
        .drawn
        .iter()
        .map(|&i| series.points[i].entity)
        .collect();
    let attempts = r.attempts_of(&entities).await?;
    if attempts.len() != entities.len() {
        return Ok(None);
    }
    let confirmations: HashMap<EntityId, autoresearch_core::Confirmation> = r
        .get::<autoresearch_core::Confirmation>(&entities)
        .await?
        .into_iter()
        .collect();
    let progress = plan.progress(experiment, &series, &draw, &attempts, |a| {
        confirmations.get(&a.entity).cloned()
    });
    Ok(progress.map(|p| (p, record, draw.totals)))
}

/// The subject line of each commit, read from the repository at `repo` with
/// one bounded `git log` call. Empty when the repository is not a local
/// directory or git fails: labels then stay short commits.
async fn commit_subjects(repo: &Path, commits: &[String]) -> HashMap<String, String> {
    if commits.is_empty() || !repo.is_dir() {
        return HashMap::new();
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C")
        .arg(repo)
        .args(["log", "--no-walk=unsorted", "--format=%H%x09%s"])
        .args(commits)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(Duration::from_secs(10), cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => out.stdout,
        other => {
            tracing::warn!(repo = %repo.display(), "reading commit subjects for chart labels failed: {other:?}");
            return HashMap::new();
        }
    };
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(h, s)| (h.to_string(), s.to_string()))
        .collect()
}
