//! `autoresearch plot`: the progress chart of an experiment, from its world.

use crate::target::TargetArgs;
use anyhow::Context;
use autoresearch_core::lifecycle::world_short_name;
use autoresearch_plot::{ChartOptions, Format, Progress, write_chart};
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
    let world = target.open(args.at).await?;
    let tick = world.tick();
    let experiment = match &target.experiment {
        Some(e) => e.clone(),
        None => world_short_name(&world_name).to_string(),
    };
    let specs = |spec: &str| {
        autoresearch_compare::CompareSpec::parse(spec)
            .map(|s| s.objectives())
            .unwrap_or_default()
    };
    let mut progress = Progress::read(&world, &experiment, args.metric.as_deref(), &specs)
        .with_context(|| format!("charting world {world_name:?} at tick {}", tick.0))?;
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
    if let Some((_, exp)) = world.experiment(&experiment) {
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
            "attempts": progress.points.len(),
            "kept": progress.count(autoresearch_plot::Mark::Keep),
            "crashed": progress.count(autoresearch_plot::Mark::Crash),
            "best": progress.best(),
            "changed": progress.changed(),
            "comparator": progress.comparator,
            "points": progress.points,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let best = progress
            .best()
            .map(|b| format!(", head {} = {}", progress.metric, (b * 1e6).round() / 1e6))
            .unwrap_or_default();
        println!(
            "wrote {} ({} attempts, {} kept{best})",
            out.display(),
            progress.points.len(),
            progress.count(autoresearch_plot::Mark::Keep),
        );
    }
    Ok(())
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
