//! `autoresearch`: the command line. With xtask, the only place that wires
//! concrete implementations (the redb store, the runner ingester, the loop,
//! the comparators) together, through core's trait objects.

mod compare_cmds;
mod doctor;
mod experiment;
mod ingest;
mod ledger;
#[cfg(feature = "plot")]
mod plot;
mod progress;
mod read;
#[cfg(feature = "web")]
mod serve;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "autoresearch",
    version,
    about = "Run and inspect autonomous optimization loops over a durable ECS ledger"
)]
pub(crate) struct Cli {
    /// The ledger file (created on first write).
    #[arg(
        long,
        global = true,
        env = "AUTORESEARCH_LEDGER",
        default_value = ".autoresearch/ledger.redb"
    )]
    pub ledger: PathBuf,
    /// More logging (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Each command's arguments live in the module that implements it.
#[derive(Subcommand)]
pub enum Command {
    /// List the worlds in the ledger (name, head tick, entities, fork parent).
    Worlds(read::WorldsArgs),
    /// Bring outside history in: archetype-runner's state.db, or a results.tsv.
    Ingest(ingest::IngestArgs),
    /// List the runs of a world, now or at a past tick.
    Runs(read::RunsArgs),
    /// Every change to one run, with tick and time.
    History(read::HistoryArgs),
    /// An experiment's attempts: commit, metrics, status, description.
    Log(read::LogArgs),
    /// Write a commented autoresearch.toml for this repository.
    Init(experiment::InitArgs),
    /// Run the loop: propose, evaluate, compare, keep or discard, repeat.
    Run(experiment::RunArgs),
    /// The experiment's head, counts, runs in flight and runs waiting for votes.
    Status(experiment::StatusArgs),
    /// One run: fields, results, decision, diff stat against its base, log paths.
    Show(experiment::ShowArgs),
    /// Re-decide an experiment's candidates under another comparator, into a fork.
    Replay(compare_cmds::ReplayArgs),
    /// Fork an experiment at a tick with a chosen run as head.
    Fork(compare_cmds::ForkArgs),
    /// Vote keep or discard on a run waiting for votes.
    Vote(compare_cmds::VoteArgs),
    /// Check every world of the ledger (replay, snapshots, index, names,
    /// leases); --repair saves what is readable of a damaged world.
    Doctor(doctor::DoctorArgs),
    /// Draw an experiment's progress chart (SVG, or PNG for a .png path).
    #[cfg(feature = "plot")]
    Plot(plot::PlotArgs),
    /// Serve a live web dashboard of every experiment in the ledger.
    #[cfg(feature = "web")]
    Serve(serve::ServeArgs),
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Restores the default SIGPIPE action, so that `autoresearch log | head`
/// ends quietly when the reader goes away, as Unix tools do, instead of
/// failing on a write to a closed pipe. Only for commands that start no
/// child process: `run` and `replay` write to a judge's stdin, where a
/// closed pipe must be an error to record, not the end of the loop.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; setting a
    // signal's disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Worlds(_)
            | Command::Runs(_)
            | Command::History(_)
            | Command::Log(_)
            | Command::Status(_)
            | Command::Show(_)
    ) {
        default_sigpipe();
    }
    init_tracing(cli.verbose, cli.quiet);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        #[cfg(feature = "plot")]
        Command::Plot(args) => plot::run(&cli.ledger, args).await?,
        Command::Worlds(args) => return read::worlds(&cli.ledger, args).await,
        Command::Ingest(args) => return ingest::run(&cli.ledger, args).await,
        Command::Runs(args) => return read::runs(&cli.ledger, args).await,
        Command::History(args) => return read::history(&cli.ledger, args).await,
        Command::Log(args) => return read::log(&cli.ledger, args).await,
        Command::Init(args) => return experiment::init(args),
        Command::Run(args) => return experiment::run(&cli.ledger, args, cli.quiet).await,
        Command::Status(args) => return experiment::status(&cli.ledger, args).await,
        Command::Show(args) => return experiment::show(&cli.ledger, args).await,
        Command::Replay(args) => return compare_cmds::replay_cmd(&cli.ledger, args).await,
        Command::Fork(args) => return compare_cmds::fork_cmd(&cli.ledger, args).await,
        Command::Vote(args) => return compare_cmds::vote_cmd(&cli.ledger, args).await,
        Command::Doctor(args) => return doctor::run(&cli.ledger, args).await,
        #[cfg(feature = "web")]
        Command::Serve(args) => return serve::run(&cli.ledger, args).await,
    }
    Ok(ExitCode::SUCCESS)
}
