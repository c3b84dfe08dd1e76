//! `ingest runner`, `ingest tsv` and `ingest pi`: bring outside history into
//! the ledger.

use crate::ledger;
use anyhow::Context;
use autoresearch_runner::tsv::{self, Direction, TsvImport};
use autoresearch_runner::{DEFAULT_WORLD, RunnerConfig, RunnerIngest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  autoresearch ingest runner\n  \
    autoresearch ingest tsv results.tsv --experiment nanogpt")]
pub struct IngestArgs {
    #[command(subcommand)]
    pub source: IngestSource,
}

#[derive(clap::Subcommand)]
pub enum IngestSource {
    /// Sync archetype-runner's state.db into a world (incremental, idempotent).
    Runner(RunnerArgs),
    /// Import a karpathy/autoresearch results.tsv as an experiment.
    Tsv(TsvArgs),
    /// Import pi-autoresearch's autoresearch.jsonl as an experiment (as `tsv`).
    #[command(
        after_help = "Examples:\n  autoresearch ingest pi autoresearch.jsonl --experiment sort-speed"
    )]
    Pi(TsvArgs),
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  autoresearch ingest runner\n  \
    autoresearch ingest runner ~/.archetype-runner/state.db --world fleet --watch 30\n  \
    autoresearch ingest runner state.db --experiment nanogpt --json")]
pub struct RunnerArgs {
    /// The runner's database [default: ~/.archetype-runner/state.db].
    pub path: Option<PathBuf>,
    /// The world to write.
    #[arg(long, default_value = DEFAULT_WORLD)]
    pub world: String,
    /// Put every run in this experiment (default: from agent_name
    /// `{experiment}-{harness}`, else `adhoc`).
    #[arg(long)]
    pub experiment: Option<String>,
    /// Sync again every SECONDS until interrupted (Ctrl-C stops after the current sync).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
    /// Print each report as one JSON line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch ingest tsv results.tsv --experiment nanogpt\n  \
    autoresearch ingest tsv scores.tsv --experiment rl --metric reward --maximize --strict"
)]
pub struct TsvArgs {
    /// The results.tsv file.
    pub path: PathBuf,
    /// The experiment to import into (world autoresearch:NAME).
    #[arg(long)]
    pub experiment: String,
    /// The metric column [default: the one an earlier import of this
    /// experiment recorded, else the first value column (the second column
    /// of karpathy's file)].
    #[arg(long, value_name = "COLUMN")]
    pub metric: Option<String>,
    /// Lower is better (the default, unless an earlier import recorded otherwise).
    #[arg(long, conflicts_with = "maximize")]
    pub minimize: bool,
    /// Higher is better.
    #[arg(long)]
    pub maximize: bool,
    /// Fail on malformed rows instead of skipping them (nothing is written).
    #[arg(long)]
    pub strict: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ledger_path: &Path, args: IngestArgs) -> anyhow::Result<ExitCode> {
    match args.source {
        IngestSource::Runner(a) => runner(ledger_path, a).await,
        IngestSource::Tsv(a) => tsv_import(ledger_path, a, false).await,
        IngestSource::Pi(a) => tsv_import(ledger_path, a, true).await,
    }
}

fn print_report<T: serde::Serialize + std::fmt::Display>(
    report: &T,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

async fn runner(ledger_path: &Path, args: RunnerArgs) -> anyhow::Result<ExitCode> {
    let path = match args.path {
        Some(p) => p,
        None => autoresearch_runner::default_state_db()
            .context("no PATH given and no home directory to find ~/.archetype-runner/state.db")?,
    };
    let storage = ledger::open(ledger_path)?;
    let config = RunnerConfig {
        path,
        world: args.world,
        experiment: args.experiment,
        // Beside the ledger: lets the next process re-sync without reading
        // the whole world (ignored when stale or unreadable).
        cache_dir: Some(ledger_path.with_extension("runner-cache")),
        page_reads: true,
    };
    let mut ingest = RunnerIngest::new(storage, ledger::registry(), config);
    let working = crate::progress::Working::start("syncing the runner's state.db");
    let first = ingest.sync().await;
    working.done();
    let first = first?;
    print_report(&first, args.json)?;
    let Some(secs) = args.watch else {
        return Ok(ExitCode::SUCCESS);
    };
    // Ctrl-C only raises a flag: a sync in progress always completes.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
            _ = stop_rx.changed() => break,
        }
        match ingest.sync().await {
            Ok(report) => print_report(&report, args.json)?,
            // The runner may be mid-write or briefly locked: report and retry.
            Err(e) => eprintln!("error: {e}"),
        }
        if *stop_rx.borrow() {
            break;
        }
    }
    if !args.json {
        eprintln!("stopped watching");
    }
    Ok(ExitCode::SUCCESS)
}

async fn tsv_import(ledger_path: &Path, args: TsvArgs, pi: bool) -> anyhow::Result<ExitCode> {
    let storage = ledger::open(ledger_path)?;
    let opts = TsvImport {
        experiment: args.experiment,
        metric: args.metric,
        // Neither flag: the direction an earlier import recorded, else minimize.
        direction: if args.maximize {
            Some(Direction::Maximize)
        } else if args.minimize {
            Some(Direction::Minimize)
        } else {
            None
        },
        strict: args.strict,
    };
    let working = crate::progress::Working::start(format!("importing {}", args.path.display()));
    let report = if pi {
        autoresearch_runner::pi::import(storage, ledger::registry(), &args.path, &opts).await
    } else {
        tsv::import(storage, ledger::registry(), &args.path, &opts).await
    };
    working.done();
    let report = report?;
    print_report(&report, args.json)?;
    // A file of which no row could be read is an error, not an empty success.
    if report.imported + report.changed + report.already_present == 0
        && !report.malformed.is_empty()
    {
        let why = if report.notes.iter().any(|n| n.contains("--metric")) {
            "see the report above; is --metric right?"
        } else {
            "each is named above with why"
        };
        eprintln!(
            "error: none of the {} rows of {} could be imported ({why})",
            report.rows_read, report.source
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
